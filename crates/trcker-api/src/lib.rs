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
mod deliveries;
mod endpoints;
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
mod reports;
mod rules;
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
    /// Where affiliates and the tenant are told of conversions: postback
    /// URL templates and signed webhooks.
    Endpoints,
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
    /// Clicks, conversions, revenue, commission and EPC by day, program, affiliate, sub-ID or event.
    Reports,
}

type Apis = (
    tenants::TenantsApi,
    api_keys::ApiKeysApi,
    tokens::TokensApi,
    audit::AuditApi,
    programs::ProgramsApi,
    affiliates::AffiliatesApi,
    integrations::IntegrationsApi,
    // Notifications: poem-openapi takes up to 16 APIs in one tuple.
    (endpoints::EndpointsApi, deliveries::DeliveriesApi),
    postbacks::PostbacksApi,
    links::LinksApi,
    coupons::CouponsApi,
    conversions::ConversionsApi,
    payouts::PayoutsApi,
    exchange_rates::ExchangeRatesApi,
    ledger::LedgerApi,
    reports::ReportsApi,
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
        (
            endpoints::EndpointsApi {
                endpoints: s.endpoints.clone(),
                auth: auth.clone(),
            },
            deliveries::DeliveriesApi {
                deliveries: s.deliveries.clone(),
                auth: auth.clone(),
            },
        ),
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
            auth: auth.clone(),
        },
        reports::ReportsApi {
            reports: s.reports.clone(),
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
    let spec = document(&api.spec());
    let methods = std::sync::Arc::new(methods_by_path(&spec));
    Route::new()
        .at(
            "/openapi.json",
            poem::endpoint::make_sync(move |_| {
                poem::Response::builder()
                    .content_type("application/json; charset=utf-8")
                    .body(spec.clone())
            }),
        )
        .nest(
            "/",
            api.with(idempotency::Idempotent {
                tenants: services.tenants.clone(),
                keys: services.idempotency.clone(),
            }),
        )
        .catch_all_error(error::catch_all)
        .around(move |ep, req| {
            let methods = methods.clone();
            async move {
                let path = req.uri().path().to_owned();
                let mut resp = poem::IntoResponse::into_response(ep.call(req).await?);
                if resp.status() == poem::http::StatusCode::METHOD_NOT_ALLOWED
                    && let Some(allow) = allowed(&methods, &path)
                    && let Ok(v) = poem::http::HeaderValue::from_str(allow)
                {
                    resp.headers_mut().insert(poem::http::header::ALLOW, v);
                }
                Ok(resp)
            }
        })
        .with(client::AuthGuard {
            failures: services.auth_failures.clone(),
            trusted_proxies: services.settings.trusted_proxies.clone(),
        })
}

/// The document as served: poem-openapi's, with what it does not say by
/// itself: an optional property may be null (Trcker writes null for an
/// absent value, and reads null as absent), and each field's and
/// parameter's rules from [`rules`].
fn document(spec: &str) -> String {
    let mut doc: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
    let inputs = request_schemas(&doc);
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        for (name, schema) in schemas.iter_mut() {
            if inputs.contains(name) {
                state_rules(name, schema);
            }
        }
        schemas.insert(
            rules::TIME_ZONE_SCHEMA.to_owned(),
            rules::time_zone_schema(),
        );
        for schema in schemas.values_mut() {
            nullable_optionals(schema);
        }
    }
    let operations = doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.iter_mut())
        .filter_map(|(path, ops)| Some((path.clone(), ops.as_object_mut()?)))
        .flat_map(|(path, ops)| ops.values_mut().map(move |op| (path.clone(), op)));
    for (path, op) in operations {
        let Some(params) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) else {
            continue;
        };
        for p in params {
            let name = p["name"].as_str().unwrap_or_default().to_owned();
            let place = p["in"].as_str().unwrap_or_default().to_owned();
            if let Some(rule) = rules::param(&path, &place, &name)
                && let (Some(schema), Some(rule)) = (p["schema"].as_object_mut(), rule.as_object())
            {
                schema.extend(rule.clone());
            }
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| spec.to_owned())
}

/// The names of the component schemas a request body holds, directly or
/// through references.
fn request_schemas(doc: &serde_json::Value) -> std::collections::BTreeSet<String> {
    fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(o) => {
                if let Some(r) = o.get("$ref").and_then(|r| r.as_str()) {
                    out.extend(r.rsplit('/').next().map(str::to_owned));
                }
                o.values().for_each(|v| refs(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut todo = Vec::new();
    for ops in doc["paths"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
    {
        for op in ops.as_object().into_iter().flat_map(|o| o.values()) {
            refs(&op["requestBody"], &mut todo);
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            refs(&doc["components"]["schemas"][&name], &mut todo);
        }
    }
    seen
}

/// Adds to each property of a request schema what its parser enforces.
fn state_rules(name: &str, schema: &mut serde_json::Value) {
    let Some(props) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for (field, prop) in props.iter_mut() {
        let Some(rule) = rules::body_field(name, field) else {
            continue;
        };
        if rule.get("$ref").is_some() {
            let mut replaced = rule;
            if let Some(d) = prop.get("description") {
                replaced["description"] = d.clone();
            }
            *prop = replaced;
        } else if let (Some(p), Some(rule)) = (prop.as_object_mut(), rule.as_object()) {
            p.extend(rule.clone());
        }
    }
}

fn nullable_optionals(schema: &mut serde_json::Value) {
    let required: Vec<String> = schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let Some(props) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for (name, prop) in props.iter_mut() {
        if required.contains(name) {
            continue;
        }
        if let Some(target) = prop.get("$ref").cloned() {
            // A reference takes no siblings (OpenAPI 3.0): wrap it.
            let mut wrapped = serde_json::json!({"allOf": [{"$ref": target}], "nullable": true});
            if let Some(d) = prop.get("description") {
                wrapped["description"] = d.clone();
            }
            *prop = wrapped;
        } else if let Some(o) = prop.as_object_mut() {
            o.insert("nullable".to_owned(), true.into());
            // A closed set names null too, or it would exclude it.
            if let Some(words) = o.get_mut("enum").and_then(|e| e.as_array_mut()) {
                words.push(serde_json::Value::Null);
            }
        }
    }
}

/// Each path template of the document (`affiliates/{id}`, by segment) with
/// its methods, for the `Allow` header a 405 must carry.
fn methods_by_path(spec: &str) -> Vec<(Vec<String>, String)> {
    let doc: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
    let Some(paths) = doc["paths"].as_object() else {
        return Vec::new();
    };
    paths
        .iter()
        .map(|(path, ops)| {
            let segments = path
                .trim_matches('/')
                .split('/')
                .map(str::to_owned)
                .collect();
            let mut methods: Vec<String> = ops
                .as_object()
                .map(|o| o.keys().map(|m| m.to_uppercase()).collect())
                .unwrap_or_default();
            methods.sort();
            (segments, methods.join(", "))
        })
        .collect()
}

/// The methods of the template that matches `path` (the one with the most
/// literal segments where several do).
fn allowed<'a>(table: &'a [(Vec<String>, String)], path: &str) -> Option<&'a str> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    table
        .iter()
        .filter(|(t, _)| {
            t.len() == segments.len()
                && t.iter()
                    .zip(&segments)
                    .all(|(t, s)| t.starts_with('{') || t == s)
        })
        .max_by_key(|(t, _)| t.iter().filter(|s| !s.starts_with('{')).count())
        .map(|(_, m)| m.as_str())
}

/// Swagger UI, to be nested at `/api/docs`.
pub fn docs(services: &Services) -> impl Endpoint + use<> {
    let html = openapi(services).swagger_ui_html();
    poem::endpoint::make_sync(move |_| poem::web::Html(html.clone()))
}
