//! What people run from a terminal: one endpoint's state side by side (`autopilot
//! status`) and what the next target-side scan would decide (`autopilot plan
//! --targets`); what a sweep would do without doing it (`autopilot plan
//! --subscription`) is the runtime's sweep dry run (`runtime::sweep::plan_subscriptions`).
//! All are read-only: they reuse the reconciler's dry run, so what they show is exactly
//! what the handlers and the sweep would do.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::app::App;
use crate::arm::endpoints::{EndpointState, read_endpoint};
use crate::effects::approvals::ApprovalDecision;
use crate::effects::dns::RecordKey;
use crate::effects::dns::zones::{ZoneManager, ZonePolicy, ZoneReport, ZoneState};
use crate::effects::marks;
use crate::effects::vendors::sync::VendorPlan;
use crate::model::ResourceId;
use crate::reconcile::plan::DnsAction;
use crate::reconcile::{Mode, Outcome, Report};

#[derive(Debug, Serialize)]
pub struct DnsLine {
    pub record: String,
    /// `in place`, `missing`, `drifted`, `to remove`, `conflict`.
    pub state: &'static str,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct VendorLine {
    #[serde(flatten)]
    pub plan: VendorPlan,
    /// Unix seconds the ledger recorded the registration, if it did.
    pub ledger_recorded_at: Option<u64>,
    /// What the vendor says now (`None` = nothing to ask).
    pub registered: Option<bool>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub exists: Option<bool>,
    pub provisioning_state: Option<String>,
    pub connection_state: Option<String>,
    /// Our marks on the endpoint (tags with the configured prefix).
    pub marks: BTreeMap<String, String>,
    pub target: Option<String>,
    pub dns: Vec<DnsLine>,
    pub vendors: Vec<VendorLine>,
    pub approvals: Vec<ApprovalDecision>,
    /// The Azure zones (each replica) the records go to, read now: whether they exist,
    /// their links, and what zone management would do.
    pub zones: Vec<ZoneReport>,
    /// Links that fall back to internet resolution for a zone we write to.
    pub warnings: Vec<String>,
    /// Reasons of dead-lettered work about this endpoint.
    pub dead_letters: Vec<String>,
    pub notes: Vec<String>,
    pub converged: bool,
    pub outcome: Outcome,
}

fn dns_lines(report: &Report) -> Vec<DnsLine> {
    report
        .plan
        .actions
        .iter()
        .map(|a| {
            let state = match a {
                DnsAction::Unchanged { .. } => "in place",
                DnsAction::Create { .. } => "missing",
                DnsAction::Update { .. } => "drifted",
                DnsAction::Delete { .. } => "to remove",
                DnsAction::Conflict { .. } => "conflict",
            };
            DnsLine { record: a.key().label(), state, detail: a.describe() }
        })
        .collect()
}

/// An endpoint's DNS, vendor and approval state side by side.
pub async fn endpoint_status(app: &App, id: &ResourceId) -> EndpointStatus {
    let report = app.reconciler.reconcile(id, Mode::DryRun).await;
    let pe = match read_endpoint(&app.arm, id).await {
        Ok(EndpointState::Present(pe)) => Some(pe),
        _ => None,
    };
    let prefix = &app.config.marks.prefix;
    let mut vendors = Vec::new();
    for plan in &report.vendors {
        let mut line = VendorLine { plan: plan.clone(), ledger_recorded_at: None, registered: None, error: None };
        if let Some(sync) = app.reconciler.vendor_sync() {
            match sync.ledger().get(&plan.vendor, id.as_str()).await {
                Ok(entry) => line.ledger_recorded_at = entry.map(|e| e.recorded_at),
                Err(e) => line.error = Some(e.to_string()),
            }
            match sync.is_registered(&plan.vendor, pe.as_deref(), id).await {
                Ok(r) => line.registered = r,
                Err(e) => line.error = Some(e),
            }
        }
        vendors.push(line);
    }
    let dead_letters = match app.queue.dead_letters().await {
        Ok(d) => d.into_iter().filter(|d| d.correlation_id.eq_ignore_ascii_case(id.key())).map(|d| d.reason).collect(),
        Err(e) => vec![format!("(could not read dead letters: {e})")],
    };
    let zones = inspect_zones(app, &report).await;
    let warnings: Vec<String> = zones.iter().flat_map(|z| z.warnings.iter().cloned()).collect();
    let converged = report.outcome == Outcome::Done
        && report.plan.actions.iter().all(|a| matches!(a, DnsAction::Unchanged { .. }))
        && vendors.iter().all(|v| v.registered != Some(false) || !v.plan.needs_work());
    EndpointStatus {
        endpoint: report.endpoint.clone(),
        exists: report.exists,
        provisioning_state: report.provisioning_state.clone(),
        connection_state: pe.as_deref().map(marks::connection_state),
        marks: pe
            .as_deref()
            .map(|p| {
                p.tags
                    .iter()
                    .filter(|(k, _)| k.starts_with(prefix.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        target: report.target.clone(),
        dns: dns_lines(&report),
        vendors,
        approvals: report.approvals.clone(),
        zones,
        warnings,
        dead_letters,
        notes: report.plan.notes.clone(),
        converged,
        outcome: report.outcome.clone(),
    }
}

/// Reads each Azure zone replica the endpoint's records are in (or would be): existence,
/// links, fallback-to-internet links. Zone management's own view when it is on (what it
/// would create); with it off, a missing zone is reported as the user's to create.
async fn inspect_zones(app: &App, report: &Report) -> Vec<ZoneReport> {
    let dns = app.reconciler.dns();
    let Some(azure) = dns.azure() else { return Vec::new() };
    let owned;
    let manager = match app.reconciler.zone_manager() {
        Some(m) => m.as_ref(),
        None => {
            owned = ZoneManager::new(app.arm.clone(), azure.directory().clone(), ZonePolicy::default());
            &owned
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for a in &report.plan.actions {
        let key = a.key();
        if !dns.is_azure(&key.zone) || !seen.insert((key.zone.clone(), key.replica.clone())) {
            continue;
        }
        let zone_key = RecordKey::new(&key.zone, "@").in_replica(&key.replica);
        let vnet = match a {
            DnsAction::Create { set } => set.owners().and_then(|o| o.values().next()).map(|s| s.vnet.clone()),
            _ => None,
        };
        let vnets = match app.reconciler.zone_manager() {
            Some(m) => m.vnets_for(&zone_key, vnet.as_deref().unwrap_or_default()),
            None => Vec::new(),
        };
        let mut z = manager.prepare(&zone_key, &vnets, false, true).await;
        if app.reconciler.zone_manager().is_none() && z.state == ZoneState::WouldCreate {
            z.state = ZoneState::NotCreated;
            z.detail = "missing; dns.zone_management is off: create it and link it, or set it to \"create\"".into();
        }
        out.push(z);
    }
    out
}

impl EndpointStatus {
    /// The human view.
    pub fn render(&self) -> String {
        let mut out = format!("endpoint     {}\n", self.endpoint);
        let exists = match self.exists {
            Some(true) => format!(
                "exists ({}), connection {}",
                self.provisioning_state.as_deref().unwrap_or("?"),
                self.connection_state.as_deref().unwrap_or("?")
            ),
            Some(false) => "deleted (ARM answers 404)".into(),
            None => "unknown (ARM could not be read)".into(),
        };
        out.push_str(&format!("state        {exists}\n"));
        out.push_str(&format!("target       {}\n", self.target.as_deref().unwrap_or("(not in the catalog)")));
        if !self.marks.is_empty() {
            let m: Vec<String> = self.marks.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("marks        {}\n", m.join(" ")));
        }
        out.push_str("dns\n");
        if self.dns.is_empty() {
            out.push_str("  (no records)\n");
        }
        for d in &self.dns {
            out.push_str(&format!("  {:<10} {:<60} {}\n", d.state, d.record, d.detail));
        }
        if !self.zones.is_empty() {
            out.push_str("zones\n");
        }
        for z in &self.zones {
            out.push_str(&format!("  {}\n", z.describe()));
        }
        for w in &self.warnings {
            out.push_str(&format!("warning      {w}\n"));
        }
        out.push_str("vendors\n");
        if self.vendors.is_empty() {
            out.push_str("  (none)\n");
        }
        for v in &self.vendors {
            let registered = match v.registered {
                Some(true) => "registered",
                Some(false) => "NOT registered",
                None => "-",
            };
            let ledger = v.ledger_recorded_at.map_or("no ledger entry".to_string(), |t| format!("ledger since {t}"));
            let intent = serde_json::to_value(&v.plan)
                .map(|j| j["intent"].as_str().unwrap_or("").to_owned())
                .unwrap_or_default();
            out.push_str(&format!("  {:<10} plan={intent:<10} {registered:<15} {ledger}", v.plan.vendor));
            if let Some(e) = &v.error {
                out.push_str(&format!("  error: {e}"));
            }
            out.push('\n');
        }
        out.push_str("approvals\n");
        if self.approvals.is_empty() {
            out.push_str("  (no owned target)\n");
        }
        for a in &self.approvals {
            out.push_str(&format!("  {:?} {}: {}\n", a.action, a.target, a.reason));
        }
        for d in &self.dead_letters {
            out.push_str(&format!("dead letter  {d}\n"));
        }
        for n in &self.notes {
            out.push_str(&format!("note         {n}\n"));
        }
        out.push_str(if self.converged {
            "converged    yes\n"
        } else {
            "converged    NO (a reconcile would change something)\n"
        });
        out
    }
}

/// How often long runs report progress.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// What the next `CatchUp` run's target-side scan would decide, without writing anything
/// (no approval, no audit, no remembered state): `WouldApprove`, `WouldReject` or
/// `LeftPending` with the reason, per Pending connection on the owned resources in scope.
pub async fn plan_targets(app: &App) -> Result<crate::effects::target_approvals::ScanReport, String> {
    crate::effects::target_approvals::scan(
        &app.arm,
        &app.config.approvals,
        app.small_state.as_ref(),
        Mode::DryRun,
        crate::model::now_unix(),
    )
    .await
    .map_err(|e| format!("listing the Pending connections on owned resources: {e}"))
}
