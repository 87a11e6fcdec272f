//! Money: integer minor units in an ISO 4217 currency. Never a float.
//!
//! Amounts arrive as decimal strings ("79", "79.5", "79.00"); they are parsed
//! exactly and refused if they carry more decimals than the currency has (a
//! postback of "79.999 USD" is an error the merchant must see, not a rounding we
//! hide). They leave as decimal strings with the currency's own number of
//! decimals ("7.90").
//!
//! No amount a user sends may exceed [`MAX_MINOR`] minor units (10^12:
//! 10,000,000,000.00 USD, 1,000,000,000,000 JPY): every sum of them is then
//! far from `i64`'s bounds per row and is taken in `i128` across rows.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

/// An ISO 4217 alphabetic currency code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("must be a three-letter ISO 4217 currency code such as USD")]
    Currency,
    #[error("must be a decimal number such as 79 or 79.90")]
    Syntax,
    #[error("must not be negative")]
    Negative,
    #[error("has more decimal places than {0} allows ({1})")]
    Precision(Currency, u32),
    #[error("is too large")]
    Overflow,
    #[error("is above the maximum {max} {0} (10^12 minor units)", max = format_minor(MAX_MINOR, *.0))]
    Maximum(Currency),
    #[error("must be a positive decimal of at most 12 decimal places, at most 1000000000")]
    Rate,
}

/// The largest amount, in minor units, that Trcker accepts anywhere.
pub const MAX_MINOR: i64 = 1_000_000_000_000;

/// Currencies whose minor unit is not the usual hundredth.
const EXPONENTS: &[(&str, u32)] = &[
    ("BHD", 3),
    ("BIF", 0),
    ("CLP", 0),
    ("DJF", 0),
    ("GNF", 0),
    ("IQD", 3),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KMF", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("LYD", 3),
    ("OMR", 3),
    ("PYG", 0),
    ("RWF", 0),
    ("TND", 3),
    ("UGX", 0),
    ("VND", 0),
    ("VUV", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
];

impl Currency {
    pub const USD: Currency = Currency(*b"USD");

    /// Parses a code; lower case is accepted and normalised.
    pub fn parse(s: &str) -> Result<Self, MoneyError> {
        let b = s.trim().as_bytes();
        if b.len() != 3 || !b.iter().all(|c| c.is_ascii_alphabetic()) {
            return Err(MoneyError::Currency);
        }
        Ok(Currency([
            b[0].to_ascii_uppercase(),
            b[1].to_ascii_uppercase(),
            b[2].to_ascii_uppercase(),
        ]))
    }

    pub fn code(&self) -> &str {
        // The bytes are ASCII letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// Number of decimals of the minor unit (2 for USD, 0 for JPY, 3 for KWD).
    pub fn exponent(&self) -> u32 {
        EXPONENTS
            .iter()
            .find(|(c, _)| *c == self.code())
            .map(|(_, e)| *e)
            .unwrap_or(2)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

/// An amount in minor units of a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(minor: i64, currency: Currency) -> Self {
        Money { minor, currency }
    }

    /// Parses a non-negative decimal string in `currency`.
    pub fn parse(s: &str, currency: Currency) -> Result<Self, MoneyError> {
        let d = parse_decimal(s)?;
        if d.is_sign_negative() && !d.is_zero() {
            return Err(MoneyError::Negative);
        }
        let minor = match to_minor(d, currency) {
            Err(MoneyError::Overflow) => return Err(MoneyError::Maximum(currency)),
            other => other?,
        };
        if minor > MAX_MINOR {
            return Err(MoneyError::Maximum(currency));
        }
        Ok(Money { minor, currency })
    }

    /// The amount as an exact decimal in major units.
    pub fn to_decimal(&self) -> Decimal {
        Decimal::new(self.minor, self.currency.exponent())
    }

    /// "7.90" for 790 USD cents; "500" for 500 JPY.
    pub fn amount_string(&self) -> String {
        format_minor(self.minor, self.currency)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount_string(), self.currency)
    }
}

/// An exchange rate: one unit of a currency in another, an exact positive
/// decimal of at most 12 decimal places and at most 10^9.
pub fn parse_rate(s: &str) -> Result<Decimal, MoneyError> {
    let d = parse_decimal(s)?.normalize();
    if d <= Decimal::ZERO {
        return Err(MoneyError::Rate);
    }
    if d.scale() > 12 || d > Decimal::from(1_000_000_000i64) {
        return Err(MoneyError::Rate);
    }
    Ok(d)
}

/// `amount` converted into `to` at `rate`, rounded once to `to`'s minor
/// unit, half away from zero (the commission's rule).
pub fn convert(amount: Money, rate: Decimal, to: Currency) -> Result<Money, MoneyError> {
    let exact = amount
        .to_decimal()
        .checked_mul(rate)
        .ok_or(MoneyError::Maximum(to))?;
    let rounded = exact.round_dp_with_strategy(
        to.exponent(),
        rust_decimal::RoundingStrategy::MidpointAwayFromZero,
    );
    let minor = to_minor(rounded, to).map_err(|_| MoneyError::Maximum(to))?;
    if minor > MAX_MINOR {
        return Err(MoneyError::Maximum(to));
    }
    Ok(Money::new(minor, to))
}

/// Formats minor units with the currency's decimals.
pub fn format_minor(minor: i64, currency: Currency) -> String {
    let mut d = Decimal::new(minor, currency.exponent());
    d.rescale(currency.exponent());
    d.to_string()
}

/// A plain decimal ("10", "12.5"); no exponent notation, no thousands separators.
pub fn parse_decimal(s: &str) -> Result<Decimal, MoneyError> {
    let s = s.trim();
    let valid = !s.is_empty()
        && s.len() <= 30
        && s.trim_start_matches(['-', '+'])
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.')
        && s.bytes().filter(|&b| b == b'.').count() <= 1
        && s.bytes().any(|b| b.is_ascii_digit());
    if !valid {
        return Err(MoneyError::Syntax);
    }
    Decimal::from_str(s).map_err(|_| MoneyError::Syntax)
}

/// Converts an exact decimal into minor units; refuses to round.
pub fn to_minor(d: Decimal, currency: Currency) -> Result<i64, MoneyError> {
    let exp = currency.exponent();
    let d = d.normalize();
    if d.scale() > exp {
        return Err(MoneyError::Precision(currency, exp));
    }
    let scaled = d
        .checked_mul(Decimal::from(10i64.pow(exp)))
        .ok_or(MoneyError::Overflow)?;
    i64::try_from(scaled).map_err(|_| MoneyError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_formats_exactly() {
        let usd = Currency::USD;
        assert_eq!(Money::parse("79", usd).map(|m| m.minor), Ok(7900));
        assert_eq!(Money::parse("79.9", usd).map(|m| m.minor), Ok(7990));
        assert_eq!(Money::parse("0.01", usd).map(|m| m.minor), Ok(1));
        assert_eq!(
            Money::parse("79.999", usd),
            Err(MoneyError::Precision(usd, 2))
        );
        assert_eq!(Money::parse("-1", usd), Err(MoneyError::Negative));
        assert_eq!(Money::parse("1e3", usd), Err(MoneyError::Syntax));
        assert_eq!(Money::parse("abc", usd), Err(MoneyError::Syntax));
        assert_eq!(Money::parse("", usd), Err(MoneyError::Syntax));
        assert_eq!(format_minor(790, usd), "7.90");
        assert_eq!(format_minor(-790, usd), "-7.90");
        let jpy = Currency::parse("jpy").unwrap_or(usd);
        assert_eq!(jpy.code(), "JPY");
        assert_eq!(format_minor(500, jpy), "500");
        assert_eq!(
            Money::parse("500.5", jpy),
            Err(MoneyError::Precision(jpy, 0))
        );
        assert_eq!(Currency::parse("US"), Err(MoneyError::Currency));
        // The maximum: 10^12 minor units, whatever the currency's decimals.
        assert_eq!(
            Money::parse("10000000000", usd).map(|m| m.minor),
            Ok(MAX_MINOR)
        );
        assert_eq!(
            Money::parse("10000000000.01", usd),
            Err(MoneyError::Maximum(usd))
        );
        assert_eq!(
            Money::parse("92233720368547758.07", usd),
            Err(MoneyError::Maximum(usd))
        );
        assert_eq!(
            Money::parse("10000000000.01", usd)
                .map_err(|e| e.to_string())
                .err()
                .as_deref(),
            Some("is above the maximum 10000000000.00 USD (10^12 minor units)")
        );
        let kwd = Currency::parse("KWD").unwrap_or(usd);
        assert_eq!(
            Money::parse("1000000000", kwd).map(|m| m.minor),
            Ok(MAX_MINOR)
        );
        assert_eq!(
            Money::parse("1000000000.001", kwd),
            Err(MoneyError::Maximum(kwd))
        );
        assert_eq!(
            Money::parse("1000000000000", jpy).map(|m| m.minor),
            Ok(MAX_MINOR)
        );
        assert_eq!(
            Money::parse("1000000000001", jpy),
            Err(MoneyError::Maximum(jpy))
        );
        assert_eq!(Currency::parse("U$D"), Err(MoneyError::Currency));
    }

    #[test]
    fn conversion_rounds_once_to_the_target() {
        let usd = Currency::USD;
        let eur = Currency::parse("EUR").unwrap_or(usd);
        let jpy = Currency::parse("JPY").unwrap_or(usd);
        let kwd = Currency::parse("KWD").unwrap_or(usd);
        let rate = |s: &str| parse_rate(s).unwrap_or_default();
        assert_eq!(
            convert(Money::new(10000, eur), rate("1.1"), usd),
            Ok(Money::new(11000, usd))
        );
        // 12.34 EUR at 1.085 = 13.3889 USD -> 13.39
        assert_eq!(
            convert(Money::new(1234, eur), rate("1.085"), usd),
            Ok(Money::new(1339, usd))
        );
        // 100.00 USD at 151.555 = 15155.5 JPY -> 15156 (half away from zero)
        assert_eq!(
            convert(Money::new(10000, usd), rate("151.555"), jpy),
            Ok(Money::new(15156, jpy))
        );
        // 1000 JPY at 0.00207 = 2.07 KWD
        assert_eq!(
            convert(Money::new(1000, jpy), rate("0.00207"), kwd),
            Ok(Money::new(2070, kwd))
        );
        assert_eq!(
            convert(Money::new(MAX_MINOR, usd), rate("2"), eur),
            Err(MoneyError::Maximum(eur))
        );
        for bad in ["0", "-1", "1.0000000000001", "1000000001", "x"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn minor_units_round_trip(minor in 0i64..1_000_000_000_000) {
            let s = format_minor(minor, Currency::USD);
            prop_assert_eq!(Money::parse(&s, Currency::USD).map(|m| m.minor), Ok(minor));
        }

        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = Money::parse(&s, Currency::USD);
        }
    }
}
