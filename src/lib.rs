//! Private Link Autopilot.
//!
//! The flow, one folder per stage:
//! `intake` (Functions host protocol, Event Grid events) -> `runtime` (fan reconciles out,
//! drain the queue, decide retries) -> `reconcile` (read the truth from `arm`, compute a
//! plan from the `catalog`, apply it) -> `effects` (dns, vendors, approvals, audit).
//! `queue` is the runtime's storage (retries and deferred work, at least once).
//! The local fakes used by `autopilot demo`, the tests and the benchmarks are another
//! crate (`sandbox/`, `autopilot_sandbox`) that depends on this one, never the other way.

pub mod app;
pub mod arm;
pub mod backoff;
pub mod catalog;
pub mod config;
pub mod doctor;
pub mod effects;
pub mod intake;
pub mod model;
pub mod ops;
pub mod packaging;
pub mod queue;
pub mod reconcile;
pub mod runtime;
pub mod telemetry;
