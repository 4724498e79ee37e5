//! Epochs: the name of one life of a channel's stream.
//!
//! A stream gets a random epoch when its first publication creates it. A channel nobody
//! published to has no stream, and reading it stores nothing: it reports offset 0 and a
//! *no-stream epoch* that encodes when it was read. Random epochs have their top bit
//! set, no-stream epochs never do, so the two cannot be confused.
//!
//! A client that subscribed to an empty channel holds `(0, no-stream epoch)`. When it
//! recovers, it missed nothing but the stream's messages if the stream was created
//! after it looked, still holds its first message, and no stream created since can have
//! expired (the look is younger than the stream lifetime): then recovery is complete.

use std::time::Duration;

use crate::protocol::StreamPosition;

/// A fresh random epoch (16 hex characters, top bit set).
pub(crate) fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>() | (1 << 63))
}

/// The epoch reported for a channel without a stream, read at `now_ms`.
pub(crate) fn no_stream_epoch(now_ms: u64) -> String {
    format!("{:016x}", now_ms & !(1 << 63))
}

/// When a no-stream epoch was read (ms since the Unix epoch), or `None` for a real one.
fn no_stream_read_at(epoch: &str) -> Option<u64> {
    let value = u64::from_str_radix(epoch, 16).ok()?;
    (epoch.len() == 16 && value & (1 << 63) == 0).then_some(value)
}

/// The position of a channel without a stream.
pub(crate) fn no_stream_position(now_ms: u64) -> StreamPosition {
    StreamPosition {
        offset: 0,
        epoch: no_stream_epoch(now_ms),
    }
}

/// Whether a client at `from` missed nothing but a stream's retained messages: `from`
/// is a no-stream position read before the stream was created at `created_ms`, no
/// longer ago than `lifetime` (no stream created since can have expired), and the
/// stream still holds its first message (`complete_from_start`).
pub(crate) fn recovers_into_new_stream(
    from: &StreamPosition,
    created_ms: u64,
    complete_from_start: bool,
    lifetime: Duration,
    now_ms: u64,
) -> bool {
    let Some(read_at) = no_stream_read_at(&from.epoch) else {
        return false;
    };
    let lifetime_ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
    from.offset == 0
        && complete_from_start
        && read_at <= created_ms
        && now_ms.saturating_sub(read_at) <= lifetime_ms
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_and_no_stream_epochs_never_meet() {
        for _ in 0..100 {
            let epoch = new_epoch();
            assert_eq!(epoch.len(), 16);
            assert_eq!(no_stream_read_at(&epoch), None);
        }
        let empty = no_stream_epoch(1_700_000_000_000);
        assert_eq!(empty.len(), 16);
        assert_eq!(no_stream_read_at(&empty), Some(1_700_000_000_000));
    }

    #[test]
    fn recovery_into_a_new_stream_needs_a_recent_look_before_its_creation() {
        let lifetime = Duration::from_secs(300);
        let from = no_stream_position(10_000);
        assert!(recovers_into_new_stream(
            &from, 10_500, true, lifetime, 20_000
        ));
        // Created before the look: another stream's life was missed.
        assert!(!recovers_into_new_stream(
            &from, 9_000, true, lifetime, 20_000
        ));
        // First message gone.
        assert!(!recovers_into_new_stream(
            &from, 10_500, false, lifetime, 20_000
        ));
        // Looked too long ago: a stream may have come and gone.
        assert!(!recovers_into_new_stream(
            &from, 10_500, true, lifetime, 400_000
        ));
        let real = StreamPosition {
            offset: 0,
            epoch: new_epoch(),
        };
        assert!(!recovers_into_new_stream(
            &real, 10_500, true, lifetime, 20_000
        ));
    }
}
