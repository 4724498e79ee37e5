//! `[server]`: the listeners, connection admission (totals, pending, per address), the
//! runtime's threads and socket buffers, and the shutdown grace.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the WebSocket and HTTP API listener.
    pub listen: String,
    /// A separate listener for `/metrics`; empty: served on `listen`.
    pub metrics_listen: String,
    /// How long shutdown waits for client queues to flush.
    pub shutdown_grace_secs: u64,
    /// Open connections per node (4010 beyond it).
    pub max_connections: usize,
    /// WebSockets that upgraded but have not sent `connect` yet; beyond it an upgrade is
    /// refused with HTTP 503. 0: unlimited.
    pub max_pending_connections: usize,
    /// WebSockets from one client address that upgraded but have not sent `connect` yet;
    /// beyond it an upgrade from that address is refused with HTTP 429. 0: unlimited.
    pub max_pending_connections_per_ip: usize,
    /// Proxies (CIDR networks or addresses) whose `Forwarded` / `X-Forwarded-For` header
    /// names the client address for per-IP limits and logs; from any other peer the
    /// header is ignored. Empty: the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
    /// Time a client has to send its HTTP request headers (slowloris), and the longest an
    /// idle keep-alive HTTP connection stays open.
    pub handshake_timeout_secs: u64,
    /// Pending-connection queue of the listener (the kernel caps it at
    /// `net.core.somaxconn`); a burst of connects beyond it waits for SYN retries.
    pub listen_backlog: u32,
    /// Runtime worker threads, which is also the number of fan-out shards; 0: one per
    /// CPU core. Lower it when several nodes share a machine.
    pub worker_threads: usize,
    /// Kernel send buffer (`SO_SNDBUF`) of accepted sockets; 0: the kernel's default,
    /// autotuned up to `net.ipv4.tcp_wmem`'s maximum (4 MiB on many systems). A client
    /// that stops reading pins this much kernel memory before its queue starts to fill.
    pub socket_send_buffer_bytes: usize,
    /// Serve connections that open with an HTTP API request (`/api/*`, `/apps/*`) on a
    /// thread of their own, so a publish does not wait behind fan-out and session work.
    /// Off by default: the fan-out has no backpressure on publishers beyond its job
    /// queues, so under overload the API thread accepts publications faster than they
    /// are delivered and latency grows (see docs/benchmarks.md).
    pub api_thread: bool,
}

/// Bounds of a non-zero `server.socket_send_buffer_bytes`.
pub(super) const MIN_SOCKET_BUFFER: usize = 4096;
pub(super) const MAX_SOCKET_BUFFER: usize = 64 << 20;

/// Upper bound of `server.worker_threads`.
pub(super) const MAX_WORKER_THREADS: usize = 256;

impl ServerConfig {
    /// Worker threads (and fan-out shards) to run: `worker_threads`, or one per CPU core.
    pub fn threads(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "0.0.0.0:8080".into(),
            metrics_listen: String::new(),
            shutdown_grace_secs: 10,
            max_connections: 100_000,
            max_pending_connections: 10_000,
            max_pending_connections_per_ip: 100,
            trusted_proxies: Vec::new(),
            handshake_timeout_secs: 10,
            listen_backlog: 4096,
            worker_threads: 0,
            socket_send_buffer_bytes: 0,
            api_thread: false,
        }
    }
}
