//! Held events: `channel_vacated`, `leave` and `member_removed` wait `hold_ms` before they
//! are sent, and a matching `channel_occupied` / `join` / `member_added` in that time
//! cancels both: a page reload must not tell the backend "gone" then "back".
//!
//! On the Redis broker, occupancy is held cluster-wide in Redis instead (a client may
//! come back on another node); this table serves what one node decides alone.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Target, WebhookEvent};

/// The release an arrival cancels: (target, release event name, channel, user).
type HoldKey = (Target, &'static str, String, String);

/// The event names that are held, with the arrival that cancels each.
pub const PAIRS: [(&str, &str); 3] = [
    ("channel_vacated", "channel_occupied"),
    ("leave", "join"),
    ("member_removed", "member_added"),
];

/// Whether an endpoint wants `name` or the release an arrival named `name` cancels (a
/// held vacated must be cancelled even where nobody wants the occupied).
pub fn involves<E>(endpoints: &[E], name: &str, wants: impl Fn(&E, &str) -> bool) -> bool {
    let release = PAIRS.iter().find(|(_, a)| *a == name).map(|(r, _)| *r);
    endpoints
        .iter()
        .any(|e| wants(e, name) || release.is_some_and(|r| wants(e, r)))
}

/// Events held back, bounded in number.
pub struct HoldTable {
    hold: Duration,
    max_entries: usize,
    held: Mutex<HashMap<HoldKey, (Instant, WebhookEvent)>>,
}

/// What `HoldTable::offer` decided.
#[derive(Debug, PartialEq)]
pub enum Offer {
    /// Held; it comes back from `due` later.
    Held,
    /// An arrival that cancelled a held release: send neither.
    Cancelled,
    /// Not held (not a held kind, hold off, or the table is full): send it now.
    SendNow(WebhookEvent),
}

impl HoldTable {
    pub fn new(hold: Duration, max_entries: usize) -> Self {
        HoldTable {
            hold,
            max_entries,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// The hold time: how often `due` is worth asking.
    pub fn hold(&self) -> Duration {
        self.hold
    }

    /// Holds a release, cancels a held release with its arrival, or hands `event` back.
    pub fn offer(&self, target: &Target, event: WebhookEvent, now: Instant) -> Offer {
        if self.hold.is_zero() {
            return Offer::SendNow(event);
        }
        let user = event.user().unwrap_or_default().to_owned();
        let channel = event.channel().to_owned();
        let name = event.name();
        if let Some((release, _)) = PAIRS.iter().find(|(r, _)| *r == name) {
            let mut held = self.held.lock();
            if held.len() >= self.max_entries {
                return Offer::SendNow(event);
            }
            held.insert(
                (target.clone(), release, channel, user),
                (now + self.hold, event),
            );
            return Offer::Held;
        }
        if let Some((release, _)) = PAIRS.iter().find(|(_, a)| *a == name) {
            let key = (target.clone(), *release, channel, user);
            if self.held.lock().remove(&key).is_some() {
                return Offer::Cancelled;
            }
        }
        Offer::SendNow(event)
    }

    /// Takes the held events whose time is up.
    pub fn due(&self, now: Instant) -> Vec<(Target, WebhookEvent)> {
        let mut held = self.held.lock();
        let keys: Vec<HoldKey> = held
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|key| held.remove(&key).map(|(_, event)| (key.0, event)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> HoldTable {
        HoldTable::new(Duration::from_secs(3), 10)
    }

    #[test]
    fn a_vacated_is_held_then_due() {
        let t = table();
        let now = Instant::now();
        let vacated = WebhookEvent::channel_vacated("a");
        assert_eq!(t.offer(&Target::Native, vacated, now), Offer::Held);
        assert!(t.due(now + Duration::from_secs(2)).is_empty());
        let due = t.due(now + Duration::from_secs(3));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1.name(), "channel_vacated");
    }

    #[test]
    fn a_return_within_the_hold_cancels_both_per_user_and_target() {
        let t = table();
        let now = Instant::now();
        let app = Target::Pusher("1".into());
        let removed = WebhookEvent::member_removed("presence-a", "u1");
        assert_eq!(t.offer(&app, removed, now), Offer::Held);
        // Another user, or the same user of another target, does not cancel it.
        let other = WebhookEvent::member_added("presence-a", "u2");
        assert!(matches!(t.offer(&app, other, now), Offer::SendNow(_)));
        let native = WebhookEvent::member_added("presence-a", "u1");
        assert!(matches!(
            t.offer(&Target::Native, native, now),
            Offer::SendNow(_)
        ));
        let back = WebhookEvent::member_added("presence-a", "u1");
        assert_eq!(t.offer(&app, back, now), Offer::Cancelled);
        assert!(t.due(now + Duration::from_secs(9)).is_empty());
    }

    #[test]
    fn zero_hold_and_a_full_table_send_at_once() {
        let now = Instant::now();
        let off = HoldTable::new(Duration::ZERO, 10);
        let vacated = WebhookEvent::channel_vacated("a");
        assert!(matches!(
            off.offer(&Target::Native, vacated, now),
            Offer::SendNow(_)
        ));
        let small = HoldTable::new(Duration::from_secs(1), 1);
        let first = WebhookEvent::channel_vacated("a");
        assert_eq!(small.offer(&Target::Native, first, now), Offer::Held);
        let second = WebhookEvent::channel_vacated("b");
        assert!(matches!(
            small.offer(&Target::Native, second, now),
            Offer::SendNow(_)
        ));
    }
}
