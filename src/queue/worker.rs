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

pub fn decide(work: &Work, id: &ResourceId, outcome: Outcome, policy: &RetryPolicy) -> Decision {
    let Work::Reconcile { attempt, first_failed_at, .. } = work;
    match outcome {
        Outcome::Done => Decision::Complete,
        Outcome::Failed { reason } => Decision::DeadLetter(format!("{id}: {reason}")),
        Outcome::Requeue { after, reason } => {
            let age = Duration::from_secs(work::now_unix().saturating_sub(*first_failed_at));
            if age >= policy.window || *attempt >= policy.max_attempts {
                return Decision::DeadLetter(format!(
                    "{id}: still failing after {attempt} attempts over {}s: {reason}",
                    age.as_secs()
                ));
            }
            let next = attempt.saturating_add(1);
            let delay = policy.backoff.delay_honouring(next, Some(after));
            tracing::info!(endpoint = %id, attempt = next, delay_ms = delay.as_millis() as u64, %reason, "retry scheduled");
            let msg = work::reconcile_retry(id, next, *first_failed_at, &reason, delay);
            Decision::Retry { msg, attempt: next, after: delay }
        }
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
    let report = reconciler.reconcile(&id, Mode::Apply).await;
    let settlement = match decide(&work, &id, report.outcome, policy) {
        Decision::Complete => Settlement::Completed,
        Decision::DeadLetter(reason) => return dead_letter(queue, delivery, &stats, reason).await,
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
    tracing::error!(message_id = %delivery.message_id, %reason, "dead-lettering work item");
    eprintln!("autopilot: dead-lettered {}: {reason}", delivery.correlation_id);
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
