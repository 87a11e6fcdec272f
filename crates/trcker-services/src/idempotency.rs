//! `Idempotency-Key` on the admin API's POSTs (Stripe's convention): a
//! retry with the same key and request gets the first answer again instead
//! of doing the work twice; the same key with another request is refused;
//! keys are kept [`KEEP`]. Keys belong to the tenant that sent them (any
//! of its API keys), or to the operator.

use chrono::{Duration, Utc};
use trcker_storage::entities::idempotency_key;
use trcker_storage::idempotency::{self, Claim};

use crate::areas::Area;
use crate::auth::Caller;
use crate::error::StoreError;

/// How long a key's answer is kept.
pub const KEEP: Duration = Duration::hours(24);
/// A request that claimed a key and gave no answer within this time died
/// with its process: a retry runs it again.
const ABANDONED: Duration = Duration::minutes(5);
/// The longest key taken (Stripe's limit).
pub const MAX_KEY_LEN: usize = 255;

/// What a POST with a key is to do.
#[derive(Debug)]
pub enum Replay {
    /// Run it, then [`IdempotencyService::answer`] or
    /// [`IdempotencyService::release`].
    Run,
    /// Answer this again.
    Answer(idempotency_key::Model),
    /// The first request with this key has not answered yet.
    Running,
    /// The key was used for another request.
    Mismatch,
}

#[derive(Clone)]
pub struct IdempotencyService {
    area: Area,
}

/// Whether a key is one Trcker takes: 1 to 255 visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

fn owner(caller: &Caller) -> String {
    match caller {
        Caller::Operator => "operator".to_owned(),
        Caller::Tenant { tenant, .. } => tenant.to_string(),
    }
}

impl IdempotencyService {
    pub(crate) fn new(area: Area) -> Self {
        IdempotencyService { area }
    }

    /// Claims `key` for a request with this fingerprint.
    pub async fn claim(
        &self,
        caller: &Caller,
        key: &str,
        fingerprint: &str,
    ) -> Result<Replay, StoreError> {
        let claim = idempotency::claim(
            &self.area.store.conn,
            &owner(caller),
            key,
            fingerprint,
            Utc::now(),
            KEEP,
            ABANDONED,
        )
        .await?;
        Ok(match claim {
            Claim::New => Replay::Run,
            Claim::Answered(row) => Replay::Answer(row),
            Claim::Running => Replay::Running,
            Claim::Mismatch => Replay::Mismatch,
        })
    }

    /// Keeps the answer of a request that claimed `key`.
    pub async fn answer(
        &self,
        caller: &Caller,
        key: &str,
        status: u16,
        content_type: Option<String>,
        body: String,
    ) -> Result<(), StoreError> {
        Ok(idempotency::answer(
            &self.area.store.conn,
            &owner(caller),
            key,
            status,
            content_type,
            body,
        )
        .await?)
    }

    /// Gives `key` up: its request failed in a way a retry may mend.
    pub async fn release(&self, caller: &Caller, key: &str) -> Result<(), StoreError> {
        Ok(idempotency::release(&self.area.store.conn, &owner(caller), key).await?)
    }
}
