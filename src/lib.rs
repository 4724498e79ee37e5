//! pushwire: a real-time WebSocket push server.
//!
//! Clients connect over WebSocket (`session`), subscribe to channels and receive what
//! backend services publish through the HTTP API (`api`). This is the code map; each
//! module's own `//!` header says more.
//!
//! - `protocol`: the wire contract (docs/protocol.md): message types, error and close codes,
//!   channel names, JSON and MessagePack codecs with batching. Pure, no I/O.
//! - `config`: typed configuration from defaults, file, `PUSHWIRE_*` env and flags, with
//!   validation that names the offending key.
//! - `hub`: the connection registry and fan-out. Channel -> subscribers in a `DashMap`,
//!   a lazily rebuilt snapshot per channel, one fan-out worker per core, bounded
//!   per-client queues, slow-consumer eviction (4008), and one shared ticker for pings.
//!   Invariant: fan-out holds no lock while enqueueing and nothing awaits under a lock;
//!   the one deliberate exception is a subscribe, which queues its own reply (and
//!   recovered history) under its channel's lock so nothing published later overtakes it.
//! - `broker`: where publications go between publish and hub: offsets, epochs, history,
//!   idempotency, presence. `memory` serves one node (a per-channel async lock orders
//!   offset assignment and dispatch); `redis` relays between nodes through Redis
//!   pub/sub, or Redis Cluster sharded pub/sub.
//!   Invariant: a channel's publications reach the hub one at a time, in offset order.
//! - `session`: one WebSocket connection; one task reads requests and drains the queue.
//!   Invariant: only the session writes `disconnect` and close frames; the hub, the
//!   ticker and the API only ask for a close (`ClientHandle::close`) with a code.
//! - `auth`: JWT verification, API keys (constant time), namespace permissions.
//! - `policy`: the request rules every front end shares: a channel's namespace, and whether
//!   data may be published (one typed refusal each front end maps to its wire).
//! - `limits`: connections per IP, per user and pending (not yet `connect`ed), counted
//!   with slots released on drop; the per-API-key publish rate limit. (The per-connection
//!   inbound limit lives in `session::rate`.)
//! - `proxy`: the backend proxy: connect, subscribe, publish and refresh decisions asked
//!   of the application's backend over HTTP, each URL behind a concurrency bound, a
//!   timeout and a circuit breaker. Invariant: a backend that fails only ever causes
//!   temporary refusals (the client retries), never a hang.
//! - `api`: the HTTP server API and probes. Invariant: errors become HTTP statuses
//!   only through `ApiError` (the WebSocket upgrade uses it too).
//! - `metrics`: the Prometheus registry. Invariant: at most an atomic add per delivery
//!   (counts are added per publication, per shard job, or per 64 frames of a session).
//! - `server`: listeners, routing, graceful shutdown; `state`: what they all share.
//! - `logging`: tracing setup. `telemetry`: OpenTelemetry trace spans (target
//!   `pushwire::trace`) exported over OTLP. Invariant: with tracing off, the hot path
//!   pays one atomic load per publication and creates no span.
//! - `pusher`: the Pusher Channels protocol front end (apps, signatures, its WebSocket
//!   endpoint and HTTP API) on the same hub and broker. Invariant: an app's channels
//!   live in their own hub namespace (`pusher~{app_id}~…`) no native name can form.
//! - `webhook`: webhooks for the native protocol and the Pusher apps: events batched per
//!   endpoint, signed, retried with backoff behind a circuit breaker; vacated and leave
//!   held a few seconds. Invariant: emitting never waits; a dead endpoint only fills its
//!   own bounded queue.

pub mod api;
pub mod auth;
pub mod broker;
pub mod config;
pub mod hub;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod protocol;
pub mod proxy;
pub mod pusher;
pub mod server;
pub mod session;
pub mod sse;
pub mod state;
pub mod telemetry;
pub mod webhook;
