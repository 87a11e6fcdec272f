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

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use tokio::sync::{mpsc, oneshot};
use trcker_storage::entities::click;
use trcker_storage::{Store, sea_orm};

use crate::ServiceError;

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
    pub async fn record(&self, click: click::Model) -> Result<(), ServiceError> {
        match tokio::time::timeout(
            Duration::from_secs(1),
            self.tx.send(Msg::Click(Box::new(click))),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ServiceError::Internal("the click writer stopped".into())),
            // The buffer stayed full: storage cannot keep up or is down.
            Err(_) => Err(ServiceError::Unavailable),
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
        let mut delay = Duration::from_millis(100);
        while !clicks.is_empty() {
            match write(&store, &clicks).await {
                Ok(()) => break,
                Err(e) => {
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

/// The `clicks` columns, in the order `values` gives them.
const COLUMNS: [&str; 18] = [
    "id",
    "tenant_id",
    "created_at",
    "program_id",
    "affiliate_id",
    "link_id",
    "ip",
    "user_agent",
    "referrer",
    "is_unique",
    "is_bot",
    "is_test",
    "outcome",
    "sub1",
    "sub2",
    "sub3",
    "sub4",
    "sub5",
];

/// One click's values, in `COLUMNS` order.
fn values(c: &click::Model, out: &mut Vec<Value>) {
    out.extend([
        c.id.clone().into(),
        c.tenant_id.clone().into(),
        c.created_at.into(),
        c.program_id.clone().into(),
        c.affiliate_id.clone().into(),
        c.link_id.clone().into(),
        c.ip.clone().into(),
        c.user_agent.clone().into(),
        c.referrer.clone().into(),
        c.is_unique.into(),
        c.is_bot.into(),
        c.is_test.into(),
        c.outcome.clone().into(),
        c.sub1.clone().into(),
        c.sub2.clone().into(),
        c.sub3.clone().into(),
        c.sub4.clone().into(),
        c.sub5.clone().into(),
    ]);
}

/// `INSERT INTO clicks (…) VALUES (…), …` for `rows` clicks, with the
/// backend's placeholders.
fn insert_sql(backend: DbBackend, rows: usize) -> String {
    let mut sql = format!("INSERT INTO clicks ({}) VALUES ", COLUMNS.join(", "));
    let mut n = 0;
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..COLUMNS.len() {
            n += 1;
            if c > 0 {
                sql.push_str(", ");
            }
            match backend {
                DbBackend::Postgres => {
                    let _ = write!(sql, "${n}");
                }
                _ => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql
}

/// Writes a batch in one transaction. The statement is written out by hand
/// rather than through the query builder: at tens of thousands of clicks a
/// second, building an active model and a query value per column per row was
/// among the redirect's largest costs (docs/benchmarks.md).
async fn write(store: &Store, clicks: &[click::Model]) -> Result<(), sea_orm::DbErr> {
    let txn = store.write_txn().await?;
    let backend = txn.get_database_backend();
    // Bound the statement size (SQLite allows 32766 parameters; a click has 18)
    // and the number of distinct statements (see `pow2_chunks`).
    for chunk in crate::util::pow2_chunks(clicks, 512) {
        let sql = insert_sql(backend, chunk.len());
        let mut vals = Vec::with_capacity(chunk.len() * COLUMNS.len());
        for c in chunk {
            values(c, &mut vals);
        }
        txn.execute_raw(Statement::from_sql_and_values(backend, sql, vals))
            .await?;
    }
    txn.commit().await
}

#[cfg(test)]
mod tests {
    use sea_orm::{IdenStatic, Iterable};

    use super::*;

    #[test]
    fn the_insert_names_every_column_of_the_table() {
        let table: Vec<&str> = click::Column::iter().map(|c| c.as_str()).collect();
        assert_eq!(table, COLUMNS);
        let mut vals = Vec::new();
        let click = click::Model {
            id: "c".into(),
            tenant_id: "t".into(),
            created_at: chrono::Utc::now(),
            program_id: "p".into(),
            affiliate_id: "a".into(),
            link_id: None,
            ip: None,
            user_agent: None,
            referrer: None,
            is_unique: true,
            is_bot: false,
            is_test: false,
            outcome: "redirected".into(),
            sub1: None,
            sub2: None,
            sub3: None,
            sub4: None,
            sub5: None,
        };
        values(&click, &mut vals);
        assert_eq!(vals.len(), COLUMNS.len());
    }

    #[test]
    fn placeholders_follow_the_backend() {
        let pg = insert_sql(DbBackend::Postgres, 2);
        assert!(pg.ends_with(&format!("${})", 2 * COLUMNS.len())));
        assert_eq!(pg.matches('$').count(), 2 * COLUMNS.len());
        let lite = insert_sql(DbBackend::Sqlite, 2);
        assert_eq!(lite.matches('?').count(), 2 * COLUMNS.len());
    }
}
