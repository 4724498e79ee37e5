//! The request policy every front end applies the same way: which namespace a channel
//! belongs to ([`resolve_channel`]) and whether data may be published
//! ([`check_publishable`], whose size rule is [`check_size`]). The native session, the HTTP
//! API, SSE and the Pusher front end call these and map the one typed [`Refusal`] to their
//! own wire: an `error` op with [`Refusal::code`], or an
//! HTTP status with the same code.
//!
//! Order of the publish checks, the same everywhere: size first (cheap, bounded by the
//! limit), then deliverability in both encodings (parses the data).

use crate::config::{Config, NamespaceConfig};
use crate::protocol::{ChannelName, ErrorCode, Payload};

/// Why a request about a channel or a publication is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a valid channel name.
    #[error("channel {name:?}: {reason}")]
    InvalidChannel { name: String, reason: String },
    /// A valid name whose namespace is not configured.
    #[error("unknown namespace for channel {channel}")]
    UnknownNamespace { channel: String },
    /// Publication data over the front end's limit (`api.max_publish_bytes`).
    #[error("data larger than max_publish_bytes")]
    DataTooLarge { limit: usize },
    /// Data one of the encodings cannot carry (a JSON number like `1e400`).
    #[error("data cannot be delivered: {reason}")]
    Undeliverable { reason: String },
}

impl Refusal {
    /// The protocol error code a client sees (the HTTP API sends it in its JSON body).
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::InvalidChannel { .. } | Refusal::Undeliverable { .. } => ErrorCode::BadRequest,
            Refusal::UnknownNamespace { .. } => ErrorCode::UnknownChannel,
            Refusal::DataTooLarge { .. } => ErrorCode::LimitExceeded,
        }
    }
}

/// Parses a channel name and finds its namespace's options.
pub fn resolve_channel(
    config: &Config,
    name: &str,
) -> Result<(ChannelName, NamespaceConfig), Refusal> {
    let channel = ChannelName::parse(name).map_err(|e| Refusal::InvalidChannel {
        name: name.to_owned(),
        reason: e.to_string(),
    })?;
    let ns = config
        .namespace_of(&channel)
        .cloned()
        .ok_or_else(|| Refusal::UnknownNamespace {
            channel: channel.as_str().to_owned(),
        })?;
    Ok((channel, ns))
}

/// Checks publication data: at most `limit` bytes, and deliverable to clients of both
/// encodings.
pub fn check_publishable(payload: &Payload, limit: usize) -> Result<(), Refusal> {
    check_size(payload.len(), limit)?;
    payload
        .check_deliverable()
        .map_err(|e| Refusal::Undeliverable {
            reason: e.to_string(),
        })
}

/// The size rule alone: `len` bytes of data against the front end's `limit`. For data
/// that is not a payload yet (a Pusher HTTP API event's `data` string, measured as Pusher
/// measures it).
pub fn check_size(len: usize, limit: usize) -> Result<(), Refusal> {
    if len > limit {
        return Err(Refusal::DataTooLarge { limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn channels_resolve_to_their_namespace_or_a_typed_refusal() {
        let config = Config::from_toml("[namespaces.chat]\nhistory_size = 5\n").unwrap();
        let (channel, ns) = resolve_channel(&config, "chat:room").unwrap();
        assert_eq!((channel.as_str(), ns.history_size), ("chat:room", 5));
        assert_eq!(resolve_channel(&config, "plain").unwrap().1.history_size, 0);
        let unknown = resolve_channel(&config, "nope:room").unwrap_err();
        assert_eq!(unknown.code(), ErrorCode::UnknownChannel);
        let invalid = resolve_channel(&config, "").unwrap_err();
        assert!(matches!(invalid, Refusal::InvalidChannel { .. }));
        assert_eq!(invalid.code(), ErrorCode::BadRequest);
    }

    #[test]
    fn size_is_checked_before_deliverability() {
        let fine = Payload::Json(br#"{"a":1}"#.to_vec().into());
        assert_eq!(check_publishable(&fine, 7), Ok(()));
        assert_eq!(
            check_publishable(&fine, 6),
            Err(Refusal::DataTooLarge { limit: 6 })
        );
        let huge_number = Payload::Json(b"1e400".to_vec().into());
        let refusal = check_publishable(&huge_number, 100).unwrap_err();
        assert!(matches!(refusal, Refusal::Undeliverable { .. }));
        assert_eq!(
            check_publishable(&huge_number, 2),
            Err(Refusal::DataTooLarge { limit: 2 })
        );
        // The size rule alone, as the Pusher front end applies it to its event data.
        assert_eq!(check_size(10, 10), Ok(()));
        assert_eq!(check_size(11, 10), Err(Refusal::DataTooLarge { limit: 10 }));
    }
}
