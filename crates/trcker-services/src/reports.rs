//! Reports: clicks, unique clicks, conversions, conversion rate, revenue,
//! commission and EPC over a range of the tenant's days, grouped by day,
//! program, affiliate, sub-ID or event, as JSON or CSV.
//!
//! They read the rollups (`trcker_storage::rollups`), which the click writer
//! and the pipeline keep in the transactions that write what they count, so
//! a report costs a few rows per day whatever the traffic. What they count:
//! - clicks: every click but test ones (bots included, as the portal counts
//!   them), and the unique ones among them;
//! - conversions, revenue (the sale amounts) and commission: conversions that
//!   stand (pending or approved); a rejected, refunded or charged-back one
//!   leaves all three when it moves; test conversions never count. Money is
//!   per currency, the offers' own;
//! - conversion rate: conversions per 100 clicks; EPC: commission per click,
//!   in minor-unit precision, rounded half away from zero. Both are absent
//!   where there were no clicks (and grouped by event, since clicks have no
//!   event).

use std::collections::{BTreeMap, HashMap};

use chrono::{Duration, NaiveDate};
use trcker_domain::Fields;
use trcker_domain::money::{Currency, format_minor};
use trcker_domain::tiers::TimeZone;
use trcker_storage::entities::{affiliate, program};
use trcker_storage::rollups::{self, Counts, EVENT_DIMENSION, Grouping, Query, SUB_DIMENSIONS};
use trcker_storage::sea_orm::{ColumnTrait, QueryFilter, QuerySelect};
use trcker_storage::{lookup, scoped, scoped_by_id};

use crate::areas::Area;
use crate::auth::{AccessError, Caller};
use crate::csv::{quote, text_cell};
use crate::error::{Invalid, StoreError, from_store};

/// The longest range one report covers, in days.
pub const MAX_DAYS: i64 = 366;
/// The range of a report that names none: the last 30 days, today included.
pub const DEFAULT_DAYS: i64 = 30;

/// What the tenant asks for; every field is optional.
#[derive(Debug, Default)]
pub struct ReportInput {
    /// `day` (the default), `program`, `affiliate`, `sub1`..`sub5`, `event`.
    pub group_by: Option<String>,
    /// First and last day (`YYYY-MM-DD`, the tenant's calendar), inclusive.
    pub from: Option<String>,
    pub to: Option<String>,
    pub program_id: Option<String>,
    pub affiliate_id: Option<String>,
}

/// A report: its range in the tenant's zone, a line per key, and the totals.
#[derive(Debug, Clone)]
pub struct Report {
    pub group_by: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub time_zone: String,
    /// In key order; grouped by day, every day of the range, also empty ones.
    pub lines: Vec<Line>,
    pub totals: Line,
}

/// One key's figures.
#[derive(Debug, Clone, Default)]
pub struct Line {
    /// The day, the program's or affiliate's id, the sub-ID or the event
    /// ('' for clicks and conversions without that sub-ID; '' on the totals).
    pub key: String,
    /// The program's or affiliate's name.
    pub label: Option<String>,
    pub clicks: i64,
    pub unique_clicks: i64,
    pub conversions: i64,
    /// Percent, two decimals ("2.50"); absent without clicks.
    pub conversion_rate: Option<String>,
    /// Per currency, in code order.
    pub amounts: Vec<Amounts>,
}

/// One key's money in one currency.
#[derive(Debug, Clone)]
pub struct Amounts {
    pub currency: String,
    pub conversions: i64,
    pub revenue: String,
    pub commission: String,
    /// Commission per click; absent without clicks.
    pub epc: Option<String>,
    pub revenue_minor: i64,
    pub commission_minor: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("program {0} not found")]
    ProgramNotFound(String),
    #[error("affiliate {0} not found")]
    AffiliateNotFound(String),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(ReportError);

/// A tenant's reports.
#[derive(Clone)]
pub struct ReportService {
    area: Area,
}

impl ReportService {
    pub(crate) fn new(area: Area) -> Self {
        ReportService { area }
    }

    /// The calling tenant's report (any key may read it).
    pub async fn report(&self, caller: &Caller, input: ReportInput) -> Result<Report, ReportError> {
        let tenant = caller.tenant()?;
        let db = &self.area.store.conn;
        let zone = lookup::tenant(tenant)
            .one(db)
            .await?
            .and_then(|t| TimeZone::parse(&t.time_zone).ok())
            .unwrap_or(TimeZone::UTC);
        let today = zone.day_of(self.area.settings.clock.now());
        let mut f = Fields::default();
        let group = f.take(
            "group_by",
            parse_grouping(input.group_by.as_deref().unwrap_or("day")),
        );
        let from = f.take_opt("from", input.from.as_deref().map(parse_day));
        let to = f.take_opt("to", input.to.as_deref().map(parse_day));
        let (group, from, to) = f.done((group, from, to)).map_err(Invalid)?;
        let to = to.unwrap_or(today);
        let from = from.unwrap_or(to - Duration::days(DEFAULT_DAYS - 1));
        if from > to {
            return Err(Invalid::field("to", "must not be before from").into());
        }
        if (to - from).num_days() >= MAX_DAYS {
            return Err(
                Invalid::field("to", format!("a report covers at most {MAX_DAYS} days")).into(),
            );
        }
        let (name, grouping) = group;
        // A filter names one of the tenant's own programs or affiliates:
        // another's (or a typo) is not found, rather than a report of zeros.
        if let Some(id) = &input.program_id
            && scoped_by_id::<program::Entity>(tenant, id)
                .one(db)
                .await?
                .is_none()
        {
            return Err(ReportError::ProgramNotFound(id.clone()));
        }
        if let Some(id) = &input.affiliate_id
            && scoped_by_id::<affiliate::Entity>(tenant, id)
                .one(db)
                .await?
                .is_none()
        {
            return Err(ReportError::AffiliateNotFound(id.clone()));
        }
        let q = Query {
            grouping,
            from,
            to,
            program_id: input.program_id,
            affiliate_id: input.affiliate_id,
        };
        let summed = rollups::sum(db, tenant, &q).await?;
        let mut by_key: BTreeMap<String, Vec<(String, Counts)>> = BTreeMap::new();
        if grouping == Grouping::Day {
            let mut day = from;
            while day <= to {
                by_key.insert(day.format("%Y-%m-%d").to_string(), Vec::new());
                day += Duration::days(1);
            }
        }
        for s in summed {
            by_key
                .entry(s.key)
                .or_default()
                .push((s.currency, s.counts));
        }
        let labels = self.labels(tenant, grouping, by_key.keys()).await?;
        let mut all: Vec<(String, Counts)> = Vec::new();
        let lines = by_key
            .into_iter()
            .map(|(key, counts)| {
                all.extend(counts.iter().cloned());
                let label = labels.get(&key).cloned();
                Line {
                    label,
                    ..line(key, &counts)
                }
            })
            .collect();
        Ok(Report {
            group_by: name.to_owned(),
            from,
            to,
            time_zone: zone.name().to_owned(),
            lines,
            totals: line(String::new(), &all),
        })
    }

    /// The names of the programs or affiliates a report's keys are.
    async fn labels<'a>(
        &self,
        tenant: &trcker_storage::TenantId,
        grouping: Grouping,
        keys: impl Iterator<Item = &'a String>,
    ) -> Result<HashMap<String, String>, StoreError> {
        let db = &self.area.store.conn;
        let ids: Vec<String> = keys.cloned().collect();
        let named: Vec<(String, String)> = match grouping {
            Grouping::Program => {
                scoped::<program::Entity>(tenant)
                    .select_only()
                    .column(program::Column::Id)
                    .column(program::Column::Name)
                    .filter(program::Column::Id.is_in(ids))
                    .into_tuple()
                    .all(db)
                    .await?
            }
            Grouping::Affiliate => {
                scoped::<affiliate::Entity>(tenant)
                    .select_only()
                    .column(affiliate::Column::Id)
                    .column(affiliate::Column::Name)
                    .filter(affiliate::Column::Id.is_in(ids))
                    .into_tuple()
                    .all(db)
                    .await?
            }
            _ => Vec::new(),
        };
        Ok(named.into_iter().collect())
    }
}

/// A key's line from its counters per currency ('' holds the clicks).
fn line(key: String, counts: &[(String, Counts)]) -> Line {
    let mut clicks = 0;
    let mut unique_clicks = 0;
    let mut per_currency: BTreeMap<&str, Counts> = BTreeMap::new();
    for (currency, c) in counts {
        clicks += c.clicks;
        unique_clicks += c.unique_clicks;
        if !currency.is_empty() {
            let sum = per_currency.entry(currency).or_default();
            *sum += *c;
        }
    }
    let conversions = per_currency.values().map(|c| c.conversions).sum();
    let amounts = per_currency
        .into_iter()
        .filter(|(_, c)| c.conversions != 0 || c.revenue_minor != 0 || c.commission_minor != 0)
        .map(|(code, c)| {
            let money = |minor: i64| match Currency::parse(code) {
                Ok(cur) => format_minor(minor, cur),
                Err(_) => minor.to_string(),
            };
            Amounts {
                currency: code.to_owned(),
                conversions: c.conversions,
                revenue: money(c.revenue_minor),
                commission: money(c.commission_minor),
                epc: (clicks > 0).then(|| money(divide_rounded(c.commission_minor, clicks))),
                revenue_minor: c.revenue_minor,
                commission_minor: c.commission_minor,
            }
        })
        .collect();
    Line {
        key,
        label: None,
        clicks,
        unique_clicks,
        conversions,
        conversion_rate: (clicks > 0).then(|| percent(conversions, clicks)),
        amounts,
    }
}

/// `n / d` rounded half away from zero (`d` > 0).
fn divide_rounded(n: i64, d: i64) -> i64 {
    let (n, d) = (i128::from(n), i128::from(d));
    let q = (2 * n.abs() + d) / (2 * d);
    (if n < 0 { -q } else { q }) as i64
}

/// `part / whole` as a percentage with two decimals.
fn percent(part: i64, whole: i64) -> String {
    let hundredths = divide_rounded(part.saturating_mul(10_000), whole);
    let sign = if hundredths < 0 { "-" } else { "" };
    let h = hundredths.abs();
    format!("{sign}{}.{:02}", h / 100, h % 100)
}

fn parse_grouping(s: &str) -> Result<(&'static str, Grouping), String> {
    let s = s.trim();
    Ok(match s {
        "day" => ("day", Grouping::Day),
        "program" => ("program", Grouping::Program),
        "affiliate" => ("affiliate", Grouping::Affiliate),
        "event" => (EVENT_DIMENSION, Grouping::Value(EVENT_DIMENSION)),
        _ => match SUB_DIMENSIONS.iter().find(|d| **d == s) {
            Some(d) => (*d, Grouping::Value(d)),
            None => {
                return Err(
                    "must be one of day, program, affiliate, sub1, sub2, sub3, sub4, sub5, event"
                        .to_owned(),
                );
            }
        },
    })
}

fn parse_day(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| "must be a day as YYYY-MM-DD".to_owned())
}

/// The report as CSV (RFC 4180): a header, then a row per key and currency
/// (a key without conversions has one row, its money columns empty; a key
/// with conversions in several currencies repeats its clicks on each), then
/// the totals as the last rows, keyed `total`.
pub fn report_csv(r: &Report) -> String {
    let mut out = String::from(
        "key,label,clicks,unique_clicks,conversions,conversion_rate,currency,revenue,commission,epc\r\n",
    );
    let mut write = |key: &str, l: &Line| {
        let common = [
            text_cell(key),
            text_cell(l.label.as_deref().unwrap_or("")),
            l.clicks.to_string(),
            l.unique_clicks.to_string(),
        ];
        let rate = l.conversion_rate.clone().unwrap_or_default();
        let rows: Vec<[String; 6]> = if l.amounts.is_empty() {
            vec![[
                l.conversions.to_string(),
                rate,
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]]
        } else {
            l.amounts
                .iter()
                .map(|a| {
                    [
                        a.conversions.to_string(),
                        rate.clone(),
                        a.currency.clone(),
                        a.revenue.clone(),
                        a.commission.clone(),
                        a.epc.clone().unwrap_or_default(),
                    ]
                })
                .collect()
        };
        for row in rows {
            let fields: Vec<String> = common.iter().chain(row.iter()).map(|f| quote(f)).collect();
            out.push_str(&fields.join(","));
            out.push_str("\r\n");
        }
    };
    for l in &r.lines {
        write(&l.key, l);
    }
    write("total", &r.totals);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_epc_round_half_away_from_zero() {
        assert_eq!(percent(1, 3), "33.33");
        assert_eq!(percent(2, 3), "66.67");
        assert_eq!(percent(5, 5), "100.00");
        assert_eq!(percent(0, 7), "0.00");
        assert_eq!(divide_rounded(5, 2), 3);
        assert_eq!(divide_rounded(-5, 2), -3);
        assert_eq!(divide_rounded(4, 3), 1);
    }

    #[test]
    fn a_line_sums_clicks_over_currencies_and_money_per_currency() {
        let c = |clicks, conversions, revenue_minor, commission_minor| Counts {
            clicks,
            unique_clicks: clicks,
            conversions,
            revenue_minor,
            commission_minor,
        };
        let l = line(
            "2026-03-01".into(),
            &[
                (String::new(), c(8, 0, 0, 0)),
                ("EUR".into(), c(0, 1, 1000, 150)),
                ("USD".into(), c(0, 1, 2000, 300)),
            ],
        );
        assert_eq!((l.clicks, l.conversions), (8, 2));
        assert_eq!(l.conversion_rate.as_deref(), Some("25.00"));
        assert_eq!(l.amounts.len(), 2);
        assert_eq!(l.amounts[0].epc.as_deref(), Some("0.19"));
        assert_eq!(l.amounts[1].revenue, "20.00");
    }

    #[test]
    fn bad_groupings_and_days_are_named() {
        assert!(parse_grouping("sub6").is_err());
        assert_eq!(parse_grouping("sub3").map(|g| g.0), Ok("sub3"));
        assert!(parse_day("2026-13-01").is_err());
        assert!(parse_day("yesterday").is_err());
    }
}
