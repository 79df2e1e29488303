//! The queue's contract: what a message is on its way in and out (`NewMessage`,
//! `Delivery`, `DeadLetter`), its errors, and the two traits every store implements
//! (`WorkQueue`, `TriggerQueue`). Its own file so the stores import the contract, not the
//! folder's `mod.rs` that re-exports them.

use std::fmt;
use std::time::{Duration, SystemTime};

/// Current version of the message envelope (`{"v": 1, "work": {...}}`).
pub const ENVELOPE_VERSION: u32 = 1;

/// What to put on the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// Collapses duplicates while one is waiting (see module docs). Also used as the
    /// Service Bus `MessageId`.
    pub dedupe_key: String,
    /// Groups messages about one thing; we use the lower-cased private endpoint id.
    pub correlation_id: String,
    /// The versioned JSON envelope.
    pub body: serde_json::Value,
    /// Not receivable before now + delay.
    pub delay: Duration,
}

/// A received, locked message.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Identifies the message in the queue (stable across deliveries).
    pub message_id: String,
    /// Identifies this delivery's lock; complete/abandon/dead-letter need it.
    pub lock_token: String,
    pub dedupe_key: String,
    pub correlation_id: String,
    pub body: serde_json::Value,
    /// 1 on the first delivery.
    pub delivery_count: u32,
    pub enqueued_at: SystemTime,
}

/// A parked message, for the operator's dead-letter commands (`dlq list --json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeadLetter {
    pub message_id: String,
    pub dedupe_key: String,
    pub correlation_id: String,
    pub body: serde_json::Value,
    pub reason: String,
    pub delivery_count: u32,
    /// Unix seconds in JSON.
    #[serde(serialize_with = "unix_seconds")]
    pub dead_lettered_at: SystemTime,
}

fn unix_seconds<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The lock was lost (expired and taken by another receiver, or already settled).
    #[error("message lock lost: {0}")]
    LockLost(String),
    #[error("no dead-lettered message with id {0}")]
    NotFound(String),
    /// Storage or transport failure; the operation may be retried.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// Configuration or permission problem; retrying will not help.
    #[error("queue misconfigured: {0}")]
    Config(String),
}

/// Storage trouble is transient; a lost lock is a conflict (someone else holds the
/// message now); a replay of something not dead-lettered is permanent.
impl crate::model::Classify for QueueError {
    fn retry(&self) -> crate::model::Retry {
        use crate::model::Retry;
        match self {
            QueueError::Unavailable(_) => Retry::LATER,
            QueueError::LockLost(_) => Retry::Conflict,
            QueueError::NotFound(_) => Retry::Permanent,
            QueueError::Config(_) => Retry::Misconfigured,
        }
    }
}

#[async_trait::async_trait]
pub trait WorkQueue: Send + Sync + fmt::Debug {
    async fn enqueue(&self, msg: NewMessage) -> Result<(), QueueError>;

    /// Waits up to `wait` for a due message and locks it for `lock_for`.
    async fn receive(&self, wait: Duration, lock_for: Duration) -> Result<Option<Delivery>, QueueError>;

    /// Removes a delivered message for good.
    async fn complete(&self, delivery: &Delivery) -> Result<(), QueueError>;

    /// Releases the lock; the message is receivable again at once.
    async fn abandon(&self, delivery: &Delivery) -> Result<(), QueueError>;

    /// Parks the message with a readable reason.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError>;

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError>;

    /// Moves a dead-lettered message back to the queue (delivery count reset). Replaying
    /// an id that is no longer dead-lettered is `NotFound`; replaying the same item twice
    /// therefore enqueues it once.
    async fn replay(&self, message_id: &str) -> Result<(), QueueError>;

    /// Messages waiting or locked (not dead-lettered), for status output and tests.
    async fn depth(&self) -> Result<usize, QueueError>;

    /// How many messages are dead-lettered, for the health view: cheap, and never
    /// locking or consuming anything (Service Bus overrides the listing-based default).
    async fn dead_letter_count(&self) -> Result<usize, QueueError> {
        self.dead_letters().await.map(|d| d.len())
    }
}

/// What the `serviceBusTrigger` path needs from a queue: sends only, never settling (the
/// Functions host settles its own deliveries; see `crate::runtime::trigger`).
#[async_trait::async_trait]
pub trait TriggerQueue: Send + Sync + fmt::Debug {
    /// Sends a new (possibly delayed) message.
    async fn schedule(&self, msg: NewMessage) -> Result<(), QueueError>;
    /// Sends a copy of `delivery` to the dead-letter destination with `reason`.
    async fn park(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError>;
}
