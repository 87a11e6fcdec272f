//! Trcker's use cases, between the HTTP edges and storage: one module per area
//! of the product, each with its own service type and its own error enum.
//!
//! The admin API, the receiver, the workers and the portal are thin: they
//! parse their input and call one use case of one area. Everything that
//! decides something (who may see what, what a postback means, what a
//! commission is) lives here or in `trcker-domain`. [`Services`] is the plain
//! bundle of the areas, built in one place ([`Services::new`]); no area module
//! knows it.

pub mod access_tokens;
pub mod affiliates;
pub mod audit;
pub mod auth;
mod cache;
pub mod clicks;
pub mod conversions;
mod csv;
pub mod debugger;
pub mod deliveries;
pub mod endpoints;
mod error;
pub mod exchange_rates;
pub mod guard;
pub mod idempotency;
mod input;
pub mod intake;
pub mod integrations;
pub mod ledger;
pub mod links;
pub mod payouts;
pub mod pipeline;
pub mod portal;
pub mod programs;
pub mod reports;
pub mod tenants;

use std::sync::Arc;
use std::time::Duration;

pub use cache::Changes;
pub use error::{Invalid, StoreError};
pub use trcker_storage as storage;
pub use trcker_storage::queue::JobQueue;
pub use trcker_storage::{Store, TenantId};

/// What the use cases need to know about their installation.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base of generated links and postback URLs, e.g. `https://track.example.com`.
    pub public_url: String,
    /// Lets notifications reach loopback and private addresses (local testing only).
    pub allow_private_targets: bool,
    /// SHA-256 of the operator token.
    pub operator_token_hash: String,
    /// Repeat clicks of a visitor on a link within this window are not unique.
    pub unique_click_window: Duration,
    /// Click IP addresses are erased after this many days (0: never stored).
    pub ip_retention_days: u32,
    /// Failed authentications an address may make in a minute (`guard`).
    pub auth_failures_per_minute: u32,
    /// Failed notification attempts in a row that disable an endpoint.
    pub endpoint_failure_limit: u32,
    /// The load balancers and proxies whose forwarding headers name the client.
    pub trusted_proxies: Vec<trcker_domain::protection::Cidr>,
    /// How long clicks, postbacks and deliveries are kept.
    pub retention: pipeline::retention::Retention,
    /// The time hold periods end by.
    pub clock: Clock,
}

/// The time the schedules that run over days go by (hold periods, the
/// notification retries, a rotated webhook secret's overlap): the system's
/// clock, which a test moves forward instead of waiting a month.
#[derive(Debug, Clone, Default)]
pub struct Clock(Arc<std::sync::atomic::AtomicI64>);

impl Clock {
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        let ahead = self.0.load(std::sync::atomic::Ordering::Relaxed);
        chrono::Utc::now() + chrono::Duration::milliseconds(ahead)
    }

    /// Moves this clock forward (it never goes back).
    pub fn advance(&self, by: chrono::Duration) {
        let ms = by.num_milliseconds().max(0);
        self.0.fetch_add(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Settings {
    pub fn new(public_url: impl Into<String>, operator_token_hash: impl Into<String>) -> Self {
        Settings {
            public_url: public_url.into(),
            allow_private_targets: false,
            operator_token_hash: operator_token_hash.into(),
            unique_click_window: Duration::from_secs(24 * 3600),
            ip_retention_days: 30,
            auth_failures_per_minute: guard::MAX_FAILURES,
            endpoint_failure_limit: pipeline::notify::DEFAULT_FAILURE_LIMIT,
            trusted_proxies: Vec::new(),
            retention: Default::default(),
            clock: Clock::default(),
        }
    }

    /// `public_url` without a trailing slash.
    pub fn public_base(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }

    /// The key of test-fire tokens: derived from the operator token's hash, so
    /// every node of an installation shares it.
    pub fn test_fire_key(&self) -> Vec<u8> {
        trcker_domain::secret::hash_secret(&format!(
            "trcker test-fire\0{}",
            self.operator_token_hash
        ))
        .into_bytes()
    }

    /// The signing secret of webhook endpoint `endpoint_id`: derived from the
    /// operator token's hash (which no database holds) and the endpoint's
    /// salt, so a copy of the database cannot sign as Trcker.
    pub fn webhook_secret(
        &self,
        endpoint_id: &str,
        salt: &str,
    ) -> trcker_domain::webhook::WebhookSecret {
        trcker_domain::webhook::WebhookSecret::derive(&self.operator_token_hash, endpoint_id, salt)
    }

    /// The key of access tokens signed under `kid`: derived from the
    /// operator token's hash (which no database holds) and the key's salt.
    pub fn access_token_key(&self, kid: &str, salt: &str) -> Vec<u8> {
        trcker_domain::secret::hash_secret(&format!(
            "trcker access tokens\0{}\0{kid}\0{salt}",
            self.operator_token_hash
        ))
        .into_bytes()
    }
}

/// Every area of the product, on one database and queue.
#[derive(Clone)]
pub struct Services {
    pub tenants: tenants::TenantService,
    /// The admin API's access tokens and their signing keys.
    pub tokens: access_tokens::AccessTokens,
    pub idempotency: idempotency::IdempotencyService,
    /// Addresses that keep failing to authenticate (API and receiver).
    pub auth_failures: Arc<guard::AuthFailures>,
    pub audit: audit::AuditService,
    pub programs: programs::ProgramService,
    pub affiliates: affiliates::AffiliateService,
    /// Where affiliates and the tenant are told of conversions.
    pub endpoints: endpoints::EndpointService,
    /// The delivery log and replays.
    pub deliveries: deliveries::DeliveryService,
    pub links: links::LinkService,
    pub integrations: integrations::IntegrationService,
    pub conversions: conversions::ConversionService,
    pub payouts: payouts::PayoutService,
    pub rates: exchange_rates::RateService,
    pub reports: reports::ReportService,
    pub ledger: ledger::LedgerService,
    pub debugger: debugger::DebuggerService,
    pub intake: intake::IntakeService,
    pub clicks: clicks::ClickService,
    pub portal: portal::PortalService,
    pub pipeline: pipeline::Pipeline,
    pub store: Store,
    pub queue: JobQueue,
    pub settings: Arc<Settings>,
}

impl Services {
    /// Builds every area; must run inside a Tokio runtime (it starts the
    /// inbox writer and the click writer).
    pub fn new(store: Store, settings: Settings) -> Result<Self, StoreError> {
        let settings = Arc::new(settings);
        let queue = JobQueue::new(store.pool.clone());
        // Changes through this process's admin API empty the caches of clicks
        // and intake at once.
        let area = areas::Area {
            store: store.clone(),
            settings: settings.clone(),
            changes: Changes::default(),
        };
        let pipeline = pipeline::Pipeline::new(store.clone(), queue.clone(), settings.clone())?;
        let tokens = access_tokens::AccessTokens::new(area.clone());
        Ok(Services {
            tenants: tenants::TenantService::new(area.clone(), tokens.clone()),
            tokens,
            idempotency: idempotency::IdempotencyService::new(area.clone()),
            auth_failures: Arc::new(guard::AuthFailures::new(settings.auth_failures_per_minute)),
            audit: audit::AuditService::new(area.clone()),
            programs: programs::ProgramService::new(area.clone()),
            affiliates: affiliates::AffiliateService::new(area.clone()),
            endpoints: endpoints::EndpointService::new(area.clone(), pipeline.clone()),
            deliveries: deliveries::DeliveryService::new(area.clone(), pipeline.clone()),
            links: links::LinkService::new(area.clone()),
            integrations: integrations::IntegrationService::new(area.clone()),
            conversions: conversions::ConversionService::new(area.clone(), pipeline.clone()),
            payouts: payouts::PayoutService::new(area.clone(), pipeline.clone()),
            rates: exchange_rates::RateService::new(area.clone()),
            reports: reports::ReportService::new(area.clone()),
            ledger: ledger::LedgerService::new(area.clone()),
            debugger: debugger::DebuggerService::new(area.clone(), queue.clone())?,
            intake: intake::IntakeService::new(area.clone(), queue.clone())?,
            clicks: clicks::ClickService::new(area.clone()),
            portal: portal::PortalService::new(area),
            pipeline,
            store,
            queue,
            settings,
        })
    }
}

mod areas {
    use std::sync::Arc;

    use trcker_storage::Store;

    use crate::{Changes, Settings};

    /// What every area service holds: the database, the installation's
    /// settings, and the record of admin changes that empties the caches.
    #[derive(Clone)]
    pub(crate) struct Area {
        pub store: Store,
        pub settings: Arc<Settings>,
        pub changes: Changes,
    }
}
