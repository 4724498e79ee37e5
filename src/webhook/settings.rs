//! The `[webhooks]` configuration: the native protocol's endpoints and the delivery
//! settings (batching, retries, hold, circuit breaker, queue bound) that every webhook
//! endpoint shares, the Pusher apps' endpoints included.

use serde::{Deserialize, Serialize};

/// Native event names an endpoint can ask for (`webhooks.events`).
pub const NATIVE_EVENTS: [&str; 5] = [
    "channel_occupied",
    "channel_vacated",
    "join",
    "leave",
    "publish",
];

/// `[webhooks]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Native-protocol endpoints (`http://` URLs); empty: native webhooks off.
    pub urls: Vec<String>,
    /// HMAC-SHA256 key of the native bodies' signature; required when `urls` is set.
    pub secret: String,
    /// Header that carries the native signature (hex of HMAC-SHA256 of the raw body).
    pub signature_header: String,
    /// Native events to send; default: every one but `publish`.
    pub events: Vec<String>,
    /// How long `channel_vacated`, `leave` and `member_removed` wait before they are
    /// sent; a matching occupied/join in that time drops both. 0: sent at once.
    pub hold_ms: u64,
    /// Most events in one request body.
    pub batch_max_events: usize,
    /// How long a sender waits for more events before it posts a batch.
    pub batch_wait_ms: u64,
    /// Events waiting per endpoint; beyond it new events are dropped and counted.
    pub queue_max_events: usize,
    /// One request's timeout.
    pub request_timeout_ms: u64,
    /// How long a failed batch is retried (exponential backoff with jitter) before it is
    /// given up and counted as failed.
    pub retry_max_secs: u64,
    /// The first retry's delay; each next one doubles, up to `retry_max_delay_ms`.
    pub retry_initial_delay_ms: u64,
    /// Cap of the retry delay.
    pub retry_max_delay_ms: u64,
    /// Consecutive failed requests that open an endpoint's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses requests before one probe goes through.
    pub breaker_open_ms: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            urls: Vec::new(),
            secret: String::new(),
            signature_header: "X-Pushwire-Signature".into(),
            events: NATIVE_EVENTS
                .iter()
                .filter(|e| **e != "publish")
                .map(|e| (*e).to_owned())
                .collect(),
            hold_ms: 3000,
            batch_max_events: 100,
            batch_wait_ms: 50,
            queue_max_events: 10_000,
            request_timeout_ms: 5000,
            retry_max_secs: 300,
            retry_initial_delay_ms: 500,
            retry_max_delay_ms: 30_000,
            breaker_failures: 5,
            breaker_open_ms: 10_000,
        }
    }
}

impl WebhooksConfig {
    /// Checks the values serde cannot; `Err((key, message))` names the offending key.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let invalid = |key: &str, message: &str| Err((format!("webhooks.{key}"), message.into()));
        for url in &self.urls {
            if let Err(message) = check_url(url) {
                return invalid("urls", &message);
            }
        }
        if !self.urls.is_empty() && self.secret.is_empty() {
            return invalid("secret", "must be set when webhooks.urls is not empty");
        }
        if http::HeaderName::from_bytes(self.signature_header.as_bytes()).is_err() {
            return invalid("signature_header", "not a valid HTTP header name");
        }
        if let Some(unknown) = self
            .events
            .iter()
            .find(|e| !NATIVE_EVENTS.contains(&e.as_str()))
        {
            return invalid(
                "events",
                &format!("unknown event {unknown:?}; known: {NATIVE_EVENTS:?}"),
            );
        }
        let positive = [
            ("batch_max_events", self.batch_max_events as u64),
            ("queue_max_events", self.queue_max_events as u64),
            ("request_timeout_ms", self.request_timeout_ms),
            ("retry_initial_delay_ms", self.retry_initial_delay_ms),
            ("retry_max_delay_ms", self.retry_max_delay_ms),
            ("breaker_failures", u64::from(self.breaker_failures)),
            ("breaker_open_ms", self.breaker_open_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return invalid(key, "must be greater than 0");
            }
        }
        Ok(())
    }
}

/// A webhook URL this build can post to: `http(s)://host[:port]/path` (TLS by rustls,
/// with the Mozilla root certificates).
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match parsed.scheme_str() {
        Some("http" | "https") if parsed.host().is_some() => Ok(()),
        _ => Err(format!(
            "{url:?} must be an http:// or https:// URL with a host"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_https_urls_are_accepted_others_refused() {
        assert!(check_url("http://backend.internal/hooks").is_ok());
        assert!(check_url("https://hooks.example.com/pusher").is_ok());
        assert!(check_url("ftp://x/y").is_err());
        assert!(check_url("https:///nohost").is_err());
    }

    #[test]
    fn defaults_are_valid_and_leave_publish_out() {
        let config = WebhooksConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert!(!config.events.iter().any(|e| e == "publish"));
    }

    #[test]
    fn errors_name_the_key() {
        let with = |f: fn(&mut WebhooksConfig)| {
            let mut config = WebhooksConfig::default();
            f(&mut config);
            config.validate().err().map(|(key, _)| key)
        };
        assert_eq!(
            with(|c| c.urls = vec!["http://h/x".into()]),
            Some("webhooks.secret".into())
        );
        assert_eq!(
            with(|c| c.urls = vec!["ftp://h/x".into()]),
            Some("webhooks.urls".into())
        );
        assert_eq!(
            with(|c| c.events = vec!["joined".into()]),
            Some("webhooks.events".into())
        );
        assert_eq!(
            with(|c| c.breaker_failures = 0),
            Some("webhooks.breaker_failures".into())
        );
        assert_eq!(
            with(|c| c.signature_header = "bad header".into()),
            Some("webhooks.signature_header".into())
        );
    }
}
