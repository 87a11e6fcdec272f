//! `/reports`: clicks, conversions, revenue, commission, conversion rate and
//! EPC over a range of the tenant's days, grouped by day, program, affiliate,
//! sub-ID or event; as JSON, or as CSV for a spreadsheet.

use chrono::NaiveDate;
use poem_openapi::param::Query;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{Object, OpenApi};
use trcker_services::reports::{Amounts, Line, Report, ReportInput, ReportService, report_csv};

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::common::CsvExport;
use crate::error::ApiError;

pub struct ReportsApi {
    pub reports: ReportService,
    pub auth: Authenticator,
}

/// A report's query parameters, shared by its JSON and CSV forms.
struct Params {
    group_by: Query<Option<String>>,
    from: Query<Option<String>>,
    to: Query<Option<String>>,
    program_id: Query<Option<String>>,
    affiliate_id: Query<Option<String>>,
}

impl From<Params> for ReportInput {
    fn from(p: Params) -> Self {
        ReportInput {
            group_by: p.group_by.0,
            from: p.from.0,
            to: p.to.0,
            program_id: p.program_id.0,
            affiliate_id: p.affiliate_id.0,
        }
    }
}

#[OpenApi(tag = "ApiTags::Reports")]
impl ReportsApi {
    /// A report over a range of days in the tenant's time zone (default: the
    /// last 30 days; at most 366). Clicks exclude test clicks; conversions,
    /// revenue and commission count conversions that stand (pending or
    /// approved), so a refund takes its sale out of the day it happened.
    /// Money is per currency. Conversion rate is conversions per 100 clicks,
    /// EPC commission per click; both are absent without clicks.
    #[oai(path = "/reports", method = "get", operation_id = "get_report")]
    async fn report(
        &self,
        auth: BearerAuth,
        /// `day` (default), `program`, `affiliate`, `sub1`..`sub5` or `event`.
        group_by: Query<Option<String>>,
        /// First day, `YYYY-MM-DD` (default: 29 days before `to`).
        from: Query<Option<String>>,
        /// Last day, `YYYY-MM-DD`, inclusive (default: today).
        to: Query<Option<String>>,
        /// Only this program's clicks and conversions.
        program_id: Query<Option<String>>,
        /// Only this affiliate's clicks and conversions.
        affiliate_id: Query<Option<String>>,
    ) -> Result<Json<ReportOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let params = Params {
            group_by,
            from,
            to,
            program_id,
            affiliate_id,
        };
        let report = self.reports.report(&caller, params.into()).await?;
        Ok(Json(report.into()))
    }

    /// The same report as CSV (`text/csv`, RFC 4180): a row per key and
    /// currency, then the totals (key `total`).
    #[oai(path = "/reports/csv", method = "get", operation_id = "export_report")]
    async fn export(
        &self,
        auth: BearerAuth,
        /// `day` (default), `program`, `affiliate`, `sub1`..`sub5` or `event`.
        group_by: Query<Option<String>>,
        /// First day, `YYYY-MM-DD` (default: 29 days before `to`).
        from: Query<Option<String>>,
        /// Last day, `YYYY-MM-DD`, inclusive (default: today).
        to: Query<Option<String>>,
        /// Only this program's clicks and conversions.
        program_id: Query<Option<String>>,
        /// Only this affiliate's clicks and conversions.
        affiliate_id: Query<Option<String>>,
    ) -> Result<CsvExport, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let params = Params {
            group_by,
            from,
            to,
            program_id,
            affiliate_id,
        };
        let report = self.reports.report(&caller, params.into()).await?;
        Ok(CsvExport::Csv(PlainText(report_csv(&report))))
    }
}

#[derive(Debug, Object)]
pub struct ReportOut {
    /// What the lines are keyed by.
    pub group_by: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// The tenant's time zone, whose days these are.
    pub time_zone: String,
    /// In key order; grouped by day, every day of the range.
    pub lines: Vec<LineOut>,
    pub totals: LineOut,
}

#[derive(Debug, Object)]
pub struct LineOut {
    /// The day, program id, affiliate id, sub-ID or event ('' for traffic
    /// without that sub-ID, and on the totals).
    pub key: String,
    /// The program's or affiliate's name.
    pub label: Option<String>,
    pub clicks: i64,
    pub unique_clicks: i64,
    pub conversions: i64,
    /// Conversions per 100 clicks, two decimals ("2.50").
    pub conversion_rate: Option<String>,
    /// Revenue, commission and EPC per currency.
    pub amounts: Vec<AmountsOut>,
}

#[derive(Debug, Object)]
pub struct AmountsOut {
    pub currency: String,
    pub conversions: i64,
    /// Decimal string ("1234.50").
    pub revenue: String,
    pub commission: String,
    /// Commission per click.
    pub epc: Option<String>,
}

impl From<Report> for ReportOut {
    fn from(r: Report) -> Self {
        ReportOut {
            group_by: r.group_by,
            from: r.from,
            to: r.to,
            time_zone: r.time_zone,
            lines: r.lines.into_iter().map(Into::into).collect(),
            totals: r.totals.into(),
        }
    }
}

impl From<Line> for LineOut {
    fn from(l: Line) -> Self {
        LineOut {
            key: l.key,
            label: l.label,
            clicks: l.clicks,
            unique_clicks: l.unique_clicks,
            conversions: l.conversions,
            conversion_rate: l.conversion_rate,
            amounts: l.amounts.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<Amounts> for AmountsOut {
    fn from(a: Amounts) -> Self {
        AmountsOut {
            currency: a.currency,
            conversions: a.conversions,
            revenue: a.revenue,
            commission: a.commission,
            epc: a.epc,
        }
    }
}
