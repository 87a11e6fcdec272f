//! Trcker's use cases, between the HTTP edges and storage.
//!
//! The admin API, the receiver, the workers and the portal are thin: they parse
//! their input and call one function here. Everything that decides something
//! (who may see what, what a postback means, what a commission is) lives in this
//! crate or in `trcker-domain`.

pub mod admin;
pub mod auth;
pub mod catalog;
pub mod click_writer;
pub mod clicks;
pub mod debugger;
mod error;
pub mod inbox;
pub mod pipeline;
pub mod portal;
pub mod postbacks;
pub mod queue;
pub mod ttl_cache;
mod util;

use std::sync::Arc;

pub use error::{ServiceError, ServiceResult};
pub use queue::JobQueue;
pub use trcker_storage as storage;
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
    pub unique_click_window: std::time::Duration,
    /// Click IP addresses are erased after this many days (0: never stored).
    pub ip_retention_days: u32,
}

impl Settings {
    pub fn new(public_url: impl Into<String>, operator_token_hash: impl Into<String>) -> Self {
        Settings {
            public_url: public_url.into(),
            allow_private_targets: false,
            operator_token_hash: operator_token_hash.into(),
            unique_click_window: std::time::Duration::from_secs(24 * 3600),
            ip_retention_days: 30,
        }
    }
}

/// The handle every edge holds: the database, the job queue and the settings.
#[derive(Clone)]
pub struct Services {
    pub store: Store,
    pub queue: JobQueue,
    pub settings: Arc<Settings>,
    pub(crate) http: reqwest::Client,
    /// For calls to our own public receiver (test-fire).
    pub(crate) self_http: reqwest::Client,
    pub(crate) rate_limiter: Arc<postbacks::RateLimiter>,
    pub inbox: inbox::InboxWriter,
    pub(crate) click_state: Arc<clicks::ClickState>,
    pub(crate) intake_cache: Arc<postbacks::IntakeCache>,
    pub(crate) endpoint_gates: Arc<pipeline::notify::EndpointGates>,
    /// The batch writer of clicks (flushed on shutdown).
    pub clicks: click_writer::ClickWriter,
}

impl Services {
    /// Builds the services; must run inside a Tokio runtime (it starts the
    /// inbox writer).
    pub fn new(store: Store, settings: Settings) -> Result<Self, ServiceError> {
        let queue = JobQueue::new(store.pool.clone());
        let inbox = inbox::InboxWriter::start(store.clone(), queue.clone())?;
        let store_for_inbox = store.clone();
        let unique_window = settings.unique_click_window;
        let http = pipeline::notify::http_client(settings.allow_private_targets)?;
        let self_http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| ServiceError::Internal(format!("http client: {e}")))?;
        Ok(Services {
            store,
            queue,
            settings: Arc::new(settings),
            http,
            self_http,
            rate_limiter: Arc::default(),
            inbox,
            click_state: Arc::new(clicks::ClickState::new(unique_window)),
            intake_cache: Arc::default(),
            endpoint_gates: Arc::default(),
            clicks: click_writer::ClickWriter::start(store_for_inbox),
        })
    }

    /// Forgets every cached lookup (links, postback integrations): called after
    /// each change through this process's admin API.
    pub fn invalidate_caches(&self) {
        self.click_state.invalidate();
        self.intake_cache.clear();
    }

    /// `public_url` without a trailing slash.
    pub fn public_base(&self) -> &str {
        self.settings.public_url.trim_end_matches('/')
    }
}
