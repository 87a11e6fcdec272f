use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, IntoActiveModel};
use trcker_storage::sea_orm;

use crate::ServiceResult;

pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// Inserts a fully built row.
pub async fn insert<M, A, C>(db: &C, model: M) -> Result<M, sea_orm::DbErr>
where
    M: IntoActiveModel<A> + Clone,
    A: ActiveModelTrait + sea_orm::ActiveModelBehavior + Send,
    <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    C: ConnectionTrait,
{
    let am = model.clone().into_active_model().reset_all();
    <A::Entity as EntityTrait>::insert(am)
        .exec_without_returning(db)
        .await?;
    Ok(model)
}

/// Parses a JSON column written by us.
pub fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> ServiceResult<T> {
    serde_json::from_str(s).map_err(|e| crate::ServiceError::Internal(format!("stored JSON: {e}")))
}
