//! The deploy files (Dockerfile, docker-compose.yml, config/k8s, config/prometheus.yml,
//! config/grafana, config/nginx.conf) agree with the code and with each other. No Docker
//! engine or cluster runs here, so this is their test: every file is parsed, every
//! configuration a container would load goes through `pushwire check-config` with the
//! container's environment and mounted files, and ports, probe paths, env names, metric
//! names and grace periods are cross-checked.
//!
//! This file checks the names shared with the code (env names, probe and scrape paths,
//! metrics in the dashboard and alerts); `deploy_dockerfile.rs`, `deploy_compose.rs` and
//! `deploy_k8s.rs` check each file.

mod support;

use std::collections::BTreeSet;

use support::deploy::{kube, yaml_string};
use support::observability::{
    PROCESS_METRICS, alert_rules, check_env_name, config_key_paths, dashboard, dashboard_exprs,
    dashboard_panels, dashboard_variable_queries, env_names_in, metric_names_in, read_repo_file,
    read_yaml, registered_in_source,
};
use support::{TestResult, TestServer};

#[test]
fn every_pushwire_env_name_is_a_config_key() -> TestResult {
    let keys = config_key_paths()?;
    let mut problems = Vec::new();
    let mut seen = 0;
    for file in [
        "Dockerfile",
        "docker-compose.yml",
        "config/k8s/deployment.yaml",
        "docs/operations.md",
        "docs/metrics.md",
    ] {
        for name in env_names_in(&read_repo_file(file)?) {
            seen += 1;
            if let Err(problem) = check_env_name(&name, &keys) {
                problems.push(format!("{file}: {problem}"));
            }
        }
    }
    assert!(seen >= 5, "found only {seen} PUSHWIRE_* names");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_and_scrape_paths_are_served() -> TestResult {
    let kube = kube()?;
    let mut paths: BTreeSet<String> = ["/health", "/ready", "/metrics"].map(String::from).into();
    for probe in ["readinessProbe", "livenessProbe"] {
        paths.insert(yaml_string(&kube.container[probe]["httpGet"]["path"]));
    }
    let scrape = read_yaml("config/prometheus.yml")?;
    for job in scrape["scrape_configs"].as_sequence().into_iter().flatten() {
        if job["job_name"] == "pushwire" {
            paths.insert(yaml_string(&job["metrics_path"]));
        }
    }
    let server = TestServer::start("").await?;
    for path in &paths {
        let status = reqwest::get(server.http_url(path)).await?.status();
        assert_eq!(status, 200, "GET {path}");
    }
    server.stop().await
}

#[test]
fn dashboard_and_alerts_use_registered_metrics_and_the_node_selector() -> TestResult {
    let registered = registered_in_source()?;
    let known = |name: &str| registered.contains(name) || PROCESS_METRICS.contains(&name);
    let dashboard = dashboard()?;
    let mut problems = Vec::new();
    for (title, expr) in dashboard_exprs(&dashboard) {
        for name in metric_names_in(&expr) {
            if !known(&name) {
                problems.push(format!("panel {title:?}: {name} is not registered in src/"));
            }
        }
        for selector in selectors_in(&expr) {
            if !selector.contains("job=\"$job\"") || !selector.contains("instance=~\"$node\"") {
                problems.push(format!(
                    "panel {title:?}: selector {{{selector}}} ignores $job or $node"
                ));
            }
        }
        if metric_names_in(&expr).iter().any(|n| n.ends_with("_total"))
            && !(expr.contains("rate(") || expr.contains("increase("))
        {
            problems.push(format!("panel {title:?}: a raw counter in {expr}"));
        }
    }
    for (name, query) in dashboard_variable_queries(&dashboard) {
        for metric in metric_names_in(&query) {
            if !known(&metric) {
                problems.push(format!("variable {name}: {metric} is not registered"));
            }
        }
    }
    let operations = read_repo_file("docs/operations.md")?;
    for (alert, expr) in alert_rules()? {
        for name in metric_names_in(&expr) {
            if !known(&name) {
                problems.push(format!("alert {alert}: {name} is not registered in src/"));
            }
        }
        if !operations.contains(&alert) {
            problems.push(format!(
                "alert {alert} is not explained in docs/operations.md"
            ));
        }
    }
    let titles: BTreeSet<String> = dashboard_panels(&dashboard)
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str().map(str::to_owned))
        .collect();
    for row in [
        "Overview",
        "Connections",
        "Throughput",
        "Latency",
        "Redis relay",
        "Errors and limits",
        "Process",
    ] {
        if !titles.contains(row) {
            problems.push(format!("the dashboard has no {row:?} row"));
        }
    }
    let mut ids = BTreeSet::new();
    for panel in dashboard_panels(&dashboard) {
        if !ids.insert(panel["id"].to_string()) {
            problems.push(format!("panel id {} repeats", panel["id"]));
        }
        if panel["type"] != "row" && panel["datasource"]["uid"] != "${datasource}" {
            problems.push(format!(
                "panel {} does not use the $datasource variable",
                panel["title"]
            ));
        }
    }
    let node = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "node")
        .ok_or("no node variable")?;
    if node["multi"] != true || node["includeAll"] != true {
        problems.push("the node selector must allow several nodes and All".into());
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// The label selectors (`{...}`) of a PromQL expression that follow a metric name.
fn selectors_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == '{' {
            let before: String = bytes[..i].iter().collect();
            let name = before
                .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("");
            let end = bytes[i..]
                .iter()
                .position(|&c| c == '}')
                .map_or(bytes.len(), |p| i + p);
            if name.starts_with("pushwire_") || name.starts_with("process_") || name == "up" {
                out.push(bytes[i + 1..end].iter().collect());
            }
            i = end;
        }
        i += 1;
    }
    out
}
