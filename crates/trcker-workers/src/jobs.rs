//! The job handlers: apalis entry points that call the pipeline in
//! `trcker-services`. A returned error makes apalis run the job again.

use apalis::prelude::{BoxDynError, Data};
use trcker_services::Services;
use trcker_services::queue::{AttributeJob, CommissionJob, NotifyJob};

pub async fn attribute(job: AttributeJob, services: Data<Services>) -> Result<(), BoxDynError> {
    let outcomes = services.run_attribute(&job).await.inspect_err(|e| {
        tracing::warn!(postbacks = job.postback_ids.len(), first = ?job.postback_ids.first(), error = %e, "attribute failed; will retry");
    })?;
    for (postback_id, outcome) in outcomes {
        tracing::debug!(%postback_id, ?outcome, "attributed");
    }
    Ok(())
}

pub async fn commission(job: CommissionJob, services: Data<Services>) -> Result<(), BoxDynError> {
    services.run_commission(&job).await.inspect_err(|e| {
        tracing::warn!(conversions = job.items.len(), first = ?job.items.first().map(|i| &i.conversion_id), error = %e, "commission failed; will retry");
    })?;
    Ok(())
}

pub async fn notify(job: NotifyJob, services: Data<Services>) -> Result<(), BoxDynError> {
    services.run_notify(&job).await.inspect_err(|e| {
        tracing::warn!(deliveries = job.items.len(), first = ?job.items.first().map(|i| &i.delivery_id), error = %e, "notify failed; will retry");
    })?;
    Ok(())
}
