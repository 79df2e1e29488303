//! What the runtime runs with: the reconciler, the queue, the ARM client, the bounds and
//! the settings the runtime reads, in one value shared by every invocation.
//!
//! `app.rs` (the composition root) builds it from `Config` and hands it to intake inside
//! `App`; the runtime sees only this, so it depends on nothing above it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::error_policy::RetryPolicy;
use super::settings::SweepSettings;
use crate::arm::ArmClient;
use crate::queue::WorkQueue;
use crate::reconcile::Reconciler;
use crate::reconcile::coverage::CoverageSettings;
use crate::telemetry::Stats;

#[derive(Debug)]
pub struct Runtime {
    pub arm: ArmClient,
    pub reconciler: Arc<Reconciler>,
    pub queue: Arc<dyn WorkQueue>,
    pub stats: Arc<Stats>,
    /// Bounds reconciles running at once across all invocations.
    pub parallel: Arc<Semaphore>,
    /// `reconcile.max_parallel`: also the width of a dry run's batches.
    pub max_parallel: usize,
    pub retry: RetryPolicy,
    /// Held while a sweep runs: sweeps never overlap.
    pub sweep_running: tokio::sync::Mutex<()>,
    /// How long one event invocation may reconcile before the rest is queued
    /// (`reconcile.deadline_ms`).
    pub deadline: Duration,
    pub sweep: SweepSettings,
    pub coverage: CoverageSettings,
}
