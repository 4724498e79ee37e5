//! The socket under a WebSocket client, as both its session and the hub's outbox use it:
//! non-blocking reads and vectored writes through a shared reference (`RawSocket`), the
//! header of a server data frame, and writing a list of byte slices whole.
//!
//! Architecture Invariant: nothing here waits while holding anything; a write that would
//! block says so (`Progress::Blocked`) and the caller decides whether to queue (the
//! outbox) or to wait for the socket to become writable (the session).

use std::io::{self, IoSlice};
use std::task::{Context, Poll};

/// A connected stream socket shared by reference: the session reads it and writes what
/// it must wait for, the outbox writes to it straight from a push.
pub trait RawSocket: Send + Sync + 'static {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Writes without waiting; `WouldBlock` when the send buffer is full.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Half-closes: no more writes (the lingering close reads on).
    fn shutdown_write(&self) -> io::Result<()>;
}

/// Whether a read that returns less than asked for shows the socket's receive buffer was
/// drained: true under edge-triggered readiness (epoll, kqueue), where tokio's
/// `poll_read` relies on it too.
const SHORT_READ_DRAINS: bool = cfg!(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly",
));

macro_rules! raw_socket_for {
    ($stream:ty) => {
        impl RawSocket for $stream {
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$stream>::poll_read_ready(self, cx)
            }
            fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
                if !SHORT_READ_DRAINS {
                    return <$stream>::try_read(self, buf);
                }
                // A read that fills less than `buf` emptied the receive buffer: clear the
                // read readiness (reporting `WouldBlock` to `try_io`), as tokio's own
                // `poll_read` does, so the next read waits for the next readiness event
                // instead of making a syscall that returns `WouldBlock`. Every session
                // frame would otherwise cost that extra syscall.
                let len = buf.len();
                let mut read = 0;
                let result = self.try_io(tokio::io::Interest::READABLE, || {
                    read = <$stream>::try_read(self, buf)?;
                    if 0 < read && read < len {
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    Ok(read)
                });
                match result {
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock && read > 0 => Ok(read),
                    result => result,
                }
            }
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$stream>::poll_write_ready(self, cx)
            }
            fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                <$stream>::try_write_vectored(self, bufs)
            }
            fn shutdown_write(&self) -> io::Result<()> {
                socket2::SockRef::from(self).shutdown(std::net::Shutdown::Write)
            }
        }
    };
}

raw_socket_for!(tokio::net::TcpStream);
raw_socket_for!(tokio::net::UnixStream);

/// The WebSocket opcode of a data frame: text (JSON, Pusher) or binary (MessagePack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Text = 0x1,
    Binary = 0x2,
}

/// The header of an unmasked, final server data frame (RFC 6455 section 5.2). Returns the
/// buffer and how much of it is used.
pub fn frame_header(opcode: Opcode, payload_len: usize) -> ([u8; 10], usize) {
    let mut header = [0u8; 10];
    header[0] = 0x80 | opcode as u8;
    let used = match payload_len {
        0..=125 => {
            header[1] = payload_len as u8;
            2
        }
        126..=0xFFFF => {
            header[1] = 126;
            header[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            4
        }
        _ => {
            header[1] = 127;
            header[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        }
    };
    (header, used)
}

/// What a non-blocking write of a list of slices achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Everything was written.
    Done,
    /// The socket's send buffer is full; the slices were advanced past what was written.
    Blocked,
}

/// Writes `parts` in order without waiting, advancing them past what was written (so a
/// later call resumes exactly there). Errors other than `WouldBlock` are returned.
pub fn try_write_parts(socket: &dyn RawSocket, parts: &mut [&[u8]]) -> io::Result<Progress> {
    loop {
        let mut slices = [IoSlice::new(&[]); 4];
        let mut count = 0;
        for part in parts.iter().filter(|p| !p.is_empty()) {
            if count == slices.len() {
                break;
            }
            slices[count] = IoSlice::new(part);
            count += 1;
        }
        if count == 0 {
            return Ok(Progress::Done);
        }
        let written = match socket.try_write_vectored(&slices[..count]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(Progress::Blocked),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        advance(parts, written);
    }
}

/// Moves `parts` past `written` bytes.
pub fn advance(parts: &mut [&[u8]], mut written: usize) {
    for part in parts.iter_mut() {
        let step = written.min(part.len());
        *part = &part[step..];
        written -= step;
        if written == 0 {
            break;
        }
    }
}

/// Writes `parts` whole, waiting for the socket when it is full.
pub async fn write_parts(socket: &dyn RawSocket, parts: &mut [&[u8]]) -> io::Result<()> {
    loop {
        if try_write_parts(socket, parts)? == Progress::Done {
            return Ok(());
        }
        std::future::poll_fn(|cx| socket.poll_write_ready(cx)).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_use_the_shortest_length_form() {
        let header = |opcode, len| {
            let (bytes, used) = frame_header(opcode, len);
            bytes[..used].to_vec()
        };
        assert_eq!(header(Opcode::Text, 0), [0x81, 0]);
        assert_eq!(header(Opcode::Binary, 125), [0x82, 125]);
        assert_eq!(header(Opcode::Text, 126), [0x81, 126, 0, 126]);
        assert_eq!(header(Opcode::Text, 65_535), [0x81, 126, 0xFF, 0xFF]);
        assert_eq!(
            header(Opcode::Binary, 65_536),
            [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn advancing_skips_whole_and_partial_parts() {
        let (a, b, c) = (&b"abc"[..], &b"de"[..], &b"fgh"[..]);
        let mut parts = [a, b, c];
        advance(&mut parts, 4);
        assert_eq!(parts, [&b""[..], &b"e"[..], &b"fgh"[..]]);
        advance(&mut parts, 2);
        assert_eq!(parts, [&b""[..], &b""[..], &b"gh"[..]]);
    }

    /// A full socket buffer: writes stop with `Blocked`, resume where they stopped, and
    /// the reader gets every byte once, in order.
    #[tokio::test]
    async fn blocked_writes_resume_where_they_stopped() -> io::Result<()> {
        use tokio::io::AsyncReadExt;
        let (writer, mut reader) = tokio::net::UnixStream::pair()?;
        let payload: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        let (header, used) = frame_header(Opcode::Binary, payload.len());
        let mut parts = [&header[..used], &payload[..]];
        assert_eq!(try_write_parts(&writer, &mut parts)?, Progress::Blocked);
        let expected: Vec<u8> = header[..used].iter().chain(&payload).copied().collect();
        let read = tokio::spawn(async move {
            let mut got = vec![0; expected.len()];
            reader.read_exact(&mut got).await.map(|_| got == expected)
        });
        write_parts(&writer, &mut parts).await?;
        assert!(read.await.map_err(io::Error::other)??);
        Ok(())
    }
}
