//! The tenant admin's resources: tenants, programs, affiliates, integrations,
//! conversions. Inputs arrive as raw strings and are checked here, every bad
//! field named; nothing is written unless all of them are right.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use trcker_domain::commission::CommissionRule;
use trcker_domain::ids::IdKind;
use trcker_domain::money::{Currency, Money};
use trcker_domain::postback::FieldError;
use trcker_domain::secret::{hash_secret, new_api_key, new_postback_secret, random_alnum};
use trcker_domain::slug::Slug;
use trcker_domain::target::parse_target_template;
use trcker_storage::entities::*;
use trcker_storage::{TenantId, is_unique_violation, scoped, scoped_by_id, sea_orm};

use crate::auth::{Caller, Scope};
use crate::util::{insert, now};
use crate::{ServiceError, ServiceResult, Services};

/// Collects field errors while an input is checked.
#[derive(Default)]
struct Check(Vec<FieldError>);

impl Check {
    fn err(&mut self, field: &str, msg: impl Into<String>) {
        self.0.push(FieldError::new(field, msg));
    }

    fn name(&mut self, field: &str, v: &str) -> String {
        let v = v.trim();
        if v.is_empty() || v.chars().count() > 200 {
            self.err(field, "must be 1 to 200 characters");
        }
        v.to_owned()
    }

    fn slug(&mut self, field: &str, v: &str) -> String {
        if let Err(e) = Slug::parse(v) {
            self.err(field, e.to_string());
        }
        v.to_owned()
    }

    fn url(&mut self, field: &str, v: &str) -> String {
        if let Err(e) = parse_target_template(v) {
            self.err(field, e.to_string());
        }
        v.to_owned()
    }

    fn done(self) -> ServiceResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::Invalid(self.0))
        }
    }
}

async fn audit<C: sea_orm::ConnectionTrait>(
    db: &C,
    tenant: &str,
    caller: &Caller,
    action: &str,
    resource_type: &str,
    resource_id: &str,
) -> Result<(), sea_orm::DbErr> {
    insert(
        db,
        audit::Model {
            id: IdKind::Audit.generate(),
            tenant_id: tenant.to_owned(),
            created_at: now(),
            actor: caller.actor(),
            action: action.to_owned(),
            resource_type: resource_type.to_owned(),
            resource_id: resource_id.to_owned(),
            details: None,
        },
    )
    .await
    .map(|_| ())
}

pub struct NewTenant {
    pub name: String,
    pub slug: String,
}

pub struct CreatedTenant {
    pub tenant: tenant::Model,
    /// The admin API key, shown once.
    pub api_key: String,
}

#[derive(Default)]
pub struct NewProgram {
    pub name: String,
    pub slug: String,
    pub destination_url: String,
    pub fallback_url: Option<String>,
    pub currency: Option<String>,
    pub commission_type: String,
    pub commission_value: String,
    pub hold_days: Option<i32>,
    pub attribution_window_days: Option<i32>,
    pub click_param: Option<String>,
    pub default_revenue: Option<String>,
    /// Conversions sooner than this after their click are refused (0: no minimum).
    pub min_conversion_seconds: Option<i32>,
}

pub struct ProgramView {
    pub program: program::Model,
    pub commission: Option<CommissionRule>,
}

pub struct NewAffiliate {
    pub name: String,
    pub email: String,
    pub slug: String,
    pub postback_url: Option<String>,
}

pub struct CreatedAffiliate {
    pub affiliate: affiliate::Model,
    /// The portal invite link, shown once.
    pub invite_url: String,
}

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
    pub param_aliases: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Default, Clone)]
pub struct IntegrationUpdate {
    pub name: Option<String>,
    /// `active` or `revoked`.
    pub status: Option<String>,
    pub options: IntegrationOptions,
}

/// Column values from checked options: `None` leaves a column as it is,
/// `Some(None)` clears it.
struct OptionColumns {
    allowlist: Option<Option<String>>,
    rate: Option<Option<i32>>,
    aliases: Option<Option<String>>,
}

/// Checks options; returns the column values to store.
fn check_options(c: &mut Check, o: &IntegrationOptions) -> OptionColumns {
    let allowlist = o.ip_allowlist.as_ref().map(|list| {
        for (i, cidr) in list.iter().enumerate() {
            if let Err(e) = trcker_domain::protection::Cidr::parse(cidr) {
                c.err(&format!("ip_allowlist[{i}]"), e);
            }
        }
        (!list.is_empty()).then(|| serde_json::to_string(list).unwrap_or_default())
    });
    let rate = o.rate_limit_per_minute.map(|r| {
        if !(0..=1_000_000).contains(&r) {
            c.err(
                "rate_limit_per_minute",
                "must be from 0 (no limit) to 1000000",
            );
        }
        (r > 0).then_some(r)
    });
    let aliases = o.param_aliases.as_ref().map(|map| {
        const OURS: &[&str] = &["click_id", "txn_id", "amount", "payout", "currency", "event", "status", "coupon_code", "test"];
        for (alias, target) in map {
            if alias.is_empty() || alias.len() > 64 || OURS.contains(&alias.as_str()) {
                c.err("param_aliases", format!("'{alias}' cannot be an alias (1 to 64 characters, not one of Trcker's names)"));
            }
            if !OURS.contains(&target.as_str()) {
                c.err("param_aliases", format!("'{target}' is not a Trcker parameter ({})", OURS.join(", ")));
            }
        }
        (!map.is_empty()).then(|| serde_json::to_string(map).unwrap_or_default())
    });
    OptionColumns {
        allowlist,
        rate,
        aliases,
    }
}

pub struct CreatedIntegration {
    pub integration: integration::Model,
    pub secret: String,
    pub postback_url: String,
}

#[derive(Default)]
pub struct ConversionFilter {
    pub txn_id: Option<String>,
    pub status: Option<String>,
    pub affiliate_id: Option<String>,
    pub program_id: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u64>,
}

pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl Services {
    pub async fn create_tenant(
        &self,
        caller: &Caller,
        input: NewTenant,
    ) -> ServiceResult<CreatedTenant> {
        if !matches!(caller, Caller::Operator) {
            return Err(ServiceError::Forbidden(
                "only the operator token can create tenants".into(),
            ));
        }
        let mut c = Check::default();
        let name = c.name("name", &input.name);
        let slug = c.slug("slug", &input.slug);
        c.done()?;
        let t = now();
        let tenant = tenant::Model {
            id: IdKind::Tenant.generate(),
            name,
            slug,
            status: "active".into(),
            created_at: t,
        };
        let key = new_api_key();
        let txn = self.store.write_txn().await?;
        if let Err(e) = insert(&txn, tenant.clone()).await {
            return Err(if is_unique_violation(&e) {
                ServiceError::Conflict(format!(
                    "a tenant with slug '{}' exists already",
                    tenant.slug
                ))
            } else {
                e.into()
            });
        }
        let key_model = api_key::Model {
            id: IdKind::ApiKey.generate(),
            tenant_id: tenant.id.clone(),
            created_at: t,
            name: "initial admin key".into(),
            key_hash: hash_secret(&key),
            key_hint: key[key.len() - 4..].to_owned(),
            scope: Scope::Admin.as_str().into(),
            revoked_at: None,
            last_used_at: None,
        };
        insert(&txn, key_model).await?;
        audit(
            &txn,
            &tenant.id,
            caller,
            "tenant.create",
            "tenant",
            &tenant.id,
        )
        .await?;
        txn.commit().await?;
        self.invalidate_caches();
        Ok(CreatedTenant {
            tenant,
            api_key: key,
        })
    }

    pub async fn create_program(
        &self,
        caller: &Caller,
        input: NewProgram,
    ) -> ServiceResult<ProgramView> {
        let tenant = caller.tenant_admin()?;
        let mut c = Check::default();
        let name = c.name("name", &input.name);
        let slug = c.slug("slug", &input.slug);
        let destination_url = c.url("destination_url", &input.destination_url);
        let fallback_url = input
            .fallback_url
            .as_deref()
            .map(|u| c.url("fallback_url", u));
        let currency = match input.currency.as_deref() {
            None => Currency::USD,
            Some(s) => Currency::parse(s).unwrap_or_else(|e| {
                c.err("currency", e.to_string());
                Currency::USD
            }),
        };
        let rule = match CommissionRule::parse(
            &input.commission_type,
            &input.commission_value,
            currency,
        ) {
            Ok(r) => Some(r),
            Err(e) => {
                c.err("commission", e.to_string());
                None
            }
        };
        let hold_days = input.hold_days.unwrap_or(0);
        if !(0..=365).contains(&hold_days) {
            c.err("hold_days", "must be from 0 to 365");
        }
        let window = input.attribution_window_days.unwrap_or(30);
        if !(1..=365).contains(&window) {
            c.err("attribution_window_days", "must be from 1 to 365");
        }
        let min_conversion_seconds = input.min_conversion_seconds.unwrap_or(0);
        if !(0..=30 * 86_400).contains(&min_conversion_seconds) {
            c.err(
                "min_conversion_seconds",
                "must be from 0 to 2592000 (30 days)",
            );
        }
        let click_param = input.click_param.unwrap_or_else(|| "click_id".into());
        if click_param.is_empty()
            || click_param.len() > 32
            || !click_param
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            c.err("click_param", "must be 1 to 32 letters, digits, '_' or '-'");
        }
        let default_revenue =
            input
                .default_revenue
                .as_deref()
                .and_then(|v| match Money::parse(v, currency) {
                    Ok(m) => Some(m.minor),
                    Err(e) => {
                        c.err("default_revenue", e.to_string());
                        None
                    }
                });
        c.done()?;
        let rule = rule.ok_or_else(|| ServiceError::Internal("commission rule".into()))?;
        let t = now();
        let program = program::Model {
            id: IdKind::Program.generate(),
            tenant_id: tenant.to_string(),
            created_at: t,
            name,
            slug,
            destination_url,
            fallback_url,
            currency: currency.code().to_owned(),
            click_param,
            attribution_window_days: window,
            hold_days,
            default_revenue_minor: default_revenue,
            status: "active".into(),
            updated_at: t,
            min_conversion_seconds,
        };
        let plan = commission_plan::Model {
            id: IdKind::CommissionPlan.generate(),
            tenant_id: tenant.to_string(),
            created_at: t,
            program_id: program.id.clone(),
            affiliate_id: None,
            event: "sale".into(),
            kind: rule.kind().into(),
            value: rule.value_string(),
            currency: currency.code().to_owned(),
            active: true,
        };
        let txn = self.store.write_txn().await?;
        if let Err(e) = insert(&txn, program.clone()).await {
            return Err(if is_unique_violation(&e) {
                ServiceError::Conflict(format!(
                    "a program with slug '{}' exists already",
                    program.slug
                ))
            } else {
                e.into()
            });
        }
        insert(&txn, plan).await?;
        audit(
            &txn,
            tenant.as_str(),
            caller,
            "program.create",
            "program",
            &program.id,
        )
        .await?;
        txn.commit().await?;
        self.invalidate_caches();
        Ok(ProgramView {
            program,
            commission: Some(rule),
        })
    }

    pub async fn get_program(&self, caller: &Caller, id: &str) -> ServiceResult<ProgramView> {
        let tenant = caller.tenant()?;
        let program = scoped_by_id::<program::Entity>(tenant, id)
            .one(&self.store.conn)
            .await?
            .ok_or(ServiceError::NotFound("program"))?;
        let commission = self.default_rule(tenant, &program).await?;
        Ok(ProgramView {
            program,
            commission,
        })
    }

    pub async fn list_programs(&self, caller: &Caller) -> ServiceResult<Vec<ProgramView>> {
        let tenant = caller.tenant()?;
        let programs = scoped::<program::Entity>(tenant)
            .order_by_asc(program::Column::Id)
            .limit(500)
            .all(&self.store.conn)
            .await?;
        let mut out = Vec::with_capacity(programs.len());
        for program in programs {
            let commission = self.default_rule(tenant, &program).await?;
            out.push(ProgramView {
                program,
                commission,
            });
        }
        Ok(out)
    }

    async fn default_rule(
        &self,
        tenant: &TenantId,
        program: &program::Model,
    ) -> ServiceResult<Option<CommissionRule>> {
        let plan = scoped::<commission_plan::Entity>(tenant)
            .filter(commission_plan::Column::ProgramId.eq(&program.id))
            .filter(commission_plan::Column::AffiliateId.is_null())
            .filter(commission_plan::Column::Event.eq("sale"))
            .filter(commission_plan::Column::Active.eq(true))
            .one(&self.store.conn)
            .await?;
        Ok(plan.and_then(|p| crate::pipeline::commission::rule_of(&p).ok()))
    }

    pub async fn create_affiliate(
        &self,
        caller: &Caller,
        input: NewAffiliate,
    ) -> ServiceResult<CreatedAffiliate> {
        let tenant = caller.tenant_admin()?;
        let mut c = Check::default();
        let name = c.name("name", &input.name);
        let email = input.email.trim().to_ascii_lowercase();
        let valid_email = email.len() <= 254
            && email
                .split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
            && !email.chars().any(char::is_whitespace);
        if !valid_email {
            c.err("email", "must be an email address such as jane@example.com");
        }
        let slug = c.slug("slug", &input.slug);
        let postback_url = input
            .postback_url
            .filter(|u| !u.trim().is_empty())
            .map(|u| c.url("postback_url", u.trim()));
        c.done()?;
        let t = now();
        let invite = random_alnum(32);
        let affiliate = affiliate::Model {
            id: IdKind::Affiliate.generate(),
            tenant_id: tenant.to_string(),
            created_at: t,
            name,
            email,
            slug,
            status: "active".into(),
            postback_url: postback_url.clone(),
            password_hash: None,
            invite_token_hash: Some(hash_secret(&invite)),
            updated_at: t,
        };
        let txn = self.store.write_txn().await?;
        if let Err(e) = insert(&txn, affiliate.clone()).await {
            return Err(if is_unique_violation(&e) {
                ServiceError::Conflict("an affiliate with this slug or email exists already".into())
            } else {
                e.into()
            });
        }
        if let Some(url) = postback_url {
            insert(
                &txn,
                notification_endpoint::Model {
                    id: IdKind::Endpoint.generate(),
                    tenant_id: tenant.to_string(),
                    created_at: t,
                    affiliate_id: affiliate.id.clone(),
                    kind: "postback".into(),
                    url_template: url,
                    active: true,
                },
            )
            .await?;
        }
        audit(
            &txn,
            tenant.as_str(),
            caller,
            "affiliate.create",
            "affiliate",
            &affiliate.id,
        )
        .await?;
        txn.commit().await?;
        self.invalidate_caches();
        let tenant_slug = self.tenant_slug(tenant).await?;
        let invite_url = format!(
            "{}/portal/{}/invite/{}",
            self.public_base(),
            tenant_slug,
            invite
        );
        Ok(CreatedAffiliate {
            affiliate,
            invite_url,
        })
    }

    pub async fn get_affiliate(
        &self,
        caller: &Caller,
        id: &str,
    ) -> ServiceResult<affiliate::Model> {
        scoped_by_id::<affiliate::Entity>(caller.tenant()?, id)
            .one(&self.store.conn)
            .await?
            .ok_or(ServiceError::NotFound("affiliate"))
    }

    pub async fn list_affiliates(&self, caller: &Caller) -> ServiceResult<Vec<affiliate::Model>> {
        Ok(scoped::<affiliate::Entity>(caller.tenant()?)
            .order_by_asc(affiliate::Column::Id)
            .limit(500)
            .all(&self.store.conn)
            .await?)
    }

    pub(crate) async fn tenant_slug(&self, tenant: &TenantId) -> ServiceResult<String> {
        Ok(tenant::Entity::find_by_id(tenant.as_str())
            .one(&self.store.conn)
            .await?
            .ok_or(ServiceError::NotFound("tenant"))?
            .slug)
    }

    pub async fn create_integration(
        &self,
        caller: &Caller,
        input: NewIntegration,
    ) -> ServiceResult<CreatedIntegration> {
        let tenant = caller.tenant_admin()?;
        let mut c = Check::default();
        let name = c.name("name", &input.name);
        let OptionColumns {
            allowlist,
            rate,
            aliases,
        } = check_options(&mut c, &input.options);
        let program = scoped_by_id::<program::Entity>(tenant, &input.program_id)
            .one(&self.store.conn)
            .await?;
        if program.is_none() {
            c.err("program_id", "no program with this id");
        }
        c.done()?;
        let program = program.ok_or(ServiceError::NotFound("program"))?;
        let secret = new_postback_secret();
        let integration = integration::Model {
            id: IdKind::Integration.generate(),
            tenant_id: tenant.to_string(),
            created_at: now(),
            program_id: program.id.clone(),
            name,
            secret_hash: hash_secret(&secret),
            secret_hint: secret[secret.len() - 4..].to_owned(),
            status: "active".into(),
            param_aliases: aliases.flatten(),
            ip_allowlist: allowlist.flatten(),
            require_signature: input.options.require_signature.unwrap_or(false),
            rate_limit_per_minute: rate.flatten(),
        };
        let txn = self.store.write_txn().await?;
        insert(&txn, integration.clone()).await?;
        audit(
            &txn,
            tenant.as_str(),
            caller,
            "integration.create",
            "integration",
            &integration.id,
        )
        .await?;
        txn.commit().await?;
        self.invalidate_caches();
        let tenant_slug = self.tenant_slug(tenant).await?;
        let postback_url = format!(
            "{}/api/postback/{}/{}?secret={}",
            self.public_base(),
            tenant_slug,
            program.slug,
            secret
        );
        Ok(CreatedIntegration {
            integration,
            secret,
            postback_url,
        })
    }

    /// Changes an integration's name, status (revoking its secret) or protections.
    pub async fn update_integration(
        &self,
        caller: &Caller,
        id: &str,
        input: IntegrationUpdate,
    ) -> ServiceResult<integration::Model> {
        use sea_orm::sea_query::Expr;
        let tenant = caller.tenant_admin()?;
        let existing = self.get_integration(caller, id).await?;
        let mut c = Check::default();
        let name = input.name.as_deref().map(|n| c.name("name", n));
        if let Some(s) = &input.status
            && s != "active"
            && s != "revoked"
        {
            c.err("status", "must be active or revoked");
        }
        let OptionColumns {
            allowlist,
            rate,
            aliases,
        } = check_options(&mut c, &input.options);
        c.done()?;
        let changes = [
            name.is_some(),
            input.status.is_some(),
            allowlist.is_some(),
            input.options.require_signature.is_some(),
            rate.is_some(),
            aliases.is_some(),
        ];
        if !changes.contains(&true) {
            return Ok(existing);
        }
        let mut q = integration::Entity::update_many()
            .filter(integration::Column::TenantId.eq(tenant.as_str()))
            .filter(integration::Column::Id.eq(&existing.id));
        if let Some(v) = name {
            q = q.col_expr(integration::Column::Name, Expr::value(v));
        }
        if let Some(v) = input.status {
            q = q.col_expr(integration::Column::Status, Expr::value(v));
        }
        if let Some(v) = allowlist {
            q = q.col_expr(integration::Column::IpAllowlist, Expr::value(v));
        }
        if let Some(v) = input.options.require_signature {
            q = q.col_expr(integration::Column::RequireSignature, Expr::value(v));
        }
        if let Some(v) = rate {
            q = q.col_expr(integration::Column::RateLimitPerMinute, Expr::value(v));
        }
        if let Some(v) = aliases {
            q = q.col_expr(integration::Column::ParamAliases, Expr::value(v));
        }
        let txn = self.store.write_txn().await?;
        q.exec(&txn).await?;
        audit(
            &txn,
            tenant.as_str(),
            caller,
            "integration.update",
            "integration",
            &existing.id,
        )
        .await?;
        txn.commit().await?;
        self.invalidate_caches();
        self.get_integration(caller, id).await
    }

    pub async fn get_integration(
        &self,
        caller: &Caller,
        id: &str,
    ) -> ServiceResult<integration::Model> {
        scoped_by_id::<integration::Entity>(caller.tenant()?, id)
            .one(&self.store.conn)
            .await?
            .ok_or(ServiceError::NotFound("integration"))
    }

    pub async fn get_conversion(
        &self,
        caller: &Caller,
        id: &str,
    ) -> ServiceResult<conversion::Model> {
        scoped_by_id::<conversion::Entity>(caller.tenant()?, id)
            .one(&self.store.conn)
            .await?
            .ok_or(ServiceError::NotFound("conversion"))
    }

    /// Conversions, newest first, by cursor (the last id of the previous page).
    pub async fn list_conversions(
        &self,
        caller: &Caller,
        f: ConversionFilter,
    ) -> ServiceResult<Page<conversion::Model>> {
        let tenant = caller.tenant()?;
        let limit = f.limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(ServiceError::field("limit", "must be from 1 to 200"));
        }
        if let Some(s) = &f.status
            && trcker_domain::ConversionStatus::parse(s).is_err()
        {
            return Err(ServiceError::field(
                "status",
                "must be one of approved, pending, rejected, refunded, chargeback",
            ));
        }
        if let Some(cur) = &f.cursor
            && !IdKind::Conversion.matches(cur)
        {
            return Err(ServiceError::field(
                "cursor",
                "is not a cursor this API returned",
            ));
        }
        let mut q = scoped::<conversion::Entity>(tenant);
        if let Some(v) = f.txn_id {
            q = q.filter(conversion::Column::TxnId.eq(v));
        }
        if let Some(v) = f.status {
            q = q.filter(conversion::Column::Status.eq(v.to_ascii_lowercase()));
        }
        if let Some(v) = f.affiliate_id {
            q = q.filter(conversion::Column::AffiliateId.eq(v));
        }
        if let Some(v) = f.program_id {
            q = q.filter(conversion::Column::ProgramId.eq(v));
        }
        if let Some(v) = f.cursor {
            q = q.filter(conversion::Column::Id.lt(v));
        }
        let mut items = q
            .order_by_desc(conversion::Column::Id)
            .limit(limit + 1)
            .all(&self.store.conn)
            .await?;
        let next_cursor = if items.len() as u64 > limit {
            items.truncate(limit as usize);
            items.last().map(|c| c.id.clone())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}
