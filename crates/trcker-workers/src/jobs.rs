//! The job handlers: apalis entry points that call the pipeline in
//! `trcker-services`. A returned error makes apalis run the job again.

use apalis::prelude::{BoxDynError, Data};
use trcker_services::Services;
use trcker_services::queue::{AttributeJob, CommissionJob, NotifyJob};

pub async fn attribute(job: AttributeJob, services: Data<Services>) -> Result<(), BoxDynError> {
    let outcome = services.run_attribute(&job).await.inspect_err(|e| {
        tracing::warn!(postback_id = %job.postback_id, error = %e, "attribute failed; will retry");
    })?;
    tracing::debug!(postback_id = %job.postback_id, ?outcome, "attributed");
    Ok(())
}

pub async fn commission(job: CommissionJob, services: Data<Services>) -> Result<(), BoxDynError> {
    services.run_commission(&job).await.inspect_err(|e| {
        tracing::warn!(conversion_id = %job.conversion_id, error = %e, "commission failed; will retry");
    })?;
    Ok(())
}

pub async fn notify(job: NotifyJob, services: Data<Services>) -> Result<(), BoxDynError> {
    services.run_notify(&job).await.inspect_err(|e| {
        tracing::warn!(delivery_id = %job.delivery_id, error = %e, "notify failed; will retry");
    })?;
    Ok(())
}
