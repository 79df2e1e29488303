//! The address of a DNS record set: zone, name and replica.
//!
//! Why it is at the bottom: the catalog computes record keys from endpoints, the planner
//! compares them, the DNS providers read and write them and the operator commands print
//! them. A key names a record; it knows nothing of how a backend stores one, so every
//! layer can speak it without importing the layer that writes DNS.

use std::fmt;

/// A record set's address: a zone and a name relative to it, and which copy of the zone
/// when one name lives in several places (replicas: DR hubs, per-VNet copies).
/// Zone and name are lower-case, without trailing dots; the apex is `@`, a wildcard `*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct RecordKey {
    pub zone: String,
    pub name: String,
    /// The replica (`subscription/resource-group`, lower case) of a zone configured in
    /// several places; empty for a zone that lives in one place. Each replica holds its
    /// own record, with its own ownership and conflicts.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replica: String,
}

impl RecordKey {
    pub fn new(zone: &str, name: &str) -> Self {
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let name = if name.is_empty() { "@".to_string() } else { name };
        Self { zone, name, replica: String::new() }
    }
    /// The same name in one replica of its zone.
    pub fn in_replica(&self, replica: &str) -> Self {
        Self { replica: replica.to_ascii_lowercase(), ..self.clone() }
    }
    /// `fqdn` plus the replica, when there is one: how plan and status name a record.
    pub fn label(&self) -> String {
        if self.replica.is_empty() { self.fqdn() } else { format!("{} [{}]", self.fqdn(), self.replica) }
    }
    /// Fully-qualified name without trailing dot.
    pub fn fqdn(&self) -> String {
        if self.name == "@" { self.zone.clone() } else { format!("{}.{}", self.name, self.zone) }
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.replica.is_empty() {
            write!(f, "{} (zone {})", self.fqdn(), self.zone)
        } else {
            write!(f, "{} (zone {} in {})", self.fqdn(), self.zone, self.replica)
        }
    }
}
