//! The rows behind the admin API's `Idempotency-Key`: the first request
//! with a key claims it, runs, and stores its answer; a retry with the
//! same key and request gets that answer; the same key with another
//! request is told so. The claim is the row's insert, so of concurrent
//! requests with one key exactly one runs.

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set};

use crate::entities::idempotency_key::{self, Column as C, Entity, Model};
use crate::is_unique_violation;

/// What a request's key is to it.
#[derive(Debug)]
pub enum Claim {
    /// The key is this request's: run it, then [`answer`] (or [`release`]).
    New,
    /// A request like this one ran already: its answer.
    Answered(Model),
    /// A request like this one is running now.
    Running,
    /// The key was used for another request.
    Mismatch,
}

/// Claims `key` of `owner` for a request with this fingerprint at `now`.
/// Rows older than `keep` are forgotten; a claim whose request never
/// answered within `abandoned` (its process died) is taken over.
pub async fn claim(
    db: &impl ConnectionTrait,
    owner: &str,
    key: &str,
    fingerprint: &str,
    now: DateTime<Utc>,
    keep: Duration,
    abandoned: Duration,
) -> Result<Claim, DbErr> {
    for _ in 0..2 {
        let row = idempotency_key::ActiveModel {
            owner: Set(owner.to_owned()),
            key: Set(key.to_owned()),
            fingerprint: Set(fingerprint.to_owned()),
            created_at: Set(now),
            status: Set(None),
            content_type: Set(None),
            body: Set(None),
        };
        match Entity::insert(row).exec_without_returning(db).await {
            Ok(_) => return Ok(Claim::New),
            Err(e) if is_unique_violation(&e) => {}
            Err(e) => return Err(e),
        }
        let Some(existing) = Entity::find_by_id((owner.to_owned(), key.to_owned()))
            .one(db)
            .await?
        else {
            continue; // forgotten meanwhile: claim it again
        };
        let expired = existing.created_at < now - keep;
        let stale = existing.status.is_none() && existing.created_at < now - abandoned;
        if expired || stale {
            // Only the request that sees this very row may replace it.
            let taken = Entity::update_many()
                .col_expr(C::Fingerprint, Expr::value(fingerprint.to_owned()))
                .col_expr(C::CreatedAt, Expr::value(now))
                .col_expr(C::Status, Expr::value(None::<i32>))
                .col_expr(C::ContentType, Expr::value(None::<String>))
                .col_expr(C::Body, Expr::value(None::<String>))
                .filter(C::Owner.eq(owner))
                .filter(C::Key.eq(key))
                .filter(C::CreatedAt.eq(existing.created_at))
                .exec(db)
                .await?;
            if taken.rows_affected == 1 {
                return Ok(Claim::New);
            }
            return Ok(Claim::Running);
        }
        if existing.fingerprint != fingerprint {
            return Ok(Claim::Mismatch);
        }
        return Ok(if existing.status.is_some() {
            Claim::Answered(existing)
        } else {
            Claim::Running
        });
    }
    Ok(Claim::Running)
}

/// Stores the answer of a claimed key's request.
pub async fn answer(
    db: &impl ConnectionTrait,
    owner: &str,
    key: &str,
    status: u16,
    content_type: Option<String>,
    body: String,
) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(C::Status, Expr::value(Some(i32::from(status))))
        .col_expr(C::ContentType, Expr::value(content_type))
        .col_expr(C::Body, Expr::value(Some(body)))
        .filter(C::Owner.eq(owner))
        .filter(C::Key.eq(key))
        .exec(db)
        .await
        .map(drop)
}

/// Gives a claimed key up (its request failed in a way a retry may fix).
pub async fn release(db: &impl ConnectionTrait, owner: &str, key: &str) -> Result<(), DbErr> {
    Entity::delete_many()
        .filter(C::Owner.eq(owner))
        .filter(C::Key.eq(key))
        .exec(db)
        .await
        .map(drop)
}

/// Forgets the keys claimed before `before`; how many.
pub async fn purge(db: &impl ConnectionTrait, before: DateTime<Utc>) -> Result<u64, DbErr> {
    Ok(Entity::delete_many()
        .filter(C::CreatedAt.lt(before))
        .exec(db)
        .await?
        .rows_affected)
}
