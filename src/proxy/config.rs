//! `[proxy]`: the backend endpoints pushwire asks about connections, subscriptions,
//! publications and expiring connections, and how hard it may lean on them.
//! Namespaces opt in to the subscribe and publish proxies (see `NamespaceConfig`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::breaker::BreakerSettings;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Asked for every `connect` without a token; empty: off.
    pub connect_url: String,
    /// Asked for subscriptions in namespaces with `proxy_subscribe = true`.
    pub subscribe_url: String,
    /// Asked before client publications in namespaces with `proxy_publish = true`.
    pub publish_url: String,
    /// Asked when a connection granted by the connect proxy reaches its `expire_at`.
    pub refresh_url: String,
    /// Time limit of one backend call.
    pub timeout_ms: u64,
    /// Upgrade request headers passed on to the backend (case-insensitive names).
    pub forward_headers: Vec<String>,
    /// Cookies of the upgrade request passed on, by name; `["*"]` passes them all.
    pub forward_cookies: Vec<String>,
    /// Headers added to every backend call (for example a shared secret); redacted by
    /// `check-config`. Not printed while empty.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub static_headers: BTreeMap<String, String>,
    /// Backend calls in flight per URL; more are refused at once as unavailable.
    pub max_concurrency: usize,
    /// Failures in a row that open a URL's circuit breaker (0: off).
    pub breaker_consecutive_failures: u32,
    /// Share of failed calls among the last `breaker_window` that opens it (0: off).
    pub breaker_failure_ratio: f64,
    pub breaker_window: u32,
    /// How long an open breaker refuses before it lets one probe call through.
    pub breaker_open_ms: u64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_url: String::new(),
            subscribe_url: String::new(),
            publish_url: String::new(),
            refresh_url: String::new(),
            timeout_ms: 2_000,
            forward_headers: Vec::new(),
            forward_cookies: Vec::new(),
            static_headers: BTreeMap::new(),
            max_concurrency: 64,
            breaker_consecutive_failures: 5,
            breaker_failure_ratio: 0.5,
            breaker_window: 20,
            breaker_open_ms: 5_000,
        }
    }
}

/// Whether a proxy URL setting is empty (off) or an http(s) URL.
pub fn url_or_empty(url: &str) -> bool {
    url.is_empty() || url.starts_with("http://") || url.starts_with("https://")
}

impl ProxyConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn breaker(&self) -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: self.breaker_consecutive_failures,
            failure_ratio: self.breaker_failure_ratio,
            window: self.breaker_window,
            open_for: Duration::from_millis(self.breaker_open_ms),
        }
    }

    /// The first invalid key and why, if any.
    pub fn invalid(&self) -> Option<(&'static str, String)> {
        let urls = [
            ("proxy.connect_url", &self.connect_url),
            ("proxy.subscribe_url", &self.subscribe_url),
            ("proxy.publish_url", &self.publish_url),
            ("proxy.refresh_url", &self.refresh_url),
        ];
        for (key, url) in urls {
            if !url_or_empty(url) {
                return Some((key, format!("{url:?} is not an http:// or https:// URL")));
            }
        }
        if self.timeout_ms == 0 {
            return Some(("proxy.timeout_ms", "must be at least 1".into()));
        }
        if self.max_concurrency == 0 {
            return Some(("proxy.max_concurrency", "must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&self.breaker_failure_ratio) {
            return Some(("proxy.breaker_failure_ratio", "must be within 0..=1".into()));
        }
        if self.breaker_window == 0 {
            return Some(("proxy.breaker_window", "must be at least 1".into()));
        }
        for name in self.static_headers.keys().chain(&self.forward_headers) {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Some((
                    "proxy.static_headers",
                    format!("{name:?} is not a header name"),
                ));
            }
        }
        None
    }
}
