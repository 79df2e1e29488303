//! The work queue: durable, at-least-once hand-off of "converge this endpoint" work.
//!
//! Everything that must not be lost goes through a [`WorkQueue`]: reconcile retries
//! scheduled by the Event Grid handler, vendor calls, approval re-checks. The trait is
//! the seam between the embedded queue (SQLite, used by `serve` on a laptop and by
//! `demo`) and Azure Service Bus.
//!
//! This folder is storage only: what a message is (`work.rs`) and where it is kept. What
//! runs a message and decides its fate is `crate::runtime`, which uses these queues.
//!
//! Semantics (the same for every implementation, checked by one conformance suite):
//! - `enqueue` with a `delay` makes the message invisible until then (Service Bus
//!   scheduled enqueue).
//! - `dedupe_key`: while a message with the same key is waiting (not yet received),
//!   a second enqueue does not add a copy; the waiting one keeps the earlier due time
//!   (Service Bus duplicate detection is the analogue there).
//! - `receive` hands out one due message under a lock for `lock_for`; until it is
//!   completed, abandoned or dead-lettered nobody else receives it. A lock that expires
//!   (the worker crashed) makes the message receivable again with `delivery_count + 1`.
//! - `dead_letter` parks a message with a reason a person can act on; `replay` puts a
//!   dead-lettered message back, once.

pub mod api;
pub mod servicebus;
pub mod sqlite;
pub mod work;

pub use api::*;
pub use sqlite::SqliteQueue;
