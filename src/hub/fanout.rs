//! Fan-out workers: one per shard, each owning the delivery to its slice of the clients.
//!
//! Architecture Invariant: a client belongs to exactly one shard and every shard handles
//! its jobs in order, so every client sees a channel's publications in the order they
//! were dispatched, while one big publication is spread over every core. A publication is
//! encoded at most once per encoding (`EncodedPublication`), and each recipient gets a
//! cheap `Bytes` clone in its queue; nothing is allocated per recipient.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::channel::Snapshot;
use super::client::{PushError, QueueLimits};
use crate::metrics::Metrics;
use crate::protocol::{ChannelName, Encoding, Payload, StreamPosition, encode_publication};

/// A publication as the hub delivers it.
#[derive(Debug, Clone)]
pub struct Publication {
    pub channel: ChannelName,
    pub payload: Payload,
    /// Offset and epoch, on channels with history.
    pub position: Option<StreamPosition>,
}

/// A publication plus its frames, encoded on first use per encoding.
pub struct EncodedPublication {
    publication: Publication,
    frames: [OnceLock<Option<Bytes>>; 2],
    started: Instant,
    shards_left: AtomicUsize,
}

impl EncodedPublication {
    pub fn new(publication: Publication) -> Self {
        EncodedPublication {
            publication,
            frames: [OnceLock::new(), OnceLock::new()],
            started: Instant::now(),
            shards_left: AtomicUsize::new(0),
        }
    }

    /// The `message` frame for `encoding`; `None` if the data cannot be encoded.
    pub fn frame(&self, encoding: Encoding) -> Option<&Bytes> {
        self.frames[encoding.index()]
            .get_or_init(|| {
                let p = &self.publication;
                match encode_publication(encoding, p.channel.as_str(), &p.payload, p.position.as_ref()) {
                    Ok(bytes) => Some(bytes),
                    Err(err) => {
                        tracing::warn!(channel = %p.channel, error = %err, "publication cannot be encoded; not delivered");
                        None
                    }
                }
            })
            .as_ref()
    }

    pub fn publication(&self) -> &Publication {
        &self.publication
    }
}

/// One shard's part of one publication.
pub(crate) struct FanoutJob {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) shard: usize,
    pub(crate) publication: Arc<EncodedPublication>,
}

/// Prepares the jobs for `snapshot`: one per shard that has recipients.
pub(crate) fn jobs_for(snapshot: Arc<Snapshot>, publication: Publication) -> Vec<FanoutJob> {
    let encoded = Arc::new(EncodedPublication::new(publication));
    let shards: Vec<usize> = (0..snapshot.by_shard.len())
        .filter(|s| !snapshot.by_shard[*s].is_empty())
        .collect();
    encoded.shards_left.store(shards.len(), Ordering::Relaxed);
    shards
        .into_iter()
        .map(|shard| FanoutJob {
            snapshot: snapshot.clone(),
            shard,
            publication: encoded.clone(),
        })
        .collect()
}

/// Runs one shard's worker until every sender is gone.
pub(crate) async fn run_worker(
    mut jobs: mpsc::Receiver<FanoutJob>,
    limits: Arc<parking_lot::RwLock<QueueLimits>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    loop {
        let job = tokio::select! {
            job = jobs.recv() => job,
            _ = stop.cancelled() => None,
        };
        let Some(job) = job else { return };
        let limits = *limits.read();
        deliver(&job, limits, &metrics);
    }
}

fn deliver(job: &FanoutJob, limits: QueueLimits, metrics: &Metrics) {
    let mut delivered = 0u64;
    let mut evicted = 0u64;
    for member in &job.snapshot.by_shard[job.shard] {
        let client = &member.client;
        // A subscriber still receiving its reply and history gets live messages after them.
        let mut held = member.pending.as_ref().map(|p| p.lock());
        if let Some(Some(buffer)) = held.as_deref_mut() {
            buffer.push(job.publication.clone());
            continue;
        }
        let Some(frame) = job.publication.frame(client.encoding) else {
            continue;
        };
        let pushed = client.push(frame.clone(), limits);
        drop(held);
        match pushed {
            Ok(()) => delivered += 1,
            Err(PushError::Overflow) => {
                evicted += 1;
                tracing::debug!(client_id = %client.id, "evicting slow consumer");
            }
            Err(PushError::Closed) => {}
        }
    }
    metrics.deliveries.inc_by(delivered);
    if evicted > 0 {
        metrics.slow_consumer_evictions.inc_by(evicted);
        metrics
            .limit_trips
            .with_label_values(&["queue_overflow"])
            .inc_by(evicted);
    }
    if job.publication.shards_left.fetch_sub(1, Ordering::AcqRel) == 1 {
        metrics
            .publish_enqueue_seconds
            .observe(job.publication.started.elapsed().as_secs_f64());
    }
}
