//! Channel names (PROTOCOL.md section 5): validation, namespace and user-channel parsing.

use std::fmt;
use std::sync::Arc;

/// The longest channel name accepted, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 255;

/// A validated channel name. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

/// Why a string is not a channel name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidChannel {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {MAX_CHANNEL_BYTES} bytes")]
    TooLong,
    #[error("channel name contains a character outside A-Z a-z 0-9 _ - = @ . : # , /")]
    BadCharacter,
}

fn allowed(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"_-=@.:#,/".contains(&byte)
}

impl ChannelName {
    pub fn parse(name: &str) -> Result<Self, InvalidChannel> {
        if name.is_empty() {
            return Err(InvalidChannel::Empty);
        }
        if name.len() > MAX_CHANNEL_BYTES {
            return Err(InvalidChannel::TooLong);
        }
        if !name.bytes().all(allowed) {
            return Err(InvalidChannel::BadCharacter);
        }
        Ok(ChannelName(Arc::from(name)))
    }

    /// A name validated by another front end's rules (`crate::pusher::channel`, whose
    /// names are deliberately outside this alphabet). Never for client input as such.
    pub fn from_validated(name: String) -> Self {
        ChannelName(Arc::from(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn shared(&self) -> &Arc<str> {
        &self.0
    }

    /// The namespace: the part before the first `:`, or `None` for the default namespace.
    pub fn namespace(&self) -> Option<&str> {
        self.0.split_once(':').map(|(ns, _)| ns)
    }

    /// For a user channel (`dm#alice,bob`), the users allowed to subscribe.
    pub fn allowed_users(&self) -> Option<impl Iterator<Item = &str>> {
        self.0
            .split_once('#')
            .map(|(_, users)| users.split(',').filter(|u| !u.is_empty()))
    }

    /// Whether `user` may subscribe, as far as the user-channel rule goes.
    pub fn admits_user(&self, user: &str) -> bool {
        match self.allowed_users() {
            None => true,
            Some(mut users) => !user.is_empty() && users.any(|u| u == user),
        }
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl serde::Serialize for ChannelName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        let name = "Az09_-=@.:#,/";
        assert_eq!(
            ChannelName::parse(name).map(|c| c.to_string()),
            Ok(name.into())
        );
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(ChannelName::parse(""), Err(InvalidChannel::Empty));
        assert_eq!(
            ChannelName::parse(&"a".repeat(256)),
            Err(InvalidChannel::TooLong)
        );
        assert!(ChannelName::parse(&"a".repeat(255)).is_ok());
        for bad in ["a b", "é", "a\nb", "a*", "news?"] {
            assert_eq!(
                ChannelName::parse(bad),
                Err(InvalidChannel::BadCharacter),
                "{bad}"
            );
        }
    }

    #[test]
    fn namespace_is_before_the_first_colon() -> Result<(), InvalidChannel> {
        assert_eq!(ChannelName::parse("news")?.namespace(), None);
        assert_eq!(ChannelName::parse("chat:room:1")?.namespace(), Some("chat"));
        Ok(())
    }

    #[test]
    fn user_channels_admit_listed_users_only() -> Result<(), InvalidChannel> {
        let dm = ChannelName::parse("dm#alice,bob")?;
        assert!(dm.admits_user("alice"));
        assert!(dm.admits_user("bob"));
        assert!(!dm.admits_user("carol"));
        assert!(!dm.admits_user(""));
        assert!(ChannelName::parse("news")?.admits_user(""));
        Ok(())
    }
}
