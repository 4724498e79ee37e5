//! The slice of the pushwire wire protocol (PROTOCOL.md) the load generator speaks, in both
//! encodings, plus the benchmark payload it publishes and reads back.
//!
//! Pure: no I/O. Client messages are encoded as maps with named fields (MessagePack through
//! `rmp_serde::to_vec_named`, never the positional array form). Server frames are decoded
//! as batches: JSON values separated by `\n`, or MessagePack maps back to back.
//!
//! On history channels each `message` carries `offset` and `epoch` (PROTOCOL.md section 4);
//! the epoch is kept inline (see [`Epoch`]) so reading it costs no allocation per message.
//!
//! The benchmark payload is the `data` of each publication: `{"ts": <unix micros>, "seq": n,
//! "s": stream, "pad": "xx.."}` padded so that its JSON text is exactly `--payload-bytes` long
//! (when that is at least the size of the unpadded object).

use std::io::Cursor;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// The two encodings of PROTOCOL.md section 1, chosen by WebSocket subprotocol, and the
/// Pusher Channels protocol (`crate::pusher`) on the node's `/app/{key}` endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Json,
    Msgpack,
    Pusher,
    /// pushwire's Server-Sent Events stream (`GET /sse`), read-only.
    Sse,
}

impl Encoding {
    /// The `Sec-WebSocket-Protocol` value that selects this encoding (Pusher has none).
    pub fn subprotocol(self) -> Option<&'static str> {
        match self {
            Encoding::Json => Some("pushwire.v1.json"),
            Encoding::Msgpack => Some("pushwire.v1.msgpack"),
            Encoding::Pusher | Encoding::Sse => None,
        }
    }

    /// Encodes one client message into the frame type this encoding uses; `None` when the
    /// protocol has no such message (Pusher has no `connect`: the server greets first).
    pub fn encode(self, msg: &ClientMsg<'_>) -> anyhow::Result<Option<Message>> {
        Ok(Some(match self {
            Encoding::Json => Message::text(serde_json::to_string(msg)?),
            Encoding::Msgpack => Message::Binary(Bytes::from(rmp_serde::to_vec_named(msg)?)),
            Encoding::Pusher => match msg {
                ClientMsg::Connect { .. } => return Ok(None),
                ClientMsg::Subscribe { channel, .. } => {
                    Message::text(crate::pusher::subscribe_frame(channel)?)
                }
                ClientMsg::Pong => Message::text(crate::pusher::PONG_FRAME),
            },
            // The request itself subscribes; nothing else is ever sent.
            Encoding::Sse => return Ok(None),
        }))
    }
}

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

/// Decodes every message of one frame (a batch) into `out`. Empty frames yield nothing.
pub fn decode_batch(enc: Encoding, frame: &[u8], out: &mut Vec<ServerMsg>) -> anyhow::Result<()> {
    match enc {
        Encoding::Json => {
            // A `\n`-separated batch is a whitespace-separated stream of JSON values.
            for msg in serde_json::Deserializer::from_slice(frame).into_iter::<ServerMsg>() {
                out.push(msg.context("decoding JSON message")?);
            }
        }
        Encoding::Pusher => crate::pusher::decode(frame, out)?,
        Encoding::Sse => crate::sse::decode(&String::from_utf8_lossy(frame), out),
        Encoding::Msgpack => {
            let len = frame.len() as u64;
            let mut de = rmp_serde::Deserializer::new(Cursor::new(frame));
            while de.position() < len {
                let msg =
                    ServerMsg::deserialize(&mut de).context("decoding MessagePack message")?;
                out.push(msg);
            }
        }
    }
    Ok(())
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

    #[derive(Serialize)]
    struct Outgoing<'a> {
        op: &'a str,
        channel: &'a str,
        data: serde_json::Value,
    }

    fn message_value(seq: u64) -> serde_json::Value {
        serde_json::from_str(&bench_data(1_700_000_000_000_000, seq, 2, 100)).unwrap()
    }

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
    fn json_batch_of_several_messages_decodes_in_order() {
        let mut frame = String::new();
        for seq in 0..3 {
            let m = Outgoing {
                op: "message",
                channel: "bench",
                data: message_value(seq),
            };
            frame.push_str(&serde_json::to_string(&m).unwrap());
            frame.push('\n');
        }
        frame.push_str(r#"{"op":"ping"}"#);
        let mut out = Vec::new();
        decode_batch(Encoding::Json, frame.as_bytes(), &mut out).unwrap();
        assert_eq!(out.len(), 4);
        let seqs: Vec<_> = out[..3]
            .iter()
            .map(|m| m.data.unwrap().seq.unwrap())
            .collect();
        assert_eq!(seqs, [0, 1, 2]);
        assert_eq!(out[3].op, ServerOp::Ping);
    }

    #[test]
    fn msgpack_batch_of_concatenated_maps_decodes() {
        let mut frame = Vec::new();
        for seq in 0..2 {
            let m = Outgoing {
                op: "message",
                channel: "bench",
                data: message_value(seq),
            };
            frame.extend(rmp_serde::to_vec_named(&m).unwrap());
        }
        let err = serde_json::json!({"op": "error", "id": 7, "code": 106, "message": "limit"});
        frame.extend(rmp_serde::to_vec_named(&err).unwrap());
        let mut out = Vec::new();
        decode_batch(Encoding::Msgpack, &frame, &mut out).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].data.unwrap().seq, Some(1));
        assert_eq!(out[1].data.unwrap().ts, Some(1_700_000_000_000_000));
        assert_eq!(
            (out[2].op, out[2].id, out[2].code),
            (ServerOp::Error, Some(7), Some(106))
        );
    }

    #[test]
    fn unknown_ops_and_fields_are_tolerated() {
        let frame = br#"{"op":"join","channel":"c","client_id":"x","user":"","extra":[1,2]}"#;
        let mut out = Vec::new();
        decode_batch(Encoding::Json, frame, &mut out).unwrap();
        assert_eq!(out[0].op, ServerOp::Other);
        let connected = br#"{"op":"connected","id":1,"client_id":"a","node":"n","ping_interval":25,"pong_timeout":10}"#;
        decode_batch(Encoding::Json, connected, &mut out).unwrap();
        assert_eq!(out[1].ping_interval, Some(25.0));
    }

    #[test]
    fn client_messages_carry_op_in_both_encodings() {
        let msg = ClientMsg::Subscribe {
            id: 2,
            channel: "bench",
            recover: None,
        };
        let Message::Text(text) = Encoding::Json.encode(&msg).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(
            text.as_str(),
            r#"{"op":"subscribe","id":2,"channel":"bench"}"#
        );
        let Message::Binary(bin) = Encoding::Msgpack.encode(&ClientMsg::Pong).unwrap().unwrap()
        else {
            panic!()
        };
        let v: serde_json::Value = rmp_serde::from_slice(&bin).unwrap();
        assert_eq!(v, serde_json::json!({"op": "pong"}));
    }

    #[test]
    fn offsets_epochs_and_recover_round_trip() {
        let frame = br#"{"op":"subscribed","id":2,"channel":"hist:a","epoch":"00ab12cd34ef5678","offset":41,"recovered":true}
{"op":"message","channel":"hist:a","data":{"ts":1,"seq":0,"s":0},"offset":42,"epoch":"00ab12cd34ef5678"}"#;
        let mut out = Vec::new();
        decode_batch(Encoding::Json, frame, &mut out).unwrap();
        assert_eq!((out[0].offset, out[0].recovered), (Some(41), Some(true)));
        assert_eq!(out[1].epoch, Some(Epoch::new("00ab12cd34ef5678")));
        assert_eq!(out[1].epoch.as_ref().unwrap().as_str(), "00ab12cd34ef5678");
        let long = "e".repeat(40);
        assert_eq!(Epoch::new(&long).as_str(), long);
        let msg = ClientMsg::Subscribe {
            id: 3,
            channel: "hist:a",
            recover: Some(RecoverFrom {
                offset: 42,
                epoch: "00ab",
            }),
        };
        let bin = match Encoding::Msgpack.encode(&msg).unwrap().unwrap() {
            Message::Binary(bin) => bin,
            other => panic!("{other:?}"),
        };
        let v: serde_json::Value = rmp_serde::from_slice(&bin).unwrap();
        assert_eq!(
            v["recover"],
            serde_json::json!({"offset": 42, "epoch": "00ab"})
        );
        let mut out = Vec::new();
        let reply = rmp_serde::to_vec_named(
            &serde_json::json!({"op": "subscribed", "id": 3, "epoch": "00ab", "offset": 7}),
        )
        .unwrap();
        decode_batch(Encoding::Msgpack, &reply, &mut out).unwrap();
        assert_eq!(out[0].epoch.as_ref().map(Epoch::as_str), Some("00ab"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        assert!(decode_batch(Encoding::Json, b"{nope", &mut out).is_err());
        assert!(decode_batch(Encoding::Msgpack, &[0xc1], &mut out).is_err());
    }

    #[test]
    fn channel_for_spreads_round_robin() {
        assert_eq!(channel_for("bench", 1, 7), "bench");
        assert_eq!(channel_for("bench", 0, 7), "bench");
        assert_eq!(channel_for("hist:c", 3, 7), "hist:c.1");
    }
}
