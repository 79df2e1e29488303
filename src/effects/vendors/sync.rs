//! Converging one vendor's allowlist with one endpoint: the effect a `Work::Vendor` item
//! runs after the worker has re-read the endpoint from ARM.
//!
//! The reconciler only *plans* vendor work ([`VendorIntent`]); the calls themselves go
//! through the queue because vendor APIs are slow, rate-limited and sometimes down.
//! When the item runs, the endpoint is read again, so what happens follows the endpoint
//! as it is now, not as it was when the item was queued:
//! - it exists, is provisioned and routes to the vendor: write the ledger, then register;
//! - it is gone (or failed, or no longer points at the vendor): deregister what the
//!   ledger says we registered, then forget the ledger entry;
//! - it matches no routing rule: nothing is registered; the reconcile already reported it.
//!
//! Several instances may run items for the same endpoint at once (nothing serialises
//! them across instances), so both directions go through the conditional ledger
//! (`ledger/mod.rs`) and re-read it on a conflict:
//! - register: read the entry (with its version); if it names a *different* endpoint
//!   under the same id (deleted and recreated under the same name: another
//!   `resourceGuid`, region or alias), deregister that one from the vendor first, since
//!   nothing else would ever remember it; write the new entry conditionally; call the
//!   vendor; then write the entry once more ("confirm"). The confirm is what makes a
//!   racing deregistration safe: one that read the entry before our vendor call now
//!   holds a stale version, so its `forget` fails, and it re-reads and deregisters again.
//!   If it forgot the entry first, the confirm creates it again: the ledger then holds
//!   an endpoint the sweep will deregister, too much but never too little.
//! - deregister: read the entry, deregister it, `forget` only that version; on a
//!   conflict re-read (a racing register wrote after us) and deregister again, unless the
//!   entry now names another endpoint (recreated while we worked: our read of ARM is
//!   stale, so the item goes back to the queue, which re-reads ARM).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::api::{Change, Vendor, VendorEndpoint, VendorError};
use super::config::VendorsConfig;
use super::ledger::{Ledger, LedgerError, Registration, Version};
use super::routing::{self, Route};
use crate::model::{PrivateEndpoint, ResourceId};

/// How many times one item re-reads the ledger after a conflict before it hands the
/// work back to the queue (which retries it with a fresh read of ARM).
const CONFLICT_ROUNDS: usize = 5;

/// How one round of `register` ended.
enum Attempt {
    /// The ledger changed between our read and our first write: read again.
    Reread(LedgerError),
    Done(Result<VendorDone, SyncError>),
}

/// Whether two registrations are of the same private endpoint, not just the same ARM id:
/// an endpoint deleted and recreated under the same name gets a new `resourceGuid`
/// (and may move region or target another alias).
pub fn same_endpoint(a: &VendorEndpoint, b: &VendorEndpoint) -> bool {
    let eq = |x: &Option<String>, y: &Option<String>| match (x, y) {
        (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
        (None, None) => true,
        _ => false,
    };
    eq(&a.resource_guid, &b.resource_guid) && a.location.eq_ignore_ascii_case(&b.location) && eq(&a.alias, &b.alias)
}

/// What the reconcile plans for one vendor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "intent", rename_all = "snake_case")]
pub enum VendorIntent {
    /// Queue a registration with these targets (empty for Zilliz: its one project).
    /// `guid` is the endpoint's `resourceGuid` as read: the generation this work is for,
    /// so the work for a recreated endpoint is never collapsed into its predecessor's.
    Register {
        targets: Vec<String>,
        by: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        guid: Option<String>,
    },
    /// Queue a deregistration (the endpoint is gone; the ledger says it was registered).
    Deregister,
    /// Not registered: no routing rule matches (a person must add one).
    Unmatched { reason: String },
    /// The catalog says this vendor, but `[vendors.<name>]` is not enabled.
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VendorPlan {
    pub vendor: String,
    #[serde(flatten)]
    pub intent: VendorIntent,
}

impl VendorPlan {
    /// What makes two work items for this plan the same work (see `queue::work`): the
    /// endpoint generation for a registration, `gone` for a deregistration.
    pub fn generation(&self) -> &str {
        match &self.intent {
            VendorIntent::Register { guid, .. } => guid.as_deref().unwrap_or(""),
            _ => "gone",
        }
    }

    /// Whether this plan needs a queue item.
    pub fn needs_work(&self) -> bool {
        matches!(self.intent, VendorIntent::Register { .. } | VendorIntent::Deregister)
    }
}

/// What one vendor work item did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "done", rename_all = "snake_case")]
pub enum VendorDone {
    Registered {
        change: Change,
        targets: Vec<String>,
        /// Targets the endpoint was registered with before and no longer routes to, from
        /// which it was just removed (empty when there was nothing left to remove).
        withdrawn: Vec<String>,
    },
    Deregistered {
        change: Change,
    },
    /// Nothing to do (no ledger entry for a gone endpoint, or no rule matches).
    Nothing {
        why: String,
    },
}

/// Failure of a vendor work item: the vendor's own error, or the ledger's.
#[derive(Debug)]
pub enum SyncError {
    Vendor(VendorError),
    Ledger(LedgerError),
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::Vendor(e) => e.fmt(f),
            SyncError::Ledger(e) => e.fmt(f),
        }
    }
}

/// The enabled vendors, their routing rules and the ledger.
#[derive(Debug)]
pub struct VendorSync {
    vendors: BTreeMap<&'static str, Arc<dyn Vendor>>,
    config: VendorsConfig,
    ledger: Arc<dyn Ledger>,
}

impl VendorSync {
    pub fn new(vendors: Vec<Arc<dyn Vendor>>, config: VendorsConfig, ledger: Arc<dyn Ledger>) -> Self {
        Self { vendors: vendors.into_iter().map(|v| (v.name(), v)).collect(), config, ledger }
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.vendors.keys().copied()
    }

    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    pub fn vendor(&self, name: &str) -> Option<&Arc<dyn Vendor>> {
        self.vendors.get(name)
    }

    /// Every target the configuration can route `vendor` endpoints to (defaults and rules).
    pub fn configured_targets(&self, vendor: &str) -> Vec<String> {
        routing::configured_targets(&self.config, vendor)
    }

    /// The endpoint as the vendor should see it, with its routed targets, or why not.
    pub fn route(&self, vendor: &str, pe: &PrivateEndpoint) -> (VendorEndpoint, Route) {
        let mut ep = VendorEndpoint::from_endpoint(pe);
        let route = routing::route(&self.config, vendor, &ep, &pe.tags);
        if let Route::Register { targets, .. } = &route {
            ep.targets = targets.clone();
        }
        (ep, route)
    }

    /// The plan for an existing endpoint that the catalog maps to `vendor`.
    pub fn plan_present(&self, vendor: &str, pe: &PrivateEndpoint) -> VendorPlan {
        let intent = if !self.vendors.contains_key(vendor) {
            VendorIntent::Disabled
        } else {
            match self.route(vendor, pe).1 {
                Route::Register { targets, by } => {
                    VendorIntent::Register { targets, by, guid: pe.resource_guid.clone() }
                }
                Route::Unmatched(reason) => VendorIntent::Unmatched { reason },
            }
        };
        VendorPlan { vendor: vendor.to_owned(), intent }
    }

    /// Deregistrations for an endpoint that is gone: every vendor whose ledger has it.
    pub async fn plan_absent(&self, id: &ResourceId) -> Result<Vec<VendorPlan>, LedgerError> {
        let mut out = Vec::new();
        for name in self.vendors.keys() {
            if self.ledger.get(name, id.as_str()).await?.is_some() {
                out.push(VendorPlan { vendor: (*name).to_owned(), intent: VendorIntent::Deregister });
            }
        }
        Ok(out)
    }

    /// Registers `pe` with `vendor` (ledger first, so a crash can never leave a
    /// registration nobody knows how to remove). A concurrent change of the ledger entry
    /// makes it read again and decide again, a few times, then hand back to the queue.
    pub async fn register(&self, vendor: &str, pe: &PrivateEndpoint) -> Result<VendorDone, SyncError> {
        let client = self.client(vendor)?;
        let (ep, route) = self.route(vendor, pe);
        if let Route::Unmatched(why) = route {
            return Ok(VendorDone::Nothing { why });
        }
        for _ in 0..CONFLICT_ROUNDS {
            match self.try_register(client, vendor, &ep).await {
                Attempt::Reread(e) => {
                    tracing::debug!(endpoint = %ep.pe_id, vendor, error = %e, "ledger changed concurrently; reading again");
                }
                Attempt::Done(result) => return result,
            }
        }
        Err(SyncError::Ledger(LedgerError::Conflict(format!(
            "{vendor} entry for {} kept changing while registering",
            ep.pe_id
        ))))
    }

    /// One round: read, decide, write the ledger, call the vendor, confirm. Only a
    /// conflict on the first ledger write (before the vendor call) is worth another round
    /// here; anything later goes back to the queue, whose retry reads ARM again (what a
    /// stale read of the endpoint decided must not be acted on twice).
    async fn try_register(&self, client: &Arc<dyn Vendor>, vendor: &str, ep: &VendorEndpoint) -> Attempt {
        let previous = match self.ledger.get(vendor, &ep.pe_id).await {
            Ok(p) => p,
            Err(e) => return Attempt::Done(Err(SyncError::Ledger(e))),
        };
        let mut dropped: Vec<String> = Vec::new();
        match &previous {
            // The endpoint was deleted and recreated under the same name: the old one's
            // registration is keyed by what changed (Elastic's and Zilliz's guid), and
            // this entry is the only record of it. Deregistered before the entry is
            // replaced, so a failure here leaves the entry naming it (retried).
            Some(p) if !same_endpoint(&p.endpoint, ep) => match client.deregister(&p.endpoint).await {
                Ok(change) => tracing::info!(
                    endpoint = %ep.pe_id, vendor, ?change,
                    old_guid = p.endpoint.resource_guid.as_deref().unwrap_or(""),
                    new_guid = ep.resource_guid.as_deref().unwrap_or(""),
                    "the endpoint was replaced under the same name; deregistered the previous one"
                ),
                Err(e) => return Attempt::Done(Err(SyncError::Vendor(e))),
            },
            // Routing may have moved (a rule, a tag or the defaults changed): the targets
            // the ledger holds and the route no longer names are withdrawn after the new
            // registration. Until then the ledger holds both sets (too much, never too little).
            Some(p) => dropped = self.dropped_targets(vendor, p, ep),
            None => {}
        }
        let mut record = ep.clone();
        record.targets.extend(dropped.iter().cloned());
        let version = match self.ledger.record(vendor, &record, previous.as_ref().map(|p| &p.version)).await {
            Ok(v) => v,
            Err(e) if e.is_conflict() => return Attempt::Reread(e),
            Err(e) => return Attempt::Done(Err(SyncError::Ledger(e))),
        };
        Attempt::Done(self.register_recorded(client, vendor, ep, previous, dropped, version).await)
    }

    /// The rest of a round, once the ledger names the endpoint: the vendor call, the
    /// withdrawal from targets it left, the confirming write.
    async fn register_recorded(
        &self,
        client: &Arc<dyn Vendor>,
        vendor: &str,
        ep: &VendorEndpoint,
        previous: Option<Registration>,
        dropped: Vec<String>,
        version: Version,
    ) -> Result<VendorDone, SyncError> {
        let change = client.register(ep).await.map_err(SyncError::Vendor)?;
        let mut withdrawn = Vec::new();
        let mut confirmed = ep.clone();
        match previous {
            Some(old) if !dropped.is_empty() => {
                if client.withdraw(&old.endpoint, &dropped).await.map_err(SyncError::Vendor)? == Change::Applied {
                    withdrawn = dropped;
                }
            }
            _ => confirmed.targets.extend(dropped),
        }
        self.confirm(client, vendor, &confirmed, version).await?;
        Ok(VendorDone::Registered { change, targets: ep.targets.clone(), withdrawn })
    }

    /// The targets `previous` names and `ep`'s route no longer does.
    fn dropped_targets(&self, vendor: &str, previous: &Registration, ep: &VendorEndpoint) -> Vec<String> {
        // Entries written before targets were spelled out say `[]` for "the defaults";
        // the current defaults are the best reading of them.
        let before = if previous.endpoint.targets.is_empty() && vendor != "zilliz" {
            routing::defaults(&self.config, vendor)
        } else {
            previous.endpoint.targets.clone()
        };
        let kept = |t: &String| ep.targets.iter().any(|n| n.eq_ignore_ascii_case(t));
        before.into_iter().filter(|t| !kept(t)).collect()
    }

    /// Writes the entry again after the vendor call (see the module doc): from the version
    /// we wrote, or from whatever version is there now, or created again if a racing
    /// deregistration forgot it.
    async fn confirm(
        &self,
        client: &Arc<dyn Vendor>,
        vendor: &str,
        ep: &VendorEndpoint,
        mut version: Version,
    ) -> Result<(), SyncError> {
        let mut ep = ep.clone();
        for _ in 0..CONFLICT_ROUNDS {
            match self.ledger.record(vendor, &ep, Some(&version)).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(SyncError::Ledger(e)),
            }
            match self.ledger.get(vendor, &ep.pe_id).await.map_err(SyncError::Ledger)? {
                None => match self.ledger.record(vendor, &ep, None).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.is_conflict() => {}
                    Err(e) => return Err(SyncError::Ledger(e)),
                },
                Some(current) if same_endpoint(&current.endpoint, &ep) => {
                    // A racing register of the same endpoint: keep its targets too.
                    for t in current.endpoint.targets {
                        if !ep.targets.iter().any(|x| x.eq_ignore_ascii_case(&t)) {
                            ep.targets.push(t);
                        }
                    }
                    version = current.version;
                }
                Some(current) => {
                    // The endpoint was replaced while we worked and the entry names the new
                    // one: ours is recorded nowhere, so it comes off the vendor now, and the
                    // queue retries with a fresh read of ARM (which registers whichever is live).
                    client.deregister(&ep).await.map_err(SyncError::Vendor)?;
                    return Err(SyncError::Ledger(LedgerError::Conflict(format!(
                        "{vendor} entry for {} now names guid {:?}; retrying with a fresh read",
                        ep.pe_id, current.endpoint.resource_guid
                    ))));
                }
            }
        }
        Err(SyncError::Ledger(LedgerError::Conflict(format!(
            "{vendor} entry for {} kept changing after registering",
            ep.pe_id
        ))))
    }

    /// Deregisters what the ledger says we registered for `id` with `vendor`, then
    /// forgets exactly that version. No entry = nothing we know of to remove.
    pub async fn deregister(&self, vendor: &str, id: &ResourceId) -> Result<VendorDone, SyncError> {
        let client = self.client(vendor)?;
        let mut first: Option<VendorEndpoint> = None;
        let mut change = Change::AlreadyInPlace;
        for _ in 0..CONFLICT_ROUNDS {
            let Some(entry) = self.ledger.get(vendor, id.as_str()).await.map_err(SyncError::Ledger)? else {
                return Ok(match first {
                    None => VendorDone::Nothing { why: format!("the ledger has no {vendor} registration for it") },
                    Some(_) => VendorDone::Deregistered { change },
                });
            };
            if let Some(f) = &first
                && !same_endpoint(f, &entry.endpoint)
            {
                return Err(SyncError::Ledger(LedgerError::Conflict(format!(
                    "{vendor} entry for {id} was replaced by another endpoint of that name while deregistering"
                ))));
            }
            change = change.merge(client.deregister(&entry.endpoint).await.map_err(SyncError::Vendor)?);
            first.get_or_insert(entry.endpoint);
            match self.ledger.forget(vendor, id.as_str(), &entry.version).await {
                Ok(()) => return Ok(VendorDone::Deregistered { change }),
                Err(e) if e.is_conflict() => {
                    tracing::debug!(endpoint = %id, vendor, error = %e, "a register wrote the ledger meanwhile; deregistering again");
                }
                Err(e) => return Err(SyncError::Ledger(e)),
            }
        }
        Err(SyncError::Ledger(LedgerError::Conflict(format!(
            "{vendor} entry for {id} kept changing while deregistering"
        ))))
    }

    fn client(&self, vendor: &str) -> Result<&Arc<dyn Vendor>, SyncError> {
        self.vendors.get(vendor).ok_or_else(|| {
            SyncError::Vendor(VendorError::config(format!(
                "vendor {vendor:?} is not enabled in this deployment's [vendors] configuration"
            )))
        })
    }
}

impl VendorSync {
    /// Whether the vendor has the endpoint now (`autopilot status`): asks the vendor
    /// with the identity it would be registered under (routed, or from the ledger when
    /// the endpoint is gone). `None` when there is nothing to ask about.
    pub async fn is_registered(
        &self,
        vendor: &str,
        pe: Option<&PrivateEndpoint>,
        id: &ResourceId,
    ) -> Result<Option<bool>, String> {
        let client = self.client(vendor).map_err(|e| e.to_string())?;
        let ep = match pe {
            Some(pe) => match self.route(vendor, pe) {
                (ep, Route::Register { .. }) => ep,
                (_, Route::Unmatched(_)) => return Ok(None),
            },
            None => match self.ledger.get(vendor, id.as_str()).await.map_err(|e| e.to_string())? {
                Some(entry) => entry.endpoint,
                None => return Ok(None),
            },
        };
        client.is_registered(&ep).await.map(Some).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(guid: Option<&str>, location: &str, alias: Option<&str>) -> VendorEndpoint {
        VendorEndpoint {
            pe_id: "/subscriptions/s/resourceGroups/r/providers/Microsoft.Network/privateEndpoints/p".into(),
            pe_name: "p".into(),
            resource_guid: guid.map(str::to_owned),
            subscription_id: "s".into(),
            location: location.into(),
            alias: alias.map(str::to_owned),
            targets: vec!["t1".into()],
        }
    }

    #[test]
    fn the_same_endpoint_is_the_same_guid_region_and_alias_whatever_the_casing_or_targets() {
        let a = ep(Some("AB-12"), "eastus2", Some("x.y.eastus2.azure.privatelinkservice"));
        let mut b = ep(Some("ab-12"), "EastUS2", Some("X.y.eastus2.azure.privatelinkservice"));
        b.targets = vec!["t2".into()];
        assert!(same_endpoint(&a, &b), "targets are routing, not identity");
        assert!(!same_endpoint(&a, &ep(Some("cd-34"), "eastus2", a.alias.as_deref())), "recreated: new guid");
        assert!(!same_endpoint(&a, &ep(Some("AB-12"), "westus3", a.alias.as_deref())), "another region");
        assert!(!same_endpoint(&a, &ep(Some("AB-12"), "eastus2", None)), "another target");
        assert!(!same_endpoint(&a, &ep(None, "eastus2", a.alias.as_deref())));
    }
}
