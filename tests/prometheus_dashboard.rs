//! A real Prometheus (Debian's `prometheus` package) scrapes two real `pushwire` nodes that
//! relay through a real Redis and ran a small workload, with config/prometheus.yml and
//! config/alerts.yml; then every query of the Grafana dashboard, with its template
//! variables filled in as Grafana would, must return data through the Prometheus HTTP API,
//! the relay panels must show traffic between the nodes, and every alert rule must
//! evaluate cleanly.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use support::observability::{
    WORKLOAD_CONFIG, dashboard, dashboard_exprs, dashboard_variable_queries, read_yaml, repo_path,
    run_workload, substitute_variables,
};
use support::{BinaryServer, RedisServer, TestResult, WAIT, api_key, fail};

/// Scrape and rule evaluation interval of the test Prometheus.
const SCRAPE_INTERVAL: &str = "1s";
/// What `$__rate_interval` becomes: several scrapes, so `rate()` has samples to work with.
const RATE_INTERVAL: &str = "10s";
/// Scrapes of each node to wait for before querying (more than a rate window's worth).
const SCRAPES_BEFORE_QUERYING: f64 = 6.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() -> TestResult {
    let prometheus_bin = find_executable("prometheus")?;
    let promtool = find_executable("promtool")?;
    let redis = RedisServer::start().await?;
    let config = format!(
        "{WORKLOAD_CONFIG}\n[broker]\nkind = \"redis\"\n[redis]\nurl = \"{}\"\n",
        redis.url()
    );
    let nodes = [
        BinaryServer::start(&config).await?,
        BinaryServer::start(&config).await?,
    ];
    let targets: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    let mut workloads = Vec::new();
    for target in &targets {
        wait_ready(target).await?;
    }
    for node in &nodes {
        let base = format!("http://{}", node.addr);
        workloads.push(run_workload(&node.ws_url(), &base, api_key()).await?);
    }
    let stop_publishing = CancellationToken::new();
    for target in &targets {
        tokio::spawn(keep_publishing(target.clone(), stop_publishing.clone()));
    }

    let dir = tempfile::tempdir()?;
    let config_path = write_prometheus_config(dir.path(), &targets)?;
    run_promtool(&promtool, &["check", "config", path_str(&config_path)?])?;
    let prometheus = Prometheus::start(&prometheus_bin, &config_path, dir.path()).await?;
    let result = async {
        prometheus.wait_for_scrapes(&targets).await?;
        check_dashboard_queries(&prometheus, &targets).await?;
        check_relay_traffic(&prometheus, &targets).await?;
        check_variable_queries(&prometheus, &targets).await?;
        check_alert_rules(&prometheus).await
    }
    .await;
    stop_publishing.cancel();
    if result.is_err() {
        eprintln!("prometheus log:\n{}", prometheus.log_tail());
    }
    drop(workloads);
    drop(nodes);
    drop(redis);
    result
}

/// The alert rules fire on the conditions docs/operations.md describes (promtool unit tests
/// in tests/data/alerts_test.yml), and config/prometheus.yml is valid as shipped.
#[test]
fn alert_rules_fire_when_they_should() -> TestResult {
    let promtool = find_executable("promtool")?;
    run_promtool(
        &promtool,
        &[
            "test",
            "rules",
            path_str(&repo_path("tests/data/alerts_test.yml"))?,
        ],
    )?;
    run_promtool(
        &promtool,
        &[
            "check",
            "config",
            path_str(&repo_path("config/prometheus.yml"))?,
        ],
    )
}

/// config/prometheus.yml with a short interval, the test nodes as the `pushwire` job's
/// targets, the other jobs dropped, and rule files resolved to the repository's.
fn write_prometheus_config(dir: &Path, targets: &[String]) -> TestResult<PathBuf> {
    let mut config = read_yaml("config/prometheus.yml")?;
    config["global"]["scrape_interval"] = SCRAPE_INTERVAL.into();
    config["global"]["evaluation_interval"] = SCRAPE_INTERVAL.into();
    let rule_files: Vec<serde_yaml::Value> = config["rule_files"]
        .as_sequence()
        .ok_or("config/prometheus.yml has no rule_files")?
        .iter()
        .map(|f| -> TestResult<serde_yaml::Value> {
            let file = f.as_str().ok_or("rule file is not a string")?;
            Ok(path_str(&repo_path("config").join(file))?.into())
        })
        .collect::<TestResult<_>>()?;
    config["rule_files"] = serde_yaml::Value::Sequence(rule_files);
    let jobs = config["scrape_configs"]
        .as_sequence_mut()
        .ok_or("config/prometheus.yml has no scrape_configs")?;
    jobs.retain(|job| job["job_name"] == "pushwire");
    let [job] = jobs.as_mut_slice() else {
        return fail("config/prometheus.yml has no `pushwire` job");
    };
    let target_list: Vec<serde_yaml::Value> = targets.iter().map(|t| t.as_str().into()).collect();
    job["static_configs"] = serde_yaml::from_str("[{targets: []}]")?;
    job["static_configs"][0]["targets"] = serde_yaml::Value::Sequence(target_list);
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, serde_yaml::to_string(&config)?)?;
    Ok(path)
}

async fn check_dashboard_queries(prometheus: &Prometheus, targets: &[String]) -> TestResult {
    let dashboard = dashboard()?;
    let exprs = dashboard_exprs(&dashboard);
    if exprs.len() < 20 {
        return fail(format!("only {} dashboard queries found", exprs.len()));
    }
    let mut failures = Vec::new();
    for (title, expr) in &exprs {
        let query = substitute_variables(expr, "pushwire", targets, RATE_INTERVAL);
        match prometheus.query(&query).await {
            Ok(result) if result.is_empty() => {
                failures.push(format!("{title:?}: no data for {query}"))
            }
            Ok(_) => {}
            Err(err) => failures.push(format!("{title:?}: {err} for {query}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        fail(format!(
            "{} of {} dashboard queries failed:\n{}",
            failures.len(),
            exprs.len(),
            failures.join("\n")
        ))
    }
}

/// The Redis relay panels show real traffic: both nodes relay publications out and in,
/// observe relay latency, and see each other through heartbeats.
async fn check_relay_traffic(prometheus: &Prometheus, targets: &[String]) -> TestResult {
    for (query, min) in [
        (
            "sum by (instance) (pushwire_relay_messages_total{direction=\"out\"})",
            1.0,
        ),
        (
            "sum by (instance) (pushwire_relay_messages_total{direction=\"in\"})",
            1.0,
        ),
        (
            "sum by (instance) (pushwire_relay_latency_seconds_count)",
            1.0,
        ),
        ("max by (instance) (pushwire_cluster_nodes)", 2.0),
        ("min by (instance) (pushwire_redis_up)", 1.0),
    ] {
        let result = prometheus.query(query).await?;
        for target in targets {
            let value = result
                .iter()
                .find(|s| s["metric"]["instance"] == target.as_str())
                .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok());
            if !value.is_some_and(|v| v >= min) {
                return fail(format!(
                    "{query} on {target} is {value:?}, expected >= {min}"
                ));
            }
        }
    }
    Ok(())
}

/// Waits (bounded) until a node reaches Redis and answers `/ready` with 200.
async fn wait_ready(target: &str) -> TestResult {
    let deadline = Instant::now() + WAIT;
    loop {
        let ready = reqwest::get(format!("http://{target}/ready"))
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return fail(format!("{target} never became ready"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `label_values(selector, label)` variables, as Grafana runs them (the label values API).
async fn check_variable_queries(prometheus: &Prometheus, targets: &[String]) -> TestResult {
    for (name, query) in dashboard_variable_queries(&dashboard()?) {
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .ok_or_else(|| format!("variable {name}: unsupported query {query}"))?;
        let (selector, label) = inner
            .rsplit_once(',')
            .ok_or_else(|| format!("variable {name}: no label in {query}"))?;
        let selector = substitute_variables(selector.trim(), "pushwire", targets, RATE_INTERVAL);
        let values = prometheus.label_values(label.trim(), &selector).await?;
        let expected: &[String] = match name.as_str() {
            "node" => targets,
            "job" => &["pushwire".to_owned()],
            _ => &[],
        };
        for value in expected {
            if !values.contains(value) {
                return fail(format!(
                    "variable {name} ({query}) lacks {value}: {values:?}"
                ));
            }
        }
        if values.is_empty() {
            return fail(format!("variable {name} ({query}) has no values"));
        }
    }
    Ok(())
}

/// Every rule of config/alerts.yml is loaded and evaluates without error.
async fn check_alert_rules(prometheus: &Prometheus) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = prometheus.get("/api/v1/rules", &[]).await?;
        let rules: Vec<&Value> = body["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        let pending: Vec<String> = rules
            .iter()
            .filter(|r| r["health"] != "ok")
            .map(|r| format!("{} {} {}", r["name"], r["health"], r["lastError"]))
            .collect();
        if !rules.is_empty() && pending.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return fail(format!(
                "alert rules not healthy ({} loaded): {pending:?}",
                rules.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Publishes to `news` a few times a second, so rates and latency histograms move.
async fn keep_publishing(target: String, stop: CancellationToken) {
    let http = reqwest::Client::new();
    let mut n = 0u64;
    while !stop.is_cancelled() {
        n += 1;
        let _ = http
            .post(format!("http://{target}/api/publish"))
            .bearer_auth(api_key())
            .json(&serde_json::json!({ "channel": "news", "data": { "n": n } }))
            .send()
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A `prometheus` process on a free local port, killed on drop.
struct Prometheus {
    base: String,
    http: reqwest::Client,
    log: PathBuf,
    _child: Child,
}

impl Prometheus {
    async fn start(bin: &Path, config: &Path, dir: &Path) -> TestResult<Prometheus> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = dir.join("prometheus.log");
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .arg(format!("--config.file={}", path_str(config)?))
            .arg(format!(
                "--storage.tsdb.path={}",
                path_str(&dir.join("data"))?
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()?;
        let prometheus = Prometheus {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            log,
            _child: child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = prometheus
                .http
                .get(format!("{}/-/ready", prometheus.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return Ok(prometheus);
            }
            if Instant::now() > deadline {
                return fail(format!("prometheus not ready:\n{}", prometheus.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (bounded) until every target has been scraped successfully several times.
    async fn wait_for_scrapes(&self, targets: &[String]) -> TestResult {
        let query = "sum by (instance) (count_over_time(up{job=\"pushwire\"}[1m]) and on (instance) up{job=\"pushwire\"} == 1)";
        let deadline = Instant::now() + Duration::from_secs(25);
        loop {
            let result = self.query(query).await?;
            let done = targets.iter().all(|target| {
                result.iter().any(|series| {
                    series["metric"]["instance"] == target.as_str()
                        && series["value"][1]
                            .as_str()
                            .and_then(|v| v.parse::<f64>().ok())
                            .is_some_and(|n| n >= SCRAPES_BEFORE_QUERYING)
                })
            });
            if done {
                return Ok(());
            }
            if Instant::now() > deadline {
                let targets = self.get("/api/v1/targets", &[]).await?;
                return fail(format!("targets not scraped in time: {targets}"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// An instant query; the result vector (or an error naming Prometheus' message).
    async fn query(&self, query: &str) -> TestResult<Vec<Value>> {
        let body = self.get("/api/v1/query", &[("query", query)]).await?;
        if body["status"] != "success" {
            return fail(format!("query failed: {}", body["error"]));
        }
        match &body["data"]["result"] {
            Value::Array(items) => Ok(items.clone()),
            // Scalars and strings are one value.
            other if !other.is_null() => Ok(vec![other.clone()]),
            _ => Ok(Vec::new()),
        }
    }

    async fn label_values(&self, label: &str, selector: &str) -> TestResult<Vec<String>> {
        let body = self
            .get(
                &format!("/api/v1/label/{label}/values"),
                &[("match[]", selector)],
            )
            .await?;
        if body["status"] != "success" {
            return fail(format!("label values of {label} failed: {}", body["error"]));
        }
        Ok(body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect())
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> TestResult<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .query(params)
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        Ok(response.json().await?)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// An executable from PATH or /usr/bin; the test command installs Debian's `prometheus`.
fn find_executable(name: &str) -> TestResult<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!("{name} not found: install Debian's prometheus package (scripts/test.sh does)")
                .into()
        })
}

fn run_promtool(promtool: &Path, args: &[&str]) -> TestResult {
    let output = std::process::Command::new(promtool).args(args).output()?;
    if !output.status.success() {
        return fail(format!(
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

fn path_str(path: &Path) -> TestResult<&str> {
    path.to_str()
        .ok_or_else(|| format!("non-UTF-8 path {}", path.display()).into())
}
