//! Versioned commission plans and structured explanations.
//!
//! - `commission_plans` gain their `version` (1, 2… per program, event and
//!   affiliate), `retired_at` (when the next version took over; a
//!   conversion is priced by the version in force when it happened) and
//!   `max_payout_minor` (the most one conversion earns);
//! - plans retired before this migration get `retired_at` from the
//!   version that replaced them, and their versions are numbered;
//! - `conversions` gain `commission_detail`, the JSON of what priced them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::add_column;
use sea_orm_migration::sea_orm::ConnectionTrait;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000009_plan_versions"
    }
}

/// The same program, event and affiliate (or none) as the row `p`.
const SAME_PLAN: &str = "q.tenant_id = p.tenant_id AND q.program_id = p.program_id \
     AND q.event = p.event \
     AND (q.affiliate_id = p.affiliate_id OR (q.affiliate_id IS NULL AND p.affiliate_id IS NULL))";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (table, col) in [
            ("commission_plans", integer("version").default(1).to_owned()),
            (
                "commission_plans",
                timestamp_with_time_zone_null("retired_at"),
            ),
            ("commission_plans", big_integer_null("max_payout_minor")),
            ("conversions", text_null("commission_detail")),
        ] {
            add_column(m, table, col).await?;
        }
        let conn = m.get_connection();
        conn.execute_unprepared(&format!(
            "UPDATE commission_plans AS p SET retired_at = \
             (SELECT min(q.created_at) FROM commission_plans q WHERE {SAME_PLAN} \
              AND q.created_at > p.created_at) \
             WHERE p.active = false AND p.retired_at IS NULL"
        ))
        .await?;
        conn.execute_unprepared(&format!(
            "UPDATE commission_plans AS p SET version = 1 + \
             (SELECT count(*) FROM commission_plans q WHERE {SAME_PLAN} \
              AND q.created_at < p.created_at)"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (table, col) in [
            ("commission_plans", "version"),
            ("commission_plans", "retired_at"),
            ("commission_plans", "max_payout_minor"),
            ("conversions", "commission_detail"),
        ] {
            m.alter_table(Table::alter().table(table).drop_column(col).to_owned())
                .await?;
        }
        Ok(())
    }
}
