//! The shared ticker: one task for the whole node that sends pings, closes clients that
//! missed a pong (4005), aborts writes stalled past `write_timeout`, and samples queue
//! depth. One scan every `TICK` (500 ms) instead of a timer per connection.

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
    // The same pass lets go of the queue buffers that busy clients kept and no longer use.
    let due_clients = hub.clients_snapshot_where(|c| {
        c.trim_idle_queue();
        due(c, now, &settings, unix_now).is_some()
    });
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
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::hub::{ClientId, QueueLimits};
    use crate::metrics::Metrics;
    use crate::protocol::Encoding;

    const PING_MS: u64 = 1_000;
    const PONG_MS: u64 = 400;
    const WRITE_MS: u64 = 2_000;

    fn settings() -> HubSettings {
        HubSettings {
            queue: QueueLimits {
                max_messages: 100,
                max_bytes: 1 << 20,
            },
            ping_interval_ms: PING_MS,
            pong_timeout_ms: PONG_MS,
            write_timeout_ms: WRITE_MS,
            expiry_grace_secs: 10,
            max_batch_bytes: 1 << 16,
            write_delay_ms: 0,
            max_messages_per_frame: 0,
            shards: 1,
        }
    }

    /// A hub on the paused clock, and one native client registered at time 0.
    fn hub_with_client() -> (Hub, Arc<ClientHandle>, CancellationToken) {
        let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
        let hub = Hub::start(settings(), Arc::new(Metrics::new()), &tracker, stop.clone());
        let client = hub.register(Arc::from("u"), Encoding::Json, None);
        (hub, client, stop)
    }

    /// Moves the paused clock `ms` on; the ticker runs every tick on the way.
    async fn pass(ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn due_follows_the_hub_clock() {
        let (hub, client, stop) = hub_with_client();
        let settings = settings();
        let due_now = |unix_now| due(&client, hub.now_ms(), &settings, unix_now);
        assert!(due_now(0).is_none());
        tokio::time::advance(Duration::from_millis(PING_MS)).await;
        assert!(matches!(due_now(0), Some(Due::Ping)));
        // A ping is out: nothing is due until the pong is late.
        client.ping_sent_ms.store(hub.now_ms(), Ordering::Relaxed);
        tokio::time::advance(Duration::from_millis(PONG_MS)).await;
        assert!(due_now(0).is_none());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(matches!(due_now(0), Some(Due::PongTimeout)));
        client.pong_received();
        // A write in progress past the write timeout comes first.
        client.write_started(hub.now_ms());
        tokio::time::advance(Duration::from_millis(WRITE_MS + 1)).await;
        let started = client.write_started_ms.load(Ordering::Relaxed);
        assert!(matches!(due_now(0), Some(Due::WriteTimeout(s)) if s == started));
        client.write_finished();
        // An expired token, past its grace, comes before everything.
        client.set_expires_at(1_000);
        assert!(matches!(due_now(1_010), Some(Due::Ping)));
        assert!(matches!(due_now(1_011), Some(Due::TokenExpired)));
        // A token that says it expires at the end of time does not overflow.
        client.set_expires_at(u64::MAX);
        assert!(matches!(due_now(u64::MAX), Some(Due::Ping)));
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn the_ticker_pings_then_closes_a_client_that_does_not_answer() {
        let (_hub, client, stop) = hub_with_client();
        // Ticks at 0 and 500 ms: nothing due yet.
        pass(PING_MS - 100).await;
        assert_eq!(client.queue_len(), 0);
        // The tick at 1000 ms queues a ping ...
        pass(200).await;
        assert_eq!(client.queue_len(), 1);
        assert!(client.closing().is_none());
        // ... and the one at 1500 ms, past the pong timeout, closes with 4005.
        pass(500).await;
        let closing = client.closing().map(|c| c.code);
        assert_eq!(closing, Some(CloseCode::PongTimeout));
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_answers_is_pinged_again_and_stays() {
        let (_hub, client, stop) = hub_with_client();
        // Ticks at 0, 500 and 1000 ms: the last one pings.
        pass(PING_MS + 100).await;
        assert_eq!(client.queue_len(), 1);
        client.pong_received();
        // Ticks at 1500 (nothing due) and 2000 ms: the next ping.
        pass(PING_MS).await;
        assert_eq!(client.queue_len(), 2);
        assert!(client.closing().is_none());
        stop.cancel();
    }

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
