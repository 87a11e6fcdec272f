//! `/api-keys`: a tenant's own API keys. An admin key makes, lists and
//! revokes them; a read key lists them.

use chrono::{DateTime, Utc};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use trcker_services::storage::entities::api_key;
use trcker_services::tenants::{NewApiKey, TenantService, scope_word};

use crate::ApiTags;
use crate::auth::{Authenticator, BearerAuth};
use crate::common::{Created, Text};
use crate::error::ApiError;

pub struct ApiKeysApi {
    pub tenants: TenantService,
    pub auth: Authenticator,
}

#[OpenApi(tag = "ApiTags::ApiKeys")]
impl ApiKeysApi {
    /// Make an API key: `admin` (everything) or `read` (every read; any
    /// change answers 403 `read-only-key`). Its token is in this answer
    /// only: Trcker keeps its hash.
    #[oai(path = "/api-keys", method = "post", operation_id = "create_api_key")]
    async fn create(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        body: Json<NewApiKeyIn>,
    ) -> Result<Created<ApiKeyCreatedOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let created = self
            .tenants
            .create_own_api_key(
                &caller,
                NewApiKey {
                    name: body.0.name.0,
                    scope: body
                        .0
                        .scope
                        .map_or_else(|| "admin".to_owned(), String::from),
                },
            )
            .await?;
        Ok(Created::Created(Json(ApiKeyCreatedOut {
            token: created.token,
            key: created.key.into(),
        })))
    }

    /// The tenant's API keys, revoked ones too, newest first, by cursor.
    #[oai(path = "/api-keys", method = "get", operation_id = "list_api_keys")]
    async fn list(
        &self,
        auth: BearerAuth,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200; default 50.
        limit: Query<Option<u64>>,
    ) -> Result<Json<ApiKeyPage>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        let page = self
            .tenants
            .own_api_keys(&caller, cursor.0, limit.0)
            .await?;
        Ok(Json(ApiKeyPage {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    /// One API key (never its token).
    #[oai(path = "/api-keys/:id", method = "get", operation_id = "get_api_key")]
    async fn get(&self, auth: BearerAuth, id: Path<String>) -> Result<Json<ApiKeyOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(self.tenants.own_api_key(&caller, &id.0).await?.into()))
    }

    /// Revoke an API key at once: its next call answers 401. Revoking a
    /// revoked key changes nothing.
    #[oai(
        path = "/api-keys/:id/revoke",
        method = "post",
        operation_id = "revoke_api_key"
    )]
    async fn revoke(
        &self,
        auth: BearerAuth,
        /// Makes a retry safe: the same key and request get the first answer
        /// again for 24 hours (1 to 255 visible ASCII characters).
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        id: Path<String>,
    ) -> Result<Json<ApiKeyOut>, ApiError> {
        let caller = self.auth.caller(&auth).await?;
        Ok(Json(
            self.tenants
                .revoke_own_api_key(&caller, &id.0)
                .await?
                .into(),
        ))
    }
}

#[derive(Debug, Object)]
pub struct NewApiKeyIn {
    /// What the key is for ("shop backend").
    pub name: Text,
    /// `admin` (default) or `read`.
    pub scope: Option<Text>,
}

#[derive(Debug, Object)]
pub struct ApiKeyOut {
    pub id: String,
    pub name: String,
    /// `admin` or `read`.
    pub scope: String,
    /// How the token starts and ends (`trk_…9f2c`), to tell keys apart.
    pub hint: String,
    pub created_at: DateTime<Utc>,
    /// When the key was last used (kept to the minute); null if never.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Null while the key works.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<api_key::Model> for ApiKeyOut {
    fn from(k: api_key::Model) -> Self {
        ApiKeyOut {
            id: k.id.into(),
            name: k.name,
            scope: scope_word(k.scope).to_owned(),
            hint: format!("trk_…{}", k.key_hint),
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct ApiKeyCreatedOut {
    #[oai(flatten)]
    pub key: ApiKeyOut,
    /// The key's token. Shown once: store it now.
    pub token: String,
}

#[derive(Debug, Object)]
pub struct ApiKeyPage {
    pub items: Vec<ApiKeyOut>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}
