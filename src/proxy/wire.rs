//! The JSON bodies of backend proxy calls and answers (docs/protocol.md, "Backend
//! proxy"). Every answer is `{"result": …}`, `{"error": {…}}` (subscribe, publish) or
//! `{"disconnect": {…}}` (connect, refresh).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// POSTed to `connect_url`.
#[derive(Debug, Serialize)]
pub struct ConnectRequest<'a> {
    pub transport: &'static str,
    pub encoding: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
}

/// POSTed to `subscribe_url`.
#[derive(Debug, Serialize)]
pub struct SubscribeRequest<'a> {
    pub client_id: &'a str,
    pub user: &'a str,
    pub channel: &'a str,
}

/// POSTed to `publish_url`.
#[derive(Debug, Serialize)]
pub struct PublishRequest<'a> {
    pub client_id: &'a str,
    pub user: &'a str,
    pub channel: &'a str,
    pub data: &'a RawValue,
}

/// POSTed to `refresh_url`.
#[derive(Debug, Serialize)]
pub struct RefreshRequest<'a> {
    pub client_id: &'a str,
    pub user: &'a str,
}

/// The backend's answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer<R> {
    pub result: Option<R>,
    pub error: Option<Refusal>,
    pub disconnect: Option<Refusal>,
}

/// A refusal: an error for a request, or the close code and reason of a connection.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    pub code: Option<u16>,
    #[serde(alias = "reason")]
    pub message: Option<String>,
}

/// What a connect (or refresh) answer grants.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    #[serde(default)]
    pub user: String,
    pub info: Option<serde_json::Value>,
    /// Unix seconds; absent: the connection does not expire.
    pub expire_at: Option<u64>,
    /// Channels to subscribe server-side.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// What a subscribe answer grants (nothing to say yet beyond yes).
#[derive(Debug, Default, Deserialize)]
pub struct Allowed {}

/// What a publish answer grants: optionally data that replaces the client's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishGrant {
    pub data: Option<Box<RawValue>>,
}
