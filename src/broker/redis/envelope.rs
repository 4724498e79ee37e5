//! What travels between nodes on a channel topic: `<offset>:<epoch>:` followed by a
//! MessagePack envelope (rmp-serde, named fields). The prefix is written by the publish
//! script inside Redis, which is where offsets are assigned; Rust writes the rest.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::hub::{ClientId, NamedEvent, Publication};
use crate::protocol::{ClientInfo, Payload, StreamPosition};

/// The body of a relayed message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// Id of the node that published.
    pub node: String,
    /// When it was published, in microseconds since the Unix epoch (relay latency).
    pub ts_us: u64,
    pub body: Body,
    /// The publisher's W3C `traceparent`, only when its trace is recorded
    /// (`crate::telemetry`); absent otherwise and from older nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Body {
    Publication {
        json: bool,
        #[serde(with = "serde_bytes_compat")]
        data: Vec<u8>,
        /// The client that must not receive it (`exclude_client`); absent from older nodes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exclude: Option<u64>,
        /// A Pusher publication's `NamedEvent`; absent on native ones.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<RelayedEvent>,
    },
    Join {
        client: ClientInfo,
    },
    Leave {
        client: ClientInfo,
    },
}

/// `NamedEvent` as relayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RelayedEvent {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
}

/// A decoded relay message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Relayed {
    pub position: Option<StreamPosition>,
    pub envelope: Envelope,
}

/// Why a relayed message could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EnvelopeError {
    #[error("missing offset:epoch: header")]
    Header,
    #[error("bad envelope: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
}

impl Envelope {
    pub(crate) fn publication(node: &str, publication: &Publication) -> Self {
        let exclude = publication.exclude.map(|c| c.0);
        let event = publication.event.as_deref().map(|e| RelayedEvent {
            name: e.name.to_string(),
            user_id: e.user_id.as_deref().map(str::to_owned),
        });
        let (json, data) = match &publication.payload {
            Payload::Json(b) => (true, b.to_vec()),
            Payload::Msgpack(b) => (false, b.to_vec()),
        };
        Envelope {
            node: node.to_owned(),
            ts_us: now_us(),
            body: Body::Publication {
                json,
                data,
                exclude,
                event,
            },
            trace: crate::telemetry::current_traceparent(),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        // Serialising owned plain data into a Vec cannot fail.
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }
}

impl Body {
    pub(crate) fn payload(&self) -> Option<Payload> {
        match self {
            Body::Publication {
                json: true, data, ..
            } => Some(Payload::Json(Bytes::from(data.clone()))),
            Body::Publication {
                json: false, data, ..
            } => Some(Payload::Msgpack(Bytes::from(data.clone()))),
            _ => None,
        }
    }

    /// A Pusher publication's event.
    pub(crate) fn event(&self) -> Option<Arc<NamedEvent>> {
        let Body::Publication {
            event: Some(event), ..
        } = self
        else {
            return None;
        };
        Some(Arc::new(NamedEvent {
            name: Arc::from(event.name.as_str()),
            user_id: event.user_id.as_deref().map(Arc::from),
        }))
    }

    /// The client a publication must skip.
    pub(crate) fn excluded(&self) -> Option<ClientId> {
        match self {
            Body::Publication { exclude, .. } => exclude.map(ClientId),
            _ => None,
        }
    }
}

/// Splits `<offset>:<epoch>:<envelope>`; empty offset and epoch mean "no history".
pub(crate) fn decode(message: &[u8]) -> Result<Relayed, EnvelopeError> {
    let first = message
        .iter()
        .position(|b| *b == b':')
        .ok_or(EnvelopeError::Header)?;
    let rest = &message[first + 1..];
    let second = rest
        .iter()
        .position(|b| *b == b':')
        .ok_or(EnvelopeError::Header)?;
    let offset = std::str::from_utf8(&message[..first]).map_err(|_| EnvelopeError::Header)?;
    let epoch = std::str::from_utf8(&rest[..second]).map_err(|_| EnvelopeError::Header)?;
    let position = if offset.is_empty() {
        None
    } else {
        let offset = offset.parse().map_err(|_| EnvelopeError::Header)?;
        Some(StreamPosition {
            offset,
            epoch: epoch.to_owned(),
        })
    };
    let envelope = rmp_serde::from_slice(&rest[second + 1..])?;
    Ok(Relayed { position, envelope })
}

/// The prefix for messages without a stream position.
pub(crate) const NO_POSITION: &[u8] = b"::";

pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Serialises `Vec<u8>` as MessagePack `bin` (serde's default would be an array).
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_and_without_position() -> Result<(), EnvelopeError> {
        let payload = Payload::Json(Bytes::from_static(b"{\"a\":1}"));
        let channel =
            crate::protocol::ChannelName::parse("news").map_err(|_| EnvelopeError::Header)?;
        let mut publication = Publication::new(channel, payload.clone(), None);
        publication.exclude = Some(ClientId(9));
        let envelope = Envelope::publication("node-1", &publication);
        let mut with = b"7:abc:".to_vec();
        with.extend(envelope.encode());
        let relayed = decode(&with)?;
        assert_eq!(
            relayed.position,
            Some(StreamPosition {
                offset: 7,
                epoch: "abc".into()
            })
        );
        assert_eq!(relayed.envelope.body.payload(), Some(payload));
        assert_eq!(relayed.envelope.body.excluded(), Some(ClientId(9)));
        let mut without = NO_POSITION.to_vec();
        without.extend(envelope.encode());
        assert_eq!(decode(&without)?.position, None);
        Ok(())
    }

    #[test]
    fn pusher_events_round_trip_and_native_ones_stay_small() -> Result<(), EnvelopeError> {
        let payload = Payload::Json(Bytes::from_static(b"\"hi\""));
        let channel =
            crate::protocol::ChannelName::parse("news").map_err(|_| EnvelopeError::Header)?;
        let mut publication = Publication::new(channel, payload, None);
        let native = Envelope::publication("n", &publication).encode();
        let event = NamedEvent {
            name: Arc::from("client-typing"),
            user_id: Some(Arc::from("u1")),
        };
        publication.event = Some(Arc::new(event.clone()));
        let named = Envelope::publication("n", &publication).encode();
        let mut message = NO_POSITION.to_vec();
        message.extend(&named);
        assert_eq!(
            decode(&message)?.envelope.body.event().as_deref(),
            Some(&event)
        );
        // A native envelope has no event field at all (what older nodes wrote).
        let mut message = NO_POSITION.to_vec();
        message.extend(&native);
        assert_eq!(decode(&message)?.envelope.body.event(), None);
        assert!(named.len() > native.len());
        Ok(())
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode(b"no header").is_err());
        assert!(decode(b"x:e:").is_err());
        assert!(decode(b"::\xc1").is_err());
    }
}
