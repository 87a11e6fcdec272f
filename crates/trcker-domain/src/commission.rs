//! Commission rules and their arithmetic.
//!
//! A rule is either a flat amount per conversion (CPA) or a percentage of the
//! conversion's amount (revshare). Percentages are exact decimals; the result is
//! rounded once, to the currency's minor unit, half away from zero (0.005 → 0.01),
//! and every computed commission carries a sentence that explains it.

use rust_decimal::{Decimal, RoundingStrategy};

use crate::money::{Currency, Money, MoneyError, format_minor, parse_decimal, to_minor};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommissionRule {
    /// A fixed amount per conversion, in the program's currency.
    Flat(Money),
    /// A percentage (0 to 100) of the conversion's amount.
    Percent(Decimal),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("type must be \"flat\" or \"percent\"")]
    Kind,
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
}

impl CommissionRule {
    /// Parses the API's `{"type": "...", "value": "..."}` in the program's currency.
    pub fn parse(kind: &str, value: &str, currency: Currency) -> Result<Self, RuleError> {
        match kind {
            "flat" => Money::parse(value, currency)
                .map(CommissionRule::Flat)
                .map_err(RuleError::Value),
            "percent" => {
                let d = parse_decimal(value).map_err(RuleError::Value)?;
                if d < Decimal::ZERO || d > Decimal::ONE_HUNDRED {
                    return Err(RuleError::PercentRange);
                }
                Ok(CommissionRule::Percent(d.normalize()))
            }
            _ => Err(RuleError::Kind),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            CommissionRule::Flat(_) => "flat",
            CommissionRule::Percent(_) => "percent",
        }
    }

    /// The value as the API shows it: "5.00" for flat, "10" for percent.
    pub fn value_string(&self) -> String {
        match self {
            CommissionRule::Flat(m) => m.amount_string(),
            CommissionRule::Percent(p) => p.normalize().to_string(),
        }
    }

    /// The commission on a conversion of `amount`.
    pub fn compute(&self, amount: Money) -> Result<Commission, MoneyError> {
        match self {
            CommissionRule::Flat(flat) => Ok(Commission {
                payout: *flat,
                explanation: format!("flat {} per conversion", flat),
            }),
            CommissionRule::Percent(pct) => {
                let exact = amount.to_decimal() * *pct / Decimal::ONE_HUNDRED;
                let rounded = exact.round_dp_with_strategy(
                    amount.currency.exponent(),
                    RoundingStrategy::MidpointAwayFromZero,
                );
                let payout = Money::new(to_minor(rounded, amount.currency)?, amount.currency);
                Ok(Commission {
                    payout,
                    explanation: format!(
                        "{}% of {} {} = {} {}",
                        pct.normalize(),
                        format_minor(amount.minor, amount.currency),
                        amount.currency,
                        payout.amount_string(),
                        amount.currency
                    ),
                })
            }
        }
    }
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

    proptest! {
        #[test]
        fn percent_never_exceeds_the_amount(minor in 0i64..1_000_000_000_000, pct in 0u32..=10_000) {
            let rule = CommissionRule::Percent(Decimal::new(pct as i64, 2));
            let c = rule.compute(usd(minor)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(c.payout.minor <= minor);
            prop_assert!(c.payout.minor >= 0);
        }
    }
}
