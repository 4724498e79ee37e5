//! One process's share of a fleet: [`FleetSpec`], what a slice of connections needs (it
//! crosses to worker processes as JSON), and [`LocalFleet`], those connections run as tasks
//! of this process.
//!
//! Durable fleets (`durable: true`) run reconnecting clients (see `durable`) and a churn
//! ticker whose rate the run sets through [`LocalFleet::set_churn`];
//! [`LocalFleet::slow_down`] tells slow clients to stop reading and marks the publications
//! from then on (see `conn`).
//!
//! Ramp: connection `i` (global numbering across workers, which also picks its target and
//! source address round-robin) starts at `i / connect_rate` seconds, and at most
//! `max_pending` handshakes are in flight at once, so the listen backlog never overflows
//! and a slow server slows the ramp instead of failing it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, interval, timeout};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::addrs::Target;
use crate::codec::Encoding;
use crate::conn;
use crate::context::{ConnContext, Handshake, Kick, SlowMode};
use crate::durable;
use crate::stats::{CounterSnapshot, Snapshot, Stats};

/// Everything needed to open a slice of connections; crosses to worker processes as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetSpec {
    pub targets: Vec<Target>,
    pub sources: Vec<IpAddr>,
    pub encoding: Encoding,
    /// The channel every connection subscribes to (with `channels` > 1, the base name).
    pub channel: String,
    /// Connection `i` subscribes to `channel.(i % channels)` when this is above 1.
    #[serde(default)]
    pub channels: usize,
    /// Each publication goes to a random channel (the `channels` scenario).
    #[serde(default)]
    pub random_channels: bool,
    /// Share of connections that stop reading (see `context::is_slow`), and when.
    #[serde(default)]
    pub slow_fraction: f64,
    #[serde(default)]
    pub slow_mode: SlowMode,
    /// `SO_RCVBUF` of the slow connections' sockets (0: the system default).
    #[serde(default)]
    pub slow_recv_buffer: usize,
    /// Clients reconnect with recovery whenever their session ends (see `durable`).
    #[serde(default)]
    pub durable: bool,
    /// How far each connection goes before it just listens.
    pub handshake: Handshake,
    /// Global index of this slice's first connection.
    pub first_index: usize,
    pub connections: usize,
    /// New connections per second.
    pub connect_rate: f64,
    /// Handshakes in flight at once.
    pub max_pending: usize,
    pub connect_timeout_ms: u64,
    pub read_buffer_bytes: usize,
    pub write_buffer_bytes: usize,
}

impl FleetSpec {
    /// Splits into `parts` slices with consecutive indices and a share of rate and pending.
    pub fn split(&self, parts: usize) -> Vec<FleetSpec> {
        let parts = parts.max(1);
        let mut first = self.first_index;
        (0..parts)
            .map(|p| {
                let n = self.connections / parts + usize::from(p < self.connections % parts);
                let spec = FleetSpec {
                    first_index: first,
                    connections: n,
                    connect_rate: self.connect_rate / parts as f64,
                    max_pending: (self.max_pending / parts).max(1),
                    ..self.clone()
                };
                first += n;
                spec
            })
            .collect()
    }

    fn ws_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_bytes)
            .write_buffer_size(self.write_buffer_bytes)
            .max_write_buffer_size(self.write_buffer_bytes.max(1) * 64 + 64 * 1024)
            .max_message_size(Some(16 << 20))
            .max_frame_size(Some(16 << 20))
    }
}

/// Connections run as tasks of this process.
#[derive(Debug)]
pub struct LocalFleet {
    ctx: Arc<ConnContext>,
    tasks: TaskTracker,
    ramp: JoinHandle<()>,
    churn: watch::Sender<f64>,
}

impl LocalFleet {
    /// Starts ramping connections up; returns at once.
    pub fn start(spec: FleetSpec) -> LocalFleet {
        let kicks = if spec.durable {
            (0..spec.connections).map(|_| Kick::default()).collect()
        } else {
            Vec::new()
        };
        let ctx = Arc::new(ConnContext {
            encoding: spec.encoding,
            channel: spec.channel.clone(),
            channels: spec.channels,
            random_channels: spec.random_channels,
            slow_fraction: spec.slow_fraction,
            slow_mode: spec.slow_mode,
            slow_recv_buffer: spec.slow_recv_buffer,
            handshake: spec.handshake,
            targets: spec.targets.clone(),
            sources: spec.sources.clone(),
            ws_config: spec.ws_config(),
            connect_timeout: Duration::from_millis(spec.connect_timeout_ms),
            pending: Arc::new(Semaphore::new(spec.max_pending.max(1))),
            stats: Arc::new(Stats::default()),
            stop: CancellationToken::new(),
            published: OnceLock::new(),
            mark: AtomicU64::new(0),
            slow_now: CancellationToken::new(),
            first_index: spec.first_index,
            kicks,
        });
        let tasks = TaskTracker::new();
        let (churn, churn_rate) = watch::channel(0.0);
        if spec.durable {
            tasks.spawn(durable::churn(Arc::clone(&ctx), churn_rate));
        }
        let ramp = tokio::spawn(ramp(Arc::clone(&ctx), spec, tasks.clone()));
        LocalFleet {
            ctx,
            tasks,
            ramp,
            churn,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.ctx.stats.snapshot()
    }

    pub fn counters(&self) -> CounterSnapshot {
        self.ctx.stats.counters.snapshot()
    }

    /// Sets how many durable clients per second the churn ticker closes (0 pauses it).
    pub fn set_churn(&self, per_sec: f64) {
        self.churn.send_replace(per_sec);
    }

    /// Marks publications from `mark_unix_us` on (`marked_latency`) and tells slow clients
    /// in [`SlowMode::OnSignal`] to stop reading.
    pub fn slow_down(&self, mark_unix_us: u64) {
        self.ctx.mark.store(mark_unix_us, Ordering::Relaxed);
        self.ctx.slow_now.cancel();
    }

    /// Stops every connection; `published` (per publisher stream) lets them count losses.
    /// Waits at most `grace` for connections to finish.
    pub async fn stop(self, published: Option<Vec<u64>>, grace: Duration) -> Snapshot {
        if let Some(published) = published {
            let _ = self.ctx.published.set(published);
        }
        self.ctx.stop.cancel();
        self.ramp.abort();
        self.tasks.close();
        let _ = timeout(grace, self.tasks.wait()).await;
        self.ctx.stats.snapshot()
    }
}

async fn ramp(ctx: Arc<ConnContext>, spec: FleetSpec, tasks: TaskTracker) {
    let pending = Arc::clone(&ctx.pending);
    let rate = spec.connect_rate.max(0.001);
    let started = Instant::now();
    let mut tick = interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut launched = 0;
    while launched < spec.connections {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate) as usize + 1).min(spec.connections);
        while launched < due {
            let permit = tokio::select! {
                p = Arc::clone(&pending).acquire_owned() => p,
                () = ctx.stop.cancelled() => return,
            };
            let Ok(permit) = permit else { return };
            let (ctx, index) = (Arc::clone(&ctx), spec.first_index + launched);
            if spec.durable {
                tasks.spawn(durable::run(ctx, index, permit));
            } else {
                tasks.spawn(conn::run(ctx, index, permit));
            }
            launched += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn split_keeps_every_connection_once_with_consecutive_indices() {
        let spec = FleetSpec {
            targets: vec![],
            sources: vec![],
            encoding: Encoding::Json,
            channel: "bench".into(),
            channels: 1,
            random_channels: false,
            slow_fraction: 0.0,
            slow_mode: SlowMode::FromStart,
            slow_recv_buffer: 0,
            durable: false,
            handshake: Handshake::Subscribe,
            first_index: 0,
            connections: 10,
            connect_rate: 900.0,
            max_pending: 64,
            connect_timeout_ms: 1000,
            read_buffer_bytes: 4096,
            write_buffer_bytes: 0,
        };
        let parts = spec.split(3);
        assert_eq!(
            parts.iter().map(|p| p.connections).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(
            parts.iter().map(|p| p.first_index).collect::<Vec<_>>(),
            [0, 4, 7]
        );
        assert!(
            parts
                .iter()
                .all(|p| p.connect_rate == 300.0 && p.max_pending == 21)
        );
        spec.ws_config(); // must not panic: max_write_buffer_size > write_buffer_size
    }
}
