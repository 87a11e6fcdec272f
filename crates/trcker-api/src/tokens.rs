//! `/auth`: short-lived access tokens issued for an API key, and the
//! operator's signing keys behind them (`trcker_services::access_tokens`).

use chrono::{DateTime, Utc};
use poem_openapi::param::Header;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use trcker_services::access_tokens::{AccessTokens, IssuedToken, SigningKey};

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::common::Created;
use crate::error::ApiError;

pub struct TokensApi {
    pub tokens: AccessTokens,
    pub auth: Authenticator,
}

#[OpenApi(tag = "ApiTags::Auth")]
impl TokensApi {
    /// Issue an access token for the API key this call authenticates with
    /// (not for another access token): a JWT to send as
    /// `Authorization: Bearer <access_token>` instead of the key, with the
    /// key's scope, until it expires. Revoking the key ends its tokens at
    /// once.
    #[oai(
        path = "/auth/token",
        method = "post",
        operation_id = "create_access_token"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        body: Json<AccessTokenIn>,
    ) -> Result<Created<AccessTokenOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let issued = self.tokens.issue(&caller, body.0.expires_in).await?;
        Ok(Created::Created(Json(issued.into())))
    }

    /// The keys that sign access tokens, newest first (operator only).
    #[oai(
        path = "/auth/signing-keys",
        method = "get",
        operation_id = "list_signing_keys"
    )]
    async fn keys(&self, auth: BearerAuth) -> Result<Json<Vec<SigningKeyOut>>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let keys = self.tokens.signing_keys(&caller).await?;
        Ok(Json(keys.into_iter().map(Into::into).collect()))
    }

    /// Rotate the signing key (operator only): a new key signs from now on
    /// (in other processes of the installation within a minute), and the
    /// tokens of the retired keys keep working until they expire.
    #[oai(
        path = "/auth/signing-keys/rotate",
        method = "post",
        operation_id = "rotate_signing_key"
    )]
    async fn rotate(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
    ) -> Result<Created<SigningKeyOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Created::Created(Json(
            self.tokens.rotate(&caller).await?.into(),
        )))
    }
}

/// What token to issue.
#[derive(Object)]
struct AccessTokenIn {
    /// Lifetime in seconds, 60 to 3600; default 900.
    expires_in: Option<u64>,
}

/// An access token (a JWT, HS256).
#[derive(Object)]
struct AccessTokenOut {
    access_token: String,
    /// Always `Bearer`.
    token_type: String,
    /// Seconds from now until it expires.
    expires_in: u64,
    expires_at: DateTime<Utc>,
}

impl From<IssuedToken> for AccessTokenOut {
    fn from(t: IssuedToken) -> Self {
        AccessTokenOut {
            access_token: t.token,
            token_type: "Bearer".into(),
            expires_in: t.lifetime.as_secs(),
            expires_at: t.expires_at,
        }
    }
}

/// A key that signs or signed access tokens (never its material).
#[derive(Object)]
struct SigningKeyOut {
    /// The tokens' `kid`.
    kid: String,
    created_at: DateTime<Utc>,
    /// When a newer key took over; absent for the key that signs.
    retired_at: Option<DateTime<Utc>>,
    /// When the tokens it signed stop verifying; absent while it signs.
    verifies_until: Option<DateTime<Utc>>,
}

impl From<SigningKey> for SigningKeyOut {
    fn from(k: SigningKey) -> Self {
        SigningKeyOut {
            kid: k.kid,
            created_at: k.created_at,
            retired_at: k.retired_at,
            verifies_until: k.verifies_until,
        }
    }
}
