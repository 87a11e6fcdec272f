//! Bearer authentication of every admin API operation.

use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;
use trcker_services::auth::Caller;
use trcker_services::tenants::TenantService;

use crate::error::ApiError;

/// `Authorization: Bearer <operator token or tenant API key>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer")]
pub struct BearerAuth(Bearer);

/// Turns a bearer token into a [`Caller`]; every API struct holds one.
#[derive(Clone)]
pub struct Authenticator(pub TenantService);

impl Authenticator {
    pub async fn caller(&self, auth: &BearerAuth) -> Result<Caller, ApiError> {
        Ok(self.0.authenticate(&auth.0.token).await?)
    }
}
