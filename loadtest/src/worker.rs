//! Worker processes: a slice of a fleet in its own process, so no process holds more
//! sockets than its open-file limit allows.
//!
//! `pushwire-loadtest worker` is started by the coordinator with piped stdin and stdout and
//! speaks JSON lines:
//!
//! ```text
//! coordinator -> worker   {"cmd":"start","spec":{..FleetSpec..},"deadline_secs":N}
//! worker -> coordinator   {"event":"progress","snapshot":{..}}      every 500 ms
//! coordinator -> worker   {"cmd":"churn","per_sec":X}                this worker's share
//! coordinator -> worker   {"cmd":"slow_down","mark_unix_us":N}       (any time, any number)
//! coordinator -> worker   {"cmd":"stop","published":[..]|null,"grace_ms":N}
//! worker -> coordinator   {"event":"final","snapshot":{..}}         then it exits
//! ```
//!
//! A worker also stops by itself when its stdin closes (the coordinator died) or its
//! deadline passes, so no worker outlives a run. Its logs go to stderr, which the
//! coordinator passes through.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::oneshot;
use tokio::time::{interval, sleep, timeout};

use crate::local_fleet::{FleetSpec, LocalFleet};
use crate::stats::Snapshot;

const PROGRESS_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
enum WorkerCommand {
    Start {
        spec: FleetSpec,
        deadline_secs: u64,
    },
    Churn {
        per_sec: f64,
    },
    SlowDown {
        mark_unix_us: u64,
    },
    Stop {
        published: Option<Vec<u64>>,
        grace_ms: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event {
    Progress { snapshot: Snapshot },
    Final { snapshot: Snapshot },
}

/// The `worker` subcommand: runs one slice until told to stop, reporting on stdout.
pub async fn serve() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = lines
        .next_line()
        .await?
        .context("stdin closed before start")?;
    let WorkerCommand::Start {
        spec,
        deadline_secs,
    } = serde_json::from_str(&first)?
    else {
        bail!("first command must be start");
    };
    let fleet = LocalFleet::start(spec);
    let deadline = sleep(Duration::from_secs(deadline_secs));
    tokio::pin!(deadline);
    let mut progress = interval(PROGRESS_EVERY);
    let mut out = tokio::io::stdout();
    let (published, grace) = loop {
        tokio::select! {
            _ = progress.tick() => emit(&mut out, &Event::Progress { snapshot: fleet.snapshot() }).await?,
            () = &mut deadline => break (None, Duration::from_secs(2)),
            line = lines.next_line() => match line {
                Ok(Some(line)) => match serde_json::from_str(&line) {
                    Ok(WorkerCommand::Stop { published, grace_ms }) => break (published, Duration::from_millis(grace_ms)),
                    Ok(WorkerCommand::Churn { per_sec }) => fleet.set_churn(per_sec),
                    Ok(WorkerCommand::SlowDown { mark_unix_us }) => fleet.slow_down(mark_unix_us),
                    _ => eprintln!("worker: ignoring unexpected command {line:?}"),
                },
                _ => break (None, Duration::from_secs(2)),
            },
        }
    };
    let snapshot = fleet.stop(published, grace).await;
    emit(&mut out, &Event::Final { snapshot }).await
}

async fn emit(out: &mut tokio::io::Stdout, event: &Event) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(event)?;
    line.push(b'\n');
    out.write_all(&line).await?;
    out.flush().await?;
    Ok(())
}

/// The coordinator's side: worker processes and their latest reports.
#[derive(Debug)]
pub struct RemoteFleet {
    workers: Vec<WorkerHandle>,
}

#[derive(Debug)]
struct WorkerHandle {
    child: Child,
    stdin: ChildStdin,
    latest: Arc<Mutex<Snapshot>>,
    final_rx: oneshot::Receiver<Snapshot>,
}

impl RemoteFleet {
    /// Starts one worker process per spec.
    pub async fn start(specs: Vec<FleetSpec>, deadline: Duration) -> anyhow::Result<RemoteFleet> {
        let exe = std::env::current_exe().context("locating own executable")?;
        let mut workers = Vec::new();
        for spec in specs {
            let mut child = crate::spawn::command(&exe)
                .arg("worker")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting worker process")?;
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let start = WorkerCommand::Start {
                spec,
                deadline_secs: deadline.as_secs() + 5,
            };
            send(&mut stdin, &start).await?;
            let latest = Arc::new(Mutex::new(Snapshot::default()));
            let (final_tx, final_rx) = oneshot::channel();
            tokio::spawn(read_events(stdout, Arc::clone(&latest), final_tx));
            workers.push(WorkerHandle {
                child,
                stdin,
                latest,
                final_rx,
            });
        }
        Ok(RemoteFleet { workers })
    }

    /// The sum of every worker's latest report.
    pub fn snapshot(&self) -> Snapshot {
        let mut sum = Snapshot::default();
        for w in &self.workers {
            if let Ok(latest) = w.latest.lock() {
                sum.add(&latest);
            }
        }
        sum
    }

    /// Gives each worker an equal share of `per_sec` (their slices are of equal size).
    pub async fn set_churn(&mut self, per_sec: f64) -> anyhow::Result<()> {
        let share = per_sec / self.workers.len().max(1) as f64;
        self.send_all(&WorkerCommand::Churn { per_sec: share })
            .await
    }

    pub async fn slow_down(&mut self, mark_unix_us: u64) -> anyhow::Result<()> {
        self.send_all(&WorkerCommand::SlowDown { mark_unix_us })
            .await
    }

    async fn send_all(&mut self, cmd: &WorkerCommand) -> anyhow::Result<()> {
        for w in &mut self.workers {
            send(&mut w.stdin, cmd)
                .await
                .with_context(|| format!("sending to worker {:?}", w.child.id()))?;
        }
        Ok(())
    }

    /// Process ids of the workers still running.
    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(|w| w.child.id()).collect()
    }

    /// Stops every worker and sums their final reports. A worker that does not report
    /// within the grace period (plus a margin) is killed and counted with its last progress.
    pub async fn stop(
        mut self,
        published: Option<Vec<u64>>,
        grace: Duration,
    ) -> anyhow::Result<Snapshot> {
        let stop = WorkerCommand::Stop {
            published,
            grace_ms: grace.as_millis() as u64,
        };
        for w in &mut self.workers {
            if let Err(err) = send(&mut w.stdin, &stop).await {
                eprintln!("worker {:?}: could not send stop: {err:#}", w.child.id());
            }
        }
        let mut sum = Snapshot::default();
        for mut w in self.workers {
            match timeout(grace + Duration::from_secs(5), &mut w.final_rx).await {
                Ok(Ok(snapshot)) => sum.add(&snapshot),
                _ => {
                    eprintln!(
                        "worker {:?} sent no final report; using its last progress",
                        w.child.id()
                    );
                    if let Ok(latest) = w.latest.lock() {
                        sum.add(&latest);
                    }
                }
            }
            let _ = w.child.start_kill();
            let _ = timeout(Duration::from_secs(2), w.child.wait()).await;
        }
        Ok(sum)
    }
}

async fn send(stdin: &mut ChildStdin, cmd: &WorkerCommand) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(cmd)?;
    line.push(b'\n');
    stdin.write_all(&line).await?;
    stdin.flush().await?;
    Ok(())
}

async fn read_events(
    stdout: tokio::process::ChildStdout,
    latest: Arc<Mutex<Snapshot>>,
    final_tx: oneshot::Sender<Snapshot>,
) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<Event>(&line) {
            Ok(Event::Progress { snapshot }) => {
                if let Ok(mut l) = latest.lock() {
                    *l = snapshot;
                }
            }
            Ok(Event::Final { snapshot }) => {
                let _ = final_tx.send(snapshot);
                return;
            }
            Err(err) => eprintln!("worker: unreadable report ({err}): {:.120}", line),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn commands_and_events_are_json_lines() {
        let stop = WorkerCommand::Stop {
            published: Some(vec![3, 4]),
            grace_ms: 100,
        };
        let line = serde_json::to_string(&stop).unwrap();
        assert_eq!(line, r#"{"cmd":"stop","published":[3,4],"grace_ms":100}"#);
        let event = Event::Progress {
            snapshot: Snapshot::default(),
        };
        let line = serde_json::to_string(&event).unwrap();
        assert!(line.starts_with(r#"{"event":"progress","#) && !line.contains('\n'));
        assert!(matches!(
            serde_json::from_str(&line).unwrap(),
            Event::Progress { .. }
        ));
        let churn = serde_json::to_string(&WorkerCommand::Churn { per_sec: 2.5 }).unwrap();
        assert_eq!(churn, r#"{"cmd":"churn","per_sec":2.5}"#);
        let slow: WorkerCommand =
            serde_json::from_str(r#"{"cmd":"slow_down","mark_unix_us":7}"#).unwrap();
        assert!(matches!(slow, WorkerCommand::SlowDown { mark_unix_us: 7 }));
    }
}
