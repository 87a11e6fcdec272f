//! Clicks: resolve the tracking link (from an in-memory cache), decide where the
//! customer goes, and queue the click for the batch writer ([`writer`]).
//!
//! Two link forms: `/api/r/{brand}/{offer}?via={partner}` and the short
//! `/c/{code}` of a tracking link (with its own destination and default sub-IDs).
//! A paused program, affiliate or link sends the customer to the program's
//! fallback URL (else the tenant's), and the click is recorded as a
//! fallback. A suspended tenant's links record nothing and send the
//! customer to the tenant's fallback URL, else to the not-found page.
//!
//! Unique clicks: a click is unique unless the same link (program, affiliate and
//! tracking link), IP address and user agent clicked within the unique window (per
//! process), or its user agent is a bot's. Bot clicks are recorded and flagged.

mod writer;

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::Utc;
use trcker_domain::click_id::ClickId;
use trcker_domain::destination::{ClickMacros, click_redirect};
use trcker_storage::entities::*;
use trcker_storage::sea_orm::{ColumnTrait, DbErr, QueryFilter};
use trcker_storage::{Store, lookup, scoped, scoped_by_id};

pub use writer::ClickWriter;

use crate::areas::Area;
use crate::cache::Cache;
use crate::error::{StoreError, from_store};

#[derive(Debug, thiserror::Error)]
pub enum ClickError {
    /// Nothing answers to this link (or a paused one has no fallback).
    #[error("no {0} here")]
    NotFound(&'static str),
    /// The click writer's buffer stayed full: storage cannot keep up or is down.
    #[error("the click writer is full")]
    Busy,
    #[error("the click writer stopped")]
    WriterStopped,
    #[error(transparent)]
    Store(#[from] StoreError),
}
from_store!(ClickError);

/// A click as the receiver saw it.
#[derive(Debug, Default)]
pub struct ClickRequest {
    pub target: ClickTarget,
    pub subs: [Option<String>; 5],
    /// The client's address (kept only while IP addresses are retained).
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub referrer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClickTarget {
    /// `/api/r/{brand}/{offer}?via={partner}`
    Named {
        brand: String,
        offer: String,
        partner: Option<String>,
    },
    /// `/c/{code}`
    Link { code: String },
}

impl Default for ClickTarget {
    fn default() -> Self {
        ClickTarget::Link {
            code: String::new(),
        }
    }
}

/// Where the customer goes.
#[derive(Debug)]
pub enum ClickOutcome {
    Redirect {
        location: String,
        click_id: String,
    },
    /// Paused link, program or affiliate, or suspended tenant: a fallback
    /// URL, no click id.
    Fallback {
        location: String,
    },
}

/// What a tracking URL resolves to.
#[derive(Debug)]
struct Resolved {
    tenant: tenant::Model,
    program: program::Model,
    affiliate: affiliate::Model,
    link: Option<tracking_link::Model>,
}

impl Resolved {
    /// Whether program, affiliate and link take part (else: the fallback).
    fn active(&self) -> bool {
        self.program.status == Activity::Active
            && self.affiliate.status == Activity::Active
            && self
                .link
                .as_ref()
                .is_none_or(|l| l.status == Activity::Active)
    }
}

const BOT_MARKERS: &[&str] = &[
    "bot",
    "crawler",
    "spider",
    "slurp",
    "headless",
    "facebookexternalhit",
    "preview",
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "go-http-client",
    "okhttp",
    "java/",
    "libwww",
    "httpclient",
    "scrapy",
];

/// Whether a user agent is an automated client's (an empty one counts as such).
pub fn is_bot(user_agent: Option<&str>) -> bool {
    match user_agent.map(str::trim).filter(|u| !u.is_empty()) {
        None => true,
        Some(ua) => {
            let ua = ua.to_ascii_lowercase();
            BOT_MARKERS.iter().any(|m| ua.contains(m))
        }
    }
}

fn clamp(s: Option<String>, max: usize) -> Option<String> {
    s.map(|v| v.chars().take(max).collect::<String>())
        .filter(|v| !v.is_empty())
}

/// Recent visitors per link, for unique counting (per process): each
/// visitor's last click, kept for the unique window.
struct Visitors {
    recent: moka::sync::Cache<u64, i64>,
    window_ms: i64,
}

impl Visitors {
    fn new(window: std::time::Duration) -> Self {
        Visitors {
            recent: moka::sync::Cache::builder()
                .max_capacity(500_000)
                .time_to_live(window)
                .build(),
            window_ms: window.as_millis() as i64,
        }
    }

    /// Whether this click is the first of its visitor on this link within the window.
    fn first_in_window(&self, key: u64, now_ms: i64) -> bool {
        let prev = self.recent.get(&key);
        self.recent.insert(key, now_ms);
        prev.is_none_or(|prev| now_ms - prev >= self.window_ms)
    }
}

#[derive(Clone)]
pub struct ClickService {
    area: Area,
    /// Resolutions (`None`: the link does not exist).
    resolved: Arc<Cache<ClickTarget, Option<Arc<Resolved>>>>,
    visitors: Arc<Visitors>,
    /// The batch writer of clicks (flushed on shutdown).
    writer: ClickWriter,
}

impl ClickService {
    pub(crate) fn new(area: Area) -> Self {
        ClickService {
            resolved: Arc::new(Cache::new(area.changes.clone())),
            visitors: Arc::new(Visitors::new(area.settings.unique_click_window)),
            writer: ClickWriter::start(area.store.clone()),
            area,
        }
    }

    /// Returns once every click recorded before the call is written.
    pub async fn flush(&self) {
        self.writer.flush().await
    }

    /// Writes clicks made elsewhere (history imported by `trcker seed`) in
    /// one insert, as the click writer writes its batches.
    pub async fn import(&self, clicks: &[click::Model]) -> Result<(), StoreError> {
        Ok(trcker_storage::clicks::insert_clicks(&self.area.store, clicks).await?)
    }

    /// Records a click and answers where to send the customer.
    pub async fn click(&self, req: ClickRequest) -> Result<ClickOutcome, ClickError> {
        let r = self
            .resolve(&req.target)
            .await?
            .ok_or(ClickError::NotFound("tracking link"))?;
        if r.tenant.status != tenant::Status::Active {
            // A suspended tenant's links record nothing.
            let location = r
                .tenant
                .fallback_url
                .clone()
                .ok_or(ClickError::NotFound("active program"))?;
            return Ok(ClickOutcome::Fallback { location });
        }
        let active = r.active();
        let click_id = ClickId::generate(Utc::now().timestamp_millis().max(0) as u64);
        let row = self.row(&r, &click_id, active, req);
        if !active {
            let location = r
                .program
                .fallback_url
                .as_ref()
                .or(r.tenant.fallback_url.as_ref())
                .cloned()
                .ok_or(ClickError::NotFound("active offer"))?;
            self.writer.record(row).await?;
            return Ok(ClickOutcome::Fallback { location });
        }
        let destination = r
            .link
            .as_ref()
            .and_then(|l| l.destination_url.as_deref())
            .unwrap_or(&r.program.destination_url);
        let location = click_redirect(
            destination,
            &r.program.click_param,
            &ClickMacros {
                click_id: click_id.as_str(),
                affiliate_id: r.affiliate.id.as_str(),
                program_id: r.program.id.as_str(),
                subs: [
                    row.sub1.as_deref(),
                    row.sub2.as_deref(),
                    row.sub3.as_deref(),
                    row.sub4.as_deref(),
                    row.sub5.as_deref(),
                ],
            },
        );
        self.writer.record(row).await?;
        Ok(ClickOutcome::Redirect {
            location,
            click_id: click_id.into_string(),
        })
    }

    /// The click's row: sub-IDs (the URL's win over the link's defaults),
    /// the visitor's details, bot and unique flags.
    fn row(
        &self,
        r: &Resolved,
        click_id: &ClickId,
        active: bool,
        req: ClickRequest,
    ) -> click::Model {
        let defaults = r
            .link
            .as_ref()
            .map(|l| [&l.sub1, &l.sub2, &l.sub3, &l.sub4, &l.sub5]);
        let mut subs: [Option<String>; 5] = Default::default();
        for (i, s) in req.subs.into_iter().enumerate() {
            subs[i] = clamp(s.or_else(|| defaults.and_then(|d| d[i].clone())), 255);
        }
        let ip = clamp(req.ip, 64).filter(|_| self.area.settings.ip_retention_days > 0);
        let user_agent = clamp(req.user_agent, 512);
        let bot = is_bot(user_agent.as_deref());
        let visitor = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            let link = r.link.as_ref().map(|l| &l.id);
            (&r.program.id, &r.affiliate.id, link, &ip, &user_agent).hash(&mut h);
            h.finish()
        };
        let created_at = chrono::DateTime::from_timestamp_millis(click_id.unix_millis() as i64)
            .unwrap_or_else(Utc::now);
        let unique = !bot
            && active
            && self
                .visitors
                .first_in_window(visitor, created_at.timestamp_millis());
        let [sub1, sub2, sub3, sub4, sub5] = subs;
        click::Model {
            id: click_id.as_str().to_owned(),
            tenant_id: r.tenant.id.clone(),
            created_at,
            program_id: r.program.id.clone(),
            affiliate_id: r.affiliate.id.clone(),
            link_id: r.link.as_ref().map(|l| l.id.clone()),
            ip,
            user_agent,
            referrer: clamp(req.referrer, 1024),
            is_unique: unique,
            is_bot: bot,
            is_test: false,
            outcome: if active {
                click::Outcome::Redirected
            } else {
                click::Outcome::Fallback
            },
            sub1,
            sub2,
            sub3,
            sub4,
            sub5,
        }
    }

    async fn resolve(&self, target: &ClickTarget) -> Result<Option<Arc<Resolved>>, ClickError> {
        if let Some(hit) = self.resolved.get(target) {
            return Ok(hit);
        }
        let found = match target {
            ClickTarget::Named {
                brand,
                offer,
                partner,
            } => resolve_named(&self.area.store, brand, offer, partner.as_deref()).await?,
            ClickTarget::Link { code } => resolve_link(&self.area.store, code).await?,
        }
        .map(Arc::new);
        self.resolved.put(target.clone(), found.clone());
        Ok(found)
    }
}

/// `/api/r/{brand}/{offer}?via={partner}`.
async fn resolve_named(
    store: &Store,
    brand: &str,
    offer: &str,
    partner: Option<&str>,
) -> Result<Option<Resolved>, DbErr> {
    let Some(partner) = partner.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let Ok((tenant, program)) = crate::programs::by_slugs(store, brand, offer).await? else {
        return Ok(None);
    };
    let affiliate = scoped::<affiliate::Entity>(&tenant.id)
        .filter(affiliate::Column::Slug.eq(partner))
        .one(&store.conn)
        .await?;
    Ok(affiliate.map(|affiliate| Resolved {
        tenant,
        program,
        affiliate,
        link: None,
    }))
}

/// `/c/{code}`.
async fn resolve_link(store: &Store, code: &str) -> Result<Option<Resolved>, DbErr> {
    let db = &store.conn;
    let Some(link) = lookup::link_by_code(db, code).await? else {
        return Ok(None);
    };
    let tenant = lookup::tenant(&link.tenant_id).one(db).await?;
    let program = scoped_by_id::<program::Entity>(&link.tenant_id, &link.program_id)
        .one(db)
        .await?;
    let affiliate = scoped_by_id::<affiliate::Entity>(&link.tenant_id, &link.affiliate_id)
        .one(db)
        .await?;
    Ok(match (tenant, program, affiliate) {
        (Some(tenant), Some(program), Some(affiliate)) => Some(Resolved {
            tenant,
            program,
            affiliate,
            link: Some(link),
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bots_are_recognised() {
        assert!(is_bot(Some(
            "Googlebot/2.1 (+http://www.google.com/bot.html)"
        )));
        assert!(is_bot(Some("curl/8.5.0")));
        assert!(is_bot(None));
        assert!(is_bot(Some("  ")));
        assert!(!is_bot(Some(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Safari/604.1"
        )));
    }

    #[test]
    fn unique_within_the_window() {
        let s = Visitors::new(std::time::Duration::from_secs(60));
        assert!(s.first_in_window(1, 0));
        assert!(!s.first_in_window(1, 59_999));
        assert!(s.first_in_window(1, 200_000));
        assert!(s.first_in_window(2, 200_000));
    }
}
