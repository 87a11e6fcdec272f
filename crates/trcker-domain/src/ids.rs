//! Prefixed, time-ordered identifiers (`ten_…`, `prg_…`, `cnv_…`).
//!
//! An id is a short prefix naming its kind, an underscore and a ULID in lower-case
//! Crockford base32: 48 bits of milliseconds then 80 random bits, so ids sort by
//! creation time (good for index locality on the tables we insert into at volume)
//! and cannot be guessed.

use std::fmt;

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
    Endpoint,
    Delivery,
    Attempt,
    Audit,
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
            IdKind::Endpoint => "end",
            IdKind::Delivery => "dlv",
            IdKind::Attempt => "att",
            IdKind::Audit => "aud",
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

    /// Whether `s` has the shape of an id of this kind (prefix and 26 base32 characters).
    pub fn matches(self, s: &str) -> bool {
        let Some(rest) = s
            .strip_prefix(self.prefix())
            .and_then(|r| r.strip_prefix('_'))
        else {
            return false;
        };
        rest.len() == 26 && ulid::Ulid::from_string(&rest.to_ascii_uppercase()).is_ok()
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
}
