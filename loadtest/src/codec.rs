//! The wire encodings the load generator can speak, and turning messages into frames and
//! frames into messages for each: the native protocol in JSON or MessagePack (PROTOCOL.md
//! section 1), Pusher Channels (`pusher`) and pushwire's SSE stream (`sse`).
//!
//! Sits above the message shapes (`wire`) and the two foreign dialects (`pusher`, `sse`),
//! which only know how to read their own frames into those shapes.

use std::io::Cursor;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::wire::{ClientMsg, ServerMsg};

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

/// Decodes every message of one frame (a batch) into `out`. Empty frames yield nothing.
/// JSON frames of benchmark messages take the scanner's fast path (`json_scan`).
pub fn decode_batch(enc: Encoding, frame: &[u8], out: &mut Vec<ServerMsg>) -> anyhow::Result<()> {
    if enc == Encoding::Json && crate::json_scan::messages(frame, out).is_some() {
        return Ok(());
    }
    decode_batch_with_serde(enc, frame, out)
}

/// [`decode_batch`] without the fast path: every encoding through its full decoder.
pub fn decode_batch_with_serde(
    enc: Encoding,
    frame: &[u8],
    out: &mut Vec<ServerMsg>,
) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde::Serialize;

    use super::*;
    use crate::wire::{Epoch, RecoverFrom, ServerOp, bench_data};

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
}
