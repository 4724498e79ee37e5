//! Unit tests of the outbox: bounds, eviction, replays, batches, direct writes, and the
//! queue buffer kept while busy.

use std::sync::Arc;

use super::*;
use crate::hub::ClientId;
use crate::protocol::Encoding;

fn client() -> ClientHandle {
    ClientHandle::new(ClientId(1), Arc::from(""), Encoding::Json, None, 0, 0)
}

const LIMITS: QueueLimits = QueueLimits {
    max_messages: 3,
    max_bytes: 10,
};

#[test]
fn overflow_by_count_discards_and_closes_4008() {
    let c = client();
    for _ in 0..3 {
        assert_eq!(c.push(Bytes::from_static(b"a"), LIMITS), Ok(()));
    }
    assert_eq!(
        c.push(Bytes::from_static(b"a"), LIMITS),
        Err(PushError::Overflow)
    );
    assert_eq!(
        c.push(Bytes::from_static(b"a"), LIMITS),
        Err(PushError::Closed)
    );
    let batch = c.take_batch(1000);
    assert!(batch.items.is_empty());
    assert_eq!(batch.closing.map(|c| c.code), Some(CloseCode::SlowConsumer));
}

#[test]
fn overflow_by_bytes() {
    let c = client();
    assert_eq!(c.push(Bytes::from_static(b"123456"), LIMITS), Ok(()));
    assert_eq!(
        c.push(Bytes::from_static(b"12345"), LIMITS),
        Err(PushError::Overflow)
    );
}

#[test]
fn batches_respect_max_bytes_but_take_at_least_one() {
    let c = client();
    let limits = QueueLimits {
        max_messages: 10,
        max_bytes: 100,
    };
    for item in [&b"aaaa"[..], b"bbbb", b"cccccccccc"] {
        assert_eq!(c.push(Bytes::copy_from_slice(item), limits), Ok(()));
    }
    assert_eq!(c.take_batch(8).items.len(), 2);
    assert_eq!(c.take_batch(4).items.len(), 1);
    assert!(c.take_batch(4).items.is_empty());
}

#[test]
fn graceful_close_flushes_first() {
    let c = client();
    let limits = QueueLimits {
        max_messages: 10,
        max_bytes: 100,
    };
    assert_eq!(c.push(Bytes::from_static(b"x"), limits), Ok(()));
    assert!(c.close(CloseCode::GoingAway, "bye", false));
    assert!(!c.close(CloseCode::SlowConsumer, "late", true));
    let first = c.take_batch(100);
    assert_eq!(first.items.len(), 1);
    assert_eq!(first.closing.map(|c| c.code), Some(CloseCode::GoingAway));
}

#[test]
fn replays_do_not_count_against_the_live_bounds() {
    let c = client();
    let limits = QueueLimits {
        max_messages: 10,
        max_bytes: 30,
    };
    let replay = vec![Bytes::from_static(b"0123456789"); 3];
    assert_eq!(c.push_replay(replay, limits), Ok(()));
    assert_eq!(c.push(Bytes::from_static(b"live"), limits), Ok(()));
    assert_eq!(c.take_batch(1000).items.len(), 4);
    for _ in 0..3 {
        assert_eq!(c.push(Bytes::from_static(b"0123456789"), limits), Ok(()));
    }
    assert_eq!(
        c.push(Bytes::from_static(b"a"), limits),
        Err(PushError::Overflow)
    );
}

#[test]
fn a_replay_that_does_not_fit_twice_the_bounds_is_refused_whole() {
    let c = client();
    let big = vec![Bytes::from_static(b"0123456789"); 3];
    assert_eq!(c.push_replay(big, LIMITS), Err(PushError::NoRoom));
    assert_eq!(c.queue_len(), 0);
    let fits = vec![Bytes::from_static(b"0123456789"); 2];
    assert_eq!(c.push_replay(fits.clone(), LIMITS), Ok(()));
    // The queue is at twice its byte bound: no further replay, and no live push.
    assert_eq!(c.push_replay(fits, LIMITS), Err(PushError::NoRoom));
    assert_eq!(
        c.push(Bytes::from_static(b"a"), LIMITS),
        Err(PushError::Overflow)
    );
}

#[test]
fn live_messages_ahead_of_a_recovery_are_counted_once() {
    let c = client();
    let limits = QueueLimits {
        max_messages: 3,
        max_bytes: 100,
    };
    assert_eq!(c.push(Bytes::from_static(b"live-1"), limits), Ok(()));
    let replay = vec![Bytes::from_static(b"0123456789"); 5];
    assert_eq!(c.push_replay(replay, limits), Ok(()));
    // Taking only the live message must not consume the replay's allowance.
    assert_eq!(c.take_batch(1).items.len(), 1);
    assert_eq!(c.push(Bytes::from_static(b"live-2"), limits), Ok(()));
}

#[test]
fn an_ended_subscription_delivers_nothing() {
    let c = Arc::new(client());
    let subscription = Subscription::new(c.clone());
    let limits = QueueLimits {
        max_messages: 10,
        max_bytes: 100,
    };
    assert_eq!(
        c.push_live(&Bytes::from_static(b"a"), limits, &subscription, true),
        Ok(())
    );
    subscription.end();
    assert_eq!(
        c.push_live(&Bytes::from_static(b"b"), limits, &subscription, true),
        Err(PushError::Unsubscribed)
    );
    assert_eq!(c.queue_len(), 1);
}

/// Reads exactly `len` bytes the server side wrote.
async fn read_exact(reader: &mut tokio::net::UnixStream, len: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = vec![0; len];
    let read = reader.read_exact(&mut got).await;
    assert!(read.is_ok(), "read failed: {read:?}");
    got
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let (header, used) = frame_header(Opcode::Text, payload.len());
    header[..used].iter().chain(payload).copied().collect()
}

fn attached() -> std::io::Result<(ClientHandle, tokio::net::UnixStream)> {
    let (server, reader) = tokio::net::UnixStream::pair()?;
    let c = client();
    c.attach_socket(Arc::new(server), Opcode::Text);
    Ok((c, reader))
}

#[tokio::test]
async fn a_push_with_nothing_pending_is_written_straight_to_the_socket() -> std::io::Result<()> {
    let (c, mut reader) = attached()?;
    let limits = QueueLimits {
        max_messages: 10,
        max_bytes: 100,
    };
    assert_eq!(c.push(Bytes::from_static(b"hello"), limits), Ok(()));
    assert_eq!(c.queue_len(), 0);
    assert_eq!(read_exact(&mut reader, 7).await, framed(b"hello"));
    assert_eq!(c.take_direct_counts(), (1, 5));
    // While the session writes, pushes queue behind its write.
    let mut turn = WriteTurn::default();
    assert_eq!(
        c.push_replay(vec![Bytes::from_static(b"r")], limits),
        Ok(())
    );
    c.take_write(1000, usize::MAX, &mut turn);
    assert_eq!(turn.items.len(), 1);
    assert_eq!(c.push(Bytes::from_static(b"later"), limits), Ok(()));
    assert_eq!(c.queue_len(), 1);
    c.take_write(1000, usize::MAX, &mut turn);
    assert_eq!(turn.items, vec![Bytes::from_static(b"later")]);
    c.take_write(1000, usize::MAX, &mut turn);
    assert!(turn.is_empty());
    // The session is done: direct again.
    assert_eq!(c.push(Bytes::from_static(b"again"), limits), Ok(()));
    assert_eq!(c.queue_len(), 0);
    assert_eq!(read_exact(&mut reader, 7).await, framed(b"again"));
    Ok(())
}

/// A socket that stops draining: the frame it cut short is finished first, later frames
/// queue in order behind it, nothing interleaves, and the queue bound still evicts.
#[tokio::test]
async fn a_full_socket_falls_back_to_the_queue_in_order_and_still_evicts() -> std::io::Result<()> {
    let (c, mut reader) = attached()?;
    let limits = QueueLimits {
        max_messages: 1000,
        max_bytes: 1 << 20,
    };
    let frame = |i: usize| Bytes::from(format!("{i:05}").repeat(2000));
    let mut pushed = 0;
    while c.queue_len() < 5 {
        assert_eq!(c.push(frame(pushed), limits), Ok(()));
        pushed += 1;
    }
    let mut turn = WriteTurn::default();
    c.take_write(usize::MAX, usize::MAX, &mut turn);
    assert_eq!(turn.items.len(), 5);
    // Whatever the socket took, whole frames in push order come out once the session
    // writes what was left.
    let expected: Vec<u8> = (0..pushed).flat_map(|i| framed(&frame(i))).collect();
    let read =
        tokio::spawn(async move { read_exact(&mut reader, expected.len()).await == expected });
    let socket = c.queue.lock().direct.as_ref().map(|d| d.socket.clone());
    let Some(socket) = socket else {
        panic!("the socket was detached");
    };
    let headers: Vec<_> = turn
        .items
        .iter()
        .map(|item| frame_header(Opcode::Text, item.len()))
        .collect();
    let mut parts: Vec<&[u8]> = vec![&turn.unsent[..]];
    for (item, (header, used)) in turn.items.iter().zip(&headers) {
        parts.push(&header[..*used]);
        parts.push(item);
    }
    crate::hub::socket::write_parts(&*socket, &mut parts).await?;
    assert!(read.await.map_err(std::io::Error::other)?);

    // Nobody reads now: the socket fills, then the queue, then the client is evicted.
    let mut outcome = Ok(());
    for i in 0..100_000 {
        outcome = c.push(
            frame(i),
            QueueLimits {
                max_messages: 8,
                ..limits
            },
        );
        if outcome.is_err() {
            break;
        }
    }
    assert_eq!(outcome, Err(PushError::Overflow));
    assert_eq!(c.closing().map(|c| c.code), Some(CloseCode::SlowConsumer));
    Ok(())
}

#[test]
fn a_busy_queue_keeps_its_buffer_until_a_scan_period_passes_unused() {
    let c = client();
    let capacity = |c: &ClientHandle| c.queue.lock().items.capacity();
    let use_once = |c: &ClientHandle| {
        assert_eq!(c.push(Bytes::from_static(b"a"), LIMITS), Ok(()));
        assert_eq!(c.take_batch(1000).items.len(), 1);
    };
    // A connect's two replies: the buffer goes each time.
    for _ in 0..QUEUE_USES_BEFORE_KEEPING {
        use_once(&c);
        assert_eq!(capacity(&c), 0);
    }
    // Busy: kept.
    use_once(&c);
    assert!(capacity(&c) > 0);
    // A scan after a period with use keeps it; one after a period without lets it go.
    c.trim_idle_queue();
    assert!(capacity(&c) > 0);
    c.trim_idle_queue();
    assert_eq!(capacity(&c), 0);
    // And the count starts again: the next uses release until it is busy again.
    use_once(&c);
    assert_eq!(capacity(&c), 0);
}

#[test]
fn a_buffer_a_burst_grew_large_goes_when_emptied() {
    let c = client();
    let limits = QueueLimits {
        max_messages: 1000,
        max_bytes: 100_000,
    };
    for _ in 0..=QUEUE_USES_BEFORE_KEEPING {
        assert_eq!(c.push(Bytes::from_static(b"a"), limits), Ok(()));
        c.take_batch(1000);
    }
    assert!(c.queue.lock().items.capacity() > 0, "busy: kept");
    for _ in 0..QUEUE_KEPT_MAX_ENTRIES * 2 {
        assert_eq!(c.push(Bytes::from_static(b"a"), limits), Ok(()));
    }
    while !c.take_batch(1000).items.is_empty() {}
    assert_eq!(c.queue.lock().items.capacity(), 0);
}
