//! docker-compose.yml agrees with the code: every node's configuration goes through
//! `pushwire check-config` with the container's environment and mounted files; the load
//! balancer, Prometheus and Grafana reach every node on the right ports and paths, and nodes
//! drain before compose kills them. No Docker engine runs here.

mod support;

use std::collections::BTreeSet;

use pushwire::config::BrokerKind;
use support::TestResult;
use support::deploy::{
    compose, compose_container_ports, compose_env, compose_mounts, duration_secs, host_path_of,
    yaml_string,
};
use support::observability::{port_of, read_repo_file, read_yaml, repo_path};

#[test]
fn compose_runs_three_redis_nodes_that_drain_before_being_killed() -> TestResult {
    let compose = compose()?;
    assert!(
        compose.nodes.len() >= 3,
        "three pushwire nodes, found {:?}",
        compose.nodes.keys()
    );
    let redis = compose.service("redis")?;
    assert!(
        yaml_string(&redis["image"]).starts_with("redis:7"),
        "redis:7"
    );
    let mut names = BTreeSet::new();
    for (name, (service, config)) in &compose.nodes {
        assert_eq!(
            config.broker.kind,
            BrokerKind::Redis,
            "{name} uses the Redis broker"
        );
        let host = config
            .redis
            .url
            .trim_start_matches("redis://")
            .split(['/', '@'])
            .next()
            .unwrap_or("");
        let (host, port) = host.split_once(':').unwrap_or((host, "6379"));
        assert!(
            compose.services.contains_key(host),
            "{name}: redis.url host {host} is a service"
        );
        assert_eq!(port, "6379", "{name}: redis port");
        assert!(
            names.insert(config.node_name.clone()),
            "{name}: node_name is unique"
        );
        let grace = duration_secs(&yaml_string(&service["stop_grace_period"]))?;
        assert!(
            grace > config.server.shutdown_grace_secs,
            "{name}: stop_grace_period {grace}s must exceed server.shutdown_grace_secs {}",
            config.server.shutdown_grace_secs
        );
        let port = config.listen_addr().port();
        assert!(
            compose_container_ports(service).contains(&port),
            "{name} exposes {port}"
        );
        for (source, _) in compose_mounts(service) {
            assert!(
                repo_path(&source).exists(),
                "{name} mounts missing {source}"
            );
        }
    }
    Ok(())
}

#[test]
fn compose_load_balancer_spreads_websockets_over_every_node() -> TestResult {
    let compose = compose()?;
    let lb = compose.service("lb")?;
    let conf_path = host_path_of(lb, "/etc/nginx/nginx.conf").ok_or("nginx.conf not mounted")?;
    let conf = read_repo_file(&conf_path)?;
    let directive = |name: &str| -> Vec<String> {
        conf.lines()
            .map(str::trim)
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map(|rest| rest.trim_end_matches(';').to_owned())
            .collect()
    };
    let upstream_block = conf
        .split("upstream ")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .ok_or("nginx.conf has no upstream block")?;
    let upstreams: BTreeSet<String> = upstream_block
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .map(|a| a.trim_end_matches(';').to_owned())
        })
        .collect();
    let expected: BTreeSet<String> = compose
        .nodes
        .iter()
        .map(|(name, (_, config))| format!("{name}:{}", config.listen_addr().port()))
        .collect();
    assert_eq!(upstreams, expected, "nginx upstream servers");
    for needed in [
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
    ] {
        assert!(conf.contains(needed), "nginx.conf lacks {needed}");
    }
    let listen: u16 = directive("listen").first().ok_or("no listen")?.parse()?;
    assert!(
        compose_container_ports(lb).contains(&listen),
        "lb publishes nginx's port {listen}"
    );
    let timeout = duration_secs(
        directive("proxy_read_timeout")
            .first()
            .ok_or("no proxy_read_timeout")?,
    )?;
    for (name, (_, config)) in &compose.nodes {
        let quiet = config.client.ping_interval_secs + config.client.pong_timeout_secs;
        assert!(
            timeout > quiet,
            "proxy_read_timeout {timeout}s must exceed {name}'s ping + pong {quiet}s"
        );
        assert!(
            lb["depends_on"][name.as_str()]["condition"] == "service_healthy",
            "lb waits for {name} to be healthy"
        );
    }
    Ok(())
}

#[test]
fn compose_prometheus_scrapes_every_node_and_loads_the_alerts() -> TestResult {
    let compose = compose()?;
    let prometheus = compose.service("prometheus")?;
    let args: Vec<String> = prometheus["command"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(yaml_string)
        .collect();
    let config_file = args
        .iter()
        .find_map(|a| a.strip_prefix("--config.file="))
        .ok_or("prometheus without --config.file")?;
    assert_eq!(
        host_path_of(prometheus, config_file).as_deref(),
        Some("config/prometheus.yml")
    );
    let config = read_yaml("config/prometheus.yml")?;
    let config_dir = config_file.rsplit_once('/').map_or("", |(d, _)| d);
    for rule_file in config["rule_files"].as_sequence().into_iter().flatten() {
        let in_container = format!("{config_dir}/{}", yaml_string(rule_file));
        let host = host_path_of(prometheus, &in_container)
            .ok_or_else(|| format!("rule file {in_container} is not mounted"))?;
        assert!(repo_path(&host).exists(), "{host} exists");
    }
    let job = config["scrape_configs"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|j| j["job_name"] == "pushwire")
        .ok_or("no pushwire job")?;
    assert_eq!(yaml_string(&job["metrics_path"]), "/metrics");
    let targets: BTreeSet<String> = job["static_configs"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|c| c["targets"].as_sequence().cloned().unwrap_or_default())
        .map(|t| yaml_string(&t))
        .collect();
    let expected: BTreeSet<String> = compose
        .nodes
        .iter()
        .map(|(name, (_, config))| format!("{name}:{}", config.listen_addr().port()))
        .collect();
    assert_eq!(targets, expected, "prometheus scrapes every node directly");
    Ok(())
}

#[test]
fn compose_grafana_provisions_the_datasource_and_the_dashboard() -> TestResult {
    let compose = compose()?;
    let grafana = compose.service("grafana")?;
    assert_eq!(
        host_path_of(grafana, "/etc/grafana/provisioning").as_deref(),
        Some("config/grafana/provisioning")
    );
    let providers = read_yaml("config/grafana/provisioning/dashboards/pushwire.yml")?;
    let path = yaml_string(&providers["providers"][0]["options"]["path"]);
    let dashboards = host_path_of(grafana, &path).ok_or_else(|| format!("{path} not mounted"))?;
    assert!(
        repo_path(&dashboards).join("pushwire.json").exists(),
        "dashboard under {dashboards}"
    );
    let home = compose_env(grafana)
        .get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
        .cloned()
        .unwrap_or_default();
    let home = host_path_of(grafana, &home).ok_or("home dashboard not mounted")?;
    assert!(repo_path(&home).exists(), "home dashboard {home} exists");

    let datasources = read_yaml("config/grafana/provisioning/datasources/prometheus.yml")?;
    let source = &datasources["datasources"][0];
    assert_eq!(yaml_string(&source["type"]), "prometheus");
    let url = yaml_string(&source["url"]);
    let host_port = url.trim_start_matches("http://").trim_end_matches('/');
    let (host, _) = host_port
        .split_once(':')
        .ok_or("datasource url without port")?;
    let prometheus = compose.service(host)?;
    assert!(
        compose_container_ports(prometheus).contains(&port_of(host_port)?),
        "datasource port"
    );
    let scrape = read_yaml("config/prometheus.yml")?;
    assert_eq!(
        yaml_string(&source["jsonData"]["timeInterval"]),
        yaml_string(&scrape["global"]["scrape_interval"]),
        "Grafana's timeInterval is Prometheus' scrape_interval ($__rate_interval depends on it)"
    );
    Ok(())
}
