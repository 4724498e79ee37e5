//! The HTTP API's own thread: a small single-threaded runtime that serves the connections
//! whose first request is an API call (`/api/*`, and the Pusher HTTP API `/apps/*`), so a
//! publish is not queued behind thousands of session polls and fan-out jobs on the main
//! runtime; the operating system's scheduler runs it as soon as its socket is readable.
//!
//! Every connection is accepted on the main runtime. Before HTTP is spoken, the first
//! bytes are peeked (not consumed): an API request moves the socket to this thread, where
//! it stays for its keep-alive life; anything else (WebSocket upgrades, SSE, probes) is
//! served where it was accepted. Publishing from here only hands the publication to the
//! fan-out workers, which run on the main runtime.

use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// How long the thread lets its last tasks finish after the server stopped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Bytes peeked to tell an API request from the rest: the longest method plus the path
/// prefix (`DELETE /apps/`).
pub const PEEK_BYTES: usize = 13;

/// The running API thread; stops when dropped.
pub struct ApiThread {
    handle: Handle,
    stop: CancellationToken,
}

impl ApiThread {
    /// Starts the thread and its runtime.
    pub fn start() -> std::io::Result<ApiThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("pushwire-api".into())
            .spawn(move || {
                runtime.block_on(stopped.cancelled());
                runtime.shutdown_timeout(SHUTDOWN_GRACE);
            })?;
        Ok(ApiThread { handle, stop })
    }

    /// Where API connections are spawned.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for ApiThread {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Whether the start of a connection's first request (`peeked`) is an API call.
pub fn is_api_request(peeked: &[u8]) -> bool {
    let Some(space) = peeked.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (method, rest) = (&peeked[..space], &peeked[space + 1..]);
    matches!(
        method,
        b"GET" | b"POST" | b"PUT" | b"DELETE" | b"HEAD" | b"OPTIONS"
    ) && (rest.starts_with(b"/api/") || rest.starts_with(b"/apps/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_requests_are_told_from_the_rest() {
        assert!(is_api_request(b"POST /api/publish HTTP/1.1\r\n"));
        assert!(is_api_request(b"GET /api/info"));
        assert!(is_api_request(b"POST /apps/42/events"));
        assert!(is_api_request(b"DELETE /apps/"));
        assert!(!is_api_request(b"GET /ws HTTP/1.1\r\n"));
        assert!(!is_api_request(b"GET /app/key?protocol=7"));
        assert!(!is_api_request(b"GET /sse?channel=a"));
        assert!(!is_api_request(b"GET /metrics"));
        assert!(!is_api_request(b"GET /ap"));
        assert!(!is_api_request(b"POST"));
        assert!(!is_api_request(b""));
        assert!(!is_api_request(b"\x16\x03\x01 /api/"));
        assert!(PEEK_BYTES >= b"DELETE /apps/".len());
    }
}
