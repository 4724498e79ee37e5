//! The byte stream tungstenite reads and writes for a session: the upgraded TCP socket,
//! shared (`Arc`) with the client's outbox, which writes data frames to it directly.
//!
//! tungstenite reads through here (first the bytes hyper read past the upgrade request,
//! then the socket). Its writes (close frames, automatic pongs, the `disconnect` sent
//! before a close) go straight to the socket until the client is registered; after
//! that, into the outbox's `unsent` bytes (`ClientHandle::push_control`), so they take
//! their turn with the frames pushes write directly and never land inside one.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::hub::ClientHandle;
use crate::hub::socket::{Progress, RawSocket, try_write_parts};

pub(crate) struct SocketStream {
    socket: Arc<dyn RawSocket>,
    /// Read by hyper past the upgrade request; served before the socket. Boxed: most
    /// connections have none, and it would stay in every session for its life.
    prefix: Option<Box<Bytes>>,
    /// Set once the client is registered: writes go through its outbox.
    client: Option<Arc<ClientHandle>>,
}

impl SocketStream {
    pub(crate) fn new(socket: Arc<dyn RawSocket>, prefix: Bytes) -> Self {
        SocketStream {
            socket,
            prefix: detached(prefix),
            client: None,
        }
    }

    pub(crate) fn socket(&self) -> &Arc<dyn RawSocket> {
        &self.socket
    }

    /// From now on, writes go through `client`'s outbox.
    pub(crate) fn route_through(&mut self, client: Arc<ClientHandle>) {
        self.client = Some(client);
    }

    /// Writes whatever the outbox holds unsent, waiting for the socket when it is full.
    fn poll_unsent(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(client) = &self.client else {
            return Poll::Ready(Ok(()));
        };
        loop {
            if client.flush_unsent(&*self.socket)? == Progress::Done {
                return Poll::Ready(Ok(()));
            }
            ready!(self.socket.poll_write_ready(cx))?;
        }
    }
}

/// `prefix` in an allocation of its own: hyper hands over a slice of its read buffer
/// (8 KiB or more), which would otherwise stay allocated for the connection's life even
/// when the slice is empty.
fn detached(prefix: Bytes) -> Option<Box<Bytes>> {
    (!prefix.is_empty()).then(|| Box::new(Bytes::copy_from_slice(&prefix)))
}

/// Moves what fits of `bytes` (read earlier) into `buf`; true once `bytes` is used up.
fn read_from(bytes: &mut Bytes, buf: &mut ReadBuf<'_>) -> bool {
    let n = bytes.len().min(buf.remaining());
    buf.put_slice(&bytes[..n]);
    bytes.advance(n);
    bytes.is_empty()
}

impl Drop for SocketStream {
    fn drop(&mut self) {
        if let Some(client) = &self.client {
            client.detach_socket();
        }
    }
}

impl AsyncRead for SocketStream {
    // Inlined into tungstenite's read adapter: out of line (as the code generator chose
    // once `read_ahead` and `Replayed` were added) it cost about 230 instructions per
    // queued delivery, since every wake-up polls the socket (docs/benchmarks.md).
    #[inline]
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(prefix) = self.prefix.as_deref_mut() {
            if read_from(prefix, buf) {
                self.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(self.socket.poll_read_ready(cx))?;
            let read = if buf.remaining() < READ_AHEAD_BYTES {
                self.read_ahead(buf)
            } else {
                self.socket
                    .try_read(buf.initialize_unfilled())
                    .map(|n| buf.advance(n))
            };
            match read {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

/// Reads shorter than this go through a per-thread buffer of this size (`read_ahead`).
const READ_AHEAD_BYTES: usize = 2048;

thread_local! {
    static READ_AHEAD: std::cell::RefCell<[u8; READ_AHEAD_BYTES]> =
        const { std::cell::RefCell::new([0; READ_AHEAD_BYTES]) };
}

impl SocketStream {
    /// One read of up to `READ_AHEAD_BYTES`, for a reader that asks for less (tungstenite
    /// asks for `client.read_buffer_bytes`, 128 by default, until it knows a frame's
    /// length): what does not fit in `buf` is kept as the prefix, so a frame longer than
    /// the ask (a `connect` with a token) costs one read syscall, not two. An idle
    /// connection keeps nothing: the prefix lives only until it is read.
    fn read_ahead(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<()> {
        READ_AHEAD.with_borrow_mut(|ahead| {
            let n = self.socket.try_read(ahead)?;
            let taken = n.min(buf.remaining());
            buf.put_slice(&ahead[..taken]);
            if taken < n {
                self.prefix = Some(Box::new(Bytes::copy_from_slice(&ahead[taken..n])));
            }
            Ok(())
        })
    }
}

impl AsyncWrite for SocketStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(client) = &self.client {
            // Taken whole: tungstenite hands over whole frames, and they stay whole.
            client.push_control(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        loop {
            let mut parts = [buf];
            match try_write_parts(&*self.socket, &mut parts)? {
                Progress::Done => return Poll::Ready(Ok(buf.len())),
                Progress::Blocked if parts[0].len() < buf.len() => {
                    return Poll::Ready(Ok(buf.len() - parts[0].len()));
                }
                Progress::Blocked => ready!(self.socket.poll_write_ready(cx))?,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_unsent(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_unsent(cx))?;
        Poll::Ready(self.socket.shutdown_write())
    }
}

/// A TCP stream whose first bytes were already read (`crate::server`'s look at the first
/// request): hyper reads them again from here, then the socket.
pub(crate) struct Replayed {
    stream: tokio::net::TcpStream,
    read: Bytes,
}

impl Replayed {
    pub(crate) fn new(stream: tokio::net::TcpStream, read: Bytes) -> Self {
        Replayed { stream, read }
    }

    /// The socket, and what of the replayed bytes was not read yet.
    pub(crate) fn into_parts(self) -> (tokio::net::TcpStream, Bytes) {
        (self.stream, self.read)
    }
}

impl AsyncRead for Replayed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            if read_from(&mut self.read, buf) {
                // An empty slice would keep the whole read buffer for the connection's life.
                self.read = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replayed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
