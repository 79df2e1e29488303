//! Vendor convergence: one `Work::Vendor` item, re-read from ARM and carried out.
//!
//! A reconcile only *plans* vendor work (the queue carries it, so a slow or failing
//! vendor never holds up DNS); this file is the other half, run by the worker: register
//! while the endpoint exists and routes to the vendor, deregister otherwise, and turn a
//! vendor's error kind into an [`Outcome`].

use std::time::Duration;

use super::reconciler::Reconciler;
use super::report::Outcome;
use crate::arm::endpoints::{EndpointState, read_endpoint};
use crate::effects::audit::{AuditEvent, EventType};
use crate::effects::marks;
use crate::effects::vendors::sync::{SyncError, VendorDone};
use crate::effects::vendors::{Change, VendorErrorKind};
use crate::model::ResourceId;
use crate::telemetry::Stats;

/// What one vendor work item did, for the queue consumer.
#[derive(Debug, Clone)]
pub struct VendorRun {
    pub outcome: Outcome,
    pub done: Option<VendorDone>,
    /// The endpoint is registered but its connection still Pending: re-check later.
    pub needs_recheck: bool,
}

impl Reconciler {
    /// Converges one vendor for one endpoint (a `Work::Vendor` item), after re-reading
    /// the endpoint: registers it while it exists and routes to the vendor, deregisters
    /// it otherwise. `first_failed_at` bounds errors that carry their own give-up time.
    pub async fn converge_vendor(&self, id: &ResourceId, vendor: &str, first_failed_at: u64) -> VendorRun {
        match self.exclusive.run(id.key(), self.converge_vendor_locked(id, vendor, first_failed_at)).await {
            Ok(run) => run,
            Err(refused) => VendorRun { outcome: Self::refused_outcome(&refused), done: None, needs_recheck: false },
        }
    }

    async fn converge_vendor_locked(&self, id: &ResourceId, vendor: &str, first_failed_at: u64) -> VendorRun {
        let mut run = VendorRun { outcome: Outcome::Done, done: None, needs_recheck: false };
        let Some(sync) = &self.vendors else {
            run.outcome =
                Outcome::Failed { reason: format!("vendor {vendor}: no vendors are configured in this deployment") };
            return run;
        };
        let pe = match read_endpoint(&self.arm, id).await {
            Ok(EndpointState::Present(pe)) => Some(pe),
            Ok(EndpointState::Absent) => None,
            Err(e) => {
                run.outcome = self.read_failure(&e);
                return run;
            }
        };
        // `desired` refreshes the vendors' aliases before deciding the endpoint is not theirs.
        let routed_here = match &pe {
            Some(pe) => self.desired(pe).await.vendor.as_deref() == Some(vendor),
            None => false,
        };
        let register = match &pe {
            // Failed is not gone (see `provisioning_failed`): nothing is deregistered.
            Some(pe) if !pe.is_provisioned() => {
                run.outcome = Outcome::Requeue {
                    after: self.base_delay(),
                    reason: format!("endpoint is {} (waiting for Succeeded)", pe.provisioning_state),
                };
                return run;
            }
            Some(pe) if routed_here => Some(pe),
            _ => None,
        };
        let result = match register {
            Some(pe) => sync.register(vendor, pe).await,
            None => sync.deregister(vendor, id).await,
        };
        let mut events = Vec::new();
        let event = |kind: EventType, data: serde_json::Value| AuditEvent {
            kind: kind.into(),
            subject: id.to_string(),
            data: serde_json::json!({"vendor": vendor, "detail": data}),
        };
        match result {
            Ok(done) => {
                match &done {
                    VendorDone::Registered { change, targets, withdrawn } => {
                        Stats::inc(&self.stats.vendor_calls_ok);
                        tracing::info!(endpoint = %id, vendor, ?change, ?withdrawn, "vendor registration converged");
                        if *change == Change::Applied {
                            events.push(event(EventType::VendorRegistered, serde_json::json!({"targets": targets})));
                        }
                        if !withdrawn.is_empty() {
                            events.push(event(EventType::VendorWithdrawn, serde_json::json!({"targets": withdrawn})));
                        }
                        // `recheck_window_secs = 0` turns re-checks off (the sweep still looks).
                        run.needs_recheck = self.marks.recheck_window_secs > 0
                            && register.is_some_and(|pe| marks::connection_state(pe).eq_ignore_ascii_case("pending"));
                    }
                    VendorDone::Deregistered { change } => {
                        Stats::inc(&self.stats.vendor_calls_ok);
                        tracing::info!(endpoint = %id, vendor, ?change, "vendor deregistration converged");
                        if *change == Change::Applied {
                            events.push(event(EventType::VendorDeregistered, serde_json::json!({})));
                        }
                    }
                    VendorDone::Nothing { why } => {
                        tracing::info!(endpoint = %id, vendor, %why, "no vendor call needed")
                    }
                }
                run.done = Some(done);
            }
            Err(SyncError::Vendor(e)) => {
                Stats::inc(&self.stats.vendor_calls_failed);
                let reason = format!("vendor {vendor}: {e}");
                let age = Duration::from_secs(crate::model::now_unix().saturating_sub(first_failed_at));
                run.outcome = match e.kind {
                    VendorErrorKind::Transient if e.give_up_after.is_some_and(|bound| age >= bound) => {
                        Outcome::Failed { reason: format!("{reason} (gave up after {} s)", age.as_secs()) }
                    }
                    VendorErrorKind::Transient => Outcome::Requeue {
                        after: e.retry_after.unwrap_or(self.base_delay()).max(self.base_delay()),
                        reason,
                    },
                    VendorErrorKind::Permanent | VendorErrorKind::Config => Outcome::Failed { reason },
                };
                tracing::warn!(endpoint = %id, vendor, error = %e, "vendor call failed");
            }
            Err(SyncError::Ledger(e)) => {
                let reason = format!("vendor {vendor}: {e}");
                run.outcome = if e.is_transient() {
                    Outcome::Requeue { after: self.base_delay(), reason }
                } else {
                    Outcome::Failed { reason }
                };
            }
        }
        self.publish(&events).await;
        run
    }
}
