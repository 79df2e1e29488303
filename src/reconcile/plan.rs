//! The plan: pure functions from (desired, actual) to actions. No I/O here, so every
//! rule about ownership is unit-tested in isolation.
//!
//! Rules:
//! - nothing there -> create it, owned by this endpoint (its share records its addresses,
//!   what it points at and its virtual network);
//! - there and ours, this endpoint the only owner -> make it right (which also repairs
//!   manual edits);
//! - there and ours with other owners -> join only where the name is shared by
//!   configuration (a vendor's regional wildcard), every owner points at the same target,
//!   and, unless sharing across VNets is switched on, sits in the same VNet; otherwise a
//!   conflict naming the holder and the way out. A second endpoint never takes over a
//!   name by asking for it;
//! - there and not ours -> conflict: reported, never overwritten;
//! - the endpoint is gone, unapproved, or no longer wants the name -> remove its share;
//!   delete the set when no owner is left.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::catalog::{DesiredRecord, Sharing};
use crate::effects::dns::{ARecordSet, MAX_RECORDS_PER_SET};
use crate::model::RecordKey;
use crate::model::ownership::{Owners, Ownership, Share, owner_key_of, same_ref};

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
    /// `retry` is set when the obstacle goes away by itself (room frees up in a full set),
    /// so the endpoint is looked at again later.
    Conflict {
        key: RecordKey,
        reason: String,
        #[serde(default)]
        retry: bool,
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
            DnsAction::Create { set } => format!("create {} A [{}] ttl {}", set.key.label(), ips(set), set.ttl),
            DnsAction::Update { previous, next } => {
                format!("update {} A [{}] -> [{}] ttl {}", next.key.label(), ips(previous), ips(next), next.ttl)
            }
            DnsAction::Delete { previous } => format!("delete {} A [{}]", previous.key.label(), ips(previous)),
            DnsAction::Conflict { key, reason, .. } => format!("conflict {}: {reason}", key.label()),
            DnsAction::Unchanged { key } => format!("unchanged {}", key.label()),
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
    /// Conflicts that may clear by themselves (a full set), worth a later look.
    pub fn retryable_conflicts(&self) -> usize {
        self.actions.iter().filter(|a| matches!(a, DnsAction::Conflict { retry: true, .. })).count()
    }
}

/// A short, readable name for an owner key: `resource-group/name` for an endpoint id, the
/// opaque reference otherwise.
pub fn describe_owner(key: &str) -> String {
    match crate::model::ResourceId::parse_private_endpoint(key) {
        Ok(id) => format!("{}/{}", id.resource_group(), id.name()),
        Err(_) => format!("another endpoint ({key})"),
    }
}

/// Why `desired` may not join a set these `others` already own, if it may not.
fn refuse_join(desired: &DesiredRecord, others: &Owners) -> Option<String> {
    let (holder, _) = others.iter().next()?;
    let holder = describe_owner(holder);
    if desired.sharing == Sharing::Exclusive {
        return Some(format!(
            "held by endpoint {holder}; a name has one owner unless the catalog marks it shared. Way out: \
             delete or re-point that endpoint, or give this VNet its own zone"
        ));
    }
    if let Some((other, _)) = others.iter().find(|(_, s)| !same_ref(&s.target, &desired.target)) {
        return Some(format!(
            "held by endpoint {} which points at a different target (or its share predates target \
             records and will be rewritten by its next reconcile); only endpoints to the same target share a name",
            describe_owner(other)
        ));
    }
    if desired.sharing == Sharing::SameVnet
        && let Some((other, _)) = others.iter().find(|(_, s)| !same_ref(&s.vnet, &desired.vnet))
    {
        return Some(format!(
            "held by endpoint {} in another virtual network; clients would get addresses in both VNets. \
             Way out: set dns.share_across_vnets = true if every VNet routes to the others' endpoints, \
             or give each VNet its own zone",
            describe_owner(other)
        ));
    }
    None
}

/// Whether two owner maps say the same thing (keys and references may be stored in
/// their opaque form on one side).
fn owners_equivalent(read: &Owners, next: &Owners) -> bool {
    read.len() == next.len()
        && next.iter().all(|(k, s)| {
            owner_key_of(read, k).and_then(|rk| read.get(&rk)).is_some_and(|r| {
                r.addresses == s.addresses
                    && (r.target == s.target || same_ref(&r.target, &s.target))
                    && (r.vnet == s.vnet || same_ref(&r.vnet, &s.vnet))
            })
        })
}

/// What to do so that `endpoint` (lower-cased id) contributes `desired` at this key.
pub fn plan_present(endpoint: &str, desired: &DesiredRecord, actual: Option<&ARecordSet>) -> DnsAction {
    let share = Share::new(desired.addresses.clone(), &desired.target, &desired.vnet);
    match actual {
        None => {
            let owners = Owners::from([(endpoint.to_string(), share)]);
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
                retry: false,
            },
            Ownership::Managed(owners) => {
                let own_key = owner_key_of(owners, endpoint);
                let mut others = owners.clone();
                if let Some(k) = &own_key {
                    others.remove(k);
                }
                if let Some(reason) = refuse_join(desired, &others) {
                    return DnsAction::Conflict { key: desired.key.clone(), reason, retry: false };
                }
                let mut next_owners = others;
                next_owners.insert(own_key.unwrap_or_else(|| endpoint.to_string()), share);
                let next =
                    ARecordSet { version: None, ..ARecordSet::managed(desired.key.clone(), desired.ttl, next_owners) };
                if next.addresses.len() > MAX_RECORDS_PER_SET {
                    return too_many(&desired.key, next.addresses.len());
                }
                let same_owners = next.owners().is_some_and(|n| owners_equivalent(owners, n));
                if same_owners && next.addresses == a.addresses && next.ttl == a.ttl {
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
    let Some(own_key) = owner_key_of(owners, endpoint) else {
        return DnsAction::Unchanged { key: key.clone() };
    };
    let mut rest = owners.clone();
    rest.remove(&own_key);
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
             retried when room frees up (split the endpoints across zones or remove unused endpoints)"
        ),
        retry: true,
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
        .filter(|s| s.owners().is_some_and(|o| owner_key_of(o, endpoint).is_some()))
        .map(|s| s.key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const A: &str = "/subscriptions/s/resourcegroups/rg/providers/microsoft.network/privateendpoints/a";
    const B: &str = "/subscriptions/s/resourcegroups/rg/providers/microsoft.network/privateendpoints/b";

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn key() -> RecordKey {
        RecordKey::new("privatelink.eastus2.azure.elastic-cloud.com", "*")
    }
    const TARGET: &str = "eastus2-prod-002-privatelink-service.guid.eastus2.azure.privatelinkservice";
    const VNET: &str = "/subscriptions/s/resourcegroups/rg/providers/microsoft.network/virtualnetworks/v1";

    fn desired(ips: &[&str]) -> DesiredRecord {
        DesiredRecord {
            key: key(),
            ttl: 300,
            addresses: ips.iter().map(|s| ip(s)).collect(),
            target: TARGET.into(),
            vnet: VNET.into(),
            sharing: Sharing::AnyVnet,
        }
    }
    fn managed(owners: &[(&str, &[&str])], extra: &[&str]) -> ARecordSet {
        let o: Owners = owners
            .iter()
            .map(|(k, ips)| (k.to_string(), Share::new(ips.iter().map(|s| ip(s)).collect(), TARGET, VNET)))
            .collect();
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
            DnsAction::Conflict { reason, retry, .. } => {
                assert!(reason.contains("limit of 20"), "{reason}");
                assert!(retry, "a full set is retried when room frees up");
            }
            other => panic!("{other:?}"),
        }
    }

    fn conflict_reason(action: DnsAction) -> String {
        match action {
            DnsAction::Conflict { reason, retry: false, .. } => reason,
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[test]
    fn an_exclusive_name_has_one_owner() {
        let a = managed(&[(B, &["10.0.0.9"])], &[]);
        let d = DesiredRecord { sharing: Sharing::Exclusive, ..desired(&["10.0.0.4"]) };
        let reason = conflict_reason(plan_present(A, &d, Some(&a)));
        assert!(reason.contains("held by endpoint rg/b"), "{reason}");
        // Its own share is still its own to update.
        let mine = managed(&[(A, &["10.0.0.3"])], &[]);
        assert!(matches!(plan_present(A, &d, Some(&mine)), DnsAction::Update { .. }));
    }

    #[test]
    fn a_shared_name_is_joined_only_for_the_same_target() {
        let a = managed(&[(B, &["10.0.0.9"])], &[]);
        let d = DesiredRecord {
            target: "production-evil.guid.eastus2.azure.privatelinkservice".into(),
            ..desired(&["10.6.6.6"])
        };
        let reason = conflict_reason(plan_present(A, &d, Some(&a)));
        assert!(reason.contains("different target"), "{reason}");
        // A share written before targets were recorded matches nothing until rewritten.
        let mut legacy = managed(&[(B, &["10.0.0.9"])], &[]);
        if let Ownership::Managed(o) = &mut legacy.ownership {
            o.values_mut().for_each(|s| s.target.clear());
        }
        conflict_reason(plan_present(A, &desired(&["10.0.0.4"]), Some(&legacy)));
    }

    #[test]
    fn sharing_across_vnets_is_a_setting() {
        let a = managed(&[(B, &["10.0.0.9"])], &[]);
        let other_vnet = DesiredRecord { vnet: format!("{VNET}-2"), ..desired(&["10.1.0.4"]) };
        let same_vnet_only = DesiredRecord { sharing: Sharing::SameVnet, ..other_vnet.clone() };
        let reason = conflict_reason(plan_present(A, &same_vnet_only, Some(&a)));
        assert!(reason.contains("another virtual network") && reason.contains("share_across_vnets"), "{reason}");
        assert!(matches!(plan_present(A, &other_vnet, Some(&a)), DnsAction::Update { .. }));
        let same = DesiredRecord { sharing: Sharing::SameVnet, ..desired(&["10.0.0.4"]) };
        assert!(matches!(plan_present(A, &same, Some(&a)), DnsAction::Update { .. }));
    }

    #[test]
    fn opaque_owner_keys_are_recognised() {
        let a = managed(&[(&crate::model::ownership::opaque_ref(A), &["10.0.0.4"])], &[]);
        assert!(matches!(plan_present(A, &desired(&["10.0.0.4"]), Some(&a)), DnsAction::Unchanged { .. }));
        assert!(matches!(plan_absent(A, Some(&a), &key()), DnsAction::Delete { .. }));
    }
}
