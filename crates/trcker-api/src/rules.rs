//! What the served document states about request fields beyond their types:
//! the bounds, patterns and closed sets that Trcker's parsers enforce, so
//! that a client (or a fuzzer) built from the document sends what Trcker
//! takes. The parsers stay the authority; each rule here says exactly what
//! its parser accepts, no more and no less.
//!
//! Rules that no schema can state are left out and answered with 422 and the
//! field: URL templates (macros are checked by name), decimals (their places
//! depend on the currency), CIDR lists, a referenced id that is not the
//! tenant's, and cross-field rules (`until` after `since`).

use serde_json::{Value, json};
use trcker_domain::ids::IdKind;
use trcker_domain::tiers::TimeZone;

/// What `str::trim` removes and `char::is_whitespace` names: Unicode's
/// White_Space, spelled out because regular expression engines differ on
/// what `\s` covers.
const WS: &str = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// What `char::is_control` names.
const CC: &str = r"\x00-\x1f\x7f-\x9f";

/// The component schema that lists every time zone name.
pub const TIME_ZONE_SCHEMA: &str = "TimeZone";

/// The schema of the time zone names Trcker takes.
pub fn time_zone_schema() -> Value {
    json!({
        "type": "string",
        "description": "An IANA time zone name.",
        "enum": TimeZone::names().collect::<Vec<_>>(),
    })
}

/// The rule of property `field` of request schema `schema`: keywords to add
/// to the property, or (with a `$ref`) a schema that replaces it.
pub fn body_field(schema: &str, field: &str) -> Option<Value> {
    use trcker_services::{conversions, integrations, payouts, tenants};
    Some(match (schema, field) {
        (_, "name") => name(),
        (_, "slug") => json!({"minLength": 1, "maxLength": 64, "pattern": "^[a-z0-9][a-z0-9-]*$"}),
        (_, "email") => json!({
            "maxLength": 254,
            "pattern": format!("^[{WS}]*[^@{WS}]+@[^.{WS}][^{WS}]*\\.[^{WS}]*[{WS}]*$"),
        }),
        ("NewRateIn", "from" | "to") | (_, "currency") => currency(),
        (_, "time_zone") => json!({"$ref": format!("#/components/schemas/{TIME_ZONE_SCHEMA}")}),
        ("NewApiKeyIn", "scope") => one_of(&["admin", "read"]),
        ("ReplayDeadIn", "endpoint_id") => json!({"pattern": IdKind::Endpoint.pattern()}),
        ("NewEndpointIn", "kind") => one_of(&["postback", "webhook"]),
        ("NewEndpointIn" | "UpdateEndpointIn", "method") => one_of(&["GET", "POST"]),
        ("NewEndpointIn" | "UpdateEndpointIn", "body_format") => one_of(&["form", "json"]),
        ("NewEndpointIn" | "UpdateEndpointIn", "body_template") => {
            json!({"maxLength": trcker_services::endpoints::MAX_BODY_TEMPLATE})
        }
        ("NewEndpointIn" | "UpdateEndpointIn", "events") => json!({
            "minItems": 1,
            "items": {"type": "string", "enum": trcker_domain::webhook::Event::ALL.map(|e| e.as_str())},
        }),
        ("BulkReviewIn", "action") => one_of(&["approve", "reject", "refund", "chargeback"]),
        ("BulkReviewIn", "ids") => json!({
            "minItems": 1,
            "maxItems": conversions::MAX_BULK,
            "items": {"type": "string", "pattern": IdKind::Conversion.pattern()},
        }),
        ("ReverseIn", "kind") => one_of(&["refund", "chargeback"]),
        ("ReviewFilterIn", "status") => one_of(CONVERSION_STATUSES),
        ("UpdateIntegrationIn", "status") => one_of(&["active", "revoked"]),
        (_, "status") => one_of(&["active", "paused"]),
        ("CommissionIn" | "TierStepIn", "type") => one_of(&["flat", "percent", "combined"]),
        ("TiersIn", "basis") => one_of(&["conversions", "revenue"]),
        ("TiersIn", "period") => one_of(&["month", "week"]),
        (_, "click_param") => json!({"pattern": "^[A-Za-z0-9_-]{1,32}$"}),
        ("NewCouponIn", "code") => required_note(64),
        (_, "sub1" | "sub2" | "sub3" | "sub4" | "sub5") => json!({"maxLength": 255}),
        (_, "hold_days") => range(0, 365),
        (_, "attribution_window_days") => range(1, 365),
        (_, "min_conversion_seconds") => range(0, 2_592_000),
        (_, "rate_limit_per_minute") => range(0, 1_000_000),
        ("RotateSecretIn", "overlap_hours") => range(0, integrations::MAX_OVERLAP_HOURS),
        ("AccessTokenIn", "expires_in") => {
            use trcker_services::access_tokens::{MAX_LIFETIME, MIN_LIFETIME};
            range(MIN_LIFETIME.as_secs() as i64, MAX_LIFETIME.as_secs() as i64)
        }
        ("SuspendTenantIn", "reason") => note(tenants::MAX_SUSPENSION_REASON),
        ("ReviewIn" | "ReverseIn" | "BulkReviewIn", "reason") => note(conversions::MAX_REASON),
        ("MarkPaidIn", "reference") | ("MarkFailedIn", "reason") => {
            required_note(payouts::MAX_NOTE)
        }
        ("NewAdjustmentIn", "reason") => required_note(trcker_services::ledger::MAX_REASON),
        ("ReattributeIn", "reason") => json!({"maxLength": 200}),
        _ => return None,
    })
}

/// The rule of parameter `name`, found in `place` (`query`, `header`,
/// `path`), of the operation at `path`.
pub fn param(path: &str, place: &str, name: &str) -> Option<Value> {
    match place {
        "query" => query_param(path, name),
        "header" if name == "Idempotency-Key" => Some(json!({
            "minLength": 1,
            "maxLength": trcker_services::idempotency::MAX_KEY_LEN,
            "pattern": "^[!-~]+$",
        })),
        _ => None,
    }
}

fn query_param(path: &str, name: &str) -> Option<Value> {
    Some(match name {
        "limit" => json!({"minimum": 1, "maximum": trcker_services::conversions::MAX_LIMIT}),
        "cursor" => json!({"pattern": list_kind(path)?.pattern()}),
        "status" => match path {
            "/affiliates" | "/programs" => one_of(&["active", "paused"]),
            "/integrations" => one_of(&["active", "revoked"]),
            "/conversions" => one_of(CONVERSION_STATUSES),
            "/payouts" => one_of(&["pending", "paid", "failed"]),
            "/deliveries" => one_of(&["pending", "delivered", "dead"]),
            "/tenants" => one_of(&["active", "suspended"]),
            _ => return None,
        },
        "outcome" if path == "/postbacks" => one_of(&["accepted", "duplicate", "rejected"]),
        "state" if path == "/postbacks" => {
            one_of(&["received", "processed", "unattributed", "done"])
        }
        "integration_id" if path == "/postbacks" => {
            json!({"pattern": IdKind::Integration.pattern()})
        }
        "program_id" if path == "/integrations" => json!({"pattern": IdKind::Program.pattern()}),
        "affiliate_id" if path == "/endpoints" => json!({"pattern": IdKind::Affiliate.pattern()}),
        "kind" if path == "/endpoints" => one_of(&["postback", "webhook"]),
        "endpoint_id" if path == "/deliveries" => json!({"pattern": IdKind::Endpoint.pattern()}),
        "conversion_id" if path == "/deliveries" => {
            json!({"pattern": IdKind::Conversion.pattern()})
        }
        "reason" if path == "/postbacks" => json!({"maxLength": 200}),
        "kind" if path == "/ledger/entries" => {
            one_of(&["commission", "reversal", "adjustment", "payout"])
        }
        "group_by" => one_of(&[
            "day",
            "program",
            "affiliate",
            "sub1",
            "sub2",
            "sub3",
            "sub4",
            "sub5",
            "event",
        ]),
        "from" | "to" if path.starts_with("/reports") => json!({"format": "date"}),
        "from" | "to" if path == "/exchange-rates" => currency(),
        _ => return None,
    })
}

const CONVERSION_STATUSES: &[&str] = &["approved", "pending", "rejected", "refunded", "chargeback"];

/// The kind of id a list at `path` pages by.
fn list_kind(path: &str) -> Option<IdKind> {
    Some(match path {
        "/affiliates" => IdKind::Affiliate,
        "/api-keys" => IdKind::ApiKey,
        "/audit-log" => IdKind::Audit,
        "/conversions" => IdKind::Conversion,
        "/coupons" => IdKind::Coupon,
        "/deliveries" => IdKind::Delivery,
        "/endpoints" => IdKind::Endpoint,
        "/exchange-rates" => IdKind::ExchangeRate,
        "/integrations" => IdKind::Integration,
        "/integrations/{id}/postbacks" | "/postbacks" => IdKind::Postback,
        "/ledger/entries" => IdKind::LedgerEntry,
        "/links" => IdKind::Link,
        "/payouts" => IdKind::Payout,
        "/programs" => IdKind::Program,
        "/tenants" => IdKind::Tenant,
        _ => return None,
    })
}

/// [`trcker_domain::fields::Name`]: at most 200 characters, not blank.
fn name() -> Value {
    json!({"minLength": 1, "maxLength": 200, "pattern": format!("[^{WS}]")})
}

/// [`trcker_domain::money::Currency`]: three letters, spaces around allowed.
fn currency() -> Value {
    json!({"pattern": format!("^[{WS}]*[A-Za-z]{{3}}[{WS}]*$")})
}

/// A note that may be blank: at most `max` characters, none of them control
/// characters once trimmed.
fn note(max: usize) -> Value {
    json!({"maxLength": max, "pattern": format!("^[{WS}]*[^{CC}]*[{WS}]*$")})
}

/// A note that must not be blank.
fn required_note(max: usize) -> Value {
    json!({
        "maxLength": max,
        "pattern": format!("^[{WS}]*[^{CC}]*[^{CC}{WS}][^{CC}]*[{WS}]*$"),
    })
}

fn one_of(words: &[&str]) -> Value {
    json!({"enum": words})
}

fn range(min: i64, max: i64) -> Value {
    json!({"minimum": min, "maximum": max})
}
