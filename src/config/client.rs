//! `[client]`: what one client connection may do and hold: timeouts and heartbeats, its
//! outbound queue and frame sizes, inbound rate limits, origins, and connections per
//! address and per user.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    pub connect_timeout_secs: u64,
    pub ping_interval_secs: u64,
    pub pong_timeout_secs: u64,
    /// Outbound queue bound in messages; overflow evicts the client with 4008.
    pub queue_max_messages: usize,
    /// Outbound queue bound in bytes; overflow evicts the client with 4008.
    pub queue_max_bytes: usize,
    /// Largest inbound frame (close 1009 beyond it).
    pub max_frame_bytes: usize,
    /// Channels one connection may subscribe to (error 106 beyond it).
    pub max_channels: usize,
    /// Largest outbound batch frame; a queue holding more is sent in several frames.
    pub max_batch_bytes: usize,
    /// WebSocket read buffer per connection (clients send little; it grows for big frames).
    pub read_buffer_bytes: usize,
    /// A write to a client that takes longer than this ends the connection.
    pub write_timeout_secs: u64,
    /// Milliseconds a session waits, once woken with something to write, before it
    /// writes, so that more messages share the frame; 0: write at once (and straight
    /// from the push when nothing is pending).
    pub write_delay_ms: u64,
    /// Most messages in one outbound batch frame; 0: only `max_batch_bytes` bounds it.
    pub max_messages_per_frame: usize,
    /// Browser origins allowed to open a WebSocket; empty or "*": any.
    pub allowed_origins: Vec<String>,
    /// Inbound messages per second per connection (token bucket refill); 0: unlimited.
    pub rate_limit_per_sec: u32,
    /// Inbound burst per connection (token bucket size).
    pub rate_limit_burst: u32,
    /// Requests refused with error 110 in a row before the connection is closed with 4009.
    pub rate_limit_strikes: u32,
    /// Open WebSockets per client IP address (4010 beyond it); 0: unlimited. Behind a
    /// proxy every client shares the proxy's address, so set it only on direct listeners.
    pub max_connections_per_ip: usize,
    /// Open connections per authenticated user (4010 beyond it); 0: unlimited.
    pub max_connections_per_user: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout_secs: 10,
            ping_interval_secs: 25,
            pong_timeout_secs: 10,
            queue_max_messages: 4096,
            queue_max_bytes: 1024 * 1024,
            max_frame_bytes: 64 * 1024,
            max_channels: 128,
            max_batch_bytes: 64 * 1024,
            read_buffer_bytes: 128,
            write_timeout_secs: 10,
            write_delay_ms: 0,
            max_messages_per_frame: 0,
            allowed_origins: Vec::new(),
            rate_limit_per_sec: 100,
            rate_limit_burst: 200,
            rate_limit_strikes: 50,
            max_connections_per_ip: 0,
            max_connections_per_user: 0,
        }
    }
}

impl ClientConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }
    pub fn pong_timeout(&self) -> Duration {
        Duration::from_secs(self.pong_timeout_secs)
    }
    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs)
    }
}
