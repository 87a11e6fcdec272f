//! The lookups that cross tenants, each named for what it is for. Everything
//! else goes through [`crate::scoped`] and its siblings with an authenticated
//! [`TenantId`].
//!
//! Public URLs name a tenant by its slug and a tracking link by its code; a
//! postback's secret and an API key name their tenant by their hash; the
//! sweepers look over every tenant's backlog.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Select};

use crate::TenantId;
use crate::entities::*;

/// The tenant whose slug a public URL names (`/api/r/{brand}/…`, `/portal/{brand}`).
pub fn tenant_by_slug(slug: &str) -> Select<tenant::Entity> {
    tenant::Entity::find().filter(tenant::Column::Slug.eq(slug))
}

/// A tenant's own row.
pub fn tenant(id: &TenantId) -> Select<tenant::Entity> {
    tenant::Entity::find_by_id(id.clone())
}

/// Every tenant (for the sweepers).
pub fn all_tenants() -> Select<tenant::Entity> {
    tenant::Entity::find()
}

/// The tracking link of a short link (`/c/{code}`).
pub fn link_by_code(code: &str) -> Select<tracking_link::Entity> {
    tracking_link::Entity::find().filter(tracking_link::Column::Code.eq(code))
}

/// The integration whose postback secret has this hash.
pub fn integration_by_secret_hash(hash: &str) -> Select<integration::Entity> {
    integration::Entity::find().filter(integration::Column::SecretHash.eq(hash))
}

/// The integration a verified test-fire token names.
pub fn integration_by_test_fire_token(integration_id: &str) -> Select<integration::Entity> {
    integration::Entity::find_by_id(integration_id)
}

/// The unrevoked API key whose token has this hash.
pub fn active_api_key_by_hash(hash: &str) -> Select<api_key::Entity> {
    api_key::Entity::find()
        .filter(api_key::Column::KeyHash.eq(hash))
        .filter(api_key::Column::RevokedAt.is_null())
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
