//! Merchant integrations: each has its own 64-character postback secret (kept
//! hashed; shown once, inside its unique postback URL) and optional
//! protections: an IP allow-list, a required signature, a rate limit, and
//! aliases for the merchant's own parameter names.

use std::collections::BTreeMap;

use chrono::{SubsecRound, Utc};
use trcker_domain::fields::{Fields, Name, RatePerMinute};
use trcker_domain::ids::IdKind;
use trcker_domain::postback::PARAMETERS as OURS;
use trcker_domain::protection::Cidr;
use trcker_domain::secret::{hash_secret, new_postback_secret};
use trcker_storage::entities::global_key::Kind;
use trcker_storage::entities::{integration, program};
use trcker_storage::ids::IntegrationId;
use trcker_storage::sea_orm::UpdateMany;
use trcker_storage::sea_orm::sea_query::Expr;
use trcker_storage::sea_orm::{ColumnTrait, QueryFilter};
use trcker_storage::{
    Store, TenantId, batch::insert, lookup, scoped, scoped_by_id, scoped_update_by_id,
};

use crate::areas::Area;
use crate::auth::{AccessError, Caller};
use crate::conversions::{Page, newest_page};
use crate::error::{Invalid, StoreError, from_store};

#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("integration not found")]
    NotFound(String),
    #[error(
        "integration {0} is revoked: revocation is final (create a new integration for a new secret)"
    )]
    Revoked(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(IntegrationError);

pub struct NewIntegration {
    pub name: String,
    pub program_id: String,
    pub options: IntegrationOptions,
}

/// An integration's optional settings; `None` leaves a setting as it is.
#[derive(Debug, Default, Clone)]
pub struct IntegrationOptions {
    /// CIDR ranges allowed to send postbacks; empty allows every address.
    pub ip_allowlist: Option<Vec<String>>,
    pub require_signature: Option<bool>,
    /// Postbacks per minute (per receiver process); 0 removes the limit.
    pub rate_limit_per_minute: Option<i32>,
    /// Merchant parameter name -> Trcker parameter name.
    pub param_aliases: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Clone)]
pub struct IntegrationUpdate {
    pub name: Option<String>,
    /// `active` or `revoked`.
    pub status: Option<String>,
    pub options: IntegrationOptions,
}

/// What an integration list may be narrowed to.
#[derive(Debug, Default, Clone)]
pub struct IntegrationFilter {
    pub program_id: Option<String>,
    /// `active` or `revoked`.
    pub status: Option<String>,
}

pub use crate::input::{DEFAULT_OVERLAP_HOURS, MAX_OVERLAP_HOURS};

/// A rotated secret: shown once, like a new integration's.
pub struct RotatedSecret {
    pub created: CreatedIntegration,
    /// Until when the previous secret is accepted (none: refused at once).
    pub previous_secret_until: Option<chrono::DateTime<Utc>>,
}

pub struct CreatedIntegration {
    pub integration: integration::Model,
    pub secret: String,
    pub postback_url: String,
}

/// Checked options as column values: `None` leaves a column as it is,
/// `Some(None)` clears it.
struct OptionColumns {
    allowlist: Option<Option<String>>,
    rate: Option<Option<i32>>,
    aliases: Option<Option<String>>,
    signature: Option<bool>,
}

#[derive(Clone)]
pub struct IntegrationService {
    area: Area,
}

impl IntegrationService {
    pub(crate) fn new(area: Area) -> Self {
        IntegrationService { area }
    }

    fn store(&self) -> &Store {
        &self.area.store
    }

    /// Creates an integration; its secret and postback URL are returned once.
    pub async fn create(
        &self,
        caller: &Caller,
        input: NewIntegration,
    ) -> Result<CreatedIntegration, IntegrationError> {
        let tenant = caller.tenant_admin()?;
        let mut f = Fields::default();
        let name = f.take("name", Name::parse(&input.name));
        let options = parse_options(&mut f, &input.options);
        let program = scoped_by_id::<program::Entity>(tenant, &input.program_id)
            .one(&self.store().conn)
            .await?;
        if program.is_none() {
            f.error("program_id", "no program with this id");
        }
        let (name, program) = f.done((name, program)).map_err(Invalid)?;
        let secret = new_postback_secret();
        let integration = integration::Model {
            id: IntegrationId::generate(),
            tenant_id: tenant.clone(),
            created_at: Utc::now(),
            program_id: program.id.clone(),
            name: name.into_string(),
            secret_hash: hash_secret(&secret),
            secret_hint: secret[secret.len() - 4..].to_owned(),
            status: integration::Status::Active,
            param_aliases: options.aliases.flatten(),
            ip_allowlist: options.allowlist.flatten(),
            require_signature: options.signature.unwrap_or(false),
            rate_limit_per_minute: options.rate.flatten(),
            previous_secret_hash: None,
            previous_secret_until: None,
            revoked_at: None,
        };
        let txn = self.store().write_txn().await?;
        insert(&txn, integration.clone()).await?;
        lookup::claim_global_key(
            &txn,
            Kind::Integration,
            &integration.secret_hash,
            tenant,
            integration.id.as_str(),
        )
        .await?;
        crate::audit::record(
            &txn,
            tenant,
            caller,
            "integration.create",
            "integration",
            integration.id.as_str(),
        )
        .await?;
        txn.commit().await?;
        self.area.changes.record();
        let postback_url = self.postback_url(tenant, &program.slug, &secret).await?;
        Ok(CreatedIntegration {
            integration,
            secret,
            postback_url,
        })
    }

    /// The postback URL that carries this secret.
    async fn postback_url(
        &self,
        tenant: &TenantId,
        offer: &str,
        secret: &str,
    ) -> Result<String, IntegrationError> {
        let brand = crate::tenants::slug_of(&self.store().conn, tenant).await?;
        Ok(format!(
            "{}/api/postback/{brand}/{offer}?secret={secret}",
            self.area.settings.public_base(),
        ))
    }

    /// The tenant's integrations, newest first, by cursor; optionally only
    /// one program's or those of one status.
    pub async fn list(
        &self,
        caller: &Caller,
        filter: IntegrationFilter,
        cursor: Option<String>,
        limit: Option<u64>,
    ) -> Result<Page<integration::Model>, IntegrationError> {
        let tenant = caller.tenant()?;
        let mut f = Fields::default();
        let status = f.take_opt(
            "status",
            filter.status.as_deref().map(|s| {
                s.parse::<integration::Status>()
                    .map_err(|_| "must be active or revoked")
            }),
        );
        let program = f.take_opt(
            "program_id",
            filter
                .program_id
                .as_deref()
                .map(|p| IdKind::Program.parse(p)),
        );
        let (status, program) = f.done((status, program)).map_err(Invalid)?;
        let mut q = scoped::<integration::Entity>(tenant);
        if let Some(status) = status {
            q = q.filter(integration::Column::Status.eq(status));
        }
        if let Some(program) = program {
            q = q.filter(integration::Column::ProgramId.eq(program));
        }
        newest_page(
            q,
            IdKind::Integration,
            cursor,
            limit,
            &self.store().conn,
            |i| i.id.as_str(),
        )
        .await
    }

    /// Gives an integration a new secret. The old one keeps working for
    /// `overlap` (so the merchant's server can switch without a lost
    /// postback), then is refused; a secret older than that is refused at
    /// once. The new secret and its postback URL are returned once.
    pub async fn rotate_secret(
        &self,
        caller: &Caller,
        id: &str,
        overlap_hours: Option<i64>,
    ) -> Result<RotatedSecret, IntegrationError> {
        let tenant = caller.tenant_admin()?;
        let now = Utc::now().trunc_subsecs(6);
        let until = crate::input::overlap_until(overlap_hours, now)?;
        let existing = find(self.store(), tenant, id).await?;
        if existing.status == integration::Status::Revoked {
            return Err(IntegrationError::Revoked(existing.id.to_string()));
        }
        let secret = new_postback_secret();
        let hash = hash_secret(&secret);
        use integration::Column as C;
        let txn = self.store().write_txn().await?;
        // Only the secret just replaced may keep working: an older one's
        // claim goes now.
        if let Some(older) = &existing.previous_secret_hash {
            lookup::release_global_key(&txn, Kind::Integration, older).await?;
        }
        if until.is_none() {
            lookup::release_global_key(&txn, Kind::Integration, &existing.secret_hash).await?;
        }
        scoped_update_by_id::<integration::Entity>(tenant, existing.id.as_str())
            .col_expr(C::SecretHash, Expr::value(hash.clone()))
            .col_expr(
                C::SecretHint,
                Expr::value(secret[secret.len() - 4..].to_owned()),
            )
            .col_expr(
                C::PreviousSecretHash,
                Expr::value(until.map(|_| existing.secret_hash.clone())),
            )
            .col_expr(C::PreviousSecretUntil, Expr::value(until))
            .exec(&txn)
            .await?;
        lookup::claim_global_key(&txn, Kind::Integration, &hash, tenant, existing.id.as_str())
            .await?;
        crate::audit::record_with(
            &txn,
            tenant,
            caller,
            "integration.rotate_secret",
            "integration",
            existing.id.as_str(),
            Some(serde_json::json!({
                "before": {"secret_hint": existing.secret_hint},
                "after": {"secret_hint": &secret[secret.len() - 4..]},
                "previous_secret_until": until,
            })),
        )
        .await?;
        txn.commit().await?;
        self.area.changes.record();
        let integration = find(self.store(), tenant, id).await?;
        let program = scoped_by_id::<program::Entity>(tenant, &integration.program_id)
            .one(&self.store().conn)
            .await?
            .ok_or_else(|| StoreError::Internal("integration without its program".into()))?;
        let postback_url = self.postback_url(tenant, &program.slug, &secret).await?;
        Ok(RotatedSecret {
            created: CreatedIntegration {
                integration,
                secret,
                postback_url,
            },
            previous_secret_until: until,
        })
    }

    /// Revokes an integration for good: its secrets (current and any still
    /// in a rotation's overlap) are refused from now on. Revoking a revoked
    /// integration changes nothing.
    pub async fn revoke(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<integration::Model, IntegrationError> {
        let tenant = caller.tenant_admin()?;
        let existing = find(self.store(), tenant, id).await?;
        if existing.status == integration::Status::Revoked {
            return Ok(existing);
        }
        let txn = self.store().write_txn().await?;
        revoked_now(tenant, existing.id.as_str()).exec(&txn).await?;
        crate::audit::record(
            &txn,
            tenant,
            caller,
            "integration.revoke",
            "integration",
            existing.id.as_str(),
        )
        .await?;
        txn.commit().await?;
        self.area.changes.record();
        find(self.store(), tenant, id).await
    }

    pub async fn get(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<integration::Model, IntegrationError> {
        find(self.store(), caller.tenant()?, id).await
    }

    /// Changes an integration's name, protections or status: `revoked`
    /// revokes it, for good (`active` on a revoked one is refused).
    pub async fn update(
        &self,
        caller: &Caller,
        id: &str,
        input: IntegrationUpdate,
    ) -> Result<integration::Model, IntegrationError> {
        let tenant = caller.tenant_admin()?;
        let existing = find(self.store(), tenant, id).await?;
        let Some(q) = parse_update(tenant, existing.id.as_str(), &input)? else {
            return Ok(existing);
        };
        let revoked = existing.status == integration::Status::Revoked;
        let revoking = match input.status.as_deref() {
            Some("active") if revoked => {
                return Err(IntegrationError::Revoked(existing.id.to_string()));
            }
            Some("revoked") => !revoked,
            _ => false,
        };
        let txn = self.store().write_txn().await?;
        q.exec(&txn).await?;
        if revoking {
            revoked_now(tenant, existing.id.as_str()).exec(&txn).await?;
        }
        crate::audit::record(
            &txn,
            tenant,
            caller,
            if revoking {
                "integration.revoke"
            } else {
                "integration.update"
            },
            "integration",
            existing.id.as_str(),
        )
        .await?;
        txn.commit().await?;
        self.area.changes.record();
        find(self.store(), tenant, id).await
    }
}

/// The UPDATE that revokes an integration: its status, when, and the end
/// of any rotation's overlap.
fn revoked_now(tenant: &TenantId, id: &str) -> UpdateMany<integration::Entity> {
    use integration::Column as C;
    scoped_update_by_id::<integration::Entity>(tenant, id)
        .col_expr(C::Status, Expr::value(integration::Status::Revoked))
        .col_expr(C::RevokedAt, Expr::value(Some(Utc::now().trunc_subsecs(6))))
        .col_expr(C::PreviousSecretHash, Expr::value(None::<String>))
        .col_expr(
            C::PreviousSecretUntil,
            Expr::value(None::<chrono::DateTime<Utc>>),
        )
}

/// One of the tenant's integrations.
pub(crate) async fn find(
    store: &Store,
    tenant: &TenantId,
    id: &str,
) -> Result<integration::Model, IntegrationError> {
    scoped_by_id::<integration::Entity>(tenant, id)
        .one(&store.conn)
        .await?
        .ok_or_else(|| IntegrationError::NotFound(id.to_owned()))
}

/// The UPDATE a change makes, or `None` when it changes nothing.
fn parse_update(
    tenant: &TenantId,
    id: &str,
    input: &IntegrationUpdate,
) -> Result<Option<UpdateMany<integration::Entity>>, Invalid> {
    use integration::Column as C;
    let mut f = Fields::default();
    let name = f.take_opt("name", input.name.as_deref().map(Name::parse));
    let status = f.take_opt(
        "status",
        input.status.as_deref().map(|s| {
            s.parse::<integration::Status>()
                .map_err(|_| "must be active or revoked")
        }),
    );
    let options = parse_options(&mut f, &input.options);
    let (name, status) = f.done((name, status)).map_err(Invalid)?;
    let mut q = scoped_update_by_id::<integration::Entity>(tenant, id);
    let mut changed = false;
    let mut set = |q: UpdateMany<integration::Entity>,
                   col,
                   v: Option<trcker_storage::sea_orm::Value>| match v {
        Some(v) => {
            changed = true;
            q.col_expr(col, Expr::value(v))
        }
        None => q,
    };
    q = set(q, C::Name, name.map(|n| n.into_string().into()));
    q = set(q, C::Status, status.map(Into::into));
    q = set(q, C::IpAllowlist, options.allowlist.map(Into::into));
    q = set(q, C::RequireSignature, options.signature.map(Into::into));
    q = set(q, C::RateLimitPerMinute, options.rate.map(Into::into));
    q = set(q, C::ParamAliases, options.aliases.map(Into::into));
    Ok(changed.then_some(q))
}

/// Checks options into the column values to store.
fn parse_options(f: &mut Fields, o: &IntegrationOptions) -> OptionColumns {
    let allowlist = o.ip_allowlist.as_ref().map(|list| {
        for (i, cidr) in list.iter().enumerate() {
            f.take(&format!("ip_allowlist[{i}]"), Cidr::parse(cidr));
        }
        (!list.is_empty()).then(|| serde_json::to_string(list).unwrap_or_default())
    });
    let rate = o.rate_limit_per_minute.map(|r| {
        f.take("rate_limit_per_minute", RatePerMinute::parse(r))
            .and_then(|r| (r.get() > 0).then_some(r.get()))
    });
    let aliases = o.param_aliases.as_ref().map(|map| {
        for (alias, target) in map {
            if alias.is_empty() || alias.len() > 64 || OURS.contains(&alias.as_str()) {
                f.error(
                    "param_aliases",
                    format!("'{alias}' cannot be an alias (1 to 64 characters, not one of Trcker's names)"),
                );
            }
            if !OURS.contains(&target.as_str()) {
                f.error(
                    "param_aliases",
                    format!("'{target}' is not a Trcker parameter ({})", OURS.join(", ")),
                );
            }
        }
        (!map.is_empty()).then(|| serde_json::to_string(map).unwrap_or_default())
    });
    OptionColumns {
        allowlist,
        rate,
        aliases,
        signature: o.require_signature,
    }
}
