//! `[namespaces.NAME]`: per-namespace channel options (history, presence, join/leave, who
//! may subscribe and publish, recovery bound) and which backend proxy URL a namespace asks.

use serde::{Deserialize, Serialize};

/// The key under `[namespaces]` that holds channels without `:`.
pub const DEFAULT_NAMESPACE: &str = "default";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Messages kept per channel; > 0 turns on offsets, epochs and recovery.
    pub history_size: usize,
    pub history_ttl_secs: u64,
    pub presence: bool,
    /// Announce a user's first connection (`join`) and last (`leave`); needs `presence`.
    pub join_leave: bool,
    /// Joins and leaves a second one channel delivers on one node; the rest are dropped
    /// (limit `join_leave_rate`). 0: no bound.
    pub join_leave_rate_per_sec: u32,
    /// The most entries one presence page holds (a request without `limit`, or with a
    /// larger one, gets this many and a cursor).
    pub presence_max_page: usize,
    pub allow_subscribe: SubscribePolicy,
    pub allow_publish: PublishPolicy,
    /// The most messages a recovering subscribe replays; a longer gap answers
    /// `recovered: false`.
    pub max_recover_messages: usize,
    /// Ask the backend (`proxy.subscribe_url`, or `proxy_subscribe_url`) about subscriptions.
    pub proxy_subscribe: bool,
    /// Ask the backend (`proxy.publish_url`, or `proxy_publish_url`) before client publications.
    pub proxy_publish: bool,
    /// This namespace's own subscribe proxy URL (implies `proxy_subscribe`).
    pub proxy_subscribe_url: String,
    /// This namespace's own publish proxy URL (implies `proxy_publish`).
    pub proxy_publish_url: String,
}

impl NamespaceConfig {
    /// The subscribe proxy URL this namespace uses, if any.
    pub fn subscribe_proxy<'a>(&'a self, proxy: &'a crate::proxy::ProxyConfig) -> Option<&'a str> {
        pick_proxy_url(
            &self.proxy_subscribe_url,
            self.proxy_subscribe,
            &proxy.subscribe_url,
        )
    }

    /// The publish proxy URL this namespace uses, if any.
    pub fn publish_proxy<'a>(&'a self, proxy: &'a crate::proxy::ProxyConfig) -> Option<&'a str> {
        pick_proxy_url(
            &self.proxy_publish_url,
            self.proxy_publish,
            &proxy.publish_url,
        )
    }
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        NamespaceConfig {
            history_size: 0,
            history_ttl_secs: 300,
            presence: false,
            join_leave: false,
            join_leave_rate_per_sec: 50,
            presence_max_page: 1000,
            allow_subscribe: SubscribePolicy::All,
            allow_publish: PublishPolicy::None,
            max_recover_messages: 10_000,
            proxy_subscribe: false,
            proxy_publish: false,
            proxy_subscribe_url: String::new(),
            proxy_publish_url: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscribePolicy {
    All,
    Authenticated,
    Token,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishPolicy {
    None,
    Authenticated,
    All,
}

/// The namespace key that opts in to a proxy with no URL to ask, if any.
pub(super) fn proxy_opt_in_error(
    ns: &NamespaceConfig,
    proxy: &crate::proxy::ProxyConfig,
) -> Option<(&'static str, &'static str)> {
    const NO_URL: &str = "needs a URL: set proxy_*_url here or the URL in [proxy]";
    if ns.proxy_subscribe && ns.subscribe_proxy(proxy).is_none() {
        return Some(("proxy_subscribe", NO_URL));
    }
    if ns.proxy_publish && ns.publish_proxy(proxy).is_none() {
        return Some(("proxy_publish", NO_URL));
    }
    for (key, url) in [
        ("proxy_subscribe_url", &ns.proxy_subscribe_url),
        ("proxy_publish_url", &ns.proxy_publish_url),
    ] {
        if !crate::proxy::config::url_or_empty(url) {
            return Some((key, "must be an http:// or https:// URL"));
        }
    }
    None
}

fn pick_proxy_url<'a>(own: &'a str, enabled: bool, global: &'a str) -> Option<&'a str> {
    if !own.is_empty() {
        Some(own)
    } else {
        (enabled && !global.is_empty()).then_some(global)
    }
}
