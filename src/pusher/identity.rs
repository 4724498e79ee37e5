//! How Pusher connections are named in the hub. A `socket_id` is the connection's
//! `ClientId` written as Pusher wants it (`\d+\.\d+`: the node prefix and the counter, in
//! decimal), so the HTTP API can exclude a socket on any node without a lookup. A user
//! signed in to an app (`pusher:signin`) is the hub user `pusher~{app_id}~{user_id}`, so
//! `terminate_connections` (a `ClientSelector::User`) reaches exactly that app's sockets
//! of that user, on every node, and never a native user or another app's.

use crate::hub::ClientId;

/// The `socket_id` of a connection.
pub fn socket_id(id: ClientId) -> String {
    format!("{}.{}", id.0 >> 32, id.0 & 0xffff_ffff)
}

/// The connection a `socket_id` names; `None` unless it is two decimal numbers that fit
/// a `ClientId` (the server SDKs check `^\d+\.\d+$` too).
pub fn parse_socket_id(text: &str) -> Option<ClientId> {
    let (high, low) = text.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(high) || !digits(low) {
        return None;
    }
    let high: u32 = high.parse().ok()?;
    let low: u32 = low.parse().ok()?;
    Some(ClientId((u64::from(high) << 32) | u64::from(low)))
}

/// The hub user of `user_id` signed in to app `app_id`.
pub fn hub_user(app_id: &str, user_id: &str) -> String {
    format!("pusher~{app_id}~{user_id}")
}

/// The app id and Pusher user id of a hub user; `None` for native users.
pub fn split_hub_user(user: &str) -> Option<(&str, &str)> {
    user.strip_prefix("pusher~")?.split_once('~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_ids_round_trip_and_look_like_pushers() {
        for id in [0, 1, 0xdead_beef_0000_0007, u64::MAX] {
            let text = socket_id(ClientId(id));
            let (high, low) = text.split_once('.').unwrap_or_default();
            assert!(!high.is_empty() && high.bytes().all(|b| b.is_ascii_digit()));
            assert!(!low.is_empty() && low.bytes().all(|b| b.is_ascii_digit()));
            assert_eq!(parse_socket_id(&text), Some(ClientId(id)));
        }
        assert_eq!(socket_id(ClientId(0x0000_0002_0000_0003)), "2.3");
        for bad in [
            "",
            "1",
            "1.",
            ".1",
            "a.1",
            "1.2.3",
            "-1.2",
            "1.+2",
            "4294967296.0",
        ] {
            assert_eq!(parse_socket_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hub_users_are_scoped_by_app() {
        let user = hub_user("4242", "alice~x");
        assert_eq!(split_hub_user(&user), Some(("4242", "alice~x")));
        assert_ne!(hub_user("1", "a"), hub_user("2", "a"));
        assert_eq!(split_hub_user("alice"), None);
    }
}
