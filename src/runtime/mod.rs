//! The runtime: the layer that runs reconciles and decides what happens next.
//!
//! `intake` decodes what arrives (Event Grid deliveries, timer ticks, Service Bus trigger
//! invocations) and answers the host; `reconcile` converges one endpoint and says how it
//! went. In between sits this layer, kube-runtime's controller loop plus its
//! `error_policy`: it fans a set of endpoints out under a deadline and a parallelism
//! bound, drains the work queue, and turns each outcome into the next step (done, retry
//! after a backoff, dead-letter with a reason, leave it to the sweep). `queue` is only its
//! storage. Imports run one way: intake → runtime → reconcile → effects → arm → model.
//!
//! - `fan_out.rs`: reconcile many endpoints at once, queue what did not converge;
//! - `sweep.rs`: the periodic sweep and its dry run (`autopilot plan --subscription`);
//! - `worker.rs`: drain a queue we settle ourselves (embedded SQLite, `serve`);
//! - `trigger.rs`: settle a delivery the Functions host settles (`serviceBusTrigger`);
//! - `error_policy.rs`: the one retry policy both consumers and the event path follow;
//! - `context.rs`: what the runtime runs with (`Runtime`), `settings.rs` its settings.

pub mod context;
pub mod error_policy;
pub mod fan_out;
pub mod settings;
pub mod sweep;
pub mod trigger;
pub mod worker;

pub use context::Runtime;
