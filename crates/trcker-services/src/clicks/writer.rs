//! The click writer: clicks are written in batches by a background task, so a
//! redirect never waits on a disk sync.
//!
//! The buffer is bounded (back-pressure: when it is full, a click waits up to a
//! second for room, then the redirect answers 503 rather than lose the click).
//! The writer takes whatever is waiting (up to `MAX_BATCH`) and writes it in one
//! transaction; a batch that fails is retried until it is written. `flush` waits
//! until everything sent before it is written (graceful shutdown calls it).
//!
//! On a crash (SIGKILL, power loss), the clicks still in the buffer — those of
//! the last 10 ms or so (see `PAUSE`) — are lost; the customer was already redirected.
//! A postback for such a click finds no click and is kept as unattributed, with
//! its reason, for re-attribution.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use trcker_storage::Store;
use trcker_storage::clicks::insert_clicks;
use trcker_storage::entities::click;

use super::ClickError;

const BUFFER: usize = 16_384;
const MAX_BATCH: usize = 2_000;
/// Shortest time between two writes under load. Each write is a transaction
/// (and on SQLite a turn at the one write lock that postback intake needs
/// too); one every few milliseconds at tens of thousands of clicks a second
/// cost more in thread hand-overs than the inserts themselves.
const PAUSE: Duration = Duration::from_millis(10);

enum Msg {
    Click(Box<click::Model>),
    Flush(oneshot::Sender<()>),
}

#[derive(Debug, Clone)]
pub struct ClickWriter {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Click(c) => write!(f, "Click({})", c.id),
            Msg::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl ClickWriter {
    pub fn start(store: Store) -> ClickWriter {
        let (tx, rx) = mpsc::channel(BUFFER);
        tokio::spawn(run(store, rx));
        ClickWriter { tx }
    }

    /// Queues a click for writing.
    pub async fn record(&self, click: click::Model) -> Result<(), ClickError> {
        match tokio::time::timeout(
            Duration::from_secs(1),
            self.tx.send(Msg::Click(Box::new(click))),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ClickError::WriterStopped),
            // The buffer stayed full: storage cannot keep up or is down.
            Err(_) => Err(ClickError::Busy),
        }
    }

    /// Returns once every click queued before the call is written.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Msg>) {
    let mut msgs = Vec::with_capacity(MAX_BATCH);
    let mut last_write = Instant::now() - PAUSE;
    while rx.recv_many(&mut msgs, MAX_BATCH).await > 0 {
        // Under load, at most one write per `PAUSE`: the clicks of those
        // milliseconds go in one transaction. A click after a quiet spell is
        // written at once.
        let since = last_write.elapsed();
        if since < PAUSE && msgs.len() < MAX_BATCH {
            tokio::time::sleep(PAUSE - since).await;
            while msgs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => msgs.push(m),
                    Err(_) => break,
                }
            }
        }
        last_write = Instant::now();
        let mut clicks = Vec::with_capacity(msgs.len());
        let mut acks = Vec::new();
        for m in msgs.drain(..) {
            match m {
                Msg::Click(c) => clicks.push(*c),
                Msg::Flush(ack) => acks.push(ack),
            }
        }
        // What waits behind this batch, and this batch.
        metrics::gauge!("trcker_clicks_buffered").set((rx.len() + clicks.len()) as f64);
        let mut delay = Duration::from_millis(100);
        while !clicks.is_empty() {
            match insert_clicks(&store, &clicks).await {
                Ok(()) => {
                    metrics::counter!("trcker_clicks_written_total").increment(clicks.len() as u64);
                    break;
                }
                Err(e) => {
                    metrics::counter!("trcker_click_write_failures_total").increment(1);
                    tracing::warn!(error = %e, clicks = clicks.len(), "writing clicks failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
}
