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

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::ledger::{Ledger, LedgerError};
use super::routing::{self, Route};
use super::{Change, Vendor, VendorEndpoint, VendorError, VendorsConfig};
use crate::model::{PrivateEndpoint, ResourceId};

/// What the reconcile plans for one vendor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "intent", rename_all = "snake_case")]
pub enum VendorIntent {
    /// Queue a registration with these targets (empty for Zilliz: its one project).
    Register { targets: Vec<String>, by: String },
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
        let mut out = routing::defaults(&self.config, vendor);
        for rule in self.config.rules.iter().filter(|r| r.vendor.eq_ignore_ascii_case(vendor)) {
            out.extend(rule.targets.iter().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()));
        }
        out.sort();
        out.dedup();
        out
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
                Route::Register { targets, by } => VendorIntent::Register { targets, by },
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
    /// registration nobody knows how to remove).
    pub async fn register(&self, vendor: &str, pe: &PrivateEndpoint) -> Result<VendorDone, SyncError> {
        let client = self.client(vendor)?;
        let (ep, route) = self.route(vendor, pe);
        if let Route::Unmatched(why) = route {
            return Ok(VendorDone::Nothing { why });
        }
        // Routing may have moved (a rule, a tag or the defaults changed): the targets the
        // ledger holds and the route no longer names are withdrawn after the new
        // registration. Until then the ledger holds both sets (too much, never too little).
        let previous = self.ledger.get(vendor, &ep.pe_id).await.map_err(SyncError::Ledger)?;
        let dropped: Vec<String> = previous
            .as_ref()
            .map(|p| {
                // Entries written before targets were spelled out say `[]` for "the
                // defaults"; the current defaults are the best reading of them.
                let before = if p.endpoint.targets.is_empty() && vendor != "zilliz" {
                    routing::defaults(&self.config, vendor)
                } else {
                    p.endpoint.targets.clone()
                };
                let kept = |t: &String| ep.targets.iter().any(|n| n.eq_ignore_ascii_case(t));
                before.into_iter().filter(|t| !kept(t)).collect()
            })
            .unwrap_or_default();
        let mut record = ep.clone();
        record.targets.extend(dropped.iter().cloned());
        self.ledger.record(vendor, &record).await.map_err(SyncError::Ledger)?;
        let change = client.register(&ep).await.map_err(SyncError::Vendor)?;
        let mut withdrawn = Vec::new();
        if !dropped.is_empty() {
            let old = previous.map(|p| p.endpoint).unwrap_or_else(|| ep.clone());
            if client.withdraw(&old, &dropped).await.map_err(SyncError::Vendor)? == Change::Applied {
                withdrawn = dropped;
            }
            self.ledger.record(vendor, &ep).await.map_err(SyncError::Ledger)?;
        }
        Ok(VendorDone::Registered { change, targets: ep.targets, withdrawn })
    }

    /// Deregisters what the ledger says we registered for `id` with `vendor`, then
    /// forgets it. No entry = nothing we know of to remove.
    pub async fn deregister(&self, vendor: &str, id: &ResourceId) -> Result<VendorDone, SyncError> {
        let client = self.client(vendor)?;
        let Some(entry) = self.ledger.get(vendor, id.as_str()).await.map_err(SyncError::Ledger)? else {
            return Ok(VendorDone::Nothing { why: format!("the ledger has no {vendor} registration for it") });
        };
        let change = client.deregister(&entry.endpoint).await.map_err(SyncError::Vendor)?;
        self.ledger.forget(vendor, id.as_str()).await.map_err(SyncError::Ledger)?;
        Ok(VendorDone::Deregistered { change })
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
