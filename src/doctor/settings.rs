//! `[doctor]`: what only `autopilot doctor` reads.
//!
//! Why a file of its own: `config::Config` embeds this section while the doctor itself
//! imports the app (which imports the config); the settings type alone imports nothing.

use serde::Deserialize;

/// `[doctor]`: what only doctor reads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DoctorSettings {
    /// ARM id of the vault holding the vendor secrets (infra's `AZURE_KEY_VAULT_NAME`).
    pub key_vault_id: String,
    /// ARM id of the audit topic (`audit.topic_endpoint`'s topic).
    pub audit_topic_id: String,
    /// VNet ids every Azure zone in `dns.zones` must be linked to; empty = at least one link.
    pub zone_links: Vec<String>,
}
