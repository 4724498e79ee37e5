//! Client-to-server messages (PROTOCOL.md section 2) and the decoding of inbound frames,
//! batches included, in both encodings.
//!
//! A frame that is not a sequence of maps with a string `op` is a protocol violation
//! (close 4000). A well-formed message whose fields are wrong is answered with an `error`
//! (107, or 104 for an unknown op) and the connection stays open.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::{Encoding, ErrorCode, MAX_MSGPACK_DEPTH, Payload};

/// A position in a channel's history stream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: String,
}

/// One decoded client request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Connect {
        id: u64,
        token: Option<String>,
        client: Option<String>,
        /// Passed to the backend's connect proxy; ignored otherwise.
        data: Option<Payload>,
    },
    Subscribe {
        id: u64,
        channel: String,
        recover: Option<StreamPosition>,
        token: Option<String>,
    },
    Unsubscribe {
        id: u64,
        channel: String,
    },
    Publish {
        id: u64,
        channel: String,
        data: Payload,
    },
    Presence {
        id: u64,
        channel: String,
        /// The most entries in the reply (capped by the namespace's `presence_max_page`).
        limit: Option<u64>,
        /// Where the previous page ended (its reply's `cursor`).
        cursor: Option<String>,
    },
    PresenceStats {
        id: u64,
        channel: String,
    },
    History {
        id: u64,
        channel: String,
        since: Option<StreamPosition>,
        limit: Option<u64>,
        /// Newest first: `limit` then counts from the newest.
        reverse: bool,
    },
    Refresh {
        id: u64,
        token: String,
    },
    Pong,
}

impl Request {
    pub fn op(&self) -> &'static str {
        match self {
            Request::Connect { .. } => "connect",
            Request::Subscribe { .. } => "subscribe",
            Request::Unsubscribe { .. } => "unsubscribe",
            Request::Publish { .. } => "publish",
            Request::Presence { .. } => "presence",
            Request::PresenceStats { .. } => "presence_stats",
            Request::History { .. } => "history",
            Request::Refresh { .. } => "refresh",
            Request::Pong => "pong",
        }
    }
}

/// A message that decoded but cannot be served; answered with an `error` reply.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestError {
    /// The request's `id`, where it could be read; 0 otherwise.
    pub id: u64,
    pub code: ErrorCode,
    pub message: String,
}

/// The frame is not a batch of protocol messages: close 4000.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("malformed frame: {0}")]
pub struct MalformedFrame(pub String);

/// The fields any request may carry; which are required depends on `op`.
#[derive(Deserialize)]
struct Envelope<D> {
    op: String,
    id: Option<u64>,
    channel: Option<String>,
    data: Option<D>,
    token: Option<String>,
    client: Option<String>,
    recover: Option<StreamPosition>,
    since: Option<StreamPosition>,
    limit: Option<u64>,
    reverse: Option<bool>,
    cursor: Option<String>,
}

/// Reads just enough of a message whose fields did not fit `Envelope` to answer it.
#[derive(Deserialize)]
struct Loose {
    op: String,
    id: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct LooseId {
    id: u64,
}

/// Decodes one inbound frame: a batch of one or more messages.
pub fn decode_frame(
    encoding: Encoding,
    frame: &[u8],
) -> Result<Vec<Result<Request, RequestError>>, MalformedFrame> {
    match encoding {
        Encoding::Json => decode_json_batch(frame),
        Encoding::Msgpack => decode_msgpack_batch(frame),
    }
}

fn decode_json_batch(frame: &[u8]) -> Result<Vec<Result<Request, RequestError>>, MalformedFrame> {
    let mut out = Vec::new();
    for line in frame.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.push(decode_json_message(line)?);
    }
    if out.is_empty() {
        return Err(MalformedFrame("empty frame".into()));
    }
    Ok(out)
}

fn decode_json_message(line: &[u8]) -> Result<Result<Request, RequestError>, MalformedFrame> {
    match serde_json::from_slice::<Envelope<Box<RawValue>>>(line) {
        Ok(env) => Ok(into_request(env, |raw| Payload::from_raw_json(&raw))),
        Err(err) if err.is_data() => {
            // Well-formed JSON whose fields have the wrong types, or no string `op`.
            let loose: Loose = serde_json::from_slice(line)
                .map_err(|_| MalformedFrame("message is not a map with a string op".into()))?;
            let id = loose
                .id
                .and_then(|_| serde_json::from_slice::<LooseId>(line).ok())
                .map_or(0, |l| l.id);
            Ok(Err(bad_request(id, &loose.op, &err.to_string())))
        }
        Err(err) => Err(MalformedFrame(format!("invalid JSON: {err}"))),
    }
}

fn decode_msgpack_batch(
    frame: &[u8],
) -> Result<Vec<Result<Request, RequestError>>, MalformedFrame> {
    let mut rest = frame;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let value = rmpv::decode::read_value_with_max_depth(&mut rest, MAX_MSGPACK_DEPTH)
            .map_err(|e| MalformedFrame(format!("invalid MessagePack: {e}")))?;
        out.push(decode_msgpack_message(value)?);
    }
    if out.is_empty() {
        return Err(MalformedFrame("empty frame".into()));
    }
    Ok(out)
}

fn decode_msgpack_message(
    value: rmpv::Value,
) -> Result<Result<Request, RequestError>, MalformedFrame> {
    let rmpv::Value::Map(entries) = &value else {
        return Err(MalformedFrame("message is not a map".into()));
    };
    let field = |name: &str| {
        entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v)
    };
    let Some(op) = field("op").and_then(|v| v.as_str()).map(str::to_owned) else {
        return Err(MalformedFrame("message has no string op".into()));
    };
    let id = field("id").and_then(rmpv::Value::as_u64).unwrap_or(0);
    match from_msgpack_value::<Envelope<rmpv::Value>>(value) {
        Ok(env) => Ok(into_request(env, |v| Payload::from_msgpack_value(&v))),
        Err(err) => Ok(Err(bad_request(id, &op, &err))),
    }
}

fn from_msgpack_value<T: DeserializeOwned>(value: rmpv::Value) -> Result<T, String> {
    rmpv::ext::from_value(value).map_err(|e| e.to_string())
}

fn bad_request(id: u64, op: &str, detail: &str) -> RequestError {
    RequestError {
        id,
        code: ErrorCode::BadRequest,
        message: format!("bad {op} request: {detail}"),
    }
}

fn into_request<D>(
    env: Envelope<D>,
    payload: impl FnOnce(D) -> Payload,
) -> Result<Request, RequestError> {
    let op = env.op.as_str();
    if op == "pong" {
        return Ok(Request::Pong);
    }
    let known = [
        "connect",
        "subscribe",
        "unsubscribe",
        "publish",
        "presence",
        "presence_stats",
        "history",
        "refresh",
    ];
    let id = env.id.unwrap_or(0);
    if !known.contains(&op) {
        return Err(RequestError {
            id,
            code: ErrorCode::UnknownOp,
            message: format!("unknown op {op:?}"),
        });
    }
    let Some(id) = env.id else {
        return Err(bad_request(0, op, "missing field `id`"));
    };
    let require = |field: Option<String>, name: &str| {
        field.ok_or_else(|| bad_request(id, op, &format!("missing field `{name}`")))
    };
    Ok(match op {
        "connect" => Request::Connect {
            id,
            token: env.token,
            client: env.client,
            data: env.data.map(payload),
        },
        "subscribe" => Request::Subscribe {
            id,
            channel: require(env.channel, "channel")?,
            recover: env.recover,
            token: env.token,
        },
        "unsubscribe" => Request::Unsubscribe {
            id,
            channel: require(env.channel, "channel")?,
        },
        "publish" => Request::Publish {
            id,
            channel: require(env.channel, "channel")?,
            data: env.data.map(payload).unwrap_or_else(Payload::null),
        },
        "presence" => Request::Presence {
            id,
            channel: require(env.channel, "channel")?,
            limit: env.limit,
            cursor: env.cursor,
        },
        "presence_stats" => Request::PresenceStats {
            id,
            channel: require(env.channel, "channel")?,
        },
        "history" => Request::History {
            id,
            channel: require(env.channel, "channel")?,
            since: env.since,
            limit: env.limit,
            reverse: env.reverse.unwrap_or(false),
        },
        _ => Request::Refresh {
            id,
            token: require(env.token, "token")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(frame: &str) -> Result<Vec<Result<Request, RequestError>>, MalformedFrame> {
        decode_frame(Encoding::Json, frame.as_bytes())
    }

    fn msgpack(
        values: &[rmpv::Value],
    ) -> Result<Vec<Result<Request, RequestError>>, MalformedFrame> {
        let mut buf = Vec::new();
        for v in values {
            let _ = rmpv::encode::write_value(&mut buf, v);
        }
        decode_frame(Encoding::Msgpack, &buf)
    }

    fn map(fields: &[(&str, rmpv::Value)]) -> rmpv::Value {
        rmpv::Value::Map(
            fields
                .iter()
                .map(|(k, v)| ((*k).into(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn decodes_a_json_batch() -> Result<(), MalformedFrame> {
        let msgs = json(
            "{\"op\":\"connect\",\"id\":1}\n{\"op\":\"subscribe\",\"id\":2,\"channel\":\"news\"}\n",
        )?;
        assert_eq!(msgs.len(), 2);
        assert!(matches!(msgs[0], Ok(Request::Connect { id: 1, .. })));
        assert!(
            matches!(&msgs[1], Ok(Request::Subscribe { id: 2, channel, .. }) if channel == "news")
        );
        Ok(())
    }

    #[test]
    fn keeps_json_data_raw() -> Result<(), MalformedFrame> {
        let msgs =
            json(r#"{"op":"publish","id":3,"channel":"c","data":{"x":[1,2]},"extra":true}"#)?;
        let Some(Ok(Request::Publish { data, .. })) = msgs.into_iter().next() else {
            panic!("expected a publish");
        };
        assert_eq!(
            data,
            Payload::Json(bytes::Bytes::from_static(br#"{"x":[1,2]}"#))
        );
        Ok(())
    }

    #[test]
    fn unknown_op_is_104_with_id() -> Result<(), MalformedFrame> {
        let msgs = json(r#"{"op":"dance","id":9}"#)?;
        assert!(matches!(&msgs[0], Err(e) if e.code == ErrorCode::UnknownOp && e.id == 9));
        Ok(())
    }

    #[test]
    fn wrong_field_types_are_107() -> Result<(), MalformedFrame> {
        let msgs = json(r#"{"op":"subscribe","id":4,"channel":5}"#)?;
        assert!(matches!(&msgs[0], Err(e) if e.code == ErrorCode::BadRequest && e.id == 4));
        let msgs = json(r#"{"op":"subscribe","id":5}"#)?;
        assert!(matches!(&msgs[0], Err(e) if e.code == ErrorCode::BadRequest && e.id == 5));
        let msgs = json(r#"{"op":"subscribe","channel":"x"}"#)?;
        assert!(matches!(&msgs[0], Err(e) if e.code == ErrorCode::BadRequest));
        Ok(())
    }

    #[test]
    fn malformed_json_is_a_frame_error() {
        for frame in [
            "{",
            "[1,2]",
            "\"op\"",
            r#"{"id":1}"#,
            r#"{"op":7}"#,
            "",
            "\n\n",
        ] {
            assert!(json(frame).is_err(), "{frame:?}");
        }
    }

    #[test]
    fn decodes_back_to_back_msgpack_maps() -> Result<(), MalformedFrame> {
        let msgs = msgpack(&[
            map(&[("op", "connect".into()), ("id", 1.into())]),
            map(&[
                ("op", "publish".into()),
                ("id", 2.into()),
                ("channel", "c".into()),
                ("data", rmpv::Value::Binary(vec![1, 2])),
            ]),
            map(&[("op", "pong".into())]),
        ])?;
        assert_eq!(msgs.len(), 3);
        assert!(
            matches!(&msgs[1], Ok(Request::Publish { data, .. }) if data.top_level_binary() == Some(&[1u8, 2][..]))
        );
        assert!(matches!(msgs[2], Ok(Request::Pong)));
        Ok(())
    }

    #[test]
    fn msgpack_field_errors_are_107() -> Result<(), MalformedFrame> {
        let msgs = msgpack(&[map(&[
            ("op", "subscribe".into()),
            ("id", 7.into()),
            ("channel", 1.into()),
        ])])?;
        assert!(matches!(&msgs[0], Err(e) if e.code == ErrorCode::BadRequest && e.id == 7));
        Ok(())
    }

    #[test]
    fn malformed_msgpack_is_a_frame_error() {
        assert!(msgpack(&[rmpv::Value::from(1)]).is_err());
        assert!(msgpack(&[map(&[("id", 1.into())])]).is_err());
        assert!(decode_frame(Encoding::Msgpack, &[0x81, 0xa2, b'o']).is_err());
        assert!(decode_frame(Encoding::Msgpack, &[]).is_err());
    }

    #[test]
    fn deep_msgpack_nesting_is_rejected_not_overflowed() {
        let deep = vec![0x91u8; 100_000];
        assert!(decode_frame(Encoding::Msgpack, &deep).is_err());
    }
}
