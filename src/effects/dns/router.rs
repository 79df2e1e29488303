//! Which backend serves which zone.
//!
//! Configuration decides per zone (`[[dns.zones]] provider = "azure" | "rfc2136"`);
//! zones it does not name go to Azure Private DNS in the hub location. The router also
//! knows every zone worth scanning when an endpoint is gone and we must find what it
//! owned without knowing what it pointed at.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::azure::AzurePrivateDns;
use super::provider::{DnsError, DnsProvider};

#[derive(Debug, Clone, Default)]
pub struct DnsRouter {
    by_zone: HashMap<String, Arc<dyn DnsProvider>>,
    azure: Option<Arc<AzurePrivateDns>>,
}

impl DnsRouter {
    pub fn new(azure: Option<Arc<AzurePrivateDns>>) -> Self {
        Self { by_zone: HashMap::new(), azure }
    }

    /// Routes `zone` to `provider` (overrides the Azure default).
    pub fn route(&mut self, zone: &str, provider: Arc<dyn DnsProvider>) {
        self.by_zone.insert(zone.trim_end_matches('.').to_ascii_lowercase(), provider);
    }

    pub fn provider_for(&self, zone: &str) -> Result<Arc<dyn DnsProvider>, DnsError> {
        if let Some(p) = self.by_zone.get(zone) {
            return Ok(p.clone());
        }
        match &self.azure {
            Some(a) => Ok(a.clone() as Arc<dyn DnsProvider>),
            None => Err(DnsError::permanent(format!("no DNS provider is configured for zone {zone}"))),
        }
    }

    /// Every zone we could have written to: explicitly routed zones plus the Azure zones
    /// (read one by one when named in configuration, the only way that works with the
    /// per-zone role infra assigns; an unreadable one is skipped, see
    /// [`AzurePrivateDns::discover_zones`]).
    pub async fn known_zones(&self) -> Result<Vec<String>, DnsError> {
        let mut zones: BTreeSet<String> = self.by_zone.keys().cloned().collect();
        if let Some(a) = &self.azure {
            zones.extend(a.discover_zones().await?);
        }
        Ok(zones.into_iter().collect())
    }

    /// The replicas of `zone` (see `ZoneDirectory::replicas_of`): `[""]` unless it is an
    /// Azure zone configured in several places.
    pub fn replicas_of(&self, zone: &str) -> Vec<String> {
        match (&self.azure, self.by_zone.contains_key(zone)) {
            (Some(a), false) => a.directory().replicas_of(zone),
            _ => vec![String::new()],
        }
    }

    /// The Azure Private DNS backend, if configured.
    pub fn azure(&self) -> Option<&Arc<AzurePrivateDns>> {
        self.azure.as_ref()
    }

    /// Whether `zone` is served by Azure Private DNS (zones and links can be managed).
    pub fn is_azure(&self, zone: &str) -> bool {
        self.azure.is_some() && !self.by_zone.contains_key(zone)
    }

    /// Azure zones the last discovery skipped, with the reason.
    pub fn skipped_zones(&self) -> Vec<(String, String)> {
        self.azure.as_ref().map(|a| a.skipped_zones()).unwrap_or_default()
    }
}
