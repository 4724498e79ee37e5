//! Liveness probes of the pub/sub connections: each connection publishes to topics only it
//! subscribes and expects them back within `probe_interval_ms`.
//!
//! On a standalone Redis one topic per connection is enough. On a Redis Cluster the one
//! pub/sub connection is really one link per master (sharded pub/sub goes to the master
//! owning the topic's slot), so a single topic would watch one master only: there is one
//! probe topic per master, whose hash tag lands in a slot that master owns. The targets
//! are recomputed from `CLUSTER SLOTS` before every round, so they follow failovers and
//! resharding.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use redis::Value;

use super::RelayContext;

/// Number of hash slots of a Redis Cluster.
const SLOTS: u16 = 16_384;

/// One probe topic and what it watches (`redis`, or a master's `host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeTarget {
    pub(crate) topic: String,
    pub(crate) watches: String,
}

/// The probes of one pub/sub connection and the ones still waiting for their echo.
#[derive(Debug, Default)]
pub(crate) struct Probes {
    targets: Vec<ProbeTarget>,
    outstanding: HashMap<String, Instant>,
}

impl Probes {
    /// Starts with `targets` (no probe out yet).
    pub(crate) fn new(targets: Vec<ProbeTarget>) -> Self {
        Probes {
            targets,
            outstanding: HashMap::new(),
        }
    }

    pub(crate) fn targets(&self) -> &[ProbeTarget] {
        &self.targets
    }

    /// Whether `topic` is one of this connection's probe topics (its echo is consumed).
    pub(crate) fn echoed(&mut self, topic: &str) -> bool {
        self.outstanding.remove(topic);
        self.targets.iter().any(|t| t.topic == topic)
    }

    /// What the first probe out for `timeout` or longer watches: that link is silent.
    pub(crate) fn overdue(&self, timeout: Duration) -> Option<&str> {
        let topic = self
            .outstanding
            .iter()
            .find(|(_, sent)| sent.elapsed() >= timeout)
            .map(|(topic, _)| topic)?;
        self.targets
            .iter()
            .find(|t| &t.topic == topic)
            .map(|t| t.watches.as_str())
            .or(Some(topic.as_str()))
    }

    /// Whether a round is still waiting for echoes.
    pub(crate) fn waiting(&self) -> bool {
        !self.outstanding.is_empty()
    }

    /// Replaces the targets; returns (topics to subscribe, topics no longer probed).
    pub(crate) fn retarget(&mut self, targets: Vec<ProbeTarget>) -> (Vec<String>, Vec<String>) {
        let added = targets
            .iter()
            .filter(|t| !self.targets.iter().any(|o| o.topic == t.topic))
            .map(|t| t.topic.clone())
            .collect();
        let removed = self
            .targets
            .iter()
            .filter(|t| !targets.iter().any(|n| n.topic == t.topic))
            .map(|t| t.topic.clone())
            .collect();
        self.targets = targets;
        (added, removed)
    }

    /// Records a probe sent (or one whose missing echo must count) on `topic`.
    pub(crate) fn sent(&mut self, topic: &str) {
        self.outstanding.insert(topic.to_owned(), Instant::now());
    }
}

/// The probe topics connection `shard` must watch now: one on a standalone Redis, one per
/// master on a Cluster. When the slot map cannot be read, `current` stays.
pub(crate) async fn targets(
    ctx: &RelayContext,
    shard: usize,
    current: &[ProbeTarget],
) -> Vec<ProbeTarget> {
    if !ctx.connector.is_cluster() {
        return vec![ProbeTarget {
            topic: ctx.keys.probe(&ctx.node_id, shard, None),
            watches: "redis".to_owned(),
        }];
    }
    match masters(ctx).await {
        Some(masters) if !masters.is_empty() => masters
            .into_iter()
            .map(|(watches, first_slot)| ProbeTarget {
                topic: ctx
                    .keys
                    .probe(&ctx.node_id, shard, Some(&tag_for_slot(first_slot))),
                watches,
            })
            .collect(),
        _ if !current.is_empty() => current.to_vec(),
        // Not known yet: a tagless topic (one master) until the slot map can be read.
        _ => vec![ProbeTarget {
            topic: ctx.keys.probe(&ctx.node_id, shard, None),
            watches: "redis".to_owned(),
        }],
    }
}

/// Each master's `host:port` and the first slot it serves, from `CLUSTER SLOTS`.
async fn masters(ctx: &RelayContext) -> Option<BTreeMap<String, u16>> {
    let mut conn = ctx.commands().ok()?;
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("SLOTS");
    let query = cmd.query_async::<Value>(&mut conn);
    let timeout = Duration::from_millis(ctx.config.command_timeout_ms);
    let reply = tokio::time::timeout(timeout, query).await.ok()?.ok()?;
    Some(parse_slots(&reply))
}

/// `CLUSTER SLOTS` rows are `[start, end, [host, port, id, ...], replicas...]`.
fn parse_slots(reply: &Value) -> BTreeMap<String, u16> {
    let mut masters: BTreeMap<String, u16> = BTreeMap::new();
    let Value::Array(rows) = reply else {
        return masters;
    };
    for row in rows {
        let Value::Array(fields) = row else { continue };
        let (Some(Value::Int(start)), Some(Value::Array(master))) = (fields.first(), fields.get(2))
        else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => continue,
        };
        let (Some(Value::Int(port)), Ok(start)) = (master.get(1), u16::try_from(*start)) else {
            continue;
        };
        let first = masters.entry(format!("{host}:{port}")).or_insert(start);
        *first = (*first).min(start);
    }
    masters
}

/// A short hash tag whose key slot is `slot`.
fn tag_for_slot(slot: u16) -> String {
    (0u32..)
        .map(|n| n.to_string())
        .find(|tag| key_slot(tag.as_bytes()) == slot % SLOTS)
        .unwrap_or_default()
}

/// The Redis Cluster slot of a hash tag: CRC16 (XMODEM) modulo 16384.
fn key_slot(tag: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in tag {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"123456789"), 0x31C3 % SLOTS);
    }

    #[test]
    fn every_slot_gets_a_tag_of_its_own() {
        for slot in [0, 1, 5460, 5461, 10922, 10923, 16383] {
            assert_eq!(key_slot(tag_for_slot(slot).as_bytes()), slot);
        }
    }

    #[test]
    fn cluster_slots_group_by_master() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let row = |start: i64, end: i64, host: &str, port: i64| {
            Value::Array(vec![
                Value::Int(start),
                Value::Int(end),
                node(host, port),
                node("replica", 1),
            ])
        };
        let reply = Value::Array(vec![
            row(5461, 10922, "127.0.0.1", 7001),
            row(0, 5460, "127.0.0.1", 7000),
            row(12000, 16383, "127.0.0.1", 7000),
        ]);
        let masters = parse_slots(&reply);
        assert_eq!(masters.get("127.0.0.1:7000"), Some(&0));
        assert_eq!(masters.get("127.0.0.1:7001"), Some(&5461));
        assert_eq!(masters.len(), 2);
    }

    #[test]
    fn a_silent_probe_names_what_it_watches() {
        let target = |topic: &str, watches: &str| ProbeTarget {
            topic: topic.into(),
            watches: watches.into(),
        };
        let mut probes = Probes::new(vec![target("a", "m1"), target("b", "m2")]);
        probes.sent("a");
        probes.sent("b");
        assert!(probes.echoed("a"));
        assert!(!probes.echoed("other"));
        assert_eq!(probes.overdue(Duration::ZERO), Some("m2"));
        let (added, removed) = probes.retarget(vec![target("b", "m2"), target("c", "m3")]);
        assert_eq!(
            (added, removed),
            (vec!["c".to_owned()], vec!["a".to_owned()])
        );
    }
}
