//! Independent clients (tests/clients/): npm packages run by `node`, PyPI packages run
//! by the venv's `python3`. Each is a script that the test starts as a child process;
//! it prints one JSON line per observation on stdout, which the test reads with a
//! bounded wait. Installed by `scripts/install-test-clients.sh` (the test command runs
//! it); a missing install fails the test with that instruction, it never skips.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::{TestResult, WAIT, fail};

/// tests/clients: the scripts, node_modules and .venv.
pub fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn require(path: PathBuf) -> TestResult<PathBuf> {
    if path.exists() {
        Ok(path)
    } else {
        fail(format!(
            "{} is missing: run scripts/install-test-clients.sh",
            path.display()
        ))
    }
}

/// `node tests/clients/<script> args…`, with tests/clients as working directory.
pub fn node(script: &str, args: &[&str]) -> TestResult<Command> {
    let dir = clients_dir();
    require(dir.join("node_modules"))?;
    let mut cmd = Command::new("node");
    cmd.arg(require(dir.join(script))?)
        .args(args)
        .current_dir(&dir);
    Ok(cmd)
}

/// The venv's `python3 tests/clients/<script> args…`.
pub fn python(script: &str, args: &[&str]) -> TestResult<Command> {
    let dir = clients_dir();
    let mut cmd = Command::new(require(dir.join(".venv/bin/python3"))?);
    cmd.arg(require(dir.join(script))?)
        .args(args)
        .current_dir(&dir);
    Ok(cmd)
}

/// A running client script whose stdout lines the test reads.
pub struct Script {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Script {
    /// Starts `cmd` with piped stdout (stderr goes to the test's output); killed on drop.
    pub fn spawn(mut cmd: Command) -> TestResult<Script> {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        Ok(Script {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next stdout line, within `WAIT`.
    pub async fn line(&mut self) -> TestResult<String> {
        self.line_within(WAIT).await
    }

    /// The next stdout line, within `limit`.
    async fn line_within(&mut self, limit: std::time::Duration) -> TestResult<String> {
        match tokio::time::timeout(limit, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => fail("client script ended"),
            Ok(Err(err)) => fail(format!("reading client script: {err}")),
            Err(_) => fail(format!("no line from client script within {limit:?}")),
        }
    }

    /// The next stdout line parsed as JSON.
    pub async fn json(&mut self) -> TestResult<serde_json::Value> {
        let line = self.line().await?;
        serde_json::from_str(&line).map_err(|e| format!("not JSON: {line:?}: {e}").into())
    }

    /// Reads lines until one satisfies `pred` (within `WAIT` each); returns it.
    pub async fn until(
        &mut self,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> TestResult<serde_json::Value> {
        loop {
            let value = self.json().await?;
            if pred(&value) {
                return Ok(value);
            }
        }
    }

    /// `until`, for a step the client itself paces beyond `WAIT` (pusher-js retries a
    /// refused connection only after 15 s): the matching line must come within `limit`.
    pub async fn until_within(
        &mut self,
        limit: std::time::Duration,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> TestResult<serde_json::Value> {
        // One deadline for the whole step: the client may be silent for longer than
        // `WAIT` between lines (pusher-js says nothing while it waits to retry).
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let line = match self.line_within(left).await {
                Ok(line) => line,
                Err(_) if left.is_zero() || tokio::time::Instant::now() >= deadline => {
                    return fail(format!(
                        "no matching line from client script within {limit:?}"
                    ));
                }
                Err(err) => return Err(err),
            };
            let value: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| format!("not JSON: {line:?}: {e}"))?;
            if pred(&value) {
                return Ok(value);
            }
        }
    }

    /// Asks the script to finish (SIGTERM, so a browser it drives is closed too) and
    /// waits for it (within `WAIT`).
    pub async fn stop(mut self) -> TestResult {
        if let Some(pid) = self.child.id() {
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
        }
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .map_err(|_| "client script did not stop")??;
        Ok(())
    }

    /// Waits for the script to exit successfully (within `WAIT`).
    pub async fn success(mut self) -> TestResult {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .map_err(|_| "client script did not exit")??;
        if status.success() {
            Ok(())
        } else {
            fail(format!("client script failed: {status}"))
        }
    }
}

/// Runs a script to completion and returns its stdout (for one-shot SDK calls).
pub async fn run(mut cmd: Command) -> TestResult<String> {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .map_err(|_| "client script did not finish")??;
    if !out.status.success() {
        return fail(format!(
            "client script failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
