//! Pusher channel names: validation, kinds, and each app's own channel space in the hub.
//!
//! An app's channel `private-chat` lives in the hub as `pusher~{app_id}~private-chat`.
//! `~` is outside both the native alphabet (PROTOCOL.md section 5) and Pusher's, so no
//! native client or native API call can name an app's channel, and no app can name
//! another app's or a native one: the spaces are disjoint by construction, whatever the
//! configured namespaces are. Pusher's alphabet (`[A-Za-z0-9_\-=@,.;]`, at most 200
//! bytes, plus the server-only `#server-to-user-{id}`) includes `;`, which native names
//! refuse; app channel names are validated here and built with
//! `ChannelName::from_validated`, never by `ChannelName::parse`.
//!
//! App channels never contain `:`, so `ChannelName::namespace` sees none: the policy of
//! an app channel comes from `namespace_config`, never from `[namespaces]`.

use crate::config::NamespaceConfig;
use crate::protocol::ChannelName;

/// The longest Pusher channel name, in bytes (the Node server SDK's limit).
pub const MAX_NAME_BYTES: usize = 200;
/// The longest app id that can be mapped into the hub.
pub const MAX_APP_ID_BYTES: usize = 40;
/// How long a cache channel keeps its last event (Pusher: 30 minutes).
pub const CACHE_TTL_SECS: u64 = 1800;

const HUB_PREFIX: &str = "pusher~";
const SERVER_TO_USER: &str = "#server-to-user-";

/// What a channel's name prefix makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Public,
    Private,
    Presence,
    /// `private-encrypted-`: private auth, payloads relayed opaquely, no client events.
    PrivateEncrypted,
    /// `#server-to-user-{id}`: only the server publishes, only signed-in sockets of that
    /// user receive.
    ServerToUser,
}

/// A classified Pusher channel name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelKind {
    pub kind: Kind,
    /// A cache channel (`cache-`, `private-cache-`, `presence-cache-`,
    /// `private-encrypted-cache-`): its last event is replayed on subscribe.
    pub cache: bool,
}

impl ChannelKind {
    /// Whether subscribing needs an `auth` signature.
    pub fn needs_auth(self) -> bool {
        matches!(
            self.kind,
            Kind::Private | Kind::Presence | Kind::PrivateEncrypted
        )
    }

    /// Whether clients may send `client-*` events on it.
    pub fn allows_client_events(self) -> bool {
        matches!(self.kind, Kind::Private | Kind::Presence)
    }
}

/// Why a string is not a Pusher channel name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPusherChannel {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {MAX_NAME_BYTES} bytes")]
    TooLong,
    #[error("channel name contains a character outside A-Z a-z 0-9 _ - = @ , . ;")]
    BadCharacter,
    #[error("app id {0:?} cannot name a channel space")]
    BadAppId(String),
}

fn allowed(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"_-=@,.;".contains(&byte)
}

/// Classifies a channel name, validating it. `#server-to-user-{id}` is accepted here;
/// callers refuse it where clients may not name it (subscribe).
pub fn classify(name: &str) -> Result<ChannelKind, InvalidPusherChannel> {
    if name.is_empty() {
        return Err(InvalidPusherChannel::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(InvalidPusherChannel::TooLong);
    }
    let body = name.strip_prefix(SERVER_TO_USER).unwrap_or(name);
    if body.is_empty() || !body.bytes().all(allowed) {
        return Err(InvalidPusherChannel::BadCharacter);
    }
    let kind = |kind, cache| ChannelKind { kind, cache };
    let classified = if name.starts_with(SERVER_TO_USER) {
        kind(Kind::ServerToUser, false)
    } else if name.starts_with("private-encrypted-cache-") {
        kind(Kind::PrivateEncrypted, true)
    } else if name.starts_with("private-encrypted-") {
        kind(Kind::PrivateEncrypted, false)
    } else if name.starts_with("private-cache-") {
        kind(Kind::Private, true)
    } else if name.starts_with("private-") {
        kind(Kind::Private, false)
    } else if name.starts_with("presence-cache-") {
        kind(Kind::Presence, true)
    } else if name.starts_with("presence-") {
        kind(Kind::Presence, false)
    } else {
        kind(Kind::Public, name.starts_with("cache-"))
    };
    Ok(classified)
}

/// The user a `#server-to-user-{id}` channel is for.
pub fn server_to_user_id(name: &str) -> Option<&str> {
    name.strip_prefix(SERVER_TO_USER)
}

/// The `#server-to-user-{id}` channel of `user_id`.
pub fn server_to_user_channel(user_id: &str) -> String {
    format!("{SERVER_TO_USER}{user_id}")
}

fn valid_app_id(app_id: &str) -> bool {
    !app_id.is_empty()
        && app_id.len() <= MAX_APP_ID_BYTES
        && app_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The hub channel of `app_id`'s channel `name`, with its kind.
pub fn to_hub(
    app_id: &str,
    name: &str,
) -> Result<(ChannelName, ChannelKind), InvalidPusherChannel> {
    if !valid_app_id(app_id) {
        return Err(InvalidPusherChannel::BadAppId(app_id.to_owned()));
    }
    let kind = classify(name)?;
    let hub = ChannelName::from_validated(format!("{HUB_PREFIX}{app_id}~{name}"));
    Ok((hub, kind))
}

/// The prefix every hub channel of `app_id` starts with (for listing an app's channels).
pub fn app_space(app_id: &str) -> String {
    format!("{HUB_PREFIX}{app_id}~")
}

/// Splits a hub channel into app id and Pusher name; `None` for native channels.
pub fn split(channel: &ChannelName) -> Option<(&str, &str)> {
    channel.as_str().strip_prefix(HUB_PREFIX)?.split_once('~')
}

/// The app id of a hub channel name, `None` for native channels.
pub fn app_of(hub_name: &str) -> Option<&str> {
    hub_name
        .strip_prefix(HUB_PREFIX)?
        .split_once('~')
        .map(|(app, _)| app)
}

/// The hub channel a relayed topic names, if it is a valid app channel.
pub fn hub_channel(hub_name: &str) -> Option<ChannelName> {
    let (app_id, name) = hub_name.strip_prefix(HUB_PREFIX)?.split_once('~')?;
    to_hub(app_id, name).ok().map(|(hub, _)| hub)
}

/// How the hub and brokers treat a channel of `kind`: cache channels keep one message
/// for `CACHE_TTL_SECS` (history is what replays it), presence channels keep a member
/// set. Native publish and subscribe policies do not apply: the Pusher front end checks
/// signatures itself.
pub fn namespace_config(kind: ChannelKind) -> NamespaceConfig {
    NamespaceConfig {
        history_size: usize::from(kind.cache),
        history_ttl_secs: CACHE_TTL_SECS,
        presence: kind.kind == Kind::Presence,
        // The broker announces users (first connection in, last out), which the hub
        // encodes as `pusher_internal:member_added` / `member_removed`.
        join_leave: kind.kind == Kind::Presence,
        max_recover_messages: 1,
        ..NamespaceConfig::default()
    }
}

/// `namespace_config` for a hub channel, `None` for native ones.
pub fn namespace_of_hub(channel: &ChannelName) -> Option<NamespaceConfig> {
    let (_, name) = split(channel)?;
    classify(name).ok().map(namespace_config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(name: &str) -> Option<(Kind, bool)> {
        classify(name).ok().map(|k| (k.kind, k.cache))
    }

    #[test]
    fn prefixes_pick_the_kind() {
        assert_eq!(kind_of("news"), Some((Kind::Public, false)));
        assert_eq!(kind_of("cache-news"), Some((Kind::Public, true)));
        assert_eq!(kind_of("private-a"), Some((Kind::Private, false)));
        assert_eq!(kind_of("private-cache-a"), Some((Kind::Private, true)));
        assert_eq!(kind_of("presence-a"), Some((Kind::Presence, false)));
        assert_eq!(kind_of("presence-cache-a"), Some((Kind::Presence, true)));
        assert_eq!(
            kind_of("private-encrypted-a"),
            Some((Kind::PrivateEncrypted, false))
        );
        assert_eq!(
            kind_of("private-encrypted-cache-a"),
            Some((Kind::PrivateEncrypted, true))
        );
        assert_eq!(
            kind_of("#server-to-user-42"),
            Some((Kind::ServerToUser, false))
        );
        assert_eq!(server_to_user_id("#server-to-user-42"), Some("42"));
    }

    #[test]
    fn pusher_alphabet_and_length() {
        assert!(classify("a-b_c=d@e,f.g;h").is_ok());
        assert_eq!(classify(""), Err(InvalidPusherChannel::Empty));
        assert_eq!(
            classify(&"a".repeat(201)),
            Err(InvalidPusherChannel::TooLong)
        );
        assert!(classify(&"a".repeat(200)).is_ok());
        for bad in [
            "a b",
            "a:b",
            "a#b",
            "#other",
            "a~b",
            "a/b",
            "é",
            "#server-to-user-",
        ] {
            assert!(classify(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn app_spaces_are_disjoint_from_each_other_and_from_native_names()
    -> Result<(), InvalidPusherChannel> {
        let (a, _) = to_hub("4242", "private-x;y")?;
        let (b, _) = to_hub("4243", "private-x;y")?;
        assert_ne!(a, b);
        assert_eq!(split(&a), Some(("4242", "private-x;y")));
        assert!(ChannelName::parse(a.as_str()).is_err());
        assert_eq!(hub_channel(a.as_str()), Some(a.clone()));
        assert_eq!(a.namespace(), None);
        let native = ChannelName::parse("news").map_err(|_| InvalidPusherChannel::Empty)?;
        assert_eq!(split(&native), None);
        assert_eq!(hub_channel("pusher~4242~a b"), None);
        assert_eq!(hub_channel("pusher~42~42~x"), None);
        assert!(to_hub("42~1", "x").is_err());
        assert!(to_hub(&"1".repeat(41), "x").is_err());
        Ok(())
    }

    #[test]
    fn cache_channels_keep_one_message_for_thirty_minutes() -> Result<(), InvalidPusherChannel> {
        let ns = namespace_of_hub(&to_hub("1", "presence-cache-x")?.0).unwrap_or_default();
        assert_eq!((ns.history_size, ns.history_ttl_secs), (1, 1800));
        assert!(ns.presence);
        let ns = namespace_config(classify("news")?);
        assert_eq!(ns.history_size, 0);
        assert!(!ns.presence);
        Ok(())
    }
}
