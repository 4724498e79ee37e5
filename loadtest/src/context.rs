//! What the simulated clients of one process share ([`ConnContext`]) and the per-client
//! choices it fixes: how far the handshake goes ([`Handshake`]), which clients stop reading
//! and when ([`is_slow`], [`SlowMode`]), and the churn ticker's handle on each reconnecting
//! client ([`Kick`]).
//!
//! Sits below the clients (`session`, `conn`, `durable`) so that each of them can read the
//! context without knowing the others.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::addrs::Target;
use crate::codec::Encoding;
use crate::stats::Stats;

/// What every connection of one process shares.
#[derive(Debug)]
pub struct ConnContext {
    pub encoding: Encoding,
    pub channel: String,
    /// Channels the connections are spread over (see [`channel_for`]).
    pub channels: usize,
    /// Publications go to random channels; published counts are per (stream, channel).
    pub random_channels: bool,
    /// Share of connections that stop reading (see [`is_slow`]).
    pub slow_fraction: f64,
    pub slow_mode: SlowMode,
    /// `SO_RCVBUF` of slow clients' sockets, set before connecting; 0 leaves the default.
    pub slow_recv_buffer: usize,
    pub handshake: Handshake,
    pub targets: Vec<Target>,
    pub sources: Vec<IpAddr>,
    pub ws_config: WebSocketConfig,
    /// Bound on dial + upgrade + connect + subscribe.
    pub connect_timeout: Duration,
    /// Handshakes in flight, first connects and reconnects alike.
    pub pending: Arc<Semaphore>,
    pub stats: Arc<Stats>,
    /// Cancelled when the run ends.
    pub stop: CancellationToken,
    /// Seqs published per stream, set just before `stop` when the run published anything.
    pub published: OnceLock<Vec<u64>>,
    /// Unix micros from which deliveries also count in `marked_latency` (0: not yet).
    pub mark: AtomicU64,
    /// Cancelled when slow clients in [`SlowMode::OnSignal`] should stop reading.
    pub slow_now: CancellationToken,
    /// Global index of this process's first connection.
    pub first_index: usize,
    /// One per connection of a fleet of reconnecting clients (`durable`); else empty.
    pub kicks: Vec<Kick>,
}

/// When slow clients stop reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowMode {
    /// As soon as they are subscribed.
    #[default]
    FromStart,
    /// When [`ConnContext::slow_now`] is cancelled.
    OnSignal,
}

/// The churn ticker's handle on one durable client.
#[derive(Debug, Default)]
pub struct Kick {
    /// True while the client listens on an open session.
    pub up: AtomicBool,
    /// Woken to close the session from the client side.
    pub notify: Notify,
}

/// Whether connection `index` is one of the `fraction` that stop reading: the first
/// `round(fraction × 100)` of every 100 consecutive indices, so they are spread evenly
/// over nodes, source addresses and worker processes.
pub fn is_slow(index: usize, fraction: f64) -> bool {
    let per_hundred = (fraction.clamp(0.0, 1.0) * 100.0).round() as usize;
    index % 100 < per_hundred
}

/// How far each connection goes before it just listens: the WebSocket upgrade only (the
/// server closes it after its `connect_timeout`), `connect`, or `connect` + `subscribe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Handshake {
    Upgrade,
    Connect,
    Subscribe,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_connections_are_the_asked_share() {
        let slow = (0..1000).filter(|&i| is_slow(i, 0.1)).count();
        assert_eq!(slow, 100);
        assert!(!(0..1000).any(|i| is_slow(i, 0.0)));
        assert!((0..100).all(|i| is_slow(i, 1.0)));
    }
}
