//! Trcker's admin REST API: `/api/v1`, its OpenAPI 3 document
//! (`/api/v1/openapi.json`, committed as `docs/openapi.json`) and Swagger UI
//! (`/api/docs`).
//!
//! One file per resource, holding its `XxxApi` (with the area services it
//! calls injected), its DTOs and their conversions to and from the services'
//! types; explicit operation ids, one tag enum, and one error type whose codes
//! come from the table in [`problem`], which the receiver answers with too.
//! Handlers authenticate, convert and call one use case; they hold no logic.

mod affiliates;
mod api_keys;
mod audit;
mod auth;
pub mod client;
mod common;
mod conversions;
mod coupons;
mod error;
mod exchange_rates;
mod idempotency;
mod integrations;
mod ledger;
mod links;
mod payouts;
mod postbacks;
pub mod problem;
mod programs;
mod tenants;
mod tokens;

use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::{OpenApiService, Tags};
use trcker_services::Services;

pub use error::ApiError;

#[derive(Tags)]
enum ApiTags {
    /// Tenants (operator token) and a tenant's own settings.
    Tenants,
    /// A tenant's API keys.
    ApiKeys,
    /// Short-lived access tokens issued for an API key, and their signing keys.
    Auth,
    /// Who changed what, when.
    Audit,
    /// Affiliate programs (offers).
    Programs,
    /// Affiliates (partners).
    Affiliates,
    /// Merchant integrations: postback secrets and URLs.
    Integrations,
    /// Conversions attributed from postbacks.
    Conversions,
    /// Coupon codes that attribute sales without a click.
    Coupons,
    /// Tracking links (`/c/{code}`).
    Links,
    /// The ledger, manual adjustments, payout batches and payouts of approved balances.
    Payouts,
    /// Exchange rates for sales in other currencies than their offer's.
    ExchangeRates,
}

type Apis = (
    tenants::TenantsApi,
    api_keys::ApiKeysApi,
    tokens::TokensApi,
    audit::AuditApi,
    programs::ProgramsApi,
    affiliates::AffiliatesApi,
    integrations::IntegrationsApi,
    postbacks::PostbacksApi,
    links::LinksApi,
    coupons::CouponsApi,
    conversions::ConversionsApi,
    payouts::PayoutsApi,
    exchange_rates::ExchangeRatesApi,
    ledger::LedgerApi,
);

fn apis(s: &Services) -> Apis {
    let auth = auth::Authenticator(s.tenants.clone());
    (
        tenants::TenantsApi {
            tenants: s.tenants.clone(),
            auth: auth.clone(),
        },
        api_keys::ApiKeysApi {
            tenants: s.tenants.clone(),
            auth: auth.clone(),
        },
        tokens::TokensApi {
            tokens: s.tokens.clone(),
            auth: auth.clone(),
        },
        audit::AuditApi {
            audit: s.audit.clone(),
            auth: auth.clone(),
        },
        programs::ProgramsApi {
            programs: s.programs.clone(),
            auth: auth.clone(),
        },
        affiliates::AffiliatesApi {
            affiliates: s.affiliates.clone(),
            auth: auth.clone(),
        },
        integrations::IntegrationsApi {
            integrations: s.integrations.clone(),
            debugger: s.debugger.clone(),
            auth: auth.clone(),
        },
        postbacks::PostbacksApi {
            debugger: s.debugger.clone(),
            auth: auth.clone(),
        },
        links::LinksApi {
            links: s.links.clone(),
            auth: auth.clone(),
        },
        coupons::CouponsApi {
            links: s.links.clone(),
            auth: auth.clone(),
        },
        conversions::ConversionsApi {
            conversions: s.conversions.clone(),
            auth: auth.clone(),
        },
        payouts::PayoutsApi {
            payouts: s.payouts.clone(),
            auth: auth.clone(),
        },
        exchange_rates::ExchangeRatesApi {
            rates: s.rates.clone(),
            auth: auth.clone(),
        },
        ledger::LedgerApi {
            ledger: s.ledger.clone(),
            auth,
        },
    )
}

/// The OpenAPI service of the whole API.
fn openapi(services: &Services) -> OpenApiService<Apis, ()> {
    OpenApiService::new(apis(services), "Trcker admin API", env!("CARGO_PKG_VERSION"))
        .description(
            "Manage affiliate programs: tenants, programs, affiliates, integrations and conversions. \
             Authenticate with `Authorization: Bearer <token>`: the operator token creates tenants; \
             a tenant API key (shown once at creation) manages that tenant's resources, and so does \
             a short-lived access token issued for the key (`POST /auth/token`). \
             Errors are RFC 9457 problem+json documents with a stable `code` (docs/errors.md). \
             Every POST takes an `Idempotency-Key` header (1 to 255 visible ASCII characters): \
             a retry with the same key and request gets the first answer again for 24 hours \
             (marked `Idempotent-Replayed: true`); the same key with another request answers 422.",
        )
        .server(format!("{}/api/v1", services.settings.public_base()))
}

/// The API, to be nested at `/api/v1`: its resources and `/openapi.json`.
pub fn routes(services: &Services) -> impl Endpoint + use<> {
    let api = openapi(services);
    Route::new()
        .at("/openapi.json", api.spec_endpoint())
        .nest(
            "/",
            api.with(idempotency::Idempotent {
                tenants: services.tenants.clone(),
                keys: services.idempotency.clone(),
            }),
        )
        .catch_all_error(error::catch_all)
        .with(client::AuthGuard {
            failures: services.auth_failures.clone(),
            trusted_proxies: services.settings.trusted_proxies.clone(),
        })
}

/// Swagger UI, to be nested at `/api/docs`.
pub fn docs(services: &Services) -> impl Endpoint + use<> {
    let html = openapi(services).swagger_ui_html();
    poem::endpoint::make_sync(move |_| poem::web::Html(html.clone()))
}
