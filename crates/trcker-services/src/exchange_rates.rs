//! The tenant's exchange rates: one unit of a currency in another, from a
//! time on. A sale in another currency than its offer's is converted with
//! the latest rate valid when it happened (`pipeline::attribute`); the rate
//! used is stored on the conversion. A rate is never edited: a new one
//! with a later `valid_from` takes over from then.

use chrono::Utc;
use trcker_domain::Fields;
use trcker_domain::ids::IdKind;
use trcker_domain::money::{Currency, parse_rate};
use trcker_storage::batch::insert;
use trcker_storage::entities::exchange_rate;
use trcker_storage::ids::ExchangeRateId;
use trcker_storage::sea_orm::{ColumnTrait, QueryFilter};
use trcker_storage::{Store, scoped};

use crate::areas::Area;
use crate::auth::{AccessError, Caller};
use crate::conversions::{Page, newest_page};
use crate::error::{Invalid, StoreError, from_store};

#[derive(Debug, thiserror::Error)]
pub enum RateError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(RateError);

#[derive(Debug, Default)]
pub struct NewRate {
    pub from: String,
    pub to: String,
    /// One unit of `from` in `to`: "1.085".
    pub rate: String,
    /// Default: now.
    pub valid_from: Option<chrono::DateTime<Utc>>,
}

#[derive(Debug, Default)]
pub struct RateFilter {
    pub from: Option<String>,
    pub to: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u64>,
}

#[derive(Clone)]
pub struct RateService {
    area: Area,
}

impl RateService {
    pub(crate) fn new(area: Area) -> Self {
        RateService { area }
    }

    fn store(&self) -> &Store {
        &self.area.store
    }

    /// Adds a rate, every bad field named.
    pub async fn create(
        &self,
        caller: &Caller,
        input: NewRate,
    ) -> Result<exchange_rate::Model, RateError> {
        let tenant = caller.tenant_admin()?;
        let mut f = Fields::default();
        let from = f.take("from", Currency::parse(&input.from));
        let to = f.take("to", Currency::parse(&input.to));
        let rate = f.take("rate", parse_rate(&input.rate));
        if let (Some(a), Some(b)) = (from, to)
            && a == b
        {
            f.error("to", "must differ from `from`");
        }
        let (from, to, rate) = f.done((from, to, rate)).map_err(Invalid)?;
        let t = Utc::now();
        let row = exchange_rate::Model {
            id: ExchangeRateId::generate(),
            tenant_id: tenant.clone(),
            created_at: t,
            from_currency: from.into(),
            to_currency: to.into(),
            rate: rate.to_string(),
            valid_from: input.valid_from.unwrap_or(t),
        };
        let txn = self.store().write_txn().await?;
        insert(&txn, row.clone()).await?;
        crate::audit::record_with(
            &txn,
            tenant,
            caller,
            "exchange_rate.create",
            "exchange_rate",
            row.id.as_str(),
            Some(serde_json::json!({
                "from": from.code(),
                "to": to.code(),
                "rate": row.rate,
                "valid_from": row.valid_from,
            })),
        )
        .await?;
        txn.commit().await?;
        Ok(row)
    }

    /// Rates, newest first, by cursor.
    pub async fn list(
        &self,
        caller: &Caller,
        f: RateFilter,
    ) -> Result<Page<exchange_rate::Model>, RateError> {
        use exchange_rate::Column as C;
        let tenant = caller.tenant()?;
        let mut fields = Fields::default();
        let from = fields.take_opt("from", f.from.as_deref().map(Currency::parse));
        let to = fields.take_opt("to", f.to.as_deref().map(Currency::parse));
        let (from, to) = fields.done((from, to)).map_err(Invalid)?;
        let mut q = scoped::<exchange_rate::Entity>(tenant);
        if let Some(c) = from {
            q = q.filter(C::FromCurrency.eq(c.code()));
        }
        if let Some(c) = to {
            q = q.filter(C::ToCurrency.eq(c.code()));
        }
        newest_page(
            q,
            IdKind::ExchangeRate,
            f.cursor,
            f.limit,
            &self.store().conn,
            |r| r.id.as_str(),
        )
        .await
    }
}
