//! Tenants and their API keys: the operator creates a tenant (with its first
//! admin key, shown once), and every admin API call is authenticated here.

use std::sync::Arc;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use trcker_domain::fields::{Fields, Name, TargetUrl};
use trcker_domain::ids::IdKind;
use trcker_domain::secret::{hash_secret, new_api_key, secrets_equal};
use trcker_domain::slug::Slug;
use trcker_domain::tiers::TimeZone;
use trcker_storage::entities::{api_key, tenant};
use trcker_storage::ids::ApiKeyId;
use trcker_storage::sea_orm::sea_query::Expr;
use trcker_storage::sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use trcker_storage::{
    TenantId, batch::insert, is_unique_violation, lookup, rollups, scoped, scoped_by_id,
    scoped_update_by_id,
};

use crate::access_tokens::AccessTokens;
use crate::areas::Area;
use crate::auth::{AccessError, Caller, Credential};
use crate::conversions::{Page, newest_page};
use crate::error::{Invalid, StoreError, from_store};

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("a tenant with slug '{0}' exists already")]
    SlugTaken(String),
    #[error("no tenant '{0}'")]
    NotFound(String),
    #[error("no API key '{0}' for this tenant")]
    KeyNotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(TenantError);

/// Why a bearer token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown or revoked token")]
    UnknownToken,
    #[error("this tenant is suspended; its API keys are refused until the operator resumes it")]
    Suspended,
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(AuthError);

pub struct NewTenant {
    pub name: String,
    pub slug: String,
    /// An IANA time zone; default `UTC`.
    pub time_zone: Option<String>,
}

/// A change to a tenant's own settings; `None` keeps a field as it is.
#[derive(Default)]
pub struct TenantUpdate {
    pub name: Option<String>,
    pub time_zone: Option<String>,
    /// `Some(None)` removes the fallback.
    pub fallback_url: Option<Option<String>>,
}

/// A new API key: who it is for and what it may do.
pub struct NewApiKey {
    pub name: String,
    /// `admin` (everything) or `read` (reads only).
    pub scope: String,
}

/// A key's scope as the API and the CLI name it.
pub fn scope_word(scope: api_key::Scope) -> &'static str {
    match scope {
        api_key::Scope::Admin => "admin",
        api_key::Scope::ReadOnly => "read",
    }
}

fn parse_scope(word: &str) -> Result<api_key::Scope, &'static str> {
    match word {
        "admin" => Ok(api_key::Scope::Admin),
        "read" => Ok(api_key::Scope::ReadOnly),
        _ => Err("must be \"admin\" or \"read\""),
    }
}

/// An API key just made; its token is shown this once.
pub struct CreatedApiKey {
    pub key: api_key::Model,
    pub token: String,
}

pub struct CreatedTenant {
    pub tenant: tenant::Model,
    /// The admin API key, shown once.
    pub api_key: String,
}

#[derive(Clone)]
pub struct TenantService {
    area: Area,
    tokens: AccessTokens,
    /// The keys whose use was written in the last [`LAST_USED_EVERY`].
    used: Arc<moka::sync::Cache<ApiKeyId, ()>>,
}

/// The longest suspension reason kept.
pub const MAX_SUSPENSION_REASON: usize = 500;

/// How stale an API key's `last_used_at` may be: its use is written at most
/// once per key and process in this time, not on every request.
pub const LAST_USED_EVERY: Duration = Duration::from_secs(60);

impl TenantService {
    pub(crate) fn new(area: Area, tokens: AccessTokens) -> Self {
        TenantService {
            area,
            tokens,
            used: Arc::new(
                moka::sync::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(LAST_USED_EVERY)
                    .build(),
            ),
        }
    }

    /// Records that a key was used, unless its use was recorded within
    /// [`LAST_USED_EVERY`] (by this process, or by any as stored).
    async fn record_use(&self, key: &api_key::Model) -> Result<(), DbErr> {
        if self.used.contains_key(&key.id) {
            return Ok(());
        }
        self.used.insert(key.id.clone(), ());
        let t = Utc::now();
        let every = chrono::Duration::from_std(LAST_USED_EVERY).unwrap_or_default();
        if key.last_used_at.is_some_and(|u| t - u < every) {
            return Ok(());
        }
        scoped_update_by_id::<api_key::Entity>(&key.tenant_id, key.id.as_str())
            .col_expr(api_key::Column::LastUsedAt, Expr::value(Some(t)))
            .exec(self.area.store.writer())
            .await?;
        Ok(())
    }

    /// Authenticates a bearer token: the operator token, a tenant's API key,
    /// or an access token issued for one (`crate::access_tokens`).
    pub async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        let hash = hash_secret(token);
        if secrets_equal(&hash, &self.area.settings.operator_token_hash) {
            return Ok(Caller::Operator);
        }
        let conn = &self.area.store.conn;
        let (key, by) = if token.starts_with("trk_") {
            let key = lookup::active_api_key_by_hash(conn, &hash)
                .await?
                .ok_or(AuthError::UnknownToken)?;
            (key, Credential::ApiKey)
        } else {
            let bearer = self
                .tokens
                .verify(token)
                .await?
                .ok_or(AuthError::UnknownToken)?;
            // Revoking the key ends its tokens at once.
            let key = scoped_by_id::<api_key::Entity>(&bearer.tenant, &bearer.key_id)
                .filter(api_key::Column::RevokedAt.is_null())
                .one(conn)
                .await?
                .ok_or(AuthError::UnknownToken)?;
            (key, Credential::AccessToken)
        };
        let tenant = lookup::tenant(&key.tenant_id)
            .one(conn)
            .await?
            .ok_or(AuthError::UnknownToken)?;
        if tenant.status == tenant::Status::Suspended {
            return Err(AuthError::Suspended);
        }
        if let Err(e) = self.record_use(&key).await {
            // The call goes on: a missed last-used time is not worth a refusal.
            tracing::warn!(error = %e, key_id = %key.id, "API key's last use not recorded");
        }
        Ok(Caller::Tenant {
            tenant: key.tenant_id,
            key_id: key.id.to_string(),
            scope: key.scope,
            by,
        })
    }

    /// Creates a tenant and its first admin API key (operator only).
    pub async fn create(
        &self,
        caller: &Caller,
        input: NewTenant,
    ) -> Result<CreatedTenant, TenantError> {
        caller.operator()?;
        let mut f = Fields::default();
        let name = f.take("name", Name::parse(&input.name));
        let slug = f.take("slug", Slug::parse(&input.slug));
        let zone = f.take(
            "time_zone",
            TimeZone::parse(input.time_zone.as_deref().unwrap_or("UTC")),
        );
        let (name, slug, zone) = f.done((name, slug, zone)).map_err(Invalid)?;
        let t = Utc::now();
        let tenant = tenant::Model {
            id: TenantId::generate(),
            name: name.into_string(),
            slug: slug.to_string(),
            status: tenant::Status::Active,
            created_at: t,
            time_zone: zone.name().to_owned(),
            suspended_at: None,
            suspended_reason: None,
            fallback_url: None,
            rollups_built_at: Some(t),
        };
        let key = new_api_key();
        let txn = self.area.store.write_txn().await?;
        insert(&txn, tenant.clone()).await.map_err(|e| {
            if is_unique_violation(&e) {
                TenantError::SlugTaken(tenant.slug.clone())
            } else {
                e.into()
            }
        })?;
        let first = insert(&txn, initial_key(&tenant, &key)).await?;
        claim_key(&txn, &first).await?;
        crate::audit::record(
            &txn,
            &tenant.id,
            caller,
            "tenant.create",
            "tenant",
            tenant.id.as_str(),
        )
        .await?;
        txn.commit().await?;
        self.area.changes.record();
        Ok(CreatedTenant {
            tenant,
            api_key: key,
        })
    }
}

impl TenantService {
    /// The calling tenant's own settings.
    pub async fn own(&self, caller: &Caller) -> Result<tenant::Model, TenantError> {
        let tenant = caller.tenant()?;
        lookup::tenant(tenant)
            .one(&self.area.store.conn)
            .await?
            .ok_or_else(|| TenantError::NotFound(tenant.to_string()))
    }

    /// Changes the calling tenant's name or time zone; the audit log keeps
    /// both versions. A new time zone applies to periods priced from now on
    /// (a conversion already priced keeps its tier); the reports' rollups are
    /// rebuilt in it at once, from every click and conversion.
    pub async fn update_own(
        &self,
        caller: &Caller,
        input: TenantUpdate,
    ) -> Result<tenant::Model, TenantError> {
        let tenant = caller.tenant_admin()?;
        let mut f = Fields::default();
        let name = f.take_opt("name", input.name.as_deref().map(Name::parse));
        let zone = f.take_opt("time_zone", input.time_zone.as_deref().map(TimeZone::parse));
        let fallback = f.take_patch(
            "fallback_url",
            input
                .fallback_url
                .as_ref()
                .map(|u| u.as_deref().map(TargetUrl::parse)),
        );
        let (name, zone, fallback) = f.done((name, zone, fallback)).map_err(Invalid)?;
        let txn = self.area.store.write_txn().await?;
        let before = lookup::tenant(tenant)
            .one(&txn)
            .await?
            .ok_or_else(|| TenantError::NotFound(tenant.to_string()))?;
        let mut after = before.clone();
        if let Some(name) = name {
            after.name = name.into_string();
        }
        if let Some(zone) = zone {
            after.time_zone = zone.name().to_owned();
        }
        if let Some(fallback) = fallback {
            after.fallback_url = fallback.map(TargetUrl::into_string);
        }
        if after != before {
            tenant::Entity::update_many()
                .col_expr(tenant::Column::Name, Expr::value(after.name.clone()))
                .col_expr(
                    tenant::Column::TimeZone,
                    Expr::value(after.time_zone.clone()),
                )
                .col_expr(
                    tenant::Column::FallbackUrl,
                    Expr::value(after.fallback_url.clone()),
                )
                .filter(tenant::Column::Id.eq(tenant.clone()))
                .exec(&txn)
                .await?;
            if after.time_zone != before.time_zone {
                // The reports' days are the tenant's: count them again in
                // the new zone.
                rollups::rebuild(&txn, tenant).await?;
            }
            let settings = |t: &tenant::Model| serde_json::json!({"name": t.name, "time_zone": t.time_zone, "fallback_url": t.fallback_url});
            crate::audit::record_with(
                &txn,
                tenant,
                caller,
                "tenant.update",
                "tenant",
                tenant.as_str(),
                Some(serde_json::json!({"before": settings(&before), "after": settings(&after)})),
            )
            .await?;
        }
        txn.commit().await?;
        self.area.changes.record();
        Ok(after)
    }

    /// Every tenant, oldest first (operator only).
    pub async fn list(&self, caller: &Caller) -> Result<Vec<tenant::Model>, TenantError> {
        caller.operator()?;
        Ok(lookup::all_tenants()
            .order_by_asc(tenant::Column::CreatedAt)
            .order_by_asc(tenant::Column::Id)
            .all(&self.area.store.conn)
            .await?)
    }

    /// The tenant with this slug (operator only).
    pub async fn by_slug(&self, caller: &Caller, slug: &str) -> Result<tenant::Model, TenantError> {
        caller.operator()?;
        lookup::tenant_by_slug(slug)
            .one(&self.area.store.conn)
            .await?
            .ok_or_else(|| TenantError::NotFound(slug.to_owned()))
    }

    /// The tenants, newest first, by cursor; optionally only those of one
    /// status (operator only).
    pub async fn page(
        &self,
        caller: &Caller,
        status: Option<String>,
        cursor: Option<String>,
        limit: Option<u64>,
    ) -> Result<Page<tenant::Model>, TenantError> {
        caller.operator()?;
        let mut f = Fields::default();
        let status = f.take_opt(
            "status",
            status.as_deref().map(|s| {
                s.parse::<tenant::Status>()
                    .map_err(|_| "must be active or suspended")
            }),
        );
        let cursor = f.take_opt(
            "cursor",
            cursor.map(|c| {
                IdKind::Tenant
                    .matches(&c)
                    .then_some(c)
                    .ok_or("is not a cursor this API returned")
            }),
        );
        let (status, cursor) = f.done((status, cursor)).map_err(Invalid)?;
        let limit = crate::conversions::page_limit(limit)?;
        let mut q = lookup::all_tenants();
        if let Some(status) = status {
            q = q.filter(tenant::Column::Status.eq(status));
        }
        if let Some(cursor) = cursor {
            q = q.filter(tenant::Column::Id.lt(cursor));
        }
        let items = q
            .order_by_desc(tenant::Column::Id)
            .limit(limit + 1)
            .all(&self.area.store.conn)
            .await?;
        Ok(crate::conversions::page_of(items, limit, |t| t.id.as_str()))
    }

    /// One tenant by its id (operator only).
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<tenant::Model, TenantError> {
        caller.operator()?;
        lookup::tenant_by_id(id)
            .one(&self.area.store.conn)
            .await?
            .ok_or_else(|| TenantError::NotFound(id.to_owned()))
    }

    /// Suspends a tenant or resumes it, named by its slug (operator only).
    pub async fn set_status(
        &self,
        caller: &Caller,
        slug: &str,
        status: tenant::Status,
        reason: Option<String>,
    ) -> Result<tenant::Model, TenantError> {
        let t = self.by_slug(caller, slug).await?;
        self.change_status(caller, t, status, reason).await
    }

    /// Suspends a tenant or reinstates it, named by its id (operator only).
    pub async fn set_status_by_id(
        &self,
        caller: &Caller,
        id: &str,
        status: tenant::Status,
        reason: Option<String>,
    ) -> Result<tenant::Model, TenantError> {
        let t = self.get(caller, id).await?;
        self.change_status(caller, t, status, reason).await
    }

    /// A suspended tenant keeps all its data, but its API keys and
    /// postbacks are refused (403, quoting the reason), its links record
    /// nothing and send shoppers to its fallback URL (else a not-found
    /// page), and its portal is closed. Resuming restores all of it.
    /// Suspending a suspended tenant again only changes the reason.
    async fn change_status(
        &self,
        caller: &Caller,
        mut t: tenant::Model,
        status: tenant::Status,
        reason: Option<String>,
    ) -> Result<tenant::Model, TenantError> {
        let reason = match reason {
            Some(r) if status == tenant::Status::Suspended => {
                crate::input::note(&r, MAX_SUSPENSION_REASON)
                    .map_err(|e| Invalid::field("reason", e))?
            }
            _ => None,
        };
        let suspended_at = match status {
            tenant::Status::Suspended => t.suspended_at.or(Some(Utc::now().trunc_subsecs(6))),
            tenant::Status::Active => None,
        };
        if t.status == status && t.suspended_reason == reason {
            return Ok(t);
        }
        let txn = self.area.store.write_txn().await?;
        tenant::Entity::update_many()
            .col_expr(tenant::Column::Status, Expr::value(status))
            .col_expr(tenant::Column::SuspendedAt, Expr::value(suspended_at))
            .col_expr(tenant::Column::SuspendedReason, Expr::value(reason.clone()))
            .filter(tenant::Column::Id.eq(t.id.clone()))
            .exec(&txn)
            .await?;
        let action = match status {
            tenant::Status::Suspended => "tenant.suspend",
            tenant::Status::Active => "tenant.resume",
        };
        crate::audit::record_with(
            &txn,
            &t.id,
            caller,
            action,
            "tenant",
            t.id.as_str(),
            Some(serde_json::json!({
                "before": {"status": t.status.to_string(), "reason": t.suspended_reason},
                "after": {"status": status.to_string(), "reason": reason},
            })),
        )
        .await?;
        txn.commit().await?;
        self.area.changes.record();
        t.status = status;
        t.suspended_at = suspended_at;
        t.suspended_reason = reason;
        Ok(t)
    }

    /// A tenant's API keys, revoked ones included, oldest first (operator only).
    pub async fn api_keys(
        &self,
        caller: &Caller,
        tenant: &TenantId,
    ) -> Result<Vec<api_key::Model>, TenantError> {
        caller.operator()?;
        Ok(scoped::<api_key::Entity>(tenant)
            .order_by_asc(api_key::Column::CreatedAt)
            .order_by_asc(api_key::Column::Id)
            .all(&self.area.store.conn)
            .await?)
    }

    /// Makes an API key for a tenant (operator only); its token is shown once
    /// and only its hash is kept.
    pub async fn create_api_key(
        &self,
        caller: &Caller,
        tenant: &TenantId,
        input: NewApiKey,
    ) -> Result<CreatedApiKey, TenantError> {
        caller.operator()?;
        self.make_key(caller, tenant, input).await
    }

    /// Makes an API key for the calling tenant (the caller needs an admin
    /// key); its token is shown once and only its hash is kept.
    pub async fn create_own_api_key(
        &self,
        caller: &Caller,
        input: NewApiKey,
    ) -> Result<CreatedApiKey, TenantError> {
        let tenant = caller.tenant_admin()?.clone();
        self.make_key(caller, &tenant, input).await
    }

    /// The calling tenant's API keys, revoked ones included, newest first.
    pub async fn own_api_keys(
        &self,
        caller: &Caller,
        cursor: Option<String>,
        limit: Option<u64>,
    ) -> Result<Page<api_key::Model>, TenantError> {
        let tenant = caller.tenant()?;
        newest_page(
            scoped::<api_key::Entity>(tenant),
            IdKind::ApiKey,
            cursor,
            limit,
            &self.area.store.conn,
            |k| k.id.as_str(),
        )
        .await
    }

    /// One of the calling tenant's API keys.
    pub async fn own_api_key(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<api_key::Model, TenantError> {
        let tenant = caller.tenant()?;
        scoped_by_id::<api_key::Entity>(tenant, id)
            .one(&self.area.store.conn)
            .await?
            .ok_or_else(|| TenantError::KeyNotFound(id.to_owned()))
    }

    /// Revokes one of the calling tenant's API keys at once (the caller's
    /// own too: its next call is refused).
    pub async fn revoke_own_api_key(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<api_key::Model, TenantError> {
        let tenant = caller.tenant_admin()?.clone();
        self.revoke_key(caller, &tenant, id).await
    }

    async fn make_key(
        &self,
        caller: &Caller,
        tenant: &TenantId,
        input: NewApiKey,
    ) -> Result<CreatedApiKey, TenantError> {
        let mut f = Fields::default();
        let name = f.take("name", Name::parse(&input.name));
        let scope = f.take("scope", parse_scope(&input.scope));
        let (name, scope) = f.done((name, scope)).map_err(Invalid)?;
        let token = new_api_key();
        let key = api_key::Model {
            id: ApiKeyId::generate(),
            tenant_id: tenant.clone(),
            created_at: Utc::now(),
            name: name.into_string(),
            key_hash: hash_secret(&token),
            key_hint: token[token.len() - 4..].to_owned(),
            scope,
            revoked_at: None,
            last_used_at: None,
        };
        let txn = self.area.store.write_txn().await?;
        let key = insert(&txn, key).await?;
        claim_key(&txn, &key).await?;
        crate::audit::record(
            &txn,
            tenant,
            caller,
            "api_key.create",
            "api_key",
            key.id.as_str(),
        )
        .await?;
        txn.commit().await?;
        Ok(CreatedApiKey { key, token })
    }

    /// Revokes a tenant's API key at once (operator only); revoking a revoked
    /// key again changes nothing.
    pub async fn revoke_api_key(
        &self,
        caller: &Caller,
        tenant: &TenantId,
        key_id: &str,
    ) -> Result<api_key::Model, TenantError> {
        caller.operator()?;
        self.revoke_key(caller, tenant, key_id).await
    }

    async fn revoke_key(
        &self,
        caller: &Caller,
        tenant: &TenantId,
        key_id: &str,
    ) -> Result<api_key::Model, TenantError> {
        let txn = self.area.store.write_txn().await?;
        let mut key = scoped_by_id::<api_key::Entity>(tenant, key_id)
            .one(&txn)
            .await?
            .ok_or_else(|| TenantError::KeyNotFound(key_id.to_owned()))?;
        if key.revoked_at.is_none() {
            // As the database keeps it (PostgreSQL: microseconds).
            let t = Utc::now().trunc_subsecs(6);
            scoped_update_by_id::<api_key::Entity>(tenant, key_id)
                .col_expr(api_key::Column::RevokedAt, Expr::value(t))
                .exec(&txn)
                .await?;
            crate::audit::record(&txn, tenant, caller, "api_key.revoke", "api_key", key_id).await?;
            key.revoked_at = Some(t);
        }
        txn.commit().await?;
        Ok(key)
    }
}

/// Claims an API key's hash across tenants (`global_keys`).
async fn claim_key(
    db: &impl trcker_storage::sea_orm::ConnectionTrait,
    key: &api_key::Model,
) -> Result<(), trcker_storage::sea_orm::DbErr> {
    lookup::claim_global_key(
        db,
        trcker_storage::entities::global_key::Kind::ApiKey,
        &key.key_hash,
        &key.tenant_id,
        key.id.as_str(),
    )
    .await
}

/// A new tenant's first key: an admin key.
fn initial_key(tenant: &tenant::Model, key: &str) -> api_key::Model {
    api_key::Model {
        id: ApiKeyId::generate(),
        tenant_id: tenant.id.clone(),
        created_at: tenant.created_at,
        name: "initial admin key".into(),
        key_hash: hash_secret(key),
        key_hint: key[key.len() - 4..].to_owned(),
        scope: api_key::Scope::Admin,
        revoked_at: None,
        last_used_at: None,
    }
}

/// A tenant's slug, the `{brand}` of its public URLs.
pub(crate) async fn slug_of<C: ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
) -> Result<String, DbErr> {
    lookup::tenant(tenant)
        .one(db)
        .await?
        .map(|t| t.slug)
        .ok_or_else(|| DbErr::RecordNotFound(format!("tenant {tenant}")))
}
