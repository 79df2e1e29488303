//! The sweep's source of truth: every private endpoint in the subscriptions in scope.
//!
//! Events are hints; the sweep is what makes a missed or dropped event harmless. It lists
//! endpoints with Azure Resource Graph (default) or ARM's per-subscription list (paged
//! by `nextLink`, read budget honoured by the client) and hands the ids to the same
//! reconcile path the events use, so a sweep can only ever do what an event for that
//! endpoint would have done.

use std::collections::BTreeMap;

use crate::arm::endpoints::NETWORK_API;
use crate::arm::{ArmClient, ArmError};
use crate::model::ResourceId;

/// Private endpoint ids by their lower-cased key.
type Ids = BTreeMap<String, ResourceId>;

/// Adds `raw` unless its endpoint is there already: `Some(true)` = added, `Some(false)`
/// = already there, `None` = not a private endpoint id.
fn insert_new(ids: &mut Ids, raw: &str) -> Option<bool> {
    let id = ResourceId::parse_private_endpoint(raw).ok()?;
    if ids.contains_key(id.key()) {
        return Some(false);
    }
    ids.insert(id.key().to_owned(), id);
    Some(true)
}

/// Ids of every private endpoint in `subscriptions`, deduplicated, in id order. Items
/// that do not parse as a private endpoint id are skipped with a warning (ARM would not
/// send them; a proxy or a fake might).
pub async fn list_endpoints(arm: &ArmClient, subscriptions: &[String]) -> Result<Vec<ResourceId>, ArmError> {
    let mut out = Ids::new();
    for sub in subscriptions {
        let path = format!("/subscriptions/{}/providers/Microsoft.Network/privateEndpoints", sub.trim());
        for item in arm.list_all(&path, NETWORK_API).await? {
            if insert_new(&mut out, item.get("id").and_then(|v| v.as_str()).unwrap_or_default()).is_none() {
                tracing::warn!(subscription = %sub, "sweep: skipping a listed item without a private endpoint id");
            }
        }
    }
    Ok(out.into_values().collect())
}

/// The same list from Azure Resource Graph (which can lag ARM by seconds to minutes:
/// every endpoint is re-read by its reconcile before anything is removed).
pub async fn list_with_resource_graph(arm: &ArmClient, subscriptions: &[String]) -> Result<Vec<ResourceId>, ArmError> {
    let mut out = Ids::new();
    for row in crate::arm::graph::list_private_endpoints(arm, subscriptions).await? {
        if insert_new(&mut out, &row.id).is_none() {
            tracing::warn!("sweep: skipping a Resource Graph row without a private endpoint id");
        }
    }
    Ok(out.into_values().collect())
}

/// What a sweep (or `autopilot plan --subscription`) looks at.
#[derive(Debug, Default)]
pub struct Scope {
    /// Listed in the subscriptions (the source of truth's view, which may lag).
    pub listed: usize,
    /// Own a record in DNS but were not listed: deleted, or not listed yet.
    pub dns_owners_not_listed: usize,
    /// Registered with a vendor (per the ledger) but not listed.
    pub vendor_registrations_not_listed: usize,
    /// Shares in RFC 2136 zones whose owner (published only as an opaque hash) is neither
    /// listed nor in the ledger: kept, and cleaned by that endpoint's delete event.
    pub dns_owners_unresolved: usize,
    /// Everything to reconcile, deduplicated, taking one subscription after another
    /// (see [`interleave`]).
    pub ids: Vec<ResourceId>,
    /// The DNS zones as listed for this scope; the sweep's reconciles read from it
    /// (`None` if listing failed: they read each record).
    pub dns: Option<std::sync::Arc<super::snapshot::DnsSnapshot>>,
    /// Endpoints as Resource Graph shows them, with their NIC, by lower-cased id: the
    /// sweep compares these with the zone listing and reads ARM only where they disagree.
    pub views: std::collections::HashMap<String, crate::model::PrivateEndpoint>,
}

/// Lists the endpoints in `subscriptions` and adds every endpoint that our DNS records or
/// our vendor ledger still name. Each one is re-read by its reconcile before anything is
/// removed, so a lagging listing can only cost a no-op.
pub async fn scope(
    arm: &ArmClient,
    reconciler: &super::Reconciler,
    subscriptions: &[String],
    source: &str,
) -> Result<Scope, ArmError> {
    let mut views = std::collections::HashMap::new();
    let listed = if source == "arm" {
        list_endpoints(arm, subscriptions).await?
    } else {
        let mut out = Ids::new();
        for row in crate::arm::graph::list_private_endpoints(arm, subscriptions).await? {
            if insert_new(&mut out, &row.id).is_none() {
                tracing::warn!("sweep: skipping a Resource Graph row without a private endpoint id");
                continue;
            }
            if let Some((pe, nic)) = &row.view
                && let Ok(mut pe) = crate::model::PrivateEndpoint::from_arm_json(pe)
            {
                pe.add_nic(nic);
                views.insert(pe.id.key().to_owned(), pe);
            }
        }
        out.into_values().collect()
    };
    let mut scope = Scope { listed: listed.len(), views, ..Scope::default() };
    let mut ids: Ids = listed.into_iter().map(|id| (id.key().to_owned(), id)).collect();
    let mut opaque_owners = Vec::new();
    match reconciler.dns_snapshot().await {
        Ok(snapshot) => {
            let owners = snapshot.owners();
            scope.dns_owners_not_listed =
                owners.iter().filter(|owner| insert_new(&mut ids, owner) == Some(true)).count();
            opaque_owners.extend(owners.into_iter().filter(|o| o.starts_with(crate::model::ownership::OPAQUE_PREFIX)));
            scope.dns = Some(std::sync::Arc::new(snapshot));
        }
        Err(e) => tracing::warn!(error = %e, "sweep: could not read DNS ownership; orphans wait for the next run"),
    }
    if let Some(sync) = reconciler.vendor_sync() {
        match sync.ledger().list().await {
            Ok(entries) => {
                scope.vendor_registrations_not_listed =
                    entries.iter().filter(|e| insert_new(&mut ids, &e.endpoint.pe_id) == Some(true)).count();
            }
            Err(e) => tracing::warn!(error = %e, "sweep: could not read the vendor ledger; vendor orphans wait"),
        }
    }
    if !opaque_owners.is_empty() {
        let known: std::collections::HashSet<String> =
            ids.keys().map(|k| crate::model::ownership::opaque_ref(k)).collect();
        scope.dns_owners_unresolved = opaque_owners.iter().filter(|o| !known.contains(*o)).count();
        if scope.dns_owners_unresolved > 0 {
            tracing::warn!(
                count = scope.dns_owners_unresolved,
                "sweep: record shares in RFC 2136 zones belong to endpoints neither listed nor in the ledger \
                 (owners are published only as hashes); they stay until those endpoints' delete events"
            );
        }
    }
    scope.ids = interleave(ids.into_values().collect());
    Ok(scope)
}

/// Orders ids round-robin across subscriptions (in id order within each).
///
/// Why: ARM budgets reads per subscription (250 + 25/s). In id order, all of the first
/// subscription's endpoints come first, every reconcile in flight waits on that one
/// bucket while the others sit full, and the subscriptions are drained one after the
/// other. Interleaved, every bucket is drawn at once: a 4-subscription sweep then takes
/// about a quarter of the time when reads dominate.
pub fn interleave(ids: Vec<ResourceId>) -> Vec<ResourceId> {
    let mut by_subscription: BTreeMap<String, std::collections::VecDeque<ResourceId>> = BTreeMap::new();
    for id in ids {
        by_subscription.entry(id.subscription().to_ascii_lowercase()).or_default().push_back(id);
    }
    let mut out = Vec::new();
    while !by_subscription.is_empty() {
        by_subscription.retain(|_, queue| {
            out.extend(queue.pop_front());
            !queue.is_empty()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleave_takes_one_subscription_after_another() {
        let id = |sub: &str, name: &str| {
            ResourceId::parse_private_endpoint(&format!(
                "/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Network/privateEndpoints/{name}"
            ))
            .unwrap()
        };
        let ids = vec![id("a", "1"), id("a", "2"), id("a", "3"), id("b", "1"), id("c", "1"), id("c", "2")];
        let names: Vec<String> = interleave(ids).iter().map(|i| format!("{}/{}", i.subscription(), i.name())).collect();
        assert_eq!(names, ["a/1", "b/1", "c/1", "a/2", "c/2", "a/3"]);
    }
}
