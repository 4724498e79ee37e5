//! Every metric the Grafana dashboard, the alert rules and docs/metrics.md name is exported
//! on `/metrics` by nodes that ran a small workload; every exported family is documented,
//! with the type `/metrics` declares; and the workload shows up in the numbers.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::observability::{
    Exposition, PROCESS_METRICS, WORKLOAD_CONFIG, alert_rules, dashboard, dashboard_exprs,
    dashboard_variable_queries, documented_metrics, metric_names_in, registered_in_source,
    run_workload, scrape,
};
use support::{TestResult, TestServer, api_key};

/// Every metric name the dashboard, the alerts and the docs refer to, with where from.
fn referenced_names() -> TestResult<BTreeMap<String, BTreeSet<String>>> {
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let dashboard = dashboard()?;
    let queries = dashboard_exprs(&dashboard)
        .into_iter()
        .chain(dashboard_variable_queries(&dashboard));
    for (title, expr) in queries {
        for name in metric_names_in(&expr) {
            names
                .entry(name)
                .or_default()
                .insert(format!("dashboard panel {title:?}"));
        }
    }
    for (alert, expr) in alert_rules()? {
        for name in metric_names_in(&expr) {
            names
                .entry(name)
                .or_default()
                .insert(format!("alert {alert}"));
        }
    }
    for name in documented_metrics()?.into_keys() {
        names
            .entry(name)
            .or_default()
            .insert("docs/metrics.md".into());
    }
    Ok(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_referenced_metric_is_exported_by_nodes_after_a_workload() -> TestResult {
    let nodes = [
        TestServer::start(WORKLOAD_CONFIG).await?,
        TestServer::start(WORKLOAD_CONFIG).await?,
    ];
    let mut scrapes = Vec::new();
    for node in &nodes {
        let base = format!("http://{}", node.addr);
        let _workload = run_workload(&node.ws_url(), &base, api_key()).await?;
        scrapes.push(scrape(&base).await?);
    }
    let referenced = referenced_names()?;
    let mut missing = Vec::new();
    for (node, exposition) in scrapes.iter().enumerate() {
        for (name, used_by) in &referenced {
            if !exposition.types.contains_key(name) {
                missing.push(format!("node {node}: {name} (used by {used_by:?})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} referenced metric(s) missing from /metrics:\n{}",
        missing.len(),
        missing.join("\n")
    );
    for node in nodes {
        node.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exported_metric_is_documented_with_its_type() -> TestResult {
    let node = TestServer::start(WORKLOAD_CONFIG).await?;
    let base = format!("http://{}", node.addr);
    let _workload = run_workload(&node.ws_url(), &base, api_key()).await?;
    let exposition = scrape(&base).await?;
    let documented = documented_metrics()?;
    let mut problems = Vec::new();
    for (name, kind) in &exposition.types {
        match documented.get(name) {
            None => problems.push(format!("{name} ({kind}) is not in docs/metrics.md")),
            Some(doc_kind) if doc_kind != kind => problems.push(format!(
                "{name}: docs/metrics.md says {doc_kind}, /metrics says {kind}"
            )),
            Some(_) => {}
        }
    }
    for name in registered_in_source()? {
        if !documented.contains_key(&name) {
            problems.push(format!(
                "{name} is registered in src/ but not in docs/metrics.md"
            ));
        }
    }
    for name in PROCESS_METRICS {
        if !exposition.types.contains_key(name) {
            problems.push(format!("process metric {name} is not exported"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workload_shows_in_the_numbers() -> TestResult {
    let node = TestServer::start(WORKLOAD_CONFIG).await?;
    let base = format!("http://{}", node.addr);
    let workload = run_workload(&node.ws_url(), &base, api_key()).await?;
    // Let the ping ticker sample the queues of the two remaining clients.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let m = scrape(&base).await?;
    let at_least = |name: &str, labels: &[&str], min: f64| -> Option<String> {
        let value = m.sum(name, labels);
        (value < min).then(|| format!("{name}{labels:?} = {value}, expected >= {min}"))
    };
    let problems: Vec<String> = [
        at_least("pushwire_connects_total", &[], 3.0),
        // The Pusher connection of the workload, its subscribe and the event it got.
        at_least("pushwire_pusher_connections", &["app=\"4242\""], 1.0),
        at_least(
            "pushwire_pusher_messages_total",
            &["app=\"4242\"", "direction=\"in\""],
            1.0,
        ),
        at_least(
            "pushwire_pusher_messages_total",
            &["app=\"4242\"", "direction=\"out\""],
            1.0,
        ),
        at_least("pushwire_pusher_api_requests_total", &["app=\"4242\""], 1.0),
        at_least("pushwire_connections", &["encoding=\"json\""], 1.0),
        at_least("pushwire_connections", &["encoding=\"msgpack\""], 1.0),
        at_least("pushwire_subscriptions", &[], 4.0),
        at_least("pushwire_channels", &[], 2.0),
        at_least("pushwire_publications_total", &["source=\"api\""], 5.0),
        at_least("pushwire_publications_total", &["source=\"client\""], 1.0),
        // 5 API publications and 1 client publication, 2 subscribers each.
        at_least("pushwire_deliveries_total", &[], 12.0),
        at_least("pushwire_sent_bytes_total", &[], 1.0),
        at_least("pushwire_frames_sent_total", &[], 1.0),
        at_least("pushwire_publish_enqueue_seconds_count", &[], 6.0),
        at_least("pushwire_client_queue_depth_messages_count", &[], 1.0),
        at_least(
            "pushwire_api_requests_total",
            &["route=\"publish\"", "status=\"200\""],
            5.0,
        ),
        at_least(
            "pushwire_api_requests_total",
            &["route=\"publish\"", "status=\"401\""],
            1.0,
        ),
        at_least("pushwire_api_request_duration_seconds_count", &[], 8.0),
        at_least(
            "pushwire_client_requests_total",
            &["op=\"subscribe\"", "result=\"error\""],
            1.0,
        ),
        at_least("pushwire_disconnects_total", &[], 1.0),
        at_least("pushwire_redis_up", &[], 1.0),
        at_least("pushwire_cluster_nodes", &[], 1.0),
        at_least("process_resident_memory_bytes", &[], 1.0),
        at_least("process_open_fds", &[], 1.0),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Relay and Redis counters stay at zero on a memory-broker node.
    for name in [
        "pushwire_relay_messages_total",
        "pushwire_relay_dropped_total",
        "pushwire_redis_errors_total",
        "pushwire_redis_reconnects_total",
    ] {
        assert_eq!(m.sum(name, &[]), 0.0, "{name} on a memory-broker node");
    }
    drop(workload);
    node.stop().await
}

/// Label values the dashboard filters on exist from startup, before any traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_label_sets_exist_before_any_traffic() -> TestResult {
    let node = TestServer::start("").await?;
    let text = reqwest::get(node.http_url("/metrics"))
        .await?
        .text()
        .await?;
    let m = Exposition::parse(&text)?;
    let series: BTreeSet<&str> = m.samples.iter().map(|(s, _)| s.as_str()).collect();
    for expected in [
        "pushwire_connections{encoding=\"json\"}",
        "pushwire_connections{encoding=\"msgpack\"}",
        "pushwire_disconnects_total{code=\"4008\"}",
        "pushwire_disconnects_total{code=\"1006\"}",
        "pushwire_publications_total{source=\"relay\"}",
        "pushwire_limit_trips_total{kind=\"rate_limit\"}",
        "pushwire_relay_messages_total{direction=\"in\"}",
        "pushwire_redis_errors_total{op=\"publish\"}",
    ] {
        assert!(
            series.contains(expected),
            "{expected} missing before traffic"
        );
    }
    node.stop().await
}

/// The closed label sets are documented: every limit kind with the config keys behind it
/// (which must exist), every API route, Redis op and close code.
#[test]
fn label_values_are_documented() -> TestResult {
    use pushwire::metrics::{API_ROUTES, LIMIT_KINDS, REDIS_OPS};
    use pushwire::protocol::CloseCode;
    use support::observability::{config_key_paths, read_repo_file};

    let docs = read_repo_file("docs/metrics.md")?;
    let keys = config_key_paths()?;
    let mut problems = Vec::new();
    for kind in LIMIT_KINDS {
        let row = docs
            .lines()
            .find(|l| l.starts_with(&format!("| `{kind}` |")));
        let Some(row) = row else {
            problems.push(format!("limit kind {kind} has no row in docs/metrics.md"));
            continue;
        };
        let config_cell = row.split('|').nth(2).unwrap_or_default();
        for key in config_cell.split('`').skip(1).step_by(2) {
            if !keys.contains(key) {
                problems.push(format!("limit kind {kind}: no config key {key}"));
            }
        }
    }
    let labels = API_ROUTES
        .iter()
        .chain(REDIS_OPS.iter())
        .map(|l| l.to_string())
        .chain(CloseCode::ALL.iter().map(|c| c.label().to_owned()));
    for label in labels {
        if !docs.contains(&format!("`{label}`")) {
            problems.push(format!("label value {label} is not in docs/metrics.md"));
        }
    }
    // Kinds counted in the code are the declared ones (so they exist from startup).
    let mut dirs = vec![support::observability::repo_path("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            for piece in text.split("limit_tripped(\"").skip(1) {
                let kind = piece.split('"').next().unwrap_or_default();
                if !LIMIT_KINDS.contains(&kind) {
                    problems.push(format!(
                        "{}: kind {kind} is not in LIMIT_KINDS",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}
