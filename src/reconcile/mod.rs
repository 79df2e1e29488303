//! Reconcile: desired state (the endpoint + the catalog) against actual state (the DNS
//! backends), as a plan of actions, then apply.
//!
//! `plan` is pure: given what one record set should and does look like, it says what to
//! do. `reconciler` does the I/O around it: read the truth from ARM and decide which records
//! the endpoint wants (`reconciler.rs`), then read each record, plan, apply, and on a lost
//! race (412) read again (`reconciler/records.rs`). The same code path serves the
//! Event Grid handler, the queue worker, the sweep and the dry-run command, so what the
//! operator previews is what runs. What a reconcile returns (`Report`, `Outcome`) is in
//! `report`; the worker's vendor items and approval re-checks are in `vendor` and `recheck`.

pub mod catch_up;
pub mod coverage;
pub mod exclusive;
pub mod known;
pub mod locks;
pub mod plan;
pub mod recheck;
pub mod reconciler;
pub mod report;
pub mod report_events;
pub mod settings;
pub mod snapshot;
pub mod sweep;
pub mod vendor;

pub use plan::{DnsAction, Plan};
pub use reconciler::{Mode, Outcome, Reconciler, Report};
pub use settings::ReconcileSettings;
