//! A webhook endpoint for tests: a real HTTP server (axum on 127.0.0.1:0) that records
//! every request it gets (headers and raw body) and can be told to fail the next ones.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{TestResult, WAIT, fail};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> TestResult<Value> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// The body's `events`.
    pub fn events(&self) -> TestResult<Vec<Value>> {
        match self.json()?.get("events") {
            Some(Value::Array(events)) => Ok(events.clone()),
            _ => fail(format!("no events array in {:?}", self.body)),
        }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

struct Shared {
    requests: mpsc::UnboundedSender<Received>,
    /// Requests still to answer with 500.
    fail_next: AtomicUsize,
    attempts: AtomicUsize,
}

/// The running receiver; stops when dropped.
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    requests: mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
    /// Events taken from bodies but not yet handed out by `event`.
    pending: std::collections::VecDeque<(Value, Received)>,
}

impl WebhookReceiver {
    pub async fn start() -> TestResult<WebhookReceiver> {
        let (tx, requests) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            requests: tx,
            fail_next: AtomicUsize::new(0),
            attempts: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(WebhookReceiver {
            addr,
            shared,
            requests,
            task,
            pending: Default::default(),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers the next `n` requests with 500 (they are not recorded).
    pub fn fail_next(&self, n: usize) {
        self.shared.fail_next.store(n, Ordering::SeqCst);
    }

    /// Every request that arrived, failed ones included.
    pub fn attempts(&self) -> usize {
        self.shared.attempts.load(Ordering::SeqCst)
    }

    /// The next accepted request, within `WAIT`.
    pub async fn request(&mut self) -> TestResult<Received> {
        match tokio::time::timeout(WAIT, self.requests.recv()).await {
            Ok(Some(received)) => Ok(received),
            _ => fail(format!("no webhook request within {WAIT:?}")),
        }
    }

    /// The next event (bodies are split into their events), with its request.
    pub async fn event(&mut self) -> TestResult<(Value, Received)> {
        while self.pending.is_empty() {
            let received = self.request().await?;
            for event in received.events()? {
                self.pending.push_back((event, received.clone()));
            }
        }
        self.pending.pop_front().ok_or_else(|| "no event".into())
    }

    /// The next event's `name` and `channel`.
    pub async fn next_named(&mut self) -> TestResult<(String, String)> {
        let (event, _) = self.event().await?;
        Ok((
            event["name"].as_str().unwrap_or_default().to_owned(),
            event["channel"].as_str().unwrap_or_default().to_owned(),
        ))
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    shared.attempts.fetch_add(1, Ordering::SeqCst);
    let failing = shared
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let _ = shared.requests.send(Received { headers, body });
    StatusCode::OK
}
