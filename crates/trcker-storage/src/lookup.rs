//! The lookups that cross tenants, each named for what it is for. Everything
//! else goes through [`crate::scoped`] and its siblings with an authenticated
//! [`TenantId`].
//!
//! Public URLs name a tenant by its slug and a tracking link by its code; a
//! postback's secret and an API key name their tenant by their hash; the
//! sweepers look over every tenant's backlog.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Select,
};

use crate::entities::global_key::Kind;
use crate::entities::*;
use crate::{TenantId, TenantOwned};

/// The tenant whose slug a public URL names (`/api/r/{brand}/…`, `/portal/{brand}`).
pub fn tenant_by_slug(slug: &str) -> Select<tenant::Entity> {
    tenant::Entity::find().filter(tenant::Column::Slug.eq(slug))
}

/// A tenant's own row.
pub fn tenant(id: &TenantId) -> Select<tenant::Entity> {
    tenant::Entity::find_by_id(id.clone())
}

/// A tenant by the id the operator gave (an unknown or malformed one finds
/// nothing).
pub fn tenant_by_id(id: &str) -> Select<tenant::Entity> {
    tenant::Entity::find().filter(tenant::Column::Id.eq(id))
}

/// Every tenant (for the sweepers).
pub fn all_tenants() -> Select<tenant::Entity> {
    tenant::Entity::find()
}

/// Every tenant's id (for the sweepers' passes tenant by tenant).
pub async fn all_tenant_ids(db: &impl ConnectionTrait) -> Result<Vec<TenantId>, DbErr> {
    use sea_orm::QuerySelect;
    tenant::Entity::find()
        .select_only()
        .column(tenant::Column::Id)
        .into_tuple()
        .all(db)
        .await
}

/// The tracking link of a short link (`/c/{code}`).
pub async fn link_by_code(
    db: &impl ConnectionTrait,
    code: &str,
) -> Result<Option<tracking_link::Model>, DbErr> {
    let direct = tracking_link::Entity::find().filter(tracking_link::Column::Code.eq(code));
    by_global_key(db, Kind::Link, code, direct).await
}

/// The integration whose postback secret has this hash.
pub async fn integration_by_secret_hash(
    db: &impl ConnectionTrait,
    hash: &str,
) -> Result<Option<integration::Model>, DbErr> {
    let direct = integration::Entity::find().filter(integration::Column::SecretHash.eq(hash));
    by_global_key(db, Kind::Integration, hash, direct).await
}

/// The integration a verified test-fire token names.
pub fn integration_by_test_fire_token(integration_id: &str) -> Select<integration::Entity> {
    integration::Entity::find_by_id(integration_id)
}

/// The unrevoked API key whose token has this hash.
pub async fn active_api_key_by_hash(
    db: &impl ConnectionTrait,
    hash: &str,
) -> Result<Option<api_key::Model>, DbErr> {
    let direct = api_key::Entity::find().filter(api_key::Column::KeyHash.eq(hash));
    let key = by_global_key(db, Kind::ApiKey, hash, direct).await?;
    Ok(key.filter(|k| k.revoked_at.is_none()))
}

/// Claims a value unique across tenants for one row (in the transaction
/// that writes the row): a unique violation if another row has it.
pub async fn claim_global_key(
    db: &impl ConnectionTrait,
    kind: Kind,
    key: &str,
    tenant: &TenantId,
    object_id: &str,
) -> Result<(), DbErr> {
    global_key::Entity::insert(global_key::ActiveModel {
        kind: Set(kind),
        key: Set(key.to_owned()),
        tenant_id: Set(tenant.clone()),
        object_id: Set(object_id.to_owned()),
    })
    .exec_without_returning(db)
    .await
    .map(drop)
}

/// Gives up a claimed value (a rotated-out secret's hash): it names
/// nothing from now on.
pub async fn release_global_key(
    db: &impl ConnectionTrait,
    kind: Kind,
    key: &str,
) -> Result<(), DbErr> {
    global_key::Entity::delete_by_id((kind, key.to_owned()))
        .exec(db)
        .await
        .map(drop)
}

/// The row a global key names: through `global_keys` and the row's own
/// key (tenant and id). A row written by a release before `global_keys`
/// (while the migration that made it ran) has no global key yet: it is
/// found by `direct` and given one.
async fn by_global_key<E>(
    db: &impl ConnectionTrait,
    kind: Kind,
    key: &str,
    direct: Select<E>,
) -> Result<Option<E::Model>, DbErr>
where
    E: TenantOwned,
    E::Model: GlobalRow,
{
    let named = global_key::Entity::find_by_id((kind, key.to_owned()))
        .one(db)
        .await?;
    if let Some(named) = named {
        return crate::scoped_by_id::<E>(&named.tenant_id, &named.object_id)
            .one(db)
            .await;
    }
    let found = direct.one(db).await?;
    if let Some(row) = &found {
        // Best effort: a concurrent lookup may have added it first.
        let (tenant, id) = row.tenant_and_id();
        if let Err(e) = claim_global_key(db, kind, key, tenant, id).await {
            tracing::debug!(error = %e, "global key added by another lookup");
        }
    }
    Ok(found)
}

/// A row that a global key can name.
pub trait GlobalRow {
    fn tenant_and_id(&self) -> (&TenantId, &str);
}

impl GlobalRow for api_key::Model {
    fn tenant_and_id(&self) -> (&TenantId, &str) {
        (&self.tenant_id, self.id.as_str())
    }
}

impl GlobalRow for integration::Model {
    fn tenant_and_id(&self) -> (&TenantId, &str) {
        (&self.tenant_id, self.id.as_str())
    }
}

impl GlobalRow for tracking_link::Model {
    fn tenant_and_id(&self) -> (&TenantId, &str) {
        (&self.tenant_id, self.id.as_str())
    }
}

/// Accepted postbacks still waiting for attribution that were accepted before
/// `cutoff`, oldest first (the inbox sweeper's backlog).
pub fn received_postbacks_before(cutoff: DateTime<Utc>) -> Select<postback::Entity> {
    postback::Entity::find()
        .filter(postback::Column::State.eq(postback::State::Received))
        .filter(postback::Column::CreatedAt.lt(cutoff))
        .order_by_asc(postback::Column::CreatedAt)
}

/// Pending notification deliveries whose next attempt is due at `t`, soonest first.
pub fn due_deliveries(t: DateTime<Utc>) -> Select<notification_delivery::Entity> {
    notification_delivery::Entity::find()
        .filter(notification_delivery::Column::Status.eq(notification_delivery::Status::Pending))
        .filter(notification_delivery::Column::NextAttemptAt.lte(t))
        .order_by_asc(notification_delivery::Column::NextAttemptAt)
}

/// Postbacks the pipeline is done with (processed, unattributed, or log
/// rows of refusals and repeats) that came before `cutoff`.
pub fn finished_postbacks_before(cutoff: DateTime<Utc>) -> Select<postback::Entity> {
    use postback::State;
    postback::Entity::find()
        .filter(postback::Column::State.is_in([State::Processed, State::Unattributed, State::Done]))
        .filter(postback::Column::CreatedAt.lt(cutoff))
}

/// Notification deliveries that are over (delivered or dead) whose last
/// attempt came before `cutoff`.
pub fn finished_deliveries_before(cutoff: DateTime<Utc>) -> Select<notification_delivery::Entity> {
    use notification_delivery::Status;
    notification_delivery::Entity::find()
        .filter(notification_delivery::Column::Status.is_in([Status::Delivered, Status::Dead]))
        .filter(notification_delivery::Column::NextAttemptAt.lt(cutoff))
}

/// Pending conversions whose hold period is over at `t`.
pub fn held_conversions_due(t: DateTime<Utc>) -> Select<conversion::Entity> {
    conversion::Entity::find()
        .filter(
            conversion::Column::Status
                .eq(conversion::Status(trcker_domain::ConversionStatus::Pending)),
        )
        .filter(conversion::Column::HoldUntil.lte(t))
}
