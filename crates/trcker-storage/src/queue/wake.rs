//! When an idle worker looks for jobs again.
//!
//! Each time a worker looks for jobs, apalis asks its poll strategy to arrange
//! the worker's next wake-up, then fetches. A worker that found nothing sleeps
//! until one of the wake-ups armed then fires. apalis's own combination of
//! sources stops at the first one that is ready and takes one item from it, so
//! a worker could go to sleep with none of them armed: the LISTEN stream handed
//! over a notification it already held (which arms nothing), and the interval
//! had just fired and its next timer was never started. Such a worker slept
//! until its next heartbeat, seconds later, with jobs waiting: under load the
//! notify step stopped for 2–4 s while the steps before it kept going.
//!
//! On PostgreSQL the stream is the LISTEN connection's notifications of new
//! jobs; on SQLite, which has none, it is this process's own pushes
//! ([`Pushes`]), and the poll is slower there (every fetch takes SQLite's one
//! write lock, even one that finds nothing).
//!
//! [`WakeUp`] polls every source until it is pending, each time, so that every
//! one of them is armed whenever the worker sleeps; and when it heard of new
//! jobs it has the worker look once more, since a fetch already under way may
//! have started before those jobs were committed.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis::prelude::{PollSnapshot, PollStrategy};
use futures::Stream;
use tokio::time::{Interval, MissedTickBehavior};

/// A LISTEN stream that ended is opened again after this long.
const RELISTEN_AFTER: Duration = Duration::from_secs(1);

/// Wakes an idle worker on every notification of a new job (when the database
/// has them) and at a fixed interval.
pub struct WakeUp<S> {
    /// A stream not yet started, to open the LISTEN connection again from.
    template: S,
    listen: Option<S>,
    /// When the LISTEN stream ended, if it did.
    ended_at: Option<Instant>,
    period: Duration,
    tick: Option<Interval>,
}

impl<S: Clone> WakeUp<S> {
    /// Wakes on the stream's items and every `period`.
    pub fn listening(stream: S, period: Duration) -> Self {
        WakeUp {
            template: stream.clone(),
            listen: Some(stream),
            ended_at: None,
            period,
            tick: None,
        }
    }
}

impl<S: Clone> Clone for WakeUp<S> {
    fn clone(&self) -> Self {
        WakeUp {
            template: self.template.clone(),
            listen: Some(self.template.clone()),
            ended_at: None,
            period: self.period,
            tick: None,
        }
    }
}

impl<S: Stream + Unpin + Clone> PollStrategy for WakeUp<S> {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let mut heard = false;
        if self.listen.is_none()
            && let Some(ended) = self.ended_at
            && ended.elapsed() >= RELISTEN_AFTER
        {
            self.listen = Some(self.template.clone());
            self.ended_at = None;
        }
        if let Some(listen) = self.listen.as_mut() {
            loop {
                match Pin::new(&mut *listen).poll_next(cx) {
                    Poll::Ready(Some(_)) => heard = true,
                    Poll::Ready(None) => {
                        tracing::warn!(
                            "the job notification stream ended; polling every {:?} until it is open again",
                            self.period
                        );
                        self.listen = None;
                        self.ended_at = Some(Instant::now());
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        let period = self.period;
        let tick = self.tick.get_or_insert_with(|| {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            tick
        });
        let mut ticked = false;
        while tick.poll_tick(cx).is_ready() {
            ticked = true;
        }
        if heard {
            // A fetch under way may predate the jobs just announced: look again.
            cx.waker().wake_by_ref();
        }
        if heard || ticked {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}

/// This process's pushes of one queue's jobs, as a stream of wake-ups.
pub struct Pushes {
    rx: tokio::sync::watch::Receiver<u64>,
    changes: tokio_stream::wrappers::WatchStream<u64>,
}

impl Pushes {
    /// Wakes on pushes made after this call; what was pushed before is found by
    /// the worker's first fetch.
    pub fn new(mut rx: tokio::sync::watch::Receiver<u64>) -> Self {
        rx.borrow_and_update();
        Pushes {
            changes: tokio_stream::wrappers::WatchStream::from_changes(rx.clone()),
            rx,
        }
    }
}

impl Clone for Pushes {
    fn clone(&self) -> Self {
        Pushes::new(self.rx.clone())
    }
}

impl Stream for Pushes {
    type Item = u64;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u64>> {
        Pin::new(&mut self.changes).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Wake, Waker};

    use super::*;

    /// A notification stream like PostgreSQL's listener: it hands over what it
    /// holds without arming a wake-up, and arms one only when it has nothing.
    #[derive(Clone, Default)]
    struct Notifications(Arc<Mutex<(VecDeque<()>, Option<Waker>)>>);

    impl Notifications {
        fn announce(&self) {
            let mut inner = self.0.lock().expect("notifications");
            inner.0.push_back(());
            if let Some(w) = inner.1.take() {
                w.wake();
            }
        }
    }

    impl Stream for Notifications {
        type Item = ();
        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
            let mut inner = self.0.lock().expect("notifications");
            match inner.0.pop_front() {
                Some(()) => Poll::Ready(Some(())),
                None => {
                    inner.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn drive<S: Stream + Unpin + Clone>(w: &mut WakeUp<S>, wakes: &Arc<Wakes>) -> Poll<Option<()>> {
        let waker = Waker::from(wakes.clone());
        w.poll_drive(&mut Context::from_waker(&waker), &PollSnapshot::default())
    }

    #[tokio::test]
    async fn a_worker_that_heard_of_jobs_sleeps_with_the_stream_armed() {
        let notes = Notifications::default();
        notes.announce();
        notes.announce();
        let mut wake = WakeUp::listening(notes.clone(), Duration::from_secs(3600));
        let wakes = Arc::new(Wakes::default());
        assert!(drive(&mut wake, &wakes).is_ready());
        // It has the worker look again (a fetch under way may predate the jobs).
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        // Both notifications were taken, so the stream is armed: the next one
        // wakes the sleeping worker.
        notes.announce();
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            2,
            "a new job did not wake the worker"
        );
        assert!(drive(&mut wake, &wakes).is_ready());
        assert!(drive(&mut wake, &wakes).is_pending());
    }

    #[tokio::test]
    async fn the_interval_is_armed_even_when_a_notification_was_ready() {
        let notes = Notifications::default();
        notes.announce();
        let mut wake = WakeUp::listening(notes.clone(), Duration::from_millis(20));
        let wakes = Arc::new(Wakes::default());
        assert!(drive(&mut wake, &wakes).is_ready());
        let heard = wakes.0.load(Ordering::SeqCst);
        // No notification comes: the interval alone wakes the worker.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            wakes.0.load(Ordering::SeqCst) > heard,
            "the interval never woke the worker"
        );
        assert!(drive(&mut wake, &wakes).is_ready());
    }

    #[tokio::test]
    async fn the_interval_alone_keeps_waking_an_idle_worker() {
        let mut wake = WakeUp::listening(Notifications::default(), Duration::from_millis(20));
        let wakes = Arc::new(Wakes::default());
        for round in 1..=3 {
            while drive(&mut wake, &wakes).is_ready() {}
            let before = wakes.0.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(
                wakes.0.load(Ordering::SeqCst) > before,
                "round {round}: no wake-up"
            );
        }
    }

    #[tokio::test]
    async fn a_push_wakes_the_worker_and_each_clone_hears_only_later_ones() {
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        tx.send_modify(|n| *n += 1);
        let mut wake = WakeUp::listening(Pushes::new(rx), Duration::from_secs(3600));
        let wakes = Arc::new(Wakes::default());
        // What was pushed before the worker started is found by its first fetch.
        assert!(drive(&mut wake, &wakes).is_pending());
        tx.send_modify(|n| *n += 1);
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "a push did not wake the worker"
        );
        assert!(drive(&mut wake, &wakes).is_ready());
        assert!(drive(&mut wake, &wakes).is_pending());
        let mut again = wake.clone();
        assert!(drive(&mut again, &wakes).is_pending());
    }

    #[tokio::test]
    async fn an_ended_stream_is_opened_again() {
        #[derive(Clone)]
        struct Ends(Arc<AtomicUsize>);
        impl Stream for Ends {
            type Item = ();
            fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<()>> {
                self.0.fetch_add(1, Ordering::SeqCst);
                Poll::Ready(None)
            }
        }
        let opened = Arc::new(AtomicUsize::new(0));
        let mut wake = WakeUp::listening(Ends(opened.clone()), Duration::from_millis(10));
        let wakes = Arc::new(Wakes::default());
        let _ = drive(&mut wake, &wakes);
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        // Not again at once (a database that refuses connections is not hammered).
        let _ = drive(&mut wake, &wakes);
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        tokio::time::sleep(RELISTEN_AFTER + Duration::from_millis(50)).await;
        let _ = drive(&mut wake, &wakes);
        assert_eq!(opened.load(Ordering::SeqCst), 2);
    }
}
