//! Commission rules and their arithmetic.
//!
//! A rule is a flat amount per conversion (CPA), a percentage of the
//! conversion's amount (revshare), or both added together; a plan may cap
//! what one conversion earns. Percentages are exact decimals; the percentage
//! part is rounded once, to the currency's minor unit, half away from zero
//! (0.005 → 0.01), and every computed commission carries a sentence that
//! explains it.

use rust_decimal::{Decimal, RoundingStrategy};

use crate::money::{Currency, Money, MoneyError, format_minor, parse_decimal, to_minor};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommissionRule {
    /// A fixed amount per conversion, in the program's currency.
    Flat(Money),
    /// A percentage (0 to 100) of the conversion's amount.
    Percent(Decimal),
    /// A flat amount plus a percentage of the amount.
    Combined(Money, Decimal),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("type must be \"flat\", \"percent\" or \"combined\"")]
    Kind,
    #[error("a combined rule is a flat amount and a percentage: value \"2.00\" and percent \"5\"")]
    Combined,
    #[error("value {0}")]
    Value(MoneyError),
    #[error("value must be a percentage from 0 to 100")]
    PercentRange,
}

/// A computed commission and why it is what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commission {
    pub payout: Money,
    pub explanation: String,
    /// What the rule gave before the plan's maximum cut it (None: not cut).
    pub uncapped: Option<Money>,
}

impl CommissionRule {
    /// Parses the API's `{"type": "...", "value": "..."}` in the program's currency.
    pub fn parse(kind: &str, value: &str, currency: Currency) -> Result<Self, RuleError> {
        match kind {
            "flat" => Money::parse(value, currency)
                .map(CommissionRule::Flat)
                .map_err(RuleError::Value),
            "percent" => parse_percent(value).map(CommissionRule::Percent),
            // Stored as "2.00+5"; the API sends the two parts apart.
            "combined" => {
                let (flat, pct) = value.split_once('+').ok_or(RuleError::Combined)?;
                Ok(CommissionRule::Combined(
                    Money::parse(flat, currency).map_err(RuleError::Value)?,
                    parse_percent(pct)?,
                ))
            }
            _ => Err(RuleError::Kind),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            CommissionRule::Flat(_) => "flat",
            CommissionRule::Percent(_) => "percent",
            CommissionRule::Combined(..) => "combined",
        }
    }

    /// The value as stored: "5.00" for flat, "10" for percent, "2.00+5"
    /// for combined.
    pub fn value_string(&self) -> String {
        match self {
            CommissionRule::Flat(m) => m.amount_string(),
            CommissionRule::Percent(p) => p.normalize().to_string(),
            CommissionRule::Combined(m, p) => format!("{}+{}", m.amount_string(), p.normalize()),
        }
    }

    /// The flat part, if any.
    pub fn flat(&self) -> Option<Money> {
        match self {
            CommissionRule::Flat(m) | CommissionRule::Combined(m, _) => Some(*m),
            CommissionRule::Percent(_) => None,
        }
    }

    /// The percentage part, if any.
    pub fn percent(&self) -> Option<Decimal> {
        match self {
            CommissionRule::Percent(p) | CommissionRule::Combined(_, p) => Some(p.normalize()),
            CommissionRule::Flat(_) => None,
        }
    }

    /// The commission on a conversion of `amount`.
    pub fn compute(&self, amount: Money) -> Result<Commission, MoneyError> {
        let cur = amount.currency;
        let of = |pct: &Decimal| -> Result<Money, MoneyError> {
            let exact = amount.to_decimal() * *pct / Decimal::ONE_HUNDRED;
            let rounded = exact
                .round_dp_with_strategy(cur.exponent(), RoundingStrategy::MidpointAwayFromZero);
            Ok(Money::new(to_minor(rounded, cur)?, cur))
        };
        let amount_text = format!("{} {}", format_minor(amount.minor, cur), cur);
        let (payout, explanation) = match self {
            CommissionRule::Flat(flat) => (*flat, format!("flat {flat} per conversion")),
            CommissionRule::Percent(pct) => {
                let part = of(pct)?;
                (
                    part,
                    format!("{}% of {amount_text} = {part}", pct.normalize()),
                )
            }
            CommissionRule::Combined(flat, pct) => {
                let part = of(pct)?;
                let sum = flat
                    .minor
                    .checked_add(part.minor)
                    .ok_or(MoneyError::Overflow)?;
                let payout = Money::new(sum, cur);
                (
                    payout,
                    format!(
                        "flat {flat} + {}% of {amount_text} ({part}) = {payout}",
                        pct.normalize()
                    ),
                )
            }
        };
        Ok(Commission {
            payout,
            explanation,
            uncapped: None,
        })
    }

    /// The commission on a conversion of `amount`, no more than `max`.
    pub fn compute_capped(
        &self,
        amount: Money,
        max: Option<Money>,
    ) -> Result<Commission, MoneyError> {
        let c = self.compute(amount)?;
        Ok(match max {
            Some(max) if c.payout.minor > max.minor => Commission {
                payout: max,
                explanation: format!("{}, capped at the plan's maximum {max}", c.explanation),
                uncapped: Some(c.payout),
            },
            _ => c,
        })
    }
}

/// A percentage from 0 to 100.
fn parse_percent(value: &str) -> Result<Decimal, RuleError> {
    let d = parse_decimal(value).map_err(RuleError::Value)?;
    if d < Decimal::ZERO || d > Decimal::ONE_HUNDRED {
        return Err(RuleError::PercentRange);
    }
    Ok(d.normalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd(minor: i64) -> Money {
        Money::new(minor, Currency::USD)
    }

    #[test]
    fn percent_of_amount() -> Result<(), Box<dyn std::error::Error>> {
        let rule = CommissionRule::parse("percent", "10", Currency::USD)?;
        let c = rule.compute(usd(7900))?;
        assert_eq!(c.payout, usd(790));
        assert_eq!(c.explanation, "10% of 79.00 USD = 7.90 USD");
        // 12.5% of 0.03 = 0.00375 -> 0.00 ; of 0.04 = 0.005 -> 0.01 (half away from zero)
        let rule = CommissionRule::parse("percent", "12.5", Currency::USD)?;
        assert_eq!(rule.compute(usd(3))?.payout, usd(0));
        assert_eq!(rule.compute(usd(4))?.payout, usd(1));
        Ok(())
    }

    #[test]
    fn flat_per_conversion() -> Result<(), Box<dyn std::error::Error>> {
        let rule = CommissionRule::parse("flat", "5.00", Currency::USD)?;
        assert_eq!(rule.compute(usd(7900))?.payout, usd(500));
        assert_eq!(rule.value_string(), "5.00");
        Ok(())
    }

    #[test]
    fn bad_rules_are_refused() {
        assert_eq!(
            CommissionRule::parse("tiered", "1", Currency::USD),
            Err(RuleError::Kind)
        );
        assert_eq!(
            CommissionRule::parse("percent", "101", Currency::USD),
            Err(RuleError::PercentRange)
        );
        assert_eq!(
            CommissionRule::parse("percent", "-1", Currency::USD),
            Err(RuleError::PercentRange)
        );
        assert!(CommissionRule::parse("flat", "5.001", Currency::USD).is_err());
        assert!(CommissionRule::parse("flat", "x", Currency::USD).is_err());
    }

    #[test]
    fn combined_and_capped() -> Result<(), Box<dyn std::error::Error>> {
        let rule = CommissionRule::parse("combined", "2.00+5", Currency::USD)?;
        let c = rule.compute(usd(7900))?;
        assert_eq!(c.payout, usd(595));
        assert_eq!(
            c.explanation,
            "flat 2.00 USD + 5% of 79.00 USD (3.95 USD) = 5.95 USD"
        );
        assert_eq!(rule.value_string(), "2.00+5");
        let capped = rule.compute_capped(usd(7900), Some(usd(500)))?;
        assert_eq!(capped.payout, usd(500));
        assert_eq!(capped.uncapped, Some(usd(595)));
        assert!(
            capped
                .explanation
                .ends_with("capped at the plan's maximum 5.00 USD")
        );
        assert_eq!(
            rule.compute_capped(usd(100), Some(usd(500)))?.uncapped,
            None
        );
        assert_eq!(
            CommissionRule::parse("combined", "2.00", Currency::USD),
            Err(RuleError::Combined)
        );
        assert!(CommissionRule::parse("combined", "2.00+101", Currency::USD).is_err());
        Ok(())
    }

    /// A reference written differently: the whole commission as one exact
    /// decimal, rounded once at the end (the flat part has the currency's
    /// decimals already, so rounding the sum equals rounding the
    /// percentage part).
    fn reference(flat: i64, pct_hundredths: u32, minor: i64, exponent: u32) -> i64 {
        let amount = Decimal::new(minor, exponent);
        let exact = Decimal::new(flat, exponent)
            + amount * Decimal::new(i64::from(pct_hundredths), 2) / Decimal::from(100);
        let scaled = exact * Decimal::from(10i64.pow(exponent));
        let rounded = scaled.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
        i64::try_from(rounded).unwrap_or(i64::MIN)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Percent and combined commissions against the reference, in 0, 2
        /// and 3 decimal currencies, up to the maximum amount.
        #[test]
        fn commissions_match_the_reference(
            minor in 0i64..=crate::money::MAX_MINOR,
            flat in 0i64..=crate::money::MAX_MINOR,
            pct in 0u32..=10_000,
            code in prop::sample::select(vec!["JPY", "USD", "KWD"]),
        ) {
            let cur = Currency::parse(code).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let p = Decimal::new(i64::from(pct), 2);
            let fail = |e: MoneyError| TestCaseError::fail(e.to_string());
            let percent = CommissionRule::Percent(p).compute(Money::new(minor, cur)).map_err(fail)?;
            prop_assert_eq!(percent.payout.minor, reference(0, pct, minor, cur.exponent()));
            let combined = CommissionRule::Combined(Money::new(flat, cur), p)
                .compute(Money::new(minor, cur))
                .map_err(fail)?;
            prop_assert_eq!(combined.payout.minor, reference(flat, pct, minor, cur.exponent()));
            let max = Money::new(flat, cur);
            let capped = CommissionRule::Percent(p)
                .compute_capped(Money::new(minor, cur), Some(max))
                .map_err(fail)?;
            prop_assert_eq!(capped.payout.minor, percent.payout.minor.min(flat));
        }

        #[test]
        fn percent_never_exceeds_the_amount(minor in 0i64..1_000_000_000_000, pct in 0u32..=10_000) {
            let rule = CommissionRule::Percent(Decimal::new(pct as i64, 2));
            let c = rule.compute(usd(minor)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(c.payout.minor <= minor);
            prop_assert!(c.payout.minor >= 0);
        }
    }
}
