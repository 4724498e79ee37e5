//! The wire contract of PROTOCOL.md: message types, error and close codes, channel names,
//! publication data, and the JSON and MessagePack codecs with batching.
//!
//! Architecture Invariant: this module is pure. No I/O, no clocks, no shared state, so
//! every rule of the wire format can be unit- and property-tested in isolation.

mod channel;
mod client_id;
mod codes;
mod payload;
mod publication;
mod reply;
mod request;

pub use channel::{ChannelName, InvalidChannel, MAX_CHANNEL_BYTES};
pub use client_id::ClientId;
pub use codes::{CloseCode, ErrorCode};
pub use payload::{MAX_MSGPACK_DEPTH, Payload, PayloadError};
pub use publication::{NamedEvent, Publication};
pub use reply::{
    ClientInfo, EncodeError, HistoryItem, ServerMessage, data_fields, encode, encode_disconnect,
    encode_error, encode_publication, ping_frame,
};
pub use request::{MalformedFrame, Request, RequestError, StreamPosition, decode_frame};

/// The two wire encodings, chosen per connection by WebSocket subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Json,
    Msgpack,
}

impl Encoding {
    pub const ALL: [Encoding; 2] = [Encoding::Json, Encoding::Msgpack];
    pub const JSON_SUBPROTOCOL: &'static str = "pushwire.v1.json";
    pub const MSGPACK_SUBPROTOCOL: &'static str = "pushwire.v1.msgpack";

    pub fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Json => Self::JSON_SUBPROTOCOL,
            Encoding::Msgpack => Self::MSGPACK_SUBPROTOCOL,
        }
    }

    pub fn from_subprotocol(name: &str) -> Option<Self> {
        match name.trim() {
            Self::JSON_SUBPROTOCOL => Some(Encoding::Json),
            Self::MSGPACK_SUBPROTOCOL => Some(Encoding::Msgpack),
            _ => None,
        }
    }

    /// Index into per-encoding arrays.
    pub fn index(self) -> usize {
        match self {
            Encoding::Json => 0,
            Encoding::Msgpack => 1,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Msgpack => "msgpack",
        }
    }

    /// Joins several encoded messages into one batch frame (PROTOCOL.md section 1).
    pub fn join_batch<'a>(
        self,
        messages: impl IntoIterator<Item = &'a bytes::Bytes>,
    ) -> bytes::Bytes {
        let mut out = bytes::BytesMut::new();
        for (i, message) in messages.into_iter().enumerate() {
            if i > 0 && self == Encoding::Json {
                out.extend_from_slice(b"\n");
            }
            out.extend_from_slice(message);
        }
        out.freeze()
    }
}
