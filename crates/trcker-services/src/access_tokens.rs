//! Short-lived access tokens for the admin API: a JWT issued for a tenant's
//! API key (`POST /api/v1/auth/token`), so that a client can hand out a
//! credential that expires on its own instead of the key itself.
//!
//! A token is HS256-signed under one of the installation's signing keys
//! (`signing_keys`: a `kid` and a salt; the key is derived from the salt and
//! the operator token's hash, so the database alone cannot mint tokens).
//! Verification pins the algorithm and checks `kid`, `exp`, `nbf`, `iss`
//! (the public URL) and `aud` ([`AUDIENCE`]); then the API key it names must
//! still be active, so revoking the key stops its tokens at once. The
//! operator rotates the signing key: the newest unretired key signs, and a
//! retired one keeps verifying until every token it signed has expired.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use trcker_domain::secret::random_alnum;
use trcker_storage::TenantId;
use trcker_storage::entities::signing_key::{self, Column as C, Entity};
use trcker_storage::sea_orm::sea_query::Expr;
use trcker_storage::sea_orm::{
    ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
};

use crate::areas::Area;
use crate::auth::{AccessError, Caller};
use crate::error::{Invalid, StoreError, from_store};

/// The `aud` of every access token.
pub const AUDIENCE: &str = "trcker-admin-api";
/// A token's lifetime when the request names none.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// The shortest and longest lifetime a request may ask for.
pub const MIN_LIFETIME: Duration = Duration::from_secs(60);
pub const MAX_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;
/// How long a process trusts its copy of the signing keys; another
/// process's rotation is seen within this time (or at once, when a token
/// names a key this process does not know).
const RELOAD_EVERY: Duration = Duration::from_secs(60);
/// An unknown `kid` reloads the keys at most this often, so that forged
/// tokens cannot make every request read the database.
const UNKNOWN_KID_RELOAD: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("the access token could not be signed")]
    Signing,
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(TokenError);

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    /// The API key's id.
    sub: String,
    /// The tenant's id.
    tid: TenantId,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
}

/// A token just issued.
pub struct IssuedToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub lifetime: Duration,
}

/// A signing key as the operator sees it (never its material).
pub struct SigningKey {
    pub kid: String,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
    /// When its tokens stop verifying; `None` while it signs.
    pub verifies_until: Option<DateTime<Utc>>,
}

/// Who a genuine token speaks for; the key must still be checked.
pub(crate) struct Bearer {
    pub tenant: TenantId,
    pub key_id: String,
}

#[derive(Default)]
struct Ring {
    keys: Vec<signing_key::Model>,
    loaded: Option<Instant>,
    unknown_reload: Option<Instant>,
}

#[derive(Clone)]
pub struct AccessTokens {
    area: Area,
    ring: Arc<tokio::sync::Mutex<Ring>>,
}

/// How long after its retirement a key still verifies: the longest token
/// it may have signed, plus the time another process may have gone on
/// signing with it before seeing the rotation.
fn verifying_window() -> chrono::Duration {
    chrono::Duration::from_std(MAX_LIFETIME + RELOAD_EVERY).unwrap_or_default()
}

fn verifies_until(key: &signing_key::Model) -> Option<DateTime<Utc>> {
    key.retired_at.map(|t| t + verifying_window())
}

impl AccessTokens {
    pub(crate) fn new(area: Area) -> Self {
        AccessTokens {
            area,
            ring: Arc::default(),
        }
    }

    fn issuer(&self) -> &str {
        self.area.settings.public_base()
    }

    fn material(&self, key: &signing_key::Model) -> Vec<u8> {
        self.area.settings.access_token_key(&key.kid, &key.salt)
    }

    async fn load(&self, ring: &mut Ring) -> Result<(), DbErr> {
        ring.keys = Entity::find()
            .order_by_desc(C::CreatedAt)
            .order_by_desc(C::Kid)
            .all(&self.area.store.conn)
            .await?;
        ring.loaded = Some(Instant::now());
        Ok(())
    }

    /// This process's copy of the keys, newest first, reloaded when stale.
    async fn keys(&self) -> Result<Vec<signing_key::Model>, DbErr> {
        let mut ring = self.ring.lock().await;
        if ring.loaded.is_none_or(|t| t.elapsed() >= RELOAD_EVERY) {
            self.load(&mut ring).await?;
        }
        Ok(ring.keys.clone())
    }

    /// The key named `kid`, reloading once (at most every
    /// [`UNKNOWN_KID_RELOAD`]) if this process does not know it.
    async fn key(&self, kid: &str) -> Result<Option<signing_key::Model>, DbErr> {
        if let Some(k) = self.keys().await?.into_iter().find(|k| k.kid == kid) {
            return Ok(Some(k));
        }
        let mut ring = self.ring.lock().await;
        if ring
            .unknown_reload
            .is_some_and(|t| t.elapsed() < UNKNOWN_KID_RELOAD)
        {
            return Ok(None);
        }
        ring.unknown_reload = Some(Instant::now());
        self.load(&mut ring).await?;
        Ok(ring.keys.iter().find(|k| k.kid == kid).cloned())
    }

    /// The key that signs: the newest unretired one, made on first use.
    async fn signing_key(&self) -> Result<signing_key::Model, DbErr> {
        if let Some(k) = self
            .keys()
            .await?
            .into_iter()
            .find(|k| k.retired_at.is_none())
        {
            return Ok(k);
        }
        let made = self.make_key().await?;
        let mut ring = self.ring.lock().await;
        self.load(&mut ring).await?;
        Ok(made)
    }

    async fn make_key(&self) -> Result<signing_key::Model, DbErr> {
        let key = signing_key::Model {
            kid: format!("sk_{}", random_alnum(20)),
            salt: random_alnum(43),
            created_at: Utc::now().trunc_subsecs(6),
            retired_at: None,
        };
        Entity::insert(signing_key::ActiveModel {
            kid: Set(key.kid.clone()),
            salt: Set(key.salt.clone()),
            created_at: Set(key.created_at),
            retired_at: Set(None),
        })
        .exec_without_returning(&self.area.store.conn)
        .await?;
        Ok(key)
    }

    /// Issues a token for the API key the caller authenticated with, valid
    /// for `lifetime_secs` (default [`DEFAULT_LIFETIME`]).
    pub async fn issue(
        &self,
        caller: &Caller,
        lifetime_secs: Option<u64>,
    ) -> Result<IssuedToken, TokenError> {
        let (tenant, key_id) = caller.api_key()?;
        let lifetime = match lifetime_secs {
            None => DEFAULT_LIFETIME,
            Some(s) if (MIN_LIFETIME.as_secs()..=MAX_LIFETIME.as_secs()).contains(&s) => {
                Duration::from_secs(s)
            }
            Some(_) => {
                return Err(Invalid::field(
                    "expires_in",
                    format!(
                        "must be {} to {} seconds",
                        MIN_LIFETIME.as_secs(),
                        MAX_LIFETIME.as_secs()
                    ),
                )
                .into());
            }
        };
        let key = self.signing_key().await?;
        let now = Utc::now();
        let expires_at = now + chrono::Duration::from_std(lifetime).unwrap_or_default();
        let claims = Claims {
            iss: self.issuer().to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: key_id.to_owned(),
            tid: tenant.clone(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: expires_at.timestamp(),
            jti: random_alnum(22),
        };
        let header = Header {
            kid: Some(key.kid.clone()),
            ..Header::new(Algorithm::HS256)
        };
        let signer =
            EncodingKey::from_secret(&self.material(&key)).map_err(|_| TokenError::Signing)?;
        let token =
            jsonwebtoken::encode(&header, &claims, &signer).map_err(|_| TokenError::Signing)?;
        Ok(IssuedToken {
            token,
            expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or(expires_at),
            lifetime,
        })
    }

    /// The tenant and key a genuine, current token speaks for; `None` for
    /// anything else (bad shape, another algorithm, unknown or expired
    /// `kid`, bad signature, expired, not yet valid, other issuer or
    /// audience).
    pub(crate) async fn verify(&self, token: &str) -> Result<Option<Bearer>, DbErr> {
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Ok(None);
        };
        if header.alg != Algorithm::HS256 {
            return Ok(None);
        }
        let Some(kid) = header.kid else {
            return Ok(None);
        };
        let Some(key) = self.key(&kid).await? else {
            return Ok(None);
        };
        if verifies_until(&key).is_some_and(|until| until <= Utc::now()) {
            return Ok(None);
        }
        let Ok(verifier) = DecodingKey::from_secret(&self.material(&key)) else {
            return Ok(None);
        };
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_audience(&[AUDIENCE]);
        v.set_issuer(&[self.issuer()]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let Ok(data) = jsonwebtoken::decode::<Claims>(token, &verifier, &v) else {
            return Ok(None);
        };
        Ok(Some(Bearer {
            tenant: data.claims.tid,
            key_id: data.claims.sub,
        }))
    }

    /// Makes a new signing key and retires every other (operator only):
    /// new tokens are signed with it at once in this process, within
    /// a minute in others; tokens of the retired keys verify until they
    /// expire.
    pub async fn rotate(&self, caller: &Caller) -> Result<SigningKey, TokenError> {
        caller.operator()?;
        let made = self.make_key().await?;
        Entity::update_many()
            .col_expr(C::RetiredAt, Expr::value(Some(made.created_at)))
            .filter(C::RetiredAt.is_null())
            .filter(C::Kid.ne(made.kid.as_str()))
            .exec(self.area.store.writer())
            .await?;
        let mut ring = self.ring.lock().await;
        self.load(&mut ring).await?;
        tracing::info!(kid = %made.kid, "access token signing key rotated");
        Ok(view(&made))
    }

    /// Every signing key, newest first (operator only).
    pub async fn signing_keys(&self, caller: &Caller) -> Result<Vec<SigningKey>, TokenError> {
        caller.operator()?;
        let mut ring = self.ring.lock().await;
        self.load(&mut ring).await?;
        Ok(ring.keys.iter().map(view).collect())
    }
}

fn view(key: &signing_key::Model) -> SigningKey {
    SigningKey {
        kid: key.kid.clone(),
        created_at: key.created_at,
        retired_at: key.retired_at,
        verifies_until: verifies_until(key),
    }
}
