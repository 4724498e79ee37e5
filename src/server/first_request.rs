//! The head of a connection's first request, read before hyper sees the connection, so a
//! WebSocket upgrade (`GET /ws`, `GET /app/{key}`) is answered without hyper's
//! per-connection machinery (`session::upgrade_raw`): one read, one parse, one write.
//!
//! Anything else is served by hyper from the same bytes (`session::Replayed` gives them
//! back first): other paths, heads that are odd in any way (HTTP/1.0, a body, more than
//! `MAX_HEADERS` headers, longer than `MAX_HEAD_BYTES`, a malformed line), and upgrades the
//! fast path would refuse, so every error answer still comes from one place. An API request
//! is handed over after its first read: the fast path only waits for more of a head that
//! can still be an upgrade.

use std::io;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::net::TcpStream;

/// The longest head the fast path reads; a longer one (cookies, say) goes to hyper with
/// what was read.
pub(crate) const MAX_HEAD_BYTES: usize = 8 * 1024;

/// The first read's buffer: a browser's upgrade request without cookies is 400–700 bytes.
const FIRST_READ_BYTES: usize = 1024;

/// Headers the fast path parses; a request with more goes to hyper.
const MAX_HEADERS: usize = 32;

/// Request-line starts the fast path answers.
const UPGRADE_PREFIXES: [&[u8]; 3] = [b"GET /ws ", b"GET /ws?", b"GET /app/"];

/// What the first reads of a connection found.
pub(super) enum FirstBytes {
    /// A complete head of a request the fast path may answer (its bytes, and any sent
    /// after it).
    Upgrade(Bytes),
    /// Anything else, for hyper: the bytes read so far (possibly none).
    Other(Bytes),
}

/// Reads until the head of the first request is complete or it cannot be an upgrade.
/// The caller bounds the time (`server.handshake_timeout_secs`).
pub(super) async fn read(stream: &TcpStream) -> io::Result<FirstBytes> {
    let mut buf = BytesMut::with_capacity(FIRST_READ_BYTES);
    loop {
        let scanned = buf.len();
        if buf.len() == buf.capacity() {
            if buf.len() >= MAX_HEAD_BYTES {
                return Ok(FirstBytes::Other(buf.freeze()));
            }
            buf.reserve(buf.len().min(MAX_HEAD_BYTES - buf.len()));
        }
        stream.readable().await?;
        match stream.try_read_buf(&mut buf) {
            Ok(0) => return Ok(FirstBytes::Other(buf.freeze())),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Err(err) => return Err(err),
        }
        match sniff(&buf, scanned) {
            Sniff::Upgrade => return Ok(FirstBytes::Upgrade(buf.freeze())),
            Sniff::Other => return Ok(FirstBytes::Other(buf.freeze())),
            Sniff::NeedMore => {}
        }
    }
}

enum Sniff {
    Upgrade,
    Other,
    NeedMore,
}

/// Whether `buf` (the bytes read so far, the first `scanned` of them looked at before)
/// is a complete upgrade candidate's head, cannot be one, or may become one.
fn sniff(buf: &[u8], scanned: usize) -> Sniff {
    let candidate = UPGRADE_PREFIXES.iter().any(|prefix| {
        let n = prefix.len().min(buf.len());
        buf[..n] == prefix[..n]
    });
    if !candidate {
        return Sniff::Other;
    }
    if UPGRADE_PREFIXES
        .iter()
        .any(|prefix| buf.starts_with(prefix))
        && head_complete(buf, scanned)
    {
        return Sniff::Upgrade;
    }
    Sniff::NeedMore
}

/// Whether `buf` holds the empty line that ends a head (`\r\n\r\n`, or bare `\n\n`, which
/// the parser also accepts), looking only where an end could not have been seen before
/// `scanned` (a head that arrives byte by byte is not scanned again and again).
fn head_complete(buf: &[u8], scanned: usize) -> bool {
    let from = scanned.saturating_sub(2);
    buf[from..].iter().enumerate().any(|(i, &b)| {
        b == b'\n'
            && match buf.get(from + i + 1) {
                Some(b'\n') => true,
                Some(b'\r') => buf.get(from + i + 2) == Some(&b'\n'),
                _ => false,
            }
    })
}

/// A parsed upgrade candidate: its path, query and headers (sharing `bytes`).
pub(crate) struct Head<'a> {
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: HeaderMap,
    /// Bytes of the head; the rest of the buffer was sent after it.
    pub len: usize,
}

impl<'a> Head<'a> {
    /// `None` for anything the fast path leaves to hyper: not an HTTP/1.1 `GET`, a
    /// malformed or over-long head, a request with a body.
    pub(crate) fn parse(bytes: &'a Bytes) -> Option<Head<'a>> {
        let mut parsed = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut parsed);
        let httparse::Status::Complete(len) = request.parse(bytes).ok()? else {
            return None;
        };
        if request.method != Some("GET") || request.version != Some(1) {
            return None;
        }
        let target = request.path?;
        // What `http::Uri` would refuse, or read differently (a fragment), is hyper's.
        if target.contains('#')
            || http::uri::PathAndQuery::from_maybe_shared(bytes.slice_ref(target.as_bytes()))
                .is_err()
        {
            return None;
        }
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let mut headers = HeaderMap::with_capacity(request.headers.len());
        for header in request.headers.iter() {
            let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
            if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
                return None;
            }
            let value = HeaderValue::from_maybe_shared(bytes.slice_ref(header.value)).ok()?;
            headers.append(name, value);
        }
        Some(Head {
            path,
            query,
            headers,
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n\x81\x05hello";

    #[test]
    fn sniff_tells_upgrades_from_the_rest_as_early_as_it_can() {
        assert!(matches!(
            sniff(b"POST /api/publish HTTP/1.1\r\n", 0),
            Sniff::Other
        ));
        assert!(matches!(
            sniff(b"GET /metrics HTTP/1.1\r\n", 0),
            Sniff::Other
        ));
        assert!(matches!(sniff(b"GET /wss HTTP/1.1\r\n", 0), Sniff::Other));
        assert!(matches!(
            sniff(b"GET /sse?channel=a HTTP/1.1\r\n", 0),
            Sniff::Other
        ));
        assert!(matches!(sniff(b"GE", 0), Sniff::NeedMore));
        assert!(matches!(sniff(b"GET /w", 0), Sniff::NeedMore));
        assert!(matches!(
            sniff(b"GET /ws HTTP/1.1\r\nHost: a\r\n", 0),
            Sniff::NeedMore
        ));
        assert!(matches!(
            sniff(b"GET /ws HTTP/1.1\r\n\r\n", 0),
            Sniff::Upgrade
        ));
        assert!(matches!(
            sniff(b"GET /app/k HTTP/1.1\n\n", 0),
            Sniff::Upgrade
        ));
        assert!(matches!(sniff(UPGRADE, 0), Sniff::Upgrade));
        // A head that arrives in pieces: the end is found across the pieces' seam.
        let head = b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n";
        for seam in 1..head.len() {
            assert!(!head_complete(&head[..seam], 0), "seam {seam}");
            assert!(head_complete(head, seam), "seam {seam}");
        }
    }

    #[test]
    fn parse_splits_the_target_and_keeps_what_follows_the_head() {
        let bytes = Bytes::from_static(UPGRADE);
        let head = Head::parse(&bytes).expect("a valid head");
        assert_eq!((head.path, head.query), ("/ws", Some("x=1")));
        assert_eq!(head.headers["upgrade"], "websocket");
        assert_eq!(head.headers.len(), 5);
        assert_eq!(&bytes[head.len..], b"\x81\x05hello");
    }

    #[test]
    fn parse_leaves_odd_requests_to_hyper() {
        let parse = |raw: &'static [u8]| Head::parse(&Bytes::from_static(raw)).is_some();
        assert!(parse(b"GET /ws HTTP/1.1\r\n\r\n"));
        assert!(!parse(b"GET /ws HTTP/1.0\r\n\r\n"));
        assert!(!parse(b"GET /ws HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"));
        assert!(!parse(
            b"GET /ws HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!parse(b"GET /ws HTTP/1.1\r\nBad Header\r\n\r\n"));
        assert!(!parse(b"GET /ws HTTP/1.1\r\nHost: a\r\n"));
        assert!(!parse(b"GET /app/k?protocol=7#x HTTP/1.1\r\n\r\n"));
        assert!(!parse(b"GET /ws?a=<b> HTTP/1.1\r\n\r\n"));
        let many: &'static [u8] = format!(
            "GET /ws HTTP/1.1\r\n{}\r\n",
            "X-A: 1\r\n".repeat(MAX_HEADERS + 1)
        )
        .leak()
        .as_bytes();
        assert!(!parse(many));
    }
}
