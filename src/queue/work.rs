//! What travels on the queue: a versioned envelope saying *what to converge*, never a
//! snapshot of state (the worker re-reads ARM, so a stale message cannot do harm).
//!
//! The envelope wraps the payload in one key (`{"v":1,"work":{...}}`) because the
//! Functions host copies a JSON message body's top-level properties into the trigger
//! metadata, where names like `DeliveryCount` would collide.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{ENVELOPE_VERSION, NewMessage};
use crate::model::ResourceId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    pub work: Work,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// Converge DNS (and, later, vendors and approvals) for one endpoint.
    Reconcile {
        endpoint: String,
        /// 1 for the first retry.
        attempt: u32,
        /// Unix seconds of the first failure: the retry window is measured from here.
        first_failed_at: u64,
        /// Why it was queued (for the dead-letter reason and for people reading the queue).
        reason: String,
    },
}

pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A scheduled reconcile retry. The dedupe key is per endpoint, so a burst of events
/// for one endpoint collapses into one waiting retry.
pub fn reconcile_retry(
    endpoint: &ResourceId,
    attempt: u32,
    first_failed_at: u64,
    reason: &str,
    delay: Duration,
) -> NewMessage {
    let work = Work::Reconcile {
        endpoint: endpoint.to_string(),
        attempt,
        first_failed_at,
        reason: reason.chars().take(1000).collect(),
    };
    NewMessage {
        dedupe_key: format!("reconcile:{}", endpoint.key()),
        correlation_id: endpoint.key().to_string(),
        body: serde_json::to_value(Envelope { v: ENVELOPE_VERSION, work }).unwrap_or_default(),
        delay,
    }
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
    let Work::Reconcile { endpoint, .. } = &env.work;
    let id = ResourceId::parse_private_endpoint(endpoint).map_err(|e| EnvelopeError::Endpoint(e.to_string()))?;
    Ok((env.work, id))
}
