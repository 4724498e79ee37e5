//! The accept loop and how each accepted connection is served: `TCP_NODELAY`, the
//! API thread's first look (`route_connection`), the server's own read of the first
//! request head, where WebSocket upgrades are answered without hyper
//! (`serve_connection`, `first_request`), and hyper's HTTP/1.1 for the rest
//! (`serve_http1`, with the header-read timeout and graceful shutdown).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{Service as _, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::api_thread;
use super::first_request::{self, FirstBytes, Head};
use crate::session::{self, Replayed};
use crate::state::AppState;

/// How long to wait after a failed `accept` (out of file descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What a listener serves.
pub(super) enum Serves {
    /// Clients and the API: WebSocket upgrades answered before hyper (`serve_connection`);
    /// with `api`, connections that open with an API request move to that runtime (see
    /// `api_thread`).
    Clients { api: Option<tokio::runtime::Handle> },
    /// Only what its router has (the metrics listener): no upgrade skips it.
    RouterOnly,
}

/// Accepts connections until `stop`, each served on its own task; returns once every
/// connection task has finished. Used instead of `axum::serve` because that cannot bound
/// the time a client takes to send its request headers.
pub(super) async fn serve_http(
    listener: TcpListener,
    router: Router,
    state: Arc<AppState>,
    stop: CancellationToken,
    serves: Serves,
) {
    let connections = TaskTracker::new();
    let mut nodelay = NoDelay::Unknown;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                nodelay.ensure(&stream);
                let connection = Connection {
                    peer,
                    router: router.clone(),
                    state: state.clone(),
                    stop: stop.clone(),
                };
                match &serves {
                    Serves::Clients { api: Some(api) } => {
                        let task =
                            route_connection(stream, connection, api.clone(), connections.clone());
                        connections.spawn(task);
                    }
                    Serves::Clients { api: None } => {
                        connections.spawn(serve_connection(stream, connection));
                    }
                    Serves::RouterOnly => {
                        let stream = Replayed::new(stream, Bytes::new());
                        connections.spawn(serve_http1(stream, connection));
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Whether accepted sockets come with `TCP_NODELAY` (push frames are small and
/// latency-sensitive). The listener has it set; Linux copies it to every accepted socket,
/// which saves a `setsockopt` per connection. Checked once, on the first connection.
enum NoDelay {
    Unknown,
    Inherited,
    SetEach,
}

impl NoDelay {
    fn ensure(&mut self, stream: &TcpStream) {
        if let NoDelay::Unknown = self {
            *self = match stream.nodelay() {
                Ok(true) => NoDelay::Inherited,
                _ => NoDelay::SetEach,
            };
        }
        if let NoDelay::SetEach = self {
            let _ = stream.set_nodelay(true);
        }
    }
}

/// What serving one accepted connection needs.
struct Connection {
    peer: SocketAddr,
    router: Router,
    state: Arc<AppState>,
    stop: CancellationToken,
}

/// Peeks at the first request of a connection and moves it to the API runtime `api` when
/// it is an API call; serves it here otherwise. The peek waits at most
/// `server.handshake_timeout_secs`, like the request headers.
async fn route_connection(
    stream: TcpStream,
    connection: Connection,
    api: tokio::runtime::Handle,
    connections: TaskTracker,
) {
    let timeout = Duration::from_secs(connection.state.config().server.handshake_timeout_secs);
    let mut start = [0u8; api_thread::PEEK_BYTES];
    let peeked = match tokio::time::timeout(timeout, stream.peek(&mut start)).await {
        Ok(Ok(n)) => n,
        Ok(Err(_)) => return,
        Err(_) => {
            connection.state.metrics.limit_tripped("handshake_timeout");
            return;
        }
    };
    if !api_thread::is_api_request(&start[..peeked]) {
        return serve_connection(stream, connection).await;
    }
    // Leave this runtime's reactor; the API runtime registers the socket with its own.
    let Ok(stream) = stream.into_std() else {
        return;
    };
    connections.spawn_on(
        async move {
            if let Ok(stream) = TcpStream::from_std(stream) {
                serve_connection(stream, connection).await;
            }
        },
        &api,
    );
}

/// Serves one HTTP/1.1 connection. The head of its first request is read here, within
/// `server.handshake_timeout_secs` (slowloris): a WebSocket upgrade is answered at once
/// without hyper (`first_request`, `session::upgrade_raw`); anything else goes to hyper
/// with the bytes already read.
async fn serve_connection(stream: TcpStream, connection: Connection) {
    let timeout = Duration::from_secs(connection.state.config().server.handshake_timeout_secs);
    let first = tokio::select! {
        // A request that has arrived is answered even when the stop comes with it.
        biased;
        first = tokio::time::timeout(timeout, first_request::read(&stream)) => first,
        _ = connection.stop.cancelled() => return,
    };
    // What hyper serves: everything but an upgrade answered here.
    let (stream, read) = match first {
        Ok(Ok(FirstBytes::Upgrade(bytes))) => {
            match answer_upgrade(stream, &bytes, &connection).await {
                Some(stream) => (stream, bytes),
                None => return,
            }
        }
        Ok(Ok(FirstBytes::Other(bytes))) => (stream, bytes),
        Ok(Err(err)) => {
            tracing::debug!(peer = %connection.peer, error = %err, "HTTP connection failed");
            return;
        }
        Err(_) => {
            connection.state.metrics.limit_tripped("handshake_timeout");
            return;
        }
    };
    serve_http1(Replayed::new(stream, read), connection).await;
}

/// Answers the upgrade whose head is in `bytes` without hyper; gives the stream back
/// when hyper must serve the connection (a head it parses differently, or a refusal).
async fn answer_upgrade(
    stream: TcpStream,
    bytes: &Bytes,
    connection: &Connection,
) -> Option<TcpStream> {
    let Some(head) = Head::parse(bytes) else {
        return Some(stream);
    };
    session::upgrade_raw(&connection.state, stream, bytes, head, connection.peer)
        .await
        .err()
}

/// Serves an HTTP/1.1 connection with hyper, WebSocket upgrades included. Request headers
/// must arrive within `server.handshake_timeout_secs` (slowloris; it also ends idle
/// keep-alive connections). Each request carries the peer address as `ConnectInfo`, as
/// axum's `into_make_service_with_connect_info` would add it.
async fn serve_http1(stream: Replayed, connection: Connection) {
    let Connection {
        peer,
        router,
        state,
        stop,
    } = connection;
    let timeout = Duration::from_secs(state.config().server.handshake_timeout_secs);
    let router = TowerToHyperService::new(router);
    let service = service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.call(request)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeout);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        if err.is_timeout() {
            state.metrics.limit_tripped("handshake_timeout");
        }
        tracing::debug!(peer = %peer, error = %err, "HTTP connection failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the listener's `TCP_NODELAY` is inherited or set per socket, every
    /// accepted socket has it.
    #[tokio::test]
    async fn accepted_sockets_have_nodelay() -> Result<(), Box<dyn std::error::Error>> {
        let listener = crate::server::bind("127.0.0.1:0", 16, 0)?;
        let addr = listener.local_addr()?;
        let mut nodelay = NoDelay::Unknown;
        for _ in 0..2 {
            let _client = TcpStream::connect(addr).await?;
            let (stream, _) = listener.accept().await?;
            nodelay.ensure(&stream);
            assert!(stream.nodelay()?);
        }
        assert!(!matches!(nodelay, NoDelay::Unknown));
        Ok(())
    }
}
