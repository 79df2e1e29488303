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
use crate::model::{ResourceId, Retry};
use crate::queue::NewMessage;
use crate::queue::work::{self, Work};
use crate::reconcile::Outcome;

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

/// The [`Retry`] class of a run's outcome (`None` = done). The reconciler already folded
/// its errors' classes into the outcome: `Requeue` is transient with its wait as the
/// floor, `Failed` is permanent.
pub fn class_of(outcome: &Outcome) -> Option<Retry> {
    match outcome {
        Outcome::Done => None,
        Outcome::Requeue { after, .. } => Some(Retry::Transient { after: Some(*after) }),
        Outcome::Failed { .. } => Some(Retry::Permanent),
    }
}

/// Where a work item stands when its run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// The attempt that just ran (0 or 1 for the first, as the envelope counts).
    pub attempt: u32,
    /// Since the item first failed (the retry window is measured from there).
    pub age: Duration,
    /// An approval re-check: running out is not a failure (see [`Action::LeaveToSweep`]).
    pub recheck: bool,
}

/// What the policy says to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Complete,
    /// Run it again after this delay (backoff from the attempt, Retry-After as a floor).
    RequeueAfter(Duration),
    /// Park it for a person. `exhausted` = it kept failing for the whole retry window (or
    /// `max_attempts`); otherwise the failure itself will not go away by retrying.
    DeadLetter {
        exhausted: bool,
    },
    /// Stop retrying without blaming anyone: approval re-checks past their window (still
    /// Pending is not a failure of ours; the marks carry the overdue warning and the
    /// sweep keeps looking).
    LeaveToSweep,
}

/// The one error policy: class + attempt + deadline → next step. Pure, so the table is
/// unit-tested below.
pub fn error_policy(class: Option<Retry>, at: Attempt, policy: &RetryPolicy) -> Action {
    let Some(class) = class else { return Action::Complete };
    match class {
        Retry::Permanent | Retry::Misconfigured => Action::DeadLetter { exhausted: false },
        Retry::Transient { .. } | Retry::Conflict => {
            if at.recheck && at.age >= policy.recheck_window {
                return Action::LeaveToSweep;
            }
            if at.age >= policy.window || at.attempt >= policy.max_attempts {
                return Action::DeadLetter { exhausted: true };
            }
            let next = at.attempt.saturating_add(1).max(1);
            Action::RequeueAfter(policy.backoff.delay_honouring(next, class.after()))
        }
    }
}

/// The worker's and the trigger's question: what to do with `work` after its run.
pub fn decide(work: &Work, id: &ResourceId, outcome: Outcome, policy: &RetryPolicy) -> Decision {
    let at = Attempt {
        attempt: work.attempt(),
        age: Duration::from_secs(work::now_unix().saturating_sub(work.first_failed_at())),
        recheck: matches!(work, Work::Recheck { .. }),
    };
    let action = error_policy(class_of(&outcome), at, policy);
    let reason = match outcome {
        Outcome::Done => return Decision::Complete,
        Outcome::Requeue { reason, .. } | Outcome::Failed { reason } => reason,
    };
    match action {
        Action::Complete => Decision::Complete,
        Action::LeaveToSweep => {
            tracing::warn!(endpoint = %id, attempts = at.attempt, %reason, "re-checks exhausted; leaving it to the sweep");
            Decision::Complete
        }
        Action::DeadLetter { exhausted: false } => Decision::DeadLetter(dead_letter_reason(id, &reason)),
        Action::DeadLetter { exhausted: true } => {
            let cause = format!("{reason} (still failing after {} attempts over {} s)", at.attempt, at.age.as_secs());
            Decision::DeadLetter(dead_letter_reason(id, &cause))
        }
        Action::RequeueAfter(delay) => {
            let next = work.next_attempt(&reason);
            if at.recheck {
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
/// and after how long. Whatever did not converge is handed to the worker; a failure too,
/// after [`FAILED_RECONCILE_RETRY`]: the worker re-reads and dead-letters with the reason
/// if it still fails.
pub fn retry_after_reconcile(outcome: &Outcome) -> Option<(String, Duration)> {
    let class = class_of(outcome)?;
    let reason = match outcome {
        Outcome::Done => return None,
        Outcome::Requeue { reason, .. } | Outcome::Failed { reason } => reason.clone(),
    };
    let after = match class {
        Retry::Transient { after } => after.unwrap_or_default(),
        Retry::Conflict | Retry::Permanent | Retry::Misconfigured => FAILED_RECONCILE_RETRY,
    };
    Some((reason, after))
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

    fn at(attempt: u32, age_secs: u64) -> Attempt {
        Attempt { attempt, age: Duration::from_secs(age_secs), recheck: false }
    }

    /// The policy table: class × attempt × age → action (window 60 s, 5 attempts,
    /// backoff 1..2 s, re-checks for 60 s).
    #[test]
    fn the_policy_table() {
        let p = policy();
        let hint = Some(Duration::from_secs(30));
        assert_eq!(error_policy(None, at(3, 999), &p), Action::Complete);
        for class in [Retry::Permanent, Retry::Misconfigured] {
            assert_eq!(error_policy(Some(class), at(0, 0), &p), Action::DeadLetter { exhausted: false }, "{class:?}");
        }
        for class in [Retry::LATER, Retry::Conflict, Retry::Transient { after: hint }] {
            // Within the window and the attempts: requeued, after the backoff.
            let Action::RequeueAfter(d) = error_policy(Some(class), at(1, 10), &p) else { panic!("{class:?}") };
            assert!(d <= Duration::from_secs(30), "{class:?}: {d:?}");
            // Past the window, or out of attempts: parked as exhausted.
            assert_eq!(error_policy(Some(class), at(1, 60), &p), Action::DeadLetter { exhausted: true });
            assert_eq!(error_policy(Some(class), at(5, 0), &p), Action::DeadLetter { exhausted: true });
            // A re-check past its own window is left to the sweep, even out of attempts.
            let recheck = Attempt { recheck: true, ..at(9, 60) };
            assert_eq!(error_policy(Some(class), recheck, &p), Action::LeaveToSweep);
            let recheck = Attempt { recheck: true, ..at(1, 10) };
            assert!(matches!(error_policy(Some(class), recheck, &p), Action::RequeueAfter(_)));
        }
        // Retry-After is a floor over the backoff (capped by the backoff's hard max).
        let Action::RequeueAfter(d) = error_policy(Some(Retry::Transient { after: hint }), at(0, 0), &p) else {
            panic!("requeue")
        };
        assert_eq!(d, p.backoff.delay_honouring(1, hint));
        assert!(d >= Duration::from_secs(2).min(p.backoff.delay_honouring(1, hint)));
    }

    #[test]
    fn the_event_path_hands_everything_unfinished_to_the_worker() {
        assert_eq!(retry_after_reconcile(&Outcome::Done), None);
        let requeue = Outcome::Requeue { after: Duration::from_secs(7), reason: "zone busy".into() };
        assert_eq!(retry_after_reconcile(&requeue), Some(("zone busy".into(), Duration::from_secs(7))));
        let failed = Outcome::Failed { reason: "403".into() };
        assert_eq!(retry_after_reconcile(&failed), Some(("403".into(), FAILED_RECONCILE_RETRY)));
    }

    #[test]
    fn an_exhausted_recheck_completes_and_a_transient_one_is_rescheduled() {
        let id = ResourceId::parse_private_endpoint(ID).unwrap();
        let old = Work::Recheck { endpoint: id.to_string(), attempt: 3, first_failed_at: 0, reason: String::new() };
        let pending = || Outcome::Requeue { after: Duration::from_secs(1), reason: "still Pending".into() };
        assert!(matches!(decide(&old, &id, pending(), &policy()), Decision::Complete));
        let fresh = Work::Recheck {
            endpoint: id.to_string(),
            attempt: 1,
            first_failed_at: work::now_unix(),
            reason: String::new(),
        };
        let Decision::Retry { attempt, after, .. } = decide(&fresh, &id, pending(), &policy()) else { panic!("retry") };
        assert_eq!(attempt, 2);
        assert!(after >= Duration::from_secs(1));
    }

    /// The classification table: every error kind of every backend → its class, as the
    /// ad-hoc `is_transient` bools said before (a lost race is now named a conflict).
    #[test]
    fn the_classification_table() {
        use crate::arm::ArmError;
        use crate::arm::endpoints::ReadError;
        use crate::arm::lease::LeaseError;
        use crate::arm::request::Method;
        use crate::effects::dns::DnsError;
        use crate::effects::vendors::VendorError;
        use crate::effects::vendors::ledger::LedgerError;
        use crate::model::Classify;
        use crate::queue::QueueError;
        use reqwest::StatusCode;

        let hint = Some(Duration::from_secs(9));
        let api = |status: u16, code: &str| ArmError::Api {
            method: Method::Put,
            path: "/x".into(),
            status,
            code: code.into(),
            message: String::new(),
            retry_after: hint,
        };
        let later = Retry::Transient { after: hint };
        let arm: Vec<(ArmError, Retry)> = vec![
            (api(429, "TooManyRequests"), later),
            (api(408, "RequestTimeout"), later),
            (api(500, "InternalServerError"), later),
            (api(501, "NotImplemented"), later),
            (api(503, "ServiceUnavailable"), later),
            (api(409, "AnotherOperationInProgress"), later),
            (api(409, "Conflict"), Retry::Permanent),
            (api(412, "PreconditionFailed"), Retry::Conflict),
            (api(404, "ResourceNotFound"), Retry::Permanent),
            (api(403, "AuthorizationFailed"), Retry::Permanent),
            (api(0, "ClientInvalidRequest"), Retry::Permanent),
            (ArmError::Transport { method: Method::Get, path: "/x".into(), message: "reset".into() }, Retry::LATER),
            (ArmError::Auth("no token".into()), Retry::LATER),
            (
                ArmError::Operation {
                    path: "/op".into(),
                    status: "Failed".into(),
                    code: "X".into(),
                    message: "m".into(),
                },
                Retry::Permanent,
            ),
        ];
        for (e, class) in &arm {
            assert_eq!(e.retry(), *class, "{e}");
            assert_eq!(e.is_transient(), class.is_transient(), "{e}");
        }

        assert_eq!(ReadError::Arm(api(503, "x")).retry(), later);
        assert_eq!(ReadError::NotReady("nic".into()).retry(), Retry::LATER);
        assert_eq!(ReadError::Arm(api(400, "BadRequest")).retry(), Retry::Permanent);

        assert_eq!(LeaseError::Config("403".into()).retry(), Retry::Misconfigured);
        assert_eq!(LeaseError::Unavailable("503".into()).retry(), Retry::LATER);
        assert_eq!(LeaseError::Lost.retry(), Retry::LATER);

        assert_eq!(DnsError::precondition("etag").retry(), Retry::Conflict);
        assert_eq!(DnsError::transient("busy").with_retry_after(hint).retry(), later);
        assert_eq!(DnsError::permanent("NOTZONE").retry(), Retry::Permanent);

        let vendor = |s: u16| VendorError::from_status(StatusCode::from_u16(s).unwrap(), "register", "x", hint).retry();
        assert_eq!(vendor(401), Retry::Misconfigured);
        assert_eq!(vendor(403), Retry::Misconfigured);
        for s in [408, 425, 429, 500, 503] {
            assert_eq!(vendor(s), later, "{s}");
        }
        assert_eq!(vendor(404), Retry::Permanent);
        assert_eq!(vendor(400), Retry::Permanent);
        assert_eq!(VendorError::config("missing key").retry(), Retry::Misconfigured);

        assert_eq!(LedgerError::Unavailable("x".into()).retry(), Retry::LATER);
        assert_eq!(LedgerError::Conflict("x".into()).retry(), Retry::Conflict);
        assert_eq!(LedgerError::Config("x".into()).retry(), Retry::Misconfigured);
        assert!(LedgerError::Conflict("x".into()).is_transient(), "a ledger conflict reaching the queue is retried");

        assert_eq!(QueueError::Unavailable("x".into()).retry(), Retry::LATER);
        assert_eq!(QueueError::LockLost("x".into()).retry(), Retry::Conflict);
        assert_eq!(QueueError::NotFound("x".into()).retry(), Retry::Permanent);
        assert_eq!(QueueError::Config("x".into()).retry(), Retry::Misconfigured);
    }
}
