//! Postback intake: verify, persist, enqueue, answer. No business logic here:
//! attribution and commission happen in the pipeline.
//!
//! The answer is truthful: `accepted` only once the postback is durably stored
//! (by the inbox writer, [`inbox`], which queues its job right after; the
//! sweeper queues it if we crash in between), `duplicate` for a repeat of the
//! same txn_id and status, and an error for anything we did not take. Every
//! refusal of a known integration is logged with its reason.

mod inbox;
mod rate_limit;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use trcker_domain::FieldError;
use trcker_domain::money::Currency;
use trcker_domain::postback::{PostbackParams, redacted};
use trcker_domain::protection::{self, Cidr, SignatureError};
use trcker_domain::secret::{hash_secret, test_fire};
use trcker_storage::entities::postback::{Outcome, State};
use trcker_storage::entities::*;
use trcker_storage::ids::{ConversionId, PostbackId, ProgramId};
use trcker_storage::queue::JobQueue;
use trcker_storage::sea_orm::{ColumnTrait, QueryFilter};
use trcker_storage::{Store, TenantId, batch::insert, lookup, scoped, scoped_by_id};

use crate::areas::Area;
use crate::cache::Cache;
use crate::error::{StoreError, from_store};
use inbox::{Filed, InboxWriter};
use rate_limit::RateLimiter;

/// Why a postback was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("a postback secret is required (secret= or X-Postback-Secret)")]
    MissingSecret,
    #[error("the postback secret is wrong or revoked")]
    WrongSecret,
    #[error("the test-fire token is invalid or expired")]
    BadTestFireToken,
    #[error("the postback secret does not belong to this offer")]
    SecretForOtherOffer,
    #[error("unknown brand in the postback URL")]
    UnknownBrand,
    #[error("unknown offer in the postback URL")]
    UnknownOffer,
    #[error("{0}")]
    IpNotAllowed(String),
    #[error("{0}")]
    BadSignature(SignatureError),
    #[error("{}", suspended(.0.as_deref()))]
    TenantSuspended(Option<String>),
    #[error("this integration's rate limit is exceeded")]
    RateLimited { retry_after_secs: u64 },
    /// Each bad parameter, named.
    #[error("invalid postback parameters")]
    Invalid(Vec<FieldError>),
    /// A repeat of an accepted txn_id and status with other values.
    #[error("{0}")]
    ConflictingDuplicate(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(IntakeError);

fn suspended(reason: Option<&str>) -> String {
    match reason {
        Some(r) => {
            format!("the operator has suspended this tenant ({r}); its postbacks are refused")
        }
        None => "the operator has suspended this tenant; its postbacks are refused".to_owned(),
    }
}

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
        postback_id: PostbackId,
    },
    Duplicate {
        postback_id: PostbackId,
        conversion_id: Option<ConversionId>,
    },
}

/// The integration a postback authenticated as, with its program.
struct Sender {
    integration: integration::Model,
    /// The hash of the secret the postback carried: the integration's
    /// current one, or its previous one during a rotation's overlap (the
    /// key of its signature).
    secret_hash: String,
    program: program::Model,
    aliases: BTreeMap<String, String>,
    test_fire: bool,
}

/// Whether a secret with this hash opens the integration at `now`: its
/// current secret, or the one a rotation replaced, until the overlap ends.
fn accepts(integration: &integration::Model, hash: &str, now: DateTime<Utc>) -> bool {
    integration.secret_hash == hash
        || (integration.previous_secret_hash.as_deref() == Some(hash)
            && integration
                .previous_secret_until
                .is_some_and(|until| now < until))
}

/// A known integration's postback, for its log rows.
struct Logged<'a> {
    sender: &'a Sender,
    req: &'a PostbackRequest,
    raw_params: String,
    /// When the postback was received.
    at: DateTime<Utc>,
}

impl Logged<'_> {
    /// A log row with this outcome; its state is `done` unless set.
    fn row(&self, outcome: Outcome, http_status: i32) -> postback::Model {
        postback::Model {
            id: PostbackId::generate(),
            tenant_id: self.sender.integration.tenant_id.clone(),
            created_at: self.at,
            integration_id: self.sender.integration.id.clone(),
            program_id: self.sender.program.id.clone(),
            txn_id: None,
            status_param: None,
            dedupe_key: None,
            raw_params: self.raw_params.clone(),
            source_ip: self.req.source_ip.clone(),
            method: self.req.method.clone(),
            http_status,
            outcome,
            reason: None,
            state: State::Done,
            conversion_id: None,
            duplicate_of: None,
            is_test: false,
            processed_at: None,
        }
    }

    fn rejected(&self, http_status: i32, reason: String) -> postback::Model {
        postback::Model {
            reason: Some(reason),
            ..self.row(Outcome::Rejected, http_status)
        }
    }
}

/// The dedupe key of an accepted postback: one per program, txn_id, status
/// and event (a `sale`'s key leaves the event out, as keys did before events
/// were told apart).
fn dedupe_key(program_id: &ProgramId, p: &PostbackParams) -> String {
    if p.event == "sale" {
        format!("{program_id}\u{1f}{}\u{1f}{}", p.txn_id, p.status)
    } else {
        format!(
            "{program_id}\u{1f}{}\u{1f}{}\u{1f}{}",
            p.txn_id, p.status, p.event
        )
    }
}

/// The event a dedupe key was made for (`sale` when it names none).
pub(crate) fn event_of_dedupe_key(key: &str) -> &str {
    key.split('\u{1f}').nth(3).unwrap_or("sale")
}

/// The program a (brand, offer) names, or which of the two is unknown.
type ProgramsBySlugs = Cache<(String, String), Result<program::Model, &'static str>>;

#[derive(Clone)]
pub struct IntakeService {
    area: Area,
    inbox: InboxWriter,
    programs: Arc<ProgramsBySlugs>,
    /// The integration of a secret's hash.
    integrations: Arc<Cache<String, Option<integration::Model>>>,
    /// Whether a tenant is suspended, and why.
    suspensions: Arc<Cache<TenantId, Option<Option<String>>>>,
    rate_limiter: Arc<RateLimiter>,
}

impl IntakeService {
    /// Starts the inbox writer (on a thread of its own) and its job pusher
    /// (on the current Tokio runtime).
    pub(crate) fn new(area: Area, queue: JobQueue) -> Result<Self, StoreError> {
        Ok(IntakeService {
            inbox: InboxWriter::start(area.store.clone(), queue)?,
            programs: Arc::new(Cache::new(area.changes.clone())),
            integrations: Arc::new(Cache::new(area.changes.clone())),
            suspensions: Arc::new(Cache::new(area.changes.clone())),
            rate_limiter: Arc::default(),
            area,
        })
    }

    fn store(&self) -> &Store {
        &self.area.store
    }

    /// Waits (up to `bound`) until the jobs of every accepted postback are
    /// queued (at shutdown, before the pool closes); false if some were not.
    pub async fn drain(&self, bound: std::time::Duration) -> bool {
        self.inbox.drain(bound).await
    }

    /// Closes the inbox writer's own connections (at shutdown).
    pub async fn close(&self) {
        self.inbox.close().await
    }

    /// Takes a postback: accepted (durably stored), a duplicate, or refused.
    pub async fn intake(&self, req: PostbackRequest) -> Result<IntakeOutcome, IntakeError> {
        self.intake_at(req, Utc::now()).await
    }

    /// Takes a postback as if received at `at`: history imported from
    /// elsewhere (`trcker seed`), attributed against the clicks before it.
    pub async fn intake_at(
        &self,
        req: PostbackRequest,
        at: DateTime<Utc>,
    ) -> Result<IntakeOutcome, IntakeError> {
        let sender = self.authenticate(&req).await?;
        let logged = Logged {
            at,
            raw_params: serde_json::to_string(&redacted(&req.pairs))
                .map_err(|e| StoreError::Internal(e.to_string()))?,
            sender: &sender,
            req: &req,
        };
        if let Some(reason) = self.suspension(&sender.integration.tenant_id).await? {
            let e = IntakeError::TenantSuspended(reason);
            self.log(logged.rejected(403, e.to_string())).await;
            return Err(e);
        }
        if !sender.test_fire
            && let Err(e) = self.protect(&sender, &req)
        {
            let status = if matches!(e, IntakeError::RateLimited { .. }) {
                429
            } else {
                403
            };
            let reason = match &e {
                IntakeError::RateLimited { .. } => "rate limit exceeded".to_owned(),
                other => other.to_string(),
            };
            self.log(logged.rejected(status, reason)).await;
            return Err(e);
        }
        let currency = sender.program.currency.0;
        let params = match trcker_domain::postback::parse(&req.pairs, &sender.aliases, currency) {
            // A test-fire is always a test, whatever its parameters say.
            Ok(p) => PostbackParams {
                test: p.test || sender.test_fire,
                ..p
            },
            Err(fields) => {
                self.log(logged.rejected(422, describe(&fields))).await;
                return Err(IntakeError::Invalid(fields));
            }
        };
        self.file(&logged, params).await
    }

    /// The integration a postback's secret (or test-fire token) names, and
    /// its program: the one the URL names, if it names one.
    async fn authenticate(&self, req: &PostbackRequest) -> Result<Sender, IntakeError> {
        let secret = req
            .secret
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let token = req.test_fire_token.as_deref().filter(|_| secret.is_none());
        if secret.is_none() && token.is_none() {
            return Err(IntakeError::MissingSecret);
        }
        // Resolve the URL's brand and offer first: an unknown one is a 404 whatever the secret.
        let named = match (&req.brand, &req.offer) {
            (Some(brand), Some(offer)) => Some(self.named_program(brand, offer).await?),
            _ => None,
        };
        let secret_hash = secret.map(hash_secret).unwrap_or_default();
        let found = match (secret, token) {
            (Some(_), _) => {
                let now = Utc::now();
                self.integration_by_secret(&secret_hash)
                    .await?
                    .filter(|i| accepts(i, &secret_hash, now))
            }
            (None, Some(token)) => {
                let key = self.area.settings.test_fire_key();
                let id = test_fire::verify(&key, token, Utc::now().timestamp())
                    .ok_or(IntakeError::BadTestFireToken)?;
                lookup::integration_by_test_fire_token(&id)
                    .one(&self.store().conn)
                    .await?
            }
            (None, None) => None,
        };
        let integration = found
            .filter(|i| i.status == integration::Status::Active)
            .ok_or(IntakeError::WrongSecret)?;
        let program = match named {
            Some(p) if p.id == integration.program_id && p.tenant_id == integration.tenant_id => p,
            Some(_) => return Err(IntakeError::SecretForOtherOffer),
            None => {
                scoped_by_id::<program::Entity>(&integration.tenant_id, &integration.program_id)
                    .one(&self.store().conn)
                    .await?
                    .ok_or(IntakeError::UnknownOffer)?
            }
        };
        Ok(Sender {
            secret_hash: if secret.is_some() {
                secret_hash
            } else {
                integration.secret_hash.clone()
            },
            aliases: integration
                .param_aliases
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default(),
            integration,
            program,
            test_fire: token.is_some(),
        })
    }

    /// The program a postback URL names.
    async fn named_program(&self, brand: &str, offer: &str) -> Result<program::Model, IntakeError> {
        let key = (brand.to_owned(), offer.to_owned());
        let found = match self.programs.get(&key) {
            Some(hit) => hit,
            None => {
                let found = crate::programs::by_slugs(self.store(), brand, offer)
                    .await?
                    .map(|(_, p)| p);
                self.programs.put(key, found.clone());
                found
            }
        };
        found.map_err(|what| match what {
            "brand" => IntakeError::UnknownBrand,
            _ => IntakeError::UnknownOffer,
        })
    }

    /// `Some(reason)` when the tenant is suspended.
    async fn suspension(&self, tenant: &TenantId) -> Result<Option<Option<String>>, IntakeError> {
        if let Some(hit) = self.suspensions.get(tenant) {
            return Ok(hit);
        }
        let found = lookup::tenant(tenant)
            .one(&self.store().conn)
            .await?
            .filter(|t| t.status == tenant::Status::Suspended)
            .map(|t| t.suspended_reason);
        self.suspensions.put(tenant.clone(), found.clone());
        Ok(found)
    }

    /// The integration whose secret (current or previous) has this hash.
    async fn integration_by_secret(
        &self,
        hash: &str,
    ) -> Result<Option<integration::Model>, IntakeError> {
        if let Some(hit) = self.integrations.get(hash) {
            return Ok(hit);
        }
        let found = lookup::integration_by_secret_hash(&self.store().conn, hash).await?;
        self.integrations.put(hash.to_owned(), found.clone());
        Ok(found)
    }

    /// The integration's optional protections: IP allow-list, signature, rate limit.
    fn protect(&self, sender: &Sender, req: &PostbackRequest) -> Result<(), IntakeError> {
        let integration = &sender.integration;
        if let Some(list) = integration.ip_allowlist.as_deref() {
            let cidrs: Vec<Cidr> = serde_json::from_str::<Vec<String>>(list)
                .unwrap_or_default()
                .iter()
                .filter_map(|c| Cidr::parse(c).ok())
                .collect();
            let ip = req.source_ip.as_deref().and_then(|ip| ip.parse().ok());
            if !protection::allowed(&cidrs, ip) {
                return Err(IntakeError::IpNotAllowed(format!(
                    "source IP {} is not on this integration's allow-list",
                    req.source_ip.as_deref().unwrap_or("unknown")
                )));
            }
        }
        if integration.require_signature {
            let s = &req.signed;
            protection::verify(
                sender.secret_hash.as_bytes(),
                s.timestamp.as_deref(),
                s.signature.as_deref(),
                |ts| protection::signed_message(ts, &req.method, &s.path, &s.query, &s.body),
                Utc::now().timestamp(),
            )
            .map_err(IntakeError::BadSignature)?;
        }
        if let Some(limit) = integration.rate_limit_per_minute.filter(|l| *l > 0) {
            self.rate_limiter
                .check(integration.id.as_str(), limit as u32)
                .map_err(|retry_after_secs| IntakeError::RateLimited { retry_after_secs })?;
        }
        Ok(())
    }

    /// Hands an accepted postback to the inbox writer and answers with what
    /// it made of it.
    async fn file(
        &self,
        logged: &Logged<'_>,
        params: PostbackParams,
    ) -> Result<IntakeOutcome, IntakeError> {
        let program_id = &logged.sender.program.id;
        let mut accepted = logged.row(Outcome::Accepted, 200);
        accepted.txn_id = Some(params.txn_id.clone());
        accepted.status_param = Some(params.status.as_str().to_owned());
        accepted.dedupe_key = Some(dedupe_key(program_id, &params));
        accepted.state = State::Received;
        accepted.is_test = params.test;
        match self.inbox.insert(accepted.clone()).await? {
            // The inbox writer queues the attribute job with its group.
            Filed::New => Ok(IntakeOutcome::Accepted {
                postback_id: accepted.id,
            }),
            Filed::Repeat => self.duplicate(logged, &accepted, &params).await,
            // A status the conversion cannot move to is refused now, with the
            // reason (the pipeline checks again, for postbacks that race).
            Filed::Refused {
                conversion_id,
                current,
            } => {
                let field = FieldError::new(
                    "status",
                    format!(
                        "conversion {conversion_id} for txn_id {}{} is {current}; it cannot become {}",
                        params.txn_id,
                        if params.event == "sale" {
                            String::new()
                        } else {
                            format!(" (event {})", params.event)
                        },
                        params.status
                    ),
                );
                let mut log = logged.rejected(422, format!("status: {}", field.message));
                log.txn_id = Some(params.txn_id.clone());
                log.status_param = Some(params.status.as_str().to_owned());
                log.conversion_id = Some(conversion_id);
                self.log(log).await;
                Err(IntakeError::Invalid(vec![field]))
            }
        }
    }

    /// A repeat of an accepted txn_id and status: a duplicate if it carries the
    /// same values, refused if it disagrees (it is not a retry).
    async fn duplicate(
        &self,
        logged: &Logged<'_>,
        attempted: &postback::Model,
        params: &PostbackParams,
    ) -> Result<IntakeOutcome, IntakeError> {
        let tenant: &TenantId = &attempted.tenant_id;
        let original = scoped::<postback::Entity>(tenant)
            .filter(postback::Column::DedupeKey.eq(attempted.dedupe_key.clone()))
            .one(&self.store().conn)
            .await?
            .ok_or_else(|| StoreError::Internal("duplicate without an original".into()))?;
        let currency = logged.sender.program.currency.0;
        if let Some(differs) = differing(&original, params, &logged.sender.aliases, currency) {
            let msg = format!(
                "txn_id {} with status {} was accepted already (postback {}) with other values for: {differs}. \
                 The first postback counts; to change a sale, send a refund for it and a new txn_id",
                params.txn_id, params.status, original.id,
            );
            let mut log = logged.rejected(409, msg.clone());
            log.txn_id = attempted.txn_id.clone();
            log.duplicate_of = Some(original.id.clone());
            self.log(log).await;
            return Err(IntakeError::ConflictingDuplicate(msg));
        }
        let mut log = logged.row(Outcome::Duplicate, 200);
        log.txn_id = attempted.txn_id.clone();
        log.status_param = attempted.status_param.clone();
        log.duplicate_of = Some(original.id.clone());
        log.conversion_id = original.conversion_id.clone();
        log.is_test = attempted.is_test;
        log.reason = Some(format!(
            "repeat of postback {} (same txn_id and status)",
            original.id
        ));
        self.log(log).await;
        Ok(IntakeOutcome::Duplicate {
            postback_id: original.id,
            conversion_id: original.conversion_id,
        })
    }

    /// Adds a refused or repeated postback to the integration's log. Best effort:
    /// the merchant's answer is the same whether or not the log row is written.
    async fn log(&self, row: postback::Model) {
        if let Err(e) = insert(self.store().writer(), row).await {
            tracing::warn!(error = %e, "could not write a postback log row");
        }
    }
}

/// The fields in which a repeat disagrees with the postback that counted
/// (amount, payout, currency, click, coupon), if it does.
fn differing(
    original: &postback::Model,
    params: &PostbackParams,
    aliases: &BTreeMap<String, String>,
    currency: Currency,
) -> Option<String> {
    let pairs: Vec<(String, String)> =
        serde_json::from_str(&original.raw_params).unwrap_or_default();
    let first = trcker_domain::postback::parse(&pairs, aliases, currency).ok()?;
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
    (!differs.is_empty()).then(|| differs.join(", "))
}

/// Bad fields as one line of the postback log.
fn describe(fields: &[FieldError]) -> String {
    fields
        .iter()
        .map(|f| format!("{}: {}", f.field, f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use trcker_storage::ids::{IntegrationId, ProgramId};

    #[test]
    fn a_previous_secret_opens_only_until_its_overlap_ends() {
        let now = Utc::now();
        let mut i = integration::Model {
            id: IntegrationId::generate(),
            tenant_id: TenantId::generate(),
            created_at: now,
            program_id: ProgramId::generate(),
            name: "shop".into(),
            secret_hash: "new".into(),
            secret_hint: "abcd".into(),
            status: integration::Status::Active,
            param_aliases: None,
            ip_allowlist: None,
            require_signature: false,
            rate_limit_per_minute: None,
            previous_secret_hash: Some("old".into()),
            previous_secret_until: Some(now + chrono::Duration::seconds(1)),
            revoked_at: None,
        };
        assert!(accepts(&i, "new", now));
        assert!(accepts(&i, "old", now));
        assert!(!accepts(&i, "old", now + chrono::Duration::seconds(1)));
        assert!(!accepts(&i, "other", now));
        i.previous_secret_until = None;
        assert!(!accepts(&i, "old", now));
    }
}
