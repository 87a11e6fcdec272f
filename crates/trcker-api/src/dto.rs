//! The API's request and response bodies. Money is a decimal string ("7.90").

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use poem_openapi::types::MaybeUndefined;
use trcker_domain::CommissionRule;
use trcker_domain::money::{Currency, format_minor};
use trcker_services::storage::entities::*;
use trcker_services::{admin, debugger};

fn money(minor: i64, currency: &str) -> String {
    format_minor(minor, Currency::parse(currency).unwrap_or(Currency::USD))
}

#[derive(Debug, Object)]
pub struct NewTenantIn {
    /// Display name.
    pub name: String,
    /// The `{brand}` of public URLs: lower-case letters, digits and '-'.
    pub slug: String,
}

#[derive(Debug, Object)]
pub struct TenantCreatedOut {
    pub id: String,
    pub name: String,
    pub slug: String,
    /// The tenant's admin API key. Shown once: store it now.
    pub api_key: String,
    pub created_at: DateTime<Utc>,
}

impl From<admin::CreatedTenant> for TenantCreatedOut {
    fn from(c: admin::CreatedTenant) -> Self {
        TenantCreatedOut {
            id: c.tenant.id,
            name: c.tenant.name,
            slug: c.tenant.slug,
            api_key: c.api_key,
            created_at: c.tenant.created_at,
        }
    }
}

/// How a program pays its affiliates.
#[derive(Debug, Object)]
pub struct CommissionIn {
    /// `flat` (an amount per conversion) or `percent` (of the conversion's amount).
    #[oai(rename = "type")]
    pub kind: String,
    /// A decimal string: "5.00" for flat, "10" for 10 percent.
    pub value: String,
}

#[derive(Debug, Object)]
pub struct CommissionOut {
    #[oai(rename = "type")]
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Object)]
pub struct NewProgramIn {
    pub name: String,
    /// The `{offer}` of public URLs.
    pub slug: String,
    /// Where clicks go; may use macros `{click_id}`, `{sub1}`..`{sub5}`, `{affiliate_id}`, `{program_id}`.
    pub destination_url: String,
    /// Where clicks go while the program, link or affiliate is paused.
    pub fallback_url: Option<String>,
    /// ISO 4217 code; default USD.
    pub currency: Option<String>,
    pub commission: CommissionIn,
    /// Days a commission stays pending before it is approved; default 0 (approved at once).
    pub hold_days: Option<i32>,
    /// Days after a click within which a conversion is attributed to it; default 30.
    pub attribution_window_days: Option<i32>,
    /// Name of the query parameter that carries the click id when the destination has no `{click_id}`; default `click_id`.
    pub click_param: Option<String>,
    /// Amount used when a postback sends none (decimal string).
    pub default_revenue: Option<String>,
    /// Conversions sooner than this many seconds after their click are refused as too fast; default 0.
    pub min_conversion_seconds: Option<i32>,
}

#[derive(Debug, Object)]
pub struct ProgramOut {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub destination_url: String,
    pub fallback_url: Option<String>,
    pub currency: String,
    pub commission: Option<CommissionOut>,
    pub hold_days: i32,
    pub attribution_window_days: i32,
    pub click_param: String,
    pub default_revenue: Option<String>,
    pub min_conversion_seconds: i32,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

impl From<admin::ProgramView> for ProgramOut {
    fn from(v: admin::ProgramView) -> Self {
        let p = v.program;
        ProgramOut {
            commission: v.commission.map(|r: CommissionRule| CommissionOut {
                kind: r.kind().into(),
                value: r.value_string(),
            }),
            default_revenue: p.default_revenue_minor.map(|m| money(m, &p.currency)),
            id: p.id,
            name: p.name,
            slug: p.slug,
            destination_url: p.destination_url,
            fallback_url: p.fallback_url,
            currency: p.currency,
            hold_days: p.hold_days,
            attribution_window_days: p.attribution_window_days,
            click_param: p.click_param,
            min_conversion_seconds: p.min_conversion_seconds,
            status: p.status,
            created_at: p.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct ProgramList {
    pub items: Vec<ProgramOut>,
}

#[derive(Debug, Object)]
pub struct NewAffiliateIn {
    pub name: String,
    pub email: String,
    /// The `{partner}` of tracking links (`?via=`).
    pub slug: String,
    /// Called on each conversion; macros `{click_id}`, `{conversion_id}`, `{txn_id}`, `{payout}`,
    /// `{amount}`, `{currency}`, `{status}`, `{event}`, `{sub1}`..`{sub5}` are URL-encoded.
    pub postback_url: Option<String>,
}

#[derive(Debug, Object)]
pub struct AffiliateOut {
    pub id: String,
    pub name: String,
    pub email: String,
    pub slug: String,
    pub status: String,
    pub postback_url: Option<String>,
    /// Portal invitation link for the affiliate; returned once, at creation.
    #[oai(skip_serializing_if_is_none)]
    pub invite_url: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<affiliate::Model> for AffiliateOut {
    fn from(a: affiliate::Model) -> Self {
        AffiliateOut {
            id: a.id,
            name: a.name,
            email: a.email,
            slug: a.slug,
            status: a.status,
            postback_url: a.postback_url,
            invite_url: None,
            created_at: a.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct AffiliateList {
    pub items: Vec<AffiliateOut>,
}

#[derive(Debug, Object)]
pub struct NewIntegrationIn {
    pub name: String,
    pub program_id: String,
    /// CIDR ranges (IPv4 or IPv6) allowed to send postbacks; empty or absent allows any address.
    pub ip_allowlist: Option<Vec<String>>,
    /// Require an HMAC-SHA256 signature on every postback (see the integration guide).
    pub require_signature: Option<bool>,
    /// Postbacks per minute per receiver node; 0 or absent for no limit.
    pub rate_limit_per_minute: Option<i32>,
    /// Your parameter names mapped to Trcker's, e.g. {"ref": "click_id"}.
    pub param_aliases: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Object)]
pub struct UpdateIntegrationIn {
    pub name: Option<String>,
    /// `active`, or `revoked` to stop accepting its secret.
    pub status: Option<String>,
    /// Replaces the allow-list; [] removes it.
    pub ip_allowlist: Option<Vec<String>>,
    pub require_signature: Option<bool>,
    /// 0 removes the limit.
    pub rate_limit_per_minute: Option<i32>,
    /// Replaces the aliases; {} removes them.
    pub param_aliases: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Object)]
pub struct IntegrationOut {
    pub id: String,
    pub name: String,
    pub program_id: String,
    pub status: String,
    /// The last four characters of the secret.
    pub secret_hint: String,
    pub ip_allowlist: Vec<String>,
    pub require_signature: bool,
    pub rate_limit_per_minute: Option<i32>,
    pub param_aliases: BTreeMap<String, String>,
    /// The 64-character postback secret. Returned once, at creation.
    #[oai(skip_serializing_if_is_none)]
    pub secret: Option<String>,
    /// This integration's postback URL, secret included. Returned once, at creation.
    #[oai(skip_serializing_if_is_none)]
    pub postback_url: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<integration::Model> for IntegrationOut {
    fn from(i: integration::Model) -> Self {
        IntegrationOut {
            id: i.id,
            name: i.name,
            program_id: i.program_id,
            status: i.status,
            secret_hint: i.secret_hint,
            ip_allowlist: i
                .ip_allowlist
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default(),
            require_signature: i.require_signature,
            rate_limit_per_minute: i.rate_limit_per_minute,
            param_aliases: i
                .param_aliases
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default(),
            secret: None,
            postback_url: None,
            created_at: i.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct ConversionOut {
    pub id: String,
    pub txn_id: String,
    pub status: String,
    pub event: String,
    pub amount: String,
    pub currency: String,
    /// The affiliate's commission; null until computed.
    pub payout: Option<String>,
    /// Why the payout is what it is.
    pub commission_explanation: Option<String>,
    pub affiliate_id: String,
    pub program_id: String,
    pub click_id: Option<String>,
    pub coupon_code: Option<String>,
    pub postback_id: String,
    pub is_test: bool,
    pub hold_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<conversion::Model> for ConversionOut {
    fn from(c: conversion::Model) -> Self {
        ConversionOut {
            amount: money(c.amount_minor, &c.currency),
            payout: c.payout_minor.map(|m| money(m, &c.currency)),
            id: c.id,
            txn_id: c.txn_id,
            status: c.status,
            event: c.event,
            currency: c.currency,
            commission_explanation: c.commission_explanation,
            affiliate_id: c.affiliate_id,
            program_id: c.program_id,
            click_id: c.click_id,
            coupon_code: c.coupon_code,
            postback_id: c.postback_id,
            is_test: c.is_test,
            hold_until: c.hold_until,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct ConversionPage {
    pub items: Vec<ConversionOut>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object)]
pub struct ParamOut {
    pub name: String,
    pub value: String,
}

/// One postback as it was received, and what became of it.
#[derive(Debug, Object)]
pub struct PostbackLogOut {
    pub id: String,
    pub received_at: DateTime<Utc>,
    pub method: String,
    pub source_ip: Option<String>,
    /// Every parameter as received; the secret is redacted.
    pub params: Vec<ParamOut>,
    /// The HTTP status Trcker answered.
    pub http_status: i32,
    /// `accepted`, `duplicate` or `rejected`.
    pub outcome: String,
    /// For accepted postbacks: `received` (queued), `processed` or `unattributed`.
    pub state: String,
    /// Why: the bad fields, the original of a duplicate, whom it was attributed to, or why not.
    pub reason: Option<String>,
    pub txn_id: Option<String>,
    pub conversion_id: Option<String>,
    pub duplicate_of: Option<String>,
    pub is_test: bool,
    /// The commission booked for it, with its explanation, once computed.
    pub commission: Option<String>,
}

impl From<postback::Model> for PostbackLogOut {
    fn from(p: postback::Model) -> Self {
        let params: Vec<(String, String)> = serde_json::from_str(&p.raw_params).unwrap_or_default();
        PostbackLogOut {
            id: p.id,
            received_at: p.created_at,
            method: p.method,
            source_ip: p.source_ip,
            params: params
                .into_iter()
                .map(|(name, value)| ParamOut { name, value })
                .collect(),
            http_status: p.http_status,
            outcome: p.outcome,
            state: p.state,
            reason: p.reason,
            txn_id: p.txn_id,
            conversion_id: p.conversion_id,
            duplicate_of: p.duplicate_of,
            is_test: p.is_test,
            commission: None,
        }
    }
}

impl From<debugger::PostbackLogEntry> for PostbackLogOut {
    fn from(e: debugger::PostbackLogEntry) -> Self {
        let mut out = PostbackLogOut::from(e.postback);
        out.commission = e.commission;
        out
    }
}

#[derive(Debug, Object)]
pub struct PostbackLogPage {
    pub items: Vec<PostbackLogOut>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object)]
pub struct TestFireIn {
    /// The affiliate the test click is made for.
    pub affiliate_id: String,
    /// Sale amount (decimal string); default 10.00.
    pub amount: Option<String>,
}

#[derive(Debug, Object)]
pub struct NotificationTraceOut {
    pub url: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
}

/// What happened to the test postback, step by step.
#[derive(Debug, Object)]
pub struct TestFireOut {
    pub click_id: String,
    pub txn_id: String,
    /// The receiver's HTTP status and body, exactly as a merchant would get them.
    pub http_status: u16,
    pub response: String,
    pub received: bool,
    pub postback_id: Option<String>,
    pub attributed: bool,
    pub conversion_id: Option<String>,
    pub reason: Option<String>,
    /// The commission, e.g. "1.00 USD".
    pub payout: Option<String>,
    pub commission_explanation: Option<String>,
    pub notifications: Vec<NotificationTraceOut>,
    /// Every step finished within the wait (notified, or nothing to notify).
    pub complete: bool,
}

impl From<debugger::TestFireTrace> for TestFireOut {
    fn from(t: debugger::TestFireTrace) -> Self {
        TestFireOut {
            click_id: t.click_id,
            txn_id: t.txn_id,
            http_status: t.http_status,
            response: t.response,
            received: t.received,
            postback_id: t.postback_id,
            attributed: t.attributed,
            conversion_id: t.conversion_id,
            reason: t.reason,
            payout: t.payout,
            commission_explanation: t.commission_explanation,
            notifications: t
                .notifications
                .into_iter()
                .map(|n| NotificationTraceOut {
                    url: n.url,
                    status: n.status,
                    attempts: n.attempts,
                    last_status_code: n.last_status_code,
                    last_error: n.last_error,
                })
                .collect(),
            complete: t.complete,
        }
    }
}

#[derive(Debug, Object)]
pub struct NewPlanIn {
    /// Goal key (`sale`, `lead`, `install`...); default `sale`.
    pub event: Option<String>,
    /// Make it this affiliate's own plan, overriding the program's for this event.
    pub affiliate_id: Option<String>,
    pub commission: CommissionIn,
}

#[derive(Debug, Object)]
pub struct PlanOut {
    pub id: String,
    pub program_id: String,
    pub event: String,
    pub affiliate_id: Option<String>,
    pub commission: CommissionOut,
    pub created_at: DateTime<Utc>,
}

impl From<commission_plan::Model> for PlanOut {
    fn from(p: commission_plan::Model) -> Self {
        PlanOut {
            commission: CommissionOut {
                kind: p.kind,
                value: p.value,
            },
            id: p.id,
            program_id: p.program_id,
            event: p.event,
            affiliate_id: p.affiliate_id,
            created_at: p.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct PlanList {
    pub items: Vec<PlanOut>,
}

#[derive(Debug, Object)]
pub struct NewCouponIn {
    pub program_id: String,
    pub affiliate_id: String,
    /// The code customers type; postbacks with `coupon_code` and no click are attributed to its affiliate.
    pub code: String,
}

#[derive(Debug, Object)]
pub struct CouponOut {
    pub id: String,
    pub program_id: String,
    pub affiliate_id: String,
    pub code: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

impl From<coupon::Model> for CouponOut {
    fn from(c: coupon::Model) -> Self {
        CouponOut {
            id: c.id,
            program_id: c.program_id,
            affiliate_id: c.affiliate_id,
            code: c.code,
            status: c.status,
            created_at: c.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct CouponList {
    pub items: Vec<CouponOut>,
}

/// `Some(None)` for an explicit null, `None` when the field is absent.
pub fn patch<T>(v: MaybeUndefined<T>) -> Option<Option<T>> {
    match v {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => Some(Some(v)),
    }
}

#[derive(Debug, Object)]
pub struct NewLinkIn {
    pub program_id: String,
    pub affiliate_id: String,
    /// Overrides the program's destination for this link (macros allowed).
    pub destination_url: Option<String>,
    /// Default sub-IDs; `sub1`..`sub5` in the click URL win over them.
    pub sub1: Option<String>,
    pub sub2: Option<String>,
    pub sub3: Option<String>,
    pub sub4: Option<String>,
    pub sub5: Option<String>,
}

#[derive(Debug, Object)]
pub struct LinkOut {
    pub id: String,
    pub code: String,
    /// The tracking URL to share: `<public url>/c/<code>`.
    pub url: String,
    pub program_id: String,
    pub affiliate_id: String,
    pub destination_url: Option<String>,
    pub status: String,
    pub sub1: Option<String>,
    pub sub2: Option<String>,
    pub sub3: Option<String>,
    pub sub4: Option<String>,
    pub sub5: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl LinkOut {
    pub fn new(l: tracking_link::Model, url: String) -> Self {
        LinkOut {
            id: l.id,
            code: l.code,
            url,
            program_id: l.program_id,
            affiliate_id: l.affiliate_id,
            destination_url: l.destination_url,
            status: l.status,
            sub1: l.sub1,
            sub2: l.sub2,
            sub3: l.sub3,
            sub4: l.sub4,
            sub5: l.sub5,
            created_at: l.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct LinkList {
    pub items: Vec<LinkOut>,
}

#[derive(Debug, Object)]
pub struct UpdateLinkIn {
    /// null removes the override.
    pub destination_url: MaybeUndefined<String>,
    /// `active` or `paused` (paused links send clicks to the program's fallback URL).
    pub status: Option<String>,
}

#[derive(Debug, Object)]
pub struct UpdateProgramIn {
    pub name: Option<String>,
    pub destination_url: Option<String>,
    /// null removes it.
    pub fallback_url: MaybeUndefined<String>,
    /// `active` or `paused` (paused programs send clicks to the fallback URL).
    pub status: Option<String>,
    pub attribution_window_days: Option<i32>,
    pub min_conversion_seconds: Option<i32>,
    pub hold_days: Option<i32>,
}

#[derive(Debug, Object)]
pub struct UpdateAffiliateIn {
    pub name: Option<String>,
    /// `active` or `paused` (a paused affiliate's clicks go to the fallback URL and
    /// its conversions are kept unattributed).
    pub status: Option<String>,
    /// null removes it.
    pub postback_url: MaybeUndefined<String>,
}
