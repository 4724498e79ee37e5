//! Server-to-client messages (PROTOCOL.md section 3 and the replies of section 2) and their
//! encoding into one frame-ready `Bytes` per encoding.

use bytes::Bytes;
use serde::Serialize;

use super::{CloseCode, Encoding, ErrorCode, Payload, StreamPosition};

/// A member of a channel's presence set.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ClientInfo {
    pub client_id: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
}

/// One message of a `history` reply.
#[derive(Debug, Serialize)]
pub struct HistoryItem<'a> {
    pub offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a Payload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_b64: Option<String>,
}

/// Every message the server sends, tagged by `op`.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    Connected {
        id: u64,
        client_id: &'a str,
        node: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a str>,
        ping_interval: u64,
        pong_timeout: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_at: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        subscribed: Option<Vec<&'a str>>,
    },
    Subscribed {
        id: u64,
        channel: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    Unsubscribed {
        id: u64,
        channel: &'a str,
    },
    Published {
        id: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
    },
    Presence {
        id: u64,
        channel: &'a str,
        clients: &'a [ClientInfo],
        /// Present when there may be more: pass it back for the next page.
        #[serde(skip_serializing_if = "Option::is_none")]
        cursor: Option<&'a str>,
    },
    PresenceStats {
        id: u64,
        channel: &'a str,
        clients: u64,
        users: u64,
    },
    History {
        id: u64,
        channel: &'a str,
        epoch: &'a str,
        offset: u64,
        messages: Vec<HistoryItem<'a>>,
    },
    Refreshed {
        id: u64,
        expires_at: u64,
    },
    Message {
        channel: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a Payload>,
        #[serde(skip_serializing_if = "Option::is_none")]
        data_b64: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
    },
    Join {
        channel: &'a str,
        client_id: &'a str,
        user: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        info: Option<&'a serde_json::Value>,
    },
    Leave {
        channel: &'a str,
        client_id: &'a str,
        user: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        info: Option<&'a serde_json::Value>,
    },
    Ping,
    Error {
        id: u64,
        code: ErrorCode,
        message: &'a str,
    },
    Disconnect {
        code: u16,
        reason: &'a str,
        reconnect: bool,
    },
}

/// A reply could not be encoded (data that fits neither encoding).
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("JSON encoding failed: {0}")]
    Json(#[from] serde_json::Error),
    #[error("MessagePack encoding failed: {0}")]
    Msgpack(#[from] rmp_serde::encode::Error),
}

/// Encodes one message for a client of `encoding`.
pub fn encode(encoding: Encoding, message: &ServerMessage<'_>) -> Result<Bytes, EncodeError> {
    Ok(Bytes::from(match encoding {
        Encoding::Json => serde_json::to_vec(message)?,
        Encoding::Msgpack => rmp_serde::to_vec_named(message)?,
    }))
}

/// `data` and `data_b64` for a payload sent to a client of `encoding`.
pub fn data_fields(encoding: Encoding, payload: &Payload) -> (Option<&Payload>, Option<String>) {
    match encoding {
        Encoding::Json if !payload.fits_json() => (None, payload.json_base64()),
        _ => (Some(payload), None),
    }
}

/// Encodes a `message` op for one publication.
pub fn encode_publication(
    encoding: Encoding,
    channel: &str,
    payload: &Payload,
    position: Option<&StreamPosition>,
) -> Result<Bytes, EncodeError> {
    let (data, data_b64) = data_fields(encoding, payload);
    encode(
        encoding,
        &ServerMessage::Message {
            channel,
            data,
            data_b64,
            offset: position.map(|p| p.offset),
            epoch: position.map(|p| p.epoch.as_str()),
        },
    )
}

/// Encodes an `error` reply.
pub fn encode_error(encoding: Encoding, id: u64, code: ErrorCode, message: &str) -> Bytes {
    encode(encoding, &ServerMessage::Error { id, code, message }).unwrap_or_default()
}

/// Encodes the `disconnect` message sent before a close frame.
pub fn encode_disconnect(
    encoding: Encoding,
    code: CloseCode,
    reason: &str,
    reconnect: bool,
) -> Bytes {
    let message = ServerMessage::Disconnect {
        code: code.as_u16(),
        reason,
        reconnect,
    };
    encode(encoding, &message).unwrap_or_default()
}

/// The `ping` op, encoded once.
pub fn ping_frame(encoding: Encoding) -> Bytes {
    match encoding {
        Encoding::Json => Bytes::from_static(br#"{"op":"ping"}"#),
        // fixmap(1) "op" "ping"
        Encoding::Msgpack => {
            Bytes::from_static(&[0x81, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g'])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_frames_are_what_serde_would_write() -> Result<(), EncodeError> {
        for enc in [Encoding::Json, Encoding::Msgpack] {
            assert_eq!(ping_frame(enc), encode(enc, &ServerMessage::Ping)?);
        }
        Ok(())
    }

    #[test]
    fn message_json_shape() -> Result<(), EncodeError> {
        let payload = Payload::Json(Bytes::from_static(br#"{"hello":"world"}"#));
        let pos = StreamPosition {
            offset: 3,
            epoch: "e1".into(),
        };
        let bytes = encode_publication(Encoding::Json, "news", &payload, Some(&pos))?;
        assert_eq!(
            &bytes[..],
            br#"{"op":"message","channel":"news","data":{"hello":"world"},"offset":3,"epoch":"e1"}"#
        );
        Ok(())
    }

    #[test]
    fn message_msgpack_is_a_named_map() -> Result<(), EncodeError> {
        let payload = Payload::Json(Bytes::from_static(b"[1,\"a\"]"));
        let bytes = encode_publication(Encoding::Msgpack, "news", &payload, None)?;
        let value = rmpv::decode::read_value(&mut &bytes[..]).unwrap_or(rmpv::Value::Nil);
        assert_eq!(value["op"].as_str(), Some("message"));
        assert_eq!(value["channel"].as_str(), Some("news"));
        assert_eq!(value["data"][1].as_str(), Some("a"));
        Ok(())
    }

    #[test]
    fn binary_reaches_json_clients_as_base64() -> Result<(), EncodeError> {
        let payload = Payload::from_msgpack_value(&rmpv::Value::Binary(b"hi".to_vec()));
        let bytes = encode_publication(Encoding::Json, "c", &payload, None)?;
        assert_eq!(
            &bytes[..],
            br#"{"op":"message","channel":"c","data_b64":"aGk="}"#
        );
        Ok(())
    }

    #[test]
    fn error_and_disconnect_shapes() {
        let err = encode_error(Encoding::Json, 5, ErrorCode::UnknownOp, "unknown op");
        assert_eq!(
            &err[..],
            br#"{"op":"error","id":5,"code":104,"message":"unknown op"}"#
        );
        let disc = encode_disconnect(
            Encoding::Json,
            CloseCode::SlowConsumer,
            "slow consumer",
            true,
        );
        assert_eq!(
            &disc[..],
            br#"{"op":"disconnect","code":4008,"reason":"slow consumer","reconnect":true}"#
        );
    }
}
