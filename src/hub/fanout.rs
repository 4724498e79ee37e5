//! Fan-out workers: one per shard, each owning the delivery to its slice of the clients.
//!
//! A recipient's frame goes to its outbox (`ClientHandle::push_live`), which writes it
//! straight to the socket when nothing is pending there, so at one message per frame a
//! delivery wakes no task, as long as the worker keeps up with its jobs.
//!
//! Architecture Invariant: a client belongs to exactly one shard and every shard handles
//! its jobs in order, so every client sees a channel's publications in the order they
//! were dispatched, while one big publication is spread over every core. A small job is
//! delivered by the dispatcher itself (`deliver_inline`) only while its shard's worker has
//! no job sent and unfinished, that is after everything dispatched before it. A publication is
//! encoded at most once per encoding (`EncodedPublication`), and each recipient gets a
//! cheap `Bytes` clone in its queue; nothing is allocated per recipient. Pusher clients
//! (`Dialect::Pusher`) have their own slot in the same cache, so a channel with both kinds
//! of subscriber still encodes once per wire format.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::channel::{ChannelEntry, Snapshot};
use super::client::{ClientHandle, Dialect, FRAME_SLOTS};
use super::outbox::{PushError, QueueLimits};
use super::pending::Offer;
use crate::metrics::Metrics;
use crate::protocol::{
    ChannelName, ClientId, ClientInfo, Encoding, Publication, ServerMessage, StreamPosition,
    encode, encode_publication,
};

/// A publication (or a presence event) plus its frames, encoded on first use per
/// encoding.
pub struct EncodedPublication {
    publication: Option<Publication>,
    frames: [OnceLock<Option<Bytes>>; FRAME_SLOTS],
    started: Instant,
    shards_left: AtomicUsize,
    /// On a presence join, the connection that joined: Pusher clients do not hear of
    /// their own `member_added` (native clients do get their own `join`).
    joiner: Option<ClientId>,
    /// The channel of a presence event (a publication names its own).
    presence_channel: Option<ChannelName>,
    /// The trace span this publication was dispatched under (`crate::telemetry`), only
    /// while tracing is on; each shard's fan-out span is its child.
    pub(crate) trace: Option<tracing::Span>,
}

impl EncodedPublication {
    pub fn new(publication: Publication) -> Self {
        EncodedPublication {
            publication: Some(publication),
            frames: [
                OnceLock::new(),
                OnceLock::new(),
                OnceLock::new(),
                OnceLock::new(),
            ],
            started: Instant::now(),
            shards_left: AtomicUsize::new(0),
            joiner: None,
            presence_channel: None,
            trace: None,
        }
    }

    /// A user's `join` or `leave`, encoded now for every wire format (Pusher clients get
    /// `pusher_internal:member_added` / `member_removed`).
    pub fn presence_event(channel: &ChannelName, join: bool, client: &ClientInfo) -> Self {
        let frame = |encoding| {
            let (channel, client_id, user, info) = (
                channel.as_str(),
                client.client_id.as_str(),
                client.user.as_str(),
                client.info.as_ref(),
            );
            let message = if join {
                ServerMessage::Join {
                    channel,
                    client_id,
                    user,
                    info,
                }
            } else {
                ServerMessage::Leave {
                    channel,
                    client_id,
                    user,
                    info,
                }
            };
            OnceLock::from(encode(encoding, &message).ok())
        };
        EncodedPublication {
            publication: None,
            frames: [
                frame(Encoding::Json),
                frame(Encoding::Msgpack),
                OnceLock::from(crate::pusher::wire::presence_frame(channel, join, client)),
                // SSE streams carry publications only.
                OnceLock::from(None),
            ],
            started: Instant::now(),
            shards_left: AtomicUsize::new(0),
            joiner: join.then(|| ClientId::parse(&client.client_id)).flatten(),
            presence_channel: Some(channel.clone()),
            trace: None,
        }
    }

    /// Whether `client` is left out of this delivery.
    fn excludes(&self, client: &ClientHandle) -> bool {
        self.excluded() == Some(client.id)
            || (client.dialect == Dialect::Pusher && self.joiner == Some(client.id))
    }

    /// The client left out of this publication's delivery, if any.
    fn excluded(&self) -> Option<ClientId> {
        self.publication.as_ref().and_then(|p| p.exclude)
    }

    /// The stream position of a publication (none for events and channels without history).
    pub fn position(&self) -> Option<&StreamPosition> {
        self.publication.as_ref().and_then(|p| p.position.as_ref())
    }

    /// The frame for `client`; `None` if the data cannot be encoded for it.
    pub fn frame_for(&self, client: &ClientHandle) -> Option<&Bytes> {
        self.frames[client.frame_slot()]
            .get_or_init(|| {
                let p = self.publication.as_ref()?;
                match client.dialect {
                    Dialect::Pusher => return crate::pusher::encode_publication(p),
                    Dialect::Sse => return crate::sse::wire::encode_publication(p),
                    Dialect::Native => {}
                }
                match encode_publication(client.encoding, p.channel.as_str(), &p.payload, p.position.as_ref()) {
                    Ok(bytes) => Some(bytes),
                    Err(err) => {
                        tracing::warn!(channel = %p.channel, error = %err, "publication cannot be encoded; not delivered");
                        None
                    }
                }
            })
            .as_ref()
    }
}

/// One shard's part of one publication.
pub(crate) struct FanoutJob {
    pub(crate) entry: Arc<ChannelEntry>,
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) shard: usize,
    pub(crate) publication: Arc<EncodedPublication>,
}

/// Prepares the jobs for `snapshot`: one per shard that has recipients.
pub(crate) fn jobs_for(
    entry: &Arc<ChannelEntry>,
    snapshot: Arc<Snapshot>,
    encoded: EncodedPublication,
) -> Vec<FanoutJob> {
    let encoded = Arc::new(encoded);
    let shards: Vec<usize> = (0..snapshot.by_shard.len())
        .filter(|s| !snapshot.by_shard[*s].is_empty())
        .collect();
    encoded.shards_left.store(shards.len(), Ordering::Relaxed);
    shards
        .into_iter()
        .map(|shard| FanoutJob {
            entry: entry.clone(),
            snapshot: snapshot.clone(),
            shard,
            publication: encoded.clone(),
        })
        .collect()
}

/// Runs one shard's worker until every sender is gone. `backlog` counts the jobs sent to
/// it and not finished; the worker takes one off after each job.
pub(crate) async fn run_worker(
    mut jobs: mpsc::Receiver<FanoutJob>,
    backlog: Arc<AtomicUsize>,
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
        match &job.publication.trace {
            Some(parent) => {
                let direct = job.snapshot.by_shard[job.shard].len() <= DIRECT_MAX_RECIPIENTS
                    && jobs.is_empty();
                deliver_traced(&job, limits, &metrics, parent, direct)
            }
            None => deliver_in_chunks(&job, limits, &metrics, &jobs),
        }
        backlog.fetch_sub(1, Ordering::Release);
    }
}

/// Delivers a job in the dispatcher's own task, writing directly: what `Hub::dispatch`
/// does with a job that `delivers_inline` while the shard's worker has no backlog. One
/// task wake-up and one channel hand-off fewer per publication to a few subscribers.
pub(crate) fn deliver_inline(job: &FanoutJob, limits: QueueLimits, metrics: &Metrics) {
    deliver(job, limits, metrics, true);
}

/// Recipients a worker serves between two looks at its job queue.
const CHUNK: usize = 512;

/// Jobs for at most this many recipients write directly (when no other job waits). A
/// bigger fan-out queues, so each session batches what piles up: on loopback a `writev`
/// costs several µs of kernel time, and 5,000 of them per publication made the 20/s and
/// 500/s fan-outs slower (docs/benchmarks.md).
const DIRECT_MAX_RECIPIENTS: usize = 64;

/// `deliver`, in chunks of `CHUNK` recipients. It does not yield between them: a worker
/// that let the runtime serve API requests mid-job would accept publications faster
/// than it delivers them (measured: p99 0.85 s -> 7.4 s at 500/s offered), since the
/// full job queue is what holds publishers back.
///
/// Direct writes (see `outbox`) are used only while no other job waits for this worker:
/// a worker that falls behind queues instead, so each session writes what piled up in
/// one batch frame (one syscall for many messages) and the worker catches up.
fn deliver_in_chunks(
    job: &FanoutJob,
    limits: QueueLimits,
    metrics: &Metrics,
    waiting: &mpsc::Receiver<FanoutJob>,
) {
    let members = job.snapshot.by_shard[job.shard].len();
    let (mut delivered, mut evicted) = (0, 0);
    let mut start = 0;
    while start < members {
        let end = (start + CHUNK).min(members);
        let direct = members <= DIRECT_MAX_RECIPIENTS && waiting.is_empty();
        let (d, e) = deliver_range(job, start..end, limits, direct);
        delivered += d;
        evicted += e;
        start = end;
    }
    finish(job, delivered, evicted, metrics);
}

/// `deliver` inside a `fanout.shard` trace span, and for a sampled share of the shards,
/// a `deliver` span naming one subscriber and the queue it was handed to.
fn deliver_traced(
    job: &FanoutJob,
    limits: QueueLimits,
    metrics: &Metrics,
    parent: &tracing::Span,
    direct: bool,
) {
    use crate::telemetry::TARGET;
    let span = tracing::info_span!(
        target: TARGET,
        parent: parent,
        "fanout.shard",
        shard = job.shard,
        channel = %job.entry_channel(),
        recipients = tracing::field::Empty,
        evicted = tracing::field::Empty,
    );
    let _in_span = span.enter();
    let (delivered, evicted) = deliver(job, limits, metrics, direct);
    span.record("recipients", delivered);
    span.record("evicted", evicted);
    if crate::telemetry::sample_delivery()
        && let Some(member) = job.snapshot.by_shard[job.shard].first()
    {
        tracing::info_span!(
            target: TARGET,
            "deliver",
            client_id = %member.client().id,
            queue_len = member.client().queue_len(),
        )
        .in_scope(|| {});
    }
}

impl FanoutJob {
    /// Small enough to be delivered by the dispatcher itself (at most
    /// `DIRECT_MAX_RECIPIENTS` in this shard), and not traced (the shard's trace span is
    /// the worker's).
    pub(crate) fn delivers_inline(&self) -> bool {
        self.publication.trace.is_none()
            && self.snapshot.by_shard[self.shard].len() <= DIRECT_MAX_RECIPIENTS
    }

    fn entry_channel(&self) -> &str {
        let encoded = &self.publication;
        match (&encoded.publication, &encoded.presence_channel) {
            (Some(p), _) => p.channel.as_str(),
            (None, Some(channel)) => channel.as_str(),
            (None, None) => "",
        }
    }
}

/// Pushes one shard's part at once; returns (delivered, evicted).
fn deliver(job: &FanoutJob, limits: QueueLimits, metrics: &Metrics, direct: bool) -> (u64, u64) {
    let members = job.snapshot.by_shard[job.shard].len();
    let (delivered, evicted) = deliver_range(job, 0..members, limits, direct);
    finish(job, delivered, evicted, metrics);
    (delivered, evicted)
}

/// Pushes to the shard's recipients in `range`; returns (delivered, evicted).
fn deliver_range(
    job: &FanoutJob,
    range: std::ops::Range<usize>,
    limits: QueueLimits,
    direct: bool,
) -> (u64, u64) {
    let mut delivered = 0u64;
    let mut evicted = 0u64;
    for member in &job.snapshot.by_shard[job.shard][range] {
        let client = member.client();
        if job.publication.excludes(client) {
            continue;
        }
        let deliver = || {
            job.publication
                .frame_for(client)
                .map(|frame| client.push_live(frame, limits, &member.subscription, direct))
        };
        // A subscriber still receiving its reply and history gets live messages after them.
        let pushed = match &member.pending {
            None => deliver(),
            Some(pending) => match pending.offer(&job.publication, deliver) {
                Offer::Delivered { outcome, settled } => {
                    if settled {
                        job.entry.settle(client.id);
                    }
                    outcome
                }
                Offer::Held | Offer::Skipped => continue,
            },
        };
        let Some(pushed) = pushed else {
            continue;
        };
        match pushed {
            Ok(()) => delivered += 1,
            Err(PushError::Overflow) => {
                evicted += 1;
                tracing::debug!(client_id = %client.id, "evicting slow consumer");
            }
            Err(_) => {}
        }
    }
    (delivered, evicted)
}

/// Counts a finished job; the last shard of a publication records its enqueue time.
fn finish(job: &FanoutJob, delivered: u64, evicted: u64, metrics: &Metrics) {
    metrics.deliveries.inc_by(delivered);
    if delivered > 0 {
        metrics.pusher_delivered(job.entry_channel(), delivered);
    }
    if evicted > 0 {
        metrics.evicted(evicted);
    }
    if job.publication.shards_left.fetch_sub(1, Ordering::AcqRel) == 1 {
        metrics
            .publish_enqueue_seconds
            .observe(job.publication.started.elapsed().as_secs_f64());
    }
}
