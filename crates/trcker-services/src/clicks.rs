//! Clicks: resolve the tracking link, record the click, say where to redirect.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use trcker_domain::click_id::ClickId;
use trcker_domain::destination::{ClickMacros, click_redirect};
use trcker_storage::entities::*;
use trcker_storage::{TenantId, scoped, sea_orm};

use crate::util::{insert, now};
use crate::{ServiceError, ServiceResult, Services};

/// A click as the receiver saw it.
#[derive(Debug, Default)]
pub struct ClickRequest {
    pub brand: String,
    pub offer: String,
    pub partner: Option<String>,
    pub subs: [Option<String>; 5],
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub referrer: Option<String>,
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

    /// `GET /api/r/{brand}/{offer}?via={partner}`: records the click and answers
    /// where to send the customer.
    pub async fn click(&self, req: ClickRequest) -> ServiceResult<ClickOutcome> {
        let tenant = self
            .tenant_by_slug(&req.brand)
            .await?
            .ok_or(ServiceError::NotFound("brand"))?;
        let tenant_id = TenantId::from_trusted(tenant.id.clone());
        let program = self
            .program_by_slug(&tenant_id, &req.offer)
            .await?
            .ok_or(ServiceError::NotFound("offer"))?;
        let partner = req
            .partner
            .as_deref()
            .filter(|p| !p.is_empty())
            .ok_or(ServiceError::NotFound("partner"))?;
        let affiliate = scoped::<affiliate::Entity>(&tenant_id)
            .filter(affiliate::Column::Slug.eq(partner))
            .one(&self.store.conn)
            .await?
            .ok_or(ServiceError::NotFound("partner"))?;

        let paused =
            tenant.status != "active" || program.status != "active" || affiliate.status != "active";
        if paused {
            let location = program
                .fallback_url
                .clone()
                .ok_or(ServiceError::NotFound("offer"))?;
            return Ok(ClickOutcome::Fallback { location });
        }

        let click_id = ClickId::now();
        let [s1, s2, s3, s4, s5] = req.subs.map(|s| clamp(s, 255));
        let click = click::Model {
            id: click_id.as_str().to_owned(),
            tenant_id: tenant.id.clone(),
            created_at: now(),
            program_id: program.id.clone(),
            affiliate_id: affiliate.id.clone(),
            link_id: None,
            ip: clamp(req.ip, 64),
            user_agent: clamp(req.user_agent, 512),
            referrer: clamp(req.referrer, 1024),
            is_unique: true,
            is_bot: false,
            is_test: false,
            outcome: "redirected".into(),
            sub1: s1,
            sub2: s2,
            sub3: s3,
            sub4: s4,
            sub5: s5,
        };
        let location = click_redirect(
            &program.destination_url,
            &program.click_param,
            &ClickMacros {
                click_id: click_id.as_str(),
                affiliate_id: &affiliate.id,
                program_id: &program.id,
                subs: [
                    click.sub1.as_deref(),
                    click.sub2.as_deref(),
                    click.sub3.as_deref(),
                    click.sub4.as_deref(),
                    click.sub5.as_deref(),
                ],
            },
        );
        insert(&self.store.conn, click).await?;
        Ok(ClickOutcome::Redirect {
            location,
            click_id: click_id.into_string(),
        })
    }
}
