//! The slice of the Pusher Channels protocol the load generator speaks with
//! `--encoding pusher`: the `/app/{key}` URL, `pusher:subscribe`, `pusher:pong`, server
//! events mapped onto the native [`ServerMsg`] shapes the sessions already handle, and the
//! signed `POST /apps/{id}/events` the publisher sends (as the official server SDKs sign it).
//!
//! Pure: no I/O.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::wire::{BenchProbe, ServerMsg, ServerOp};

/// The Pusher app the run targets: `--pusher-app ID:KEY:SECRET`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PusherApp {
    pub id: String,
    pub key: String,
    pub secret: String,
}

impl std::str::FromStr for PusherApp {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<PusherApp> {
        let mut parts = text.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(id), Some(key), Some(secret))
                if !id.is_empty() && !key.is_empty() && !secret.is_empty() =>
            {
                Ok(PusherApp {
                    id: id.into(),
                    key: key.into(),
                    secret: secret.into(),
                })
            }
            _ => bail!("--pusher-app takes ID:KEY:SECRET"),
        }
    }
}

/// The event name the publisher triggers.
pub const BENCH_EVENT: &str = "bench";

/// `ws://host:port/anything` becomes the app's Pusher endpoint on the same node, with the
/// query string pusher-js sends.
pub fn app_url(ws_url: &str, key: &str) -> String {
    let rest = ws_url.split_once("://").map_or(ws_url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    format!(
        "ws://{authority}/app/{key}?protocol=7&client=pushwire-loadtest&version=0.1.0&flash=false"
    )
}

/// `pusher:subscribe` for a public channel.
pub fn subscribe_frame(channel: &str) -> anyhow::Result<String> {
    Ok(serde_json::to_string(&serde_json::json!({
        "event": "pusher:subscribe",
        "data": {"channel": channel},
    }))?)
}

pub const PONG_FRAME: &str = r#"{"event":"pusher:pong","data":{}}"#;

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    event: &'a str,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Established {
    activity_timeout: Option<f64>,
}

#[derive(Deserialize)]
struct PusherError {
    code: Option<u32>,
    message: Option<String>,
}

/// The request ids the sessions wait for: `connect` (answered by
/// `pusher:connection_established`) and `subscribe` (by `subscription_succeeded`).
const CONNECT_ID: u64 = 1;
const SUBSCRIBE_ID: u64 = 2;

/// Seconds pusher-js waits for a `pusher:pong` (its `pongTimeout`).
const PONG_TIMEOUT_SECS: f64 = 30.0;

/// Decodes one Pusher frame (one event) into `out`.
pub fn decode(frame: &[u8], out: &mut Vec<ServerMsg>) -> anyhow::Result<()> {
    let frame: Frame<'_> = serde_json::from_slice(frame).context("decoding Pusher event")?;
    let data = frame.data.map(RawValue::get);
    let msg = match frame.event {
        "pusher:connection_established" => {
            let established: Established = serde_json::from_str(&data_string(data)?)?;
            let mut msg = ServerMsg::of(ServerOp::Connected);
            msg.id = Some(CONNECT_ID);
            msg.ping_interval = established.activity_timeout;
            msg.pong_timeout = Some(PONG_TIMEOUT_SECS);
            msg
        }
        "pusher_internal:subscription_succeeded" => {
            let mut msg = ServerMsg::of(ServerOp::Subscribed);
            msg.id = Some(SUBSCRIBE_ID);
            msg
        }
        "pusher:ping" => ServerMsg::of(ServerOp::Ping),
        "pusher:error" | "pusher:subscription_error" => {
            let error: PusherError =
                data.and_then(|d| serde_json::from_str(d).ok())
                    .unwrap_or(PusherError {
                        code: None,
                        message: data.map(str::to_owned),
                    });
            let mut msg = ServerMsg::of(ServerOp::Error);
            msg.id = Some(SUBSCRIBE_ID);
            msg.code = error.code;
            msg.message = error.message;
            msg
        }
        event if event.starts_with("pusher") => ServerMsg::of(ServerOp::Other),
        _ => {
            let mut msg = ServerMsg::of(ServerOp::Message);
            msg.data = serde_json::from_str::<BenchProbe>(&data_string(data)?).ok();
            msg
        }
    };
    out.push(msg);
    Ok(())
}

/// Pusher sends `data` as a JSON string holding JSON; an object is taken as it is.
fn data_string(data: Option<&str>) -> anyhow::Result<String> {
    let raw = data.context("event without data")?;
    if raw.starts_with('"') {
        Ok(serde_json::from_str::<String>(raw)?)
    } else {
        Ok(raw.to_owned())
    }
}

/// The body of `POST /apps/{id}/events` for one benchmark publication.
pub fn event_body(channel: &str, data: &str) -> anyhow::Result<String> {
    Ok(serde_json::to_string(&serde_json::json!({
        "name": BENCH_EVENT,
        "channel": channel,
        "data": data,
    }))?)
}

/// The signed query string of `POST path` with `body`, as the server SDKs build it.
pub fn signed_query(app: &PusherApp, path: &str, body: &str) -> String {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    signed_query_at(app, path, body, timestamp)
}

fn signed_query_at(app: &PusherApp, path: &str, body: &str, timestamp: u64) -> String {
    let body_md5 = hex::encode(Md5::digest(body.as_bytes()));
    let params = format!(
        "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={body_md5}",
        app.key
    );
    let to_sign = format!("POST\n{path}\n{params}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, app.secret.as_bytes());
    let signature = hex::encode(ring::hmac::sign(&key, to_sign.as_bytes()).as_ref());
    format!("{params}&auth_signature={signature}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_the_app_option() {
        let app: PusherApp = "4242:app-key:app:secret".parse().unwrap();
        assert_eq!(app.secret, "app:secret");
        assert!("4242:key".parse::<PusherApp>().is_err());
    }

    #[test]
    fn app_url_keeps_the_node_and_takes_the_pusher_path() {
        assert_eq!(
            app_url("ws://127.0.0.1:8080/ws", "k"),
            "ws://127.0.0.1:8080/app/k?protocol=7&client=pushwire-loadtest&version=0.1.0&flash=false"
        );
    }

    #[test]
    fn maps_events_onto_native_messages() {
        let mut out = Vec::new();
        decode(
            br#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}"#,
            &mut out,
        )
        .unwrap();
        decode(
            br#"{"event":"pusher_internal:subscription_succeeded","channel":"bench","data":"{}"}"#,
            &mut out,
        )
        .unwrap();
        decode(
            br#"{"event":"bench","channel":"bench","data":"{\"ts\":5,\"seq\":7,\"s\":1,\"pad\":\"x\"}"}"#,
            &mut out,
        )
        .unwrap();
        decode(br#"{"event":"pusher:ping","data":{}}"#, &mut out).unwrap();
        assert_eq!(out[0].op, ServerOp::Connected);
        assert_eq!(out[0].ping_interval, Some(120.0));
        assert_eq!(out[1].op, ServerOp::Subscribed);
        assert_eq!(out[1].id, Some(SUBSCRIBE_ID));
        assert_eq!(out[2].op, ServerOp::Message);
        assert_eq!(out[2].data.unwrap().seq, Some(7));
        assert_eq!(out[3].op, ServerOp::Ping);
    }

    #[test]
    fn signs_like_the_pusher_sdks() {
        // The worked example of Pusher's REST API authentication docs.
        let app = PusherApp {
            id: "3".into(),
            key: "278d425bdf160c739803".into(),
            secret: "7ad3773142a6692b25b8".into(),
        };
        let body = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let query = signed_query_at(&app, "/apps/3/events", body, 1353088179);
        assert!(
            query.contains("body_md5=ec365a775a4cd0599faeb73354201b6f"),
            "{query}"
        );
        assert!(
            query.ends_with(
                "auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
            ),
            "{query}"
        );
    }
}
