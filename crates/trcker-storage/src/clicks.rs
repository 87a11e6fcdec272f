//! Writing clicks in bulk: the busiest insert of all, written out by hand.
//!
//! At tens of thousands of clicks a second, building an active model and a
//! query value per column per row was among the redirect's largest costs
//! (docs/benchmarks.md); this statement is built from the column list once
//! per batch size and takes the rows' values directly.

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

use crate::Store;
use crate::batch::{pow2_chunks, value_rows};
use crate::entities::click;
use crate::rollups::Tally;

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
        c.outcome.into(),
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
    format!(
        "INSERT INTO clicks ({}) VALUES {}",
        COLUMNS.join(", "),
        value_rows(backend, rows, COLUMNS.len())
    )
}

/// Writes a batch of clicks in one transaction, with the report rollups
/// that count them.
pub async fn insert_clicks(store: &Store, clicks: &[click::Model]) -> Result<(), sea_orm::DbErr> {
    let txn = store.write_txn().await?;
    let mut tally = Tally::default();
    for c in clicks {
        tally.click(c);
    }
    let backend = txn.get_database_backend();
    // Bound the statement size (SQLite allows 32766 parameters; a click has 18)
    // and the number of distinct statements (see `pow2_chunks`).
    for chunk in pow2_chunks(clicks, 512) {
        let sql = insert_sql(backend, chunk.len());
        let mut vals = Vec::with_capacity(chunk.len() * COLUMNS.len());
        for c in chunk {
            values(c, &mut vals);
        }
        txn.execute_raw(Statement::from_sql_and_values(backend, sql, vals))
            .await?;
    }
    tally.apply(&txn).await?;
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
            tenant_id: crate::TenantId::generate(),
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
            outcome: click::Outcome::Redirected,
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
