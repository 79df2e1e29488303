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
use crate::config::ReconcileSettings;
use crate::effects::approvals::{self, ApprovalDecision, ApprovalSettings};
use crate::effects::audit::{self, AuditSink};
use crate::effects::dns::{ARecordSet, DnsError, DnsErrorKind, DnsRouter, RecordKey};
use crate::model::{PrivateEndpoint, ResourceId};
use crate::telemetry::Stats;

use super::locks::KeyedLocks;
use super::plan::{self, DnsAction, Plan};

/// How many times one record is re-read and re-planned after losing a race (412).
const MAX_PRECONDITION_ROUNDS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    /// Compute and return the plan; write nothing.
    DryRun,
}

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
    pub outcome: Outcome,
    pub dry_run: bool,
}

#[derive(Debug)]
pub struct Reconciler {
    arm: ArmClient,
    catalog: Arc<Catalog>,
    dns: Arc<DnsRouter>,
    settings: ReconcileSettings,
    stats: Arc<Stats>,
    locks: KeyedLocks,
    zone_cache: Mutex<HashMap<String, (Instant, Vec<ARecordSet>)>>,
    known_zones: Mutex<Option<(Instant, Vec<String>)>>,
    approvals: ApprovalSettings,
    audit: Option<Arc<dyn AuditSink>>,
}

/// Accumulates errors across a plan so one bad record does not hide the others.
#[derive(Default)]
struct Trouble {
    transient: Vec<String>,
    permanent: Vec<String>,
    retry_after: Option<Duration>,
}

impl Trouble {
    fn add(&mut self, e: &DnsError) {
        match e.kind {
            DnsErrorKind::Permanent => self.permanent.push(e.message.clone()),
            _ => {
                self.transient.push(e.message.clone());
                self.retry_after = self.retry_after.max(e.retry_after);
            }
        }
    }
    fn add_arm(&mut self, what: &str, e: &ArmError) {
        if e.is_transient() {
            self.transient.push(format!("{what}: {e}"));
            self.retry_after = self.retry_after.max(e.retry_after());
        } else {
            self.permanent.push(format!("{what}: {e}"));
        }
    }
    fn outcome(self, base: Duration) -> Outcome {
        if !self.permanent.is_empty() {
            Outcome::Failed { reason: self.permanent.join("; ") }
        } else if !self.transient.is_empty() {
            Outcome::Requeue { after: self.retry_after.unwrap_or(base).max(base), reason: self.transient.join("; ") }
        } else {
            Outcome::Done
        }
    }
}

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
            locks: KeyedLocks::default(),
            zone_cache: Mutex::new(HashMap::new()),
            known_zones: Mutex::new(None),
            approvals: ApprovalSettings::default(),
            audit: None,
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

    fn base_delay(&self) -> Duration {
        Duration::from_secs(self.settings.retry_base_secs.max(1))
    }

    /// Reconciles one endpoint. Never panics; errors are in `Report::outcome`.
    pub async fn reconcile(&self, id: &ResourceId, mode: Mode) -> Report {
        let _guard = self.locks.lock(id.key()).await;
        Stats::inc(&self.stats.reconciles);
        let mut report = Report {
            endpoint: id.to_string(),
            exists: None,
            provisioning_state: None,
            target: None,
            vendor: None,
            plan: Plan { endpoint: id.to_string(), ..Default::default() },
            applied: vec![],
            approvals: vec![],
            outcome: Outcome::Done,
            dry_run: mode == Mode::DryRun,
        };
        let state = match read_endpoint(&self.arm, id).await {
            Ok(s) => s,
            Err(e) => {
                report.outcome = if e.is_transient() {
                    let after = match &e {
                        crate::arm::endpoints::ReadError::Arm(a) => a.retry_after(),
                        _ => None,
                    };
                    Outcome::Requeue { after: after.unwrap_or(self.base_delay()), reason: e.to_string() }
                } else {
                    Outcome::Failed { reason: e.to_string() }
                };
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
                let state = pe.provisioning_state.to_ascii_lowercase();
                if state == "failed" {
                    report.plan.notes.push("provisioning failed: the endpoint needs no records".into());
                    self.reconcile_absent(id, mode, &mut report).await;
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
        if let Some(sink) = &self.audit {
            let events = audit::events_for(&report);
            if let Err(e) = sink.publish(&events).await {
                tracing::error!(endpoint = %report.endpoint, error = %e, lost = events.len(), "audit events not published");
            }
        }
        report
    }

    fn count_outcome(&self, o: &Outcome) {
        match o {
            Outcome::Done => {}
            Outcome::Requeue { .. } => Stats::inc(&self.stats.requeued),
            Outcome::Failed { .. } => Stats::inc(&self.stats.reconciles_failed),
        }
    }

    async fn reconcile_present(&self, pe: &PrivateEndpoint, mode: Mode, report: &mut Report) {
        let desired = self.catalog.desired(pe);
        report.target = desired.target_id.clone();
        report.vendor = desired.vendor.clone();
        report.plan.notes.extend(desired.notes.iter().cloned());
        let endpoint = pe.id.key().to_string();
        let mut trouble = Trouble::default();
        for d in &desired.records {
            let result =
                self.converge_key(&d.key, mode, report, |actual| plan::plan_present(&endpoint, d, actual)).await;
            if let Err(e) = result {
                trouble.add(&e);
            }
        }
        if !self.approvals.owned_resources.is_empty() {
            match approvals::approve_owned(&self.arm, &self.approvals, pe, mode).await {
                Ok(decisions) => report.approvals = decisions,
                Err(e) => trouble.add_arm("approving the connection", &e),
            }
        }
        report.outcome = trouble.outcome(self.base_delay());
    }

    async fn reconcile_absent(&self, id: &ResourceId, mode: Mode, report: &mut Report) {
        let endpoint = id.key().to_string();
        let mut trouble = Trouble::default();
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
        for key in candidates {
            let result =
                self.converge_key(&key, mode, report, |actual| plan::plan_absent(&endpoint, actual, &key)).await;
            if let Err(e) = result {
                trouble.add(&e);
            }
        }
        report.outcome = trouble.outcome(self.base_delay());
    }

    /// Read one record set, plan with `decide`, apply; on a lost race read and plan again.
    async fn converge_key(
        &self,
        key: &RecordKey,
        mode: Mode,
        report: &mut Report,
        decide: impl Fn(Option<&ARecordSet>) -> DnsAction,
    ) -> Result<(), DnsError> {
        let provider = self.dns.provider_for(&key.zone)?;
        let mut last = None;
        for _ in 0..MAX_PRECONDITION_ROUNDS {
            let actual = provider.get(key).await?;
            let action = decide(actual.as_ref());
            if mode == Mode::DryRun || !action.is_write() {
                if let DnsAction::Conflict { reason, .. } = &action
                    && mode == Mode::Apply
                {
                    Stats::inc(&self.stats.dns_conflicts);
                    tracing::warn!(endpoint = %report.endpoint, record = %key.fqdn(), %reason, "dns conflict");
                }
                report.plan.actions.push(action);
                return Ok(());
            }
            let result = match &action {
                DnsAction::Create { set } => provider.create(set).await,
                DnsAction::Update { previous, next } => provider.update(previous, next).await,
                DnsAction::Delete { previous } => provider.delete(previous).await,
                _ => Ok(()),
            };
            match result {
                Ok(()) => {
                    match &action {
                        DnsAction::Create { .. } => Stats::inc(&self.stats.dns_created),
                        DnsAction::Update { .. } => Stats::inc(&self.stats.dns_updated),
                        DnsAction::Delete { .. } => Stats::inc(&self.stats.dns_deleted),
                        _ => {}
                    }
                    // Our own write makes any cached listing of this zone stale.
                    self.zone_cache.lock().unwrap_or_else(|p| p.into_inner()).remove(&key.zone);
                    tracing::info!(endpoint = %report.endpoint, provider = provider.kind(), "{}", action.describe());
                    report.applied.push(Applied { action: action.describe(), error: None });
                    report.plan.actions.push(action);
                    return Ok(());
                }
                Err(e) if e.kind == DnsErrorKind::PreconditionFailed => {
                    tracing::debug!(record = %key.fqdn(), "record changed while we wrote it; re-reading");
                    last = Some(e);
                }
                Err(e) => {
                    tracing::warn!(endpoint = %report.endpoint, record = %key.fqdn(), error = %e, "dns write failed");
                    report.applied.push(Applied { action: action.describe(), error: Some(e.message.clone()) });
                    report.plan.actions.push(action);
                    return Err(e);
                }
            }
        }
        let e = last.unwrap_or_else(|| DnsError::transient("record kept changing"));
        Err(DnsError::transient(format!(
            "{} kept changing under us ({MAX_PRECONDITION_ROUNDS} rounds): {}",
            key.fqdn(),
            e.message
        )))
    }

    /// Keys of record sets that list `endpoint` as an owner, across every known zone.
    /// Zone listings are reused for a few seconds (a burst of deletes lists each zone
    /// once); every candidate is re-read before any write, so a stale listing can only
    /// cost a no-op, and the sweep catches anything it missed.
    async fn find_owned(&self, endpoint: &str) -> Result<Vec<RecordKey>, DnsError> {
        let mut out = Vec::new();
        for zone in self.known_zones().await? {
            let sets = self.zone_sets(&zone).await?;
            out.extend(plan::owned_elsewhere(endpoint, &sets, &BTreeSet::new()));
        }
        Ok(out)
    }

    /// Every endpoint (lower-cased id) that owns a record in a zone we know: the sweep
    /// compares this with the endpoints that exist to find orphans.
    pub async fn owners_in_dns(&self) -> Result<BTreeSet<String>, DnsError> {
        self.invalidate_caches();
        let mut owners = BTreeSet::new();
        for zone in self.known_zones().await? {
            for set in self.zone_sets(&zone).await? {
                if let crate::effects::dns::Ownership::Managed(m) = &set.ownership {
                    owners.extend(m.keys().cloned());
                }
            }
        }
        Ok(owners)
    }

    /// A zone's record sets, from a short-lived cache (invalidated by our own writes).
    async fn zone_sets(&self, zone: &str) -> Result<Vec<crate::effects::dns::ARecordSet>, DnsError> {
        let ttl = Duration::from_secs(self.settings.zone_scan_cache_secs);
        let cached = {
            let cache = self.zone_cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.get(zone).filter(|(at, _)| at.elapsed() < ttl).map(|(_, sets)| sets.clone())
        };
        if let Some(sets) = cached {
            return Ok(sets);
        }
        let sets = self.dns.provider_for(zone)?.list(zone).await?;
        let mut cache = self.zone_cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(zone.to_owned(), (Instant::now(), sets.clone()));
        Ok(sets)
    }

    async fn known_zones(&self) -> Result<Vec<String>, DnsError> {
        {
            let cache = self.known_zones.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, zones)) = cache.as_ref()
                && at.elapsed() < Duration::from_secs(60)
            {
                return Ok(zones.clone());
            }
        }
        let zones = self.dns.known_zones().await?;
        *self.known_zones.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), zones.clone()));
        Ok(zones)
    }

    /// Forget cached zone listings (tests and the demo create zones on the fly).
    pub fn invalidate_caches(&self) {
        self.zone_cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
        *self.known_zones.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}
