//! `/exchange-rates`: the tenant's rates, by which a sale in another
//! currency than its offer's is converted.

use chrono::{DateTime, Utc};
use poem_openapi::param::{Header, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use trcker_services::exchange_rates::{NewRate, RateFilter, RateService};
use trcker_services::storage::entities::exchange_rate;

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::common::{Created, Text};
use crate::error::ApiError;

pub struct ExchangeRatesApi {
    pub rates: RateService,
    pub auth: Authenticator,
}

#[OpenApi(tag = "ApiTags::ExchangeRates")]
impl ExchangeRatesApi {
    /// Add an exchange rate. Sales in `from` on offers priced in `to` are
    /// converted with the latest rate whose `valid_from` is not after the
    /// sale (rounded once to `to`'s minor unit, half away from zero); the
    /// rate used is stored on the conversion. A sale in a currency without
    /// a rate stays unattributed with that reason.
    #[oai(
        path = "/exchange-rates",
        method = "post",
        operation_id = "create_exchange_rate"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        body: Json<NewRateIn>,
    ) -> Result<Created<RateOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let b = body.0;
        let rate = self
            .rates
            .create(
                &caller,
                NewRate {
                    from: b.from.0,
                    to: b.to.0,
                    rate: b.rate.0,
                    valid_from: b.valid_from,
                },
            )
            .await?;
        Ok(Created::Created(Json(rate.into())))
    }

    /// List exchange rates, newest first, with filters and cursor pagination.
    #[oai(
        path = "/exchange-rates",
        method = "get",
        operation_id = "list_exchange_rates"
    )]
    async fn list(
        &self,
        auth: BearerAuth,
        from: Query<Option<String>>,
        to: Query<Option<String>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200; default 50.
        limit: Query<Option<u64>>,
    ) -> Result<Json<RatePage>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let page = self
            .rates
            .list(
                &caller,
                RateFilter {
                    from: from.0,
                    to: to.0,
                    cursor: cursor.0,
                    limit: limit.0,
                },
            )
            .await?;
        Ok(Json(RatePage {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }))
    }
}

#[derive(Debug, Object)]
pub struct NewRateIn {
    /// ISO 4217 code of the sale's currency.
    pub from: Text,
    /// ISO 4217 code of the offer's currency.
    pub to: Text,
    /// One unit of `from` in `to`, a positive decimal string of at most 12 decimals ("1.085").
    pub rate: Text,
    /// From when it applies; default now.
    pub valid_from: Option<DateTime<Utc>>,
}

#[derive(Debug, Object)]
pub struct RateOut {
    pub id: String,
    pub from: String,
    pub to: String,
    pub rate: String,
    pub valid_from: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl From<exchange_rate::Model> for RateOut {
    fn from(r: exchange_rate::Model) -> Self {
        RateOut {
            id: r.id.into(),
            from: r.from_currency.to_string(),
            to: r.to_currency.to_string(),
            rate: r.rate,
            valid_from: r.valid_from,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct RatePage {
    pub items: Vec<RateOut>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}
