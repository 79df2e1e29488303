//! Record convergence: the part of a reconcile that brings each record set to its plan.
//!
//! For every record set the endpoint wants (or holds), read it, plan it (`plan.rs`, pure),
//! write it conditionally, and on a lost race (412) read and plan again, a bounded number
//! of times; zones that do not exist yet are created first (`prepare_zones`) and our own
//! empty ones removed after (`cleanup_zones`). Failures are collected per record (`Trouble`)
//! so one bad record never hides the others. `reconciler.rs` decides *which* records; this
//! file converges them.

use super::*;
use crate::model::{Classify, Retry};

/// How many times one record is re-read and re-planned after losing a race (412).
const MAX_PRECONDITION_ROUNDS: usize = 3;

/// Plans one record set from what it holds (`None` = absent).
pub(super) type Decide<'a> = Box<dyn Fn(Option<&ARecordSet>) -> DnsAction + Send + Sync + 'a>;
/// One record set to converge: its key, its planner, and whether to try a create first.
pub(super) type KeyWork<'a> = (RecordKey, Decide<'a>, bool);

/// What converging one record set did.
pub(super) struct KeyResult {
    pub(super) action: Option<DnsAction>,
    pub(super) applied: Option<Applied>,
    pub(super) error: Option<DnsError>,
}

impl KeyResult {
    /// Adds what was done to the report and what went wrong to the trouble.
    pub(super) fn record(results: Vec<KeyResult>, report: &mut Report, trouble: &mut Trouble) {
        for r in results {
            report.applied.extend(r.applied);
            report.plan.actions.extend(r.action);
            if let Some(e) = r.error {
                trouble.add(&e);
            }
        }
    }
}

/// Accumulates errors across a plan so one bad record does not hide the others.
#[derive(Default)]
pub(super) struct Trouble {
    pub(super) transient: Vec<String>,
    pub(super) permanent: Vec<String>,
    pub(super) retry_after: Option<Duration>,
}

impl Trouble {
    // Both go by the error's one retry class (`model::Classify`): a DNS conflict (412) is
    // worth another round, an ARM 412 here is not (the record write already re-planned).
    pub(super) fn add(&mut self, e: &DnsError) {
        match e.retry() {
            Retry::Permanent | Retry::Misconfigured => self.permanent.push(e.message.clone()),
            Retry::Transient { .. } | Retry::Conflict => {
                self.transient.push(e.message.clone());
                self.retry_after = self.retry_after.max(e.retry_after);
            }
        }
    }
    pub(super) fn add_arm(&mut self, what: &str, e: &ArmError) {
        match e.retry() {
            Retry::Transient { after } => {
                self.transient.push(format!("{what}: {e}"));
                self.retry_after = self.retry_after.max(after);
            }
            Retry::Conflict | Retry::Permanent | Retry::Misconfigured => self.permanent.push(format!("{what}: {e}")),
        }
    }
    pub(super) fn outcome(self, base: Duration) -> Outcome {
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
    /// Each desired record once per replica of its zone (a zone in one place: once).
    pub(super) fn per_replica(&self, records: &[crate::catalog::DesiredRecord]) -> Vec<crate::catalog::DesiredRecord> {
        records
            .iter()
            .flat_map(|d| {
                self.dns
                    .replicas_of(&d.key.zone)
                    .into_iter()
                    .map(move |r| crate::catalog::DesiredRecord { key: d.key.in_replica(&r), ..d.clone() })
            })
            .collect()
    }

    /// Zone management before the records: each Azure zone replica the records go to is
    /// made to exist and linked (or a dry run says it would be). Returns the (zone,
    /// replica) places records may not go into, with the conflict to report (`None`: a
    /// failure, already in `trouble`).
    pub(super) async fn prepare_zones(
        &self,
        records: &[crate::catalog::DesiredRecord],
        mode: Mode,
        report: &mut Report,
        trouble: &mut Trouble,
    ) -> HashMap<(String, String), Option<String>> {
        let mut blocked = HashMap::new();
        let Some(zones) = &self.zones else { return blocked };
        let mut seen = BTreeSet::new();
        for d in records.iter().filter(|d| self.dns.is_azure(&d.key.zone)) {
            let place = (d.key.zone.clone(), d.key.replica.clone());
            let vnets = zones.vnets_for(&d.key, &d.vnet);
            if !seen.insert((place.clone(), vnets.clone())) {
                continue;
            }
            let z = zones.prepare(&d.key, &vnets, mode == Mode::Apply, false).await;
            if let Some(e) = &z.error {
                trouble.add(e);
            }
            if !z.usable() {
                // Not created (a same-named zone elsewhere) is a conflict to report; a
                // failed read or write is in the trouble and retried, not a conflict.
                let conflict = (z.state == crate::effects::dns::zones::ZoneState::NotCreated).then(|| z.detail.clone());
                blocked.insert(place, conflict);
            }
            if z.state != crate::effects::dns::zones::ZoneState::Present
                || !z.links.is_empty()
                || !z.warnings.is_empty()
                || !z.detail.is_empty()
            {
                report.zones.push(z);
            }
        }
        blocked
    }

    /// After a deleted endpoint's records are removed: zones we created that are now
    /// empty (and linked by nobody else) are removed with our links.
    pub(super) async fn cleanup_zones(&self, mode: Mode, report: &mut Report, trouble: &mut Trouble) {
        let Some(zones) = &self.zones else { return };
        let emptied: BTreeSet<RecordKey> = report
            .plan
            .actions
            .iter()
            .filter_map(|a| match a {
                DnsAction::Delete { previous } if self.dns.is_azure(&previous.key.zone) => {
                    Some(RecordKey::new(&previous.key.zone, "@").in_replica(&previous.key.replica))
                }
                _ => None,
            })
            .collect();
        let failed_writes = report.applied.iter().any(|a| a.error.is_some());
        if failed_writes {
            return;
        }
        for key in emptied {
            let deleting: Vec<String> = report
                .plan
                .actions
                .iter()
                .filter_map(|a| match a {
                    DnsAction::Delete { previous }
                        if previous.key.zone == key.zone && previous.key.replica == key.replica =>
                    {
                        Some(previous.key.name.clone())
                    }
                    _ => None,
                })
                .collect();
            if let Some(z) = zones.cleanup(&key, mode == Mode::Apply, &deleting).await {
                if let Some(e) = &z.error {
                    trouble.add(e);
                }
                // The zone listing changed (or the zone went away).
                self.zone_cache.lock().unwrap_or_else(|p| p.into_inner()).remove(&key.zone);
                report.zones.push(z);
            }
        }
    }

    /// Read one record set, plan with `decide`, apply; on a lost race read and plan again.
    ///
    /// With `assume_absent` (an apply that adds this endpoint's share) the first round
    /// skips the read and tries a create (`If-None-Match: *` / "name not in use"): a new
    /// endpoint's record then costs one round trip, and a record that exists refuses the
    /// create (412), which costs what the read would have, plus that refused attempt.
    pub(super) async fn converge_key(
        &self,
        key: &RecordKey,
        mode: Mode,
        endpoint: &str,
        decide: impl Fn(Option<&ARecordSet>) -> DnsAction,
        assume_absent: bool,
    ) -> KeyResult {
        let provider = match self.dns.provider_for(&key.zone) {
            Ok(p) => p,
            Err(e) => return KeyResult { action: None, applied: None, error: Some(e) },
        };
        let mut last = None;
        for round in 0..MAX_PRECONDITION_ROUNDS {
            // In a sweep the first read comes from its zone listing (see `snapshot.rs`);
            // a lost race always re-reads the backend.
            let listed = crate::reconcile::snapshot::listed(key).filter(|_| round == 0);
            let optimistic = round == 0 && listed.is_none() && assume_absent && mode == Mode::Apply;
            let mut action = if optimistic { decide(None) } else { DnsAction::Unchanged { key: key.clone() } };
            if !optimistic || !matches!(action, DnsAction::Create { .. }) {
                let actual = match listed {
                    Some(listed) => listed,
                    None => match provider.get(key).await {
                        Ok(a) => a,
                        Err(e) => return KeyResult { action: None, applied: None, error: Some(e) },
                    },
                };
                action = decide(actual.as_ref());
            }
            if mode == Mode::DryRun || !action.is_write() {
                if let DnsAction::Conflict { reason, .. } = &action
                    && mode == Mode::Apply
                {
                    Stats::inc(&self.stats.dns_conflicts);
                    tracing::warn!(%endpoint, record = %key.fqdn(), %reason, "dns conflict");
                }
                return KeyResult { action: Some(action), applied: None, error: None };
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
                    crate::reconcile::snapshot::written(key);
                    tracing::info!(%endpoint, provider = provider.kind(), "{}", action.describe());
                    let applied = Applied { action: action.describe(), error: None };
                    return KeyResult { action: Some(action), applied: Some(applied), error: None };
                }
                Err(e) if e.kind == DnsErrorKind::PreconditionFailed => {
                    if !optimistic {
                        tracing::debug!(record = %key.fqdn(), "record changed while we wrote it; re-reading");
                    }
                    last = Some(e);
                }
                Err(e) => {
                    tracing::warn!(%endpoint, record = %key.fqdn(), error = %e, "dns write failed");
                    let applied = Applied { action: action.describe(), error: Some(e.message.clone()) };
                    return KeyResult { action: Some(action), applied: Some(applied), error: Some(e) };
                }
            }
        }
        let e = last.unwrap_or_else(|| DnsError::transient("record kept changing"));
        let error = DnsError::transient(format!(
            "{} kept changing under us ({MAX_PRECONDITION_ROUNDS} rounds): {}",
            key.fqdn(),
            e.message
        ));
        KeyResult { action: None, applied: None, error: Some(error) }
    }

    /// Converges several keys at once (independent record sets: one round trip for all).
    pub(super) async fn converge_keys(&self, work: Vec<KeyWork<'_>>, mode: Mode, endpoint: &str) -> Vec<KeyResult> {
        futures::future::join_all(
            work.iter()
                .map(|(key, decide, assume_absent)| self.converge_key(key, mode, endpoint, decide, *assume_absent)),
        )
        .await
    }

    /// Keys of record sets that list `endpoint` as an owner, across every known zone.
    /// Zone listings are reused for a few seconds (a burst of deletes lists each zone
    /// once); every candidate is re-read before any write, so a stale listing can only
    /// cost a no-op, and the sweep catches anything it missed.
    pub(super) async fn find_owned(&self, endpoint: &str) -> Result<Vec<RecordKey>, DnsError> {
        let mut out = Vec::new();
        for zone in self.known_zones().await? {
            let sets = self.zone_sets(&zone).await?;
            out.extend(plan::owned_elsewhere(endpoint, &sets, &BTreeSet::new()));
        }
        Ok(out)
    }

    /// Every zone we know, listed now: the sweep finds orphans in it (endpoints owning a
    /// record that no longer exist) and plans from it instead of reading each record.
    pub async fn dns_snapshot(&self) -> Result<crate::reconcile::snapshot::DnsSnapshot, DnsError> {
        self.invalidate_caches();
        let mut snapshot = crate::reconcile::snapshot::DnsSnapshot::default();
        for zone in self.known_zones().await? {
            let sets = self.zone_sets(&zone).await?;
            let complete = self.dns.provider_for(&zone)?.listing_is_complete();
            snapshot.add_zone(&zone, sets, complete);
        }
        Ok(snapshot)
    }

    /// A zone's record sets, from a short-lived cache (invalidated by our own writes).
    pub(super) async fn zone_sets(&self, zone: &str) -> Result<Vec<crate::effects::dns::ARecordSet>, DnsError> {
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

    pub(super) async fn known_zones(&self) -> Result<Vec<String>, DnsError> {
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
