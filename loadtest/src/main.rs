//! `pushwire-loadtest`: the load generator of pushwire.
//!
//! Code map:
//! - `main` (this file): the command line and the hard deadline around every run.
//! - `cli`: options shared by every scenario; turning them into a fleet and an exit code.
//! - `idle`, `fanout`: the scenarios, each a sequence of phases over a fleet.
//! - `fleet`: opening connections at a controlled rate, in-process or over workers.
//! - `worker`: the `worker` subcommand and the coordinator's handle on worker processes
//!   (JSON lines over stdin/stdout).
//! - `conn`: one simulated client: dial from a source address, handshake, listen.
//! - `publisher`: `POST /api/publish` at a rate, in sequential streams.
//! - `wire`: the protocol messages and the benchmark payload (pure).
//! - `seq`: per-connection loss/duplicate/reorder tracking (pure).
//! - `addrs`: target URLs and the source address pool (pure but for DNS).
//! - `stats`: shared counters and latency histograms, and their serialisable snapshot.
//! - `progress`, `report`: live display, summary table, JSON results.
//! - `host`: process memory and limits from `/proc`.
//!
//! Invariant: every run ends by itself. Each phase has its own time bound, and the whole run
//! sits under a hard deadline after which the process exits with code 3; worker processes
//! exit when their deadline passes or their stdin closes.

mod addrs;
mod cli;
mod conn;
mod fanout;
mod fleet;
mod host;
mod idle;
mod progress;
mod publisher;
mod report;
mod seq;
mod stats;
mod wire;
mod worker;

use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::report::Results;

/// Exit code when the hard deadline cuts a run short.
const EXIT_DEADLINE: i32 = 3;

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
        Command::Idle(args) => scenario(idle::run(&args), args.deadline(), &args.common).await,
        Command::Fanout(args) => scenario(fanout::run(&args), args.deadline(), &args.common).await,
        Command::Worker => worker::serve().await.map(|()| 0),
    };
    outcome.unwrap_or_else(|err| {
        eprintln!("error: {err:#}");
        1
    })
}

/// Runs a scenario under its hard deadline and reports it.
async fn scenario(
    run: impl Future<Output = anyhow::Result<Results>>,
    deadline: Duration,
    common: &cli::CommonArgs,
) -> anyhow::Result<i32> {
    match tokio::time::timeout(deadline, run).await {
        Ok(results) => common.finish(&results?),
        Err(_) => {
            eprintln!(
                "error: hard deadline of {}s reached; aborting the run",
                deadline.as_secs()
            );
            Ok(EXIT_DEADLINE)
        }
    }
}
