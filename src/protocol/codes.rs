//! Error codes (carried in `error` replies) and WebSocket close codes, as PROTOCOL.md
//! sections 6 and 7 define them. Each close code knows whether a client should reconnect.

use serde::{Serialize, Serializer};

/// A request failure code, sent in an `error` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Internal,
    Unauthorized,
    UnknownChannel,
    PermissionDenied,
    UnknownOp,
    AlreadySubscribed,
    LimitExceeded,
    BadRequest,
    NotAvailable,
    TokenExpired,
    TooManyRequests,
}

impl ErrorCode {
    pub fn as_u16(self) -> u16 {
        match self {
            ErrorCode::Internal => 100,
            ErrorCode::Unauthorized => 101,
            ErrorCode::UnknownChannel => 102,
            ErrorCode::PermissionDenied => 103,
            ErrorCode::UnknownOp => 104,
            ErrorCode::AlreadySubscribed => 105,
            ErrorCode::LimitExceeded => 106,
            ErrorCode::BadRequest => 107,
            ErrorCode::NotAvailable => 108,
            ErrorCode::TokenExpired => 109,
            ErrorCode::TooManyRequests => 110,
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(self.as_u16())
    }
}

/// Why the server ends a connection; the WebSocket close code and the `disconnect` message
/// sent right before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// The client asked to close (1000).
    Normal,
    /// Shutdown or drain (1001).
    GoingAway,
    /// A frame above `max_frame_bytes` (1009).
    FrameTooLarge,
    /// Malformed frame or protocol violation (4000).
    Malformed,
    /// Invalid token (4001).
    InvalidToken,
    /// Token expired (4002).
    TokenExpired,
    /// No `connect` within `connect_timeout` (4004).
    ConnectTimeout,
    /// No `pong` within `pong_timeout` (4005).
    PongTimeout,
    /// Slow consumer: the outbound queue overflowed (4008).
    SlowConsumer,
    /// Inbound rate limit exceeded (4009).
    RateLimited,
    /// Connection limit for this IP, user or node reached (4010).
    ConnectionLimit,
    /// Disconnected through the server API (4011).
    ApiDisconnect,
    /// The backend's connect proxy could not answer: down, slow or its breaker open (4012).
    BackendUnavailable,
    /// An application-defined code in 4000..=4999 given to `/api/disconnect`.
    Custom(u16),
}

impl CloseCode {
    pub const ALL: [CloseCode; 13] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::FrameTooLarge,
        CloseCode::Malformed,
        CloseCode::InvalidToken,
        CloseCode::TokenExpired,
        CloseCode::ConnectTimeout,
        CloseCode::PongTimeout,
        CloseCode::SlowConsumer,
        CloseCode::RateLimited,
        CloseCode::ConnectionLimit,
        CloseCode::ApiDisconnect,
        CloseCode::BackendUnavailable,
    ];

    pub fn as_u16(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::FrameTooLarge => 1009,
            CloseCode::Malformed => 4000,
            CloseCode::InvalidToken => 4001,
            CloseCode::TokenExpired => 4002,
            CloseCode::ConnectTimeout => 4004,
            CloseCode::PongTimeout => 4005,
            CloseCode::SlowConsumer => 4008,
            CloseCode::RateLimited => 4009,
            CloseCode::ConnectionLimit => 4010,
            CloseCode::ApiDisconnect => 4011,
            CloseCode::BackendUnavailable => 4012,
            CloseCode::Custom(code) => code,
        }
    }

    /// The short reason sent in `disconnect.reason` and the close frame.
    pub fn default_reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal closure",
            CloseCode::GoingAway => "server going away",
            CloseCode::FrameTooLarge => "frame too large",
            CloseCode::Malformed => "malformed frame or protocol violation",
            CloseCode::InvalidToken => "invalid token",
            CloseCode::TokenExpired => "token expired",
            CloseCode::ConnectTimeout => "no connect within connect_timeout",
            CloseCode::PongTimeout => "no pong within pong_timeout",
            CloseCode::SlowConsumer => "slow consumer",
            CloseCode::RateLimited => "inbound rate limit exceeded",
            CloseCode::ConnectionLimit => "connection limit reached",
            CloseCode::BackendUnavailable => "backend unavailable, retry later",
            CloseCode::ApiDisconnect | CloseCode::Custom(_) => "disconnected by the server API",
        }
    }

    /// The code for a number, if it is one a server may send (`Custom` for other 4xxx).
    pub fn from_u16(code: u16) -> Option<CloseCode> {
        CloseCode::ALL
            .into_iter()
            .find(|c| c.as_u16() == code)
            .or_else(|| {
                (4000..=4999)
                    .contains(&code)
                    .then_some(CloseCode::Custom(code))
            })
    }

    /// Whether PROTOCOL.md section 7 tells the client to reconnect after this code.
    pub fn reconnect(self) -> bool {
        !matches!(
            self,
            CloseCode::Normal
                | CloseCode::FrameTooLarge
                | CloseCode::Malformed
                | CloseCode::InvalidToken
        )
    }

    /// A stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            CloseCode::Normal => "1000",
            CloseCode::GoingAway => "1001",
            CloseCode::FrameTooLarge => "1009",
            CloseCode::Malformed => "4000",
            CloseCode::InvalidToken => "4001",
            CloseCode::TokenExpired => "4002",
            CloseCode::ConnectTimeout => "4004",
            CloseCode::PongTimeout => "4005",
            CloseCode::SlowConsumer => "4008",
            CloseCode::RateLimited => "4009",
            CloseCode::ConnectionLimit => "4010",
            CloseCode::ApiDisconnect => "4011",
            CloseCode::BackendUnavailable => "4012",
            CloseCode::Custom(_) => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_codes_do_not_reconnect() {
        let stop: Vec<u16> = CloseCode::ALL
            .iter()
            .filter(|c| !c.reconnect())
            .map(|c| c.as_u16())
            .collect();
        assert_eq!(stop, vec![1000, 1009, 4000, 4001]);
    }

    #[test]
    fn labels_match_numbers() {
        for code in CloseCode::ALL {
            assert_eq!(code.label(), code.as_u16().to_string());
            assert_eq!(CloseCode::from_u16(code.as_u16()), Some(code));
        }
        assert_eq!(CloseCode::from_u16(4100), Some(CloseCode::Custom(4100)));
        assert_eq!(CloseCode::from_u16(1002), None);
    }
}
