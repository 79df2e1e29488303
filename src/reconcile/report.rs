//! What one reconcile says: the [`Report`] it returns and the [`Outcome`] that tells the
//! caller what to do next.
//!
//! These are the reconciler's vocabulary for every entry point (Event Grid handler,
//! queue worker, sweep, `plan`), so they live apart from the I/O that fills them.

use std::time::Duration;

use super::plan::Plan;
use crate::effects::approvals::ApprovalDecision;
use crate::effects::dns::zones::ZoneReport;
use crate::effects::marks::MarkReport;
use crate::effects::vendors::sync::VendorPlan;

/// What the caller should do next (kube-runtime's `Action`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Converged; nothing to do until the next event or sweep.
    Done,
    /// Not finished: try again after `after` (transient error, endpoint still provisioning, lost race).
    Requeue {
        #[serde(with = "secs")]
        after: Duration,
        reason: String,
    },
    /// A person must act (permissions, configuration, malformed data); retrying won't help.
    Failed { reason: String },
}

mod secs {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// One applied (or attempted) action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub action: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub endpoint: String,
    /// `None` when ARM could not be read.
    pub exists: Option<bool>,
    pub provisioning_state: Option<String>,
    pub target: Option<String>,
    pub vendor: Option<String>,
    pub plan: Plan,
    pub applied: Vec<Applied>,
    /// Decisions on connections to owned resources.
    pub approvals: Vec<ApprovalDecision>,
    /// Vendor work this reconcile plans (the queue carries it out).
    pub vendors: Vec<VendorPlan>,
    /// The tags marking the endpoint's state, when marks are on.
    pub marks: Option<MarkReport>,
    /// Zones and links (`dns.zone_management = "create"`), one per zone replica touched.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<ZoneReport>,
    pub outcome: Outcome,
    pub dry_run: bool,
}

impl Report {
    /// An empty report for `endpoint`: nothing read, nothing planned, converged.
    pub fn new(endpoint: &str, dry_run: bool) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            exists: None,
            provisioning_state: None,
            target: None,
            vendor: None,
            plan: Plan { endpoint: endpoint.to_owned(), ..Default::default() },
            applied: vec![],
            approvals: vec![],
            vendors: vec![],
            marks: None,
            zones: vec![],
            outcome: Outcome::Done,
            dry_run,
        }
    }
}
