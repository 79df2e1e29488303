//! The sweep's view of DNS: every known zone listed once, read instead of one GET per
//! record.
//!
//! Why: a sweep reconciles every endpoint, and each reconcile reads each of its record
//! sets. Against Azure Private DNS that is one GET per record in the hub subscription,
//! whose read budget (25/s) then decides how long a converged estate takes to sweep
//! (about 40 s per 1,000 endpoints). The sweep already lists every zone to find orphans
//! (a page holds 100 record sets), so it plans from that listing instead.
//!
//! Why it is safe: the snapshot only replaces the *first* read of a record in a sweep's
//! reconcile. Every write is still conditional on what was read (ETag / If-None-Match /
//! RFC 2136 prerequisites), so a record that changed since the listing makes the write
//! fail as a lost race, and the retry reads the backend. A record the sweep writes is
//! dropped from the snapshot, so a second endpoint sharing it (a regional wildcard)
//! reads it fresh. The one thing a stale snapshot can do is skip a change made after the
//! listing; the next event or sweep sees it.
//!
//! The snapshot lives in a task-local set only around the sweep's (and `autopilot plan`'s)
//! reconciles: event handlers and queue workers running at the same time never see it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::effects::dns::ARecordSet;
use crate::model::{Ownership, RecordKey};

tokio::task_local! {
    static CURRENT: Arc<DnsSnapshot>;
}

/// Record sets of the zones listed at the start of a sweep.
#[derive(Debug, Default)]
pub struct DnsSnapshot {
    /// Zone -> (name -> set, whether a name missing from the listing is absent).
    /// Keyed by the whole record key: a replicated zone lists each replica's copy.
    zones: HashMap<String, (HashMap<RecordKey, ARecordSet>, bool)>,
    /// Keys whose listed copy must not be used any more (we wrote them).
    stale: Mutex<HashSet<RecordKey>>,
}

impl DnsSnapshot {
    /// Adds a zone's listing. A zone not added is read record by record, as usual. With
    /// `complete` false (see `DnsProvider::listing_is_complete`) only the listed names
    /// are taken from it; a name it lacks is read from the backend.
    pub fn add_zone(&mut self, zone: &str, sets: Vec<ARecordSet>, complete: bool) {
        let by_name = sets.into_iter().map(|s| (s.key.clone(), s)).collect();
        self.zones.insert(RecordKey::new(zone, "@").zone, (by_name, complete));
    }

    /// Every endpoint (lower-cased id) owning a record in the listed zones.
    pub fn owners(&self) -> BTreeSet<String> {
        let mut owners = BTreeSet::new();
        for set in self.zones.values().flat_map(|(sets, _)| sets.values()) {
            if let Ownership::Managed(m) = &set.ownership {
                owners.extend(m.keys().cloned());
            }
        }
        owners
    }

    pub fn zone_count(&self) -> usize {
        self.zones.len()
    }

    /// The listed copy of `key`: `Some(None)` = the zone was listed and has no such set,
    /// `None` = not covered (read the backend).
    fn lookup(&self, key: &RecordKey) -> Option<Option<ARecordSet>> {
        let (sets, complete) = self.zones.get(&key.zone)?;
        if self.stale.lock().unwrap_or_else(|p| p.into_inner()).contains(key) {
            return None;
        }
        match sets.get(key) {
            Some(set) => Some(Some(set.clone())),
            None if *complete => Some(None),
            None => None,
        }
    }

    fn forget(&self, key: &RecordKey) {
        if self.zones.contains_key(&key.zone) {
            self.stale.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone());
        }
    }

    /// Runs `f` with this snapshot as the current task's DNS view (`None`: without one).
    pub async fn scope<F: Future>(snapshot: Option<Arc<DnsSnapshot>>, f: F) -> F::Output {
        match snapshot {
            Some(s) => CURRENT.scope(s, f).await,
            None => f.await,
        }
    }
}

/// The current task's listed copy of `key`, if a sweep snapshot covers it.
pub(crate) fn listed(key: &RecordKey) -> Option<Option<ARecordSet>> {
    CURRENT.try_with(|s| s.lookup(key)).ok().flatten()
}

/// After writing `key`: later reads in this sweep go to the backend.
pub(crate) fn written(key: &RecordKey) {
    let _ = CURRENT.try_with(|s| s.forget(key));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn set(zone: &str, name: &str) -> ARecordSet {
        ARecordSet::managed(
            RecordKey::new(zone, name),
            300,
            BTreeMap::from([(
                "/subscriptions/s/pe".to_string(),
                crate::model::ownership::Share::new(BTreeSet::from(["10.0.0.4".parse().unwrap()]), "", ""),
            )]),
        )
    }

    #[tokio::test]
    async fn lookups_only_inside_the_scope_and_fresh_after_a_write() {
        let mut snap = DnsSnapshot::default();
        snap.add_zone("Zone.Example", vec![set("zone.example", "*")], true);
        snap.add_zone("partial.example", vec![set("partial.example", "a")], false);
        assert_eq!(snap.owners().len(), 1);
        let snap = Arc::new(snap);
        let (star, other, unknown) =
            (RecordKey::new("zone.example", "*"), RecordKey::new("zone.example", "x"), RecordKey::new("other", "x"));
        assert!(listed(&star).is_none(), "outside a sweep nothing is listed");
        DnsSnapshot::scope(Some(snap.clone()), async {
            assert!(listed(&star).is_some_and(|s| s.is_some()));
            assert_eq!(listed(&other), Some(None), "listed zone, no such set");
            assert_eq!(listed(&unknown), None, "zone not listed: read the backend");
            assert!(listed(&RecordKey::new("partial.example", "a")).is_some_and(|s| s.is_some()));
            assert_eq!(listed(&RecordKey::new("partial.example", "b")), None, "incomplete listing: a miss is read");
            written(&star);
            assert_eq!(listed(&star), None, "after our write, read fresh");
        })
        .await;
    }
}
