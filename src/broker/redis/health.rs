//! The health loop: keeps the command connection alive (reconnects, PING every 500 ms
//! within the command timeout) and `pushwire_redis_up` true to life.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::RelayContext;

/// Keeps the command connection alive and `redis_up` true to life.
pub(super) async fn health_loop(ctx: Arc<RelayContext>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_millis(500));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let existing = ctx.commands.read().clone();
        let conn = match existing {
            Some(conn) => Some(conn),
            None => match ctx.connector.commands().await {
                Ok(conn) => {
                    *ctx.commands.write() = Some(conn.clone());
                    Some(conn)
                }
                Err(err) => {
                    ctx.hub
                        .metrics()
                        .redis_errors
                        .with_label_values(&["control"])
                        .inc();
                    *ctx.last_error.lock() = Some(err.to_string());
                    None
                }
            },
        };
        let ok = match conn {
            Some(mut conn) => {
                let cmd = redis::cmd("PING");
                let ping = cmd.query_async::<String>(&mut conn);
                matches!(
                    tokio::time::timeout(
                        Duration::from_millis(ctx.config.command_timeout_ms),
                        ping
                    )
                    .await,
                    Ok(Ok(_))
                )
            }
            None => false,
        };
        let was_up = ctx.commands_up.swap(ok, Ordering::AcqRel);
        if was_up != ok {
            if ok {
                tracing::info!("redis reachable");
            } else {
                tracing::warn!(reason = ?ctx.last_error.lock().clone(), "redis unreachable");
            }
        }
        let all_up = ok && ctx.shard_up.iter().all(|s| s.load(Ordering::Acquire));
        ctx.hub.metrics().redis_up.set(i64::from(all_up));
    }
}
