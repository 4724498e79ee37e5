//! A real `redis-server` on a free port, owned by the test: it can be killed and started
//! again on the same port, with or without its data (empty, or from its last `SAVE`);
//! and a real Redis Cluster of three masters, with or without replicas.

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

/// Starts 3 masters, each with `replicas` replicas, as one Redis Cluster and waits until
/// it is ok and every replica is in sync; returns (masters, replicas).
pub async fn redis_cluster(replicas: usize) -> TestResult<(Vec<RedisServer>, Vec<RedisServer>)> {
    let mut servers = Vec::new();
    for _ in 0..3 * (1 + replicas) {
        servers.push(
            RedisServer::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "2000",
            ])
            .await?,
        );
    }
    let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
    args.extend(servers.iter().map(RedisServer::addr));
    args.extend([
        "--cluster-replicas".into(),
        replicas.to_string(),
        "--cluster-yes".into(),
    ]);
    let output = tokio::process::Command::new("redis-cli")
        .args(&args)
        .output()
        .await?;
    if !output.status.success() {
        return fail(format!(
            "cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        ));
    }
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    let (mut masters, mut replica_servers) = (Vec::new(), Vec::new());
    for server in servers {
        loop {
            let info = server.cli(&["CLUSTER", "INFO"]).await?;
            let role = server.cli(&["ROLE"]).await?;
            let synced = role.starts_with("master") || role.contains("connected");
            if info.contains("cluster_state:ok") && synced {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return fail(format!("cluster never became ok: {info} {role}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if server.cli(&["ROLE"]).await?.starts_with("master") {
            masters.push(server);
        } else {
            replica_servers.push(server);
        }
    }
    Ok((masters, replica_servers))
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
