//! The `trcker` binary's library: configuration and [`App`], which assembles
//! the roles (admin API, receiver, portal, workers) on one database.
//!
//! `main` stays thin; tests build an [`App`] on port 0 and talk to it over HTTP.

pub mod config;
mod http;

use http::BodyLimit;
pub mod operator;
mod telemetry;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Endpoint, EndpointExt, Request, Response, Route, get, handler};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use trcker_services::{Services, Settings};
use trcker_storage::Store;

pub use config::{Config, Loaded};
pub use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Storage(#[from] trcker_storage::StorageError),
    #[error("{0}")]
    Service(#[from] trcker_services::StoreError),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("operator token file {0}: {1}")]
    TokenFile(String, std::io::Error),
    #[error("{0}")]
    Config(String),
}

/// Which roles a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roles {
    /// Admin API, receiver, portal and workers.
    All,
    /// Workers only (`trcker worker`).
    Workers,
    /// Admin API, receiver and portal, without workers (`trcker web`): the
    /// stateless HTTP nodes of a scale-out deployment, beside `trcker worker`
    /// processes on the same PostgreSQL.
    Web,
}

/// How the operator token was set up at this start.
#[derive(Debug, Clone)]
pub enum OperatorToken {
    /// From `TRCKER_OPERATOR_TOKEN`.
    FromEnvironment,
    /// Generated now; shown this once.
    Generated(SecretString),
    /// Generated at an earlier start; only its hash is kept.
    Stored,
}

const TOKEN_HASH_FILE: &str = "operator_token.sha256";

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn operator_token(config: &Config) -> Result<(String, OperatorToken), AppError> {
    if let Some(token) = &config.operator_token {
        return Ok((
            sha256_hex(token.expose_secret()),
            OperatorToken::FromEnvironment,
        ));
    }
    let dir = &config.data_dir;
    let path = dir.join(TOKEN_HASH_FILE);
    let file_err = |e| AppError::TokenFile(path.display().to_string(), e);
    if let Ok(hash) = std::fs::read_to_string(&path) {
        return Ok((hash.trim().to_owned(), OperatorToken::Stored));
    }
    std::fs::create_dir_all(dir).map_err(file_err)?;
    let token = format!("op_{}", trcker_domain::secret::random_alnum(40));
    write_private(&path, &sha256_hex(&token)).map_err(file_err)?;
    Ok((
        sha256_hex(&token),
        OperatorToken::Generated(SecretString::from(token)),
    ))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

#[handler]
fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: whether this process can do its work: the database answers,
/// the job queue's tables answer, and the schema is the one this version
/// expects. 200 when all hold; 503 naming each check that failed.
#[handler]
async fn readyz(services: poem::web::Data<&Services>) -> Response {
    use trcker_services::pipeline::attribute::AttributeJob;
    use trcker_storage::queue::Job;
    let store = &services.store;
    let database = if store.ping().await {
        Ok(())
    } else {
        Err("unreachable".to_owned())
    };
    let queue = services
        .queue
        .oldest_open_job(AttributeJob::QUEUE)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let migrations = match store.pending_migrations().await {
        Ok(pending) if pending.is_empty() => Ok(()),
        Ok(pending) => Err(format!("pending: {}", pending.join(", "))),
        Err(e) => Err(e.to_string()),
    };
    let checks = [
        ("database", database),
        ("queue", queue),
        ("migrations", migrations),
    ];
    let ready = checks.iter().all(|(_, c)| c.is_ok());
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "checks": checks
            .iter()
            .map(|(name, c)| (name.to_string(), serde_json::Value::from(match c {
                Ok(()) => "ok".to_owned(),
                Err(why) => why.clone(),
            })))
            .collect::<serde_json::Map<_, _>>(),
    });
    Response::builder()
        .status(if ready {
            poem::http::StatusCode::OK
        } else {
            poem::http::StatusCode::SERVICE_UNAVAILABLE
        })
        .content_type("application/json")
        .header(poem::http::header::CACHE_CONTROL, "no-store")
        .body(body.to_string())
}

/// `GET /`: what this server is, and where to go from here.
#[handler]
fn front_page() -> poem::web::Html<&'static str> {
    poem::web::Html(FRONT_PAGE)
}

const FRONT_PAGE: &str = concat!(
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
    "<title>Trcker</title></head><body>\n",
    "<h1>Trcker</h1>\n<p>Multi-tenant affiliate tracking: clicks, postbacks, commissions.</p>\n<ul>\n",
    "<li><a href=\"/api/docs\">Admin API documentation</a> (Swagger UI)</li>\n",
    "<li><a href=\"/api/v1/openapi.json\">OpenAPI document</a></li>\n",
    "<li><a href=\"/healthz\">Health</a>, <a href=\"/readyz\">readiness</a> and <a href=\"/metrics\">metrics</a></li>\n",
    "</ul>\n<p>Affiliates sign in at <code>/portal/&lt;brand&gt;</code>.</p>\n</body></html>\n",
);

/// Gives each request its id (the sender's `X-Request-Id` when sane, else
/// a fresh one), runs it inside a `request` span carrying that id, so that
/// every log line it causes names it, and answers with the id in
/// `X-Request-Id` (and, in a problem+json answer, in its `request_id`);
/// counts and times the request for the metrics and, at
/// debug level, logs its method, path, status and duration. The query
/// string is never logged: postback URLs carry their secret there. One
/// layer for all of it: each layer around the routes moves every request
/// and response once more.
async fn access_log<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    use tracing::Instrument;
    let route = telemetry::route_of(req.uri().path());
    let started = std::time::Instant::now();
    let id = trcker_domain::ids::request_id(
        req.headers()
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok()),
    );
    let span = tracing::info_span!("request", request_id = %id);
    let logged = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| (req.method().clone(), loggable_path(req.uri().path())));
    let header = poem::http::HeaderValue::from_str(&id).ok();
    let mut resp =
        trcker_api::problem::with_request_id(id, next.get_response(req).instrument(span.clone()))
            .await;
    route.record(started.elapsed(), resp.status());
    if let Some(value) = header {
        resp.headers_mut().insert(X_REQUEST_ID, value);
    }
    if let Some((method, path)) = logged {
        span.in_scope(|| {
            tracing::debug!(%method, %path, status = resp.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
        });
    }
    Ok(resp)
}

/// The header that carries a request's id, both ways.
const X_REQUEST_ID: &str = "x-request-id";

/// A path as the access log shows it: a secret that travels in a path (the
/// portal's invitation token) is replaced.
fn loggable_path(path: &str) -> String {
    if let Some(rest) = path.strip_prefix("/portal/")
        && let Some((brand, token)) = rest.split_once("/invite/")
        && !token.is_empty()
    {
        return format!("/portal/{brand}/invite/[redacted]");
    }
    path.to_owned()
}

/// Binds a listen address; the acceptor and the address it got.
async fn bind(listen: &str) -> Result<(impl Acceptor + use<>, SocketAddr), AppError> {
    let failed = |e| AppError::Listen(listen.to_owned(), e);
    let acceptor = TcpListener::bind(listen.to_owned())
        .into_acceptor()
        .await
        .map_err(failed)?;
    let addr = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .ok_or_else(|| failed(std::io::Error::other("no local address")))?;
    Ok((acceptor, addr))
}

/// The largest admin API request body: a bulk review of a thousand ids
/// is about 40 KiB, so this leaves room without letting one request pin
/// memory.
const ADMIN_API_MAX_BODY: usize = 256 * 1024;
/// The largest portal form: an email, a password and a token.
const PORTAL_MAX_BODY: usize = 16 * 1024;

/// Routes that take no body.
fn no_body() -> BodyLimit {
    BodyLimit {
        max: 0,
        refuse: api_refusal,
    }
}

/// An admin API refusal of a body: problem+json.
fn api_refusal(status: poem::http::StatusCode, detail: String) -> Response {
    use trcker_api::problem::{Code, Problem};
    let code = match status.as_u16() {
        413 => Code::BodyTooLarge,
        408 => Code::BodyTimeout,
        _ => Code::BadRequest,
    };
    Problem::new(code, detail).into_response()
}

/// A portal refusal of a form: a plain message.
fn portal_refusal(status: poem::http::StatusCode, detail: String) -> Response {
    let msg = match status.as_u16() {
        413 => "This form sent far more than it should; go back and try again.",
        408 => "The form took too long to arrive; go back and try again.",
        _ => "The form could not be read; go back and try again.",
    };
    tracing::debug!(%detail, "portal form refused");
    Response::builder()
        .status(status)
        .content_type("text/plain; charset=utf-8")
        .body(format!("{msg}\n"))
}

/// A running Trcker process.
pub struct App {
    /// Where the HTTP roles listen (None for workers only).
    pub addr: Option<SocketAddr>,
    /// Where /metrics is served when it has a listen address of its own.
    pub metrics_addr: Option<SocketAddr>,
    pub public_url: String,
    pub services: Services,
    pub operator_token: OperatorToken,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl App {
    /// Opens the database, brings its schema up to date, and starts the roles.
    pub async fn start(config: Config, roles: Roles) -> Result<App, AppError> {
        let trusted_proxies = config.trusted_proxies().map_err(AppError::Config)?;
        telemetry::handle();
        let (operator_token_hash, token_state) = operator_token(&config)?;
        let store = Store::open(&config.database()).await?;
        store.migrate().await?;
        if config.allow_private_targets {
            tracing::warn!(
                "TRCKER_ALLOW_PRIVATE_TARGETS is on: affiliate notifications may reach loopback, \
                 private and metadata addresses; use it for local testing only"
            );
        }

        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let (acceptor, addr) = if roles != Roles::Workers {
            let (acceptor, addr) = bind(&config.listen).await?;
            (Some(acceptor), Some(addr))
        } else {
            (None, None)
        };
        let metrics = match &config.metrics_listen {
            Some(listen) => Some(bind(listen).await?),
            None => None,
        };
        let public_url = config
            .public_url
            .clone()
            .or_else(|| addr.map(|a| format!("http://{a}")))
            .unwrap_or_else(|| format!("http://{}", config.listen));
        let services = Services::new(
            store,
            Settings {
                allow_private_targets: config.allow_private_targets,
                unique_click_window: Duration::from_secs(config.unique_click_window_secs),
                ip_retention_days: config.ip_retention_days,
                auth_failures_per_minute: config.auth_failures_per_minute,
                endpoint_failure_limit: config.endpoint_failure_limit,
                trusted_proxies,
                retention: trcker_services::pipeline::retention::Retention {
                    clicks_days: config.retain_clicks_days,
                    postbacks_days: config.retain_postbacks_days,
                    deliveries_days: config.retain_deliveries_days,
                },
                ..Settings::new(public_url.clone(), operator_token_hash)
            },
        )?;

        let scrape = || get(telemetry::scrape).data(services.clone());
        let metrics_addr = metrics.map(|(acceptor, addr)| {
            let app = Route::new().at("/metrics", scrape()).around(access_log);
            tasks.push(http::serve(acceptor, app, shutdown.clone()));
            addr
        });
        if let Some(acceptor) = acceptor {
            let mut app = Route::new()
                .at("/", get(front_page).with(no_body()))
                .at("/healthz", get(healthz).with(no_body()))
                .at(
                    "/readyz",
                    get(readyz).data(services.clone()).with(no_body()),
                );
            if metrics_addr.is_none() {
                app = app.at("/metrics", scrape().with(no_body()));
            }
            let app = app
                .nest(
                    "/api/v1",
                    trcker_api::routes(&services).with(BodyLimit {
                        max: ADMIN_API_MAX_BODY,
                        refuse: api_refusal,
                    }),
                )
                .nest("/api/docs", trcker_api::docs(&services).with(no_body()))
                .nest(
                    "/portal",
                    trcker_portal::routes(
                        services.portal.clone(),
                        &services.settings.operator_token_hash,
                        &services.settings.public_url,
                        services.settings.trusted_proxies.clone(),
                    )
                    .with(BodyLimit {
                        max: PORTAL_MAX_BODY,
                        refuse: portal_refusal,
                    }),
                );
            let app = trcker_receiver::mount(
                app,
                services.clicks.clone(),
                services.intake.clone(),
                services.settings.trusted_proxies.clone(),
                services.auth_failures.clone(),
            )
            .around(access_log);
            tasks.push(http::serve(acceptor, app, shutdown.clone()));
        }

        if roles != Roles::Web {
            let opts = trcker_workers::WorkerOptions {
                concurrency: config.worker_concurrency.max(1),
                name: config.worker_name.clone(),
                ..Default::default()
            };
            let pipeline = services.pipeline.clone();
            let worker_shutdown = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = trcker_workers::run(pipeline, opts, worker_shutdown).await {
                    tracing::error!(error = %e, "workers stopped with an error");
                }
            }));
        }

        Ok(App {
            addr,
            metrics_addr,
            public_url,
            services,
            operator_token: token_state,
            shutdown,
            tasks,
        })
    }

    /// A token that stops the app when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the app has stopped (after its shutdown token is cancelled).
    pub async fn wait(self) {
        let aborts: Vec<_> = self.tasks.iter().map(|t| t.abort_handle()).collect();
        let mut all = std::pin::pin!(async {
            for t in self.tasks {
                let _ = t.await;
            }
        });
        // Until shutdown is asked for, the tasks run as long as they like; from
        // then on they have TASKS_BOUND to finish.
        let finished = tokio::select! {
            _ = &mut all => true,
            _ = self.shutdown.cancelled() => false,
        };
        if !finished && tokio::time::timeout(TASKS_BOUND, &mut all).await.is_err() {
            tracing::error!(
                "requests or jobs still running {}s after shutdown began; stopping them",
                TASKS_BOUND.as_secs()
            );
            for a in aborts {
                a.abort();
            }
        }
        // Requests are done: queue the jobs of the last postbacks accepted,
        // write the clicks still buffered, then close.
        if !self.services.intake.drain(PUSH_BOUND).await {
            tracing::warn!(
                "some accepted postbacks were not queued before shutdown; the inbox sweeper will queue them"
            );
        }
        tracing::info!("writing buffered clicks");
        if tokio::time::timeout(FLUSH_BOUND, self.services.clicks.flush())
            .await
            .is_err()
        {
            tracing::error!(
                "buffered clicks could not be written within {}s (is the database down?); stopping without them",
                FLUSH_BOUND.as_secs()
            );
        }
        // Closing waits for every pooled connection to come back; one held by a
        // listener or a job that outlived the worker timeout must not keep the
        // process alive: everything acknowledged is committed already.
        let close = async {
            self.services.intake.close().await;
            self.services.store.close().await;
        };
        if tokio::time::timeout(CLOSE_BOUND, close).await.is_err() {
            tracing::warn!(
                "database connections still in use after {}s; exiting anyway",
                CLOSE_BOUND.as_secs()
            );
        }
        tracing::info!("stopped");
    }

    /// Stops the app: in-flight requests and jobs finish, then it returns.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }
}

/// How long shutdown waits for requests and jobs in flight (the HTTP server
/// gives connections 10 s, the workers give jobs 15 s and then themselves 3 s
/// to stop).
const TASKS_BOUND: Duration = Duration::from_secs(20);
/// How long shutdown waits for the last accepted postbacks' jobs to be queued.
const PUSH_BOUND: Duration = Duration::from_secs(2);
/// How long shutdown waits for buffered clicks to be written.
const FLUSH_BOUND: Duration = Duration::from_secs(5);
/// How long shutdown waits for database connections to close.
const CLOSE_BOUND: Duration = Duration::from_secs(2);

/// Brings the schema up to date and exits (`trcker migrate`).
pub async fn migrate(config: &Config) -> Result<(), AppError> {
    let store = Store::open(&config.database()).await?;
    store.migrate().await?;
    store.close().await;
    Ok(())
}
