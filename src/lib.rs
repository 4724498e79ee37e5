//! pushwire: a real-time WebSocket push server.
//!
//! Clients connect over WebSocket (`session`), subscribe to channels and receive what
//! backend services publish through the HTTP API (`api`). This is the code map; each
//! module's own `//!` header says more.
//!
//! - `protocol`: the wire contract (PROTOCOL.md): message types, error and close codes,
//!   channel names, JSON and MessagePack codecs with batching. Pure, no I/O.
//! - `config`: typed configuration from defaults, file, `PUSHWIRE_*` env and flags, with
//!   validation that names the offending key.
//! - `hub`: the connection registry and fan-out. Channel -> subscribers in a `DashMap`,
//!   a lazily rebuilt snapshot per channel, one fan-out worker per core, bounded
//!   per-client queues, slow-consumer eviction (4008), and one shared ticker for pings.
//!   Invariant: no lock is held while enqueueing or awaiting.
//! - `broker`: where publications go between publish and hub: offsets, epochs, history,
//!   idempotency, presence. `memory` serves one node.
//!   Invariant: a channel's publications reach the hub one at a time, in offset order.
//! - `session`: one WebSocket connection; one task reads requests and drains the queue.
//!   Invariant: only the session maps endings to close codes.
//! - `auth`: JWT verification, API keys (constant time), namespace permissions.
//! - `limits`: connections per IP, per user and pending (not yet `connect`ed), counted
//!   with slots released on drop; the token bucket of the rate limits.
//! - `api`: the HTTP server API and probes. Invariant: only the API maps errors to
//!   HTTP statuses.
//! - `metrics`: the Prometheus registry. Invariant: at most an atomic add per delivery.
//! - `server`: listeners, routing, graceful shutdown; `state`: what they all share.
//! - `logging`: tracing setup.

pub mod api;
pub mod auth;
pub mod broker;
pub mod config;
pub mod hub;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod session;
pub mod state;
