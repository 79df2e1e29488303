//! Logging setup and the process's counters.
//!
//! Logs go to stderr (the Functions host turns stderr lines into Error-level log
//! entries and stdout lines into Information; we want our own levels, so JSON logs go
//! to stdout and the host keeps them as they are, while the few lines that must reach the
//! host as errors are written to stderr explicitly). Counters are plain atomics: cheap
//! enough for the hot path and reported by the status function and the demo.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    pub events_received: AtomicU64,
    pub events_ignored: AtomicU64,
    pub events_rejected: AtomicU64,
    pub invocations_rejected: AtomicU64,
    pub reconciles: AtomicU64,
    pub reconciles_failed: AtomicU64,
    pub requeued: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub dns_created: AtomicU64,
    pub dns_updated: AtomicU64,
    pub dns_deleted: AtomicU64,
    pub dns_conflicts: AtomicU64,
    pub vendor_calls_ok: AtomicU64,
    pub vendor_calls_failed: AtomicU64,
    /// Audit events dropped because the spool to the audit topic was full.
    pub audit_dropped: AtomicU64,
}

impl Stats {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "events_received": g(&self.events_received),
            "audit_dropped": g(&self.audit_dropped),
            "events_ignored": g(&self.events_ignored),
            "events_rejected": g(&self.events_rejected),
            "invocations_rejected": g(&self.invocations_rejected),
            "reconciles": g(&self.reconciles),
            "reconciles_failed": g(&self.reconciles_failed),
            "requeued": g(&self.requeued),
            "dead_lettered": g(&self.dead_lettered),
            "dns_created": g(&self.dns_created),
            "dns_updated": g(&self.dns_updated),
            "dns_deleted": g(&self.dns_deleted),
            "dns_conflicts": g(&self.dns_conflicts),
            "vendor_calls_ok": g(&self.vendor_calls_ok),
            "vendor_calls_failed": g(&self.vendor_calls_failed),
        })
    }
}

/// Installs the global tracing subscriber (idempotent: a second call is ignored).
pub fn init(format: &str, filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("AUTOPILOT_LOG").unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}
