//! `pushwire-loadtest`: the load generator of pushwire.
//!
//! Code map, from the top down: scenarios, then the fleet, the clients, and the data types
//! at the bottom. The imports between modules form no cycle.
//! - `main` (this file): the command line and the hard deadline around every run.
//! - The scenarios, each a sequence of phases over a fleet:
//!   - `idle`: hold connections; connect rate and server memory per connection.
//!   - `fanout`: subscribers on one channel (or C channels, `--channels`), a publisher at a
//!     rate; latency, loss, duplicates, order. `--slow-fraction` adds clients that never read.
//!   - `channels`: the same over C channels with publications to random channels.
//!   - `churn`: durable clients on a history channel closed and reconnected at a rate, a
//!     spawned node SIGKILLed mid-run; every client must still get everything, once, in order.
//!   - `slow`: a baseline phase, then a share of clients stops reading; healthy clients'
//!     latency in both phases, and the server's evictions.
//!   - `recover`: one client at a time catching up on missed messages with `recover`.
//! - `publish_phase`: the API options, publisher loop, drain and delivery results the
//!   publishing scenarios share.
//! - `cli`: options shared by every scenario; turning them into a fleet, starting and
//!   ramping it (`Ramped`), watching the servers, and the exit code.
//! - `cluster`: self-hosted mode, a redis-server and N nodes started and stopped by the run
//!   (and one killed or restarted by `churn`).
//! - `spawn`: child processes that get SIGKILL when the load generator dies.
//! - `fleet`: the connections of a run, in this process or over workers, and steering them
//!   (churn rate, slow-down mark).
//! - `worker`: the `worker` subcommand and the coordinator's handle on worker processes
//!   (JSON lines over stdin/stdout).
//! - `local_fleet`: one process's slice (`FleetSpec`), opened at a controlled rate.
//! - The clients:
//!   - `durable`: a client that reconnects with `recover` whenever its session ends, and
//!     the churn ticker.
//!   - `conn`: a client that connects once: dial from a source address, handshake, listen;
//!     slow clients.
//!   - `session`: one open connection: reading, pings, latency, sequence and offset
//!     tracking.
//!   - `context`: what the clients of one process share, and which of them are slow.
//!   - `transport`: a WebSocket or an SSE stream behind one reading interface.
//! - `publisher`: `POST /api/publish` at a rate, in sequential streams.
//! - `scrape`: counters from the nodes' `/metrics`.
//! - `codec`: the encodings (JSON, MessagePack, Pusher, SSE): messages to frames and back.
//! - `wire`: the protocol messages and the benchmark payload (pure); `pusher` and `sse`: the
//!   two foreign dialects read into those shapes.
//! - `seq`: per-connection loss/duplicate/reorder tracking (pure).
//! - `rng`: a small seeded random number generator.
//! - `addrs`: target URLs and the source address pool (pure but for DNS).
//! - `stats`: shared counters and latency histograms, and their serialisable snapshot.
//! - `report` (the run's results, table and JSON) over `results` (its sections), and
//!   `progress` (live display).
//! - `host`: process memory and limits from `/proc`.
//!
//! Invariant: every run ends by itself. Each phase has its own time bound, and the whole run
//! sits under a hard deadline after which the process exits with code 3; worker processes
//! exit when their deadline passes or their stdin closes.
//!
//! Invariant: nothing the run started outlives it. Spawned nodes, redis-server and workers
//! are killed when the run ends (`kill_on_drop`, teardown) and, through `spawn`, when this
//! process is killed with SIGKILL.

mod addrs;
mod channels;
mod churn;
mod cli;
mod cluster;
mod codec;
mod conn;
mod context;
mod durable;
mod fanout;
mod fleet;
mod host;
mod idle;
mod json_scan;
mod local_fleet;
mod progress;
mod publish_phase;
mod publisher;
mod pusher;
mod recover;
mod report;
mod results;
mod rng;
mod scrape;
mod seq;
mod session;
mod slow;
mod spawn;
mod sse;
mod stats;
mod transport;
mod wire;
mod worker;
mod ws_client;

use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::report::Results;

/// Exit code when the hard deadline cuts a run short.
const EXIT_DEADLINE: i32 = 3;
/// Exit code when Ctrl-C (SIGINT) ends a run.
const EXIT_INTERRUPTED: i32 = 130;

/// Load generator for pushwire: many connections, fan-out latency, losses, server memory.
#[derive(Debug, Parser)]
#[command(name = "pushwire-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open and hold many subscribed connections; report connect rate and server RSS per connection.
    Idle(idle::IdleArgs),
    /// Subscribers on one channel and a publisher at a fixed rate; report latency and losses.
    Fanout(fanout::FanoutArgs),
    /// Subscribers over many channels, publications to random channels.
    Channels(channels::ChannelsArgs),
    /// Clients closing and reconnecting with recovery while publishing, a node killed
    /// mid-run; every client must get every publication once, in order.
    Churn(churn::ChurnArgs),
    /// A baseline phase, then a share of clients stops reading: healthy latency before and
    /// after, and evictions.
    Slow(slow::SlowArgs),
    /// Time for a client to recover messages it missed (subscribe with `recover`).
    Recover(recover::RecoverArgs),
    /// Internal: run a slice of connections for a coordinator (JSON lines on stdin/stdout).
    #[command(hide = true)]
    Worker,
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(dispatch(cli.command));
    // Connection tasks may still be closing; they are not worth waiting for.
    runtime.shutdown_timeout(Duration::from_millis(500));
    std::process::exit(code);
}

async fn dispatch(command: Command) -> i32 {
    let outcome = match command {
        Command::Idle(mut args) => match args.common.spawn_cluster().await {
            Ok(cluster) => {
                let r = scenario(idle::run(&args), args.deadline(), &args.common).await;
                teardown(cluster, r).await
            }
            Err(err) => Err(err),
        },
        Command::Fanout(mut args) => match spawn(&mut args.common, &mut args.api).await {
            Ok(cluster) => {
                let r = scenario(fanout::run(&args), args.deadline(), &args.common).await;
                teardown(cluster, r).await
            }
            Err(err) => Err(err),
        },
        Command::Channels(mut args) => match spawn(&mut args.common, &mut args.api).await {
            Ok(cluster) => {
                let r = scenario(channels::run(&args), args.deadline(), &args.common).await;
                teardown(cluster, r).await
            }
            Err(err) => Err(err),
        },
        Command::Churn(mut args) => match spawn(&mut args.common, &mut args.api).await {
            Ok(mut cluster) => {
                let run = churn::run(&args, cluster.as_mut());
                let r = scenario(run, args.deadline(), &args.common).await;
                teardown(cluster, r).await
            }
            Err(err) => Err(err),
        },
        Command::Slow(mut args) => match spawn(&mut args.common, &mut args.api).await {
            Ok(cluster) => {
                let r = scenario(slow::run(&args), args.deadline(), &args.common).await;
                teardown(cluster, r).await
            }
            Err(err) => Err(err),
        },
        Command::Recover(args) => {
            match tokio::time::timeout(args.deadline(), recover::run(&args)).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    eprintln!("error: hard deadline reached; aborting the run");
                    Ok(EXIT_DEADLINE)
                }
            }
        }
        Command::Worker => worker::serve().await.map(|()| 0),
    };
    outcome.unwrap_or_else(|err| {
        eprintln!("error: {err:#}");
        1
    })
}

/// Starts the cluster of `--spawn-nodes` (if asked) and points the publisher at it.
async fn spawn(
    common: &mut cli::CommonArgs,
    api: &mut publish_phase::ApiArgs,
) -> anyhow::Result<Option<cluster::LocalCluster>> {
    let cluster = common.spawn_cluster().await?;
    if let Some(c) = &cluster {
        api.use_cluster(c);
    }
    Ok(cluster)
}

/// Stops a spawned cluster (if any) once the run is over, whatever its outcome.
async fn teardown(
    cluster: Option<cluster::LocalCluster>,
    outcome: anyhow::Result<i32>,
) -> anyhow::Result<i32> {
    if let Some(cluster) = cluster {
        cluster.shutdown().await;
    }
    outcome
}

/// Runs a scenario under its hard deadline and Ctrl-C, and reports it. Either cut-off drops
/// the run, which kills its worker processes.
async fn scenario(
    run: impl Future<Output = anyhow::Result<Results>>,
    deadline: Duration,
    common: &cli::CommonArgs,
) -> anyhow::Result<i32> {
    tokio::select! {
        outcome = tokio::time::timeout(deadline, run) => match outcome {
            Ok(results) => common.finish(&results?),
            Err(_) => {
                eprintln!(
                    "error: hard deadline of {}s reached; aborting the run",
                    deadline.as_secs()
                );
                Ok(EXIT_DEADLINE)
            }
        },
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted; stopping");
            Ok(EXIT_INTERRUPTED)
        }
    }
}
