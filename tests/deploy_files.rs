//! The deploy files (Dockerfile, docker-compose.yml, config/k8s, config/prometheus.yml,
//! config/grafana, config/nginx.conf) agree with the code and with each other. No Docker
//! engine or cluster runs here, so this is their test: every file is parsed, every
//! configuration a container would load goes through `pushwire check-config` with the
//! container's environment and mounted files, and ports, probe paths, env names, metric
//! names and grace periods are cross-checked.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_yaml::Value as Yaml;

use pushwire::config::{BrokerKind, Config};
use support::observability::{
    PROCESS_METRICS, alert_rules, check_config, check_env_name, config_key_paths, dashboard,
    dashboard_exprs, dashboard_panels, dashboard_variable_queries, env_names_in, metric_names_in,
    port_of, read_repo_file, read_yaml, read_yaml_documents, registered_in_source, repo_path,
};
use support::{TestResult, TestServer, fail};

// ---- Dockerfile -------------------------------------------------------------------------

/// One Dockerfile instruction, continuation lines joined, with the build stage it is in.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
    stage: usize,
}

fn dockerfile() -> TestResult<Vec<Instruction>> {
    let text = read_repo_file("Dockerfile")?;
    let mut out = Vec::new();
    let mut current = String::new();
    let mut stage = 0;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                let keyword = keyword.to_ascii_uppercase();
                if keyword == "FROM" {
                    stage += 1;
                }
                out.push(Instruction {
                    keyword,
                    args: args.split_whitespace().collect::<Vec<_>>().join(" "),
                    stage,
                });
                current.clear();
            }
        }
    }
    Ok(out)
}

/// `KEY=value` pairs of every ENV instruction of the final stage.
fn dockerfile_env(instructions: &[Instruction], stage: usize) -> BTreeMap<String, String> {
    instructions
        .iter()
        .filter(|i| i.keyword == "ENV" && i.stage == stage)
        .flat_map(|i| i.args.split_whitespace())
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

fn position(instructions: &[Instruction], pred: impl Fn(&Instruction) -> bool) -> Option<usize> {
    instructions.iter().position(pred)
}

/// The uid the final stage runs as.
fn image_uid(instructions: &[Instruction], last: usize) -> TestResult<u32> {
    let user = instructions
        .iter()
        .rfind(|i| i.keyword == "USER" && i.stage == last)
        .ok_or("the final stage sets no USER")?;
    let uid = user.args.split(':').next().unwrap_or_default();
    let uid: u32 = uid.parse().map_err(|_| {
        format!("USER {uid}: use a numeric uid so Kubernetes can verify runAsNonRoot")
    })?;
    if uid == 0 {
        return fail("the image runs as root");
    }
    Ok(uid)
}

/// Source paths each workspace member needs to compile (explicit targets and defaults).
fn workspace_targets() -> TestResult<Vec<String>> {
    let root: toml::Table = read_repo_file("Cargo.toml")?.parse()?;
    let members = root["workspace"]["members"]
        .as_array()
        .ok_or("no workspace members")?;
    let mut out = Vec::new();
    for member in members {
        let member = member.as_str().ok_or("member is not a string")?;
        let dir = if member == "." {
            String::new()
        } else {
            format!("{member}/")
        };
        let manifest: toml::Table = read_repo_file(&format!("{dir}Cargo.toml"))?.parse()?;
        for kind in ["bin", "bench", "example", "test"] {
            for target in manifest
                .get(kind)
                .and_then(|t| t.as_array())
                .into_iter()
                .flatten()
            {
                if let Some(path) = target.get("path").and_then(|p| p.as_str()) {
                    out.push(format!("{dir}{path}"));
                }
            }
        }
        for default in ["src/main.rs", "src/lib.rs"] {
            if repo_path(&format!("{dir}{default}")).exists() {
                out.push(format!("{dir}{default}"));
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[test]
fn dockerfile_caches_dependencies_then_builds_the_real_sources() -> TestResult {
    let ins = dockerfile()?;
    let froms: Vec<&Instruction> = ins.iter().filter(|i| i.keyword == "FROM").collect();
    assert!(froms.len() >= 2, "a multi-stage build");
    assert!(
        froms[0].args.starts_with("rust:") && froms[0].args.to_lowercase().ends_with(" as builder"),
        "builder stage: {}",
        froms[0].args
    );
    let builder = froms[0].stage;
    let cargo_build = |i: &Instruction| {
        i.stage == builder && i.keyword == "RUN" && i.args.contains("cargo build")
    };
    let first_build = position(&ins, cargo_build).ok_or("no cargo build")?;
    let last_build = ins.iter().rposition(cargo_build).ok_or("no cargo build")?;
    assert!(
        first_build < last_build,
        "a dependency build, then the real one"
    );
    for build in [&ins[first_build], &ins[last_build]] {
        assert!(
            build.args.contains("--locked"),
            "builds use Cargo.lock: {}",
            build.args
        );
        assert!(
            build.args.contains("--release"),
            "release builds: {}",
            build.args
        );
    }
    let copied_before = |needle: &str, before: usize| {
        ins[..before]
            .iter()
            .any(|i| i.keyword == "COPY" && i.args.split_whitespace().any(|a| a == needle))
    };
    // Manifests of every member and the lock file before the dependency build.
    let root: toml::Table = read_repo_file("Cargo.toml")?.parse()?;
    for member in root["workspace"]["members"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let member = member.as_str().unwrap_or_default();
        let manifest = if member == "." {
            "Cargo.toml".to_owned()
        } else {
            format!("{member}/Cargo.toml")
        };
        assert!(
            copied_before(&manifest, first_build),
            "{manifest} copied before the dependency build"
        );
        let sources = if member == "." {
            "src".to_owned()
        } else {
            format!("{member}/src")
        };
        assert!(
            !copied_before(&sources, first_build) && copied_before(&sources, last_build),
            "{sources} copied after the dependency build and before the real one"
        );
    }
    assert!(
        copied_before("Cargo.lock", first_build),
        "Cargo.lock copied first"
    );
    // Every source file a manifest names must exist as a stub for the dependency build.
    for target in workspace_targets()? {
        assert!(
            ins[first_build].args.contains(&target),
            "the dependency build must stub {target} (a target in a workspace manifest)"
        );
    }
    // The stubs' build products must not pass for the real ones.
    assert!(
        ins[last_build].args.contains("touch")
            || ins[first_build].args.contains(".fingerprint/pushwire"),
        "the real build must invalidate the stub build (touch or remove fingerprints)"
    );
    Ok(())
}

#[test]
fn dockerfile_runtime_is_small_non_root_and_healthchecked() -> TestResult {
    let ins = dockerfile()?;
    let last = ins.iter().map(|i| i.stage).max().unwrap_or(0);
    let runtime = ins
        .iter()
        .find(|i| i.keyword == "FROM" && i.stage == last)
        .ok_or("no FROM")?;
    assert!(
        runtime.args.starts_with("debian:bookworm-slim")
            || runtime.args.starts_with("gcr.io/distroless/cc"),
        "small runtime image: {}",
        runtime.args
    );
    let uid = image_uid(&ins, last)?;
    let final_runs: String = ins
        .iter()
        .filter(|i| i.stage == last && i.keyword == "RUN")
        .map(|i| i.args.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        final_runs.contains(&format!("--uid {uid}")),
        "a user with uid {uid} is created"
    );
    assert!(
        final_runs.contains("ca-certificates"),
        "ca-certificates for rediss://"
    );
    let single = |keyword: &str| -> TestResult<&str> {
        ins.iter()
            .rfind(|i| i.stage == last && i.keyword == keyword)
            .map(|i| i.args.as_str())
            .ok_or_else(|| format!("the final stage has no {keyword}").into())
    };
    assert_eq!(single("ENTRYPOINT")?, r#"["pushwire"]"#);
    assert_eq!(single("CMD")?, r#"["serve"]"#);
    assert!(
        ins.iter().any(|i| i.stage == last
            && i.keyword == "COPY"
            && i.args.starts_with("--from=builder")
            && i.args.ends_with("/usr/local/bin/pushwire")),
        "the binary is copied onto PATH"
    );
    let exposed: u16 = single("EXPOSE")?.trim_end_matches("/tcp").parse()?;

    // The configuration the image starts with: the ENV of the final stage, nothing else,
    // and the config file the image ships where PUSHWIRE_CONFIG points.
    let mut env = dockerfile_env(&ins, last);
    if let Some(path) = env.get_mut("PUSHWIRE_CONFIG") {
        let shipped = ins
            .iter()
            .filter(|i| i.stage == last && i.keyword == "COPY" && !i.args.starts_with("--from"))
            .find_map(|i| i.args.strip_suffix(&format!(" {path}")))
            .ok_or_else(|| format!("the image ships no file at PUSHWIRE_CONFIG={path}"))?;
        *path = repo_path(shipped).display().to_string();
    }
    let config = check_config(&env)?;
    assert_eq!(
        config.listen_addr().port(),
        exposed,
        "EXPOSE matches server.listen"
    );

    // HEALTHCHECK: exec form, a tool the image installs, /health on the listen port.
    let healthcheck = single("HEALTHCHECK")?;
    let exec = healthcheck
        .split_once("CMD ")
        .map(|(_, cmd)| cmd)
        .ok_or("HEALTHCHECK without CMD")?;
    let argv: Vec<String> = serde_json::from_str(exec)
        .map_err(|_| format!("HEALTHCHECK CMD must be the exec form: {exec}"))?;
    let tool = argv.first().ok_or("empty HEALTHCHECK")?;
    if tool == "pushwire" {
        // It finds the port in the configuration (tests/docker_image.rs runs it).
        assert_eq!(argv, ["pushwire", "healthcheck"]);
        return Ok(());
    }
    assert!(
        final_runs.split_whitespace().any(|w| w == tool),
        "the image installs the HEALTHCHECK tool {tool}"
    );
    let url = argv
        .iter()
        .find(|a| a.starts_with("http://"))
        .ok_or("HEALTHCHECK without URL")?;
    let rest = url.trim_start_matches("http://");
    let (host_port, path) = rest.split_once('/').ok_or("URL without path")?;
    assert_eq!(format!("/{path}"), "/health");
    assert_eq!(port_of(host_port)?, exposed, "HEALTHCHECK port");
    Ok(())
}

#[test]
fn dockerignore_keeps_the_build_context_small_but_complete() -> TestResult {
    let ignored: BTreeSet<String> = read_repo_file(".dockerignore")?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches("/").to_owned())
        .collect();
    assert!(ignored.contains("target"), "target/ is excluded");
    for needed in ["src", "Cargo.toml", "Cargo.lock", "loadtest", "config"] {
        assert!(!ignored.contains(needed), "{needed} is needed by the build");
    }
    Ok(())
}

// ---- docker-compose.yml -----------------------------------------------------------------

/// `${NAME:-default}` -> default, `${NAME}` -> "", `$$` -> `$`, like compose without a .env.
fn interpolate(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        rest = &rest[start + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(body) = rest.strip_prefix('{') {
            let end = body.find('}').unwrap_or(body.len());
            if let Some((_, default)) = body[..end].split_once(":-") {
                out.push_str(default);
            }
            rest = body.get(end + 1..).unwrap_or("");
        } else {
            out.push('$');
        }
    }
    out.push_str(rest);
    out
}

fn yaml_string(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// A service's environment (map or `KEY=value` list), interpolated.
fn compose_env(service: &Yaml) -> BTreeMap<String, String> {
    match &service["environment"] {
        Yaml::Mapping(map) => map
            .iter()
            .map(|(k, v)| (yaml_string(k), interpolate(&yaml_string(v))))
            .collect(),
        Yaml::Sequence(items) => items
            .iter()
            .filter_map(|i| {
                i.as_str()?
                    .split_once('=')
                    .map(|(k, v)| (k.to_owned(), interpolate(v)))
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// `(host path relative to the repo, container path)` of a service's bind mounts.
fn compose_mounts(service: &Yaml) -> Vec<(String, String)> {
    service["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let mut parts = v.as_str()?.split(':');
            let (source, target) = (parts.next()?, parts.next()?);
            source.starts_with("./").then(|| {
                (
                    source.trim_start_matches("./").to_owned(),
                    target.to_owned(),
                )
            })
        })
        .collect()
}

/// The repository file a container path comes from, through a service's bind mounts.
fn host_path_of(service: &Yaml, container_path: &str) -> Option<String> {
    compose_mounts(service)
        .into_iter()
        .find_map(|(source, target)| {
            let rest = container_path.strip_prefix(&target)?;
            (rest.is_empty() || rest.starts_with('/')).then(|| format!("{source}{rest}"))
        })
}

/// "30s", "1m30s", "2m" -> seconds.
fn duration_secs(text: &str) -> TestResult<u64> {
    let mut total = 0;
    let mut number = String::new();
    for c in text.chars() {
        match c {
            '0'..='9' => number.push(c),
            'h' | 'm' | 's' => {
                let n: u64 = number.parse().map_err(|_| format!("bad duration {text}"))?;
                total += n * match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                number.clear();
            }
            _ => return fail(format!("bad duration {text}")),
        }
    }
    if !number.is_empty() {
        return fail(format!("duration {text} needs a unit"));
    }
    Ok(total)
}

/// Loads a compose node's configuration the way its container does.
fn compose_node_config(service: &Yaml) -> TestResult<Config> {
    let mut env = compose_env(service);
    if let Some(path) = env.get("PUSHWIRE_CONFIG").cloned() {
        let host = host_path_of(service, &path)
            .ok_or_else(|| format!("PUSHWIRE_CONFIG={path} is not mounted"))?;
        env.insert(
            "PUSHWIRE_CONFIG".into(),
            repo_path(&host).display().to_string(),
        );
    }
    check_config(&env)
}

/// Container ports published or exposed by a service.
fn compose_container_ports(service: &Yaml) -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for key in ["ports", "expose"] {
        for port in service[key].as_sequence().into_iter().flatten() {
            let text = yaml_string(port);
            if let Some(p) = text.rsplit(':').next().and_then(|p| p.parse().ok()) {
                out.insert(p);
            }
        }
    }
    out
}

struct Compose {
    services: serde_yaml::Mapping,
    nodes: BTreeMap<String, (Yaml, Config)>,
}

fn compose() -> TestResult<Compose> {
    let file = read_yaml("docker-compose.yml")?;
    let services = file["services"].as_mapping().ok_or("no services")?.clone();
    let mut nodes = BTreeMap::new();
    for (name, service) in &services {
        if compose_env(service).contains_key("PUSHWIRE_BROKER__KIND") {
            let config = compose_node_config(service)?;
            nodes.insert(yaml_string(name), (service.clone(), config));
        }
    }
    Ok(Compose { services, nodes })
}

impl Compose {
    fn service(&self, name: &str) -> TestResult<&Yaml> {
        self.services
            .get(name)
            .ok_or_else(|| format!("docker-compose.yml has no service {name}").into())
    }
}

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

// ---- Kubernetes -------------------------------------------------------------------------

struct Kube {
    deployment: Yaml,
    container: Yaml,
    config_maps: BTreeMap<String, Yaml>,
    others: Vec<Yaml>,
}

fn kube() -> TestResult<Kube> {
    let mut documents = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_path("config/k8s"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml" || e == "yml"))
    {
        let relative = file
            .strip_prefix(repo_path(""))?
            .to_string_lossy()
            .into_owned();
        documents.extend(read_yaml_documents(&relative)?);
    }
    let deployment = documents
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .cloned()
        .ok_or("no Deployment")?;
    let container = deployment["spec"]["template"]["spec"]["containers"][0].clone();
    let config_maps = documents
        .iter()
        .filter(|d| d["kind"] == "ConfigMap")
        .map(|d| (yaml_string(&d["metadata"]["name"]), d.clone()))
        .collect();
    Ok(Kube {
        deployment,
        container,
        config_maps,
        others: documents,
    })
}

impl Kube {
    /// The container's environment as the kubelet builds it; secrets become placeholders.
    fn env(&self, dir: &std::path::Path) -> TestResult<BTreeMap<String, String>> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for var in self.container["env"].as_sequence().into_iter().flatten() {
            let name = yaml_string(&var["name"]);
            let value = if let Some(value) = var["value"].as_str() {
                let mut value = value.to_owned();
                for (k, v) in &env {
                    value = value.replace(&format!("$({k})"), v);
                }
                value
            } else if var["valueFrom"]["secretKeyRef"].is_mapping() {
                // All digits: the deploy files must keep such a secret a string.
                "8".repeat(32)
            } else if var["valueFrom"]["fieldRef"].is_mapping() {
                "pushwire-7d9f8-abcde".to_owned()
            } else {
                return fail(format!("env {name}: unsupported source"));
            };
            env.insert(name, value);
        }
        if let Some(path) = env.get("PUSHWIRE_CONFIG").cloned() {
            let file = self.mounted_config_file(&path)?;
            let local = dir.join("pushwire.toml");
            std::fs::write(&local, file)?;
            env.insert("PUSHWIRE_CONFIG".into(), local.display().to_string());
        }
        Ok(env)
    }

    /// The content of a file the container sees at `path` through a ConfigMap volume.
    fn mounted_config_file(&self, path: &str) -> TestResult<String> {
        for mount in self.container["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let mount_path = yaml_string(&mount["mountPath"]);
            let Some(file) = path.strip_prefix(&format!("{mount_path}/")) else {
                continue;
            };
            let volume = self.deployment["spec"]["template"]["spec"]["volumes"]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == mount["name"])
                .ok_or("volume of the mount")?;
            let map_name = yaml_string(&volume["configMap"]["name"]);
            let map = self
                .config_maps
                .get(&map_name)
                .ok_or_else(|| format!("no ConfigMap {map_name}"))?;
            return map["data"][file]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("ConfigMap {map_name} has no {file}").into());
        }
        fail(format!("{path} is not mounted"))
    }

    fn pod_labels(&self) -> &Yaml {
        &self.deployment["spec"]["template"]["metadata"]["labels"]
    }

    fn container_port(&self, name: &str) -> TestResult<u16> {
        self.container["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| format!("no container port named {name}").into())
    }

    /// A port reference (a name or a number) resolved to a number.
    fn resolve_port(&self, port: &Yaml) -> TestResult<u16> {
        match port {
            Yaml::String(name) => self.container_port(name),
            Yaml::Number(n) => Ok(n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or("bad port")?),
            _ => fail("missing port"),
        }
    }
}

/// `labels` holds every key/value of `selector`.
fn selects(selector: &Yaml, labels: &Yaml) -> bool {
    selector
        .as_mapping()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

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

// ---- Names shared with the code ---------------------------------------------------------

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
