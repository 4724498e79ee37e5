//! The Pusher Channels protocol front end: Pusher apps, signatures, and (built on them)
//! the `/app/{key}` WebSocket endpoint and the `/apps/{id}/…` HTTP API, served on the
//! same hub, broker and Redis relay as the native protocol. docs/pusher.md describes it.
//!
//! - `config`: the `[pusher]` section (`[[pusher.apps]]`) and its validation.
//! - `apps`: the registry of apps by key and by id (`AppState::pusher`); secrets are an
//!   `AppSecret` whose `Debug` hides them.
//! - `identity`: socket ids (a `ClientId` as `\d+.\d+`) and the hub user of a signed-in
//!   Pusher user (`pusher~{app_id}~{user_id}`).
//! - `signature`: HMAC-SHA256 channel, user, API-request and webhook signatures, as the
//!   official SDKs make them; constant-time checks.

pub mod apps;
pub mod config;
pub mod identity;
pub mod signature;

pub use apps::{AppSecret, PusherApp, PusherApps};
pub use config::{PusherAppConfig, PusherConfig, PusherWebhookConfig};
