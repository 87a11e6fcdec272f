//! The delivery log: every notification delivery with its attempts, and
//! replays.
//!
//! A replay makes a new attempt of the same delivery (the same
//! `webhook-id`, body and URL) now; if it fails, the delivery goes on by
//! the retry schedule from where it was, and is dead again once that is
//! spent (a dead delivery replayed gets one attempt).

use chrono::{DateTime, SubsecRound, Utc};
use trcker_domain::fields::Fields;
use trcker_domain::ids::IdKind;
use trcker_domain::target::redact_url;
use trcker_storage::entities::notification_delivery::Status;
use trcker_storage::entities::{notification_attempt, notification_delivery};
use trcker_storage::sea_orm::sea_query::Expr;
use trcker_storage::sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};
use trcker_storage::{Store, TenantId, scoped, scoped_by_id, scoped_update};

use crate::areas::Area;
use crate::auth::{AccessError, Caller};
use crate::conversions::{Page, newest_page};
use crate::error::{Invalid, StoreError, from_store};
use crate::pipeline::Pipeline;
use crate::pipeline::notify::{NotifyItem, NotifyJob};

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("delivery not found")]
    NotFound(String),
    #[error("delivery {0} is pending already: its next attempt is scheduled")]
    Pending(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(DeliveryError);

/// What a delivery list may be narrowed to.
#[derive(Debug, Default, Clone)]
pub struct DeliveryFilter {
    pub endpoint_id: Option<String>,
    pub conversion_id: Option<String>,
    /// `pending`, `delivered` or `dead`.
    pub status: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// A delivery and its attempts, oldest first.
pub struct DeliveryDetail {
    pub delivery: notification_delivery::Model,
    pub attempts: Vec<notification_attempt::Model>,
}

/// The dead deliveries one bulk replay queues at most.
pub const REPLAY_AT_ONCE: u64 = 1_000;

/// What a bulk replay did.
pub struct Replayed {
    pub replayed: usize,
    /// More dead deliveries match: call again.
    pub more: bool,
}

#[derive(Clone)]
pub struct DeliveryService {
    area: Area,
    pipeline: Pipeline,
}

impl DeliveryService {
    pub(crate) fn new(area: Area, pipeline: Pipeline) -> Self {
        DeliveryService { area, pipeline }
    }

    fn store(&self) -> &Store {
        &self.area.store
    }

    /// The tenant's deliveries, newest first, by cursor, with filters. URLs
    /// show with secret-looking values redacted.
    pub async fn list(
        &self,
        caller: &Caller,
        filter: DeliveryFilter,
        cursor: Option<String>,
        limit: Option<u64>,
    ) -> Result<Page<notification_delivery::Model>, DeliveryError> {
        let tenant = caller.tenant()?;
        let q = filtered(tenant, &filter)?;
        let mut page: Page<notification_delivery::Model> = newest_page::<_, DeliveryError>(
            q,
            IdKind::Delivery,
            cursor,
            limit,
            &self.store().conn,
            |d| d.id.as_str(),
        )
        .await?;
        for d in &mut page.items {
            d.url = redact_url(&d.url);
        }
        Ok(page)
    }

    /// One delivery with every attempt.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<DeliveryDetail, DeliveryError> {
        use notification_attempt::Column as A;
        let tenant = caller.tenant()?;
        let mut delivery = find(self.store(), tenant, id).await?;
        delivery.url = redact_url(&delivery.url);
        let attempts = scoped::<notification_attempt::Entity>(tenant)
            .filter(A::DeliveryId.eq(delivery.id.as_str()))
            .order_by_asc(A::AttemptNo)
            .all(&self.store().conn)
            .await?;
        Ok(DeliveryDetail { delivery, attempts })
    }

    /// Replays one delivery that is delivered or dead: a new attempt now.
    pub async fn replay(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<notification_delivery::Model, DeliveryError> {
        let tenant = caller.tenant_admin()?;
        let d = find(self.store(), tenant, id).await?;
        if d.status == Status::Pending {
            return Err(DeliveryError::Pending(d.id.to_string()));
        }
        self.requeue(caller, tenant, vec![d]).await?;
        let mut after = find(self.store(), tenant, id).await?;
        after.url = redact_url(&after.url);
        Ok(after)
    }

    /// Replays every dead delivery since a time (of one endpoint, if
    /// given), oldest first, [`REPLAY_AT_ONCE`] at a time.
    pub async fn replay_dead(
        &self,
        caller: &Caller,
        endpoint_id: Option<String>,
        since: DateTime<Utc>,
    ) -> Result<Replayed, DeliveryError> {
        use notification_delivery::Column as D;
        let tenant = caller.tenant_admin()?;
        let filter = DeliveryFilter {
            endpoint_id,
            status: Some("dead".into()),
            since: Some(since),
            ..DeliveryFilter::default()
        };
        let mut dead = filtered(tenant, &filter)?
            .order_by_asc(D::Id)
            .limit(REPLAY_AT_ONCE + 1)
            .all(&self.store().conn)
            .await?;
        let more = dead.len() as u64 > REPLAY_AT_ONCE;
        dead.truncate(REPLAY_AT_ONCE as usize);
        let replayed = dead.len();
        if replayed > 0 {
            self.requeue(caller, tenant, dead).await?;
        }
        Ok(Replayed { replayed, more })
    }

    /// Makes deliveries pending again, due now, and queues their attempts.
    async fn requeue(
        &self,
        caller: &Caller,
        tenant: &TenantId,
        deliveries: Vec<notification_delivery::Model>,
    ) -> Result<(), DeliveryError> {
        use notification_delivery::Column as D;
        let backend = self.store().conn.get_database_backend();
        let t = Utc::now().trunc_subsecs(6);
        let ids: Vec<_> = deliveries.iter().map(|d| d.id.clone()).collect();
        let txn = self.store().write_txn().await?;
        for chunk in ids.chunks(500) {
            scoped_update::<notification_delivery::Entity>(tenant)
                .col_expr(D::Status, Expr::value(Status::Pending))
                .col_expr(D::NextAttemptAt, Expr::value(t))
                .col_expr(D::UpdatedAt, Expr::value(t))
                .filter(trcker_storage::batch::among(
                    backend,
                    D::Id,
                    chunk.iter().cloned(),
                ))
                .filter(D::Status.ne(Status::Pending))
                .exec(&txn)
                .await?;
        }
        crate::audit::record_with(
            &txn,
            tenant,
            caller,
            "delivery.replay",
            "delivery",
            ids.first().map(|i| i.as_str()).unwrap_or_default(),
            Some(serde_json::json!({"deliveries": ids.len()})),
        )
        .await?;
        txn.commit().await?;
        for chunk in deliveries.chunks(100) {
            self.pipeline
                .queue
                .push(&NotifyJob {
                    tenant_id: tenant.clone(),
                    items: chunk
                        .iter()
                        .map(|d| NotifyItem {
                            delivery_id: d.id.clone(),
                            attempt: d.attempts,
                        })
                        .collect(),
                    due: Some(t.timestamp_millis()),
                })
                .await
                .map_err(|e| StoreError::Internal(format!("queue: {e}")))?;
        }
        Ok(())
    }
}

fn filtered(
    tenant: &TenantId,
    f: &DeliveryFilter,
) -> Result<trcker_storage::sea_orm::Select<notification_delivery::Entity>, Invalid> {
    use notification_delivery::Column as D;
    let mut fields = Fields::default();
    let status = fields.take_opt(
        "status",
        f.status.as_deref().map(|s| {
            s.parse::<Status>()
                .map_err(|_| "must be pending, delivered or dead")
        }),
    );
    let endpoint = fields.take_opt(
        "endpoint_id",
        f.endpoint_id.as_deref().map(|i| IdKind::Endpoint.parse(i)),
    );
    let conversion = fields.take_opt(
        "conversion_id",
        f.conversion_id
            .as_deref()
            .map(|i| IdKind::Conversion.parse(i)),
    );
    if let (Some(since), Some(until)) = (f.since, f.until)
        && since >= until
    {
        fields.error("until", "must be after since");
    }
    let (status, endpoint, conversion) = fields
        .done((status, endpoint, conversion))
        .map_err(Invalid)?;
    let mut q = scoped::<notification_delivery::Entity>(tenant);
    if let Some(s) = status {
        q = q.filter(D::Status.eq(s));
    }
    if let Some(e) = endpoint {
        q = q.filter(D::EndpointId.eq(e));
    }
    if let Some(c) = conversion {
        q = q.filter(D::ConversionId.eq(c));
    }
    if let Some(s) = f.since {
        q = q.filter(D::CreatedAt.gte(s));
    }
    if let Some(u) = f.until {
        q = q.filter(D::CreatedAt.lt(u));
    }
    Ok(q)
}

async fn find(
    store: &Store,
    tenant: &TenantId,
    id: &str,
) -> Result<notification_delivery::Model, DeliveryError> {
    scoped_by_id::<notification_delivery::Entity>(tenant, id)
        .one(&store.conn)
        .await?
        .ok_or_else(|| DeliveryError::NotFound(id.to_owned()))
}
