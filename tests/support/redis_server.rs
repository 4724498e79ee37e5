//! A real `redis-server` on a free port, owned by the test: it can be killed and started
//! again on the same port, with or without its data (empty, or from its last `SAVE`).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{TestResult, WAIT, fail};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

/// A port nothing listens on right now.
pub fn free_port() -> TestResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl RedisServer {
    pub async fn start() -> TestResult<RedisServer> {
        Self::start_with(&[]).await
    }

    /// Starts on a given port (one a node was already told to use).
    pub async fn start_on(port: u16) -> TestResult<RedisServer> {
        let mut server = RedisServer {
            port,
            child: None,
            dir: tempfile::tempdir()?,
            extra: Vec::new(),
        };
        server.spawn().await?;
        Ok(server)
    }

    /// Starts with extra `redis-server` arguments (e.g. cluster mode).
    pub async fn start_with(extra: &[&str]) -> TestResult<RedisServer> {
        let mut server = RedisServer {
            port: free_port()?,
            child: None,
            dir: tempfile::tempdir()?,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        server.spawn().await?;
        Ok(server)
    }

    async fn spawn(&mut self) -> TestResult {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server (is it installed?): {e}"))?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + WAIT;
        while self
            .cli(&["PING"])
            .await
            .map(|r| r.trim() != "PONG")
            .unwrap_or(true)
        {
            if tokio::time::Instant::now() > deadline {
                return fail("redis-server did not answer PING");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL: what was written since the last `SAVE` is gone (nothing is persisted
    /// otherwise).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port, from the dump of the last `SAVE` if there was one
    /// (the data directory is kept), else empty.
    pub async fn restart(&mut self) -> TestResult {
        self.kill();
        self.spawn().await
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub async fn cli(&self, args: &[&str]) -> TestResult<String> {
        let output = tokio::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .await?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
