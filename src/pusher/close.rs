//! How a Pusher connection ends: every native ending (`CloseCode`) maps to the code from
//! Pusher's own table that gives pusher-js the right reconnect behaviour (4000-4099: do
//! not reconnect; 4100-4199: reconnect with backoff; 4200-4299: reconnect now), sent as
//! `pusher:error` and then as the close frame's code. Native 4005/4008/4009 would mean
//! "never reconnect" to pusher-js, which is why this table exists.

use bytes::Bytes;

use crate::protocol::CloseCode;

/// Pusher's codes that have no native counterpart (`CloseCode::Custom` carries them).
pub const APP_NOT_FOUND: u16 = 4001;
pub const APP_DISABLED: u16 = 4003;
pub const OVER_QUOTA: u16 = 4004;
pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
pub const UNAUTHORIZED: u16 = 4009;
pub const OVER_CAPACITY: u16 = 4100;
pub const RECONNECT_NOW: u16 = 4200;
pub const PONG_TIMEOUT: u16 = 4201;
/// Sent as `pusher:error` only: the connection stays open.
pub const CLIENT_EVENT_RATE_LIMIT: u16 = 4301;

/// The Pusher close code for a native ending.
pub fn pusher_code(code: CloseCode) -> u16 {
    match code {
        CloseCode::Normal => 1000,
        // Drain and shutdown: come back at once (to another node).
        CloseCode::GoingAway => RECONNECT_NOW,
        CloseCode::PongTimeout => PONG_TIMEOUT,
        CloseCode::SlowConsumer
        | CloseCode::RateLimited
        | CloseCode::ConnectionLimit
        | CloseCode::BackendUnavailable
        | CloseCode::FrameTooLarge => OVER_CAPACITY,
        CloseCode::Malformed
        | CloseCode::InvalidToken
        | CloseCode::TokenExpired
        | CloseCode::ConnectTimeout
        | CloseCode::ApiDisconnect => UNAUTHORIZED,
        CloseCode::Custom(code) => code,
    }
}

/// The close code and the `pusher:error` frame sent before the close frame (none for a
/// normal closure).
pub fn closing(code: CloseCode, reason: &str) -> (u16, Option<Bytes>) {
    let code = pusher_code(code);
    if code == 1000 {
        return (code, None);
    }
    (code, Some(error_frame(reason, Some(code))))
}

/// `pusher:error` with `data` an object (`{"message","code"}`), as Pusher sends it.
pub fn error_frame(message: &str, code: Option<u16>) -> Bytes {
    let data = serde_json::json!({ "message": message, "code": code });
    super::wire::frame("pusher:error", None, &data.to_string(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pusher-js `getCloseAction`: what the client does on each code.
    fn pusher_js_action(code: u16) -> &'static str {
        match code {
            4000 => "tls_only",
            4001..=4099 => "refused",
            4100..=4199 => "backoff",
            4200..=4299 => "retry",
            _ => "refused",
        }
    }

    #[test]
    fn every_native_ending_gets_pusher_reconnect_behaviour() {
        let expect = |code, action| {
            assert_eq!(pusher_js_action(pusher_code(code)), action, "{code:?}");
        };
        expect(CloseCode::GoingAway, "retry");
        expect(CloseCode::PongTimeout, "retry");
        expect(CloseCode::SlowConsumer, "backoff");
        expect(CloseCode::RateLimited, "backoff");
        expect(CloseCode::ConnectionLimit, "backoff");
        expect(CloseCode::ApiDisconnect, "refused");
        expect(CloseCode::Malformed, "refused");
        for code in CloseCode::ALL {
            assert_ne!(pusher_code(code), 4000, "{code:?} would force TLS");
        }
        assert_eq!(pusher_code(CloseCode::Custom(OVER_QUOTA)), OVER_QUOTA);
    }

    #[test]
    fn errors_carry_the_code_and_normal_closes_none() {
        let (code, frame) = closing(CloseCode::SlowConsumer, "slow consumer");
        assert_eq!(code, 4100);
        let value: serde_json::Value =
            serde_json::from_slice(&frame.unwrap_or_default()).unwrap_or_default();
        assert_eq!(value["event"], "pusher:error");
        assert_eq!(value["data"]["code"], 4100);
        assert_eq!(closing(CloseCode::Normal, "bye"), (1000, None));
    }
}
