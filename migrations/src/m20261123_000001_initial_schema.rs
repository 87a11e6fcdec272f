//! The whole domain: tenants and their keys, programs, affiliates, links, coupons,
//! clicks, integrations, the postback inbox and log, conversions, commission plans,
//! the commission ledger, payouts, notification endpoints, deliveries and attempts,
//! and the audit log.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000001_initial_schema"
    }
}

/// A table owned by a tenant: string id, `tenant_id`, `created_at`.
fn owned(name: &'static str) -> TableCreateStatement {
    Table::create()
        .table(name)
        .if_not_exists()
        .col(string("id").primary_key())
        .col(string("tenant_id"))
        .col(timestamp_with_time_zone("created_at"))
        .to_owned()
}

fn index(
    table: &'static str,
    name: &'static str,
    cols: &[&'static str],
    unique: bool,
) -> IndexCreateStatement {
    let mut i = Index::create();
    i.name(name).table(table).if_not_exists();
    for c in cols {
        i.col(*c);
    }
    if unique {
        i.unique();
    }
    i.to_owned()
}

fn subs(t: &mut TableCreateStatement) {
    for s in ["sub1", "sub2", "sub3", "sub4", "sub5"] {
        t.col(string_null(s));
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("tenants")
                .if_not_exists()
                .col(string("id").primary_key())
                .col(string("name"))
                .col(string_uniq("slug"))
                .col(string("status").default("active"))
                .col(timestamp_with_time_zone("created_at"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            owned("api_keys")
                .col(string("name"))
                .col(string_uniq("key_hash"))
                .col(string("key_hint"))
                .col(string("scope"))
                .col(timestamp_with_time_zone_null("revoked_at"))
                .col(timestamp_with_time_zone_null("last_used_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "api_keys",
            "ix_api_keys_tenant",
            &["tenant_id"],
            false,
        ))
        .await?;

        m.create_table(
            owned("programs")
                .col(string("name"))
                .col(string("slug"))
                .col(text("destination_url"))
                .col(text_null("fallback_url"))
                .col(string("currency"))
                .col(string("click_param").default("click_id"))
                .col(integer("attribution_window_days").default(30))
                .col(integer("hold_days").default(0))
                .col(big_integer_null("default_revenue_minor"))
                .col(string("status").default("active"))
                .col(timestamp_with_time_zone("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "programs",
            "ux_programs_tenant_slug",
            &["tenant_id", "slug"],
            true,
        ))
        .await?;

        m.create_table(
            owned("affiliates")
                .col(string("name"))
                .col(string("email"))
                .col(string("slug"))
                .col(string("status").default("active"))
                .col(text_null("postback_url"))
                .col(string_null("password_hash"))
                .col(string_null("invite_token_hash"))
                .col(timestamp_with_time_zone("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "affiliates",
            "ux_affiliates_tenant_slug",
            &["tenant_id", "slug"],
            true,
        ))
        .await?;
        m.create_index(index(
            "affiliates",
            "ux_affiliates_tenant_email",
            &["tenant_id", "email"],
            true,
        ))
        .await?;
        m.create_index(index(
            "affiliates",
            "ix_affiliates_invite",
            &["invite_token_hash"],
            false,
        ))
        .await?;

        m.create_table(
            owned("commission_plans")
                .col(string("program_id"))
                .col(string_null("affiliate_id"))
                .col(string("event").default("sale"))
                .col(string("kind"))
                .col(string("value"))
                .col(string("currency"))
                .col(boolean("active").default(true))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "commission_plans",
            "ix_commission_plans_program",
            &["tenant_id", "program_id", "event"],
            false,
        ))
        .await?;

        let mut links = owned("tracking_links")
            .col(string("program_id"))
            .col(string("affiliate_id"))
            .col(string_uniq("code"))
            .col(text_null("destination_url"))
            .col(string("status").default("active"))
            .to_owned();
        subs(&mut links);
        m.create_table(links).await?;
        m.create_index(index(
            "tracking_links",
            "ix_tracking_links_tenant",
            &["tenant_id", "program_id", "affiliate_id"],
            false,
        ))
        .await?;

        m.create_table(
            owned("coupons")
                .col(string("program_id"))
                .col(string("affiliate_id"))
                .col(string("code"))
                .col(string("status").default("active"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "coupons",
            "ux_coupons_code",
            &["tenant_id", "program_id", "code"],
            true,
        ))
        .await?;

        let mut clicks = owned("clicks")
            .col(string("program_id"))
            .col(string("affiliate_id"))
            .col(string_null("link_id"))
            .col(string_null("ip"))
            .col(text_null("user_agent"))
            .col(text_null("referrer"))
            .col(boolean("is_unique").default(true))
            .col(boolean("is_bot").default(false))
            .col(boolean("is_test").default(false))
            .col(string("outcome").default("redirected"))
            .to_owned();
        subs(&mut clicks);
        m.create_table(clicks).await?;
        m.create_index(index(
            "clicks",
            "ix_clicks_tenant_time",
            &["tenant_id", "created_at"],
            false,
        ))
        .await?;
        m.create_index(index(
            "clicks",
            "ix_clicks_tenant_affiliate",
            &["tenant_id", "affiliate_id", "created_at"],
            false,
        ))
        .await?;

        m.create_table(
            owned("integrations")
                .col(string("program_id"))
                .col(string("name"))
                .col(string_uniq("secret_hash"))
                .col(string("secret_hint"))
                .col(string("status").default("active"))
                .col(text_null("param_aliases"))
                .col(text_null("ip_allowlist"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "integrations",
            "ix_integrations_tenant",
            &["tenant_id", "program_id"],
            false,
        ))
        .await?;

        // The inbox and the log in one table: every postback with a known
        // integration is a row; accepted ones carry a dedupe key (unique per
        // tenant), the others leave it NULL so they never collide.
        m.create_table(
            owned("postbacks")
                .col(string("integration_id"))
                .col(string("program_id"))
                .col(string_null("txn_id"))
                .col(string_null("status_param"))
                .col(string_null("dedupe_key"))
                .col(text("raw_params"))
                .col(string_null("source_ip"))
                .col(string("method"))
                .col(integer("http_status"))
                .col(string("outcome"))
                .col(text_null("reason"))
                .col(string("state"))
                .col(string_null("conversion_id"))
                .col(string_null("duplicate_of"))
                .col(boolean("is_test").default(false))
                .col(timestamp_with_time_zone_null("processed_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "postbacks",
            "ux_postbacks_dedupe",
            &["tenant_id", "dedupe_key"],
            true,
        ))
        .await?;
        m.create_index(index(
            "postbacks",
            "ix_postbacks_integration",
            &["tenant_id", "integration_id", "created_at"],
            false,
        ))
        .await?;
        m.create_index(index(
            "postbacks",
            "ix_postbacks_state",
            &["state", "created_at"],
            false,
        ))
        .await?;

        m.create_table(
            owned("conversions")
                .col(string("program_id"))
                .col(string("affiliate_id"))
                .col(string_null("click_id"))
                .col(string_null("coupon_code"))
                .col(string("postback_id"))
                .col(string("txn_id"))
                .col(string("event"))
                .col(string("status"))
                .col(big_integer("amount_minor"))
                .col(string("currency"))
                .col(big_integer_null("payout_minor"))
                .col(big_integer_null("payout_override_minor"))
                .col(text_null("commission_explanation"))
                .col(timestamp_with_time_zone_null("hold_until"))
                .col(boolean("is_test").default(false))
                .col(timestamp_with_time_zone("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "conversions",
            "ux_conversions_txn",
            &["tenant_id", "program_id", "txn_id"],
            true,
        ))
        .await?;
        m.create_index(index(
            "conversions",
            "ix_conversions_tenant_time",
            &["tenant_id", "created_at"],
            false,
        ))
        .await?;
        m.create_index(index(
            "conversions",
            "ix_conversions_affiliate",
            &["tenant_id", "affiliate_id", "created_at"],
            false,
        ))
        .await?;
        m.create_index(index(
            "conversions",
            "ix_conversions_hold",
            &["status", "hold_until"],
            false,
        ))
        .await?;

        // Append-only: amounts are never edited; a reversal is a negative entry.
        // `entry_key` makes each effect of a job happen once.
        m.create_table(
            owned("ledger_entries")
                .col(string("affiliate_id"))
                .col(string("program_id"))
                .col(string("conversion_id"))
                .col(string("entry_key"))
                .col(string("kind"))
                .col(big_integer("amount_minor"))
                .col(string("currency"))
                .col(text("explanation"))
                .col(timestamp_with_time_zone("available_at"))
                .col(string_null("payout_id"))
                .col(boolean("is_test").default(false))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "ledger_entries",
            "ux_ledger_entry_key",
            &["tenant_id", "conversion_id", "entry_key"],
            true,
        ))
        .await?;
        m.create_index(index(
            "ledger_entries",
            "ix_ledger_affiliate",
            &["tenant_id", "affiliate_id", "created_at"],
            false,
        ))
        .await?;

        m.create_table(
            owned("payouts")
                .col(string("affiliate_id"))
                .col(big_integer("amount_minor"))
                .col(string("currency"))
                .col(string("status"))
                .col(string_null("reference"))
                .col(timestamp_with_time_zone_null("paid_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "payouts",
            "ix_payouts_affiliate",
            &["tenant_id", "affiliate_id"],
            false,
        ))
        .await?;

        m.create_table(
            owned("notification_endpoints")
                .col(string("affiliate_id"))
                .col(string("kind"))
                .col(text("url_template"))
                .col(boolean("active").default(true))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "notification_endpoints",
            "ix_endpoints_affiliate",
            &["tenant_id", "affiliate_id"],
            false,
        ))
        .await?;

        m.create_table(
            owned("notification_deliveries")
                .col(string("endpoint_id"))
                .col(string("affiliate_id"))
                .col(string("conversion_id"))
                .col(string("event_key"))
                .col(text("url"))
                .col(string("status"))
                .col(integer("attempts").default(0))
                .col(timestamp_with_time_zone("next_attempt_at"))
                .col(integer_null("last_status_code"))
                .col(integer_null("last_latency_ms"))
                .col(text_null("last_error"))
                .col(timestamp_with_time_zone("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "notification_deliveries",
            "ux_deliveries_event",
            &["tenant_id", "endpoint_id", "conversion_id", "event_key"],
            true,
        ))
        .await?;
        m.create_index(index(
            "notification_deliveries",
            "ix_deliveries_due",
            &["status", "next_attempt_at"],
            false,
        ))
        .await?;

        m.create_table(
            owned("notification_attempts")
                .col(string("delivery_id"))
                .col(integer("attempt_no"))
                .col(integer_null("status_code"))
                .col(integer("latency_ms"))
                .col(text_null("response_excerpt"))
                .col(text_null("error"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "notification_attempts",
            "ux_attempts_no",
            &["tenant_id", "delivery_id", "attempt_no"],
            true,
        ))
        .await?;

        m.create_table(
            owned("audit_log")
                .col(string("actor"))
                .col(string("action"))
                .col(string("resource_type"))
                .col(string("resource_id"))
                .col(text_null("details"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "audit_log",
            "ix_audit_tenant_time",
            &["tenant_id", "created_at"],
            false,
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "audit_log",
            "notification_attempts",
            "notification_deliveries",
            "notification_endpoints",
            "payouts",
            "ledger_entries",
            "conversions",
            "postbacks",
            "integrations",
            "clicks",
            "coupons",
            "tracking_links",
            "commission_plans",
            "affiliates",
            "programs",
            "api_keys",
            "tenants",
        ] {
            m.drop_table(Table::drop().table(t).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
