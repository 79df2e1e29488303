//! What happens to a work item after its run: complete it, schedule the next attempt, or
//! park it with a reason a person can act on.
//!
//! This is the one retry policy of the process, in the spirit of kube-runtime's
//! `error_policy`: both consumers of the queue (the embedded worker in `worker.rs`, the
//! Service Bus trigger in `trigger.rs`) and the event path's fan-out ask it, so a work
//! item is retried the same way wherever it runs. Retries back off exponentially with
//! jitter and honour the server's Retry-After; after the retry window (or on a permanent
//! failure) the item is dead-lettered; approval re-checks that run out are left to the
//! sweep, because still Pending is not a failure of ours.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::model::ResourceId;
use crate::queue::NewMessage;
use crate::queue::work::{self, Work};
use crate::reconcile::{Outcome, Report};

/// How long and how often a work item is retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    pub window: Duration,
    pub max_attempts: u32,
    /// How long approval re-checks go on before the sweep is left to catch the rest.
    pub recheck_window: Duration,
}

impl RetryPolicy {
    /// Attempts at most, whatever the window: a bound on a message that keeps failing fast.
    pub const MAX_ATTEMPTS: u32 = 200;
    /// Approval re-checks stop after this long unless configured otherwise.
    pub const RECHECK_WINDOW: Duration = Duration::from_secs(6 * 3600);

    /// Backoff between `base` and `max` (each at least 1 s), retried for `window`.
    pub fn new(base: Duration, max: Duration, window: Duration) -> Self {
        Self {
            backoff: Backoff::new(base.max(Duration::from_secs(1)), max.max(Duration::from_secs(1))),
            window,
            max_attempts: Self::MAX_ATTEMPTS,
            recheck_window: Self::RECHECK_WINDOW,
        }
    }
}

/// What to do with a work item after its reconcile.
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

/// The event path's half of the policy: whether a reconcile it ran needs a queued retry,
/// and after how long. A failure is retried too: the worker re-reads and dead-letters
/// with the reason if it still fails.
pub fn retry_after_reconcile(report: &Report) -> Option<(String, Duration)> {
    match &report.outcome {
        Outcome::Done => None,
        Outcome::Requeue { after, reason } => Some((reason.clone(), *after)),
        Outcome::Failed { reason } => Some((reason.clone(), FAILED_RECONCILE_RETRY)),
    }
}

/// How soon the worker takes over a reconcile the event path saw fail.
pub const FAILED_RECONCILE_RETRY: Duration = Duration::from_secs(5);

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

    /// The policy adds the endpoint in short and nothing else: the vendor came with the
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
