//! Presence webhooks on the Redis broker, held cluster-wide: a user's `leave` /
//! `member_removed` waits `webhooks.hold_ms` under a token in Redis, and the user's
//! return on any node within that time deletes the token and sends nothing, so neither
//! the release nor the arrival goes out (a page reload, or pusher-js reconnecting to
//! another node behind the load balancer, is invisible to the backend). The node that
//! held the release confirms it after the hold (`scripts::CONFIRM_VACATED`, the same
//! token check occupancy uses) and sends it only if the token is still its own.
//!
//! Exactly one node sees each user arrive and leave (the presence scripts decide), so
//! exactly one node sends each event. When Redis fails, the event falls back to this
//! node's own hold (`Webhooks::emit`).

use std::sync::Arc;

use super::{RelayContext, scripts};
use crate::broker::occupancy::presence_event;
use crate::broker::presence::user_key;
use crate::protocol::{ChannelName, ClientInfo};

/// Sends (or holds) the webhook of `client`'s user joining or leaving `channel`.
pub(crate) async fn emit(
    ctx: &Arc<RelayContext>,
    channel: &ChannelName,
    client: &ClientInfo,
    joined: bool,
) {
    let Some((target, event)) = presence_event(&ctx.webhooks, channel, client, joined) else {
        return;
    };
    let hold = ctx.webhooks.hold();
    if hold.is_zero() {
        return ctx.webhooks.emit_unheld(&target, event);
    }
    let key = ctx
        .keys
        .presence_release(channel.as_str(), &user_key(client));
    let Ok(mut conn) = ctx.commands() else {
        return ctx.webhooks.emit(&target, event);
    };
    if joined {
        match redis::cmd("DEL")
            .arg(&key)
            .query_async::<i64>(&mut conn)
            .await
        {
            // The user came back within the hold: neither event is sent.
            Ok(1) => ctx.webhooks.count_cancelled(&target, 2),
            Ok(_) => ctx.webhooks.emit_unheld(&target, event),
            Err(err) => {
                ctx.failed("presence", &err);
                ctx.webhooks.emit(&target, event);
            }
        }
        return;
    }
    let token = format!("{}-{:016x}", ctx.node_id, rand::random::<u64>());
    // Outlives the hold generously, so a slow confirm still finds it.
    let ttl_ms = hold.as_millis() as u64 * 2 + 10_000;
    let stored = redis::cmd("SET")
        .arg(&key)
        .arg(&token)
        .arg("PX")
        .arg(ttl_ms)
        .query_async::<()>(&mut conn)
        .await;
    if let Err(err) = stored {
        ctx.failed("presence", &err);
        return ctx.webhooks.emit(&target, event);
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        let confirmed = match ctx.commands() {
            Ok(mut conn) => scripts::CONFIRM_VACATED
                .key(&key)
                .arg(&token)
                .invoke_async::<i64>(&mut conn)
                .await
                .map_err(|err| ctx.failed("presence", &err)),
            Err(_) => Ok(1),
        };
        // Sent unless a return took the token; a Redis failure sends it (a missed
        // removal would leave a ghost member).
        if !matches!(confirmed, Ok(0)) {
            ctx.webhooks.emit_unheld(&target, event);
        }
    });
}
