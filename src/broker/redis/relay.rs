//! The pub/sub side of the Redis broker: a small pool of connections (one on a Cluster),
//! each owned by one task that subscribes the topics of the channels hashed to it, reads
//! what Redis pushes, and hands publications to the hub in the order they arrive.
//!
//! A connection that drops, or that silently stops delivering (a probe sent to itself
//! does not come back within `probe_interval_ms`; on a Cluster there is a probe per
//! master, see `probe`), is replaced and every topic it owned is subscribed again in one
//! batch; clients recover what they missed through offsets.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::RelayContext;
use super::conn::PubSubConn;
use super::probe::{self, Probes};
use crate::broker::BrokerError;
use crate::protocol::ChannelName;

/// Work for one pub/sub connection's task.
pub(crate) enum ShardCommand {
    Subscribe {
        topics: Vec<String>,
        done: oneshot::Sender<Result<(), BrokerError>>,
    },
    /// Unsubscribe these channels unless they got local subscribers again meanwhile.
    Unsubscribe { channels: Vec<ChannelName> },
}

/// How a connected period ended.
enum Ended {
    Stop,
    Reconnect,
}

/// Runs one pub/sub connection until `stop`.
pub(crate) async fn run_shard(
    ctx: Arc<RelayContext>,
    index: usize,
    mut commands: mpsc::UnboundedReceiver<ShardCommand>,
    stop: CancellationToken,
) {
    let mut probes = Probes::new(probe::targets(&ctx, index, &[]).await);
    let mut wanted: HashSet<String> = probes.targets().iter().map(|t| t.topic.clone()).collect();
    if index == 0 {
        wanted.insert(ctx.keys.control());
    }
    let mut backoff = Duration::from_millis(100);
    let mut connected_before = false;
    loop {
        let (tx, rx) = mpsc::channel::<PushInfo>(ctx.config.handoff_buffer);
        let handoff = Arc::new(Handoff::new(ctx.config.handoff_buffer_bytes));
        let metrics = ctx.hub.metrics().clone();
        let held = handoff.clone();
        let sender = move |info: PushInfo| {
            let size = push_size(&info);
            if !held.take(size) {
                held.dropped(&metrics, index, size);
            } else if tx.try_send(info).is_err() {
                held.give_back(size);
                held.dropped(&metrics, index, size);
            }
            Ok::<(), redis::aio::SendError>(())
        };
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            conn = ctx.connector.pubsub(sender) => conn,
        };
        let started = Instant::now();
        let mut conn = match connected {
            Ok(conn) => conn,
            Err(err) => {
                ctx.pubsub_failed(index, &err.to_string());
                if wait_offline(&ctx, &mut commands, &mut wanted, jittered(backoff), &stop).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let topics: Vec<String> = wanted.iter().cloned().collect();
        if let Err(err) = subscribe_batched(&mut conn, &topics).await {
            ctx.pubsub_failed(index, &err.to_string());
            if wait_offline(&ctx, &mut commands, &mut wanted, jittered(backoff), &stop).await {
                return;
            }
            continue;
        }
        if connected_before {
            // Publications made while the connection was down show up as a gap only
            // with the next one: look at the end of every followed stream now.
            ctx.catch_up(index).await;
            let metrics = ctx.hub.metrics();
            metrics.redis_reconnects.inc();
            metrics
                .redis_resubscribe_seconds
                .observe(started.elapsed().as_secs_f64());
            tracing::info!(
                shard = index,
                topics = topics.len(),
                "redis pub/sub reconnected and resubscribed"
            );
        }
        connected_before = true;
        ctx.connections.fetch_add(1, Ordering::AcqRel);
        if index == 0 {
            ctx.joined.notify_one();
        }
        backoff = Duration::from_millis(100);
        ctx.shard_up[index].store(true, Ordering::Release);
        probes = Probes::new(probes.targets().to_vec());
        let ended = serve(
            &ctx,
            index,
            &mut conn,
            (rx, &handoff),
            &mut commands,
            (&mut wanted, &mut probes),
            &stop,
        )
        .await;
        ctx.shard_up[index].store(false, Ordering::Release);
        if matches!(ended, Ended::Stop) {
            return;
        }
    }
}

async fn subscribe_batched(conn: &mut PubSubConn, topics: &[String]) -> redis::RedisResult<()> {
    for chunk in topics.chunks(500) {
        conn.subscribe(chunk).await?;
    }
    Ok(())
}

/// Waits out a backoff while Redis is unreachable, answering commands at once so no
/// subscriber hangs. Returns true when the node is stopping.
async fn wait_offline(
    ctx: &RelayContext,
    commands: &mut mpsc::UnboundedReceiver<ShardCommand>,
    wanted: &mut HashSet<String>,
    backoff: Duration,
    stop: &CancellationToken,
) -> bool {
    let sleep = tokio::time::sleep(backoff);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return true,
            _ = &mut sleep => return false,
            command = commands.recv() => match command {
                None => return true,
                Some(ShardCommand::Subscribe { done, .. }) => {
                    let _ = done.send(Err(BrokerError::Unavailable("redis is unreachable".into())));
                }
                Some(ShardCommand::Unsubscribe { channels }) => {
                    for channel in channels.iter().filter(|c| !ctx.hub.has_subscribers(c)) {
                        wanted.remove(&ctx.keys.topic(channel.as_str()));
                        ctx.positions.remove(channel);
                    }
                }
            },
        }
    }
}

async fn serve(
    ctx: &RelayContext,
    index: usize,
    conn: &mut PubSubConn,
    (mut pushes, handoff): (mpsc::Receiver<PushInfo>, &Handoff),
    commands: &mut mpsc::UnboundedReceiver<ShardCommand>,
    (wanted, probes): (&mut HashSet<String>, &mut Probes),
    stop: &CancellationToken,
) -> Ended {
    let probe_every = Duration::from_millis(ctx.config.probe_interval_ms);
    let mut probe = tokio::time::interval(probe_every);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    probe.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ended::Stop,
            push = pushes.recv() => {
                let Some(push) = push else { return Ended::Reconnect };
                handoff.give_back(push_size(&push));
                match push.kind {
                    PushKind::Disconnection => {
                        tracing::warn!(shard = index, "redis pub/sub connection lost");
                        return Ended::Reconnect;
                    }
                    PushKind::SUnsubscribe if dropped_by_server(&push.data, wanted) => {
                        // A Cluster master gave up the slot (failover, resharding) and
                        // dropped its subscribers: the topics move with a new connection.
                        tracing::warn!(shard = index, "redis cluster dropped a shard subscription; resubscribing");
                        return Ended::Reconnect;
                    }
                    PushKind::Message | PushKind::SMessage => {
                        let Some((topic, message)) = topic_and_message(&push.data) else { continue };
                        if !probes.echoed(&topic) {
                            ctx.on_message(&topic, &message).await;
                        }
                    }
                    _ => {}
                }
            }
            command = commands.recv() => match command {
                None => return Ended::Stop,
                Some(command) => {
                    if let Err(err) = execute(ctx, conn, command, wanted).await {
                        ctx.pubsub_failed(index, &err.to_string());
                        return Ended::Reconnect;
                    }
                }
            },
            _ = probe.tick() => {
                if let Some(watches) = probes.overdue(probe_every) {
                    ctx.hub.metrics().redis_errors.with_label_values(&["pubsub"]).inc();
                    tracing::warn!(shard = index, watches, "redis pub/sub connection stopped delivering; reconnecting");
                    return Ended::Reconnect;
                }
                if !probes.waiting() {
                    if let Err(err) = probe_round(ctx, index, conn, wanted, probes).await {
                        ctx.pubsub_failed(index, &err.to_string());
                        return Ended::Reconnect;
                    }
                }
            }
        }
    }
}

/// Follows the probe targets (the Cluster's masters may have changed), then sends one
/// probe to each of them at once.
async fn probe_round(
    ctx: &RelayContext,
    index: usize,
    conn: &mut PubSubConn,
    wanted: &mut HashSet<String>,
    probes: &mut Probes,
) -> redis::RedisResult<()> {
    let targets = probe::targets(ctx, index, probes.targets()).await;
    let (added, removed) = probes.retarget(targets);
    // In `wanted` first: if subscribing fails, the next connection subscribes them.
    wanted.extend(added.iter().cloned());
    conn.subscribe(&added).await?;
    for topic in &removed {
        wanted.remove(topic);
    }
    conn.unsubscribe(&removed).await?;
    let sends = probes
        .targets()
        .iter()
        .map(|target| async move { (target.topic.clone(), ctx.send_probe(&target.topic).await) });
    for (topic, counts) in futures_util::future::join_all(sends).await {
        if counts {
            probes.sent(&topic);
        }
    }
    Ok(())
}

async fn execute(
    ctx: &RelayContext,
    conn: &mut PubSubConn,
    command: ShardCommand,
    wanted: &mut HashSet<String>,
) -> redis::RedisResult<()> {
    match command {
        ShardCommand::Subscribe { topics, done } => {
            let new: Vec<String> = topics.into_iter().filter(|t| !wanted.contains(t)).collect();
            match conn.subscribe(&new).await {
                Ok(()) => {
                    wanted.extend(new);
                    let _ = done.send(Ok(()));
                    Ok(())
                }
                Err(err) => {
                    let _ = done.send(Err(BrokerError::Unavailable(format!(
                        "redis subscribe failed: {err}"
                    ))));
                    Err(err)
                }
            }
        }
        ShardCommand::Unsubscribe { channels } => {
            let idle: Vec<&ChannelName> = channels
                .iter()
                .filter(|c| !ctx.hub.has_subscribers(c))
                .collect();
            let topics: Vec<String> = idle
                .iter()
                .map(|c| ctx.keys.topic(c.as_str()))
                .filter(|t| wanted.contains(t))
                .collect();
            for channel in idle {
                ctx.positions.remove(channel);
            }
            conn.unsubscribe(&topics).await?;
            for topic in &topics {
                wanted.remove(topic);
            }
            Ok(())
        }
    }
}

/// Whether a pushed `sunsubscribe` is for a topic still wanted (not one we left).
fn dropped_by_server(data: &[Value], wanted: &HashSet<String>) -> bool {
    match data.first() {
        Some(Value::BulkString(bytes)) => {
            std::str::from_utf8(bytes).is_ok_and(|t| wanted.contains(t))
        }
        Some(Value::SimpleString(s)) => wanted.contains(s),
        _ => false,
    }
}

/// The topic and payload of a pushed `message`/`smessage`.
fn topic_and_message(data: &[Value]) -> Option<(String, Vec<u8>)> {
    let topic = match data.first()? {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok()?,
        Value::SimpleString(s) => s.clone(),
        _ => return None,
    };
    let message = match data.get(1)? {
        Value::BulkString(bytes) => bytes.clone(),
        Value::SimpleString(s) => s.clone().into_bytes(),
        _ => return None,
    };
    Some((topic, message))
}

/// The byte bound of one connection's hand-off buffer (its count bound is the channel's
/// capacity), and the rate-limited warning for what it drops.
struct Handoff {
    max_bytes: usize,
    held: AtomicUsize,
    last_warning_ms: AtomicU64,
}

impl Handoff {
    fn new(max_bytes: usize) -> Self {
        Handoff {
            max_bytes,
            held: AtomicUsize::new(0),
            last_warning_ms: AtomicU64::new(0),
        }
    }

    /// Reserves `size` bytes; false (and nothing reserved) when they do not fit.
    fn take(&self, size: usize) -> bool {
        let before = self.held.fetch_add(size, Ordering::AcqRel);
        if before.saturating_add(size) > self.max_bytes {
            self.give_back(size);
            return false;
        }
        true
    }

    fn give_back(&self, size: usize) {
        self.held.fetch_sub(size, Ordering::AcqRel);
    }

    /// Counts a dropped message, and warns at most once a second with the total so far.
    fn dropped(&self, metrics: &crate::metrics::Metrics, shard: usize, size: usize) {
        metrics.relay_dropped.inc();
        metrics.limit_tripped("relay_handoff");
        let now = super::epoch::now_ms();
        let last = self.last_warning_ms.load(Ordering::Acquire);
        if now.saturating_sub(last) >= 1_000
            && self
                .last_warning_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            tracing::warn!(
                shard,
                bytes = size,
                held_bytes = self.held.load(Ordering::Acquire),
                dropped_total = metrics.relay_dropped.get(),
                "relay hand-off buffer full; dropping messages from Redis (history channels fill the gap from history, others lose them)"
            );
        }
    }
}

/// The bytes a pushed message holds.
fn push_size(push: &PushInfo) -> usize {
    push.data
        .iter()
        .map(|value| match value {
            Value::BulkString(bytes) => bytes.len(),
            Value::SimpleString(s) => s.len(),
            _ => 0,
        })
        .sum()
}

/// `backoff` spread over [backoff / 2, backoff * 3 / 2): nodes that lost Redis together
/// do not all come back in the same millisecond.
fn jittered(backoff: Duration) -> Duration {
    backoff.mul_f64(0.5 + rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_backoffs_are_spread() {
        let backoff = Duration::from_millis(800);
        let waits: Vec<Duration> = (0..64).map(|_| jittered(backoff)).collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= backoff / 2 && *w < backoff * 3 / 2)
        );
        let distinct: std::collections::HashSet<Duration> = waits.iter().copied().collect();
        assert!(distinct.len() > 32, "{distinct:?}");
    }
}
