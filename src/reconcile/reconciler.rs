//! `reconcile(endpoint) -> Report`, in the style of a Kubernetes controller: read the
//! current state, compute the plan, apply it, and say whether to come back later.
//! Failures are values (an [`Outcome`]), never panics; the caller (Event Grid handler,
//! queue worker, sweep) decides how to retry.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::arm::endpoints::{EndpointState, read_endpoint};
use crate::arm::{ArmClient, ArmError};
use crate::catalog::Catalog;
use crate::effects::approvals::{self, ApprovalAction, ApprovalSettings};
use crate::effects::audit::{AuditEvent, AuditSink};
use crate::effects::dns::zones::{ZoneManager, ZoneReport};
use crate::effects::dns::{ARecordSet, DnsError, DnsErrorKind, DnsRouter};
use crate::effects::marks::{self, MarkSettings};
use crate::effects::vendors::sync::{VendorIntent, VendorPlan, VendorSync};
use crate::model::{PrivateEndpoint, RecordKey, ResourceId};
use crate::telemetry::Stats;

use super::exclusive::{Exclusive, Refused};
use super::plan::{self, DnsAction};
use super::settings::ReconcileSettings;

pub use crate::model::Mode;
// The report types, vendor convergence and the approval re-check live in their own
// files; these re-exports keep `crate::reconcile::reconciler::{Report, Outcome, ...}`.
pub use super::report::{Applied, Outcome, Report};

#[derive(Debug)]
pub struct Reconciler {
    pub(super) arm: ArmClient,
    pub(super) catalog: Arc<Catalog>,
    pub(super) dns: Arc<DnsRouter>,
    pub(super) settings: ReconcileSettings,
    pub(super) stats: Arc<Stats>,
    /// One writer per endpoint (this process, and other instances when leases are on).
    pub(super) exclusive: Exclusive,
    pub(super) zone_cache: Mutex<HashMap<String, (Instant, Vec<ARecordSet>)>>,
    pub(super) known_zones: Mutex<Option<(Instant, Vec<String>)>>,
    pub(super) approvals: ApprovalSettings,
    pub(super) audit: Option<Arc<dyn AuditSink>>,
    pub(super) vendors: Option<Arc<VendorSync>>,
    pub(super) marks: MarkSettings,
    /// When the vendors' aliases and names were last learnt (see `known.rs`).
    pub(super) known_refreshed: tokio::sync::Mutex<Option<Instant>>,
    /// Zone management (`dns.zone_management = "create"`); `None` = zones are the user's.
    pub(super) zones: Option<Arc<ZoneManager>>,
}

/// What autopilot does for an endpoint, for the `done` mark: stable across reconciles
/// (derived from the plan, not from what happened to change this time).
pub(super) fn done_for(has_records: bool, report: &Report) -> Vec<String> {
    let mut done = Vec::new();
    if has_records {
        done.push("dns".to_owned());
    }
    if !report.approvals.is_empty() {
        done.push("approval".to_owned());
    }
    for v in &report.vendors {
        if matches!(v.intent, VendorIntent::Register { .. }) {
            done.push(format!("vendor:{}", v.vendor));
        }
    }
    done
}

mod records;
use records::{Decide, KeyResult, KeyWork, Trouble};

impl Reconciler {
    pub fn new(
        arm: ArmClient,
        catalog: Arc<Catalog>,
        dns: Arc<DnsRouter>,
        settings: ReconcileSettings,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            arm,
            catalog,
            dns,
            settings,
            stats,
            exclusive: Exclusive::local(),
            zone_cache: Mutex::new(HashMap::new()),
            known_zones: Mutex::new(None),
            approvals: ApprovalSettings::default(),
            audit: None,
            vendors: None,
            marks: MarkSettings { enabled: false, ..MarkSettings::default() },
            known_refreshed: tokio::sync::Mutex::new(None),
            zones: None,
        }
    }

    /// Create missing zones and link them (`dns.zone_management = "create"`).
    pub fn with_zones(mut self, zones: Arc<ZoneManager>) -> Self {
        self.zones = Some(zones);
        self
    }

    /// The zone manager, when zone management is on.
    pub fn zone_manager(&self) -> Option<&Arc<ZoneManager>> {
        self.zones.as_ref()
    }

    pub fn dns(&self) -> &Arc<DnsRouter> {
        &self.dns
    }

    /// Plan vendor work for endpoints whose target is a vendor's (see `effects::vendors::sync`).
    pub fn with_vendors(mut self, sync: Arc<VendorSync>) -> Self {
        self.vendors = Some(sync);
        self
    }

    /// One writer per endpoint across instances (see `reconcile::exclusive`).
    pub fn with_exclusive(mut self, exclusive: Exclusive) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// Mark endpoints with tags (state, what was done, since when).
    pub fn with_marks(mut self, marks: MarkSettings) -> Self {
        self.marks = marks;
        self
    }

    pub fn vendor_sync(&self) -> Option<&Arc<VendorSync>> {
        self.vendors.as_ref()
    }

    /// Publishes audit events; a failure is logged (the action itself already happened).
    pub async fn publish(&self, events: &[AuditEvent]) {
        if events.is_empty() {
            return;
        }
        if let Some(sink) = &self.audit
            && let Err(e) = sink.publish(events).await
        {
            tracing::error!(error = %e, lost = events.len(), "audit events not published");
        }
    }

    /// Publish what each reconcile did (DNS writes, conflicts, approval decisions).
    pub fn with_audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// Approve connections to these owned resources (after DNS, in the same reconcile).
    pub fn with_approvals(mut self, approvals: ApprovalSettings) -> Self {
        self.approvals = approvals;
        self
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
    pub fn settings(&self) -> &ReconcileSettings {
        &self.settings
    }

    pub(super) fn base_delay(&self) -> Duration {
        Duration::from_secs(self.settings.retry_base_secs.max(1))
    }

    /// Reconciles one endpoint. Never panics; errors are in `Report::outcome`.
    pub async fn reconcile(&self, id: &ResourceId, mode: Mode) -> Report {
        let report = match mode {
            // A dry run writes nothing, so it needs no writer's lease.
            Mode::DryRun => self.reconcile_locked(id, mode).await,
            Mode::Apply => match self.exclusive.run(id.key(), self.reconcile_locked(id, mode)).await {
                Ok(report) => report,
                Err(refused) => self.refused_report(id, &refused),
            },
        };
        // After the lock: publishing never holds up the next reconcile of this endpoint.
        self.publish(&super::report_events::events_for(&report)).await;
        report
    }

    /// The report of a reconcile that could not take the endpoint (see `exclusive`).
    fn refused_report(&self, id: &ResourceId, refused: &Refused) -> Report {
        let outcome = Self::refused_outcome(refused);
        self.count_outcome(&outcome);
        Report { outcome, ..Report::new(&id.to_string(), false) }
    }

    pub(super) fn refused_outcome(refused: &Refused) -> Outcome {
        let (after, reason) = refused.requeue();
        if refused.is_permanent() { Outcome::Failed { reason } } else { Outcome::Requeue { after, reason } }
    }

    async fn reconcile_locked(&self, id: &ResourceId, mode: Mode) -> Report {
        Stats::inc(&self.stats.reconciles);
        let mut report = Report::new(&id.to_string(), mode == Mode::DryRun);
        let state = match read_endpoint(&self.arm, id).await {
            Ok(s) => s,
            Err(e) => {
                report.outcome = self.read_failure(&e);
                self.count_outcome(&report.outcome);
                return report;
            }
        };
        match state {
            EndpointState::Absent => {
                report.exists = Some(false);
                self.reconcile_absent(id, mode, &mut report).await;
            }
            EndpointState::Present(pe) => {
                report.exists = Some(true);
                report.provisioning_state = Some(pe.provisioning_state.clone());
                if pe.provisioning_state.eq_ignore_ascii_case("failed") {
                    self.provisioning_failed(&pe, mode, &mut report).await;
                } else if !pe.is_provisioned() {
                    report.outcome = Outcome::Requeue {
                        after: self.base_delay(),
                        reason: format!("endpoint is {} (waiting for Succeeded)", pe.provisioning_state),
                    };
                } else {
                    self.reconcile_present(&pe, mode, &mut report).await;
                }
            }
        }
        self.count_outcome(&report.outcome);
        report
    }

    fn count_outcome(&self, o: &Outcome) {
        match o {
            Outcome::Done => {}
            Outcome::Requeue { .. } => Stats::inc(&self.stats.requeued),
            Outcome::Failed { .. } => Stats::inc(&self.stats.reconciles_failed),
        }
    }

    /// `provisioningState = Failed` is not a deletion: a failed *update* leaves a live
    /// endpoint with its NIC, its address and its approved connection, and a retried PUT
    /// usually brings it back. Only a 404 means gone, so everything stays as it is; the
    /// endpoint is marked, audited (`endpoint.provisioning_failed`) and looked at again.
    async fn provisioning_failed(&self, pe: &PrivateEndpoint, mode: Mode, report: &mut Report) {
        report.plan.notes.push(
            "provisioning Failed (a failed create or update): records, approvals and vendor registrations are \
             left as they are; only a deleted endpoint (404) loses them. Retry the endpoint's last change."
                .into(),
        );
        if self.marks.enabled {
            let step = "the endpoint's last change failed in Azure (provisioningState Failed); retry it".to_owned();
            match marks::mark(
                &self.arm,
                &self.marks,
                pe,
                marks::Wanted { state: "ProvisioningFailed", done: &[], missing_step: &step, conflict: None },
                mode,
            )
            .await
            {
                Ok(m) => report.marks = Some(m),
                Err(e) => tracing::warn!(endpoint = %report.endpoint, error = %e, "could not mark the endpoint"),
            }
        }
        report.outcome = Outcome::Requeue {
            after: self.base_delay().max(Duration::from_secs(60)),
            reason: "endpoint provisioning Failed; re-checking until it is Succeeded or deleted".into(),
        };
    }

    /// The catalog's view of `pe`. An alias no target knows may be a vendor's that was
    /// published since we last asked: the vendors are asked again (at most once per
    /// `reconcile.known_names_refresh_secs`, so unknown aliases cannot make us hammer them).
    pub(super) async fn desired(&self, pe: &PrivateEndpoint) -> crate::catalog::Desired {
        let desired = self.catalog.desired(pe);
        let unknown_alias =
            desired.target_id.is_none() && matches!(pe.target(), Some(crate::model::LinkTarget::Alias(_)));
        match &self.vendors {
            Some(sync) if unknown_alias => {
                if super::known::refresh_if_stale(&self.catalog, sync, &self.known_refreshed, &self.settings).await {
                    return self.catalog.desired(pe);
                }
                desired
            }
            _ => desired,
        }
    }

    /// Whether `pe` as an index shows it (Resource Graph: it may lag ARM) is converged
    /// against the DNS listing the sweep made: `Some(report)` when nothing would be
    /// written, nothing conflicts and its marks are as they should be. Nothing is read
    /// from ARM; any doubt (not provisioned, a connection to an owned target not yet
    /// Approved, a record or mark to write) answers `None`, and the caller reconciles the
    /// endpoint from ARM, whose answer decides every write.
    pub async fn converged_per_listing(&self, pe: &PrivateEndpoint) -> Option<Report> {
        let approved = pe.connections.first().is_some_and(|c| c.status == crate::model::ConnectionStatus::Approved);
        if !pe.is_provisioned() || (!self.approvals.owned_resources.is_empty() && !approved) {
            return None;
        }
        let mut report = Report {
            exists: Some(true),
            provisioning_state: Some(pe.provisioning_state.clone()),
            ..Report::new(&pe.id.to_string(), true)
        };
        self.reconcile_present_with(pe, Mode::DryRun, &mut report, false).await;
        let marks_due = report.marks.as_ref().is_some_and(|m| m.changed);
        let zones_due = report.zones.iter().any(ZoneReport::changes);
        let converged = report.outcome == Outcome::Done
            && report.plan.writes() == 0
            && report.plan.conflicts() == 0
            && !marks_due
            && !zones_due;
        converged.then_some(report)
    }

    async fn reconcile_present(&self, pe: &PrivateEndpoint, mode: Mode, report: &mut Report) {
        self.reconcile_present_with(pe, mode, report, true).await
    }

    async fn reconcile_present_with(&self, pe: &PrivateEndpoint, mode: Mode, report: &mut Report, approve: bool) {
        let desired = self.desired(pe).await;
        report.target = desired.target_id.clone();
        report.vendor = desired.vendor.clone();
        report.plan.notes.extend(desired.notes.iter().cloned());
        let endpoint = pe.id.key().to_string();
        let mut trouble = Trouble::default();
        // Approvals first: a connection to a target we own that the policy approves now
        // gets its records in this same reconcile.
        if approve && !self.approvals.owned_resources.is_empty() {
            match approvals::approve_owned(&self.arm, &self.approvals, pe, mode).await {
                Ok(decisions) => report.approvals = decisions,
                Err(e) => trouble.add_arm("approving the connection", &e),
            }
        }
        // Records follow approval: until the target's side approves, the endpoint holds
        // no name (its share, if it had one, is withdrawn: Rejected, Disconnected).
        let approved = pe.connections.first().is_some_and(|c| c.status == crate::model::ConnectionStatus::Approved)
            || report
                .approvals
                .iter()
                .any(|d| matches!(d.action, ApprovalAction::Approved | ApprovalAction::WouldApprove));
        let hold = desired.after_approval && !approved;
        if hold && !desired.records.is_empty() {
            report.plan.notes.push(format!(
                "records wait for approval: the connection is {} ({} name(s) withheld)",
                marks::connection_state(pe),
                desired.records.len()
            ));
        }
        if let Some(vendor) = &desired.vendor {
            report.vendors.push(match &self.vendors {
                Some(sync) => sync.plan_present(vendor, pe),
                None => VendorPlan { vendor: vendor.clone(), intent: VendorIntent::Disabled },
            });
        }
        // The records (all at once) and the marks are independent writes: they go out
        // together, so the tag write costs no round trip on the way to the record. The
        // conflict note is left as it is meanwhile and corrected after, when it changed.
        let records = self.per_replica(&desired.records);
        let blocked =
            if hold { HashMap::new() } else { self.prepare_zones(&records, mode, report, &mut trouble).await };
        for d in records.iter() {
            if let Some(Some(reason)) = blocked.get(&(d.key.zone.clone(), d.key.replica.clone())) {
                report.plan.actions.push(DnsAction::Conflict {
                    key: d.key.clone(),
                    reason: reason.clone(),
                    retry: false,
                });
            }
        }
        let work: Vec<KeyWork<'_>> = records
            .iter()
            .filter(|d| !blocked.contains_key(&(d.key.zone.clone(), d.key.replica.clone())))
            .map(|d| {
                let endpoint = endpoint.clone();
                if hold {
                    let key = d.key.clone();
                    let decide: Decide<'_> = Box::new(move |actual| plan::plan_absent(&endpoint, actual, &key));
                    (d.key.clone(), decide, false)
                } else {
                    let decide: Decide<'_> = Box::new(move |actual| plan::plan_present(&endpoint, d, actual));
                    (d.key.clone(), decide, true)
                }
            })
            .collect();
        let approved_now = report.approvals.iter().any(|d| d.action == ApprovalAction::Approved);
        let state = if approved_now { "Approved".to_owned() } else { marks::connection_state(pe) };
        let done = done_for(!desired.records.is_empty() && !hold, report);
        let done: Vec<&str> = done.iter().map(String::as_str).collect();
        let step = self.missing_step(pe, report);
        let mark = |conflict: Option<String>| {
            let (state, done, step) = (&state, &done, &step);
            async move {
                let conflict = conflict.as_deref();
                let wanted = marks::Wanted { state, done, missing_step: step, conflict };
                marks::mark(&self.arm, &self.marks, pe, wanted, mode).await
            }
        };
        let dns = self.converge_keys(work, mode, &endpoint);
        let first_mark = async { if self.marks.enabled { Some(mark(None).await) } else { None } };
        let (results, marked) = futures::future::join(dns, first_mark).await;
        KeyResult::record(results, report, &mut trouble);
        if let Some(marked) = marked {
            let conflict = report
                .plan
                .actions
                .iter()
                .find_map(|a| match a {
                    DnsAction::Conflict { key, reason, .. } => Some(format!("{}: {reason}", key.fqdn())),
                    _ => None,
                })
                .unwrap_or_default();
            let marked_conflict = pe.tags.get(&format!("{}conflict", self.marks.prefix)).cloned().unwrap_or_default();
            let marked = if !marks::same_tag_value(&conflict, &marked_conflict) && marked.is_ok() {
                mark(Some(conflict)).await
            } else {
                marked
            };
            match marked {
                Ok(m) => report.marks = Some(m),
                Err(e) if e.is_transient() => trouble.add_arm("marking the endpoint", &e),
                Err(e) => {
                    // Marks are for people; a missing tags permission must not stop DNS.
                    tracing::warn!(endpoint = %report.endpoint, error = %e, "could not mark the endpoint");
                    report.plan.notes.push(format!("could not mark the endpoint: {e}"));
                }
            }
        }
        report.outcome = trouble.outcome(self.base_delay());
        // A full record set frees up when another owner leaves: look again later.
        if report.outcome == Outcome::Done && report.plan.retryable_conflicts() > 0 {
            report.outcome = Outcome::Requeue {
                after: self.base_delay().max(Duration::from_secs(300)),
                reason: "a shared record set is full (20 addresses); waiting for room".into(),
            };
        }
    }

    pub(super) fn missing_step(&self, pe: &PrivateEndpoint, report: &Report) -> String {
        let vendor = report.vendors.first().map(|v| v.vendor.as_str());
        let left_pending = report.approvals.iter().find(|d| d.action == ApprovalAction::LeftPending);
        if let Some(VendorPlan { vendor, intent: VendorIntent::Unmatched { reason } }) = report.vendors.first() {
            return format!("not registered with {vendor}: {reason}");
        }
        marks::missing_step(pe, vendor, left_pending.map(|d| d.reason.as_str()))
    }

    pub(super) fn read_failure(&self, e: &crate::arm::endpoints::ReadError) -> Outcome {
        if e.is_transient() {
            let after = match e {
                crate::arm::endpoints::ReadError::Arm(a) => a.retry_after(),
                _ => None,
            };
            Outcome::Requeue { after: after.unwrap_or(self.base_delay()), reason: e.to_string() }
        } else {
            Outcome::Failed { reason: e.to_string() }
        }
    }

    async fn reconcile_absent(&self, id: &ResourceId, mode: Mode, report: &mut Report) {
        let endpoint = id.key().to_string();
        let mut trouble = Trouble::default();
        if let Some(sync) = &self.vendors {
            match sync.plan_absent(id).await {
                Ok(plans) => report.vendors = plans,
                Err(e) => {
                    trouble.transient.push(format!("reading the vendor ledger: {e}"));
                }
            }
        }
        if !self.approvals.owned_resources.is_empty() {
            match approvals::clear_for_deleted(&self.arm, &self.approvals, id, mode).await {
                // A target that could not be cleaned is reported and audited
                // (`approval.failed`); it never fails the rest of the deletion.
                Ok(decisions) => report.approvals = decisions,
                Err(e) => trouble.add_arm("removing the endpoint's leftover connection", &e),
            }
        }
        let candidates = match self.find_owned(&endpoint).await {
            Ok(c) => c,
            Err(e) => {
                trouble.add(&e);
                report.outcome = trouble.outcome(self.base_delay());
                return;
            }
        };
        if candidates.is_empty() {
            report.plan.notes.push("endpoint is gone and owns no records".into());
        }
        let work: Vec<KeyWork<'_>> = candidates
            .into_iter()
            .map(|key| {
                let (endpoint, k) = (endpoint.clone(), key.clone());
                let decide: Decide<'_> = Box::new(move |actual| plan::plan_absent(&endpoint, actual, &k));
                (key, decide, false)
            })
            .collect();
        let results = self.converge_keys(work, mode, &endpoint).await;
        KeyResult::record(results, report, &mut trouble);
        self.cleanup_zones(mode, report, &mut trouble).await;
        report.outcome = trouble.outcome(self.base_delay());
    }
}
