//! Draining the queue: receive, run, settle.
//!
//! A message is completed only after its follow-up (a scheduled retry) is safely
//! enqueued, so a crash at any point means redelivery, never loss. What a run leads to
//! (complete, retry later, dead-letter) is decided by `error_policy.rs`; this file runs
//! the work item and carries the decision out on a [`WorkQueue`] it may settle itself
//! (the embedded SQLite queue, or Service Bus received by `serve`).

use std::sync::Arc;
use std::time::Duration;

use super::error_policy::{Decision, RetryPolicy, decide};
use crate::model::ResourceId;
use crate::queue::work::{self, Work};
use crate::queue::{Delivery, NewMessage, WorkQueue};
use crate::reconcile::{Mode, Outcome, Reconciler};
use crate::telemetry::Stats;

/// What happened to one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Completed,
    Rescheduled {
        attempt: u32,
        after: Duration,
    },
    DeadLettered {
        reason: String,
    },
    /// Could not settle (queue trouble): the lock will expire and the message come back.
    Abandoned {
        reason: String,
    },
}

/// What running one work item produced.
#[derive(Debug)]
pub struct Executed {
    pub outcome: Outcome,
    /// Work it leads to (vendor calls a reconcile planned, an approval re-check),
    /// enqueued before the item is settled.
    pub follow_ups: Vec<NewMessage>,
}

impl From<Outcome> for Executed {
    fn from(outcome: Outcome) -> Self {
        Self { outcome, follow_ups: vec![] }
    }
}

/// Vendor work a reconcile report plans (nothing for a dry run).
pub fn follow_ups(report: &crate::reconcile::Report, id: &ResourceId) -> Vec<NewMessage> {
    if report.dry_run {
        return vec![];
    }
    report
        .vendors
        .iter()
        .filter(|v| v.needs_work())
        .map(|v| work::vendor_work(id, &v.vendor, v.generation(), &format!("planned by a reconcile: {:?}", v.intent)))
        .collect()
}

/// Runs one work item against the current state of the world, within `reconcile.work_deadline_secs` (below the host's
/// `functionTimeout`, which would kill the handler process and every invocation in it):
/// an item that does not finish is requeued, never killed. Every write it may have
/// started is conditional or idempotent, so running it again is safe.
pub async fn execute(reconciler: &Reconciler, work: &Work, id: &ResourceId) -> Executed {
    let limit = Duration::from_secs(reconciler.settings().work_deadline_secs.max(1));
    match tokio::time::timeout(limit, execute_unbounded(reconciler, work, id)).await {
        Ok(executed) => executed,
        Err(_) => {
            tracing::warn!(endpoint = %id, work = work.kind(), limit_s = limit.as_secs(), "work item cut off at its deadline; requeued");
            Outcome::Requeue {
                after: Duration::from_secs(reconciler.settings().retry_base_secs.max(1)),
                reason: format!("not finished within the {} s invocation deadline", limit.as_secs()),
            }
            .into()
        }
    }
}

async fn execute_unbounded(reconciler: &Reconciler, work: &Work, id: &ResourceId) -> Executed {
    match work {
        Work::Reconcile { .. } => {
            let report = reconciler.reconcile(id, Mode::Apply).await;
            Executed { follow_ups: follow_ups(&report, id), outcome: report.outcome }
        }
        Work::Vendor { vendor, first_failed_at, .. } => {
            let run = reconciler.converge_vendor(id, vendor, *first_failed_at).await;
            let base = Duration::from_secs(reconciler.settings().retry_base_secs.max(1));
            let follow_ups = if run.needs_recheck {
                vec![work::recheck(id, &format!("registered with {vendor}; waiting for its approval"), base)]
            } else {
                vec![]
            };
            Executed { outcome: run.outcome, follow_ups }
        }
        Work::Recheck { .. } => reconciler.recheck(id).await.into(),
    }
}

/// The audit event for a dead-lettered work item.
pub fn dead_letter_event(work: Option<&Work>, subject: &str, reason: &str) -> crate::effects::audit::AuditEvent {
    use crate::effects::audit::EventType;
    let (kind, vendor) = match work {
        Some(Work::Vendor { vendor, .. }) => (EventType::VendorDeadLettered, Some(vendor.clone())),
        _ => (EventType::WorkDeadLettered, None),
    };
    crate::effects::audit::AuditEvent {
        kind: kind.into(),
        subject: subject.to_owned(),
        data: serde_json::json!({"work": work.map(Work::kind), "vendor": vendor, "reason": reason}),
    }
}

pub async fn handle_delivery(
    queue: &dyn WorkQueue,
    reconciler: &Reconciler,
    policy: &RetryPolicy,
    delivery: &Delivery,
) -> Settlement {
    let stats = reconciler.stats().clone();
    let (work, id) = match work::parse(&delivery.body) {
        Ok(w) => w,
        Err(e) => return dead_letter(queue, delivery, &stats, format!("unreadable message: {e}")).await,
    };
    let executed = execute(reconciler, &work, &id).await;
    for msg in executed.follow_ups {
        if let Err(e) = queue.enqueue(msg).await {
            return abandon(queue, delivery, format!("could not queue follow-up work: {e}")).await;
        }
    }
    let settlement = match decide(&work, &id, executed.outcome, policy) {
        Decision::Complete => Settlement::Completed,
        Decision::DeadLetter(reason) => {
            let settled = dead_letter(queue, delivery, &stats, reason.clone()).await;
            if matches!(settled, Settlement::DeadLettered { .. }) {
                reconciler.publish(&[dead_letter_event(Some(&work), id.as_str(), &reason)]).await;
            }
            return settled;
        }
        Decision::Retry { msg, attempt, after } => {
            if let Err(e) = queue.enqueue(msg).await {
                return abandon(queue, delivery, format!("could not schedule retry: {e}")).await;
            }
            Settlement::Rescheduled { attempt, after }
        }
    };
    match queue.complete(delivery).await {
        Ok(()) => settlement,
        Err(e) => Settlement::Abandoned { reason: format!("complete failed: {e}") },
    }
}

async fn dead_letter(queue: &dyn WorkQueue, delivery: &Delivery, stats: &Stats, reason: String) -> Settlement {
    // The reason names the endpoint in short; the full id is the record's correlation id
    // and the log line's `endpoint` field.
    tracing::error!(message_id = %delivery.message_id, endpoint = %delivery.correlation_id, %reason, "dead-lettering work item");
    eprintln!("autopilot: dead-lettered work item {}: {reason}", delivery.message_id);
    match queue.dead_letter(delivery, &reason).await {
        Ok(()) => {
            Stats::inc(&stats.dead_lettered);
            Settlement::DeadLettered { reason }
        }
        Err(e) => Settlement::Abandoned { reason: format!("dead-letter failed: {e}") },
    }
}

async fn abandon(queue: &dyn WorkQueue, delivery: &Delivery, reason: String) -> Settlement {
    tracing::warn!(message_id = %delivery.message_id, %reason, "abandoning work item");
    let _ = queue.abandon(delivery).await;
    Settlement::Abandoned { reason }
}

/// Runs until `shutdown` flips to true. Several of these may run side by side.
pub async fn run(
    queue: Arc<dyn WorkQueue>,
    reconciler: Arc<Reconciler>,
    policy: RetryPolicy,
    lock_for: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let received = tokio::select! {
            r = queue.receive(Duration::from_secs(1), lock_for) => r,
            _ = shutdown.changed() => return,
        };
        match received {
            Ok(Some(d)) => {
                let s = handle_delivery(queue.as_ref(), &reconciler, &policy, &d).await;
                tracing::debug!(message_id = %d.message_id, settlement = ?s, "work item settled");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "queue receive failed; backing off");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
