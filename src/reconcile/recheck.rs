//! The approval re-check: one `Work::Recheck` item for an endpoint whose connection was
//! still Pending when its vendor registration converged.
//!
//! Records follow approval, so while the connection is Pending only the marks change;
//! once the vendor (or the owner) decides, a full reconcile writes DNS.

use super::reconciler::{Mode, Reconciler, done_for};
use super::report::{Outcome, Report};
use crate::arm::endpoints::{EndpointState, read_endpoint};
use crate::effects::marks;
use crate::model::ResourceId;

impl Reconciler {
    /// Re-reads the endpoint's connection state and marks it (a `Work::Recheck` item):
    /// `Requeue` while it is still Pending, `Done` once it is anything else or gone.
    pub async fn recheck(&self, id: &ResourceId) -> Outcome {
        match self.exclusive.run(id.key(), self.recheck_locked(id)).await {
            // The vendor (or the owner) decided: records follow approval, so this is the
            // moment DNS is written (or a share withdrawn). A full reconcile does it.
            Ok(None) => self.reconcile(id, Mode::Apply).await.outcome,
            Ok(Some(outcome)) => outcome,
            Err(refused) => Self::refused_outcome(&refused),
        }
    }

    /// `None`: no longer Pending, reconcile in full.
    async fn recheck_locked(&self, id: &ResourceId) -> Option<Outcome> {
        let pe = match read_endpoint(&self.arm, id).await {
            Ok(EndpointState::Present(pe)) if pe.is_provisioned() => pe,
            Ok(_) => return Some(Outcome::Done),
            Err(e) => return Some(self.read_failure(&e)),
        };
        if !marks::connection_state(&pe).eq_ignore_ascii_case("pending") {
            return None;
        }
        let desired = self.desired(&pe).await;
        let mut report = Report {
            exists: Some(true),
            provisioning_state: Some(pe.provisioning_state.clone()),
            target: desired.target_id.clone(),
            vendor: desired.vendor.clone(),
            ..Report::new(&id.to_string(), false)
        };
        if let (Some(v), Some(sync)) = (&desired.vendor, &self.vendors) {
            report.vendors.push(sync.plan_present(v, &pe));
        }
        let state = marks::connection_state(&pe);
        let step = self.missing_step(&pe, &report);
        if self.marks.enabled {
            let done = done_for(false, &report);
            let done: Vec<&str> = done.iter().map(String::as_str).collect();
            match marks::mark(
                &self.arm,
                &self.marks,
                &pe,
                marks::Wanted { state: &state, done: &done, missing_step: &step, conflict: None },
                Mode::Apply,
            )
            .await
            {
                Ok(m) => report.marks = Some(m),
                Err(e) if e.is_transient() => {
                    return Some(Outcome::Requeue {
                        after: self.base_delay(),
                        reason: format!("marking the endpoint: {e}"),
                    });
                }
                Err(e) => tracing::warn!(endpoint = %id, error = %e, "could not mark the endpoint"),
            }
        }
        self.publish(&super::report_events::events_for(&report)).await;
        Some(Outcome::Requeue { after: self.base_delay(), reason: format!("connection still Pending: {step}") })
    }
}
