//! The runtime's own settings. `Config` embeds them (`[sweep]`), so the runtime never
//! imports `config`: settings live with the module that reads them.

use serde::Deserialize;

/// The timer sweep (`Sweep` function): the level-triggered backstop for missed events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweepSettings {
    /// Subscriptions whose private endpoints are reconciled; empty = none (sweep off).
    pub subscriptions: Vec<String>,
    /// Time one sweep may spend reconciling before the rest is queued (the Functions
    /// timeout is 5 minutes).
    pub deadline_secs: u64,
    /// How endpoints are listed: `resource_graph` (one query per 1,000 subscriptions and
    /// 1,000 endpoints, its own quota) or `arm` (one paged list per subscription, from
    /// the ARM read budget).
    pub source: String,
}

impl Default for SweepSettings {
    fn default() -> Self {
        Self { subscriptions: Vec::new(), deadline_secs: 240, source: "resource_graph".into() }
    }
}
