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
use trcker_domain::secret::{hash_secret, test_fire};
use trcker_storage::entities::*;
use trcker_storage::{TenantId, is_unique_violation, scoped, sea_orm};

use crate::queue::AttributeJob;
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

/// The dedupe key of an accepted postback: one per program, txn_id and status.
fn dedupe_key(program_id: &str, p: &PostbackParams) -> String {
    format!("{program_id}\u{1f}{}\u{1f}{}", p.txn_id, p.status)
}

impl Services {
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
            (Some(brand), Some(offer)) => {
                let tenant = self
                    .tenant_by_slug(brand)
                    .await?
                    .ok_or(IntakeError::NotFound("brand"))?;
                let program = self
                    .program_by_slug(&TenantId::from_trusted(tenant.id), offer)
                    .await?
                    .ok_or(IntakeError::NotFound("offer"))?;
                Some(program)
            }
            _ => None,
        };

        let found = match (secret, test_fire) {
            (Some(secret), _) => {
                integration::Entity::find()
                    .filter(integration::Column::SecretHash.eq(hash_secret(secret)))
                    .one(&self.store.conn)
                    .await?
            }
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
                // The log is best effort: the merchant's answer is the 422 either way.
                if let Err(e) = insert(&self.store.conn, log).await {
                    tracing::warn!(error = %e, "could not log a rejected postback");
                }
                return Err(IntakeError::Invalid(fields));
            }
        };

        let mut accepted = row("accepted", 200);
        accepted.txn_id = Some(params.txn_id.clone());
        accepted.status_param = Some(params.status.as_str().to_owned());
        accepted.dedupe_key = Some(dedupe_key(&program.id, &params));
        accepted.state = "received".to_owned();
        accepted.is_test = params.test;
        match insert(&self.store.conn, accepted.clone()).await {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return self
                    .duplicate(&tenant, row("duplicate", 200), &accepted)
                    .await;
            }
            Err(e) => return Err(e.into()),
        }
        let job = AttributeJob {
            tenant_id: tenant.to_string(),
            postback_id: accepted.id.clone(),
        };
        if let Err(e) = self.queue.push(&job).await {
            // Stored is stored: the sweeper enqueues it shortly.
            tracing::warn!(error = %e, postback_id = %accepted.id, "enqueue failed; the sweeper will pick the postback up");
        }
        Ok(IntakeOutcome::Accepted {
            postback_id: accepted.id,
        })
    }

    async fn duplicate(
        &self,
        tenant: &TenantId,
        mut log: postback::Model,
        attempted: &postback::Model,
    ) -> Result<IntakeOutcome, IntakeError> {
        let original = scoped::<postback::Entity>(tenant)
            .filter(postback::Column::DedupeKey.eq(attempted.dedupe_key.clone()))
            .one(&self.store.conn)
            .await?
            .ok_or_else(|| IntakeError::Internal("duplicate without an original".into()))?;
        log.txn_id = attempted.txn_id.clone();
        log.status_param = attempted.status_param.clone();
        log.duplicate_of = Some(original.id.clone());
        log.conversion_id = original.conversion_id.clone();
        log.is_test = attempted.is_test;
        log.reason = Some(format!(
            "repeat of postback {} (same txn_id and status)",
            original.id
        ));
        if let Err(e) = insert(&self.store.conn, log).await {
            tracing::warn!(error = %e, "could not log a duplicate postback");
        }
        Ok(IntakeOutcome::Duplicate {
            postback_id: original.id,
            conversion_id: original.conversion_id,
        })
    }
}
