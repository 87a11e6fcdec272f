//! Trcker's admin REST API: `/api/v1`, its OpenAPI 3 document
//! (`/api/v1/openapi.json`) and Swagger UI (`/api/docs`).
//!
//! One `XxxApi` struct per resource, explicit operation ids, one tag enum, one
//! error type with stable codes rendered as RFC 9457 problem+json. Handlers
//! authenticate, convert DTOs and call one use case; they hold no logic.

mod dto;
mod error;
mod resources;

use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::OpenApiService;
use trcker_services::Services;

pub use error::{ApiError, Problem};

/// The OpenAPI service (also used to write the committed spec).
pub fn openapi(public_url: &str) -> OpenApiService<resources::Apis, ()> {
    OpenApiService::new(resources::apis(), "Trcker admin API", env!("CARGO_PKG_VERSION"))
        .description(
            "Manage affiliate programs: tenants, programs, affiliates, integrations and conversions. \
             Authenticate with `Authorization: Bearer <token>`: the operator token creates tenants; \
             a tenant API key (shown once at creation) manages that tenant's resources. \
             Errors are RFC 9457 problem+json documents with a stable `code`.",
        )
        .server(format!("{}/api/v1", public_url.trim_end_matches('/')))
}

/// The API, to be nested at `/api/v1`: its resources and `/openapi.json`.
pub fn routes(services: Services) -> impl Endpoint {
    let api = openapi(services.public_base());
    Route::new()
        .at("/openapi.json", api.spec_endpoint())
        .nest("/", api)
        .data(services)
        .catch_all_error(error::catch_all)
}

/// Swagger UI, to be nested at `/api/docs`.
pub fn docs(public_url: &str) -> impl Endpoint + use<> {
    let html = openapi(public_url).swagger_ui_html();
    poem::endpoint::make_sync(move |_| poem::web::Html(html.clone()))
}
