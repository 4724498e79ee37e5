//! The Kubernetes manifests (config/k8s) agree with the code and the image: the
//! Deployment drains within its grace period, ports, probes, identity and selectors agree,
//! and the ConfigMap is config/cluster.toml. No cluster runs here; the manifests are parsed
//! and the container's configuration goes through `pushwire check-config`.

mod support;

use std::collections::BTreeSet;

use serde_yaml::Value as Yaml;

use pushwire::config::{BrokerKind, Config};
use support::TestResult;
use support::deploy::{dockerfile, image_uid, kube, selects, yaml_string};
use support::observability::{check_config, port_of, read_repo_file};

#[test]
fn k8s_deployment_drains_within_its_termination_grace_period() -> TestResult {
    let kube = kube()?;
    let dir = tempfile::tempdir()?;
    let config = check_config(&kube.env(dir.path())?)?;
    assert_eq!(
        config.broker.kind,
        BrokerKind::Redis,
        "the Deployment relays through Redis"
    );
    let pre_stop = &kube.container["lifecycle"]["preStop"];
    let sleep: u64 = if let Some(command) = pre_stop["exec"]["command"].as_sequence() {
        let argv: Vec<String> = command.iter().map(yaml_string).collect();
        assert_eq!(
            argv.first().map(String::as_str),
            Some("sleep"),
            "preStop sleeps: {argv:?}"
        );
        argv.get(1).ok_or("sleep without seconds")?.parse()?
    } else {
        pre_stop["sleep"]["seconds"]
            .as_u64()
            .ok_or("no preStop sleep")?
    };
    let grace = kube.deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .ok_or("no terminationGracePeriodSeconds")?;
    let needed = config.server.shutdown_grace_secs + sleep;
    assert!(
        grace > needed,
        "terminationGracePeriodSeconds {grace} must exceed preStop {sleep}s + shutdown_grace_secs {}s",
        config.server.shutdown_grace_secs
    );
    // `sleep` must exist in the image: distroless has no shell tools.
    let ins = dockerfile()?;
    let runtime = ins.iter().rfind(|i| i.keyword == "FROM").ok_or("no FROM")?;
    assert!(
        runtime.args.starts_with("debian:"),
        "preStop exec sleep needs coreutils in the image"
    );
    Ok(())
}

#[test]
fn k8s_ports_probes_identity_and_selectors_agree() -> TestResult {
    let kube = kube()?;
    let dir = tempfile::tempdir()?;
    let config = check_config(&kube.env(dir.path())?)?;
    let http = kube.container_port("http")?;
    assert_eq!(
        config.listen_addr().port(),
        http,
        "containerPort http is server.listen's port"
    );
    for (probe, path) in [("readinessProbe", "/ready"), ("livenessProbe", "/health")] {
        let get = &kube.container[probe]["httpGet"];
        assert_eq!(yaml_string(&get["path"]), path, "{probe} path");
        assert_eq!(kube.resolve_port(&get["port"])?, http, "{probe} port");
    }
    let annotations = &kube.deployment["spec"]["template"]["metadata"]["annotations"];
    let metrics_port = match config.server.metrics_listen.as_str() {
        "" => http,
        addr => port_of(addr)?,
    };
    assert_eq!(
        yaml_string(&annotations["prometheus.io/port"]),
        metrics_port.to_string()
    );
    assert_eq!(yaml_string(&annotations["prometheus.io/path"]), "/metrics");

    let pod = &kube.deployment["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(pod["runAsNonRoot"], Yaml::Bool(true), "runAsNonRoot");
    let ins = dockerfile()?;
    let last = ins.iter().map(|i| i.stage).max().unwrap_or(0);
    assert_eq!(
        pod["runAsUser"].as_u64(),
        Some(u64::from(image_uid(&ins, last)?)),
        "runAsUser is the image's user"
    );

    let root: toml::Table = read_repo_file("Cargo.toml")?.parse()?;
    let version = root["workspace"]["package"]["version"]
        .as_str()
        .unwrap_or_default();
    let image = yaml_string(&kube.container["image"]);
    assert!(
        image.ends_with(&format!(":{version}")),
        "image {image} is tagged {version}"
    );

    let labels = kube.pod_labels();
    assert!(selects(
        &kube.deployment["spec"]["selector"]["matchLabels"],
        labels
    ));
    let replicas = kube.deployment["spec"]["replicas"]
        .as_u64()
        .ok_or("no replicas")?;
    let mut kinds = BTreeSet::new();
    for doc in &kube.others {
        let kind = yaml_string(&doc["kind"]);
        match kind.as_str() {
            "Service" => {
                assert!(
                    selects(&doc["spec"]["selector"], labels),
                    "Service selects the pods"
                );
                for port in doc["spec"]["ports"].as_sequence().into_iter().flatten() {
                    assert_eq!(
                        kube.resolve_port(&port["targetPort"])?,
                        http,
                        "Service targetPort"
                    );
                }
            }
            "PodDisruptionBudget" => {
                assert!(
                    selects(&doc["spec"]["selector"]["matchLabels"], labels),
                    "PDB selects the pods"
                );
                let unavailable = doc["spec"]["maxUnavailable"].as_u64();
                let available = doc["spec"]["minAvailable"].as_u64();
                assert!(
                    unavailable.is_some_and(|n| n >= 1 && n < replicas)
                        || available.is_some_and(|n| n < replicas),
                    "the PDB lets one pod go at a time and keeps others"
                );
            }
            _ => {}
        }
        kinds.insert(kind);
    }
    for kind in ["Deployment", "Service", "PodDisruptionBudget", "ConfigMap"] {
        assert!(kinds.contains(kind), "config/k8s has a {kind}");
    }
    Ok(())
}

#[test]
fn k8s_config_map_is_config_cluster_toml() -> TestResult {
    let kube = kube()?;
    let mounted = kube.mounted_config_file("/etc/pushwire/pushwire.toml")?;
    let from_map = toml::to_string(&Config::from_toml(&mounted)?)?;
    let from_file = toml::to_string(&Config::from_toml(&read_repo_file("config/cluster.toml")?)?)?;
    assert_eq!(
        from_map, from_file,
        "config/k8s/configmap.yaml and config/cluster.toml differ"
    );
    Ok(())
}
