//! The membership loop: follows the hub's events for this node. Leaves update presence;
//! released channels are unsubscribed after `unsubscribe_delay_ms`, in batches per
//! pub/sub connection, unless they got local subscribers again; occupancy changes go to the
//! cluster-wide record when webhooks are on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::relay::ShardCommand;
use super::{RedisBroker, occupancy};
use crate::hub::HubEvent;
use crate::protocol::ChannelName;

/// Follows local membership: leaves update presence; released channels are unsubscribed
/// after `unsubscribe_delay_ms`, in batches per connection, unless they got local
/// subscribers again; occupancy changes go to the cluster-wide record when webhooks are
/// on.
pub(super) async fn events_loop(
    broker: Arc<RedisBroker>,
    mut events: mpsc::UnboundedReceiver<HubEvent>,
    stop: CancellationToken,
) {
    let delay = Duration::from_millis(broker.ctx.config.unsubscribe_delay_ms);
    let mut waiting: Vec<(tokio::time::Instant, ChannelName)> = Vec::new();
    let mut tick =
        tokio::time::interval(Duration::from_millis(100).min(delay.max(Duration::from_millis(10))));
    let ctx = &broker.ctx;
    let mut occupancy = occupancy::ClusterOccupancy::default();
    let webhooks = ctx.webhooks.enabled();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            event = events.recv() => match event {
                Some(HubEvent::Released(channel)) => {
                    // Kept if a new subscriber came meanwhile: its join and leave need it.
                    let hub = &broker.ctx.hub;
                    broker.ctx.presence_channels.remove_if(&channel, |c, _| !hub.has_subscribers(c));
                    if webhooks {
                        occupancy.reconcile(ctx, &channel).await;
                    }
                    waiting.push((tokio::time::Instant::now() + delay, channel));
                }
                Some(HubEvent::Occupied(channel)) => {
                    if webhooks {
                        occupancy.reconcile(ctx, &channel).await;
                    }
                }
                Some(HubEvent::Left { channel, client }) => broker.left(&channel, client).await,
                // Redis counts presence users itself (`RedisBroker::joined`).
                Some(HubEvent::Joined { .. }) => {}
                None => return,
            },
            _ = tick.tick() => {
                if webhooks {
                    occupancy.tick(ctx).await;
                }
                let now = tokio::time::Instant::now();
                let (due, later): (Vec<_>, Vec<_>) = waiting.drain(..).partition(|(at, _)| *at <= now);
                waiting = later;
                let mut by_shard: HashMap<usize, Vec<ChannelName>> = HashMap::new();
                for (_, channel) in due {
                    if !broker.ctx.hub.has_subscribers(&channel) {
                        by_shard.entry(broker.shard_of(&channel)).or_default().push(channel);
                    }
                }
                for (shard, channels) in by_shard {
                    let _ = broker.shards[shard].send(ShardCommand::Unsubscribe { channels });
                }
            }
        }
    }
}
