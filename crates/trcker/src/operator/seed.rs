//! `trcker seed --demo`: a demo tenant with two offers, six affiliates and
//! their links, and a month of clicks and sales, made the way real ones are:
//! the clicks written as the click writer writes them, each sale a postback
//! taken by the intake at the time it happened, attributed, priced and held
//! by the pipeline's own workers. A few sales are refunded afterwards.
//! `--clicks N --conversions M` makes the large data sets that the report
//! and portal benchmarks need.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trcker_domain::click_id::ClickId;
use trcker_services::Services;
use trcker_services::affiliates::NewAffiliate;
use trcker_services::intake::{IntakeError, PostbackRequest};
use trcker_services::integrations::{IntegrationOptions, NewIntegration};
use trcker_services::links::NewLink;
use trcker_services::programs::{CommissionInput, NewProgram};
use trcker_services::storage::TenantId;
use trcker_services::storage::entities::{click, tracking_link};
use trcker_services::storage::ids::ProgramId;
use trcker_services::tenants::NewTenant;

use super::DatabaseFlags;
use crate::{App, AppError, Config, ExposeSecret, OperatorToken, Roles};

#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// Make the demo program (the only kind of seed there is; required so
    /// that nobody seeds a production database by accident).
    #[arg(long, required = true)]
    pub demo: bool,
    /// The demo tenant's slug (it must not exist yet).
    #[arg(long, default_value = "demo")]
    pub tenant: String,
    /// Clicks to make over the period.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=50_000_000))]
    pub clicks: u64,
    /// Sales among those clicks (at most one per click).
    #[arg(long, default_value_t = 250)]
    pub conversions: u64,
    /// Days of history, ending now.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=365))]
    pub days: u32,
    #[command(flatten)]
    pub db: DatabaseFlags,
}

/// One of the demo's offers.
struct DemoOffer {
    slug: &'static str,
    name: &'static str,
    destination: &'static str,
    commission_type: &'static str,
    commission_value: &'static str,
    hold_days: i32,
    /// Its sales' amounts in cents, lowest and highest.
    amounts: (i64, i64),
}

const OFFERS: [DemoOffer; 2] = [
    DemoOffer {
        slug: "pro",
        name: "Pro plan",
        destination: "https://shop.example/pro",
        commission_type: "flat",
        commission_value: "25.00",
        hold_days: 14,
        amounts: (4_900, 14_900),
    },
    DemoOffer {
        slug: "starter",
        name: "Starter kit",
        destination: "https://shop.example/starter",
        commission_type: "percent",
        commission_value: "10",
        hold_days: 7,
        amounts: (1_500, 9_900),
    },
];

/// The demo's affiliates: slug, name, share of the traffic (of 100), and
/// where their traffic comes from (sub1).
const AFFILIATES: [(&str, &str, u32, &str); 6] = [
    ("jane", "Jane Doe", 30, "newsletter"),
    ("omar", "Omar Haddad", 22, "youtube"),
    ("mei", "Mei Lin", 16, "blog"),
    ("lucas", "Lucas Silva", 14, "instagram"),
    ("priya", "Priya Nair", 10, "podcast"),
    ("tom", "Tom Becker", 8, "coupon-site"),
];

const USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile Safari/537.36",
];

/// Clicks written per insert.
const CLICK_BATCH: usize = 1_000;
/// Postbacks in flight at once.
const IN_FLIGHT: usize = 64;
/// One sale in this many is refunded.
const REFUND_ONE_IN: u64 = 25;
/// How long the pipeline may make no progress before the seed gives up.
const STALL: Duration = Duration::from_secs(120);

/// What the demo is made of, for the sales and the summary.
struct Demo {
    tenant: TenantId,
    slug: String,
    api_key: String,
    offers: Vec<Offer>,
    /// Every link, with its affiliate's share of the traffic.
    links: Vec<(tracking_link::Model, u32)>,
    invite: (String, String),
}

/// A demo offer: its program, its integration's secret and its sale
/// amounts in cents.
struct Offer {
    program_id: ProgramId,
    slug: String,
    secret: String,
    amounts: (i64, i64),
}

/// A sale to post: the click it follows, its offer, and when.
struct Sale {
    click_id: String,
    offer: usize,
    at: DateTime<Utc>,
}

/// Runs the seed; the summary's lines.
pub async fn run(config: Config, args: SeedArgs) -> Result<Vec<String>, AppError> {
    if args.conversions > args.clicks {
        return Err(AppError::Config(format!(
            "--conversions {} is more than --clicks {}: a sale follows a click",
            args.conversions, args.clicks
        )));
    }
    let started = std::time::Instant::now();
    // The pipeline's own workers attribute and price the sales: workers of
    // their own, beside any that serve (never under a serving worker's
    // fixed name, which would take its jobs over), and no metrics listener.
    let config = Config {
        worker_name: None,
        metrics_listen: None,
        ..config
    };
    let app = App::start(config, Roles::Workers).await?;
    let result = seed(&app.services, &args).await;
    let token = match &app.operator_token {
        OperatorToken::Generated(t) => Some(t.expose_secret().to_owned()),
        _ => None,
    };
    let public_url = app.public_url.clone();
    app.shutdown_token().cancel();
    app.wait().await;
    let (demo, made) = result?;
    Ok(summary(
        &demo,
        &made,
        &args,
        &public_url,
        token,
        started.elapsed(),
    ))
}

/// What the seed made.
struct Made {
    clicks: u64,
    sales: u64,
    refunds: u64,
    refused: u64,
}

async fn seed(services: &Services, args: &SeedArgs) -> Result<(Demo, Made), AppError> {
    let mut rng = StdRng::seed_from_u64(args.clicks ^ (args.conversions << 32));
    let demo = setup(services, &args.tenant).await?;
    let now = Utc::now();
    let start = now - TimeDelta::days(args.days.into());
    let sales = clicks(services, &demo, args, start, now, &mut rng).await?;
    let bar = bar(sales.len() as u64, "sales");
    let (made_sales, mut refused) =
        post_sales(services, &demo, &sales, now, &mut rng, &bar).await?;
    bar.finish_and_clear();
    wait_for_pipeline(services, &demo.tenant, "attributing and pricing").await?;
    // Refunds once their sales are conversions: one in REFUND_ONE_IN, days later.
    let refunds: Vec<(&Sale, DateTime<Utc>)> = sales
        .iter()
        .enumerate()
        .filter(|(i, _)| (*i as u64) % REFUND_ONE_IN == REFUND_ONE_IN - 1)
        .map(|(_, s)| {
            let later = s.at + TimeDelta::minutes(rng.random_range(60..=7 * 24 * 60));
            (s, later.min(now))
        })
        .collect();
    let mut made_refunds = 0;
    for (sale, at) in &refunds {
        let status = [("status", "refunded".to_owned())];
        match post(services, &demo, sale, *at, &status).await {
            Ok(()) => made_refunds += 1,
            Err(_) => refused += 1,
        }
    }
    wait_for_pipeline(services, &demo.tenant, "refunding").await?;
    Ok((
        demo,
        Made {
            clicks: args.clicks,
            sales: made_sales,
            refunds: made_refunds,
            refused,
        },
    ))
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(&format!(
        "{{spinner}} {what:<8} [{{bar:32}}] {{pos}}/{{len}} ({{per_sec}}, {{eta}} left)"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// The tenant, its offers with their integrations, the affiliates and a link
/// for each affiliate and offer.
async fn setup(services: &Services, slug: &str) -> Result<Demo, AppError> {
    let said = |e: &dyn std::fmt::Display| AppError::Config(format!("seeding {slug}: {e}"));
    let created = services
        .tenants
        .create(
            &super::OPERATOR,
            NewTenant {
                name: "Demo Store".to_owned(),
                slug: slug.to_owned(),
                time_zone: None,
            },
        )
        .await
        .map_err(|e| said(&format!("{e} (--tenant names another)")))?;
    let tenant = created.tenant.id.clone();
    let caller = services
        .tenants
        .authenticate(&created.api_key)
        .await
        .map_err(|e| said(&e))?;
    let mut offers = Vec::new();
    let mut programs = Vec::new();
    for offer in &OFFERS {
        let program = services
            .programs
            .create(
                &caller,
                NewProgram {
                    name: offer.name.to_owned(),
                    slug: offer.slug.to_owned(),
                    destination_url: offer.destination.to_owned(),
                    fallback_url: None,
                    currency: Some("USD".to_owned()),
                    commission: CommissionInput {
                        kind: offer.commission_type.to_owned(),
                        value: offer.commission_value.to_owned(),
                        ..Default::default()
                    },
                    hold_days: Some(offer.hold_days),
                    attribution_window_days: Some(30),
                    click_param: None,
                    default_revenue: None,
                    min_conversion_seconds: None,
                    payout_minimum: None,
                },
            )
            .await
            .map_err(|e| said(&e))?
            .program;
        let integration = services
            .integrations
            .create(
                &caller,
                NewIntegration {
                    name: format!("{} checkout", offer.name),
                    program_id: program.id.to_string(),
                    options: IntegrationOptions::default(),
                },
            )
            .await
            .map_err(|e| said(&e))?;
        offers.push(Offer {
            program_id: program.id.clone(),
            slug: offer.slug.to_owned(),
            secret: integration.secret,
            amounts: offer.amounts,
        });
        programs.push(program);
    }
    let mut links = Vec::new();
    let mut invite = None;
    for (slug, name, share, source) in AFFILIATES {
        let created = services
            .affiliates
            .create(
                &caller,
                NewAffiliate {
                    name: name.to_owned(),
                    email: format!("{slug}@example.com"),
                    slug: slug.to_owned(),
                    postback_url: None,
                },
            )
            .await
            .map_err(|e| said(&e))?;
        invite.get_or_insert_with(|| (name.to_owned(), created.invite_url.clone()));
        for program in &programs {
            let link = services
                .links
                .create(
                    &caller,
                    NewLink {
                        program_id: program.id.to_string(),
                        affiliate_id: created.affiliate.id.to_string(),
                        destination_url: None,
                        subs: [Some(source.to_owned()), None, None, None, None],
                    },
                )
                .await
                .map_err(|e| said(&e))?;
            links.push((link, share));
        }
    }
    Ok(Demo {
        tenant,
        slug: slug.to_owned(),
        api_key: created.api_key,
        offers,
        links,
        invite: invite.unwrap_or_default(),
    })
}

/// Writes the clicks, spread over the period in time order, and picks the
/// ones that become sales (exactly `--conversions` of them).
async fn clicks(
    services: &Services,
    demo: &Demo,
    args: &SeedArgs,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
    rng: &mut StdRng,
) -> Result<Vec<Sale>, AppError> {
    let total_share: u32 = demo.links.iter().map(|(_, s)| s).sum();
    let span_ms = (now - start).num_milliseconds() as f64;
    let bar = bar(args.clicks, "clicks");
    let mut sales = Vec::with_capacity(args.conversions as usize);
    let mut batch = Vec::with_capacity(CLICK_BATCH);
    for i in 0..args.clicks {
        let offset = span_ms * (i as f64 + rng.random::<f64>()) / args.clicks as f64;
        let at = start + TimeDelta::milliseconds(offset as i64);
        let mut pick = rng.random_range(0..total_share);
        let (link, _) = demo
            .links
            .iter()
            .find(|(_, share)| {
                let hit = pick < *share;
                pick = pick.saturating_sub(*share);
                hit
            })
            .unwrap_or(&demo.links[0]);
        let id = ClickId::generate(at.timestamp_millis() as u64).to_string();
        // Selection sampling: every click is equally likely to convert, and
        // exactly `conversions` do.
        let wanted = args.conversions - sales.len() as u64;
        if rng.random_range(0..args.clicks - i) < wanted {
            let offer = demo
                .offers
                .iter()
                .position(|o| o.program_id == link.program_id)
                .unwrap_or(0);
            let delay = TimeDelta::seconds(rng.random_range(30..=3 * 3600));
            sales.push(Sale {
                click_id: id.clone(),
                offer,
                at: (at + delay).min(now),
            });
        }
        batch.push(click::Model {
            id,
            tenant_id: demo.tenant.clone(),
            created_at: at,
            program_id: link.program_id.clone(),
            affiliate_id: link.affiliate_id.clone(),
            link_id: Some(link.id.clone()),
            ip: Some(format!("203.0.113.{}", rng.random_range(1..=254))),
            user_agent: Some(USER_AGENTS[rng.random_range(0..USER_AGENTS.len())].to_owned()),
            referrer: Some(format!(
                "https://{}.example/",
                link.sub1.as_deref().unwrap_or("web")
            )),
            is_unique: rng.random_range(0..100) < 82,
            is_bot: false,
            is_test: false,
            outcome: click::Outcome::Redirected,
            sub1: link.sub1.clone(),
            sub2: None,
            sub3: None,
            sub4: None,
            sub5: None,
        });
        if batch.len() == CLICK_BATCH || i + 1 == args.clicks {
            services
                .clicks
                .import(&batch)
                .await
                .map_err(|e| AppError::Config(format!("writing clicks: {e}")))?;
            bar.inc(batch.len() as u64);
            batch.clear();
        }
    }
    bar.finish_and_clear();
    sales.sort_by_key(|s| s.at);
    Ok(sales)
}

/// Posts the sales, `IN_FLIGHT` at a time: the number accepted and refused.
async fn post_sales(
    services: &Services,
    demo: &Demo,
    sales: &[Sale],
    now: DateTime<Utc>,
    rng: &mut StdRng,
    bar: &ProgressBar,
) -> Result<(u64, u64), AppError> {
    use futures::StreamExt;
    let cents: Vec<i64> = sales
        .iter()
        .map(|s| {
            let (low, high) = demo.offers[s.offer].amounts;
            rng.random_range(low..=high)
        })
        .collect();
    let mut results = futures::stream::iter(sales.iter().zip(cents))
        .map(|(sale, cents)| async move {
            let amount = [("amount", format!("{}.{:02}", cents / 100, cents % 100))];
            post(services, demo, sale, sale.at.min(now), &amount).await
        })
        .buffer_unordered(IN_FLIGHT);
    let (mut accepted, mut refused) = (0, 0);
    while let Some(result) = results.next().await {
        match result {
            Ok(()) => accepted += 1,
            Err(IntakeError::Store(e)) => {
                return Err(AppError::Config(format!("posting sales: {e}")));
            }
            Err(e) => {
                tracing::warn!(error = %e, "a demo sale was refused");
                refused += 1;
            }
        }
        bar.inc(1);
    }
    Ok((accepted, refused))
}

/// Posts one postback for a sale (its txn_id from its click), as received at `at`.
async fn post(
    services: &Services,
    demo: &Demo,
    sale: &Sale,
    at: DateTime<Utc>,
    extra: &[(&str, String)],
) -> Result<(), IntakeError> {
    let offer = &demo.offers[sale.offer];
    let mut pairs = vec![
        ("click_id".to_owned(), sale.click_id.clone()),
        ("txn_id".to_owned(), format!("demo-{}", sale.click_id)),
    ];
    pairs.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    let req = PostbackRequest {
        brand: Some(demo.slug.clone()),
        offer: Some(offer.slug.clone()),
        secret: Some(offer.secret.clone()),
        pairs,
        source_ip: Some("198.51.100.7".to_owned()),
        method: "GET".to_owned(),
        ..PostbackRequest::default()
    };
    services.intake.intake_at(req, at).await.map(drop)
}

/// Waits until the tenant's pipeline has nothing left to do, with a
/// spinner; fails if it makes no progress for `STALL`.
async fn wait_for_pipeline(
    services: &Services,
    tenant: &TenantId,
    what: &str,
) -> Result<(), AppError> {
    let spinner = ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    let mut last = None;
    let mut since = std::time::Instant::now();
    loop {
        let backlog = trcker_services::pipeline::backlog(&services.store, tenant)
            .await
            .map_err(|e| AppError::Config(format!("{what}: {e}")))?;
        if backlog.is_empty() {
            spinner.finish_and_clear();
            return Ok(());
        }
        spinner.set_message(format!(
            "{what}: {} postbacks to attribute, {} conversions to price, {} holds to end",
            backlog.postbacks, backlog.unpriced, backlog.due
        ));
        if last != Some(backlog) {
            last = Some(backlog);
            since = std::time::Instant::now();
        } else if since.elapsed() > STALL {
            spinner.finish_and_clear();
            return Err(AppError::Config(format!(
                "{what}: the pipeline made no progress for {} s ({} postbacks, {} prices and {} holds left); trcker serve finishes them",
                STALL.as_secs(),
                backlog.postbacks,
                backlog.unpriced,
                backlog.due
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What was made and what to open.
fn summary(
    demo: &Demo,
    made: &Made,
    args: &SeedArgs,
    public_url: &str,
    token: Option<String>,
    took: Duration,
) -> Vec<String> {
    let mut lines = vec![
        format!(
            "seeded tenant {} (Demo Store) with {} days of history in {:.1} s:",
            demo.slug,
            args.days,
            took.as_secs_f64()
        ),
        format!(
            "  {} offers, {} affiliates, {} tracking links",
            demo.offers.len(),
            AFFILIATES.len(),
            demo.links.len()
        ),
        format!(
            "  {} clicks, {} sales ({} refunded since)",
            made.clicks, made.sales, made.refunds
        ),
    ];
    if made.refused > 0 {
        lines.push(format!(
            "  {} postbacks refused (see the postback log: GET /api/v1/postbacks)",
            made.refused
        ));
    }
    lines.extend([
        String::new(),
        "open (after trcker serve):".to_owned(),
        format!("  admin API key  {}  (shown once)", demo.api_key),
        format!(
            "  conversions    curl -H 'Authorization: Bearer {}' {public_url}/api/v1/conversions",
            demo.api_key
        ),
        format!("  API docs       {public_url}/api/docs"),
        format!(
            "  portal         {}  ({}'s invitation: choose a password, then see the earnings)",
            demo.invite.1, demo.invite.0
        ),
        format!(
            "  a click        {public_url}/api/r/{}/{}?via=jane",
            demo.slug, demo.offers[0].slug
        ),
    ]);
    if let Some(token) = token {
        lines.push(format!(
            "  operator token {token}  (shown once; only its hash is kept)"
        ));
    }
    lines
}
