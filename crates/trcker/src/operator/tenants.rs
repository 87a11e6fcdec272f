//! `trcker tenant create|list|suspend|resume` and `trcker api-key
//! create|list|revoke`: the operator's tenant work without the admin API (no
//! operator token needed: whoever runs these holds the database). Every
//! change is in the tenant's audit log, by the operator.

use trcker_services::storage::entities::tenant;
use trcker_services::tenants::{NewApiKey, NewTenant, TenantError, scope_word};

use super::{DatabaseFlags, OPERATOR};
use crate::AppError;

#[derive(Debug, clap::Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and its first admin API key (shown once).
    Create {
        /// The tenant's slug: the {brand} of its public URLs (lowercase letters, digits, '-').
        slug: String,
        /// The tenant's name, for people (default: the slug).
        #[arg(long)]
        name: Option<String>,
        /// The tenant's IANA time zone, for calendar periods (default: UTC).
        #[arg(long)]
        time_zone: Option<String>,
        #[command(flatten)]
        db: DatabaseFlags,
    },
    /// List every tenant with its status.
    List {
        #[command(flatten)]
        db: DatabaseFlags,
    },
    /// Suspend a tenant: its API keys, postbacks and portal are refused and
    /// its links record nothing (nothing of it is deleted).
    Suspend {
        slug: String,
        /// Why: quoted to the tenant's refused postbacks.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        db: DatabaseFlags,
    },
    /// Reinstate a suspended tenant: everything works again.
    #[command(alias = "reinstate")]
    Resume {
        slug: String,
        #[command(flatten)]
        db: DatabaseFlags,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KeyScope {
    /// Everything the tenant's API allows.
    Admin,
    /// Reads only (`read-only` is accepted too).
    #[value(alias = "read-only")]
    Read,
}

#[derive(Debug, clap::Subcommand)]
pub enum ApiKeyCommand {
    /// Make an API key for a tenant; its token is shown once, only its hash is kept.
    Create {
        /// The tenant's slug.
        tenant: String,
        /// What the key is for (e.g. "shop backend").
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value = "admin")]
        scope: KeyScope,
        #[command(flatten)]
        db: DatabaseFlags,
    },
    /// List a tenant's API keys (their last four characters, never the token).
    List {
        /// The tenant's slug.
        tenant: String,
        #[command(flatten)]
        db: DatabaseFlags,
    },
    /// Revoke an API key at once.
    Revoke {
        /// The tenant's slug.
        tenant: String,
        /// The key's id (from `trcker api-key list`).
        key_id: String,
        #[command(flatten)]
        db: DatabaseFlags,
    },
}

impl TenantCommand {
    pub fn db(&self) -> &DatabaseFlags {
        match self {
            TenantCommand::Create { db, .. }
            | TenantCommand::List { db }
            | TenantCommand::Suspend { db, .. }
            | TenantCommand::Resume { db, .. } => db,
        }
    }
}

impl ApiKeyCommand {
    pub fn db(&self) -> &DatabaseFlags {
        match self {
            ApiKeyCommand::Create { db, .. }
            | ApiKeyCommand::List { db, .. }
            | ApiKeyCommand::Revoke { db, .. } => db,
        }
    }
}

/// An area error as the one line the operator reads.
fn said(e: TenantError) -> AppError {
    match e {
        TenantError::Invalid(invalid) => AppError::Config(
            invalid
                .0
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        other => AppError::Config(other.to_string()),
    }
}

/// Runs a tenant command on the configured database: the lines to print.
pub async fn tenant(config: &crate::Config, cmd: TenantCommand) -> Result<Vec<String>, AppError> {
    let services = super::operator_services(config).await?;
    let tenants = &services.tenants;
    let result = match cmd {
        TenantCommand::Create {
            slug,
            name,
            time_zone,
            ..
        } => tenants
            .create(
                &OPERATOR,
                NewTenant {
                    name: name.unwrap_or_else(|| slug.clone()),
                    slug,
                    time_zone,
                },
            )
            .await
            .map(|created| {
                vec![
                    format!(
                        "created tenant {} ({}), id {}",
                        created.tenant.slug, created.tenant.name, created.tenant.id
                    ),
                    format!("  admin API key {}", created.api_key),
                    "  (shown once; only its hash is kept)".to_owned(),
                ]
            }),
        TenantCommand::List { .. } => tenants.list(&OPERATOR).await.map(|all| {
            let mut lines = vec![format!(
                "{:<28} {:<24} {:<10} {}",
                "ID", "SLUG", "STATUS", "CREATED"
            )];
            lines.extend(all.iter().map(|t| {
                format!(
                    "{:<28} {:<24} {:<10} {}",
                    t.id,
                    t.slug,
                    t.status.as_str(),
                    t.created_at.format("%Y-%m-%d %H:%M UTC")
                )
            }));
            if all.is_empty() {
                lines.push("(no tenants yet: trcker tenant create <slug>)".to_owned());
            }
            lines
        }),
        TenantCommand::Suspend { slug, reason, .. } => tenants
            .set_status(&OPERATOR, &slug, tenant::Status::Suspended, reason)
            .await
            .map(|t| {
                vec![format!(
                    "tenant {} is suspended: its API keys, postbacks and portal are refused (403 tenant-suspended) and its links record nothing, until trcker tenant resume",
                    t.slug
                )]
            }),
        TenantCommand::Resume { slug, .. } => tenants
            .set_status(&OPERATOR, &slug, tenant::Status::Active, None)
            .await
            .map(|t| vec![format!("tenant {} is active", t.slug)]),
    };
    super::close(services).await;
    result.map_err(said)
}

/// Runs an API key command on the configured database: the lines to print.
pub async fn api_key(config: &crate::Config, cmd: ApiKeyCommand) -> Result<Vec<String>, AppError> {
    let services = super::operator_services(config).await?;
    let result = api_key_on(&services, cmd).await;
    super::close(services).await;
    result.map_err(said)
}

async fn api_key_on(
    services: &trcker_services::Services,
    cmd: ApiKeyCommand,
) -> Result<Vec<String>, TenantError> {
    let tenants = &services.tenants;
    match cmd {
        ApiKeyCommand::Create {
            tenant,
            name,
            scope,
            ..
        } => {
            let t = tenants.by_slug(&OPERATOR, &tenant).await?;
            let scope = match scope {
                KeyScope::Admin => "admin",
                KeyScope::Read => "read",
            }
            .to_owned();
            let created = tenants
                .create_api_key(&OPERATOR, &t.id, NewApiKey { name, scope })
                .await?;
            Ok(vec![
                format!(
                    "created {} key {} for {}: {}",
                    scope_word(created.key.scope),
                    created.key.id,
                    t.slug,
                    created.key.name
                ),
                format!("  token {}", created.token),
                "  (shown once; only its hash is kept)".to_owned(),
            ])
        }
        ApiKeyCommand::List { tenant, .. } => {
            let t = tenants.by_slug(&OPERATOR, &tenant).await?;
            let keys = tenants.api_keys(&OPERATOR, &t.id).await?;
            let mut lines = vec![format!(
                "{:<30} {:<10} {:<8} {:<18} {}",
                "ID", "SCOPE", "ENDS IN", "STATE", "NAME"
            )];
            lines.extend(keys.iter().map(|k| {
                let state = match k.revoked_at {
                    Some(t) => format!("revoked {}", t.format("%Y-%m-%d")),
                    None => "active".to_owned(),
                };
                format!(
                    "{:<30} {:<10} {:<8} {:<18} {}",
                    k.id,
                    scope_word(k.scope),
                    k.key_hint,
                    state,
                    k.name
                )
            }));
            Ok(lines)
        }
        ApiKeyCommand::Revoke { tenant, key_id, .. } => {
            let t = tenants.by_slug(&OPERATOR, &tenant).await?;
            let key = tenants.revoke_api_key(&OPERATOR, &t.id, &key_id).await?;
            Ok(vec![format!(
                "key {} of {} ({}) is revoked; calls with it now answer 401",
                key.id, t.slug, key.name
            )])
        }
    }
}
