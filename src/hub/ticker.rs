//! The shared ticker: one task for the whole node that sends pings, closes clients that
//! missed a pong (4005), aborts writes stalled past `write_timeout`, and samples queue
//! depth. One scan per second instead of a timer per connection.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{ClientHandle, Dialect, Hub, HubSettings};
use crate::protocol::{CloseCode, ping_frame};

/// How often the ticker scans the clients.
const TICK: Duration = Duration::from_millis(500);

pub(super) async fn run(hub: Hub, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => tick(&hub),
        }
    }
}

/// What the ticker must do for one client.
enum Due {
    TokenExpired,
    Ping,
    PongTimeout,
    /// The write that started at this hub time is stalled.
    WriteTimeout(u64),
}

fn due(client: &ClientHandle, now: u64, settings: &HubSettings, unix_now: u64) -> Option<Due> {
    let (pong_timeout, write_timeout) = (settings.pong_timeout_ms, settings.write_timeout_ms);
    let expires_at = client.expires_at.load(Ordering::Relaxed);
    // A token may say it expires near the end of time: no overflow.
    if expires_at != 0 && unix_now > expires_at.saturating_add(settings.expiry_grace_secs) {
        return Some(Due::TokenExpired);
    }
    let write_started = client.write_started_ms.load(Ordering::Relaxed);
    if write_started != 0 && now.saturating_sub(write_started) > write_timeout {
        return Some(Due::WriteTimeout(write_started));
    }
    let ping_sent = client.ping_sent_ms.load(Ordering::Relaxed);
    if ping_sent != 0 && now.saturating_sub(ping_sent) > pong_timeout {
        return Some(Due::PongTimeout);
    }
    (ping_sent == 0 && now >= client.next_ping_ms.load(Ordering::Relaxed)).then_some(Due::Ping)
}

fn tick(hub: &Hub) {
    let settings = hub.settings();
    let now = hub.now_ms();
    let metrics = hub.metrics().clone();
    let limits = hub.queue_limits();
    // Collect first: no map lock is held while pushing into queues.
    let unix_now = crate::auth::unix_now();
    let due_clients = hub.clients_snapshot_where(|c| due(c, now, &settings, unix_now).is_some());
    for client in due_clients {
        match due(&client, now, &settings, unix_now) {
            Some(Due::TokenExpired) if client.renews_by_proxy() && hub.hand_to_renewal(&client) => {
            }
            Some(Due::TokenExpired) => {
                client.close(
                    CloseCode::TokenExpired,
                    CloseCode::TokenExpired.default_reason(),
                    true,
                );
            }
            Some(Due::Ping) => {
                metrics.queue_depth.observe(client.queue_len() as f64);
                // What pushes wrote straight to the socket is counted here at the
                // latest (the session counts it whenever it writes itself).
                let (frames, bytes) = client.take_direct_counts();
                if frames > 0 {
                    metrics.frames_sent.inc_by(frames);
                    metrics.bytes_sent.inc_by(bytes);
                }
                // An SSE stream has no way to answer: its heartbeat expects no pong.
                if client.dialect != Dialect::Sse {
                    client.ping_sent_ms.store(now.max(1), Ordering::Relaxed);
                }
                client.next_ping_ms.store(
                    now.saturating_add(settings.ping_interval_ms),
                    Ordering::Relaxed,
                );
                let ping = match client.dialect {
                    Dialect::Native => ping_frame(client.encoding),
                    Dialect::Pusher => crate::pusher::ping_frame(),
                    Dialect::Sse => crate::sse::wire::heartbeat_frame(),
                };
                let _ = hub.enqueue_within(&client, ping, limits);
            }
            Some(Due::PongTimeout) => {
                let closed_now = client.close(
                    CloseCode::PongTimeout,
                    CloseCode::PongTimeout.default_reason(),
                    true,
                );
                if closed_now {
                    metrics.limit_tripped("pong_timeout");
                }
            }
            Some(Due::WriteTimeout(started)) if client.abort_stalled_write(started) => {
                metrics.limit_tripped("write_timeout");
            }
            Some(Due::WriteTimeout(_)) | None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::FutureExt;

    use super::*;
    use crate::hub::ClientId;
    use crate::protocol::Encoding;

    /// The ticker found a write stalled, but it ended before the abort landed: the next
    /// write, healthy, must not be aborted by what is left of that notice.
    #[test]
    fn an_abort_that_lands_after_the_write_ended_does_not_abort_the_next_one() {
        let client = Arc::new(ClientHandle::new(
            ClientId(1),
            Arc::from(""),
            Encoding::Json,
            None,
            0,
            0,
        ));
        client.write_started(1_000);
        let started = client.write_started_ms.load(Ordering::Relaxed);
        // The session finishes the write just after the ticker's check ...
        client.write_finished();
        // ... and the ticker acts on what it saw.
        assert!(!client.abort_stalled_write(started));
        client.write_started(20_000);
        assert!(client.wait_for_abort().now_or_never().is_none());
        // A write that really is stalled is still aborted.
        assert!(client.abort_stalled_write(20_000));
        assert!(client.wait_for_abort().now_or_never().is_some());
    }
}
