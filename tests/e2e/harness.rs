//! The test harness: a Trcker app per test, one method per user action, and a
//! local listener that stands in for an affiliate's server.

use std::time::{Duration, Instant};

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{EndpointExt, Route, handler};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use trcker::{App, Config, Roles, SecretString};

pub const OPERATOR: &str = "test-operator-token";

/// A fresh PostgreSQL database, dropped at the end of the test.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    /// A fresh database on the server of `TRCKER_TEST_POSTGRES_URL`. Only the
    /// PostgreSQL variants call it, and they are ignored unless the suite was
    /// built with that variable set (`build.rs`): it panics when the variable
    /// is unset at run time or the server cannot be reached.
    pub async fn create() -> PgDatabase {
        let admin_url = std::env::var("TRCKER_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .expect(
                "the PostgreSQL suite was built with TRCKER_TEST_POSTGRES_URL set; set it to run",
            );
        Self::create_at(admin_url).await
    }

    /// A fresh database on the server at `admin_url` (a URL ending in `/<database>`).
    pub async fn create_at(admin_url: String) -> PgDatabase {
        let name = format!(
            "trcker_test_{}",
            trcker_domain::secret::random_alnum(12).to_ascii_lowercase()
        );
        let mut conn = connect(&admin_url).await;
        sqlx_exec(&mut conn, &format!("CREATE DATABASE {name}")).await;
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("the PostgreSQL URL must end with /<database>");
        let url = format!("{base}/{name}");
        PgDatabase {
            admin_url,
            name,
            url,
        }
    }
}

async fn connect(url: &str) -> trcker_storage::sea_orm::DatabaseConnection {
    trcker_storage::sea_orm::Database::connect(url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL suite is on but {url} is unreachable: {e}"))
}

async fn sqlx_exec(conn: &mut trcker_storage::sea_orm::DatabaseConnection, sql: &str) {
    use trcker_storage::sea_orm::ConnectionTrait;
    conn.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Best effort, on a thread of its own (we may be inside a runtime).
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok(conn) = trcker_storage::sea_orm::Database::connect(&admin_url).await {
                        use trcker_storage::sea_orm::ConnectionTrait;
                        let _ = conn
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

/// A running Trcker and a client for it.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    app: std::sync::Mutex<Option<App>>,
    config: Config,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

/// Starts a Trcker app on SQLite (`None`) or on the given PostgreSQL database.
pub async fn spawn_on(pg: Option<PgDatabase>) -> TestApp {
    spawn_configured(pg, |_| {}).await
}

/// Starts a Trcker app with its configuration changed by `configure`.
pub async fn spawn_configured(
    pg: Option<PgDatabase>,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    spawn_roles(pg, Roles::All, configure).await
}

/// Starts the HTTP side only (`trcker web`): the test runs the workers
/// itself with [`TestApp::start_workers`], and may stop and start them.
pub async fn spawn_web(pg: Option<PgDatabase>) -> TestApp {
    spawn_roles(pg, Roles::Web, |_| {}).await
}

async fn spawn_roles(
    pg: Option<PgDatabase>,
    roles: Roles,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRCKER_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::with_data_dir(dir.path());
    config.operator_token = Some(SecretString::from(OPERATOR));
    config.allow_private_targets = true;
    config.database_url = pg.as_ref().map(|p| SecretString::from(p.url.clone()));
    config.db_connections = 8;
    configure(&mut config);
    let app = App::start(config.clone(), roles)
        .await
        .expect("trcker starts");
    // A public URL of the test's own (an https one, say) is not where the
    // test can reach the app: then talk to its listening address.
    let base = match app.addr {
        Some(addr) if config.public_url.is_some() => format!("http://{addr}"),
        _ => app.public_url.clone(),
    };
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    TestApp {
        base,
        http,
        app: std::sync::Mutex::new(Some(app)),
        config,
        _dir: dir,
        _pg: pg,
    }
}

/// Runs a scenario on SQLite and on PostgreSQL. The PostgreSQL variant is
/// ignored, with its reason, unless the suite was built with
/// `TRCKER_TEST_POSTGRES_URL` set (see `crates/trcker/build.rs`). The app
/// is [`spawn_on`]'s, or the given spawner's (an async function of an
/// `Option<PgDatabase>`, such as [`spawn_web`]).
#[macro_export]
macro_rules! on_both_databases {
    ($scenario:ident) => {
        $crate::on_both_databases!($scenario, $crate::harness::spawn_on);
    };
    ($scenario:ident, $spawner:expr) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let app = ($spawner)(None).await;
                super::$scenario(&app).await;
                app.stop().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            #[cfg_attr(
                not(trcker_pg),
                ignore = "PostgreSQL suite off: set TRCKER_TEST_POSTGRES_URL to run it"
            )]
            async fn postgres() {
                let pg = $crate::harness::PgDatabase::create().await;
                let app = ($spawner)(Some(pg)).await;
                super::$scenario(&app).await;
                app.stop().await;
            }
        }
    };
}

/// A tenant created through the API.
pub struct Tenant {
    pub id: String,
    pub key: String,
}

/// What the quickstart sets up.
pub struct Setup {
    pub tenant: Tenant,
    pub program_id: String,
    pub integration_id: String,
    pub affiliate_id: String,
    pub secret: String,
    pub postback_url: String,
    pub invite_url: String,
}

impl TestApp {
    pub async fn stop(&self) {
        let app = self.app.lock().ok().and_then(|mut a| a.take());
        if let Some(app) = app {
            app.stop().await;
        }
    }

    /// A second process's worth of workers (`trcker worker`) on the same database.
    pub async fn start_workers(&self) -> App {
        App::start(self.config.clone(), Roles::Workers)
            .await
            .expect("workers start")
    }

    /// The app's data directory (the SQLite file, the operator token's hash).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.config.data_dir
    }

    /// A tenant's id, as stored, by its slug.
    pub async fn tenant_id(&self, slug: &str) -> trcker_storage::TenantId {
        trcker_storage::lookup::tenant_by_slug(slug)
            .one(&self.services().store.conn)
            .await
            .expect("query")
            .expect("tenant")
            .id
    }

    /// The app's use cases, for checks the API does not expose (the ledger).
    pub fn services(&self) -> trcker_services::Services {
        self.app
            .lock()
            .ok()
            .and_then(|a| a.as_ref().map(|a| a.services.clone()))
            .expect("app running")
    }

    /// Sum of the ledger for one conversion, in minor units.
    pub async fn ledger_sum(&self, tenant_id: &str, conversion_id: &str) -> (i64, usize) {
        use trcker_storage::entities::ledger_entry;
        use trcker_storage::sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let entries = ledger_entry::Entity::find()
            .filter(ledger_entry::Column::TenantId.eq(tenant_id))
            .filter(ledger_entry::Column::ConversionId.eq(conversion_id))
            .all(&self.services().store.conn)
            .await
            .expect("ledger");
        (entries.iter().map(|e| e.amount_minor).sum(), entries.len())
    }

    /// A postback once the pipeline is done with it (its state is no longer `received`).
    pub async fn processed_postback(&self, id: &str) -> trcker_storage::entities::postback::Model {
        use trcker_storage::entities::postback;
        use trcker_storage::sea_orm::EntityTrait;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let row = postback::Entity::find_by_id(id.to_owned())
                .one(&self.services().store.conn)
                .await
                .expect("query")
                .expect("postback row");
            if row.state != postback::State::Received {
                return row;
            }
            assert!(
                Instant::now() < deadline,
                "postback {id} was never processed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            assert!(
                content_type.starts_with("application/problem+json"),
                "{path}: error {status} must be problem+json, was {content_type}: {text}"
            );
        }
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.api(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.api(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    pub async fn create_tenant(&self, slug: &str) -> Tenant {
        let (status, body) = self
            .post(
                "/api/v1/tenants",
                OPERATOR,
                json!({"name": slug.to_uppercase(), "slug": slug}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        Tenant {
            id: body["id"].as_str().expect("id").to_owned(),
            key: body["api_key"].as_str().expect("api_key").to_owned(),
        }
    }

    /// The pinned quickstart: tenant acme, program pro (10%), affiliate jane
    /// whose postback URL points at `affiliate_url`, and an integration.
    pub async fn quickstart_setup(&self, slug: &str, affiliate_url: &str) -> Setup {
        let tenant = self.create_tenant(slug).await;
        let (status, program) = self
            .post(
                "/api/v1/programs",
                &tenant.key,
                json!({"name":"Pro plan","slug":"pro","destination_url":"https://shop.example/pro",
                       "currency":"USD","commission":{"type":"percent","value":"10"}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{program}");
        assert!(
            program["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("prg_")),
            "{program}"
        );
        let (status, affiliate) = self
            .post(
                "/api/v1/affiliates",
                &tenant.key,
                json!({"name":"Jane","email":"jane@example.com","slug":"jane",
                       "postback_url": format!("{affiliate_url}/pb?cid={{click_id}}&payout={{payout}}")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{affiliate}");
        let program_id = program["id"].as_str().expect("program id").to_owned();
        let (status, integration) = self
            .post(
                "/api/v1/integrations",
                &tenant.key,
                json!({"name":"Shop backend","program_id": program_id}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{integration}");
        Setup {
            program_id,
            affiliate_id: affiliate["id"].as_str().expect("affiliate id").to_owned(),
            invite_url: affiliate["invite_url"]
                .as_str()
                .expect("invite_url")
                .to_owned(),
            integration_id: integration["id"]
                .as_str()
                .expect("integration id")
                .to_owned(),
            secret: integration["secret"].as_str().expect("secret").to_owned(),
            postback_url: integration["postback_url"]
                .as_str()
                .expect("postback_url")
                .to_owned(),
            tenant,
        }
    }

    /// Follows a tracking link; returns the status and the Location header.
    pub async fn click(&self, path: &str) -> (StatusCode, Option<String>) {
        let resp = self.http.get(self.url(path)).send().await.expect("click");
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (resp.status(), loc)
    }

    /// Clicks and returns the click id from the redirect.
    pub async fn click_id(&self, path: &str) -> String {
        let (status, loc) = self.click(path).await;
        assert_eq!(status, StatusCode::FOUND);
        let loc = loc.expect("location");
        let url = url::Url::parse(&loc).expect("redirect URL");
        url.query_pairs()
            .find(|(k, _)| k == "click_id")
            .map(|(_, v)| v.into_owned())
            .expect("click_id in redirect")
    }

    /// Fires a GET postback at `path_and_query`.
    pub async fn postback(&self, path_and_query: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(self.url(path_and_query))
            .send()
            .await
            .expect("postback");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Clicks `click` (a tracking path), posts the sale of `txn` for
    /// `amount` (with `extra` query parameters) to the quickstart's
    /// integration, and waits until its conversion is priced (or rejected);
    /// the conversion.
    pub async fn sale(
        &self,
        s: &Setup,
        click: &str,
        txn: &str,
        amount: &str,
        extra: &str,
    ) -> Value {
        let click_id = self.click_id(click).await;
        let (status, body) = self
            .postback(&format!(
                "/api/postback/acme/pro?secret={}&click_id={click_id}&amount={amount}&txn_id={txn}{extra}",
                s.secret
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page = self
            .conversions_until(&s.tenant.key, &format!("txn_id={txn}"), |b| {
                !b["items"][0]["payout"].is_null() || b["items"][0]["status"] == "rejected"
            })
            .await;
        page["items"][0].clone()
    }

    /// Lists conversions with a query string until `pred` holds (the pipeline is asynchronous).
    pub async fn conversions_until(
        &self,
        key: &str,
        query: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.get(&format!("/api/v1/conversions?{query}"), key).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if pred(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "conversions never matched; last: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A local HTTP listener that stands in for an affiliate's server: it records
/// every request and answers with `status`. Each request is read once,
/// whole (`next_request`) or as its path and query (`next`).
pub struct AffiliateServer {
    pub url: String,
    requests: tokio::sync::Mutex<mpsc::UnboundedReceiver<Captured>>,
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A request as the affiliate's server received it.
#[derive(Debug, Clone)]
pub struct Captured {
    pub method: String,
    pub uri: String,
    pub headers: poem::http::HeaderMap,
    pub body: String,
}

#[derive(Clone)]
struct Recorder(
    std::sync::Arc<std::sync::atomic::AtomicU16>,
    mpsc::UnboundedSender<Captured>,
);

#[handler]
async fn record(
    req: &poem::Request,
    body: poem::Body,
    rec: poem::web::Data<&Recorder>,
) -> poem::Response {
    let _ = rec.0.1.send(Captured {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        headers: req.headers().clone(),
        body: body.into_string().await.unwrap_or_default(),
    });
    poem::Response::builder()
        .status(
            poem::http::StatusCode::from_u16(rec.0.0.load(std::sync::atomic::Ordering::SeqCst))
                .unwrap_or_default(),
        )
        .body("ok")
}

impl AffiliateServer {
    pub async fn start(status: u16) -> AffiliateServer {
        let (req_tx, requests) = mpsc::unbounded_channel();
        let answer = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(status));
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .expect("bind");
        let addr = acceptor.local_addr()[0]
            .as_socket_addr()
            .copied()
            .expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = Route::new()
            .at("/*", record)
            .data(Recorder(answer.clone(), req_tx));
        tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(
                    app,
                    async {
                        let _ = stop_rx.await;
                    },
                    Some(Duration::from_secs(1)),
                )
                .await;
        });
        AffiliateServer {
            url: format!("http://{addr}"),
            requests: tokio::sync::Mutex::new(requests),
            status: answer,
            _stop: stop_tx,
        }
    }

    /// Answers `status` from now on.
    pub fn answer(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    /// The next request the server received, whole.
    pub async fn next_request(&self) -> Captured {
        let mut rx = self.requests.lock().await;
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("the affiliate was not notified in time")
            .expect("listener closed")
    }

    /// The next request the affiliate's server received (path and query).
    pub async fn next(&self) -> String {
        self.next_request().await.uri
    }

    /// Asserts nothing more arrives within `wait`.
    pub async fn assert_quiet(&self, wait: Duration) {
        let mut rx = self.requests.lock().await;
        if let Ok(Some(extra)) = tokio::time::timeout(wait, rx.recv()).await {
            panic!("unexpected notification: {} {}", extra.method, extra.uri);
        }
    }
}

/// A client that keeps cookies, as a browser does, and follows redirects
/// unless `follow` is false.
pub fn browser(follow: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().cookie_store(true);
    if !follow {
        builder = builder.redirect(reqwest::redirect::Policy::none());
    }
    builder.build().expect("client")
}

/// The form token of a portal page's forms.
pub fn form_token_of(html: &str) -> String {
    let (_, rest) = html
        .split_once(r#"name="csrf" value=""#)
        .unwrap_or_else(|| panic!("no form token in {html}"));
    rest.split('"').next().unwrap_or_default().to_owned()
}

/// Opens a portal page with `browser` (which sets its form-token cookie) and
/// reads the token its forms carry.
pub async fn form_token_at(browser: &reqwest::Client, page: &str) -> String {
    let html = browser
        .get(page)
        .send()
        .await
        .expect("form page")
        .text()
        .await
        .unwrap_or_default();
    form_token_of(&html)
}

/// Posts a portal form as a browser does: opens `page`, the page the form is
/// on (which sets the form-token cookie), then posts `fields` and the page's
/// token to `action`. `browser` must keep cookies ([`browser`]).
pub async fn post_portal_form(
    browser: &reqwest::Client,
    page: &str,
    action: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let token = form_token_at(browser, page).await;
    let mut form: Vec<(&str, &str)> = fields.to_vec();
    form.push(("csrf", &token));
    browser
        .post(action)
        .form(&form)
        .send()
        .await
        .expect("form post")
}

/// A header of `resp` as text (empty when missing).
pub fn header_of(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
