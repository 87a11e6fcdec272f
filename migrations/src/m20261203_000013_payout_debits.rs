//! Payout debits: a payout marked paid books, per program it covers, the
//! negative of its entries there (`kind = 'payout'`), so that an
//! affiliate's entries sum to what she is still owed. Payouts marked paid
//! before this migration get theirs, dated when they were paid.
//!
//! Rows are only added; the release before ignores entries of a kind it
//! does not show and keeps counting paid payouts as it did.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000013_payout_debits"
    }
}

/// Paid payouts without debits: their covered entries' sum per program.
const OWED_DEBITS: &str = "SELECT e.tenant_id, e.payout_id, e.program_id, e.affiliate_id, \
     e.currency, CAST(SUM(e.amount_minor) AS TEXT) AS total \
     FROM ledger_entries e JOIN payouts p ON p.tenant_id = e.tenant_id AND p.id = e.payout_id \
     WHERE p.status = 'paid' AND e.kind <> 'payout' AND NOT EXISTS \
       (SELECT 1 FROM ledger_entries d WHERE d.tenant_id = e.tenant_id \
        AND d.payout_id = e.payout_id AND d.kind = 'payout') \
     GROUP BY e.tenant_id, e.payout_id, e.program_id, e.affiliate_id, e.currency";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        // Every paid payout gets all its debits or none.
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let conn = m.get_connection();
        let backend = m.get_database_backend();
        let p = |n: usize| match backend {
            DbBackend::Postgres => format!("${n}"),
            _ => "?".to_owned(),
        };
        let insert = format!(
            "INSERT INTO ledger_entries (id, tenant_id, created_at, affiliate_id, program_id, \
             conversion_id, entry_key, kind, amount_minor, currency, explanation, available_at, \
             payout_id, is_test, actor) \
             SELECT {}, p.tenant_id, COALESCE(p.paid_at, p.created_at), {}, {}, NULL, \
             'payout:' || p.id, 'payout', {}, {}, \
             'paid in payout ' || p.id || ' (reference ' || COALESCE(p.reference, '') || ')', \
             COALESCE(p.paid_at, p.created_at), p.id, false, NULL \
             FROM payouts p WHERE p.tenant_id = {} AND p.id = {}",
            p(1),
            p(2),
            p(3),
            p(4),
            p(5),
            p(6),
            p(7)
        );
        for row in conn
            .query_all_raw(Statement::from_string(backend, OWED_DEBITS))
            .await?
        {
            let text = |col: &str| row.try_get::<String>("", col);
            let total = text("total")?;
            let total: i64 = total
                .parse()
                .map_err(|e| DbErr::Migration(format!("payout debit of {total}: {e}")))?;
            let id = format!("led_{}", ulid::Ulid::new().to_string().to_ascii_lowercase());
            let values: Vec<Value> = vec![
                id.into(),
                text("affiliate_id")?.into(),
                text("program_id")?.into(),
                (-total).into(),
                text("currency")?.into(),
                text("tenant_id")?.into(),
                text("payout_id")?.into(),
            ];
            conn.execute_raw(Statement::from_sql_and_values(backend, &insert, values))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection()
            .execute_unprepared("DELETE FROM ledger_entries WHERE kind = 'payout'")
            .await?;
        Ok(())
    }
}
