//! Durable clients: simulated subscribers that stay subscribed for the whole run, whatever
//! happens to their connection, the way a real client library behaves (PROTOCOL.md
//! section 7: reconnect with backoff, recover).
//!
//! A durable client connects to node `index mod N` like any other, then loops: listen;
//! when the session ends, reconnect to the next node round-robin and `subscribe` with
//! `recover` {offset, epoch} from the last message it saw. It reconnects after any end
//! but the run's stop: a close code (1001, 4005, 4008, ...), a reset, silence, or a *kick*
//! from the churn ticker, which closes the session from the client side (close 1000) and
//! reconnects at once. After a server-side end it waits first: a backoff growing from
//! [`BACKOFF_FIRST`] to [`BACKOFF_MAX`], each wait drawn between half and all of it, so the
//! clients of a killed node do not all come back in the same millisecond. Each attempt
//! takes a handshake permit, the same bound as the ramp's.
//!
//! Its [`Receipts`] live across sessions, so losses, duplicates and reordering are judged
//! over the client's whole life, and the time from losing a session to having caught up to
//! the offset the recovering `subscribed` announced is recorded (`recovery_latency`).
//! A client still reconnecting when the run stops counts as `dropped`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::{Instant, MissedTickBehavior, interval, sleep, timeout};

use crate::conn::{Stage, count_end, establish, first_session};
use crate::context::{ConnContext, Kick};
use crate::rng::Rng;
use crate::session::{CatchUp, End, Receipts, Session, short};
use crate::stats::Stats;

/// Mean wait before the first reconnect after a server-side end.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a client waits for its own close to be written before dropping the socket.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How often the churn ticker runs.
const CHURN_TICK: Duration = Duration::from_millis(10);

/// Runs durable client `index` until the run stops. `permit` bounds concurrent handshakes
/// and is released once the first session is up or has failed; a client whose first
/// session fails is finished, like a one-shot connection.
pub async fn run(ctx: Arc<ConnContext>, index: usize, permit: OwnedSemaphorePermit) {
    let stats = Arc::clone(&ctx.stats);
    let fallback = Kick::default();
    let kick = ctx
        .kicks
        .get(index.wrapping_sub(ctx.first_index))
        .unwrap_or(&fallback);
    let mut receipts = Receipts::default();
    let mut node = index % ctx.targets.len();
    let Some(mut session) = first_session(&ctx, index, permit, &mut receipts).await else {
        return;
    };
    let mut rng = Rng::from_clock(index as u64);
    loop {
        Stats::bump(&stats.counters.up);
        kick.up.store(true, Ordering::Relaxed);
        let end = session.listen(&mut receipts, kick.notify.notified()).await;
        kick.up.store(false, Ordering::Relaxed);
        Stats::drop_one(&stats.counters.up);
        let churned = end == End::Interrupted;
        match &end {
            End::Stopped => {
                // The reply to our close is not awaited: thousands of clients end at once.
                let _ = timeout(Duration::from_secs(2), session.ws.close(None)).await;
                break;
            }
            End::Interrupted => {
                Stats::bump(&stats.counters.churn_closes);
                let _ = timeout(CLOSE_WAIT, session.ws.close(None)).await;
            }
            other => {
                Stats::bump(&stats.counters.interrupted);
                count_end(&stats, other);
            }
        }
        drop(session);
        receipts.catch_up.get_or_insert(CatchUp {
            since: Instant::now(),
            until: u64::MAX,
        });
        node = (node + 1) % ctx.targets.len();
        match reconnect(&ctx, index, &mut node, &mut receipts, &mut rng, churned).await {
            Some(next) => session = next,
            None => {
                Stats::bump(&stats.counters.dropped);
                stats.code("durable", "down when the run stopped");
                break;
            }
        }
    }
    if let Some(published) = ctx.published.get() {
        stats.add_seq(&receipts.outcome(&ctx, index, published));
    }
    Stats::bump(&stats.counters.finished);
}

/// Opens a new session with `recover`, trying the nodes round-robin from `node`, until one
/// is up (`Some`) or the run stops (`None`).
async fn reconnect(
    ctx: &Arc<ConnContext>,
    index: usize,
    node: &mut usize,
    receipts: &mut Receipts,
    rng: &mut Rng,
    churned: bool,
) -> Option<Session> {
    let stats = &ctx.stats;
    for attempt in 0u32.. {
        let wait = backoff(attempt, churned, rng);
        tokio::select! {
            () = sleep(wait) => {}
            () = ctx.stop.cancelled() => return None,
        }
        let permit = tokio::select! {
            p = Arc::clone(&ctx.pending).acquire_owned() => p.ok()?,
            () = ctx.stop.cancelled() => return None,
        };
        let mut stage = Stage::Dial;
        let opening = establish(ctx, index, *node, &mut stage, receipts, true);
        let outcome = tokio::select! {
            r = timeout(ctx.connect_timeout, opening) => r,
            () = ctx.stop.cancelled() => return None,
        };
        drop(permit);
        match outcome {
            Ok(Ok(session)) => {
                Stats::bump(&stats.counters.reconnects);
                return Some(session);
            }
            Ok(Err(err)) => stats.code(
                "reconnect",
                format!("{} {}", stage.name(), short(&format!("{err:#}"))),
            ),
            Err(_elapsed) => stats.code("reconnect", format!("{} timeout", stage.name())),
        }
        Stats::bump(&stats.counters.reconnect_failures);
        *node = (*node + 1) % ctx.targets.len();
    }
    None
}

/// The wait before reconnect attempt `attempt` (0-based): none for the first attempt after
/// a churn close, else a doubling backoff with jitter (between half and all of it).
fn backoff(attempt: u32, churned: bool, rng: &mut Rng) -> Duration {
    if churned && attempt == 0 {
        return Duration::ZERO;
    }
    let full = (BACKOFF_FIRST * 2u32.pow(attempt.min(8))).min(BACKOFF_MAX);
    let full_ms = full.as_millis() as u64;
    Duration::from_millis(full_ms / 2 + rng.below(full_ms / 2 + 1))
}

/// Closes connected durable clients at `rate` per second (0 pauses), picked at random,
/// until the run stops. Each kicked client reconnects with `recover` at once.
pub async fn churn(ctx: Arc<ConnContext>, mut rate: watch::Receiver<f64>) {
    let mut rng = Rng::from_clock(ctx.first_index as u64 ^ 0xc4u64);
    let mut tick = interval(CHURN_TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut owed = 0.0;
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = rate.changed() => {
                if changed.is_err() {
                    return;
                }
                (owed, last) = (0.0, Instant::now());
                continue;
            }
            () = ctx.stop.cancelled() => return,
        }
        let now = Instant::now();
        let per_sec = *rate.borrow();
        owed += per_sec.max(0.0) * (now - last).as_secs_f64();
        last = now;
        while owed >= 1.0 {
            owed -= 1.0;
            kick_one(&ctx.kicks, &mut rng);
        }
    }
}

/// Kicks one random client that is up; gives up after a few misses (most are down).
fn kick_one(kicks: &[Kick], rng: &mut Rng) -> bool {
    for _ in 0..16 {
        let Some(kick) = kicks.get(rng.below(kicks.len() as u64) as usize) else {
            return false;
        };
        if kick.up.swap(false, Ordering::Relaxed) {
            kick.notify.notify_one();
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut rng = Rng::with_seed(1);
        assert_eq!(backoff(0, true, &mut rng), Duration::ZERO);
        for attempt in 0..20 {
            let full = (BACKOFF_FIRST * 2u32.pow(attempt.min(8))).min(BACKOFF_MAX);
            let wait = backoff(attempt, false, &mut rng);
            assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
        }
        assert!(backoff(1, true, &mut rng) >= BACKOFF_FIRST);
    }

    #[test]
    fn a_kick_reaches_only_a_client_that_is_up() {
        let kicks: Vec<Kick> = (0..4).map(|_| Kick::default()).collect();
        let mut rng = Rng::with_seed(3);
        assert!(!kick_one(&kicks, &mut rng));
        kicks[2].up.store(true, Ordering::Relaxed);
        assert!(kick_one(&kicks, &mut rng));
        assert!(!kicks[2].up.load(Ordering::Relaxed));
        assert!(
            !kick_one(&kicks, &mut rng),
            "kicked twice before it reacted"
        );
    }
}
