//! Postback intake: verify, persist, enqueue, answer. No business logic here:
//! attribution and commission happen in the workers.
//!
//! The answer is truthful: `accepted` only once the postback is durably stored
//! (its job is enqueued right after; the sweeper enqueues it if we crash in
//! between), `duplicate` for a repeat of the same txn_id and status, and an error
//! for anything we did not take.

use std::collections::BTreeMap;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use trcker_domain::ids::IdKind;
use trcker_domain::money::Currency;
use trcker_domain::postback::{FieldError, PostbackParams, redacted};
use trcker_domain::protection::{self, Cidr};
use trcker_domain::secret::{hash_secret, test_fire};
use trcker_storage::entities::*;
use trcker_storage::{TenantId, scoped, sea_orm};

use crate::inbox::Filed;
use crate::ttl_cache::TtlCache;
use crate::util::{insert, now};
use crate::{ServiceError, Services};

/// A postback as the receiver got it.
#[derive(Debug, Default)]
pub struct PostbackRequest {
    /// `None` for the short form `/postback`, where the secret names the integration.
    pub brand: Option<String>,
    pub offer: Option<String>,
    pub secret: Option<String>,
    /// A test-fire token (`X-Trcker-Test-Fire`), in place of the secret.
    pub test_fire_token: Option<String>,
    /// Every parameter, from the query string and the body, in order.
    pub pairs: Vec<(String, String)>,
    pub source_ip: Option<String>,
    pub method: String,
    /// What a signature covers, for integrations that require one.
    pub signed: SignedParts,
}

/// The raw request, as signed by the merchant (see `trcker_domain::protection`).
#[derive(Debug, Default)]
pub struct SignedParts {
    pub timestamp: Option<String>,
    pub signature: Option<String>,
    pub path: String,
    pub query: String,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeOutcome {
    Accepted {
        postback_id: String,
    },
    Duplicate {
        postback_id: String,
        conversion_id: Option<String>,
    },
}

/// Why a postback was not taken.
#[derive(Debug)]
pub enum IntakeError {
    NotFound(&'static str),
    Unauthorized(&'static str),
    Invalid(Vec<FieldError>),
    /// A repeat of an accepted txn_id and status with other values.
    Conflict(String),
    /// IP not allowed, or a missing or bad signature.
    Forbidden(String),
    RateLimited {
        retry_after_secs: u64,
    },
    Unavailable,
    Internal(String),
}

impl From<ServiceError> for IntakeError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Unavailable => IntakeError::Unavailable,
            ServiceError::NotFound(what) => IntakeError::NotFound(what),
            ServiceError::Invalid(f) => IntakeError::Invalid(f),
            other => IntakeError::Internal(other.to_string()),
        }
    }
}

impl From<sea_orm::DbErr> for IntakeError {
    fn from(e: sea_orm::DbErr) -> Self {
        ServiceError::from(e).into()
    }
}

/// Postback lookups kept for a few seconds (see `ttl_cache`).
#[derive(Debug, Default)]
pub struct IntakeCache {
    programs: TtlCache<(String, String), Result<program::Model, &'static str>>,
    integrations: TtlCache<String, Option<integration::Model>>,
}

impl IntakeCache {
    pub fn clear(&self) {
        self.programs.clear();
        self.integrations.clear();
    }
}

/// The dedupe key of an accepted postback: one per program, txn_id and status.
fn dedupe_key(program_id: &str, p: &PostbackParams) -> String {
    format!("{program_id}\u{1f}{}\u{1f}{}", p.txn_id, p.status)
}

impl Services {
    /// The program a postback URL names, or what is unknown in it.
    async fn named_program(
        &self,
        brand: &str,
        offer: &str,
    ) -> Result<Result<program::Model, &'static str>, IntakeError> {
        let key = (brand.to_owned(), offer.to_owned());
        if let Some(hit) = self.intake_cache.programs.get(&key) {
            return Ok(hit);
        }
        let found = match self.tenant_by_slug(brand).await? {
            None => Err("brand"),
            Some(tenant) => self
                .program_by_slug(&TenantId::from_trusted(tenant.id), offer)
                .await?
                .ok_or("offer"),
        };
        self.intake_cache.programs.put(key, found.clone());
        Ok(found)
    }

    /// The integration whose secret this is (looked up by the secret's hash).
    async fn integration_by_secret(
        &self,
        secret: &str,
    ) -> Result<Option<integration::Model>, IntakeError> {
        let hash = hash_secret(secret);
        if let Some(hit) = self.intake_cache.integrations.get(&hash) {
            return Ok(hit);
        }
        let found = integration::Entity::find()
            .filter(integration::Column::SecretHash.eq(&hash))
            .one(&self.store.conn)
            .await?;
        self.intake_cache.integrations.put(hash, found.clone());
        Ok(found)
    }

    pub async fn intake_postback(
        &self,
        req: PostbackRequest,
    ) -> Result<IntakeOutcome, IntakeError> {
        let secret = req
            .secret
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let test_fire = req.test_fire_token.as_deref().filter(|_| secret.is_none());
        if secret.is_none() && test_fire.is_none() {
            return Err(IntakeError::Unauthorized(
                "a postback secret is required (secret= or X-Postback-Secret)",
            ));
        }

        // Resolve the URL's brand and offer first: an unknown one is a 404 whatever the secret.
        let named_program = match (&req.brand, &req.offer) {
            (Some(brand), Some(offer)) => match self.named_program(brand, offer).await? {
                Ok(p) => Some(p),
                Err(what) => return Err(IntakeError::NotFound(what)),
            },
            _ => None,
        };

        let found = match (secret, test_fire) {
            (Some(secret), _) => self.integration_by_secret(secret).await?,
            (None, Some(token)) => {
                match test_fire::verify(&self.test_fire_key(), token, now().timestamp()) {
                    Some(id) => {
                        integration::Entity::find_by_id(id)
                            .one(&self.store.conn)
                            .await?
                    }
                    None => {
                        return Err(IntakeError::Unauthorized(
                            "the test-fire token is invalid or expired",
                        ));
                    }
                }
            }
            (None, None) => None,
        };
        let integration =
            found
                .filter(|i| i.status == "active")
                .ok_or(IntakeError::Unauthorized(
                    "the postback secret is wrong or revoked",
                ))?;
        let tenant = TenantId::from_trusted(integration.tenant_id.clone());
        let program = match named_program {
            Some(p) if p.id == integration.program_id && p.tenant_id == integration.tenant_id => p,
            Some(_) => {
                return Err(IntakeError::Unauthorized(
                    "the postback secret does not belong to this offer",
                ));
            }
            None => scoped::<program::Entity>(&tenant)
                .filter(program::Column::Id.eq(&integration.program_id))
                .one(&self.store.conn)
                .await?
                .ok_or(IntakeError::NotFound("offer"))?,
        };

        let aliases: BTreeMap<String, String> = integration
            .param_aliases
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        let currency = Currency::parse(&program.currency).unwrap_or(Currency::USD);
        let redacted = redacted(&req.pairs);
        let raw_params =
            serde_json::to_string(&redacted).map_err(|e| IntakeError::Internal(e.to_string()))?;
        let row = |outcome: &str, http_status: i32| postback::Model {
            id: IdKind::Postback.generate(),
            tenant_id: tenant.to_string(),
            created_at: now(),
            integration_id: integration.id.clone(),
            program_id: program.id.clone(),
            txn_id: None,
            status_param: None,
            dedupe_key: None,
            raw_params: raw_params.clone(),
            source_ip: req.source_ip.clone(),
            method: req.method.clone(),
            http_status,
            outcome: outcome.to_owned(),
            reason: None,
            state: "done".to_owned(),
            conversion_id: None,
            duplicate_of: None,
            is_test: false,
            processed_at: None,
        };

        if test_fire.is_none()
            && let Err(e) = self.protect(&integration, &req)
        {
            let (status, reason) = match &e {
                IntakeError::Forbidden(why) => (403, why.clone()),
                IntakeError::RateLimited { .. } => (429, "rate limit exceeded".to_owned()),
                other => (500, format!("{other:?}")),
            };
            let mut log = row("rejected", status);
            log.reason = Some(reason);
            self.log_postback(log).await;
            return Err(e);
        }

        let params = match trcker_domain::postback::parse(&req.pairs, &aliases, currency) {
            // A test-fire is always a test, whatever its parameters say.
            Ok(p) => PostbackParams {
                test: p.test || test_fire.is_some(),
                ..p
            },
            Err(fields) => {
                let mut log = row("rejected", 422);
                log.reason = Some(
                    fields
                        .iter()
                        .map(|f| format!("{}: {}", f.field, f.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                );
                self.log_postback(log).await;
                return Err(IntakeError::Invalid(fields));
            }
        };

        let mut accepted = row("accepted", 200);
        accepted.txn_id = Some(params.txn_id.clone());
        accepted.status_param = Some(params.status.as_str().to_owned());
        accepted.dedupe_key = Some(dedupe_key(&program.id, &params));
        accepted.state = "received".to_owned();
        accepted.is_test = params.test;
        match self.inbox.insert(accepted.clone()).await? {
            Filed::New => {}
            Filed::Repeat => {
                let ctx = (&aliases, currency, &params);
                return self
                    .duplicate(&tenant, row("duplicate", 200), &accepted, ctx)
                    .await;
            }
            // A status the conversion cannot move to is refused now, with the
            // reason (the pipeline checks again, for postbacks that race).
            Filed::Refused {
                conversion_id,
                current,
            } => {
                let field = FieldError::new(
                    "status",
                    format!(
                        "conversion {conversion_id} for txn_id {} is {current}; it cannot become {}",
                        params.txn_id, params.status
                    ),
                );
                let mut log = row("rejected", 422);
                log.txn_id = Some(params.txn_id.clone());
                log.status_param = Some(params.status.as_str().to_owned());
                log.conversion_id = Some(conversion_id);
                log.reason = Some(format!("status: {}", field.message));
                self.log_postback(log).await;
                return Err(IntakeError::Invalid(vec![field]));
            }
        }
        // The inbox writer queues the attribute job with its group.
        Ok(IntakeOutcome::Accepted {
            postback_id: accepted.id,
        })
    }

    /// Adds a refused or repeated postback to the integration's log. Best effort:
    /// the merchant's answer is the same whether or not the log row is written.
    async fn log_postback(&self, row: postback::Model) {
        if let Err(e) = insert(&self.store.conn, row).await {
            tracing::warn!(error = %e, "could not write a postback log row");
        }
    }

    /// The integration's optional protections: IP allow-list, signature, rate limit.
    fn protect(
        &self,
        integration: &integration::Model,
        req: &PostbackRequest,
    ) -> Result<(), IntakeError> {
        if let Some(list) = integration.ip_allowlist.as_deref() {
            let cidrs: Vec<Cidr> = serde_json::from_str::<Vec<String>>(list)
                .unwrap_or_default()
                .iter()
                .filter_map(|c| Cidr::parse(c).ok())
                .collect();
            let ip = req.source_ip.as_deref().and_then(|ip| ip.parse().ok());
            if !protection::allowed(&cidrs, ip) {
                return Err(IntakeError::Forbidden(format!(
                    "source IP {} is not on this integration's allow-list",
                    req.source_ip.as_deref().unwrap_or("unknown")
                )));
            }
        }
        if integration.require_signature {
            let s = &req.signed;
            protection::verify(
                integration.secret_hash.as_bytes(),
                s.timestamp.as_deref(),
                s.signature.as_deref(),
                |ts| protection::signed_message(ts, &req.method, &s.path, &s.query, &s.body),
                now().timestamp(),
            )
            .map_err(|e| IntakeError::Forbidden(e.to_string()))?;
        }
        if let Some(limit) = integration.rate_limit_per_minute.filter(|l| *l > 0) {
            self.rate_limiter.check(&integration.id, limit as u32)?;
        }
        Ok(())
    }

    async fn duplicate(
        &self,
        tenant: &TenantId,
        mut log: postback::Model,
        attempted: &postback::Model,
        (aliases, currency, params): (&BTreeMap<String, String>, Currency, &PostbackParams),
    ) -> Result<IntakeOutcome, IntakeError> {
        let original = scoped::<postback::Entity>(tenant)
            .filter(postback::Column::DedupeKey.eq(attempted.dedupe_key.clone()))
            .one(&self.store.conn)
            .await?
            .ok_or_else(|| IntakeError::Internal("duplicate without an original".into()))?;
        // The first postback for a txn_id and status counts. A repeat that
        // disagrees with it (amount, payout, currency, click or coupon) is not a
        // retry: it is refused, never silently dropped or merged.
        let first_pairs: Vec<(String, String)> =
            serde_json::from_str(&original.raw_params).unwrap_or_default();
        if let Ok(first) = trcker_domain::postback::parse(&first_pairs, aliases, currency) {
            let differs: Vec<&str> = [
                ("amount", first.amount != params.amount),
                ("payout", first.payout != params.payout),
                ("currency", first.currency != params.currency),
                ("click_id", first.click_id != params.click_id),
                ("coupon_code", first.coupon_code != params.coupon_code),
            ]
            .into_iter()
            .filter_map(|(f, d)| d.then_some(f))
            .collect();
            if !differs.is_empty() {
                let msg = format!(
                    "txn_id {} with status {} was accepted already (postback {}) with other values for: {}. \
                     The first postback counts; to change a sale, send a refund for it and a new txn_id",
                    params.txn_id,
                    params.status,
                    original.id,
                    differs.join(", ")
                );
                log.outcome = "rejected".into();
                log.http_status = 409;
                log.txn_id = attempted.txn_id.clone();
                log.duplicate_of = Some(original.id.clone());
                log.reason = Some(msg.clone());
                self.log_postback(log).await;
                return Err(IntakeError::Conflict(msg));
            }
        }
        log.txn_id = attempted.txn_id.clone();
        log.status_param = attempted.status_param.clone();
        log.duplicate_of = Some(original.id.clone());
        log.conversion_id = original.conversion_id.clone();
        log.is_test = attempted.is_test;
        log.reason = Some(format!(
            "repeat of postback {} (same txn_id and status)",
            original.id
        ));
        self.log_postback(log).await;
        Ok(IntakeOutcome::Duplicate {
            postback_id: original.id,
            conversion_id: original.conversion_id,
        })
    }
}

/// A fixed one-minute window per integration, per process. Behind a load
/// balancer with N receivers, an integration may get up to N times its limit.
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: std::sync::Mutex<std::collections::HashMap<String, (i64, u32)>>,
}

impl RateLimiter {
    fn check(&self, key: &str, per_minute: u32) -> Result<(), IntakeError> {
        let now = now().timestamp();
        let minute = now / 60;
        let mut windows = self
            .windows
            .lock()
            .map_err(|_| IntakeError::Internal("rate limiter".into()))?;
        if windows.len() > 100_000 {
            windows.retain(|_, (m, _)| *m == minute);
        }
        let entry = windows.entry(key.to_owned()).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1 >= per_minute {
            return Err(IntakeError::RateLimited {
                retry_after_secs: (60 - now % 60).max(1) as u64,
            });
        }
        entry.1 += 1;
        Ok(())
    }
}
