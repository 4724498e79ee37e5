//! Monitoring in the Kubernetes example: `/metrics` on its own port that the Service does
//! not expose, a PodMonitor that scrapes that port, and alert rules that fire whatever the
//! scrape job is called (promtool's unit tests in tests/data/alerts_test.yml include jobs
//! named as pod annotations and a PodMonitor make them).

mod support;

use std::collections::BTreeMap;

use serde_yaml::Value as Yaml;

use support::observability::{
    alert_rules, check_config, port_of, read_repo_file, read_yaml_documents, repo_path,
};
use support::{TestResult, fail};

fn k8s_documents() -> TestResult<Vec<Yaml>> {
    let mut documents = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(repo_path("config/k8s"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    files.sort();
    for file in files.iter().filter(|f| f.ends_with(".yaml")) {
        documents.extend(read_yaml_documents(&format!("config/k8s/{file}"))?);
    }
    Ok(documents)
}

fn of_kind<'a>(documents: &'a [Yaml], kind: &str) -> TestResult<&'a Yaml> {
    documents
        .iter()
        .find(|d| d["kind"] == kind)
        .ok_or_else(|| format!("config/k8s has no {kind}").into())
}

fn container_ports(container: &Yaml) -> BTreeMap<String, u64> {
    container["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["name"].as_str()?.to_owned(), p["containerPort"].as_u64()?)))
        .collect()
}

/// The container's plain `value` variables plus the mounted config file, as check-config
/// sees them (secrets are not needed for the listeners).
fn container_config(
    documents: &[Yaml],
    container: &Yaml,
    dir: &std::path::Path,
) -> TestResult<pushwire::config::Config> {
    let mut env = BTreeMap::new();
    for var in container["env"].as_sequence().into_iter().flatten() {
        if let (Some(name), Some(value)) = (var["name"].as_str(), var["value"].as_str()) {
            if !value.contains("$(") {
                env.insert(name.to_owned(), value.to_owned());
            }
        }
    }
    let map = of_kind(documents, "ConfigMap")?;
    let file = dir.join("pushwire.toml");
    std::fs::write(
        &file,
        map["data"]["pushwire.toml"].as_str().unwrap_or_default(),
    )?;
    env.insert("PUSHWIRE_CONFIG".into(), file.display().to_string());
    check_config(&env)
}

#[test]
fn metrics_have_their_own_port_that_the_service_does_not_expose() -> TestResult {
    let documents = k8s_documents()?;
    let deployment = of_kind(&documents, "Deployment")?;
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let dir = tempfile::tempdir()?;
    let config = container_config(&documents, container, dir.path())?;
    if config.server.metrics_listen.is_empty() {
        return fail("server.metrics_listen is not set: /metrics is on the public port");
    }
    let metrics_port = u64::from(port_of(&config.server.metrics_listen)?);
    let ports = container_ports(container);
    assert_eq!(ports.get("metrics"), Some(&metrics_port), "{ports:?}");
    assert_ne!(ports.get("http"), Some(&metrics_port));

    let service = of_kind(&documents, "Service")?;
    for port in service["spec"]["ports"].as_sequence().into_iter().flatten() {
        let target = &port["targetPort"];
        let number = target
            .as_u64()
            .or_else(|| target.as_str().and_then(|name| ports.get(name).copied()));
        assert_ne!(number, Some(metrics_port), "the Service exposes /metrics");
    }

    let monitor = of_kind(&documents, "PodMonitor")?;
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .into_iter()
        .flatten()
    {
        assert_eq!(&labels[key], value, "the PodMonitor selects the pods");
    }
    let endpoints = monitor["spec"]["podMetricsEndpoints"]
        .as_sequence()
        .ok_or("no podMetricsEndpoints")?;
    assert!(
        endpoints
            .iter()
            .any(|e| e["port"] == "metrics" && e["path"] == "/metrics"),
        "the PodMonitor scrapes port `metrics`, path /metrics"
    );
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(metrics_port.to_string().as_str())
    );
    Ok(())
}

#[test]
fn alert_rules_name_no_job() -> TestResult {
    for (alert, expr) in alert_rules()? {
        assert!(
            !expr.contains("job=") && !expr.contains("job =~"),
            "{alert} filters on a job name, which annotations or a PodMonitor do not produce: {expr}"
        );
    }
    Ok(())
}

/// promtool's unit tests of the rules (tests/prometheus_dashboard.rs runs them too, with a
/// real Prometheus); they include the job names of pod annotations and of a PodMonitor.
#[test]
fn alert_rules_fire_under_any_job_name() -> TestResult {
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let tests = read_repo_file("tests/data/alerts_test.yml")?;
    assert!(tests.contains("job=\"monitoring/pushwire\""));
    assert!(tests.contains("job=\"kubernetes-pods\""));
    let Some(promtool) = promtool else {
        // Without promtool, the YAML checks above and alert_rules_name_no_job stand.
        return Ok(());
    };
    let output = std::process::Command::new(promtool)
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(repo_path("tests/data"))
        .output()?;
    assert!(
        output.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
