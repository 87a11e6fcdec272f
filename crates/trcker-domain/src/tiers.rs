//! Tiered commission: the rate depends on what the affiliate has already
//! done in the current period.
//!
//! A tiered plan has its own rule (the first tier) and steps above it. Each
//! step starts `from` a volume: a number of conversions, or revenue in minor
//! units of the plan's currency. A conversion is priced by the highest step
//! whose `from` the affiliate's volume *before it* has reached: with a step
//! from 10 conversions, the 10 first conversions of the period earn the
//! plan's own rule and the 11th the step's. Crossing a step never re-prices
//! the conversions before it.
//!
//! The period is the calendar month (default) or the ISO week (from Monday)
//! that holds the conversion, in the tenant's time zone.

use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, Duration, Months, NaiveDate, TimeZone as _, Utc};
use serde::{Deserialize, Serialize};

use crate::commission::CommissionRule;
use crate::money::Currency;

/// What a tiered plan counts in the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierBasis {
    /// The affiliate's conversions that stand (pending or approved).
    Conversions,
    /// Their amounts, in the plan's currency.
    Revenue,
}

impl TierBasis {
    pub fn parse(s: &str) -> Result<Self, TierError> {
        match s {
            "conversions" => Ok(TierBasis::Conversions),
            "revenue" => Ok(TierBasis::Revenue),
            _ => Err(TierError::Basis),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TierBasis::Conversions => "conversions",
            TierBasis::Revenue => "revenue",
        }
    }
}

/// The span a tiered plan's volume is counted over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierPeriod {
    /// The calendar month.
    #[default]
    Month,
    /// The ISO week, Monday to Sunday.
    Week,
}

impl TierPeriod {
    pub fn parse(s: &str) -> Result<Self, TierError> {
        match s {
            "month" => Ok(TierPeriod::Month),
            "week" => Ok(TierPeriod::Week),
            _ => Err(TierError::Period),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TierPeriod::Month => "month",
            TierPeriod::Week => "week",
        }
    }

    /// The period that holds `t` in `zone`: its first instant and the first
    /// instant of the next.
    pub fn bounds(self, t: DateTime<Utc>, zone: TimeZone) -> (DateTime<Utc>, DateTime<Utc>) {
        let local = t.with_timezone(&zone.0).date_naive();
        let (first, next) = match self {
            TierPeriod::Month => {
                let first = local.with_day(1).unwrap_or(local);
                (first, first.checked_add_months(Months::new(1)))
            }
            TierPeriod::Week => {
                let back = u64::from(local.weekday().num_days_from_monday());
                let first = local.checked_sub_days(Days::new(back)).unwrap_or(local);
                (first, first.checked_add_days(Days::new(7)))
            }
        };
        let start = zone.midnight(first);
        let end = next.map_or(DateTime::<Utc>::MAX_UTC, |d| zone.midnight(d));
        (start, end)
    }
}

/// An IANA time zone (`Europe/Berlin`, `UTC`): the tenant's, for calendar
/// periods and days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(chrono_tz::Tz);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be an IANA time zone name such as UTC or Europe/Berlin")]
pub struct TimeZoneError;

impl TimeZone {
    pub const UTC: TimeZone = TimeZone(chrono_tz::Tz::UTC);

    pub fn parse(s: &str) -> Result<Self, TimeZoneError> {
        chrono_tz::Tz::from_str(s.trim())
            .map(TimeZone)
            .map_err(|_| TimeZoneError)
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// Every name [`TimeZone::parse`] takes, for the API document.
    pub fn names() -> impl Iterator<Item = &'static str> {
        chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())
    }

    /// `t` on this zone's clock.
    pub fn local(&self, t: DateTime<Utc>) -> chrono::NaiveDateTime {
        t.with_timezone(&self.0).naive_local()
    }

    /// The day of this zone's calendar that `t` falls on.
    pub fn day_of(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.0).date_naive()
    }

    /// The first instant of `day` in this zone (where a change of clock skips
    /// midnight, the first instant that exists that day).
    pub fn midnight(&self, day: NaiveDate) -> DateTime<Utc> {
        let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
        (0..=24)
            .find_map(|h| {
                self.0
                    .from_local_datetime(&(midnight + Duration::hours(h)))
                    .earliest()
            })
            .map_or_else(|| midnight.and_utc(), |t| t.with_timezone(&Utc))
    }
}

/// One step of a tiered plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    /// The volume before a conversion from which this step prices it: a count
    /// of conversions, or minor units of revenue.
    pub from: i64,
    pub rule: CommissionRule,
}

/// The steps above a plan's own rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tiers {
    pub basis: TierBasis,
    pub period: TierPeriod,
    /// Ascending by `from`, each above the one before, the first above 0.
    pub steps: Vec<Tier>,
}

/// The most steps a plan may have.
pub const MAX_STEPS: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TierError {
    #[error("basis must be \"conversions\" or \"revenue\"")]
    Basis,
    #[error("period must be \"month\" or \"week\"")]
    Period,
    #[error("a tiered plan needs from 1 to {MAX_STEPS} steps")]
    Steps,
    #[error("each step must start above the one before it (and above 0)")]
    Order,
    #[error("stored tiers do not parse: {0}")]
    Stored(String),
}

/// Where a conversion fell among a plan's tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierChoice<'a> {
    /// 1 for the plan's own rule, 2 for the first step…
    pub number: usize,
    /// The step's start (0 for the plan's own rule).
    pub from: i64,
    /// The step's rule (None: the plan's own).
    pub rule: Option<&'a CommissionRule>,
}

impl Tiers {
    /// Checks the steps' order and number.
    pub fn new(basis: TierBasis, period: TierPeriod, steps: Vec<Tier>) -> Result<Self, TierError> {
        if steps.is_empty() || steps.len() > MAX_STEPS {
            return Err(TierError::Steps);
        }
        let mut last = 0;
        for s in &steps {
            if s.from <= last {
                return Err(TierError::Order);
            }
            last = s.from;
        }
        Ok(Tiers {
            basis,
            period,
            steps,
        })
    }

    /// The tier of a conversion whose affiliate's volume in the period,
    /// before it, is `volume`.
    pub fn choose(&self, volume: i128) -> TierChoice<'_> {
        let reached = self
            .steps
            .iter()
            .take_while(|s| i128::from(s.from) <= volume)
            .count();
        match reached.checked_sub(1).and_then(|i| self.steps.get(i)) {
            Some(step) => TierChoice {
                number: reached + 1,
                from: step.from,
                rule: Some(&step.rule),
            },
            None => TierChoice {
                number: 1,
                from: 0,
                rule: None,
            },
        }
    }

    /// The stored form (JSON).
    pub fn to_stored(&self) -> String {
        let stored = StoredTiers {
            basis: self.basis,
            period: self.period,
            steps: self
                .steps
                .iter()
                .map(|s| StoredStep {
                    from: s.from,
                    kind: s.rule.kind().to_owned(),
                    value: s.rule.value_string(),
                })
                .collect(),
        };
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Reads the stored form, in the plan's currency.
    pub fn from_stored(s: &str, currency: Currency) -> Result<Self, TierError> {
        let stored: StoredTiers =
            serde_json::from_str(s).map_err(|e| TierError::Stored(e.to_string()))?;
        let steps = stored
            .steps
            .into_iter()
            .map(|s| {
                CommissionRule::parse(&s.kind, &s.value, currency)
                    .map(|rule| Tier { from: s.from, rule })
                    .map_err(|e| TierError::Stored(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Tiers::new(stored.basis, stored.period, steps)
    }
}

#[derive(Serialize, Deserialize)]
struct StoredTiers {
    basis: TierBasis,
    period: TierPeriod,
    steps: Vec<StoredStep>,
}

#[derive(Serialize, Deserialize)]
struct StoredStep {
    from: i64,
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Money;
    use proptest::prelude::*;
    use rust_decimal::{Decimal, RoundingStrategy};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn a_month_is_the_tenants_calendar_month() -> Result<(), TimeZoneError> {
        let berlin = TimeZone::parse("Europe/Berlin")?;
        // 23:30 UTC on 31 March is already 1 April in Berlin (summer time).
        let (start, end) = TierPeriod::Month.bounds(at("2026-03-31T23:30:00Z"), berlin);
        assert_eq!(start, at("2026-03-31T22:00:00Z"));
        assert_eq!(end, at("2026-04-30T22:00:00Z"));
        let (start, end) = TierPeriod::Month.bounds(at("2026-03-31T23:30:00Z"), TimeZone::UTC);
        assert_eq!(start, at("2026-03-01T00:00:00Z"));
        assert_eq!(end, at("2026-04-01T00:00:00Z"));
        let (start, end) = TierPeriod::Month.bounds(at("2026-12-15T00:00:00Z"), TimeZone::UTC);
        assert_eq!(
            (start, end),
            (at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
        Ok(())
    }

    #[test]
    fn a_week_starts_on_monday() -> Result<(), TimeZoneError> {
        let tokyo = TimeZone::parse("Asia/Tokyo")?;
        // Sunday 2026-12-06 20:00 UTC is Monday 7 December in Tokyo.
        let (start, end) = TierPeriod::Week.bounds(at("2026-12-06T20:00:00Z"), tokyo);
        assert_eq!(start, at("2026-12-06T15:00:00Z"));
        assert_eq!(end, at("2026-12-13T15:00:00Z"));
        Ok(())
    }

    #[test]
    fn a_skipped_midnight_starts_at_the_first_hour_that_exists() -> Result<(), TimeZoneError> {
        // Santiago's clocks went from 00:00 to 01:00 on 2022-09-11.
        let santiago = TimeZone::parse("America/Santiago")?;
        let day = NaiveDate::from_ymd_opt(2022, 9, 11).unwrap_or_default();
        assert_eq!(santiago.midnight(day), at("2022-09-11T04:00:00Z"));
        assert!(TimeZone::parse("Mars/Olympus").is_err());
        Ok(())
    }

    #[test]
    fn steps_must_rise() {
        let rule = CommissionRule::Percent(Decimal::TEN);
        let step = |from| Tier {
            from,
            rule: rule.clone(),
        };
        let new = |steps| Tiers::new(TierBasis::Conversions, TierPeriod::Month, steps);
        assert_eq!(new(vec![]), Err(TierError::Steps));
        assert_eq!(new(vec![step(0)]), Err(TierError::Order));
        assert_eq!(new(vec![step(5), step(5)]), Err(TierError::Order));
        assert!(new(vec![step(5), step(10)]).is_ok());
    }

    #[test]
    fn the_stored_form_reads_back() -> Result<(), TierError> {
        let tiers = Tiers::new(
            TierBasis::Revenue,
            TierPeriod::Week,
            vec![
                Tier {
                    from: 100_000,
                    rule: CommissionRule::Percent(Decimal::new(125, 1)),
                },
                Tier {
                    from: 500_000,
                    rule: CommissionRule::Combined(
                        Money::new(200, Currency::USD),
                        Decimal::new(15, 0),
                    ),
                },
            ],
        )?;
        assert_eq!(
            Tiers::from_stored(&tiers.to_stored(), Currency::USD)?,
            tiers
        );
        Ok(())
    }

    /// The reference: the tier is the count of starts at or below the
    /// volume, the commission is computed in `Decimal` over the whole
    /// percentage and rounded once.
    fn reference(
        amounts: &[i64],
        base: Decimal,
        steps: &[(i64, Decimal)],
        basis: TierBasis,
        exponent: u32,
    ) -> Vec<i64> {
        let mut volume = Decimal::ZERO;
        amounts
            .iter()
            .map(|&a| {
                let mut pct = base;
                for (from, p) in steps {
                    if Decimal::from(*from) <= volume {
                        pct = *p;
                    }
                }
                let amount = Decimal::new(a, exponent);
                let c = (amount * pct / Decimal::ONE_HUNDRED)
                    .round_dp_with_strategy(exponent, RoundingStrategy::MidpointAwayFromZero);
                volume += match basis {
                    TierBasis::Conversions => Decimal::ONE,
                    TierBasis::Revenue => Decimal::from(a),
                };
                (c * Decimal::from(10i64.pow(exponent)))
                    .try_into()
                    .unwrap_or(i64::MIN)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// A period's conversions in order, priced by the tier their
        /// volume before each reached, match the reference in JPY, USD and
        /// KWD up to 10^12 minor units.
        #[test]
        fn tiered_pricing_matches_the_reference(
            amounts in proptest::collection::vec(0i64..=1_000_000_000_000, 1..30),
            base in 0u32..=10_000,
            gaps in proptest::collection::vec((1i64..=2_000_000_000_000, 0u32..=10_000), 1..5),
            revenue in any::<bool>(),
            cur in 0usize..3,
        ) {
            let currency = ["JPY", "USD", "KWD"]
                .map(|c| Currency::parse(c).unwrap_or(Currency::USD))[cur];
            let basis = if revenue { TierBasis::Revenue } else { TierBasis::Conversions };
            let pct = |bp: u32| Decimal::new(i64::from(bp), 2);
            // Conversions counts stay small; revenue starts span the amounts.
            let mut from = 0;
            let starts: Vec<(i64, Decimal)> = gaps
                .iter()
                .map(|(g, p)| {
                    from += if revenue { *g } else { 1 + g % 7 };
                    (from, pct(*p))
                })
                .collect();
            let tiers = Tiers::new(
                basis,
                TierPeriod::Month,
                starts
                    .iter()
                    .map(|(f, p)| Tier { from: *f, rule: CommissionRule::Percent(*p) })
                    .collect(),
            ).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let own = CommissionRule::Percent(pct(base));
            let mut volume: i128 = 0;
            let mut got = Vec::new();
            for &a in &amounts {
                let choice = tiers.choose(volume);
                let rule = choice.rule.unwrap_or(&own);
                let c = rule
                    .compute(Money::new(a, currency))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                got.push(c.payout.minor);
                volume += match basis {
                    TierBasis::Conversions => 1,
                    TierBasis::Revenue => i128::from(a),
                };
            }
            prop_assert_eq!(
                got,
                reference(&amounts, pct(base), &starts, basis, currency.exponent())
            );
        }
    }
}
