//! Self-hosted mode (`--spawn-nodes N`): a `redis-server` and N pushwire nodes with the
//! Redis broker, all on loopback, started before a run and torn down after it.
//!
//! Each node gets a config file written to a private directory, listens on
//! `127.0.0.1:0`, and is known to be up once it prints `pushwire listening on ADDR` on
//! stdout and `GET /ready` answers 200 (its Redis connection is up); its stderr (logs) goes to `node-K.log` in the same directory, which is kept when
//! a node fails to start so the cause can be read. Every child is spawned with
//! `kill_on_drop`, so whichever way the run ends (result, hard deadline, Ctrl-C, error)
//! dropping the [`LocalCluster`] kills them; [`LocalCluster::shutdown`] does the same and
//! also reaps them. They are also started through `spawn::command`, so a SIGKILL of the
//! load generator takes them down too.
//!
//! The `churn` scenario kills one node with SIGKILL mid-run ([`LocalCluster::kill_node`])
//! and may start it again on the same address ([`LocalCluster::restart_node`]), so the
//! clients' target list stays valid.
//!
//! The nodes declare a namespace `hist` with history (`--spawn-history-size`), so the same
//! cluster serves runs with history (channel `hist:…`) and without (any other channel).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Child;
use tokio::time::{Instant, sleep, timeout};

/// The API key the spawned nodes accept.
pub const SPAWNED_API_KEY: &str = "loadtest-spawned-key";
/// How long a node or Redis may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub nodes: usize,
    pub pushwire_bin: PathBuf,
    pub redis_bin: String,
    /// `history_size` of the `hist` namespace.
    pub history_size: usize,
    /// A Pusher app to configure on every node (`--pusher-app`).
    pub pusher_app: Option<crate::pusher::PusherApp>,
}

/// A running redis-server and its pushwire nodes.
#[derive(Debug)]
pub struct LocalCluster {
    redis: Child,
    nodes: Vec<Child>,
    /// `ws://127.0.0.1:PORT/ws` per node.
    pub ws_urls: Vec<String>,
    /// `http://127.0.0.1:PORT` per node.
    pub api_urls: Vec<String>,
    pub node_pids: Vec<u32>,
    pub redis_pid: Option<u32>,
    pub dir: PathBuf,
    pushwire_bin: PathBuf,
    config: PathBuf,
    /// `127.0.0.1:PORT` per node.
    addrs: Vec<String>,
}

/// Scratch directories are `SCRATCH_PREFIX<pid>` in the temporary directory.
const SCRATCH_PREFIX: &str = "pushwire-loadtest-";

/// Removes the scratch directories of runs whose process is gone (a run that was
/// SIGKILLed cannot remove its own).
fn remove_stale_scratch_dirs(temp: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl LocalCluster {
    /// Starts Redis on a free port, then the nodes one after the other.
    pub async fn start(spec: &ClusterSpec) -> anyhow::Result<LocalCluster> {
        anyhow::ensure!(
            spec.pushwire_bin.is_file(),
            "--pushwire-bin {} does not exist (build it with `cargo build --release -p pushwire`)",
            spec.pushwire_bin.display()
        );
        remove_stale_scratch_dirs(&std::env::temp_dir());
        let dir = std::env::temp_dir().join(format!("{SCRATCH_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let port = free_port()?;
        let redis = start_redis(&spec.redis_bin, port).await?;
        let config = dir.join("node.toml");
        let mut toml = node_config(port, spec.history_size);
        if let Some(app) = &spec.pusher_app {
            toml.push_str(&pusher_app_config(app));
        }
        std::fs::write(&config, toml)?;
        let mut cluster = LocalCluster {
            redis_pid: redis.id(),
            redis,
            nodes: Vec::new(),
            ws_urls: Vec::new(),
            api_urls: Vec::new(),
            node_pids: Vec::new(),
            dir,
            pushwire_bin: spec.pushwire_bin.clone(),
            config,
            addrs: Vec::new(),
        };
        for k in 0..spec.nodes {
            let log = cluster.dir.join(format!("node-{k}.log"));
            let (child, addr) =
                start_node(&spec.pushwire_bin, &cluster.config, &log, "127.0.0.1:0")
                    .await
                    .with_context(|| format!("node {k} (log: {})", log.display()))?;
            cluster.node_pids.push(child.id().unwrap_or(0));
            cluster.nodes.push(child);
            cluster.ws_urls.push(format!("ws://{addr}/ws"));
            cluster.api_urls.push(format!("http://{addr}"));
            cluster.addrs.push(addr);
        }
        Ok(cluster)
    }

    /// Kills node `k` with SIGKILL (no drain, no close frames: its clients see their
    /// connections reset) and reaps it. Returns its pid.
    pub async fn kill_node(&mut self, k: usize) -> anyhow::Result<u32> {
        let node = self
            .nodes
            .get_mut(k)
            .with_context(|| format!("there is no node {k}"))?;
        let pid = node.id().context("the node has already exited")?;
        node.start_kill().context("sending SIGKILL")?;
        timeout(Duration::from_secs(5), node.wait())
            .await
            .context("the node did not die within 5 s of SIGKILL")??;
        Ok(pid)
    }

    /// Starts node `k` again, on the address it had. Returns the new pid.
    pub async fn restart_node(&mut self, k: usize) -> anyhow::Result<u32> {
        let addr = self
            .addrs
            .get(k)
            .with_context(|| format!("there is no node {k}"))?
            .clone();
        let log = self.dir.join(format!("node-{k}-restarted.log"));
        let (child, _) = start_node(&self.pushwire_bin, &self.config, &log, &addr)
            .await
            .with_context(|| format!("restarting node {k} (log: {})", log.display()))?;
        let pid = child.id().unwrap_or(0);
        self.nodes[k] = child;
        self.node_pids[k] = pid;
        Ok(pid)
    }

    /// Kills every node, then Redis, and waits for them; removes the directory.
    pub async fn shutdown(mut self) {
        for node in &mut self.nodes {
            let _ = node.start_kill();
        }
        for node in &mut self.nodes {
            let _ = timeout(Duration::from_secs(5), node.wait()).await;
        }
        let _ = self.redis.start_kill();
        let _ = timeout(Duration::from_secs(5), self.redis.wait()).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The config every spawned node shares (`--listen` picks the port).
pub fn node_config(redis_port: u16, history_size: usize) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [api]\nkeys = [\"{SPAWNED_API_KEY}\"]\n\
         [broker]\nkind = \"redis\"\n\
         [redis]\nurl = \"redis://127.0.0.1:{redis_port}\"\nkey_prefix = \"loadtest\"\n\
         [namespaces.hist]\nhistory_size = {history_size}\nhistory_ttl_secs = 600\n"
    )
}

/// The `[[pusher.apps]]` entry of a spawned node.
pub fn pusher_app_config(app: &crate::pusher::PusherApp) -> String {
    format!(
        "[[pusher.apps]]\nid = {:?}\nkey = {:?}\nsecret = {:?}\n",
        app.id, app.key, app.secret
    )
}

/// The `pushwire` binary next to this executable (both are built into the same target dir).
pub fn default_pushwire_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("pushwire")))
        .unwrap_or_else(|| PathBuf::from("pushwire"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start_redis(bin: &str, port: u16) -> anyhow::Result<Child> {
    let child = crate::spawn::command(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--maxclients", "10000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {bin} (is redis-server installed?)"))?;
    let until = Instant::now() + START_TIMEOUT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > until {
            bail!("redis-server did not listen on port {port}");
        }
        sleep(Duration::from_millis(20)).await;
    }
    Ok(child)
}

/// Starts a node listening on `listen` and waits until it is ready; returns its address.
async fn start_node(
    bin: &Path,
    config: &Path,
    log: &Path,
    listen: &str,
) -> anyhow::Result<(Child, String)> {
    let mut child = crate::spawn::command(bin)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--listen", listen])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("node stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = timeout(START_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = line.strip_prefix("pushwire listening on ") {
                return Ok(addr.trim().to_string());
            }
        }
        bail!("the node exited before listening")
    })
    .await
    .context("the node did not print `pushwire listening on` in time")??;
    // Keep reading stdout so the node never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    wait_ready(&addr).await?;
    Ok((child, addr))
}

/// Waits for `GET /ready` to answer 200: a node listens before its Redis connection is up,
/// and until then refuses subscriptions with error 100 ("broker unavailable").
async fn wait_ready(addr: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/ready");
    let until = Instant::now() + START_TIMEOUT;
    loop {
        let status = http.get(&url).send().await.map(|r| r.status().as_u16());
        if let Ok(200) = status {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("{url} did not answer 200 in time (last: {status:?})");
        }
        sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stale_scratch_dirs_of_dead_runs_are_removed() -> std::io::Result<()> {
        let temp =
            std::env::temp_dir().join(format!("pushwire-scratch-test-{}", std::process::id()));
        let ours = temp.join(format!("{SCRATCH_PREFIX}{}", std::process::id()));
        // Above the kernel's pid_max (4194304): no process can have it.
        let dead = temp.join(format!("{SCRATCH_PREFIX}4999999"));
        let other = temp.join("unrelated-4999999");
        for dir in [&ours, &dead, &other] {
            std::fs::create_dir_all(dir)?;
        }
        remove_stale_scratch_dirs(&temp);
        let (ours_left, dead_left, other_left) = (ours.exists(), dead.exists(), other.exists());
        std::fs::remove_dir_all(&temp)?;
        assert!(ours_left && other_left && !dead_left);
        Ok(())
    }

    use super::*;

    #[test]
    fn node_config_names_redis_key_and_history_namespace() {
        let toml = node_config(6400, 1000);
        assert!(toml.contains("url = \"redis://127.0.0.1:6400\""));
        assert!(toml.contains("kind = \"redis\""));
        assert!(toml.contains("[namespaces.hist]\nhistory_size = 1000"));
        assert!(SPAWNED_API_KEY.len() >= 8);
    }
}
