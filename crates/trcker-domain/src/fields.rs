//! What a tenant types into the admin API, parsed once into types that can
//! only hold valid values, and the collector that names every bad field of a
//! request at once.
//!
//! A use case parses each field of its input with [`Fields::take`], in the
//! order the fields are documented, checks what needs the database with
//! [`Fields::error`], and calls [`Fields::done`]: either every field was good
//! and it gets the parsed values, or it gets every [`FieldError`] and writes
//! nothing.

use std::fmt;

use crate::target::{TargetError, parse_target_template};

/// One bad field of a request, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Collects the bad fields of one request.
#[derive(Debug, Default)]
pub struct Fields(Vec<FieldError>);

impl Fields {
    /// The parsed value, or `None` with `field` recorded as bad.
    pub fn take<T, E: fmt::Display>(&mut self, field: &str, parsed: Result<T, E>) -> Option<T> {
        parsed.map_err(|e| self.error(field, e.to_string())).ok()
    }

    /// An optional field: absent stays `Some(None)`; a bad one is recorded.
    pub fn take_opt<T, E: fmt::Display>(
        &mut self,
        field: &str,
        parsed: Option<Result<T, E>>,
    ) -> Option<Option<T>> {
        match parsed {
            None => Some(None),
            Some(p) => self.take(field, p).map(Some),
        }
    }

    /// A field a change may set, clear (`Some(None)`) or leave (`None`): the
    /// same three, parsed; a bad value is recorded.
    pub fn take_patch<T, E: fmt::Display>(
        &mut self,
        field: &str,
        parsed: Option<Option<Result<T, E>>>,
    ) -> Option<Option<Option<T>>> {
        match parsed {
            None => Some(None),
            Some(None) => Some(Some(None)),
            Some(Some(p)) => self.take(field, p).map(|v| Some(Some(v))),
        }
    }

    /// Records a bad field that is not a parse error (e.g. an unknown id).
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// Whether a field was recorded as bad.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The parsed values (a tuple of what `take` returned) when every field
    /// was good, else every bad field.
    pub fn done<T: AllParsed>(self, parsed: T) -> Result<T::Values, Vec<FieldError>> {
        if !self.0.is_empty() {
            return Err(self.0);
        }
        // Every `None` came with an error, so none is left here.
        parsed
            .all()
            .ok_or_else(|| vec![FieldError::new("request", "is incomplete")])
    }

    /// Every bad field, if there is one (for checks made after `done`).
    pub fn into_result(self) -> Result<(), Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// A tuple of parsed fields, each `Some` when it was good.
pub trait AllParsed {
    type Values;
    fn all(self) -> Option<Self::Values>;
}

macro_rules! all_parsed {
    ($($t:ident),+) => {
        impl<$($t),+> AllParsed for ($(Option<$t>,)+) {
            type Values = ($($t,)+);
            #[allow(non_snake_case)]
            fn all(self) -> Option<Self::Values> {
                let ($($t,)+) = self;
                Some(($($t?,)+))
            }
        }
    };
}

all_parsed!(A);
all_parsed!(A, B);
all_parsed!(A, B, C);
all_parsed!(A, B, C, D);
all_parsed!(A, B, C, D, E);
all_parsed!(A, B, C, D, E, F);
all_parsed!(A, B, C, D, E, F, G);
all_parsed!(A, B, C, D, E, F, G, H);
all_parsed!(A, B, C, D, E, F, G, H, I);
all_parsed!(A, B, C, D, E, F, G, H, I, J);
all_parsed!(A, B, C, D, E, F, G, H, I, J, K);
all_parsed!(A, B, C, D, E, F, G, H, I, J, K, L);

/// A display name (of a tenant, program, affiliate, integration): at most
/// 200 characters as sent, not blank, kept trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be 1 to 200 characters")]
pub struct NameError;

impl Name {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        // The length counts what was sent, as the API document states it.
        if s.chars().count() > 200 {
            return Err(NameError);
        }
        let s = s.trim();
        if s.is_empty() {
            return Err(NameError);
        }
        Ok(Name(s.to_owned()))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// An email address, lower-cased and trimmed: a local part before the first
/// `@`, a dotted domain, no spaces, at most 254 characters as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be an email address such as jane@example.com")]
pub struct EmailError;

impl Email {
    pub fn parse(s: &str) -> Result<Self, EmailError> {
        let email = s.trim().to_ascii_lowercase();
        let valid = s.chars().count() <= 254
            && email
                .split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
            && !email.chars().any(char::is_whitespace);
        if valid {
            Ok(Email(email))
        } else {
            Err(EmailError)
        }
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// An absolute http(s) URL that may hold macros (`{click_id}`…): a
/// destination, a fallback, an affiliate's postback URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl(String);

impl TargetUrl {
    pub fn parse(s: &str) -> Result<Self, TargetError> {
        parse_target_template(s)?;
        Ok(TargetUrl(s.to_owned()))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The name of a URL parameter a program sends the click id in: 1 to 32
/// letters, digits, `_` or `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be 1 to 32 letters, digits, '_' or '-'")]
pub struct ParamNameError;

impl ParamName {
    pub fn parse(s: &str) -> Result<Self, ParamNameError> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(ParamName(s.to_owned()))
        } else {
            Err(ParamNameError)
        }
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A whole number in `MIN..=MAX`: day counts, second counts, limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounded<const MIN: i32, const MAX: i32>(i32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be from {0} to {1}")]
pub struct OutOfRange(i32, i32);

impl<const MIN: i32, const MAX: i32> Bounded<MIN, MAX> {
    pub fn parse(v: i32) -> Result<Self, OutOfRange> {
        if (MIN..=MAX).contains(&v) {
            Ok(Bounded(v))
        } else {
            Err(OutOfRange(MIN, MAX))
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// Days a commission is held before it is approved.
pub type HoldDays = Bounded<0, 365>;
/// Days after a click within which a conversion is attributed to it.
pub type AttributionWindowDays = Bounded<1, 365>;
/// Seconds after its click before which a conversion is refused as too fast
/// (up to 30 days).
pub type MinConversionSeconds = Bounded<0, 2_592_000>;
/// Postbacks per minute an integration may send (0: no limit).
pub type RatePerMinute = Bounded<0, 1_000_000>;

/// A coupon code customers type: at most 64 characters as sent, kept
/// trimmed, not blank, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponCode(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be 1 to 64 printable characters")]
pub struct CouponCodeError;

impl CouponCode {
    pub fn parse(s: &str) -> Result<Self, CouponCodeError> {
        let code = s.trim();
        if code.is_empty() || s.chars().count() > 64 || code.chars().any(char::is_control) {
            return Err(CouponCodeError);
        }
        Ok(CouponCode(code.to_owned()))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A sub-ID a tracking link carries by default: at most 255 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be at most 255 characters")]
pub struct SubIdError;

impl SubId {
    pub fn parse(s: &str) -> Result<Self, SubIdError> {
        if s.chars().count() > 255 {
            return Err(SubIdError);
        }
        Ok(SubId(s.to_owned()))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A goal key (`sale`, `lead`, `install`…): a slug, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventKey(String);

impl EventKey {
    pub fn parse(s: &str) -> Result<Self, crate::slug::SlugError> {
        let key = s.to_ascii_lowercase();
        crate::slug::Slug::parse(&key)?;
        Ok(EventKey(key))
    }

    /// The default goal.
    pub fn sale() -> Self {
        EventKey("sale".into())
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_field_is_named_in_order() {
        let mut f = Fields::default();
        let name = f.take("name", Name::parse("  "));
        let days = f.take("hold_days", HoldDays::parse(400));
        f.error("program_id", "no program with this id");
        let url = f.take("url", TargetUrl::parse("https://shop.example/{click_id}"));
        let errors = f.done((name, days, url)).expect_err("bad fields");
        let named: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(named, ["name", "hold_days", "program_id"]);
        assert_eq!(errors[1].message, "must be from 0 to 365");
    }

    #[test]
    fn good_fields_come_back_parsed() {
        let mut f = Fields::default();
        let name = f.take("name", Name::parse(" Pro plan "));
        let email = f.take("email", Email::parse("Jane@Example.com"));
        let fallback = f.take_opt("fallback_url", None::<Result<TargetUrl, TargetError>>);
        let (name, email, fallback) = f.done((name, email, fallback)).expect("good");
        assert_eq!(name.into_string(), "Pro plan");
        assert_eq!(email.into_string(), "jane@example.com");
        assert_eq!(fallback, None);
    }

    #[test]
    fn a_change_sets_clears_or_leaves_a_field() {
        let mut f = Fields::default();
        let leave = f.take_patch("a", None::<Option<Result<Name, NameError>>>);
        let clear = f.take_patch("b", Some(None::<Result<Name, NameError>>));
        let set = f.take_patch("c", Some(Some(Name::parse("x"))));
        let bad = f.take_patch("d", Some(Some(Name::parse(""))));
        assert_eq!(leave, Some(None));
        assert_eq!(clear, Some(Some(None)));
        assert!(matches!(set, Some(Some(Some(_)))));
        assert_eq!(bad, None);
        let errors = f.done((leave, clear, set, bad)).expect_err("d is bad");
        assert_eq!(errors[0].field, "d");
    }

    #[test]
    fn values_are_checked() {
        assert!(Email::parse("not-an-email").is_err());
        assert!(Email::parse("a@.example").is_err());
        assert!(ParamName::parse("click_id").is_ok());
        assert!(ParamName::parse("click id").is_err());
        assert!(ParamName::parse("").is_err());
        assert!(AttributionWindowDays::parse(0).is_err());
        assert!(CouponCode::parse(" SPRING ").is_ok_and(|c| c.into_string() == "SPRING"));
        assert!(CouponCode::parse("a\u{7}").is_err());
        assert!(SubId::parse(&"x".repeat(256)).is_err());
        assert!(EventKey::parse("Lead").is_ok_and(|e| e.into_string() == "lead"));
        assert!(EventKey::parse("Big Sale!").is_err());
        assert!(TargetUrl::parse("javascript:alert(1)").is_err());
    }
}
