//! The backend proxy: pushwire asks the application's backend over HTTP instead of
//! checking a JWT. `connect` without a token goes to `connect_url` with the upgrade's
//! allow-listed headers and cookies; subscriptions and client publications in
//! namespaces that opt in go to `subscribe_url` / `publish_url`; a connection the connect
//! proxy granted with an `expire_at` is renewed through `refresh_url` (`refresh`).
//!
//! The backend is a dependency that fails, so every call is bounded three ways: a
//! per-URL concurrency limit (refused at once when full), a timeout, and a per-URL
//! circuit breaker (`breaker`). A refused or failed call is a *temporary* refusal the
//! client retries with backoff (close 4012 on connect, error 108 on requests), never a
//! hang. Only a backend's explicit answer is a real refusal.
//!
//! Architecture Invariant: no lock is held across a backend call; a call's only shared
//! state is its URL's semaphore and breaker.

pub mod breaker;
pub mod config;
mod metrics;
mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

pub use breaker::{Breaker, BreakerState};
pub use config::ProxyConfig;
pub use metrics::ProxyMetrics;
pub use wire::{Grant, Refusal};

use crate::config::Config;
use wire::{
    Allowed, Answer, ConnectRequest, PublishGrant, PublishRequest, RefreshRequest, SubscribeRequest,
};

/// Why a backend call produced no answer. Each is temporary for the client.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("backend {0} refused by its open circuit breaker")]
    BreakerOpen(&'static str),
    #[error("too many {0} calls to the backend in flight")]
    Busy(&'static str),
    #[error("backend {0} call timed out")]
    Timeout(&'static str),
    #[error("backend {kind} call failed")]
    Transport {
        kind: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("backend {kind} call answered HTTP {status}")]
    Status { kind: &'static str, status: u16 },
    #[error("backend {kind} answer is not valid: {message}")]
    BadAnswer { kind: &'static str, message: String },
}

/// A backend's answer: what it granted, or its refusal.
#[derive(Debug)]
pub enum Verdict<T> {
    Granted(T),
    Refused(Refusal),
}

impl<T> Verdict<T> {
    fn map<U>(self, grant: impl FnOnce(T) -> U) -> Verdict<U> {
        match self {
            Verdict::Granted(granted) => Verdict::Granted(grant(granted)),
            Verdict::Refused(refusal) => Verdict::Refused(refusal),
        }
    }
}

/// How the client reached the node, as the connect proxy is told (`transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A WebSocket session (`/ws`).
    WebSocket,
    /// A Server-Sent Events stream (`/sse`).
    Sse,
}

impl Transport {
    /// The name sent to the backend.
    pub fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Sse => "sse",
        }
    }
}

/// The headers of an upgrade that the connect proxy passes on.
#[derive(Debug, Default)]
pub struct Forwarded {
    headers: HeaderMap,
    remote_addr: Option<String>,
}

/// One backend URL with its limits.
struct Endpoint {
    url: String,
    kind: &'static str,
    slots: Semaphore,
    breaker: Breaker,
}

/// The backend proxy of one node (absent when no URL is configured).
pub struct BackendProxy {
    http: reqwest::Client,
    config: ProxyConfig,
    endpoints: HashMap<(&'static str, String), Arc<Endpoint>>,
    metrics: ProxyMetrics,
}

impl BackendProxy {
    /// Builds the proxy when `config` names any proxy URL, globally or in a namespace.
    pub fn from_config(
        config: &Config,
        registry: &prometheus::Registry,
    ) -> Result<Option<Arc<BackendProxy>>, reqwest::Error> {
        let proxy = &config.proxy;
        let mut urls: Vec<(&'static str, String)> = vec![
            ("connect", proxy.connect_url.clone()),
            ("subscribe", proxy.subscribe_url.clone()),
            ("publish", proxy.publish_url.clone()),
            ("refresh", proxy.refresh_url.clone()),
        ];
        for ns in config.namespaces.values() {
            urls.push(("subscribe", ns.proxy_subscribe_url.clone()));
            urls.push(("publish", ns.proxy_publish_url.clone()));
        }
        urls.retain(|(_, url)| !url.is_empty());
        // Registered on every node, so dashboards and alerts see zeros, not gaps.
        let metrics = ProxyMetrics::register(registry);
        if urls.is_empty() {
            return Ok(None);
        }
        let http = reqwest::Client::builder()
            .timeout(proxy.timeout())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .build()?;
        let endpoints = urls
            .into_iter()
            .map(|(kind, url)| {
                let endpoint = Arc::new(Endpoint {
                    url: url.clone(),
                    kind,
                    slots: Semaphore::new(proxy.max_concurrency),
                    breaker: Breaker::new(proxy.breaker()),
                });
                ((kind, url), endpoint)
            })
            .collect();
        Ok(Some(Arc::new(BackendProxy {
            http,
            config: proxy.clone(),
            endpoints,
            metrics,
        })))
    }

    pub fn connects(&self) -> bool {
        !self.config.connect_url.is_empty()
    }

    pub fn refreshes(&self) -> bool {
        !self.config.refresh_url.is_empty()
    }

    /// The allow-listed headers and cookies of an upgrade request.
    pub fn capture(&self, headers: &HeaderMap, remote_addr: Option<String>) -> Forwarded {
        let mut out = HeaderMap::new();
        for name in &self.config.forward_headers {
            let Ok(name) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) else {
                continue;
            };
            for value in headers.get_all(&name) {
                // A copy: the value may share the request head's buffer, kept otherwise.
                if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
                    out.append(name.clone(), value);
                }
            }
        }
        if let Some(cookie) = self.cookies(headers) {
            out.insert(header::COOKIE, cookie);
        }
        Forwarded {
            headers: out,
            remote_addr,
        }
    }

    fn cookies(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let allowed = &self.config.forward_cookies;
        if allowed.is_empty() {
            return None;
        }
        let all = allowed.iter().any(|c| c == "*");
        let kept: Vec<&str> = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .map(str::trim)
            .filter(|pair| {
                let name = pair.split('=').next().unwrap_or_default();
                all || allowed.iter().any(|a| a == name)
            })
            .collect();
        (!kept.is_empty())
            .then(|| HeaderValue::from_str(&kept.join("; ")).ok())
            .flatten()
    }

    /// Asks whether a `connect` without a token may go ahead, and as whom.
    pub async fn connect(
        &self,
        forwarded: &Forwarded,
        transport: Transport,
        encoding: crate::protocol::Encoding,
        client: Option<&str>,
        data: Option<&RawValue>,
    ) -> Result<Verdict<Grant>, ProxyError> {
        let body = ConnectRequest {
            transport: transport.label(),
            encoding: encoding.label(),
            client,
            data,
            remote_addr: forwarded.remote_addr.clone(),
        };
        let endpoint = self.endpoint("connect", &self.config.connect_url);
        self.call(endpoint, &body, &forwarded.headers).await
    }

    /// Asks whether `user` may subscribe to `channel`.
    pub async fn subscribe(
        &self,
        url: &str,
        client_id: &str,
        user: &str,
        channel: &str,
    ) -> Result<Verdict<()>, ProxyError> {
        let body = SubscribeRequest {
            client_id,
            user,
            channel,
        };
        let endpoint = self.endpoint("subscribe", url);
        let verdict: Verdict<Allowed> = self.call(endpoint, &body, &HeaderMap::new()).await?;
        Ok(verdict.map(|_| ()))
    }

    /// Asks whether a client publication may go ahead; the backend may replace its data.
    pub async fn publish(
        &self,
        url: &str,
        client_id: &str,
        user: &str,
        channel: &str,
        data: &RawValue,
    ) -> Result<Verdict<Option<Box<RawValue>>>, ProxyError> {
        let body = PublishRequest {
            client_id,
            user,
            channel,
            data,
        };
        let endpoint = self.endpoint("publish", url);
        let verdict: Verdict<PublishGrant> = self.call(endpoint, &body, &HeaderMap::new()).await?;
        Ok(verdict.map(|grant| grant.data))
    }

    /// Asks for a new expiry of a connection the connect proxy granted.
    pub async fn refresh(&self, client_id: &str, user: &str) -> Result<Verdict<Grant>, ProxyError> {
        let body = RefreshRequest { client_id, user };
        let endpoint = self.endpoint("refresh", &self.config.refresh_url);
        self.call(endpoint, &body, &HeaderMap::new()).await
    }

    fn endpoint(&self, kind: &'static str, url: &str) -> Option<Arc<Endpoint>> {
        self.endpoints.get(&(kind, url.to_owned())).cloned()
    }

    /// One bounded call: concurrency slot, breaker, timeout, then the answer's verdict.
    async fn call<Req: Serialize, R: DeserializeOwned>(
        &self,
        endpoint: Option<Arc<Endpoint>>,
        body: &Req,
        forwarded: &HeaderMap,
    ) -> Result<Verdict<R>, ProxyError> {
        let Some(endpoint) = endpoint else {
            return Err(ProxyError::BadAnswer {
                kind: "proxy",
                message: "no such proxy URL configured".into(),
            });
        };
        let kind = endpoint.kind;
        let Ok(_slot) = endpoint.slots.try_acquire() else {
            self.metrics.outcome(kind, "busy");
            return Err(ProxyError::Busy(kind));
        };
        // Dropped with this future (the client went away mid-call), `pending` frees the
        // breaker's probe slot.
        let Some(pending) = endpoint.breaker.start() else {
            self.metrics.outcome(kind, "breaker_open");
            return Err(ProxyError::BreakerOpen(kind));
        };
        let started = std::time::Instant::now();
        let result = self.send(&endpoint, body, forwarded).await;
        self.metrics.observe(kind, started.elapsed());
        let state = pending.finish(result.is_ok());
        self.metrics.breaker(kind, state);
        match &result {
            Ok(Verdict::Granted(_)) => self.metrics.outcome(kind, "granted"),
            Ok(Verdict::Refused(_)) => self.metrics.outcome(kind, "refused"),
            Err(err) => {
                self.metrics.outcome(kind, "failed");
                tracing::warn!(kind, error = %describe(err), "backend proxy call failed");
            }
        }
        result
    }

    async fn send<Req: Serialize, R: DeserializeOwned>(
        &self,
        endpoint: &Endpoint,
        body: &Req,
        forwarded: &HeaderMap,
    ) -> Result<Verdict<R>, ProxyError> {
        let kind = endpoint.kind;
        let mut request = self.http.post(&endpoint.url).json(body);
        for (name, value) in forwarded {
            request = request.header(name, value);
        }
        for (name, value) in &self.config.static_headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request.send().await.map_err(|source| {
            if source.is_timeout() {
                ProxyError::Timeout(kind)
            } else {
                ProxyError::Transport { kind, source }
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(ProxyError::Status {
                kind,
                status: status.as_u16(),
            });
        }
        let bytes = response.bytes().await.map_err(|source| {
            if source.is_timeout() {
                ProxyError::Timeout(kind)
            } else {
                ProxyError::Transport { kind, source }
            }
        })?;
        let answer: Answer<R> =
            serde_json::from_slice(&bytes).map_err(|e| ProxyError::BadAnswer {
                kind,
                message: e.to_string(),
            })?;
        match answer {
            Answer {
                result: Some(r),
                error: None,
                disconnect: None,
            } => Ok(Verdict::Granted(r)),
            Answer {
                result: None,
                error: Some(refusal),
                disconnect: None,
            }
            | Answer {
                result: None,
                error: None,
                disconnect: Some(refusal),
            } => Ok(Verdict::Refused(refusal)),
            _ => Err(ProxyError::BadAnswer {
                kind,
                message: "expected exactly one of result, error, disconnect".into(),
            }),
        }
    }
}

/// An error with its causes, `outer: inner: …`.
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Encoding;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[tokio::test]
    async fn a_cancelled_probe_does_not_leave_the_breaker_refusing() -> TestResult {
        // A backend that accepts connections and never answers.
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/connect", backend.local_addr()?);
        let mut config = Config::default();
        config.proxy.connect_url = url.clone();
        config.proxy.breaker_consecutive_failures = 1;
        config.proxy.breaker_open_ms = 0;
        let proxy = BackendProxy::from_config(&config, &prometheus::Registry::new())?
            .ok_or("no proxy built")?;
        let endpoint = proxy.endpoint("connect", &url).ok_or("no endpoint")?;
        endpoint.breaker.record(breaker::Admit::Call, false);
        assert_eq!(endpoint.breaker.state(), BreakerState::Open);
        let forwarded = Forwarded::default();
        // The probe's caller goes away once the backend has the call (a client that
        // disconnected mid-handshake).
        tokio::select! {
            verdict = proxy.connect(&forwarded, Transport::WebSocket, Encoding::Json, None, None) => {
                return Err(format!("the silent backend answered: {verdict:?}").into());
            }
            accepted = backend.accept() => drop(accepted?),
        }
        // The next call is let through as a new probe, not refused forever.
        tokio::select! {
            verdict = proxy.connect(&forwarded, Transport::WebSocket, Encoding::Json, None, None) => {
                Err(format!("the next call did not reach the backend: {verdict:?}").into())
            }
            accepted = backend.accept() => {
                accepted?;
                Ok(())
            }
        }
    }
}
