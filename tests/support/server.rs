//! Starting real servers for tests.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use super::{TestResult, WAIT, fail};
use pushwire::config::Config;
use pushwire::server::Server;
use pushwire::state::AppState;

/// The API key every test server accepts.
pub fn api_key() -> &'static str {
    "test-api-key-0123"
}

/// A server running in this process on a free port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    http: reqwest::Client,
}

impl TestServer {
    /// Starts a server with the embedded defaults plus `toml`.
    pub async fn start(toml: &str) -> TestResult<TestServer> {
        let base = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[api]\nkeys = [\"{}\"]\n",
            api_key()
        );
        let config = Config::from_toml(&merge_toml(&base, toml)?)?;
        let server = Server::bind(config).await?;
        let addr = server.local_addr();
        let state = server.state();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = server
                .run(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(TestServer {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
            http: reqwest::Client::new(),
        })
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs JSON to an API route with the test key; returns status and body.
    pub async fn post(&self, path: &str, body: &Value) -> TestResult<(u16, Value)> {
        let response = self
            .http
            .post(self.http_url(path))
            .bearer_auth(api_key())
            .json(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// The node's Prometheus text (`/metrics`).
    pub async fn metrics_text(&self) -> TestResult<String> {
        Ok(self
            .http
            .get(self.http_url("/metrics"))
            .send()
            .await?
            .text()
            .await?)
    }

    /// GETs an API route with the test key.
    pub async fn get(&self, path: &str) -> TestResult<(u16, Value)> {
        let response = self
            .http
            .get(self.http_url(path))
            .bearer_auth(api_key())
            .send()
            .await?;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Publishes through the API and checks for 200.
    pub async fn publish(&self, channel: &str, data: Value) -> TestResult<Value> {
        let (status, body) = self
            .post(
                "/api/publish",
                &serde_json::json!({ "channel": channel, "data": data }),
            )
            .await?;
        if status != 200 {
            return fail(format!("publish answered {status}: {body}"));
        }
        Ok(body)
    }

    /// Waits until `/ready` answers 200 (Redis connected).
    pub async fn wait_ready(&self) -> TestResult {
        self.wait_ready_is(200).await
    }

    /// Waits until `/ready` answers `status`.
    pub async fn wait_ready_is(&self, status: u16) -> TestResult {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self
                .http
                .get(self.http_url("/ready"))
                .send()
                .await?
                .status()
                .as_u16();
            if got == status {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return fail(format!("/ready stayed {got}, wanted {status}"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Shuts the server down gracefully and waits for it.
    pub async fn stop(mut self) -> TestResult {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT * 2, task).await??;
        }
        Ok(())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Appends `extra` to `base`, merging tables that both declare.
fn merge_toml(base: &str, extra: &str) -> TestResult<String> {
    let mut merged: toml::Table = base.parse()?;
    let extra: toml::Table = extra.parse()?;
    for (key, value) in extra {
        match (merged.get_mut(&key), value) {
            (Some(toml::Value::Table(into)), toml::Value::Table(from)) => into.extend(from),
            (_, value) => {
                merged.insert(key, value);
            }
        }
    }
    Ok(toml::to_string(&merged)?)
}

/// The real `pushwire` binary, started on a free port.
pub struct BinaryServer {
    pub addr: SocketAddr,
    pub child: Child,
    _config: tempfile::NamedTempFile,
}

impl BinaryServer {
    pub async fn start(toml: &str) -> TestResult<BinaryServer> {
        Self::start_at(toml, "127.0.0.1:0").await
    }

    /// Starts it listening on `listen` (e.g. the port of a node it replaces).
    pub async fn start_at(toml: &str, listen: &str) -> TestResult<BinaryServer> {
        let config = tempfile::Builder::new().suffix(".toml").tempfile()?;
        let base = format!("[api]\nkeys = [\"{}\"]\n", api_key());
        std::fs::write(config.path(), merge_toml(&base, toml)?)?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_pushwire"))
            .arg("serve")
            .arg("--config")
            .arg(config.path())
            .arg("--listen")
            .arg(listen)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await??
            .ok_or("server exited before listening")?;
        let addr = line
            .strip_prefix("pushwire listening on ")
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .parse()?;
        Ok(BinaryServer {
            addr,
            child,
            _config: config,
        })
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) -> TestResult {
        let pid = self.child.id().ok_or("already exited")?;
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()?;
        if !status.success() {
            return fail("kill -TERM failed");
        }
        Ok(())
    }
}
