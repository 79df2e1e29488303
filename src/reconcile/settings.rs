//! `[reconcile]`: deadlines, parallelism and retry timing of the reconciler.
//!
//! Why here and not in `config.rs`: the reconciler (and the runtime that drives it) reads
//! these, and a lower layer must not import the composition root. `config::Config`
//! embeds this type, like the effects' own settings types.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileSettings {
    /// Work done inside one Event Grid invocation must finish well before Event Grid's
    /// 30 s answer window; whatever is left is handed to the queue.
    pub deadline_ms: u64,
    /// Reconciles running at once in one process.
    pub max_parallel: usize,
    pub retry_base_secs: u64,
    pub retry_max_secs: u64,
    /// Give up (dead-letter) after this long of failing.
    pub retry_window_secs: u64,
    /// How long a zone listing may be reused when looking for a deleted endpoint's records.
    pub zone_scan_cache_secs: u64,
    /// How often the vendors are asked for their published aliases (`reconcile/known.rs`).
    pub known_names_refresh_secs: u64,
    /// A queued work item (retry, vendor call, re-check) must finish within this, below
    /// host.json's functionTimeout (5 min): past it the host kills the whole handler.
    pub work_deadline_secs: u64,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            deadline_ms: 20_000,
            max_parallel: 32,
            retry_base_secs: 5,
            retry_max_secs: 900,
            retry_window_secs: 24 * 3600,
            zone_scan_cache_secs: 10,
            known_names_refresh_secs: 600,
            work_deadline_secs: 240,
        }
    }
}
