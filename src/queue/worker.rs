//! Draining the queue: receive, reconcile, settle.
//!
//! A message is completed only after its follow-up (a scheduled retry) is safely
//! enqueued, so a crash at any point means redelivery, never loss. Retries back off
//! exponentially with jitter and honour the server's Retry-After; after the retry window
//! (or on a permanent failure) the message is dead-lettered with a reason a person can
//! act on.

use std::sync::Arc;
use std::time::Duration;

use super::work::{self, Work};
use super::{Delivery, NewMessage, WorkQueue};
use crate::backoff::Backoff;
use crate::model::ResourceId;
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

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    pub window: Duration,
    pub max_attempts: u32,
    /// How long approval re-checks go on before the sweep is left to catch the rest.
    pub recheck_window: Duration,
}

impl RetryPolicy {
    pub fn from_settings(s: &crate::config::ReconcileSettings) -> Self {
        Self {
            backoff: Backoff::new(
                Duration::from_secs(s.retry_base_secs.max(1)),
                Duration::from_secs(s.retry_max_secs.max(1)),
            ),
            window: Duration::from_secs(s.retry_window_secs),
            max_attempts: 200,
            recheck_window: Duration::from_secs(6 * 3600),
        }
    }
}

/// What to do with a work item after its reconcile: the one retry policy both consumers
/// (the embedded worker here, the Service Bus trigger in `trigger.rs`) carry out.
#[derive(Debug)]
pub enum Decision {
    Complete,
    /// Send `msg` (the next attempt, delayed by `after`), then settle this one.
    Retry {
        msg: NewMessage,
        attempt: u32,
        after: Duration,
    },
    DeadLetter(String),
}

/// How a reason names the endpoint: `resource-group/name`, short enough to read at a
/// glance. The full id travels beside the reason (the dead letter's correlation id, the
/// audit event's subject, the log line's `endpoint` field), never inside it.
pub fn short_name(id: &ResourceId) -> String {
    format!("{}/{}", id.resource_group(), id.name())
}

/// The dead-letter reason for a work item: the endpoint once, then the cause. The layers
/// below add the rest once each: the reconciler the vendor, the vendor client the
/// operation and the vendor's own message (see `effects::vendors`).
pub fn dead_letter_reason(id: &ResourceId, cause: &str) -> String {
    format!("{}: {cause}", short_name(id))
}

pub fn decide(work: &Work, id: &ResourceId, outcome: Outcome, policy: &RetryPolicy) -> Decision {
    let (attempt, first_failed_at) = (work.attempt(), work.first_failed_at());
    match outcome {
        Outcome::Done => Decision::Complete,
        Outcome::Failed { reason } => Decision::DeadLetter(dead_letter_reason(id, &reason)),
        Outcome::Requeue { after, reason } => {
            let age = Duration::from_secs(work::now_unix().saturating_sub(first_failed_at));
            if let Work::Recheck { .. } = work
                && age >= policy.recheck_window
            {
                // Still Pending is not a failure of ours: the marks already carry the
                // overdue warning, and the sweep keeps looking.
                tracing::warn!(endpoint = %id, attempts = attempt, %reason, "re-checks exhausted; leaving it to the sweep");
                return Decision::Complete;
            }
            if age >= policy.window || attempt >= policy.max_attempts {
                let cause = format!("{reason} (still failing after {attempt} attempts over {} s)", age.as_secs());
                return Decision::DeadLetter(dead_letter_reason(id, &cause));
            }
            let next = work.next_attempt(&reason);
            let delay = policy.backoff.delay_honouring(next.attempt().max(1), Some(after));
            if let Work::Recheck { .. } = work {
                tracing::debug!(endpoint = %id, attempt = next.attempt(), delay_ms = delay.as_millis() as u64, %reason, "re-check scheduled");
            } else {
                tracing::info!(endpoint = %id, work = work.kind(), attempt = next.attempt(), delay_ms = delay.as_millis() as u64, %reason, "retry scheduled");
            }
            let attempt = next.attempt();
            Decision::Retry { msg: next.message(id, delay), attempt, after: delay }
        }
    }
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

/// Runs one work item against the current state of the world.
/// Runs one work item within `reconcile.work_deadline_secs` (below the host's
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

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(2)),
            window: Duration::from_secs(60),
            max_attempts: 5,
            recheck_window: Duration::from_secs(60),
        }
    }

    const ID: &str = "/subscriptions/22222222-2222-2222-2222-222222222222/resourceGroups/app-spoke/providers/Microsoft.Network/privateEndpoints/zilliz-westus3";

    /// The worker adds the endpoint in short and nothing else: the vendor came with the
    /// reason (the reconciler's prefix), the full id stays out (it is the correlation id).
    #[test]
    fn a_dead_letter_reason_names_the_endpoint_once_in_short() {
        let id = ResourceId::parse_private_endpoint(ID).unwrap();
        let work = Work::Vendor {
            endpoint: id.to_string(),
            vendor: "zilliz".into(),
            attempt: 0,
            first_failed_at: work::now_unix(),
            reason: String::new(),
        };
        let cause = "vendor zilliz: configuration error: whitelist the subscription in az-westus3: error code 96001";
        let Decision::DeadLetter(reason) = decide(&work, &id, Outcome::Failed { reason: cause.into() }, &policy())
        else {
            panic!("a failure is dead-lettered");
        };
        assert_eq!(reason, format!("app-spoke/zilliz-westus3: {cause}"));
    }

    #[test]
    fn a_reason_past_the_retry_window_keeps_the_cause_first() {
        let id = ResourceId::parse_private_endpoint(ID).unwrap();
        let work = Work::Reconcile { endpoint: id.to_string(), attempt: 7, first_failed_at: 0, reason: String::new() };
        let outcome = Outcome::Requeue { after: Duration::from_secs(1), reason: "ARM answered 503".into() };
        let Decision::DeadLetter(reason) = decide(&work, &id, outcome, &policy()) else {
            panic!("past the window");
        };
        assert!(
            reason.starts_with("app-spoke/zilliz-westus3: ARM answered 503 (still failing after 7 attempts"),
            "{reason}"
        );
        assert!(!reason.contains("/subscriptions/"), "{reason}");
    }
}
