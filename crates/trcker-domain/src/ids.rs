//! Prefixed, time-ordered identifiers (`ten_…`, `prg_…`, `cnv_…`).
//!
//! An id is a short prefix naming its kind, an underscore and a ULID in lower-case
//! Crockford base32: 48 bits of milliseconds then 80 random bits, so ids sort by
//! creation time (good for index locality on the tables we insert into at volume)
//! and cannot be guessed.

use std::fmt;

/// Crockford's base32 alphabet in lower case, as ids spell their ULID.
const CROCKFORD_LOWER: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// The kinds of ids a user sees, with their prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Tenant,
    ApiKey,
    Program,
    Affiliate,
    Link,
    Coupon,
    Integration,
    Postback,
    Conversion,
    CommissionPlan,
    LedgerEntry,
    Payout,
    /// A batch of payouts created by one request.
    PayoutBatch,
    ExchangeRate,
    Endpoint,
    Delivery,
    Attempt,
    Audit,
    /// An HTTP request (`X-Request-Id`), when its sender gave none.
    Request,
}

impl IdKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            IdKind::Tenant => "ten",
            IdKind::ApiKey => "key",
            IdKind::Program => "prg",
            IdKind::Affiliate => "aff",
            IdKind::Link => "lnk",
            IdKind::Coupon => "cpn",
            IdKind::Integration => "int",
            IdKind::Postback => "pbk",
            IdKind::Conversion => "cnv",
            IdKind::CommissionPlan => "pln",
            IdKind::LedgerEntry => "led",
            IdKind::Payout => "pay",
            IdKind::PayoutBatch => "pbt",
            IdKind::ExchangeRate => "fxr",
            IdKind::Endpoint => "end",
            IdKind::Delivery => "dlv",
            IdKind::Attempt => "att",
            IdKind::Audit => "aud",
            IdKind::Request => "req",
        }
    }

    /// A fresh id of this kind.
    pub fn generate(self) -> String {
        format!(
            "{}_{}",
            self.prefix(),
            ulid::Ulid::new().to_string().to_ascii_lowercase()
        )
    }

    /// Whether `s` has the shape of an id of this kind: the prefix, `_` and
    /// a ULID as Trcker writes it (26 lower-case Crockford base32
    /// characters, the first at most `7`); [`IdKind::pattern`] says the same.
    pub fn matches(self, s: &str) -> bool {
        let Some(rest) = s
            .strip_prefix(self.prefix())
            .and_then(|r| r.strip_prefix('_'))
        else {
            return false;
        };
        let b = rest.as_bytes();
        b.len() == 26
            && (b'0'..=b'7').contains(&b[0])
            && b.iter().all(|c| CROCKFORD_LOWER.contains(c))
    }

    /// What a request field that should hold an id of this kind is told
    /// when it does not.
    pub const fn not_one(self) -> &'static str {
        match self {
            IdKind::Tenant => "is not a tenant id",
            IdKind::ApiKey => "is not an API key id",
            IdKind::Program => "is not a program id",
            IdKind::Affiliate => "is not an affiliate id",
            IdKind::Link => "is not a link id",
            IdKind::Coupon => "is not a coupon id",
            IdKind::Integration => "is not an integration id",
            IdKind::Postback => "is not a postback id",
            IdKind::Conversion => "is not a conversion id",
            IdKind::CommissionPlan => "is not a commission plan id",
            IdKind::LedgerEntry => "is not a ledger entry id",
            IdKind::Payout => "is not a payout id",
            IdKind::PayoutBatch => "is not a payout batch id",
            IdKind::ExchangeRate => "is not an exchange rate id",
            IdKind::Endpoint => "is not an endpoint id",
            IdKind::Delivery => "is not a delivery id",
            IdKind::Attempt => "is not an attempt id",
            IdKind::Audit => "is not an audit entry id",
            IdKind::Request => "is not a request id",
        }
    }

    /// `s` as an id of this kind (a list filter's value), or what is wrong
    /// with it ([`IdKind::not_one`]).
    pub fn parse(self, s: &str) -> Result<String, &'static str> {
        if self.matches(s) {
            Ok(s.to_owned())
        } else {
            Err(self.not_one())
        }
    }

    /// The regular expression of [`IdKind::matches`], for the API document.
    pub fn pattern(self) -> String {
        format!("^{}_[0-7][0-9a-hjkmnp-tv-z]{{25}}$", self.prefix())
    }
}

/// The longest request id taken from a sender.
pub const MAX_REQUEST_ID: usize = 128;

/// A request's id: the sender's `X-Request-Id` when it is sane (1 to
/// [`MAX_REQUEST_ID`] characters of letters, digits and `-_.:`), so that
/// a proxy's or client's id follows the request through Trcker's logs;
/// otherwise a fresh `req_…` id.
pub fn request_id(sent: Option<&str>) -> String {
    match sent {
        Some(id)
            if (1..=MAX_REQUEST_ID).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
        {
            id.to_owned()
        }
        _ => IdKind::Request.generate(),
    }
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_request_id_is_kept_and_any_other_replaced() {
        assert_eq!(request_id(Some("lb-7f3a:42.1_x")), "lb-7f3a:42.1_x");
        let long = "a".repeat(MAX_REQUEST_ID);
        assert_eq!(request_id(Some(&long)), long);
        for bad in [
            None,
            Some(""),
            Some("has space"),
            Some("new\nline"),
            Some("é"),
            Some(&*"a".repeat(MAX_REQUEST_ID + 1)),
        ] {
            let id = request_id(bad);
            assert!(IdKind::Request.matches(&id), "{bad:?} gave {id}");
        }
    }

    #[test]
    fn ids_carry_their_prefix_and_sort_by_time() {
        let a = IdKind::Conversion.generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = IdKind::Conversion.generate();
        assert!(a.starts_with("cnv_"));
        assert!(a < b);
        assert!(IdKind::Conversion.matches(&a));
        assert!(!IdKind::Program.matches(&a));
        assert!(!IdKind::Conversion.matches("cnv_nope"));
    }

    #[test]
    fn a_filter_value_parses_as_its_kind_or_says_which_it_is_not() {
        let id = IdKind::Endpoint.generate();
        assert_eq!(IdKind::Endpoint.parse(&id), Ok(id.clone()));
        assert_eq!(IdKind::Affiliate.parse(&id), Err("is not an affiliate id"));
        assert_eq!(IdKind::Program.parse(""), Err("is not a program id"));
    }
}
