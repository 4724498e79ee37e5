//! The slice of the pushwire wire protocol (PROTOCOL.md) the load generator speaks, in both
//! encodings, plus the benchmark payload it publishes and reads back.
//!
//! Pure: no I/O, and no encoding: `codec` turns these shapes into frames and back (client
//! messages as maps with named fields, server frames as batches).
//!
//! On history channels each `message` carries `offset` and `epoch` (PROTOCOL.md section 4);
//! the epoch is kept inline (see [`Epoch`]) so reading it costs no allocation per message.
//!
//! The benchmark payload is the `data` of each publication: `{"ts": <unix micros>, "seq": n,
//! "s": stream, "pad": "xx.."}` padded so that its JSON text is exactly `--payload-bytes` long
//! (when that is at least the size of the unpadded object).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What the load generator sends. `op` is the serde tag, so both encodings carry it as a field.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ClientMsg<'a> {
    Connect {
        id: u64,
        client: &'a str,
    },
    Subscribe {
        id: u64,
        channel: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        recover: Option<RecoverFrom<'a>>,
    },
    Pong,
}

/// The `recover` field of `subscribe`: the last offset the client saw, and its epoch.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RecoverFrom<'a> {
    pub offset: u64,
    pub epoch: &'a str,
}

/// The server operations the load generator reacts to; everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerOp {
    Connected,
    Subscribed,
    Message,
    Ping,
    Error,
    Disconnect,
    #[serde(other)]
    Other,
}

/// One server message, reduced to the fields the load generator uses. Unknown fields are
/// skipped without allocating.
#[derive(Debug, Deserialize)]
pub struct ServerMsg {
    pub op: ServerOp,
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub code: Option<u32>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub ping_interval: Option<f64>,
    #[serde(default)]
    pub pong_timeout: Option<f64>,
    #[serde(default)]
    pub data: Option<BenchProbe>,
    /// Of a `message` on a history channel, or of `subscribed` (the latest offset).
    #[serde(default)]
    pub offset: Option<u64>,
    #[serde(default)]
    pub epoch: Option<Epoch>,
    /// Of `subscribed` after a `recover`.
    #[serde(default)]
    pub recovered: Option<bool>,
}

impl ServerMsg {
    /// A message of `op` with no fields (the Pusher mapping fills in what it has).
    pub fn of(op: ServerOp) -> ServerMsg {
        ServerMsg {
            op,
            id: None,
            code: None,
            message: None,
            reason: None,
            ping_interval: None,
            pong_timeout: None,
            data: None,
            offset: None,
            epoch: None,
            recovered: None,
        }
    }
}

/// A history epoch as the server sent it. pushwire's epochs are 16 hex characters, so they
/// are kept inline; anything longer than [`Epoch::INLINE`] bytes goes to the heap.
#[derive(Clone, PartialEq, Eq)]
pub enum Epoch {
    Inline { len: u8, bytes: [u8; Epoch::INLINE] },
    Heap(Box<str>),
}

impl Epoch {
    pub const INLINE: usize = 32;

    pub fn new(text: &str) -> Epoch {
        if text.len() <= Epoch::INLINE {
            let mut bytes = [0; Epoch::INLINE];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            Epoch::Inline {
                len: text.len() as u8,
                bytes,
            }
        } else {
            Epoch::Heap(text.into())
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Built from a `&str` cut at its own length, so always valid UTF-8.
            Epoch::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).unwrap_or_default()
            }
            Epoch::Heap(text) => text,
        }
    }
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl<'de> Deserialize<'de> for Epoch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Epoch, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Epoch;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an epoch string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Epoch, E> {
                Ok(Epoch::new(v))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// The fields of a benchmark payload that matter on receipt; `pad` is skipped.
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct BenchProbe {
    #[serde(default)]
    pub ts: Option<u64>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub s: Option<u32>,
}

/// The channel of connection or publisher stream `index` when a run spreads over `channels`
/// channels: `base` itself for one channel, else `base.K` with `K = index % channels`.
pub fn channel_for(base: &str, channels: usize, index: usize) -> String {
    if channels <= 1 {
        base.to_string()
    } else {
        format!("{base}.{}", index % channels)
    }
}

/// Microseconds since the Unix epoch, the clock both publisher and receivers read.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Builds the JSON `data` value of one publication, padded to `payload_bytes` where possible.
pub fn bench_data(ts: u64, seq: u64, stream: u32, payload_bytes: usize) -> String {
    let head = format!(r#"{{"ts":{ts},"seq":{seq},"s":{stream},"pad":""#);
    let fixed = head.len() + 2; // the closing `"}`
    let pad = payload_bytes.saturating_sub(fixed);
    let mut out = String::with_capacity(fixed + pad);
    out.push_str(&head);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str("\"}");
    out
}

/// The body of `POST /api/publish` for one benchmark publication.
pub fn publish_body(channel: &str, data: &str, idempotency_key: &str) -> anyhow::Result<String> {
    let channel = serde_json::to_string(channel)?;
    let key = serde_json::to_string(idempotency_key)?;
    Ok(format!(
        r#"{{"channel":{channel},"data":{data},"idempotency_key":{key}}}"#
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bench_data_is_padded_to_the_exact_size() {
        for size in [60, 100, 1000] {
            let data = bench_data(1_700_000_000_123_456, 42, 3, size);
            assert_eq!(data.len(), size);
            let probe: BenchProbe = serde_json::from_str(&data).unwrap();
            assert_eq!(probe.ts, Some(1_700_000_000_123_456));
            assert_eq!(probe.seq, Some(42));
            assert_eq!(probe.s, Some(3));
        }
        // Too small to pad: the unpadded object, still valid.
        let small = bench_data(1, 2, 0, 5);
        assert!(serde_json::from_str::<BenchProbe>(&small).is_ok());
    }

    #[test]
    fn publish_body_is_valid_json() {
        let body = publish_body("bench", &bench_data(5, 6, 0, 100), "s0-6").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["channel"], "bench");
        assert_eq!(v["data"]["seq"], 6);
        assert_eq!(v["idempotency_key"], "s0-6");
    }

    #[test]
    fn channel_for_spreads_round_robin() {
        assert_eq!(channel_for("bench", 1, 7), "bench");
        assert_eq!(channel_for("bench", 0, 7), "bench");
        assert_eq!(channel_for("hist:c", 3, 7), "hist:c.1");
    }
}
