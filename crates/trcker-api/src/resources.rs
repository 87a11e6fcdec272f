//! The resources, one API struct each.

use poem::web::Data;
use poem_openapi::auth::Bearer;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi, SecurityScheme, Tags};
use trcker_services::Services;
use trcker_services::admin::{
    ConversionFilter, IntegrationOptions, IntegrationUpdate, NewAffiliate, NewIntegration,
    NewProgram, NewTenant,
};
use trcker_services::auth::Caller;
use trcker_services::catalog::{
    AffiliateUpdate, LinkUpdate, NewCoupon, NewLink, NewPlan, ProgramUpdate,
};
use trcker_services::debugger::TestFireInput;

use crate::dto::*;
use crate::error::ApiError;

#[derive(Tags)]
enum ApiTags {
    /// Tenants (operator token).
    Tenants,
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
}

/// `Authorization: Bearer <operator token or tenant API key>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer")]
pub struct BearerAuth(Bearer);

async fn caller(services: &Services, auth: &BearerAuth) -> Result<Caller, ApiError> {
    Ok(services.authenticate(&auth.0.token).await?)
}

#[derive(ApiResponse)]
pub enum Created<T: poem_openapi::types::ToJSON> {
    #[oai(status = 201)]
    Created(Json<T>),
}

pub type Apis = (
    TenantsApi,
    ProgramsApi,
    AffiliatesApi,
    IntegrationsApi,
    PostbacksApi,
    LinksApi,
    CouponsApi,
    ConversionsApi,
);

pub fn apis() -> Apis {
    (
        TenantsApi,
        ProgramsApi,
        AffiliatesApi,
        IntegrationsApi,
        PostbacksApi,
        LinksApi,
        CouponsApi,
        ConversionsApi,
    )
}

pub struct TenantsApi;

#[OpenApi(tag = "ApiTags::Tenants")]
impl TenantsApi {
    /// Create a tenant (operator only). Returns its admin API key, once.
    #[oai(path = "/tenants", method = "post", operation_id = "create_tenant")]
    async fn create(
        &self,
        auth: BearerAuth,
        body: Json<NewTenantIn>,
        services: Data<&Services>,
    ) -> Result<Created<TenantCreatedOut>, ApiError> {
        let caller = caller(&services, &auth).await?;
        let NewTenantIn { name, slug } = body.0;
        let created = services
            .create_tenant(&caller, NewTenant { name, slug })
            .await?;
        Ok(Created::Created(Json(created.into())))
    }
}

pub struct ProgramsApi;

#[OpenApi(tag = "ApiTags::Programs")]
impl ProgramsApi {
    /// Create a program with its default commission.
    #[oai(path = "/programs", method = "post", operation_id = "create_program")]
    async fn create(
        &self,
        auth: BearerAuth,
        body: Json<NewProgramIn>,
        services: Data<&Services>,
    ) -> Result<Created<ProgramOut>, ApiError> {
        let caller = caller(&services, &auth).await?;
        let b = body.0;
        let input = NewProgram {
            name: b.name,
            slug: b.slug,
            destination_url: b.destination_url,
            fallback_url: b.fallback_url,
            currency: b.currency,
            commission_type: b.commission.kind,
            commission_value: b.commission.value,
            hold_days: b.hold_days,
            attribution_window_days: b.attribution_window_days,
            click_param: b.click_param,
            default_revenue: b.default_revenue,
            min_conversion_seconds: b.min_conversion_seconds,
        };
        Ok(Created::Created(Json(
            services.create_program(&caller, input).await?.into(),
        )))
    }

    /// List programs.
    #[oai(path = "/programs", method = "get", operation_id = "list_programs")]
    async fn list(
        &self,
        auth: BearerAuth,
        services: Data<&Services>,
    ) -> Result<Json<ProgramList>, ApiError> {
        let caller = caller(&services, &auth).await?;
        let items = services
            .list_programs(&caller)
            .await?
            .into_iter()
            .map(Into::into)
            .collect();
        Ok(Json(ProgramList { items }))
    }

    /// Add a commission plan: per event (goal), optionally for one affiliate. It
    /// replaces the plan it supersedes for new conversions.
    #[oai(
        path = "/programs/:id/commission-plans",
        method = "post",
        operation_id = "create_commission_plan"
    )]
    async fn create_plan(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        body: Json<NewPlanIn>,
        services: Data<&Services>,
    ) -> Result<Created<PlanOut>, ApiError> {
        let caller = caller(&services, &auth).await?;
        let b = body.0;
        let input = NewPlan {
            program_id: id.0,
            event: b.event,
            affiliate_id: b.affiliate_id,
            commission_type: b.commission.kind,
            commission_value: b.commission.value,
        };
        Ok(Created::Created(Json(
            services.create_plan(&caller, input).await?.into(),
        )))
    }

    /// The program's active commission plans.
    #[oai(
        path = "/programs/:id/commission-plans",
        method = "get",
        operation_id = "list_commission_plans"
    )]
    async fn list_plans(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        services: Data<&Services>,
    ) -> Result<Json<PlanList>, ApiError> {
        let caller = caller(&services, &auth).await?;
        let items = services
            .list_plans(&caller, &id.0)
            .await?
            .into_iter()
            .map(Into::into)
            .collect();
        Ok(Json(PlanList { items }))
    }

    /// Change a program: destination, fallback, status (pause), windows, hold.
    #[oai(
        path = "/programs/:id",
        method = "patch",
        operation_id = "update_program"
    )]
    async fn update(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        body: Json<UpdateProgramIn>,
        services: Data<&Services>,
    ) -> Result<Json<ProgramOut>, ApiError> {
        let caller = caller(&services, &auth).await?;
        let b = body.0;
        let input = ProgramUpdate {
            name: b.name,
            destination_url: b.destination_url,
            fallback_url: patch(b.fallback_url),
            status: b.status,
            attribution_window_days: b.attribution_window_days,
            min_conversion_seconds: b.min_conversion_seconds,
            hold_days: b.hold_days,
        };
        services.update_program(&caller, &id.0, input).await?;
        Ok(Json(services.get_program(&caller, &id.0).await?.into()))
    }

    /// Get one program.
    #[oai(path = "/programs/:id", method = "get", operation_id = "get_program")]
    async fn get(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        services: Data<&Services>,
    ) -> Result<Json<ProgramOut>, ApiError> {
        let caller = caller(&services, &auth).await?;
        Ok(Json(services.get_program(&caller, &id.0).await?.into()))
    }
}

pub struct AffiliatesApi;

#[OpenApi(tag = "ApiTags::Affiliates")]
impl AffiliatesApi {
    /// Create (invite) an affiliate. Returns the portal invitation link, once.
    #[oai(
        path = "/affiliates",
        method = "post",
        operation_id = "create_affiliate"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        body: Json<NewAffiliateIn>,
        services: Data<&Services>,
    ) -> Result<Created<AffiliateOut>, ApiError> {
        let caller = caller(&services, &auth).await?;
        let NewAffiliateIn {
            name,
            email,
            slug,
            postback_url,
        } = body.0;
        let created = services
            .create_affiliate(
                &caller,
                NewAffiliate {
                    name,
                    email,
                    slug,
                    postback_url,
                },
            )
            .await?;
        let mut out = AffiliateOut::from(created.affiliate);
        out.invite_url = Some(created.invite_url);
        Ok(Created::Created(Json(out)))
    }

    /// List affiliates.
    #[oai(path = "/affiliates", method = "get", operation_id = "list_affiliates")]
    async fn list(
        &self,
        auth: BearerAuth,
        services: Data<&Services>,
    ) -> Result<Json<AffiliateList>, ApiError> {
        let caller = caller(&services, &auth).await?;
        let items = services
            .list_affiliates(&caller)
            .await?
            .into_iter()
            .map(Into::into)
            .collect();
        Ok(Json(AffiliateList { items }))
    }

    /// Change an affiliate: name, status (pause), postback URL.
    #[oai(
        path = "/affiliates/:id",
        method = "patch",
        operation_id = "update_affiliate"
    )]
    async fn update(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        body: Json<UpdateAffiliateIn>,
        services: Data<&Services>,
    ) -> Result<Json<AffiliateOut>, ApiError> {
        let caller = caller(&services, &auth).await?;
        let b = body.0;
        let input = AffiliateUpdate {
            name: b.name,
            status: b.status,
            postback_url: patch(b.postback_url),
        };
        Ok(Json(
            services
                .update_affiliate(&caller, &id.0, input)
                .await?
                .into(),
        ))
    }

    /// Get one affiliate.
    #[oai(
        path = "/affiliates/:id",
        method = "get",
        operation_id = "get_affiliate"
    )]
    async fn get(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        services: Data<&Services>,
    ) -> Result<Json<AffiliateOut>, ApiError> {
        let caller = caller(&services, &auth).await?;
        Ok(Json(services.get_affiliate(&caller, &id.0).await?.into()))
    }
}

pub struct IntegrationsApi;

#[OpenApi(tag = "ApiTags::Integrations")]
impl IntegrationsApi {
    /// Create an integration: a 64-character secret and its unique postback URL, returned once.
    #[oai(
        path = "/integrations",
        method = "post",
        operation_id = "create_integration"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        body: Json<NewIntegrationIn>,
        services: Data<&Services>,
    ) -> Result<Created<IntegrationOut>, ApiError> {
        let caller = caller(&services, &auth).await?;
        let b = body.0;
        let (name, program_id) = (b.name, b.program_id);
        let options = IntegrationOptions {
            ip_allowlist: b.ip_allowlist,
            require_signature: b.require_signature,
            rate_limit_per_minute: b.rate_limit_per_minute,
            param_aliases: b.param_aliases,
        };
        let created = services
            .create_integration(
                &caller,
                NewIntegration {
                    name,
                    program_id,
                    options,
                },
            )
            .await?;
        let mut out = IntegrationOut::from(created.integration);
        out.secret = Some(created.secret);
        out.postback_url = Some(created.postback_url);
        Ok(Created::Created(Json(out)))
    }

    /// The integration's postback log: the newest requests first, with their raw
    /// parameters (secret redacted), source IP, answer and what the pipeline did.
    #[oai(
        path = "/integrations/:id/postbacks",
        method = "get",
        operation_id = "list_integration_postbacks"
    )]
    async fn postbacks(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        cursor: Query<Option<String>>,
        limit: Query<Option<u64>>,
        services: Data<&Services>,
    ) -> Result<Json<PostbackLogPage>, ApiError> {
        let caller = caller(&services, &auth).await?;
        let (rows, next_cursor) = services
            .postback_log(&caller, &id.0, cursor.0, limit.0)
            .await?;
        Ok(Json(PostbackLogPage {
            items: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        }))
    }

    /// Test-fire: make a test click for an affiliate, fire a real postback at the
    /// public receiver as a merchant would, and return the trace (received,
    /// attributed, commission, affiliate notified). Test data stays out of balances.
    #[oai(
        path = "/integrations/:id/test-fire",
        method = "post",
        operation_id = "test_fire_integration"
    )]
    async fn test_fire(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        body: Json<TestFireIn>,
        services: Data<&Services>,
    ) -> Result<Json<TestFireOut>, ApiError> {
        let caller = caller(&services, &auth).await?;
        let TestFireIn {
            affiliate_id,
            amount,
        } = body.0;
        let trace = services
            .test_fire(
                &caller,
                &id.0,
                TestFireInput {
                    affiliate_id,
                    amount,
                },
            )
            .await?;
        Ok(Json(trace.into()))
    }

    /// Change an integration: name, status (revoke), IP allow-list, signature, rate limit, aliases.
    #[oai(
        path = "/integrations/:id",
        method = "patch",
        operation_id = "update_integration"
    )]
    async fn update(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        body: Json<UpdateIntegrationIn>,
        services: Data<&Services>,
    ) -> Result<Json<IntegrationOut>, ApiError> {
        let caller = caller(&services, &auth).await?;
        let b = body.0;
        let update = IntegrationUpdate {
            name: b.name,
            status: b.status,
            options: IntegrationOptions {
                ip_allowlist: b.ip_allowlist,
                require_signature: b.require_signature,
                rate_limit_per_minute: b.rate_limit_per_minute,
                param_aliases: b.param_aliases,
            },
        };
        Ok(Json(
            services
                .update_integration(&caller, &id.0, update)
                .await?
                .into(),
        ))
    }

    /// Get one integration (the secret is never shown again).
    #[oai(
        path = "/integrations/:id",
        method = "get",
        operation_id = "get_integration"
    )]
    async fn get(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        services: Data<&Services>,
    ) -> Result<Json<IntegrationOut>, ApiError> {
        let caller = caller(&services, &auth).await?;
        Ok(Json(services.get_integration(&caller, &id.0).await?.into()))
    }
}

pub struct LinksApi;

#[OpenApi(tag = "ApiTags::Links")]
impl LinksApi {
    /// Create a tracking link (`/c/{code}`) for an affiliate and a program.
    #[oai(path = "/links", method = "post", operation_id = "create_link")]
    async fn create(
        &self,
        auth: BearerAuth,
        body: Json<NewLinkIn>,
        services: Data<&Services>,
    ) -> Result<Created<LinkOut>, ApiError> {
        let caller = caller(&services, &auth).await?;
        let b = body.0;
        let input = NewLink {
            program_id: b.program_id,
            affiliate_id: b.affiliate_id,
            destination_url: b.destination_url,
            subs: [b.sub1, b.sub2, b.sub3, b.sub4, b.sub5],
        };
        let link = services.create_link(&caller, input).await?;
        let url = services.link_url(&link.code);
        Ok(Created::Created(Json(LinkOut::new(link, url))))
    }

    /// List tracking links.
    #[oai(path = "/links", method = "get", operation_id = "list_links")]
    async fn list(
        &self,
        auth: BearerAuth,
        services: Data<&Services>,
    ) -> Result<Json<LinkList>, ApiError> {
        let caller = caller(&services, &auth).await?;
        let items = services
            .list_links(&caller)
            .await?
            .into_iter()
            .map(|l| {
                let url = services.link_url(&l.code);
                LinkOut::new(l, url)
            })
            .collect();
        Ok(Json(LinkList { items }))
    }

    /// Change a link's destination or status; the next click uses it.
    #[oai(path = "/links/:id", method = "patch", operation_id = "update_link")]
    async fn update(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        body: Json<UpdateLinkIn>,
        services: Data<&Services>,
    ) -> Result<Json<LinkOut>, ApiError> {
        let caller = caller(&services, &auth).await?;
        let b = body.0;
        let link = services
            .update_link(
                &caller,
                &id.0,
                LinkUpdate {
                    destination_url: patch(b.destination_url),
                    status: b.status,
                },
            )
            .await?;
        let url = services.link_url(&link.code);
        Ok(Json(LinkOut::new(link, url)))
    }
}

pub struct CouponsApi;

#[OpenApi(tag = "ApiTags::Coupons")]
impl CouponsApi {
    /// Create a coupon owned by an affiliate.
    #[oai(path = "/coupons", method = "post", operation_id = "create_coupon")]
    async fn create(
        &self,
        auth: BearerAuth,
        body: Json<NewCouponIn>,
        services: Data<&Services>,
    ) -> Result<Created<CouponOut>, ApiError> {
        let caller = caller(&services, &auth).await?;
        let NewCouponIn {
            program_id,
            affiliate_id,
            code,
        } = body.0;
        let coupon = services
            .create_coupon(
                &caller,
                NewCoupon {
                    program_id,
                    affiliate_id,
                    code,
                },
            )
            .await?;
        Ok(Created::Created(Json(coupon.into())))
    }

    /// List coupons.
    #[oai(path = "/coupons", method = "get", operation_id = "list_coupons")]
    async fn list(
        &self,
        auth: BearerAuth,
        services: Data<&Services>,
    ) -> Result<Json<CouponList>, ApiError> {
        let caller = caller(&services, &auth).await?;
        let items = services
            .list_coupons(&caller)
            .await?
            .into_iter()
            .map(Into::into)
            .collect();
        Ok(Json(CouponList { items }))
    }
}

pub struct PostbacksApi;

#[OpenApi(tag = "ApiTags::Integrations")]
impl PostbacksApi {
    /// Attribute an unattributed postback again, once its cause is fixed.
    #[oai(
        path = "/postbacks/:id/reattribute",
        method = "post",
        operation_id = "reattribute_postback"
    )]
    async fn reattribute(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        services: Data<&Services>,
    ) -> Result<Json<PostbackLogOut>, ApiError> {
        let caller = caller(&services, &auth).await?;
        Ok(Json(services.reattribute(&caller, &id.0).await?.into()))
    }
}

pub struct ConversionsApi;

#[OpenApi(tag = "ApiTags::Conversions")]
impl ConversionsApi {
    /// List conversions, newest first, with filters and cursor pagination.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/conversions",
        method = "get",
        operation_id = "list_conversions"
    )]
    async fn list(
        &self,
        auth: BearerAuth,
        txn_id: Query<Option<String>>,
        status: Query<Option<String>>,
        affiliate_id: Query<Option<String>>,
        program_id: Query<Option<String>>,
        cursor: Query<Option<String>>,
        limit: Query<Option<u64>>,
        services: Data<&Services>,
    ) -> Result<Json<ConversionPage>, ApiError> {
        let caller = caller(&services, &auth).await?;
        let filter = ConversionFilter {
            txn_id: txn_id.0,
            status: status.0,
            affiliate_id: affiliate_id.0,
            program_id: program_id.0,
            cursor: cursor.0,
            limit: limit.0,
        };
        let page = services.list_conversions(&caller, filter).await?;
        Ok(Json(ConversionPage {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    /// Get one conversion.
    #[oai(
        path = "/conversions/:id",
        method = "get",
        operation_id = "get_conversion"
    )]
    async fn get(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        services: Data<&Services>,
    ) -> Result<Json<ConversionOut>, ApiError> {
        let caller = caller(&services, &auth).await?;
        Ok(Json(services.get_conversion(&caller, &id.0).await?.into()))
    }
}
