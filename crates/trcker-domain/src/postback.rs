//! Postback parameters: parsed once, at the edge, into a typed request.
//!
//! The receiver collects the parameters from the query string, a form body or a
//! JSON body as name/value pairs; this module maps aliases onto canonical names,
//! checks every field and reports every bad one at once, each by name.

use std::collections::BTreeMap;

use crate::click_id::ClickId;
pub use crate::fields::FieldError;
use crate::money::{Currency, Money};
use crate::slug::Slug;
use crate::status::ConversionStatus;

/// Names merchants' platforms commonly use for our parameters.
pub const DEFAULT_ALIASES: &[(&str, &str)] = &[
    ("clickid", "click_id"),
    ("cid", "click_id"),
    ("subid", "click_id"),
    ("transaction_id", "txn_id"),
    ("order_id", "txn_id"),
    ("orderid", "txn_id"),
    ("txid", "txn_id"),
    ("sum", "amount"),
    ("revenue", "amount"),
    ("value", "amount"),
    ("goal", "event"),
    ("coupon", "coupon_code"),
];

/// The parameters a postback carries, which an integration's aliases map
/// onto (and may not shadow).
pub const PARAMETERS: &[&str] = &[
    "click_id",
    "txn_id",
    "amount",
    "payout",
    "currency",
    "event",
    "status",
    "coupon_code",
    "test",
];

/// Whether a parameter is ours (one of [`PARAMETERS`], or the secret);
/// anything else a merchant sends is kept in the log but otherwise ignored.
fn known(name: &str) -> bool {
    name == "secret" || PARAMETERS.contains(&name)
}

/// A postback as the pipeline sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostbackParams {
    pub click_id: Option<ClickId>,
    pub txn_id: String,
    /// The sale amount; `None` when the merchant sent none (the program's default
    /// revenue, if any, applies).
    pub amount: Option<Money>,
    /// An explicit partner payout that overrides the computed commission.
    pub payout: Option<Money>,
    pub currency: Currency,
    pub event: String,
    pub status: ConversionStatus,
    pub coupon_code: Option<String>,
    pub test: bool,
}

/// Canonical name for a parameter, given the integration's own aliases.
pub fn canonical_name<'a>(name: &'a str, aliases: &'a BTreeMap<String, String>) -> &'a str {
    if let Some(c) = aliases.get(name) {
        return c.as_str();
    }
    if known(name) {
        return name;
    }
    DEFAULT_ALIASES
        .iter()
        .find(|(a, _)| *a == name)
        .map(|(_, c)| *c)
        .unwrap_or(name)
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// Parses the pairs of a postback. `default_currency` is the program's.
pub fn parse(
    pairs: &[(String, String)],
    aliases: &BTreeMap<String, String>,
    default_currency: Currency,
) -> Result<PostbackParams, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, value) in pairs {
        let canon = canonical_name(name, aliases);
        if !known(canon) {
            continue;
        }
        match fields.get(canon) {
            Some(prev) if *prev != value.as_str() => {
                errors.push(FieldError::new(
                    canon,
                    "was given more than once with different values",
                ));
            }
            _ => {
                fields.insert(canon, value.as_str());
            }
        }
    }
    let get = |n: &str| fields.get(n).map(|v| v.trim()).filter(|v| !v.is_empty());

    let click_id = match get("click_id") {
        Some(v) => match ClickId::parse(v) {
            Ok(c) => Some(c),
            Err(e) => {
                errors.push(FieldError::new("click_id", e.to_string()));
                None
            }
        },
        None => None,
    };
    let coupon_code = get("coupon_code").map(str::to_owned);
    if click_id.is_none() && coupon_code.is_none() && !errors.iter().any(|e| e.field == "click_id")
    {
        errors.push(FieldError::new(
            "click_id",
            "is required (or coupon_code, to attribute by coupon)",
        ));
    }
    if let Some(c) = &coupon_code
        && c.len() > 64
    {
        errors.push(FieldError::new(
            "coupon_code",
            "must be at most 64 characters",
        ));
    }

    let txn_id = match get("txn_id") {
        None => {
            errors.push(FieldError::new(
                "txn_id",
                "is required: it is the merchant's order or transaction id, and makes retries safe",
            ));
            String::new()
        }
        Some(v) if v.chars().count() > 128 => {
            errors.push(FieldError::new("txn_id", "must be at most 128 characters"));
            String::new()
        }
        Some(v) if v.chars().any(char::is_control) => {
            errors.push(FieldError::new(
                "txn_id",
                "must not contain control characters",
            ));
            String::new()
        }
        Some(v) => v.to_owned(),
    };

    let currency = match get("currency") {
        None => default_currency,
        Some(v) => Currency::parse(v).unwrap_or_else(|e| {
            errors.push(FieldError::new("currency", e.to_string()));
            default_currency
        }),
    };
    let mut money = |name: &str| {
        get(name).and_then(|v| match Money::parse(v, currency) {
            Ok(m) => Some(m),
            Err(e) => {
                errors.push(FieldError::new(name, e.to_string()));
                None
            }
        })
    };
    let amount = money("amount");
    let payout = money("payout");

    let event = match get("event") {
        None => "sale".to_owned(),
        Some(v) => match Slug::parse(&v.to_ascii_lowercase()) {
            Ok(s) => s.as_str().to_owned(),
            Err(e) => {
                errors.push(FieldError::new("event", e.to_string()));
                String::new()
            }
        },
    };
    let status = match get("status") {
        None => ConversionStatus::Approved,
        Some(v) => ConversionStatus::parse(v).unwrap_or_else(|e| {
            errors.push(FieldError::new("status", e.to_string()));
            ConversionStatus::Approved
        }),
    };
    let test = match get("test") {
        None => false,
        Some(v) => parse_bool(v).unwrap_or_else(|| {
            errors.push(FieldError::new("test", "must be true or false (1 or 0)"));
            false
        }),
    };

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(PostbackParams {
        click_id,
        txn_id,
        amount,
        payout,
        currency,
        event,
        status,
        coupon_code,
        test,
    })
}

/// The parameters as they are kept in the postback log: every pair, with the
/// secret replaced, so the log can be shown to the tenant.
pub fn redacted(pairs: &[(String, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| {
            if k.eq_ignore_ascii_case("secret") || k.eq_ignore_ascii_case("x-postback-secret") {
                (k.clone(), "[redacted]".to_owned())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn cid() -> String {
        ClickId::generate(1_700_000_000_000).into_string()
    }

    #[test]
    fn the_seed_postback_parses() -> Result<(), Vec<FieldError>> {
        let c = cid();
        let p = parse(
            &pairs(&[("click_id", &c), ("amount", "79"), ("txn_id", "order_9876")]),
            &BTreeMap::new(),
            Currency::USD,
        )?;
        assert_eq!(p.txn_id, "order_9876");
        assert_eq!(p.amount, Some(Money::new(7900, Currency::USD)));
        assert_eq!(p.event, "sale");
        assert_eq!(p.status, ConversionStatus::Approved);
        assert!(!p.test);
        Ok(())
    }

    #[test]
    fn aliases_map_onto_our_names() -> Result<(), Vec<FieldError>> {
        let c = cid();
        let mut own = BTreeMap::new();
        own.insert("ref".to_owned(), "click_id".to_owned());
        let p = parse(
            &pairs(&[("ref", &c), ("sum", "10.5"), ("order_id", "A1")]),
            &own,
            Currency::USD,
        )?;
        assert_eq!(p.click_id.map(|c| c.into_string()), Some(c));
        assert_eq!(p.amount.map(|m| m.minor), Some(1050));
        assert_eq!(p.txn_id, "A1");
        Ok(())
    }

    #[test]
    fn every_bad_field_is_named() {
        let errs = parse(
            &pairs(&[
                ("click_id", "abc"),
                ("amount", "x"),
                ("currency", "dollars"),
                ("status", "paid"),
                ("test", "maybe"),
            ]),
            &BTreeMap::new(),
            Currency::USD,
        )
        .err()
        .unwrap_or_default();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in ["click_id", "txn_id", "amount", "currency", "status", "test"] {
            assert!(fields.contains(&f), "{f} missing in {fields:?}");
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let r = redacted(&pairs(&[("secret", "s3cr3t"), ("amount", "1")]));
        assert_eq!(r[0].1, "[redacted]");
        assert_eq!(r[1].1, "1");
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(p in proptest::collection::vec(("[a-z_]{0,12}", ".{0,40}"), 0..12)) {
            let _ = parse(&p, &BTreeMap::new(), Currency::USD);
        }
    }
}
