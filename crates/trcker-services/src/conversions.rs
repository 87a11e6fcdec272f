//! Conversions: what attribution made of accepted postbacks, read by the
//! tenant with filters and cursor pagination.

use trcker_domain::ConversionStatus;
use trcker_domain::ids::IdKind;
use trcker_storage::entities::conversion;
use trcker_storage::sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};
use trcker_storage::{Store, scoped, scoped_by_id};

use crate::areas::Area;
use crate::auth::{AccessError, Caller};
use crate::error::{Invalid, StoreError, from_store};

#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("conversion not found")]
    NotFound(String),
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
    pub cursor: Option<String>,
    pub limit: Option<u64>,
}

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
}

impl ConversionService {
    pub(crate) fn new(area: Area) -> Self {
        ConversionService { area }
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
        let status = match f.status.as_deref().map(ConversionStatus::parse) {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => return Err(Invalid::field("status", e.to_string()).into()),
        };
        if let Some(cur) = &f.cursor
            && !IdKind::Conversion.matches(cur)
        {
            return Err(Invalid::field("cursor", "is not a cursor this API returned").into());
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
        if let Some(v) = f.cursor {
            q = q.filter(C::Id.lt(v));
        }
        let items = q
            .order_by_desc(C::Id)
            .limit(limit + 1)
            .all(&self.store().conn)
            .await?;
        Ok(page_of(items, limit, |c| c.id.as_str()))
    }
}
