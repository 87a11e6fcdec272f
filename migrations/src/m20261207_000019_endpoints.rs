//! Notification endpoints of every kind, and what the delivery log shows.
//!
//! `notification_endpoints` is rebuilt, in one transaction (SQLite cannot
//! drop a NOT NULL; under Citus, distribute the new table again as
//! docs/operations.md shows):
//! - `affiliate_id` may be null: the tenant's own webhook, told of every
//!   conversion;
//! - `program_id`: an endpoint for one program's conversions, which replaces
//!   its owner's program-less endpoints of the same kind for that program;
//! - `method` (`GET`, `POST`), `body_format` (`form`, `json`) and
//!   `body_template` for postbacks sent by POST; `reversal_template`, the URL
//!   called for reversals when the main template has no `{status}`;
//! - `events`: a comma-separated list of `created`, `approved`, `rejected`,
//!   `reversed`, `paid`. Existing endpoints keep every event when their
//!   template carries `{status}`, else only `created` (a template that cannot
//!   tell a refund from a sale must not be called for one);
//! - `send_test`: whether test conversions are sent (marked `test`);
//! - `disabled_at`, `disabled_reason`, `consecutive_failures`: an endpoint
//!   that answers 410, or fails too many times in a row, is disabled;
//! - `secret_salt`, `previous_secret_salt`, `previous_secret_until`: a
//!   webhook's signing secret is derived from its salt and the operator
//!   token's hash (the database alone cannot sign); after a rotation the
//!   previous secret also signs until `previous_secret_until`.
//!
//! `notification_deliveries` gain `event` and what each attempt sends
//! (`method`, `content_type`, `body`), so that every retry sends the same
//! request. `notification_attempts` gain `method`, `url` (secrets redacted)
//! and `error_class`. `conversions` gain `created_status`, the status a
//! conversion was made with: its notification of that status is the
//! `created` event.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::add_column;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000019_endpoints"
    }
}

const OLD: &str = "notification_endpoints";
const NEW: &str = "notification_endpoints_v2";

fn endpoints_table(name: &'static str, backend: sea_orm::DbBackend) -> TableCreateStatement {
    let mut table = Table::create();
    table.table(name).if_not_exists();
    // Keyed by tenant on PostgreSQL, as every tenant table there.
    match backend {
        sea_orm::DbBackend::Postgres => table
            .col(string("id"))
            .primary_key(Index::create().col("tenant_id").col("id")),
        _ => table.col(string("id").primary_key()),
    };
    table
        .col(string("tenant_id"))
        .col(timestamp_with_time_zone("created_at"))
        .col(string_null("affiliate_id"))
        .col(string_null("program_id"))
        .col(string("kind"))
        .col(text("url_template"))
        .col(string("method").default("GET"))
        .col(string_null("body_format"))
        .col(text_null("body_template"))
        .col(text_null("reversal_template"))
        .col(string("events"))
        .col(boolean("send_test").default(true))
        .col(boolean("active").default(true))
        .col(timestamp_with_time_zone_null("disabled_at"))
        .col(text_null("disabled_reason"))
        .col(integer("consecutive_failures").default(0))
        .col(string_null("secret_salt"))
        .col(string_null("previous_secret_salt"))
        .col(timestamp_with_time_zone_null("previous_secret_until"))
        .col(timestamp_with_time_zone("updated_at"))
        .to_owned()
}

/// In one transaction: makes the new table and fills it (`make`), drops the
/// old one and gives the new one its name.
async fn swap_in(
    m: &SchemaManager<'_>,
    backend: sea_orm::DbBackend,
    make: [String; 2],
) -> Result<(), DbErr> {
    let txn = m.begin().await?;
    let db = txn.get_connection();
    for sql in make {
        db.execute_unprepared(&sql).await?;
    }
    db.execute_unprepared(&format!("DROP TABLE {OLD}")).await?;
    db.execute_unprepared(&format!("ALTER TABLE {NEW} RENAME TO {OLD}"))
        .await?;
    if backend == sea_orm::DbBackend::Postgres {
        db.execute_unprepared(&pkey_named_after_table()).await?;
    }
    txn.commit().await
}

/// Names the rebuilt table's primary key after the table (PostgreSQL named
/// it after the name the table was made with).
fn pkey_named_after_table() -> String {
    format!(
        "DO $$ DECLARE c text; BEGIN \
         SELECT conname INTO c FROM pg_constraint \
         WHERE conrelid = '{OLD}'::regclass AND contype = 'p'; \
         IF c IS DISTINCT FROM '{OLD}_pkey' THEN \
         EXECUTE format('ALTER TABLE {OLD} RENAME CONSTRAINT %I TO {OLD}_pkey', c); \
         END IF; END $$"
    )
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        // The rebuild is one transaction (migrations run outside one, and
        // each statement could take another pooled connection): it is done
        // whole or not at all.
        if m.has_table(OLD).await? && !m.has_column(OLD, "events").await? {
            let backend = db.get_database_backend();
            let create = backend.build(&endpoints_table(NEW, backend)).to_string();
            let true_ = match backend {
                sea_orm::DbBackend::Sqlite => "1",
                _ => "TRUE",
            };
            let copy = format!(
                "INSERT INTO {NEW} (id, tenant_id, created_at, affiliate_id, kind, url_template, \
                 method, events, send_test, active, consecutive_failures, updated_at) \
                 SELECT id, tenant_id, created_at, affiliate_id, kind, url_template, 'GET', \
                 CASE WHEN url_template LIKE '%{{status}}%' \
                      THEN 'created,approved,rejected,reversed,paid' ELSE 'created' END, \
                 {true_}, active, 0, created_at FROM {OLD}"
            );
            swap_in(m, backend, [create, copy]).await?;
        }
        m.create_index(
            Index::create()
                .name("ix_endpoints_owner")
                .table(OLD)
                .col("tenant_id")
                .col("affiliate_id")
                .if_not_exists()
                .to_owned(),
        )
        .await?;

        add_column(m, "notification_deliveries", string_null("event")).await?;
        add_column(
            m,
            "notification_deliveries",
            string("method").default("GET").to_owned(),
        )
        .await?;
        add_column(m, "notification_deliveries", string_null("content_type")).await?;
        add_column(m, "notification_deliveries", text_null("body")).await?;
        add_column(m, "notification_attempts", string_null("method")).await?;
        add_column(m, "notification_attempts", text_null("url")).await?;
        add_column(m, "notification_attempts", string_null("error_class")).await?;
        add_column(m, "conversions", string_null("created_status")).await?;
        db.execute_unprepared(
            "UPDATE conversions SET created_status = status WHERE created_status IS NULL",
        )
        .await?;
        Ok(())
    }

    /// Back to postback endpoints of affiliates only: the tenant's own
    /// endpoints and every setting beyond the URL are dropped.
    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        let backend = db.get_database_backend();
        if m.has_column(OLD, "events").await? {
            let mut old = Table::create();
            old.table(NEW).if_not_exists();
            match backend {
                sea_orm::DbBackend::Postgres => old
                    .col(string("id"))
                    .primary_key(Index::create().col("tenant_id").col("id")),
                _ => old.col(string("id").primary_key()),
            };
            old.col(string("tenant_id"))
                .col(timestamp_with_time_zone("created_at"))
                .col(string("affiliate_id"))
                .col(string("kind"))
                .col(text("url_template"))
                .col(boolean("active").default(true));
            let copy = format!(
                "INSERT INTO {NEW} (id, tenant_id, created_at, affiliate_id, kind, \
                 url_template, active) SELECT id, tenant_id, created_at, affiliate_id, \
                 kind, url_template, active FROM {OLD} WHERE affiliate_id IS NOT NULL"
            );
            swap_in(m, backend, [backend.build(&old).to_string(), copy]).await?;
            db.execute_unprepared(&format!(
                "CREATE INDEX IF NOT EXISTS ix_endpoints_affiliate ON {OLD} (tenant_id, affiliate_id)"
            ))
            .await?;
        }
        for (table, column) in [
            ("notification_deliveries", "event"),
            ("notification_deliveries", "method"),
            ("notification_deliveries", "content_type"),
            ("notification_deliveries", "body"),
            ("notification_attempts", "method"),
            ("notification_attempts", "url"),
            ("notification_attempts", "error_class"),
            ("conversions", "created_status"),
        ] {
            if m.has_column(table, column).await? {
                m.alter_table(
                    Table::alter()
                        .table(Alias::new(table))
                        .drop_column(Alias::new(column))
                        .to_owned(),
                )
                .await?;
            }
        }
        Ok(())
    }
}
