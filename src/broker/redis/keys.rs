//! Names of everything pushwire keeps in Redis. Every key and topic of a channel carries
//! the channel in a `{hash tag}`, so in Redis Cluster they all live in one slot and the
//! publish script (which touches several of them and publishes) is cluster-safe.

/// Key and topic names under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The pub/sub topic of a channel.
    pub(crate) fn topic(&self, channel: &str) -> String {
        format!("{}:t:{{{channel}}}", self.prefix)
    }

    /// The channel a topic belongs to, if it is one of ours.
    pub(crate) fn channel_of<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":t:{")?
            .strip_suffix('}')
    }

    /// Hash with the channel's epoch (`e`) and last offset (`o`).
    pub(crate) fn meta(&self, channel: &str) -> String {
        format!("{}:m:{{{channel}}}", self.prefix)
    }

    /// Stream holding the channel's history; entry ids are `<offset>-1`.
    pub(crate) fn stream(&self, channel: &str) -> String {
        format!("{}:s:{{{channel}}}", self.prefix)
    }

    /// Remembered result of an idempotent publish.
    pub(crate) fn idempotency(&self, channel: &str, key: &str) -> String {
        format!("{}:i:{{{channel}}}:{key}", self.prefix)
    }

    /// Sorted set of present client ids, scored by expiry (ms since the Unix epoch).
    pub(crate) fn presence_expiry(&self, channel: &str) -> String {
        format!("{}:pz:{{{channel}}}", self.prefix)
    }

    /// Token of the node holding back a user's `leave` / `member_removed` webhook (it
    /// expires); the user key is the presence user key.
    pub(crate) fn presence_release(&self, channel: &str, user_key: &str) -> String {
        format!("{}:pr:{{{channel}}}:{user_key}", self.prefix)
    }

    /// Hash of present client id -> client info (JSON).
    pub(crate) fn presence_info(&self, channel: &str) -> String {
        format!("{}:ph:{{{channel}}}", self.prefix)
    }

    /// Set of the ids of the nodes where the channel has subscribers (webhook occupancy).
    pub(crate) fn occupancy(&self, channel: &str) -> String {
        format!("{}:o:{{{channel}}}", self.prefix)
    }

    /// Token of the node holding back the channel's `channel_vacated` (it expires).
    pub(crate) fn vacating(&self, channel: &str) -> String {
        format!("{}:ov:{{{channel}}}", self.prefix)
    }

    /// Set of the channels a node holds in the occupancy sets (for crash cleanup).
    pub(crate) fn node_channels(&self, node_id: &str) -> String {
        format!("{}:on:{node_id}", self.prefix)
    }

    /// Set of the node ids that have a `node_channels` set.
    pub(crate) fn occupancy_nodes(&self) -> String {
        format!("{}:onodes", self.prefix)
    }

    /// Exists while the node is alive (refreshed with a TTL of `node_timeout_ms`).
    pub(crate) fn node_alive(&self, node_id: &str) -> String {
        format!("{}:alive:{node_id}", self.prefix)
    }

    /// Sorted set (scores 0) of `user key NUL client id`: presence in page order.
    pub(crate) fn presence_index(&self, channel: &str) -> String {
        format!("{}:pi:{{{channel}}}", self.prefix)
    }

    /// Hash of presence user key -> connections.
    pub(crate) fn presence_users(&self, channel: &str) -> String {
        format!("{}:pu:{{{channel}}}", self.prefix)
    }

    /// The cluster's control topic: heartbeats and cluster-wide requests.
    pub(crate) fn control(&self) -> String {
        format!("{}:control", self.prefix)
    }

    /// A topic only this node's pub/sub connection `shard` listens to (liveness probes).
    /// On a Cluster, `tag` puts it in a slot of the master it watches.
    pub(crate) fn probe(&self, node_id: &str, shard: usize, tag: Option<&str>) -> String {
        match tag {
            Some(tag) => format!("{}:probe:{{{tag}}}:{node_id}:{shard}", self.prefix),
            None => format!("{}:probe:{node_id}:{shard}", self.prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_and_share_the_hash_tag() {
        let keys = Keys::new("pw");
        let topic = keys.topic("chat:room#a,b");
        assert_eq!(topic, "pw:t:{chat:room#a,b}");
        assert_eq!(keys.channel_of(&topic), Some("chat:room#a,b"));
        assert_eq!(keys.channel_of("other:t:{x}"), None);
        assert!(keys.stream("c").contains("{c}") && keys.meta("c").contains("{c}"));
    }
}
