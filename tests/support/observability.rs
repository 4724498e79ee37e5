//! What the observability and deploy tests share: the metric names the Grafana dashboard,
//! the alert rules and docs/metrics.md use, a parser for the Prometheus text format, the
//! repository's YAML files, and a `pushwire check-config` runner that loads a configuration
//! exactly as a container would (environment plus mounted file).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{TestResult, fail};
use pushwire::config::Config;

/// Process metrics the prometheus crate's process collector exports on Linux.
pub const PROCESS_METRICS: [&str; 7] = [
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

/// A file of this repository.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn read_repo_file(relative: &str) -> TestResult<String> {
    std::fs::read_to_string(repo_path(relative))
        .map_err(|e| format!("reading {relative}: {e}").into())
}

/// A YAML file with its `<<` merge keys applied (docker-compose uses them).
pub fn read_yaml(relative: &str) -> TestResult<serde_yaml::Value> {
    let mut value: serde_yaml::Value = serde_yaml::from_str(&read_repo_file(relative)?)
        .map_err(|e| format!("{relative} is not valid YAML: {e}"))?;
    value.apply_merge()?;
    Ok(value)
}

/// Every document of a multi-document YAML file.
pub fn read_yaml_documents(relative: &str) -> TestResult<Vec<serde_yaml::Value>> {
    let text = read_repo_file(relative)?;
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(document)
            .map_err(|e| format!("{relative} is not valid YAML: {e}"))?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// The Grafana dashboard.
pub fn dashboard() -> TestResult<Value> {
    let text = read_repo_file("config/grafana/dashboards/pushwire.json")?;
    Ok(serde_json::from_str(&text)?)
}

/// Every panel of the dashboard, including panels nested in collapsed rows.
pub fn dashboard_panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"]
        .as_array()
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    while let Some(panel) = stack.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            stack.extend(nested);
        }
        out.push(panel);
    }
    out
}

/// `(panel title, expr)` for every query of every panel.
pub fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard_panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((title.clone(), expr.to_owned()));
            }
        }
    }
    out
}

/// `(variable name, query)` of every query-type template variable.
pub fn dashboard_variable_queries(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .filter_map(|v| {
            let query = v["query"]["query"].as_str().or(v["query"].as_str())?;
            Some((v["name"].as_str()?.to_owned(), query.to_owned()))
        })
        .collect()
}

/// `(alert name, expr)` of every rule in config/alerts.yml.
pub fn alert_rules() -> TestResult<Vec<(String, String)>> {
    let rules = read_yaml("config/alerts.yml")?;
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .ok_or("a rule without a name")?;
            let expr = rule["expr"].as_str().ok_or("a rule without expr")?;
            out.push((name.to_owned(), expr.to_owned()));
        }
    }
    Ok(out)
}

/// Metric family names an expression refers to (`_bucket`, `_sum`, `_count` stripped).
pub fn metric_names_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut token = String::new();
    let mut in_string = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_string = !in_string;
        }
        if !in_string && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            token.push(c);
            continue;
        }
        if token.starts_with("pushwire_") || token.starts_with("process_") {
            out.insert(family_of(&token).to_owned());
        }
        token.clear();
    }
    out
}

/// The family a sample name belongs to.
pub fn family_of(sample: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| sample.strip_suffix(suffix))
        .unwrap_or(sample)
}

/// `name -> type` from the tables of docs/metrics.md (rows whose first cell is a metric).
pub fn documented_metrics() -> TestResult<BTreeMap<String, String>> {
    let text = read_repo_file("docs/metrics.md")?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            continue;
        }
        let name = cells[1].trim_matches('`');
        let is_metric = (name.starts_with("pushwire_") || name.starts_with("process_"))
            && cells[1].starts_with('`');
        if is_metric && out.insert(name.to_owned(), cells[2].to_owned()).is_some() {
            return fail(format!("docs/metrics.md lists {name} twice"));
        }
    }
    Ok(out)
}

/// Metric names registered in the server's sources (string literals `"pushwire_..."`).
pub fn registered_in_source() -> TestResult<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut dirs = vec![repo_path("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)?;
                for piece in text.split('"').skip(1).step_by(2) {
                    let is_name = piece.starts_with("pushwire_")
                        && !piece.ends_with('_')
                        && piece
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                    if is_name {
                        out.insert(piece.to_owned());
                    }
                }
            }
        }
    }
    Ok(out)
}

/// One scrape of `/metrics`: family types and the samples.
#[derive(Debug, Default)]
pub struct Exposition {
    /// `# TYPE` of every family.
    pub types: BTreeMap<String, String>,
    /// Every sample line: `(name with labels, value)`.
    pub samples: Vec<(String, f64)>,
}

impl Exposition {
    pub fn parse(text: &str) -> TestResult<Exposition> {
        let mut exposition = Exposition::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                    return fail(format!("bad TYPE line {line:?}"));
                };
                exposition.types.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let (series, value) = line
                    .rsplit_once(' ')
                    .ok_or_else(|| format!("bad sample line {line:?}"))?;
                let value: f64 = value
                    .parse()
                    .map_err(|_| format!("bad sample value in {line:?}"))?;
                exposition.samples.push((series.to_owned(), value));
            }
        }
        Ok(exposition)
    }

    /// Sum of the samples of `name` whose labels contain every `label="value"` in `labels`.
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| {
                let (sample_name, rest) = series.split_once('{').unwrap_or((series, ""));
                sample_name == name && labels.iter().all(|l| rest.contains(l))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

/// Replaces the dashboard's template variables the way Grafana does for a Prometheus query
/// with a multi-value `node` selection.
pub fn substitute_variables(
    expr: &str,
    job: &str,
    nodes: &[String],
    rate_interval: &str,
) -> String {
    let escaped: Vec<String> = nodes.iter().map(|n| n.replace('.', "\\\\.")).collect();
    let node = format!("({})", escaped.join("|"));
    expr.replace("$__rate_interval", rate_interval)
        .replace("${job}", job)
        .replace("$job", job)
        .replace("${node}", &node)
        .replace("$node", &node)
}

/// Every config key path (`server.listen`) of the configuration, from the defaults.
pub fn config_key_paths() -> TestResult<BTreeSet<String>> {
    let table: toml::Table = toml::to_string(&Config::default())?.parse()?;
    let mut out = BTreeSet::new();
    let mut stack: Vec<(String, &toml::Table)> = vec![(String::new(), &table)];
    while let Some((prefix, table)) = stack.pop() {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if let toml::Value::Table(inner) = value {
                stack.push((path.clone(), inner));
            }
            out.insert(path);
        }
    }
    Ok(out)
}

/// Checks that a `PUSHWIRE_*` variable names a config key (or the `--config` flag).
pub fn check_env_name(name: &str, keys: &BTreeSet<String>) -> Result<(), String> {
    let Some(rest) = name.strip_prefix("PUSHWIRE_") else {
        return Ok(());
    };
    if rest == "CONFIG" {
        return Ok(());
    }
    let parts: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
    // Namespaces are a map: PUSHWIRE_NAMESPACES__<NAME>__<OPTION>.
    if parts.first().is_some_and(|p| p == "namespaces") && parts.len() == 3 {
        let option = format!("namespaces.default.{}", parts[2]);
        return if keys.contains(&option) {
            Ok(())
        } else {
            Err(format!("{name}: no namespace option {}", parts[2]))
        };
    }
    let path = parts.join(".");
    if keys.contains(&path) {
        Ok(())
    } else {
        Err(format!("{name}: no config key {path}"))
    }
}

/// Every `PUSHWIRE_*` word in a text.
pub fn env_names_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("PUSHWIRE_") && w.len() > "PUSHWIRE_".len())
        .map(str::to_owned)
        .collect()
}

/// Loads the configuration with `pushwire check-config` in a clean environment holding only
/// `env` (as a container would see it) and returns what the binary printed.
pub fn check_config(env: &BTreeMap<String, String>) -> TestResult<Config> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .arg("check-config")
        .env_clear()
        .envs(env)
        .current_dir(repo_path(""))
        .output()?;
    if !output.status.success() {
        return fail(format!(
            "pushwire check-config with {env:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(toml::from_str(&String::from_utf8(output.stdout)?)?)
}

/// The port of a `host:port` address.
pub fn port_of(addr: &str) -> TestResult<u16> {
    let port = addr
        .rsplit(':')
        .next()
        .ok_or_else(|| format!("no port in {addr:?}"))?;
    Ok(port
        .trim_end_matches('/')
        .parse()
        .map_err(|_| format!("bad port in {addr:?}"))?)
}

/// Node configuration for the workload: pings every second (so queue depth is sampled),
/// pong timeout long enough for clients that are not read for a while, and a namespace
/// with history, presence and client publish.
pub const WORKLOAD_CONFIG: &str = r#"
[client]
ping_interval_secs = 1
pong_timeout_secs = 60
[namespaces.chat]
history_size = 10
presence = true
allow_publish = "all"
[[pusher.apps]]
id = "4242"
key = "workload-key"
secret = "workload-secret-0123456789"
"#;

/// The clients of a workload; dropping them disconnects them.
pub struct Workload {
    pub clients: Vec<super::WsClient>,
    /// A Pusher connection of `WORKLOAD_CONFIG`'s app, subscribed to `news`.
    pub pusher: PusherSocket,
}

type PusherSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next Pusher frame whose `event` is `event`, within `WAIT`.
async fn pusher_frame(socket: &mut PusherSocket, event: &str) -> TestResult<Value> {
    use futures_util::StreamExt;
    loop {
        let message = tokio::time::timeout(super::WAIT, socket.next())
            .await?
            .ok_or("Pusher connection closed")??;
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text)?;
            if frame["event"] == event {
                return Ok(frame);
            }
        }
    }
}

/// The Pusher part of the workload: a connection to the app of `WORKLOAD_CONFIG`,
/// subscribed to `news`, that receives one event triggered through the signed Pusher
/// HTTP API (per-app connections, messages in and out, API requests).
async fn pusher_workload(ws_url: &str, http_base: &str) -> TestResult<PusherSocket> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let config = Config::from_toml(WORKLOAD_CONFIG)?;
    let app = pushwire::pusher::PusherApp::from_config(&config.pusher.apps[0]);
    let base = ws_url.strip_suffix("/ws").unwrap_or(ws_url);
    let url = format!("{base}/app/{}?protocol=7", app.key);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    pusher_frame(&mut socket, "pusher:connection_established").await?;
    let subscribe = r#"{"event":"pusher:subscribe","data":{"channel":"news"}}"#;
    socket.send(Message::text(subscribe)).await?;
    pusher_frame(&mut socket, "pusher_internal:subscription_succeeded").await?;
    let path = format!("/apps/{}/events", app.id);
    let body = serde_json::json!({ "name": "tick", "channel": "news", "data": "{}" }).to_string();
    let now = pushwire::auth::unix_now();
    let query =
        pushwire::pusher::signature::sign_request(&app, "POST", &path, &[], body.as_bytes(), now);
    let response = reqwest::Client::new()
        .post(format!("{http_base}{path}"))
        .query(&query)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    if response.status() != 200 {
        return fail(format!("Pusher trigger answered {}", response.status()));
    }
    pusher_frame(&mut socket, "tick").await?;
    Ok(socket)
}

/// A small workload on one node that touches every metric family: connections in both
/// encodings, a Pusher connection receiving an event triggered through the Pusher API, subscriptions, API and client publications, deliveries, history and
/// presence, API requests with 2xx and 4xx answers, client requests with errors, and a
/// normal disconnect.
pub async fn run_workload(ws_url: &str, http_base: &str, api_key: &str) -> TestResult<Workload> {
    use super::{Encoding, WsClient};
    use serde_json::json;

    let http = reqwest::Client::new();
    let (mut json_client, _) = WsClient::connect(ws_url, Encoding::Json).await?;
    let (mut msgpack_client, _) = WsClient::connect(ws_url, Encoding::Msgpack).await?;
    for client in [&mut json_client, &mut msgpack_client] {
        for channel in ["news", "chat:room"] {
            let reply = client
                .request("subscribe", json!({ "channel": channel }))
                .await?;
            if reply["op"] != "subscribed" {
                return fail(format!("subscribe {channel} answered {reply}"));
            }
        }
    }
    for n in 0..5 {
        let response = http
            .post(format!("{http_base}/api/publish"))
            .bearer_auth(api_key)
            .json(&json!({ "channel": "news", "data": { "n": n } }))
            .send()
            .await?;
        if response.status() != 200 {
            return fail(format!("publish answered {}", response.status()));
        }
    }
    let reply = json_client
        .request("publish", json!({ "channel": "chat:room", "data": "hi" }))
        .await?;
    if reply["op"] != "published" {
        return fail(format!("client publish answered {reply}"));
    }
    for client in [&mut json_client, &mut msgpack_client] {
        for _ in 0..6 {
            client.recv_message().await?;
        }
        client
            .request("history", json!({ "channel": "chat:room" }))
            .await?;
        client
            .request("presence", json!({ "channel": "chat:room" }))
            .await?;
    }
    // A request error (undeclared namespace), an API auth failure, a bad channel, an
    // unknown route: the error panels need some.
    let reply = json_client
        .request("subscribe", json!({ "channel": "nowhere:x" }))
        .await?;
    if reply["op"] != "error" {
        return fail(format!(
            "subscribe to an undeclared namespace answered {reply}"
        ));
    }
    let unauthorized = http
        .post(format!("{http_base}/api/publish"))
        .bearer_auth("wrong-key-0000")
        .json(&json!({ "channel": "news", "data": 1 }))
        .send()
        .await?;
    let bad_channel = http
        .post(format!("{http_base}/api/publish"))
        .bearer_auth(api_key)
        .json(&json!({ "channel": "bad channel!", "data": 1 }))
        .send()
        .await?;
    let statuses = [
        unauthorized.status().as_u16(),
        bad_channel.status().as_u16(),
    ];
    if statuses != [401, 400] {
        return fail(format!("expected 401 and 400, got {statuses:?}"));
    }
    for path in ["/api/info", "/health", "/ready", "/nowhere"] {
        http.get(format!("{http_base}{path}"))
            .bearer_auth(api_key)
            .send()
            .await?;
    }
    // A client that leaves normally.
    let (mut leaving, _) = WsClient::connect(ws_url, Encoding::Json).await?;
    leaving
        .request("subscribe", json!({ "channel": "news" }))
        .await?;
    leaving.socket.close(None).await?;
    let _ = leaving.expect_close().await;
    let pusher = pusher_workload(ws_url, http_base).await?;
    Ok(Workload {
        clients: vec![json_client, msgpack_client],
        pusher,
    })
}

/// The Prometheus text of one node.
pub async fn scrape(http_base: &str) -> TestResult<Exposition> {
    let response = reqwest::get(format!("{http_base}/metrics")).await?;
    if response.status() != 200 {
        return fail(format!("/metrics answered {}", response.status()));
    }
    Exposition::parse(&response.text().await?)
}
