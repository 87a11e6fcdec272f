//! Conversions: what attribution made of accepted postbacks, read by the
//! tenant with filters and cursor pagination, and reviewed by the tenant:
//! approved, rejected or reversed, one by one or in bulk.
//!
//! A review moves a conversion along the same state machine as a postback
//! does (`trcker_domain::status`), guarded by its current status so that a
//! postback and a reviewer moving it at once move it once; the move, its
//! reversal entry in the ledger and its audit record are one transaction.
//! Then the commission step runs for the moved conversions as the
//! pipeline's own job would (booking a commission not booked yet, and
//! scheduling the affiliate's notification of the new status); if it
//! cannot run, it is queued as that job.

use chrono::{DateTime, Utc};
use trcker_domain::ConversionStatus;
use trcker_domain::ids::IdKind;
use trcker_storage::batch::among;
use trcker_storage::entities::conversion;
use trcker_storage::rollups::Tally;
use trcker_storage::sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, Order, QueryFilter, QueryOrder, QuerySelect, Select,
};
use trcker_storage::{Store, TenantId, TenantOwned, scoped, scoped_by_id};

use crate::areas::Area;
use crate::auth::{AccessError, Caller};
use crate::error::{Invalid, StoreError, from_store};
use crate::ledger::{Cause, move_conversion};
use crate::pipeline::Pipeline;
use crate::pipeline::commission::{CommissionItem, CommissionJob};

#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("conversion not found")]
    NotFound(String),
    /// The state machine does not allow this move.
    #[error("{0}")]
    MoveRefused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(ConversionError);

#[derive(Default)]
pub struct ConversionFilter {
    pub txn_id: Option<String>,
    pub status: Option<String>,
    pub affiliate_id: Option<String>,
    pub program_id: Option<String>,
    /// Created at or after this time.
    pub created_from: Option<DateTime<Utc>>,
    /// Created before this time.
    pub created_to: Option<DateTime<Utc>>,
    /// Only test conversions (true) or only real ones (false).
    pub test: Option<bool>,
    pub cursor: Option<String>,
    pub limit: Option<u64>,
}

/// What a review does to a conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Review {
    Approve,
    Reject,
    /// Refunded or charged back (a reversal of an approved or pending one).
    Reverse(ConversionStatus),
}

impl Review {
    /// `approve`, `reject`, `refund` or `chargeback`.
    pub fn parse(action: &str) -> Result<Self, Invalid> {
        Ok(match action {
            "approve" => Review::Approve,
            "reject" => Review::Reject,
            "refund" => Review::Reverse(ConversionStatus::Refunded),
            "chargeback" => Review::Reverse(ConversionStatus::Chargeback),
            _ => {
                return Err(Invalid::field(
                    "action",
                    "must be approve, reject, refund or chargeback",
                ));
            }
        })
    }

    fn target(self) -> ConversionStatus {
        match self {
            Review::Approve => ConversionStatus::Approved,
            Review::Reject => ConversionStatus::Rejected,
            Review::Reverse(s) => s,
        }
    }

    fn action(self) -> &'static str {
        match self {
            Review::Approve => "conversion.approve",
            Review::Reject => "conversion.reject",
            Review::Reverse(ConversionStatus::Chargeback) => "conversion.chargeback",
            Review::Reverse(_) => "conversion.refund",
        }
    }
}

/// Which conversions a bulk review takes: listed ids, or every match of a
/// filter (up to [`MAX_BULK`] per request).
pub enum Selection {
    Ids(Vec<String>),
    Filter(ConversionFilter),
}

/// The most conversions one bulk review takes; `more` says whether a filter
/// matched others (repeat the request for them).
pub const MAX_BULK: usize = 1000;

/// What a bulk review did.
pub struct BulkOutcome {
    pub moved: Vec<String>,
    /// Conversions left as they were, each with why.
    pub refused: Vec<(String, String)>,
    pub more: bool,
}

/// The longest review reason kept.
pub const MAX_REASON: usize = 500;

/// One page of a list, and the cursor of the next (`None` on the last).
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A page's size when the caller names none, and the largest it may ask for.
pub const DEFAULT_LIMIT: u64 = 50;
pub const MAX_LIMIT: u64 = 200;

/// The `limit` of a list request, checked.
pub(crate) fn page_limit(limit: Option<u64>) -> Result<u64, Invalid> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(Invalid::field(
            "limit",
            format!("must be from 1 to {MAX_LIMIT}"),
        ))
    }
}

/// The page of `q` after `cursor` (the last id of the page before, an id
/// of `kind`), newest first: the checked `limit` of rows, and one more to
/// tell whether a next page exists.
pub(crate) async fn newest_page<E, Er>(
    q: Select<E>,
    kind: IdKind,
    cursor: Option<String>,
    limit: Option<u64>,
    db: &impl ConnectionTrait,
    id: impl Fn(&E::Model) -> &str,
) -> Result<Page<E::Model>, Er>
where
    E: TenantOwned,
    Er: From<Invalid> + From<DbErr>,
{
    page_by_id(q, kind, cursor, limit, db, id, Order::Desc).await
}

/// The same page, oldest first.
pub(crate) async fn oldest_page<E, Er>(
    q: Select<E>,
    kind: IdKind,
    cursor: Option<String>,
    limit: Option<u64>,
    db: &impl ConnectionTrait,
    id: impl Fn(&E::Model) -> &str,
) -> Result<Page<E::Model>, Er>
where
    E: TenantOwned,
    Er: From<Invalid> + From<DbErr>,
{
    page_by_id(q, kind, cursor, limit, db, id, Order::Asc).await
}

async fn page_by_id<E, Er>(
    q: Select<E>,
    kind: IdKind,
    cursor: Option<String>,
    limit: Option<u64>,
    db: &impl ConnectionTrait,
    id: impl Fn(&E::Model) -> &str,
    order: Order,
) -> Result<Page<E::Model>, Er>
where
    E: TenantOwned,
    Er: From<Invalid> + From<DbErr>,
{
    let limit = page_limit(limit)?;
    let mut q = q;
    if let Some(cur) = cursor {
        if !kind.matches(&cur) {
            return Err(Invalid::field("cursor", "is not a cursor this API returned").into());
        }
        q = q.filter(match order {
            Order::Desc => E::id_column().lt(cur),
            _ => E::id_column().gt(cur),
        });
    }
    let items = q
        .order_by(E::id_column(), order)
        .limit(limit + 1)
        .all(db)
        .await?;
    Ok(page_of(items, limit, id))
}

/// Cuts a page fetched with one row more than `limit`: the cursor of the
/// next page is the last row's id.
pub(crate) fn page_of<T>(mut items: Vec<T>, limit: u64, id: impl Fn(&T) -> &str) -> Page<T> {
    let next_cursor = if items.len() as u64 > limit {
        items.truncate(limit as usize);
        items.last().map(|r| id(r).to_owned())
    } else {
        None
    };
    Page { items, next_cursor }
}

#[derive(Clone)]
pub struct ConversionService {
    area: Area,
    pipeline: Pipeline,
}

impl ConversionService {
    pub(crate) fn new(area: Area, pipeline: Pipeline) -> Self {
        ConversionService { area, pipeline }
    }

    fn store(&self) -> &Store {
        &self.area.store
    }

    pub async fn get(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<conversion::Model, ConversionError> {
        scoped_by_id::<conversion::Entity>(caller.tenant()?, id)
            .one(&self.store().conn)
            .await?
            .ok_or_else(|| ConversionError::NotFound(id.to_owned()))
    }

    /// Conversions, newest first, by cursor (the last id of the previous page).
    pub async fn list(
        &self,
        caller: &Caller,
        f: ConversionFilter,
    ) -> Result<Page<conversion::Model>, ConversionError> {
        use conversion::Column as C;
        let tenant = caller.tenant()?;
        let limit = page_limit(f.limit)?;
        let items = filtered(tenant, f)?
            .order_by_desc(C::Id)
            .limit(limit + 1)
            .all(&self.store().conn)
            .await?;
        Ok(page_of(items, limit, |c| c.id.as_str()))
    }

    /// Reviews one conversion: the conversion after the move, or why it
    /// cannot move.
    pub async fn review(
        &self,
        caller: &Caller,
        id: &str,
        review: Review,
        reason: Option<String>,
    ) -> Result<conversion::Model, ConversionError> {
        let tenant = caller.tenant_admin()?;
        let reason = parse_reason(reason)?;
        let conv = self.get(caller, id).await?;
        let outcome = self
            .review_all(caller, tenant, vec![conv], review, reason.as_deref())
            .await?;
        if let Some((_, why)) = outcome.refused.into_iter().next() {
            return Err(ConversionError::MoveRefused(why));
        }
        self.get(caller, id).await
    }

    /// Reviews many conversions: by ids (each one not found is refused with
    /// that reason) or by filter.
    pub async fn review_bulk(
        &self,
        caller: &Caller,
        selection: Selection,
        review: Review,
        reason: Option<String>,
    ) -> Result<BulkOutcome, ConversionError> {
        use conversion::Column as C;
        let tenant = caller.tenant_admin()?;
        let reason = parse_reason(reason)?;
        let db = &self.store().conn;
        let backend = db.get_database_backend();
        let (convs, mut missing, more) = match selection {
            Selection::Ids(ids) => {
                if ids.is_empty() || ids.len() > MAX_BULK {
                    return Err(Invalid::field(
                        "ids",
                        format!("must list from 1 to {MAX_BULK} conversion ids"),
                    )
                    .into());
                }
                let mut ids = ids;
                ids.sort();
                ids.dedup();
                let found = scoped::<conversion::Entity>(tenant)
                    .filter(among(backend, C::Id, ids.iter().cloned()))
                    .all(db)
                    .await?;
                let missing: Vec<(String, String)> = ids
                    .into_iter()
                    .filter(|id| !found.iter().any(|c| c.id.as_str() == id))
                    .map(|id| (id, "conversion not found".to_owned()))
                    .collect();
                (found, missing, false)
            }
            Selection::Filter(f) => {
                if f.cursor.is_some() || f.limit.is_some() {
                    return Err(Invalid::field(
                        "filter",
                        "takes no cursor or limit: a bulk review takes every match, up to 1000",
                    )
                    .into());
                }
                let mut found = filtered(tenant, f)?
                    .order_by_asc(C::Id)
                    .limit(MAX_BULK as u64 + 1)
                    .all(db)
                    .await?;
                let more = found.len() > MAX_BULK;
                found.truncate(MAX_BULK);
                (found, Vec::new(), more)
            }
        };
        let mut outcome = self
            .review_all(caller, tenant, convs, review, reason.as_deref())
            .await?;
        outcome.refused.append(&mut missing);
        outcome.more = more;
        Ok(outcome)
    }

    /// Moves each conversion the review's way where the state machine
    /// allows, in one transaction with their ledger reversals and audit
    /// records; then runs their commission step.
    async fn review_all(
        &self,
        caller: &Caller,
        tenant: &TenantId,
        convs: Vec<conversion::Model>,
        review: Review,
        reason: Option<&str>,
    ) -> Result<BulkOutcome, ConversionError> {
        let to = review.target();
        let cause = Cause::review(caller.actor(), reason);
        let t = Utc::now();
        let mut moved = Vec::new();
        let mut refused = Vec::new();
        let txn = self.store().write_txn().await?;
        let mut tally = Tally::default();
        for conv in convs {
            let from = conv.status.0;
            if let Some(why) = refusal(&conv, to) {
                refused.push((conv.id.to_string(), why));
                continue;
            }
            if !move_conversion(&txn, tenant, &conv, from, to, &cause, t, &mut tally).await? {
                refused.push((
                    conv.id.to_string(),
                    format!(
                        "conversion {} changed while it was reviewed; read it and try again",
                        conv.id
                    ),
                ));
                continue;
            }
            crate::audit::record_with(
                &txn,
                tenant,
                caller,
                review.action(),
                "conversion",
                conv.id.as_str(),
                Some(serde_json::json!({
                    "before": { "status": from.as_str() },
                    "after": { "status": to.as_str() },
                    "reason": reason,
                })),
            )
            .await?;
            moved.push(conv.id);
        }
        tally.apply(&txn).await?;
        txn.commit().await?;
        if !moved.is_empty() {
            let job = CommissionJob {
                tenant_id: tenant.clone(),
                items: moved
                    .iter()
                    .map(|id| CommissionItem {
                        conversion_id: id.clone(),
                        status: to,
                    })
                    .collect(),
            };
            if let Err(e) = self.pipeline.commission(&job).await {
                tracing::warn!(error = %e, "commission step after a review failed; queued");
                if let Err(e) = self.pipeline.queue.push(&job).await {
                    tracing::error!(error = %e, "commission step after a review could not be queued");
                }
            }
        }
        Ok(BulkOutcome {
            moved: moved.into_iter().map(|id| id.to_string()).collect(),
            refused,
            more: false,
        })
    }
}

/// Why a conversion cannot move to `to`, if it cannot.
fn refusal(conv: &conversion::Model, to: ConversionStatus) -> Option<String> {
    let from = conv.status.0;
    if from == to {
        return Some(format!("conversion {} is {} already", conv.id, from));
    }
    if !from.can_move_to(to) {
        return Some(format!(
            "conversion {} is {}; it cannot become {}",
            conv.id, from, to
        ));
    }
    None
}

/// A review's reason: trimmed, at most [`MAX_REASON`] characters, none if
/// blank.
fn parse_reason(reason: Option<String>) -> Result<Option<String>, Invalid> {
    match reason {
        None => Ok(None),
        Some(r) => crate::input::note(&r, MAX_REASON).map_err(|e| Invalid::field("reason", e)),
    }
}

/// The tenant's conversions matching a filter (its cursor included), every
/// bad field named.
fn filtered(tenant: &TenantId, f: ConversionFilter) -> Result<Select<conversion::Entity>, Invalid> {
    use conversion::Column as C;
    let status = match f.status.as_deref().map(ConversionStatus::parse) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return Err(Invalid::field("status", e.to_string())),
    };
    if let Some(cur) = &f.cursor
        && !IdKind::Conversion.matches(cur)
    {
        return Err(Invalid::field(
            "cursor",
            "is not a cursor this API returned",
        ));
    }
    if let (Some(from), Some(to)) = (f.created_from, f.created_to)
        && from >= to
    {
        return Err(Invalid::field("created_to", "must be after created_from"));
    }
    let mut q = scoped::<conversion::Entity>(tenant);
    if let Some(v) = f.txn_id {
        q = q.filter(C::TxnId.eq(v));
    }
    if let Some(v) = status {
        q = q.filter(C::Status.eq(conversion::Status(v)));
    }
    if let Some(v) = f.affiliate_id {
        q = q.filter(C::AffiliateId.eq(v));
    }
    if let Some(v) = f.program_id {
        q = q.filter(C::ProgramId.eq(v));
    }
    if let Some(v) = f.created_from {
        q = q.filter(C::CreatedAt.gte(v));
    }
    if let Some(v) = f.created_to {
        q = q.filter(C::CreatedAt.lt(v));
    }
    if let Some(v) = f.test {
        q = q.filter(C::IsTest.eq(v));
    }
    if let Some(v) = f.cursor {
        q = q.filter(C::Id.lt(v));
    }
    Ok(q)
}
