//! `[ledger]`: which store holds the vendor registrations (and the small state that
//! shares it).
//!
//! Why here and not in `config.rs`: the stores are built from it (`effects::small_state`
//! among them), and a lower layer must not import the composition root. `config::Config`
//! embeds this type.

use serde::Deserialize;

/// `[ledger]`: where vendor registrations are written down (see
/// `effects::vendors::ledger`). `sqlite` for a laptop and the demo; `table` (Azure Table
/// storage in the app's own storage account, managed identity) in Azure, where an
/// instance has no durable disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSettings {
    /// `sqlite` or `table`.
    pub kind: String,
    /// SQLite file (`kind = "sqlite"`); empty = in memory (tests only: lost on exit).
    pub path: String,
    /// `https://<account>.table.core.windows.net` (`kind = "table"`).
    pub table_endpoint: String,
    pub table: String,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            kind: "sqlite".into(),
            path: ".autopilot/ledger.sqlite".into(),
            table_endpoint: String::new(),
            table: "vendorregistrations".into(),
        }
    }
}
