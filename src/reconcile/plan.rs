//! The plan: pure functions from (desired, actual) to actions. No I/O here, so every
//! rule about ownership is unit-tested in isolation.
//!
//! Rules:
//! - nothing there -> create it, owned by this endpoint;
//! - there and ours -> make this endpoint's share right, keep the other owners' shares,
//!   and make the addresses exactly the union (which also repairs manual edits);
//! - there and not ours -> conflict: reported, never overwritten;
//! - the endpoint is gone (or no longer wants the name) -> remove its share; delete the
//!   set when no owner is left.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::catalog::DesiredRecord;
use crate::effects::dns::{ARecordSet, MAX_RECORDS_PER_SET, Ownership, RecordKey};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum DnsAction {
    Create {
        set: ARecordSet,
    },
    Update {
        previous: ARecordSet,
        next: ARecordSet,
    },
    Delete {
        previous: ARecordSet,
    },
    /// Someone else's record (or a limit) stands in the way; we leave it and say why.
    Conflict {
        key: RecordKey,
        reason: String,
    },
    /// Already right.
    Unchanged {
        key: RecordKey,
    },
}

impl DnsAction {
    pub fn key(&self) -> &RecordKey {
        match self {
            DnsAction::Create { set } => &set.key,
            DnsAction::Update { next, .. } => &next.key,
            DnsAction::Delete { previous } => &previous.key,
            DnsAction::Conflict { key, .. } | DnsAction::Unchanged { key } => key,
        }
    }
    pub fn is_write(&self) -> bool {
        matches!(self, DnsAction::Create { .. } | DnsAction::Update { .. } | DnsAction::Delete { .. })
    }
    /// One line for logs, audit and the dry-run output.
    pub fn describe(&self) -> String {
        let ips = |s: &ARecordSet| s.addresses.iter().map(Ipv4Addr::to_string).collect::<Vec<_>>().join(",");
        match self {
            DnsAction::Create { set } => format!("create {} A [{}] ttl {}", set.key.fqdn(), ips(set), set.ttl),
            DnsAction::Update { previous, next } => {
                format!("update {} A [{}] -> [{}] ttl {}", next.key.fqdn(), ips(previous), ips(next), next.ttl)
            }
            DnsAction::Delete { previous } => format!("delete {} A [{}]", previous.key.fqdn(), ips(previous)),
            DnsAction::Conflict { key, reason } => format!("conflict {}: {reason}", key.fqdn()),
            DnsAction::Unchanged { key } => format!("unchanged {}", key.fqdn()),
        }
    }
}

/// All actions for one endpoint, with notes from the catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    pub endpoint: String,
    pub actions: Vec<DnsAction>,
    pub notes: Vec<String>,
}

impl Plan {
    pub fn writes(&self) -> usize {
        self.actions.iter().filter(|a| a.is_write()).count()
    }
    pub fn conflicts(&self) -> usize {
        self.actions.iter().filter(|a| matches!(a, DnsAction::Conflict { .. })).count()
    }
}

/// What to do so that `endpoint` (lower-cased id) contributes `desired` at this key.
pub fn plan_present(endpoint: &str, desired: &DesiredRecord, actual: Option<&ARecordSet>) -> DnsAction {
    match actual {
        None => {
            let owners = BTreeMap::from([(endpoint.to_string(), desired.addresses.clone())]);
            let set = ARecordSet::managed(desired.key.clone(), desired.ttl, owners);
            if set.addresses.len() > MAX_RECORDS_PER_SET {
                return too_many(&desired.key, set.addresses.len());
            }
            DnsAction::Create { set }
        }
        Some(a) => match &a.ownership {
            Ownership::Foreign(who) => DnsAction::Conflict {
                key: desired.key.clone(),
                reason: format!("an A record set already exists and is not ours ({who}); left untouched"),
            },
            Ownership::Managed(owners) => {
                let mut next_owners = owners.clone();
                next_owners.insert(endpoint.to_string(), desired.addresses.clone());
                let next =
                    ARecordSet { version: None, ..ARecordSet::managed(desired.key.clone(), desired.ttl, next_owners) };
                if next.addresses.len() > MAX_RECORDS_PER_SET {
                    return too_many(&desired.key, next.addresses.len());
                }
                if next.ownership == a.ownership && next.addresses == a.addresses && next.ttl == a.ttl {
                    DnsAction::Unchanged { key: desired.key.clone() }
                } else {
                    DnsAction::Update { previous: a.clone(), next }
                }
            }
        },
    }
}

/// What to do so that `endpoint` no longer contributes to this set.
pub fn plan_absent(endpoint: &str, actual: Option<&ARecordSet>, key: &RecordKey) -> DnsAction {
    let Some(a) = actual else { return DnsAction::Unchanged { key: key.clone() } };
    let Ownership::Managed(owners) = &a.ownership else {
        // Never delete what we do not own, even if it sits where ours used to.
        return DnsAction::Unchanged { key: key.clone() };
    };
    if !owners.contains_key(endpoint) {
        return DnsAction::Unchanged { key: key.clone() };
    }
    let mut rest = owners.clone();
    rest.remove(endpoint);
    if rest.is_empty() {
        return DnsAction::Delete { previous: a.clone() };
    }
    let next = ARecordSet { version: None, ..ARecordSet::managed(a.key.clone(), a.ttl, rest) };
    DnsAction::Update { previous: a.clone(), next }
}

fn too_many(key: &RecordKey, n: usize) -> DnsAction {
    DnsAction::Conflict {
        key: key.clone(),
        reason: format!(
            "{n} addresses would exceed the limit of {MAX_RECORDS_PER_SET} records per record set; \
             split the endpoints across zones or remove unused endpoints"
        ),
    }
}

/// Keys (other than `desired_keys`) whose set lists `endpoint` as an owner.
pub fn owned_elsewhere<'a>(
    endpoint: &str,
    sets: impl IntoIterator<Item = &'a ARecordSet>,
    desired_keys: &BTreeSet<RecordKey>,
) -> Vec<RecordKey> {
    sets.into_iter()
        .filter(|s| !desired_keys.contains(&s.key))
        .filter(|s| s.owners().is_some_and(|o| o.contains_key(endpoint)))
        .map(|s| s.key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "/subscriptions/s/resourcegroups/rg/providers/microsoft.network/privateendpoints/a";
    const B: &str = "/subscriptions/s/resourcegroups/rg/providers/microsoft.network/privateendpoints/b";

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn key() -> RecordKey {
        RecordKey::new("privatelink.eastus2.azure.elastic-cloud.com", "*")
    }
    fn desired(ips: &[&str]) -> DesiredRecord {
        DesiredRecord { key: key(), ttl: 300, addresses: ips.iter().map(|s| ip(s)).collect() }
    }
    fn managed(owners: &[(&str, &[&str])], extra: &[&str]) -> ARecordSet {
        let o: BTreeMap<String, BTreeSet<Ipv4Addr>> =
            owners.iter().map(|(k, ips)| (k.to_string(), ips.iter().map(|s| ip(s)).collect())).collect();
        let mut s = ARecordSet::managed(key(), 300, o);
        s.addresses.extend(extra.iter().map(|s| ip(s)));
        s.version = Some("etag-1".into());
        s
    }

    #[test]
    fn creates_when_absent() {
        match plan_present(A, &desired(&["10.0.0.4"]), None) {
            DnsAction::Create { set } => {
                assert_eq!(set.addresses, BTreeSet::from([ip("10.0.0.4")]));
                assert!(set.owners().unwrap().contains_key(A));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unchanged_when_right() {
        let a = managed(&[(A, &["10.0.0.4"])], &[]);
        assert!(matches!(plan_present(A, &desired(&["10.0.0.4"]), Some(&a)), DnsAction::Unchanged { .. }));
    }

    #[test]
    fn joins_a_shared_wildcard_keeping_other_owners() {
        let a = managed(&[(B, &["10.0.0.9"])], &[]);
        match plan_present(A, &desired(&["10.0.0.4"]), Some(&a)) {
            DnsAction::Update { previous, next } => {
                assert_eq!(previous.version.as_deref(), Some("etag-1"));
                assert_eq!(next.addresses, BTreeSet::from([ip("10.0.0.4"), ip("10.0.0.9")]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn repairs_drifted_ip_and_manual_extra_address() {
        let a = managed(&[(A, &["10.0.0.3"])], &["192.168.1.1"]);
        match plan_present(A, &desired(&["10.0.0.4"]), Some(&a)) {
            DnsAction::Update { next, .. } => assert_eq!(next.addresses, BTreeSet::from([ip("10.0.0.4")])),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn foreign_is_a_conflict_never_a_write() {
        let mut f = managed(&[], &["10.9.9.9"]);
        f.ownership = Ownership::Foreign("zone group".into());
        assert!(matches!(plan_present(A, &desired(&["10.0.0.4"]), Some(&f)), DnsAction::Conflict { .. }));
        assert!(matches!(plan_absent(A, Some(&f), &key()), DnsAction::Unchanged { .. }));
    }

    #[test]
    fn removing_one_owner_leaves_survivors_addresses() {
        let a = managed(&[(A, &["10.0.0.4"]), (B, &["10.0.0.9"])], &[]);
        match plan_absent(A, Some(&a), &key()) {
            DnsAction::Update { next, .. } => {
                assert_eq!(next.addresses, BTreeSet::from([ip("10.0.0.9")]));
                assert!(!next.owners().unwrap().contains_key(A));
            }
            other => panic!("{other:?}"),
        }
        let only = managed(&[(A, &["10.0.0.4"])], &[]);
        assert!(matches!(plan_absent(A, Some(&only), &key()), DnsAction::Delete { .. }));
        assert!(matches!(plan_absent(A, None, &key()), DnsAction::Unchanged { .. }));
        let other = managed(&[(B, &["10.0.0.9"])], &[]);
        assert!(matches!(plan_absent(A, Some(&other), &key()), DnsAction::Unchanged { .. }));
    }

    #[test]
    fn twenty_records_limit_is_a_clear_conflict() {
        let owners: Vec<(String, Vec<String>)> =
            (0..20).map(|i| (format!("{B}{i}"), vec![format!("10.0.1.{i}")])).collect();
        let refs: Vec<(&str, Vec<&str>)> =
            owners.iter().map(|(k, v)| (k.as_str(), v.iter().map(String::as_str).collect())).collect();
        let refs2: Vec<(&str, &[&str])> = refs.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        let a = managed(&refs2, &[]);
        match plan_present(A, &desired(&["10.0.0.4"]), Some(&a)) {
            DnsAction::Conflict { reason, .. } => assert!(reason.contains("limit of 20"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
