//! Cluster-wide occupancy for webhooks: per channel, a Redis set of the ids of the nodes
//! where it has subscribers, changed only by Lua scripts (`scripts::OCCUPY`, `VACATE`),
//! so exactly one node sees a channel go from no node to one (it sends
//! `channel_occupied`) and from one to none (it sends `channel_vacated`).
//!
//! - The vacated is held `webhooks.hold_ms` with a token in Redis; any node that
//!   re-occupies the channel meanwhile deletes the token, and the holder, finding it
//!   gone, sends nothing (and neither does the re-occupier).
//! - Each node keeps an alive key (TTL `node_timeout_ms`) and the list of channels it
//!   holds. Every node looks for nodes whose alive key expired and removes them from
//!   their channels' sets on their behalf (the scripts make that exactly-once too), so
//!   the channels of a crashed node get vacated.
//! - A script that failed (Redis down) is retried on the next tick from the hub's state.
//! - A node that stalled past `node_timeout_ms` finds its alive key gone and records its
//!   channels again; the others may have vacated them meanwhile (an occupied follows).

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;

use super::{RelayContext, scripts};
use crate::broker::BrokerError;
use crate::protocol::ChannelName;
use crate::webhook::WebhookEvent;

/// The occupancy state of one node's broker event task.
#[derive(Default)]
pub(crate) struct ClusterOccupancy {
    /// Channels this node is recorded in, in Redis.
    registered: HashSet<ChannelName>,
    /// Channels whose last script failed, retried on the next tick.
    retry: HashSet<ChannelName>,
    /// Held `channel_vacated`s: when, which channel, and the token that proves nobody
    /// came back.
    held: Vec<(Instant, ChannelName, String)>,
    next_sweep: Option<Instant>,
    /// Whether this node's alive key was set once (so a missing one means it expired).
    alive_once: bool,
}

impl ClusterOccupancy {
    /// Brings Redis in line with the hub for `channel`, sending what changed.
    pub(crate) async fn reconcile(&mut self, ctx: &RelayContext, channel: &ChannelName) {
        let now = ctx.hub.has_subscribers(channel);
        if now == self.registered.contains(channel) {
            self.retry.remove(channel);
            return;
        }
        let result = if now {
            occupy(ctx, channel).await
        } else {
            vacate(ctx, channel, &ctx.node_id).await.map(|held| {
                self.held.extend(held);
            })
        };
        match result {
            Ok(()) => {
                self.retry.remove(channel);
                if now {
                    self.registered.insert(channel.clone());
                } else {
                    self.registered.remove(channel);
                }
            }
            Err(err) => {
                tracing::debug!(channel = %channel, error = %err, "occupancy update failed; will retry");
                self.retry.insert(channel.clone());
            }
        }
    }

    /// Every 100 ms or so: retries, confirms held vacated events that are due, refreshes
    /// this node's alive key and cleans up after dead nodes (every heartbeat interval).
    pub(crate) async fn tick(&mut self, ctx: &RelayContext) {
        for channel in std::mem::take(&mut self.retry) {
            self.reconcile(ctx, &channel).await;
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        self.held = later;
        for (_, channel, token) in due {
            confirm(ctx, &channel, &token).await;
        }
        if self.next_sweep.is_some_and(|at| at > now) {
            return;
        }
        self.next_sweep = Some(now + Duration::from_millis(ctx.config.heartbeat_interval_ms));
        match refresh_alive(ctx).await {
            Ok(true) => self.alive_once = true,
            Ok(false) if self.alive_once => {
                // Stalled past node_timeout_ms: other nodes may have vacated this node's
                // channels on its behalf. Record them again (an occupied goes out where
                // a vacated did).
                tracing::warn!(
                    channels = self.registered.len(),
                    "this node's alive key had expired; recording its channels again"
                );
                self.retry.extend(self.registered.drain());
            }
            Ok(false) => self.alive_once = true,
            Err(err) => {
                tracing::debug!(error = %err, "cannot refresh the node's alive key");
                return;
            }
        }
        match reap_dead_nodes(ctx).await {
            Ok(held) => self.held.extend(held),
            Err(err) => tracing::debug!(error = %err, "occupancy cleanup failed"),
        }
    }
}

/// Records this node in `channel`'s set; sends `channel_occupied` if it was the first.
async fn occupy(ctx: &RelayContext, channel: &ChannelName) -> Result<(), BrokerError> {
    let mut conn = ctx.commands()?;
    let name = channel.as_str();
    // The index first: a crash between the two leaves a harmless extra entry, never a
    // set member that nobody would clean up. The alive key with it: a node listed in the
    // index without one is taken for dead.
    redis::pipe()
        .cmd("SET")
        .arg(ctx.keys.node_alive(&ctx.node_id))
        .arg(1)
        .arg("PX")
        .arg(ctx.config.node_timeout_ms)
        .ignore()
        .cmd("SADD")
        .arg(ctx.keys.occupancy_nodes())
        .arg(&ctx.node_id)
        .ignore()
        .cmd("SADD")
        .arg(ctx.keys.node_channels(&ctx.node_id))
        .arg(name)
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| ctx.failed("occupancy", &e))?;
    let outcome: i64 = scripts::OCCUPY
        .key(ctx.keys.occupancy(name))
        .key(ctx.keys.vacating(name))
        .arg(&ctx.node_id)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| ctx.failed("occupancy", &e))?;
    if outcome == 1 {
        let (target, shown) = ctx.webhooks.target_of(channel);
        ctx.webhooks
            .emit_unheld(&target, WebhookEvent::channel_occupied(&shown));
    }
    Ok(())
}

/// Removes `node` from `channel`'s set; when that vacated it, sends `channel_vacated`
/// or returns the hold to confirm later.
async fn vacate(
    ctx: &RelayContext,
    channel: &ChannelName,
    node: &str,
) -> Result<Option<(Instant, ChannelName, String)>, BrokerError> {
    let mut conn = ctx.commands()?;
    let name = channel.as_str();
    let hold = ctx.webhooks.hold();
    let token = format!("{}-{:016x}", ctx.node_id, rand::random::<u64>());
    // The token outlives the hold generously, so a slow confirm still finds it; it only
    // matters (by suppressing one `channel_occupied`) if the holder died meanwhile.
    let token_ttl_ms = if hold.is_zero() {
        0
    } else {
        hold.as_millis() as u64 * 2 + 10_000
    };
    let outcome: i64 = scripts::VACATE
        .key(ctx.keys.occupancy(name))
        .key(ctx.keys.vacating(name))
        .arg(node)
        .arg(&token)
        .arg(token_ttl_ms)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| ctx.failed("occupancy", &e))?;
    redis::cmd("SREM")
        .arg(ctx.keys.node_channels(node))
        .arg(name)
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| ctx.failed("occupancy", &e))?;
    match outcome {
        1 => {
            let (target, shown) = ctx.webhooks.target_of(channel);
            ctx.webhooks
                .emit_unheld(&target, WebhookEvent::channel_vacated(&shown));
            Ok(None)
        }
        2 => Ok(Some((Instant::now() + hold, channel.clone(), token))),
        _ => Ok(None),
    }
}

/// Sends a held `channel_vacated` unless someone came back (the token is gone).
async fn confirm(ctx: &RelayContext, channel: &ChannelName, token: &str) {
    let Ok(mut conn) = ctx.commands() else {
        return;
    };
    let result: Result<i64, _> = scripts::CONFIRM_VACATED
        .key(ctx.keys.vacating(channel.as_str()))
        .arg(token)
        .invoke_async(&mut conn)
        .await;
    let (target, shown) = ctx.webhooks.target_of(channel);
    match result {
        Ok(1) => ctx
            .webhooks
            .emit_unheld(&target, WebhookEvent::channel_vacated(&shown)),
        Ok(_) => ctx.webhooks.count_cancelled(&target, 2),
        Err(err) => {
            ctx.failed("occupancy", &err);
        }
    }
}

/// Sets this node's alive key again; returns whether it still existed.
async fn refresh_alive(ctx: &RelayContext) -> Result<bool, BrokerError> {
    let mut conn = ctx.commands()?;
    let previous: Option<String> = redis::cmd("SET")
        .arg(ctx.keys.node_alive(&ctx.node_id))
        .arg(1)
        .arg("PX")
        .arg(ctx.config.node_timeout_ms)
        .arg("GET")
        .query_async(&mut conn)
        .await
        .map_err(|e| ctx.failed("occupancy", &e))?;
    Ok(previous.is_some())
}

/// Removes the nodes whose alive key expired from every occupancy set they are in.
async fn reap_dead_nodes(
    ctx: &RelayContext,
) -> Result<Vec<(Instant, ChannelName, String)>, BrokerError> {
    let mut conn = ctx.commands()?;
    let nodes: Vec<String> = redis::cmd("SMEMBERS")
        .arg(ctx.keys.occupancy_nodes())
        .query_async(&mut conn)
        .await
        .map_err(|e| ctx.failed("occupancy", &e))?;
    let mut held = Vec::new();
    for node in nodes.iter().filter(|n| **n != ctx.node_id) {
        let alive: bool = redis::cmd("EXISTS")
            .arg(ctx.keys.node_alive(node))
            .query_async(&mut conn)
            .await
            .map_err(|e| ctx.failed("occupancy", &e))?;
        if alive {
            continue;
        }
        let channels: Vec<String> = redis::cmd("SMEMBERS")
            .arg(ctx.keys.node_channels(node))
            .query_async(&mut conn)
            .await
            .map_err(|e| ctx.failed("occupancy", &e))?;
        tracing::info!(node = %node, channels = channels.len(), "cleaning up the occupancy of a dead node");
        for channel in channels.iter().filter_map(|c| super::stored_channel(c)) {
            held.extend(vacate(ctx, &channel, node).await?);
        }
        redis::cmd("SREM")
            .arg(ctx.keys.occupancy_nodes())
            .arg(node)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| ctx.failed("occupancy", &e))?;
    }
    Ok(held)
}
