//! What travels on the queue: a versioned envelope saying *what to converge*, never a
//! snapshot of state (the worker re-reads ARM, so a stale message cannot do harm).
//!
//! The envelope wraps the payload in one key (`{"v":1,"work":{...}}`) because the
//! Functions host copies a JSON message body's top-level properties into the trigger
//! metadata, where names like `DeliveryCount` would collide.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::api::{ENVELOPE_VERSION, NewMessage};
use crate::model::ResourceId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    pub work: Work,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// Converge DNS, approvals and marks for one endpoint (and plan its vendor work).
    Reconcile {
        endpoint: String,
        /// 1 for the first retry.
        attempt: u32,
        /// Unix seconds of the first failure: the retry window is measured from here.
        first_failed_at: u64,
        /// Why it was queued (for the dead-letter reason and for people reading the queue).
        reason: String,
    },
    /// Make one vendor's allowlist agree with the endpoint: registered while it exists
    /// and routes to the vendor, forgotten once it is gone. The worker re-reads ARM, so a
    /// register message for an endpoint deleted meanwhile becomes a deregistration.
    Vendor {
        endpoint: String,
        vendor: String,
        /// 0 for the first try.
        attempt: u32,
        first_failed_at: u64,
        reason: String,
    },
    /// Re-read the endpoint's connection state (a vendor approves in its own
    /// subscription: no event reaches ours) and mark it, until it leaves Pending.
    Recheck { endpoint: String, attempt: u32, first_failed_at: u64, reason: String },
}

impl Work {
    pub fn endpoint(&self) -> &str {
        match self {
            Work::Reconcile { endpoint, .. } | Work::Vendor { endpoint, .. } | Work::Recheck { endpoint, .. } => {
                endpoint
            }
        }
    }
    pub fn attempt(&self) -> u32 {
        match self {
            Work::Reconcile { attempt, .. } | Work::Vendor { attempt, .. } | Work::Recheck { attempt, .. } => *attempt,
        }
    }
    pub fn first_failed_at(&self) -> u64 {
        match self {
            Work::Reconcile { first_failed_at, .. }
            | Work::Vendor { first_failed_at, .. }
            | Work::Recheck { first_failed_at, .. } => *first_failed_at,
        }
    }
    /// `reconcile`, `vendor` or `recheck`.
    pub fn kind(&self) -> &'static str {
        match self {
            Work::Reconcile { .. } => "reconcile",
            Work::Vendor { .. } => "vendor",
            Work::Recheck { .. } => "recheck",
        }
    }

    /// The same work, one attempt later, with the latest reason.
    pub fn next_attempt(&self, reason: &str) -> Work {
        let reason: String = reason.chars().take(1000).collect();
        let mut next = self.clone();
        match &mut next {
            Work::Reconcile { attempt, reason: r, .. }
            | Work::Vendor { attempt, reason: r, .. }
            | Work::Recheck { attempt, reason: r, .. } => {
                *attempt = attempt.saturating_add(1);
                *r = reason;
            }
        }
        next
    }

    /// One waiting item per (kind, vendor, endpoint): a burst collapses into one.
    fn dedupe_key(&self, id: &ResourceId) -> String {
        match self {
            Work::Reconcile { .. } => format!("reconcile:{}", id.key()),
            Work::Vendor { vendor, .. } => format!("vendor:{vendor}:{}", id.key()),
            Work::Recheck { .. } => format!("recheck:{}", id.key()),
        }
    }

    /// The queue message carrying this work, due after `delay`.
    pub fn message(self, id: &ResourceId, delay: Duration) -> NewMessage {
        self.message_for(id, "", delay)
    }

    /// [`message`](Self::message) for one generation of the endpoint (its
    /// `resourceGuid`): Service Bus drops a `MessageId` it saw within its duplicate
    /// window even after it was consumed, so work for a recreated endpoint must not share
    /// its predecessor's identity. Repeats for one generation still collapse.
    pub fn message_for(self, id: &ResourceId, generation: &str, delay: Duration) -> NewMessage {
        let mut dedupe_key = self.dedupe_key(id);
        if !generation.is_empty() {
            dedupe_key = format!("{dedupe_key}:{}", generation.to_ascii_lowercase());
        }
        NewMessage {
            dedupe_key,
            correlation_id: id.key().to_string(),
            body: serde_json::to_value(Envelope { v: ENVELOPE_VERSION, work: self }).unwrap_or_default(),
            delay,
        }
    }
}

pub use crate::model::now_unix;

/// A scheduled reconcile retry.
pub fn reconcile_retry(
    endpoint: &ResourceId,
    attempt: u32,
    first_failed_at: u64,
    reason: &str,
    delay: Duration,
) -> NewMessage {
    Work::Reconcile {
        endpoint: endpoint.to_string(),
        attempt,
        first_failed_at,
        reason: reason.chars().take(1000).collect(),
    }
    .message(endpoint, delay)
}

/// First vendor work for one generation of an endpoint (attempt 0, window starting now).
pub fn vendor_work(endpoint: &ResourceId, vendor: &str, generation: &str, reason: &str) -> NewMessage {
    Work::Vendor {
        endpoint: endpoint.to_string(),
        vendor: vendor.to_owned(),
        attempt: 0,
        first_failed_at: now_unix(),
        reason: reason.chars().take(1000).collect(),
    }
    .message_for(endpoint, generation, Duration::ZERO)
}

/// First approval re-check, due after `delay`.
pub fn recheck(endpoint: &ResourceId, reason: &str, delay: Duration) -> NewMessage {
    Work::Recheck {
        endpoint: endpoint.to_string(),
        attempt: 1,
        first_failed_at: now_unix(),
        reason: reason.chars().take(1000).collect(),
    }
    .message(endpoint, delay)
}

/// A replayed dead letter gets a fresh retry window: a person fixed the cause, so its
/// first transient hiccup must be retried, not dead-lettered again at once. Bodies that
/// are not our envelope are returned unchanged.
pub fn restart_window(body: &serde_json::Value) -> serde_json::Value {
    let Ok(mut env) = serde_json::from_value::<Envelope>(body.clone()) else { return body.clone() };
    match &mut env.work {
        Work::Reconcile { attempt, first_failed_at, .. }
        | Work::Vendor { attempt, first_failed_at, .. }
        | Work::Recheck { attempt, first_failed_at, .. } => {
            *attempt = 0;
            *first_failed_at = now_unix();
        }
    }
    serde_json::to_value(env).unwrap_or_else(|_| body.clone())
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("message body is not a work envelope: {0}")]
    Shape(String),
    #[error("message envelope version {0} is not supported (this build reads {ENVELOPE_VERSION})")]
    Version(u32),
    #[error("message names an invalid endpoint: {0}")]
    Endpoint(String),
}

pub fn parse(body: &serde_json::Value) -> Result<(Work, ResourceId), EnvelopeError> {
    let env: Envelope = serde_json::from_value(body.clone()).map_err(|e| EnvelopeError::Shape(e.to_string()))?;
    if env.v != ENVELOPE_VERSION {
        return Err(EnvelopeError::Version(env.v));
    }
    let id =
        ResourceId::parse_private_endpoint(env.work.endpoint()).map_err(|e| EnvelopeError::Endpoint(e.to_string()))?;
    Ok((env.work, id))
}
