//! Job 1: attribute accepted postbacks.
//!
//! A new txn_id becomes a conversion, attributed to the click's (or coupon's)
//! affiliate, once per tenant, program, txn_id and event (a `lead` and a
//! later `sale` of one order are two conversions). A known one with a new
//! status moves that conversion along the state machine and, when the
//! commission is no longer owed, books a reversing ledger entry. A postback that
//! cannot be attributed is kept with its reason ("unattributed"), never dropped.
//!
//! A job carries a batch of one tenant's postbacks (an inbox group). They are
//! read together (a handful of queries for the whole batch), decided one by one
//! by plain rules, and written in one transaction; the commission step of every
//! conversion made or moved then runs for the batch in the same job, without a
//! queue hop (queued as a job of its own only when it fails). Two postbacks of
//! one transaction in the same batch are taken in turn (a later round sees what the
//! earlier one did), and so is a postback whose conversion another worker
//! created or moved meanwhile.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use trcker_domain::ConversionStatus;
use trcker_domain::click_id::ClickId;
use trcker_domain::money::{self, Money, format_minor, parse_rate};
use trcker_domain::postback::PostbackParams;
use trcker_storage::batch::{among, insert_new, per_row};
use trcker_storage::entities::postback::State;
use trcker_storage::entities::*;
use trcker_storage::ids::{AffiliateId, ConversionId, IntegrationId, PostbackId, ProgramId};
use trcker_storage::queue::Job;
use trcker_storage::rollups::Tally;
use trcker_storage::sea_orm::sea_query::Expr;
use trcker_storage::sea_orm::{
    ColumnTrait, DatabaseTransaction, QueryFilter, QueryOrder, QuerySelect,
};
use trcker_storage::{TenantId, scoped, scoped_update};

use super::commission::{CommissionItem, CommissionJob};
use super::{JobError, Pipeline, PipelineJob};
use crate::ledger::{Cause, move_conversion};

/// Attribute accepted postbacks of one tenant: an inbox group's, or one that a
/// sweeper or a tenant queues again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttributeJob {
    pub tenant_id: TenantId,
    pub postback_ids: Vec<PostbackId>,
    /// Set when a tenant asks for attribution again: a new job, not a repeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<i64>,
}

impl AttributeJob {
    /// The job of one postback.
    pub fn one(tenant_id: TenantId, postback_id: impl Into<PostbackId>) -> Self {
        AttributeJob {
            tenant_id,
            postback_ids: vec![postback_id.into()],
            retry: None,
        }
    }

    /// The job of a postback that was attributed (or not) before and is to be
    /// taken again: keyed by when it was last processed, so that it is a new
    /// job (as the tenant's re-attribution and the inbox sweeper key it alike).
    pub fn again(tenant_id: TenantId, pb: &postback::Model) -> Self {
        AttributeJob {
            retry: Some(pb.processed_at.unwrap_or(pb.created_at).timestamp_millis()),
            ..AttributeJob::one(tenant_id, pb.id.clone())
        }
    }
}

impl Job for AttributeJob {
    const QUEUE: &'static str = "trcker.attribute";
    fn idempotency_key(&self) -> String {
        let ids = super::batch_key(&self.postback_ids, PostbackId::to_string);
        match self.retry {
            Some(r) => format!("{ids}:{r}"),
            None => ids,
        }
    }
}

impl PipelineJob for AttributeJob {
    fn describe(&self) -> String {
        format!(
            "attribute {} postbacks from {:?}",
            self.postback_ids.len(),
            self.postback_ids.first()
        )
    }

    async fn run(&self, pipeline: &Pipeline) -> Result<(), JobError> {
        for (postback_id, outcome) in pipeline.attribute(self).await? {
            tracing::debug!(%postback_id, ?outcome, "attributed");
        }
        Ok(())
    }
}

/// What attribution decided for one postback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribution {
    Converted {
        conversion_id: ConversionId,
    },
    StatusChanged {
        conversion_id: ConversionId,
        status: ConversionStatus,
    },
    Unattributed {
        reason: String,
    },
    AlreadyDone,
}

/// How long a postback waits for a click that is very recent and may still be
/// in a click writer's buffer (of this or another process).
const CLICK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How often such a postback looks for its click again.
const CLICK_POLL: std::time::Duration = std::time::Duration::from_millis(100);
/// Rounds in which a postback may meet a concurrent change to its conversion
/// before the job gives up and is run again by the queue.
const MAX_RETRY_ROUNDS: usize = 5;

/// What one postback's attribution writes.
enum Effect {
    Unattributed {
        reason: String,
    },
    Convert {
        conv: conversion::Model,
        reason: String,
    },
    Move {
        conv: conversion::Model,
        from: ConversionStatus,
        to: ConversionStatus,
    },
    /// The conversion has this status already (or is held): nothing moves.
    Same {
        conversion_id: ConversionId,
        reason: String,
    },
}

/// Everything a batch's decisions read, loaded with one query per table.
#[derive(Default)]
struct Loaded {
    /// Each postback's parameters, or why they cannot be read.
    params: HashMap<PostbackId, Result<PostbackParams, String>>,
    programs: HashMap<ProgramId, program::Model>,
    aliases: HashMap<IntegrationId, BTreeMap<String, String>>,
    /// By program, txn_id and event.
    existing: HashMap<(ProgramId, String, String), conversion::Model>,
    /// The events other than `sale` that the batch's programs have a plan
    /// for (every program has one for `sale`).
    goals: HashSet<(ProgramId, String)>,
    /// The tenant's rates from the currencies the batch's postbacks name
    /// other than their offers', newest first (read only when there are).
    rates: Vec<exchange_rate::Model>,
    clicks: HashMap<String, click::Model>,
    /// By program and code.
    coupons: HashMap<(ProgramId, String), coupon::Model>,
    affiliates: HashMap<AffiliateId, affiliate::Model>,
}

#[derive(Default)]
struct Round {
    done: Vec<(PostbackId, Attribution)>,
    /// Postbacks to take in the next round at once.
    again: Vec<PostbackId>,
    /// Postbacks waiting for their click.
    waiting: Vec<PostbackId>,
    /// The commission steps to take.
    next: Vec<CommissionItem>,
}

/// A postback's state, conversion and reason, as the round writes them.
type Mark = (PostbackId, State, Option<ConversionId>, String);

fn distinct<'a, T: Eq + std::hash::Hash + Clone + 'a>(
    values: impl IntoIterator<Item = &'a T>,
) -> Vec<T> {
    let set: HashSet<&T> = values.into_iter().collect();
    set.into_iter().cloned().collect()
}

impl Pipeline {
    /// Attributes a batch of postbacks; returns what became of each.
    pub async fn attribute(
        &self,
        job: &AttributeJob,
    ) -> Result<Vec<(PostbackId, Attribution)>, JobError> {
        let tenant = &job.tenant_id;
        // In the order they were accepted: two statuses of one transaction in
        // one batch are taken in that order.
        let mut seen = HashSet::new();
        let mut ids: Vec<PostbackId> = job
            .postback_ids
            .iter()
            .filter(|id| seen.insert(*id))
            .cloned()
            .collect();
        let order: HashMap<&PostbackId, usize> = job
            .postback_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id, i))
            .collect();
        let mut outcomes = Vec::with_capacity(ids.len());
        let click_deadline = Instant::now() + CLICK_WAIT;
        let mut retry_rounds = 0;
        while !ids.is_empty() {
            let wait_for_clicks = Instant::now() < click_deadline;
            let round = self.attribute_round(tenant, &ids, wait_for_clicks).await?;
            outcomes.extend(round.done);
            if !round.again.is_empty() {
                retry_rounds += 1;
                if retry_rounds > MAX_RETRY_ROUNDS {
                    return Err(JobError(format!(
                        "{} postbacks met concurrent changes to their conversions; retrying",
                        round.again.len()
                    )));
                }
            } else if !round.waiting.is_empty() {
                tokio::time::sleep(CLICK_POLL).await;
            }
            ids = round.again.into_iter().chain(round.waiting).collect();
            ids.sort_by_key(|id| order.get(id).copied());
        }
        Ok(outcomes)
    }

    /// One round: read the postbacks, decide each, write the decisions, and
    /// take the commission step of what they made or moved.
    async fn attribute_round(
        &self,
        tenant: &TenantId,
        ids: &[PostbackId],
        wait_for_clicks: bool,
    ) -> Result<Round, JobError> {
        let mut round = Round::default();
        let (received, mut next) = self.received(tenant, ids, &mut round).await?;
        let mut loaded = self.load_batch(tenant, &received).await?;
        let mut effects: Vec<(postback::Model, Effect)> = Vec::new();
        let mut claimed: HashSet<(ProgramId, String, String)> = HashSet::new();
        for pb in received {
            let params = match loaded.params.remove(&pb.id) {
                Some(Ok(p)) => p,
                Some(Err(reason)) => {
                    effects.push((pb, Effect::Unattributed { reason }));
                    continue;
                }
                None => return Err(JobError(format!("postback {} was not read", pb.id))),
            };
            let key = (
                pb.program_id.clone(),
                params.txn_id.clone(),
                params.event.clone(),
            );
            if claimed.contains(&key) {
                round.again.push(pb.id);
                continue;
            }
            let effect = match loaded.existing.get(&key) {
                Some(conv) => Some(change_status(conv, &params)),
                None => convert(tenant, &pb, &params, &loaded, wait_for_clicks),
            };
            match effect {
                // The click may not be written yet: look again shortly.
                None => round.waiting.push(pb.id),
                Some(effect) => {
                    // A later postback of this transaction in the batch sees
                    // what this one did, in the next round.
                    claimed.insert(key);
                    effects.push((pb, effect));
                }
            }
        }
        if !effects.is_empty() {
            let written = self.write_attributions(tenant, effects).await?;
            round.again.extend(written.again);
            round.done.extend(written.done);
            next.extend(written.next);
        }
        self.commission_step(tenant, next).await?;
        Ok(round)
    }

    /// The round's postbacks still `received`, in the order given; the others
    /// are done, and those a crash left processed get their commission step
    /// taken again.
    async fn received(
        &self,
        tenant: &TenantId,
        ids: &[PostbackId],
        round: &mut Round,
    ) -> Result<(Vec<postback::Model>, Vec<CommissionItem>), JobError> {
        let backend = self.store.conn.get_database_backend();
        let db = &self.store.conn;
        let mut pbs = scoped::<postback::Entity>(tenant)
            .filter(among(backend, postback::Column::Id, ids.iter().cloned()))
            .all(db)
            .await?;
        let order: HashMap<&PostbackId, usize> =
            ids.iter().enumerate().map(|(i, id)| (id, i)).collect();
        pbs.sort_by_key(|p| order.get(&p.id).copied());
        let found: HashSet<&PostbackId> = pbs.iter().map(|p| &p.id).collect();
        for id in ids.iter().filter(|id| !found.contains(id)) {
            round.done.push((id.clone(), Attribution::AlreadyDone));
        }
        // Done before (this job runs again after a crash): make sure the next
        // step is taken.
        let done_before: Vec<ConversionId> = pbs
            .iter()
            .filter(|p| p.state == State::Processed)
            .filter_map(|p| p.conversion_id.clone())
            .collect();
        let mut next = Vec::new();
        if !done_before.is_empty() {
            for conv in scoped::<conversion::Entity>(tenant)
                .filter(among(backend, conversion::Column::Id, done_before))
                .all(db)
                .await?
            {
                next.push(CommissionItem {
                    conversion_id: conv.id,
                    status: conv.status.0,
                });
            }
        }
        let (received, earlier): (Vec<_>, Vec<_>) =
            pbs.into_iter().partition(|p| p.state == State::Received);
        for pb in earlier {
            round.done.push((pb.id, Attribution::AlreadyDone));
        }
        Ok((received, next))
    }

    /// The commission step of a round's conversions, in this job (no queue
    /// hop; the job is acknowledged only after it). If it fails, it is queued
    /// as a job of its own and retried there; after a crash before this point,
    /// this job runs again and takes the step for the postbacks it had done.
    async fn commission_step(
        &self,
        tenant: &TenantId,
        items: Vec<CommissionItem>,
    ) -> Result<(), JobError> {
        if items.is_empty() {
            return Ok(());
        }
        let job = CommissionJob {
            tenant_id: tenant.clone(),
            items,
        };
        if let Err(e) = self.commission(&job).await {
            tracing::warn!(tenant_id = %tenant, error = %e, "commission step failed; queued to retry");
            self.queue.push(&job).await?;
        }
        Ok(())
    }

    /// Reads what the received postbacks of a batch need, one query per table.
    async fn load_batch(
        &self,
        tenant: &TenantId,
        received: &[postback::Model],
    ) -> Result<Loaded, JobError> {
        let mut loaded = Loaded::default();
        if received.is_empty() {
            return Ok(loaded);
        }
        let program_ids = distinct(received.iter().map(|p| &p.program_id));
        self.load_offers(tenant, received, &program_ids, &mut loaded)
            .await?;
        for pb in received {
            let params = parse_postback(pb, &loaded)?;
            loaded.params.insert(pb.id.clone(), params);
        }
        self.load_owners(tenant, &program_ids, &mut loaded).await?;
        self.load_rates(tenant, received, &mut loaded).await?;
        Ok(loaded)
    }

    /// The tenant's exchange rates from the currencies of postbacks whose
    /// currency is not their offer's (no query when there are none).
    async fn load_rates(
        &self,
        tenant: &TenantId,
        received: &[postback::Model],
        loaded: &mut Loaded,
    ) -> Result<(), JobError> {
        let mut foreign: Vec<String> = received
            .iter()
            .filter_map(|pb| {
                let p = loaded.params.get(&pb.id)?.as_ref().ok()?;
                let program = loaded.programs.get(&pb.program_id)?;
                (program.currency.0 != p.currency).then(|| p.currency.code().to_owned())
            })
            .collect();
        if foreign.is_empty() {
            return Ok(());
        }
        foreign.sort();
        foreign.dedup();
        let backend = self.store.conn.get_database_backend();
        loaded.rates = scoped::<exchange_rate::Entity>(tenant)
            .filter(among(backend, exchange_rate::Column::FromCurrency, foreign))
            .order_by_desc(exchange_rate::Column::ValidFrom)
            .all(&self.store.conn)
            .await?;
        Ok(())
    }

    /// The batch's programs and its integrations' parameter aliases.
    async fn load_offers(
        &self,
        tenant: &TenantId,
        received: &[postback::Model],
        program_ids: &[ProgramId],
        loaded: &mut Loaded,
    ) -> Result<(), JobError> {
        let backend = self.store.conn.get_database_backend();
        let db = &self.store.conn;
        for p in scoped::<program::Entity>(tenant)
            .filter(among(backend, program::Column::Id, program_ids.to_vec()))
            .all(db)
            .await?
        {
            loaded.programs.insert(p.id.clone(), p);
        }
        for i in scoped::<integration::Entity>(tenant)
            .filter(among(
                backend,
                integration::Column::Id,
                distinct(received.iter().map(|p| &p.integration_id)),
            ))
            .all(db)
            .await?
        {
            let aliases = i
                .param_aliases
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default();
            loaded.aliases.insert(i.id, aliases);
        }
        Ok(())
    }

    /// The conversions the batch's txn_ids have, and what attributes its
    /// postbacks.
    async fn load_owners(
        &self,
        tenant: &TenantId,
        program_ids: &[ProgramId],
        loaded: &mut Loaded,
    ) -> Result<(), JobError> {
        let backend = self.store.conn.get_database_backend();
        let db = &self.store.conn;
        let parsed: Vec<&PostbackParams> = loaded.params.values().flatten().collect();
        if parsed.is_empty() {
            return Ok(());
        }
        for c in scoped::<conversion::Entity>(tenant)
            .filter(among(
                backend,
                conversion::Column::ProgramId,
                program_ids.to_vec(),
            ))
            .filter(among(
                backend,
                conversion::Column::TxnId,
                distinct(parsed.iter().map(|p| &p.txn_id)),
            ))
            .all(db)
            .await?
        {
            loaded
                .existing
                .insert((c.program_id.clone(), c.txn_id.clone(), c.event.clone()), c);
        }
        let events = distinct(parsed.iter().map(|p| &p.event).filter(|e| *e != "sale"));
        if !events.is_empty() {
            for (program_id, event) in scoped::<commission_plan::Entity>(tenant)
                .select_only()
                .column(commission_plan::Column::ProgramId)
                .column(commission_plan::Column::Event)
                .filter(among(
                    backend,
                    commission_plan::Column::ProgramId,
                    program_ids.to_vec(),
                ))
                .filter(among(backend, commission_plan::Column::Event, events))
                .filter(commission_plan::Column::Active.eq(true))
                .into_tuple::<(ProgramId, String)>()
                .all(db)
                .await?
            {
                loaded.goals.insert((program_id, event));
            }
        }
        let click_ids: Vec<String> = parsed
            .iter()
            .filter_map(|p| p.click_id.as_ref().map(|c| c.as_str().to_owned()))
            .collect();
        let codes: Vec<String> = parsed
            .iter()
            .filter(|p| p.click_id.is_none())
            .filter_map(|p| p.coupon_code.clone())
            .collect();
        self.load_sources(tenant, program_ids, click_ids, codes, loaded)
            .await
    }

    /// The clicks and coupons that attribute the batch's postbacks, and their
    /// affiliates.
    async fn load_sources(
        &self,
        tenant: &TenantId,
        program_ids: &[ProgramId],
        click_ids: Vec<String>,
        codes: Vec<String>,
        loaded: &mut Loaded,
    ) -> Result<(), JobError> {
        let backend = self.store.conn.get_database_backend();
        let db = &self.store.conn;
        if !click_ids.is_empty() {
            for c in scoped::<click::Entity>(tenant)
                .filter(among(backend, click::Column::Id, click_ids))
                .all(db)
                .await?
            {
                loaded.clicks.insert(c.id.clone(), c);
            }
        }
        if !codes.is_empty() {
            for c in scoped::<coupon::Entity>(tenant)
                .filter(among(
                    backend,
                    coupon::Column::ProgramId,
                    program_ids.to_vec(),
                ))
                .filter(among(backend, coupon::Column::Code, codes))
                .filter(coupon::Column::Status.eq(Activity::Active))
                .all(db)
                .await?
            {
                loaded
                    .coupons
                    .insert((c.program_id.clone(), c.code.clone()), c);
            }
        }
        let affiliate_ids = distinct(
            loaded
                .clicks
                .values()
                .map(|c| &c.affiliate_id)
                .chain(loaded.coupons.values().map(|c| &c.affiliate_id)),
        );
        if !affiliate_ids.is_empty() {
            for a in scoped::<affiliate::Entity>(tenant)
                .filter(among(backend, affiliate::Column::Id, affiliate_ids))
                .all(db)
                .await?
            {
                loaded.affiliates.insert(a.id.clone(), a);
            }
        }
        Ok(())
    }

    /// Writes a round's decisions in one transaction: the new conversions in one
    /// insert, the status moves one by one (each guarded by the status it moves
    /// from), and every postback's state in one update.
    async fn write_attributions(
        &self,
        tenant: &TenantId,
        effects: Vec<(postback::Model, Effect)>,
    ) -> Result<Round, JobError> {
        let mut out = Round::default();
        let t = Utc::now();
        let txn = self.store.pipeline_txn().await?;
        let mut new: Vec<conversion::Model> = effects
            .iter()
            .filter_map(|(_, e)| match e {
                Effect::Convert { conv, .. } => Some(conv.clone()),
                _ => None,
            })
            .collect();
        // The same order in every batch, so that two batches inserting the
        // same transaction ids take their locks alike.
        new.sort_by(|a, b| {
            (&a.program_id, &a.txn_id, &a.event).cmp(&(&b.program_id, &b.txn_id, &b.event))
        });
        let inserted = insert_new::<conversion::Entity, _>(
            &txn,
            &new,
            &[
                conversion::Column::TenantId,
                conversion::Column::ProgramId,
                conversion::Column::TxnId,
                conversion::Column::Event,
            ],
        )
        .await?;
        let mut tally = Tally::default();
        for conv in new.iter().filter(|c| inserted.contains(&c.id)) {
            if conv.status.earns_commission() {
                tally.conversion(conv, 1);
            }
        }
        let mut marks: Vec<Mark> = Vec::new();
        for (pb, effect) in effects {
            let mark = match effect {
                Effect::Unattributed { reason } => {
                    out.done.push((
                        pb.id.clone(),
                        Attribution::Unattributed {
                            reason: reason.clone(),
                        },
                    ));
                    (pb.id, State::Unattributed, None, reason)
                }
                Effect::Same {
                    conversion_id,
                    reason,
                } => {
                    out.done.push((pb.id.clone(), Attribution::AlreadyDone));
                    (pb.id, State::Processed, Some(conversion_id), reason)
                }
                Effect::Convert { conv, reason } => {
                    if !inserted.contains(&conv.id) {
                        // Another postback of this txn_id got there first:
                        // next round, this one is a status change.
                        out.again.push(pb.id);
                        continue;
                    }
                    out.converted(&pb.id, &conv.id, conv.status.0);
                    (pb.id, State::Processed, Some(conv.id), reason)
                }
                Effect::Move { conv, from, to } => {
                    let cause = Cause::postback(pb.id.as_str());
                    if !move_conversion(&txn, tenant, &conv, from, to, &cause, t, &mut tally)
                        .await?
                    {
                        out.again.push(pb.id);
                        continue;
                    }
                    out.moved(&pb.id, &conv.id, to);
                    let reason = format!("conversion {} moved from {} to {}", conv.id, from, to);
                    (pb.id, State::Processed, Some(conv.id), reason)
                }
            };
            marks.push(mark);
        }
        mark_postbacks(&txn, tenant, &marks, t).await?;
        tally.apply(&txn).await?;
        txn.commit().await?;
        Ok(out)
    }
}

impl Round {
    fn converted(
        &mut self,
        postback_id: &PostbackId,
        conversion_id: &ConversionId,
        status: ConversionStatus,
    ) {
        self.next.push(CommissionItem {
            conversion_id: conversion_id.clone(),
            status,
        });
        self.done.push((
            postback_id.clone(),
            Attribution::Converted {
                conversion_id: conversion_id.clone(),
            },
        ));
    }

    fn moved(
        &mut self,
        postback_id: &PostbackId,
        conversion_id: &ConversionId,
        to: ConversionStatus,
    ) {
        self.next.push(CommissionItem {
            conversion_id: conversion_id.clone(),
            status: to,
        });
        self.done.push((
            postback_id.clone(),
            Attribution::StatusChanged {
                conversion_id: conversion_id.clone(),
                status: to,
            },
        ));
    }
}

/// Every postback's new state, conversion and reason, in one UPDATE (each
/// row its own values), guarded by its still being `received`.
async fn mark_postbacks(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    marks: &[Mark],
    t: DateTime<Utc>,
) -> Result<(), JobError> {
    use postback::Column as C;
    if marks.is_empty() {
        return Ok(());
    }
    let backend = trcker_storage::sea_orm::ConnectionTrait::get_database_backend(txn);
    let column = |f: &dyn Fn(&Mark) -> trcker_storage::sea_orm::Value| {
        per_row(backend, C::Id, marks.iter().map(|m| (&m.0, f(m))))
    };
    scoped_update::<postback::Entity>(tenant)
        .col_expr(C::State, column(&|m| m.1.into()))
        .col_expr(C::ConversionId, column(&|m| m.2.clone().into()))
        .col_expr(C::Reason, column(&|m| m.3.clone().into()))
        .col_expr(C::ProcessedAt, Expr::value(t))
        .filter(among(backend, C::Id, marks.iter().map(|m| m.0.clone())))
        .filter(C::State.eq(State::Received))
        .exec(txn)
        .await?;
    Ok(())
}

/// The postback's parameters, or why they cannot be read.
fn parse_postback(
    pb: &postback::Model,
    loaded: &Loaded,
) -> Result<Result<PostbackParams, String>, JobError> {
    let program = loaded.programs.get(&pb.program_id).ok_or_else(|| {
        JobError(format!(
            "program {} of postback {} is gone",
            pb.program_id, pb.id
        ))
    })?;
    let pairs: Vec<(String, String)> = serde_json::from_str(&pb.raw_params)
        .map_err(|e| JobError(format!("stored parameters of postback {}: {e}", pb.id)))?;
    let no_aliases = BTreeMap::new();
    let aliases = loaded
        .aliases
        .get(&pb.integration_id)
        .unwrap_or(&no_aliases);
    Ok(
        trcker_domain::postback::parse(&pairs, aliases, program.currency.0).map_err(|fields| {
            fields
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; ")
        }),
    )
}

/// The affiliate a new conversion belongs to, or why there is none; `None`
/// while its click may still be on its way.
type Found<'a> = Option<Result<(&'a affiliate::Model, Option<&'a click::Model>), String>>;

/// Finds the affiliate a new conversion belongs to, through its click or its
/// coupon.
fn resolve_affiliate<'a>(
    program: &program::Model,
    params: &PostbackParams,
    received_at: DateTime<Utc>,
    loaded: &'a Loaded,
    wait_for_clicks: bool,
) -> Found<'a> {
    let (affiliate_id, click) = if let Some(click_id) = &params.click_id {
        let Some(click) = loaded.clicks.get(click_id.as_str()) else {
            return if wait_for_clicks && may_be_buffered(click_id) {
                None
            } else {
                Some(Err(format!("unknown click id {click_id}")))
            };
        };
        if let Err(reason) = click_fits(program, click, received_at) {
            return Some(Err(reason));
        }
        (&click.affiliate_id, Some(click))
    } else if let Some(code) = &params.coupon_code {
        match loaded.coupons.get(&(program.id.clone(), code.clone())) {
            Some(c) => (&c.affiliate_id, None),
            None => return Some(Err(format!("unknown coupon code {code}"))),
        }
    } else {
        return Some(Err("no click id and no coupon code".into()));
    };
    Some(match loaded.affiliates.get(affiliate_id) {
        None => Err(format!("affiliate {affiliate_id} no longer exists")),
        Some(a) if a.status != Activity::Active => {
            Err(format!("affiliate {} is {}", a.slug, a.status))
        }
        Some(a) => Ok((a, click)),
    })
}

/// Whether a click can be credited with a conversion received at
/// `received_at`: on the same offer, not too fast, within the window.
fn click_fits(
    program: &program::Model,
    click: &click::Model,
    received_at: DateTime<Utc>,
) -> Result<(), String> {
    let click_id = &click.id;
    if click.program_id != program.id {
        return Err(format!("click {click_id} was made on another offer"));
    }
    let window = Duration::days(program.attribution_window_days.into());
    let age = received_at - click.created_at;
    if age.num_seconds() < i64::from(program.min_conversion_seconds) {
        return Err(format!(
            "conversion came {} seconds after click {click_id}; the offer's minimum is {} seconds",
            age.num_seconds().max(0),
            program.min_conversion_seconds
        ));
    }
    if age > window {
        return Err(format!(
            "click {click_id} expired: made {} days ago, the offer's attribution window is {} days",
            age.num_days(),
            program.attribution_window_days
        ));
    }
    Ok(())
}

/// A new transaction id: the conversion to create, or why there is none;
/// `None` while its click may still be on its way.
fn convert(
    tenant: &TenantId,
    pb: &postback::Model,
    params: &PostbackParams,
    loaded: &Loaded,
    wait_for_clicks: bool,
) -> Option<Effect> {
    let unattributed = |reason| Some(Effect::Unattributed { reason });
    let Some(program) = loaded.programs.get(&pb.program_id) else {
        return unattributed(format!("program {} is gone", pb.program_id));
    };
    let fx = if params.currency != program.currency.0 {
        match exchange(params, program, pb.created_at, &loaded.rates) {
            Ok(fx) => Some(fx),
            Err(reason) => return unattributed(reason),
        }
    } else {
        None
    };
    if !matches!(
        params.status,
        ConversionStatus::Approved | ConversionStatus::Pending | ConversionStatus::Rejected
    ) {
        let event = if params.event == "sale" {
            String::new()
        } else {
            format!(" (event {})", params.event)
        };
        return unattributed(format!(
            "status {} for txn_id {}{event} that has no conversion",
            params.status, params.txn_id
        ));
    }
    if params.event != "sale"
        && !loaded
            .goals
            .contains(&(program.id.clone(), params.event.clone()))
    {
        return unattributed(format!(
            "event '{}' is not a goal of this offer: no commission plan names it \
             (add one with POST /api/v1/programs/{}/commission-plans)",
            params.event, program.id
        ));
    }
    let (affiliate, click) =
        match resolve_affiliate(program, params, pb.created_at, loaded, wait_for_clicks) {
            None => return None,
            Some(Err(reason)) => return unattributed(reason),
            Some(Ok(found)) => found,
        };
    let conv = new_conversion(tenant, pb, params, program, affiliate, click, fx.as_ref());
    let reason = format!(
        "attributed to affiliate {} ({} {})",
        affiliate.slug,
        format_minor(conv.amount_minor, program.currency.0),
        program.currency
    );
    Some(Effect::Convert { conv, reason })
}

/// A postback's amounts in its offer's currency, and the rate that
/// converted them.
struct Fx {
    rate: String,
    amount: Option<Money>,
    payout: Option<Money>,
}

/// Converts a postback's amounts into its offer's currency with the
/// tenant's latest rate valid when the sale happened, or says why not.
fn exchange(
    params: &PostbackParams,
    program: &program::Model,
    at: DateTime<Utc>,
    rates: &[exchange_rate::Model],
) -> Result<Fx, String> {
    let to = program.currency.0;
    let Some(rate) = rates.iter().find(|r| {
        r.from_currency.0 == params.currency && r.to_currency.0 == to && r.valid_from <= at
    }) else {
        return Err(format!(
            "currency {} differs from the offer's {} and no exchange rate is configured",
            params.currency, program.currency
        ));
    };
    let value = parse_rate(&rate.rate).map_err(|e| format!("exchange rate {}: {e}", rate.id))?;
    let conv = |m: Option<Money>, field: &str| {
        m.map(|m| money::convert(m, value, to))
            .transpose()
            .map_err(|e| format!("{field} converted at {} {e}", rate.rate))
    };
    Ok(Fx {
        amount: conv(params.amount, "amount")?,
        payout: conv(params.payout, "payout")?,
        rate: value.to_string(),
    })
}

/// The conversion a postback makes. One the merchant approved is held for
/// the offer's hold period.
fn new_conversion(
    tenant: &TenantId,
    pb: &postback::Model,
    params: &PostbackParams,
    program: &program::Model,
    affiliate: &affiliate::Model,
    click: Option<&click::Model>,
    fx: Option<&Fx>,
) -> conversion::Model {
    // A conversion happened when its postback arrived, however long the
    // queue took; its hold runs from then too.
    let t = pb.created_at;
    let (amount, payout) = match fx {
        Some(fx) => (fx.amount, fx.payout),
        None => (params.amount, params.payout),
    };
    let amount_minor = amount
        .map(|m| m.minor)
        .or(program.default_revenue_minor)
        .unwrap_or(0);
    let (status, hold_until) = match params.status {
        ConversionStatus::Approved if program.hold_days > 0 => (
            ConversionStatus::Pending,
            Some(t + Duration::days(program.hold_days.into())),
        ),
        s => (s, None),
    };
    conversion::Model {
        id: ConversionId::generate(),
        tenant_id: tenant.clone(),
        created_at: t,
        program_id: program.id.clone(),
        affiliate_id: affiliate.id.clone(),
        click_id: click.map(|c| c.id.clone()),
        coupon_code: if click.is_none() {
            params.coupon_code.clone()
        } else {
            None
        },
        postback_id: pb.id.clone(),
        txn_id: params.txn_id.clone(),
        event: params.event.clone(),
        status: conversion::Status(status),
        created_status: Some(conversion::Status(status)),
        amount_minor,
        currency: program.currency,
        payout_minor: None,
        payout_override_minor: payout.map(|m| m.minor),
        commission_explanation: None,
        commission_detail: None,
        hold_until,
        is_test: pb.is_test || params.test,
        updated_at: Utc::now(),
        original_amount_minor: fx.and(params.amount).map(|m| m.minor),
        original_currency: fx.map(|_| params.currency.into()),
        exchange_rate: fx.map(|f| f.rate.clone()),
        sub1: click.and_then(|c| c.sub1.clone()),
        sub2: click.and_then(|c| c.sub2.clone()),
        sub3: click.and_then(|c| c.sub3.clone()),
        sub4: click.and_then(|c| c.sub4.clone()),
        sub5: click.and_then(|c| c.sub5.clone()),
    }
}

/// Whether a click id is recent enough that its click may still be buffered.
fn may_be_buffered(click_id: &ClickId) -> bool {
    let age_ms = Utc::now().timestamp_millis() - click_id.unix_millis() as i64;
    (-5_000..15_000).contains(&age_ms)
}

/// A known txn_id with a postback's status: the move, or why there is none.
fn change_status(conv: &conversion::Model, params: &PostbackParams) -> Effect {
    let from = conv.status.0;
    let to = params.status;
    if from == to
        || (from == ConversionStatus::Pending
            && to == ConversionStatus::Approved
            && conv.hold_until.is_some())
    {
        // Same status again (e.g. with another amount), or an approval of a
        // conversion that is in its hold period: nothing moves.
        return Effect::Same {
            conversion_id: conv.id.clone(),
            reason: format!(
                "conversion {} is {} already; nothing changed",
                conv.id, conv.status
            ),
        };
    }
    if !from.can_move_to(to) {
        return Effect::Unattributed {
            reason: format!(
                "conversion {} is {}; it cannot become {}",
                conv.id, from, to
            ),
        };
    }
    Effect::Move {
        conv: conv.clone(),
        from,
        to,
    }
}
