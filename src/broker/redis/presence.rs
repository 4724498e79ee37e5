//! Cluster-wide presence in Redis: per channel, a sorted set of client ids scored by
//! expiry and a hash of their info. Each node refreshes the entries of its own clients,
//! so the clients of a crashed node vanish within `presence_ttl_secs`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::RelayContext;
use crate::broker::BrokerError;
use crate::protocol::{ChannelName, ClientInfo};

fn now_ms() -> u64 {
    super::now_ms()
}

/// Present clients of `channel`, dropping expired entries on the way.
pub(crate) async fn list(
    ctx: &RelayContext,
    channel: &ChannelName,
) -> Result<Vec<ClientInfo>, BrokerError> {
    let mut conn = ctx.commands()?;
    let zset = ctx.keys.presence_expiry(channel.as_str());
    let hash = ctx.keys.presence_info(channel.as_str());
    let now = now_ms();
    let (ids,): (Vec<String>,) = redis::pipe()
        .cmd("ZREMRANGEBYSCORE")
        .arg(&zset)
        .arg("-inf")
        .arg(now)
        .ignore()
        .cmd("ZRANGEBYSCORE")
        .arg(&zset)
        .arg(now)
        .arg("+inf")
        .query_async(&mut conn)
        .await
        .map_err(|e| ctx.failed("presence", &e))?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let infos: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(&hash)
        .arg(&ids)
        .query_async(&mut conn)
        .await
        .map_err(|e| ctx.failed("presence", &e))?;
    Ok(infos
        .into_iter()
        .flatten()
        .filter_map(|json| serde_json::from_str::<ClientInfo>(&json).ok())
        .collect())
}

/// Adds or refreshes `clients` in `channel`'s presence.
pub(crate) async fn add(
    ctx: &RelayContext,
    channel: &ChannelName,
    clients: &[ClientInfo],
) -> Result<(), BrokerError> {
    if clients.is_empty() {
        return Ok(());
    }
    let mut conn = ctx.commands()?;
    let zset = ctx.keys.presence_expiry(channel.as_str());
    let hash = ctx.keys.presence_info(channel.as_str());
    let ttl = Duration::from_secs(ctx.config.presence_ttl_secs);
    let expires = now_ms() + ttl.as_millis() as u64;
    let mut pipe = redis::pipe();
    for client in clients {
        let info = serde_json::to_string(client).unwrap_or_default();
        pipe.cmd("ZADD")
            .arg(&zset)
            .arg(expires)
            .arg(&client.client_id)
            .ignore();
        pipe.cmd("HSET")
            .arg(&hash)
            .arg(&client.client_id)
            .arg(info)
            .ignore();
    }
    pipe.cmd("EXPIRE")
        .arg(&zset)
        .arg(ttl.as_secs() * 2)
        .ignore();
    pipe.cmd("EXPIRE")
        .arg(&hash)
        .arg(ttl.as_secs() * 2)
        .ignore();
    pipe.query_async::<()>(&mut conn)
        .await
        .map_err(|e| ctx.failed("presence", &e))
}

/// Removes a client from `channel`'s presence.
pub(crate) async fn remove(
    ctx: &RelayContext,
    channel: &ChannelName,
    client_id: &str,
) -> Result<(), BrokerError> {
    let mut conn = ctx.commands()?;
    redis::pipe()
        .cmd("ZREM")
        .arg(ctx.keys.presence_expiry(channel.as_str()))
        .arg(client_id)
        .ignore()
        .cmd("HDEL")
        .arg(ctx.keys.presence_info(channel.as_str()))
        .arg(client_id)
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| ctx.failed("presence", &e))
}

/// Refreshes the presence entries of this node's clients every third of the TTL, and
/// forgets channels that lost their last local subscriber.
pub(crate) async fn refresh_loop(ctx: Arc<RelayContext>, stop: CancellationToken) {
    let every = Duration::from_millis((ctx.config.presence_ttl_secs * 1000 / 3).max(100));
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let channels: Vec<ChannelName> = ctx
            .presence_channels
            .iter()
            .map(|e| e.key().clone())
            .collect();
        for channel in channels {
            let clients: Vec<ClientInfo> = ctx
                .hub
                .subscribers(&channel)
                .iter()
                .map(|c| c.info_for_presence())
                .collect();
            if clients.is_empty() {
                continue;
            }
            if let Err(err) = add(&ctx, &channel, &clients).await {
                tracing::debug!(channel = %channel, error = %err, "presence refresh failed");
            }
        }
    }
}
