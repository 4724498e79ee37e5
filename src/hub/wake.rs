//! A client's wake-up for its session: a pending flag and one registered waker.
//!
//! It stands in for a `tokio::sync::Notify` (same permit semantics: a wake-up with no
//! one waiting is kept for the next wait) because it can be polled without a future:
//! a `Notified` would sit in every idle session's task for the connection's whole life,
//! while this needs nothing there. One reader at a time (the client's session).

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

#[derive(Default)]
pub(crate) struct Wake {
    pending: AtomicBool,
    waker: AtomicWaker,
}

impl Wake {
    /// Wakes the reader, or leaves the wake-up for its next poll.
    pub(crate) fn notify(&self) {
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready (and consumed) once `notify` was called since the last ready poll.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.pending.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A notify between the check and the registration found no waker to wake.
        if self.pending.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[test]
    fn a_wake_up_is_kept_until_polled_once() {
        let wake = Wake::default();
        let wait = || std::future::poll_fn(|cx| wake.poll(cx));
        assert!(wait().now_or_never().is_none());
        wake.notify();
        wake.notify();
        assert!(wait().now_or_never().is_some());
        assert!(wait().now_or_never().is_none());
    }

    #[tokio::test]
    async fn notify_wakes_a_waiting_reader() {
        let wake = std::sync::Arc::new(Wake::default());
        let waiter = {
            let wake = wake.clone();
            tokio::spawn(async move { std::future::poll_fn(|cx| wake.poll(cx)).await })
        };
        tokio::task::yield_now().await;
        wake.notify();
        assert!(waiter.await.is_ok());
    }
}
