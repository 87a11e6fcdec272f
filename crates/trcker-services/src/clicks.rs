//! Clicks: resolve the tracking link (from an in-memory cache), decide where the
//! customer goes, and queue the click for the batch writer.
//!
//! Two link forms: `/api/r/{brand}/{offer}?via={partner}` and the short
//! `/c/{code}` of a tracking link (with its own destination and default sub-IDs).
//! A paused tenant, program, affiliate or link sends the customer to the
//! program's fallback URL, and the click is recorded as a fallback.
//!
//! The resolution cache keeps lookups for a few seconds and is cleared whenever
//! this process's admin API changes a program, affiliate or link; other nodes see
//! a change within the cache's lifetime.
//!
//! Unique clicks: a click is unique unless the same link (program, affiliate and
//! tracking link), IP address and user agent clicked within the unique window (per
//! process), or its user agent is a bot's. Bot clicks are recorded and flagged.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use trcker_domain::click_id::ClickId;
use trcker_domain::destination::{ClickMacros, click_redirect};
use trcker_storage::entities::*;
use trcker_storage::{TenantId, scoped, sea_orm};

use crate::ttl_cache::TtlCache;
use crate::util::now;
use crate::{ServiceError, ServiceResult, Services};

/// A click as the receiver saw it.
#[derive(Debug, Default)]
pub struct ClickRequest {
    pub target: ClickTarget,
    pub subs: [Option<String>; 5],
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
    /// Paused link, program or affiliate: the program's fallback URL, no click id.
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

/// Per-process click state: the resolution cache and recent clicks for unique counting.
#[derive(Debug)]
pub struct ClickState {
    /// Resolutions (`None`: the link does not exist).
    cache: TtlCache<ClickTarget, Option<Arc<Resolved>>>,
    recent: Mutex<HashMap<u64, i64>>,
    unique_window_ms: i64,
    /// When the IP retention sweep last completed (Unix seconds; 0: not yet
    /// in this process).
    pub(crate) last_ip_sweep: std::sync::atomic::AtomicI64,
}

impl ClickState {
    pub fn new(unique_window: Duration) -> Self {
        ClickState {
            cache: TtlCache::default(),
            recent: Mutex::default(),
            unique_window_ms: unique_window.as_millis() as i64,
            last_ip_sweep: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Forgets every resolved link (after an admin change).
    pub fn invalidate(&self) {
        self.cache.clear();
    }

    /// Whether this click is the first of its visitor on this link within the window.
    fn first_in_window(&self, key: u64, now_ms: i64) -> bool {
        let Ok(mut recent) = self.recent.lock() else {
            return true;
        };
        if recent.len() > 500_000 {
            let window = self.unique_window_ms;
            recent.retain(|_, t| now_ms - *t < window);
        }
        match recent.insert(key, now_ms) {
            Some(prev) => now_ms - prev >= self.unique_window_ms,
            None => true,
        }
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

impl Services {
    pub(crate) async fn tenant_by_slug(&self, slug: &str) -> ServiceResult<Option<tenant::Model>> {
        Ok(tenant::Entity::find()
            .filter(tenant::Column::Slug.eq(slug))
            .one(&self.store.conn)
            .await?)
    }

    pub(crate) async fn program_by_slug(
        &self,
        tenant: &TenantId,
        slug: &str,
    ) -> ServiceResult<Option<program::Model>> {
        Ok(scoped::<program::Entity>(tenant)
            .filter(program::Column::Slug.eq(slug))
            .one(&self.store.conn)
            .await?)
    }

    async fn resolve(&self, target: &ClickTarget) -> ServiceResult<Option<Arc<Resolved>>> {
        if let Some(hit) = self.click_state.cache.get(target) {
            return Ok(hit);
        }
        let found = self.resolve_uncached(target).await?.map(Arc::new);
        self.click_state.cache.put(target.clone(), found.clone());
        Ok(found)
    }

    async fn resolve_uncached(&self, target: &ClickTarget) -> ServiceResult<Option<Resolved>> {
        let db = &self.store.conn;
        match target {
            ClickTarget::Named {
                brand,
                offer,
                partner,
            } => {
                let Some(partner) = partner.as_deref().filter(|p| !p.is_empty()) else {
                    return Ok(None);
                };
                let Some(tenant) = self.tenant_by_slug(brand).await? else {
                    return Ok(None);
                };
                let tid = TenantId::from_trusted(tenant.id.clone());
                let Some(program) = self.program_by_slug(&tid, offer).await? else {
                    return Ok(None);
                };
                let affiliate = scoped::<affiliate::Entity>(&tid)
                    .filter(affiliate::Column::Slug.eq(partner))
                    .one(db)
                    .await?;
                Ok(affiliate.map(|affiliate| Resolved {
                    tenant,
                    program,
                    affiliate,
                    link: None,
                }))
            }
            ClickTarget::Link { code } => {
                let Some(link) = tracking_link::Entity::find()
                    .filter(tracking_link::Column::Code.eq(code))
                    .one(db)
                    .await?
                else {
                    return Ok(None);
                };
                let tid = TenantId::from_trusted(link.tenant_id.clone());
                let tenant = tenant::Entity::find_by_id(link.tenant_id.clone())
                    .one(db)
                    .await?;
                let program =
                    trcker_storage::scoped_by_id::<program::Entity>(&tid, &link.program_id)
                        .one(db)
                        .await?;
                let affiliate =
                    trcker_storage::scoped_by_id::<affiliate::Entity>(&tid, &link.affiliate_id)
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
        }
    }

    /// Records a click and answers where to send the customer.
    pub async fn click(&self, req: ClickRequest) -> ServiceResult<ClickOutcome> {
        let r = self
            .resolve(&req.target)
            .await?
            .ok_or(ServiceError::NotFound("tracking link"))?;
        let link_active = r.link.as_ref().is_none_or(|l| l.status == "active");
        let active = r.tenant.status == "active"
            && r.program.status == "active"
            && r.affiliate.status == "active"
            && link_active;

        let t = now();
        let now_ms = t.timestamp_millis();
        let click_id = ClickId::generate(now_ms.max(0) as u64);
        // Sub-IDs in the URL win over the tracking link's defaults.
        let defaults = r
            .link
            .as_ref()
            .map(|l| [&l.sub1, &l.sub2, &l.sub3, &l.sub4, &l.sub5]);
        let mut subs: [Option<String>; 5] = Default::default();
        for (i, s) in req.subs.into_iter().enumerate() {
            subs[i] = clamp(s.or_else(|| defaults.and_then(|d| d[i].clone())), 255);
        }
        let ip = clamp(req.ip, 64);
        let user_agent = clamp(req.user_agent, 512);
        let bot = is_bot(user_agent.as_deref());
        let visitor = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (
                &r.program.id,
                &r.affiliate.id,
                r.link.as_ref().map(|l| &l.id),
                &ip,
                &user_agent,
            )
                .hash(&mut h);
            h.finish()
        };
        let unique = !bot && active && self.click_state.first_in_window(visitor, now_ms);
        let [s1, s2, s3, s4, s5] = subs;
        let row = click::Model {
            id: click_id.as_str().to_owned(),
            tenant_id: r.tenant.id.clone(),
            created_at: t,
            program_id: r.program.id.clone(),
            affiliate_id: r.affiliate.id.clone(),
            link_id: r.link.as_ref().map(|l| l.id.clone()),
            ip,
            user_agent,
            referrer: clamp(req.referrer, 1024),
            is_unique: unique,
            is_bot: bot,
            is_test: false,
            outcome: if active { "redirected" } else { "fallback" }.into(),
            sub1: s1,
            sub2: s2,
            sub3: s3,
            sub4: s4,
            sub5: s5,
        };
        if !active {
            let location = r
                .program
                .fallback_url
                .clone()
                .ok_or(ServiceError::NotFound("active offer"))?;
            self.clicks.record(row).await?;
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
                affiliate_id: &r.affiliate.id,
                program_id: &r.program.id,
                subs: [
                    row.sub1.as_deref(),
                    row.sub2.as_deref(),
                    row.sub3.as_deref(),
                    row.sub4.as_deref(),
                    row.sub5.as_deref(),
                ],
            },
        );
        self.clicks.record(row).await?;
        Ok(ClickOutcome::Redirect {
            location,
            click_id: click_id.into_string(),
        })
    }
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
        let s = ClickState::new(Duration::from_secs(60));
        assert!(s.first_in_window(1, 0));
        assert!(!s.first_in_window(1, 59_999));
        assert!(s.first_in_window(1, 200_000));
        assert!(s.first_in_window(2, 200_000));
    }
}
