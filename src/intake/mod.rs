//! Intake: how work arrives.
//!
//! - `protocol`: the Azure Functions custom-handler wire format (what the host POSTs to
//!   `/<FunctionName>` and what it expects back), including its quirks: string values
//!   JSON-encoded twice, numbers as strings, non-2xx bodies discarded.
//! - `events`: Event Grid and CloudEvents 1.0 deliveries, reduced to the one thing we
//!   act on: "private endpoint X was written/deleted". Events are hints; the reconciler
//!   re-reads ARM.
//! - `queue_trigger`: the Service Bus trigger's invocation decoded into a queue delivery
//!   (settling it is `runtime::trigger`).
//! - `invocation`: the function names and one invocation's parse and answers, shared by
//!   `server` and `catch_up`.
//! - `server`: the axum router the Functions host talks to; it decodes and answers, and
//!   leaves the running to `crate::runtime`.

pub mod catch_up;
pub mod events;
pub mod invocation;
pub mod protocol;
pub mod queue_trigger;
pub mod server;
