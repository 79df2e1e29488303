//! Logging setup and the process's counters.
//!
//! Logs go to stderr. Under the Functions host that keeps them apart from the answers the
//! host reads, and lines that must reach the host as errors are written to stderr
//! explicitly. In Azure they are JSON (`log.format = "json"`, set by the infra's app
//! settings and assumed whenever the Functions host's variables are present), so
//! Application Insights keeps their fields; on a laptop they are plain text, coloured
//! only when stderr is a terminal: a redirected log or a CI capture gets no escape codes.
//!
//! A command whose product is its stdout (`autopilot demo`) asks for a quieter default
//! (warnings and errors only) or a log file, so its narrative is not buried: `AUTOPILOT_LOG`
//! still overrides the level for anyone debugging it.
//!
//! Counters are plain atomics: cheap enough for the hot path and reported by the status
//! function and the demo.

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
    /// Endpoints another instance was converging (requeued for shortly after).
    pub lease_busy: AtomicU64,
    /// Work cancelled because this instance lost an endpoint's lease.
    pub lease_lost: AtomicU64,
    /// Subscriptions in scope the last sweep found without their Event Grid topic or event
    /// subscription (a gauge; `reconcile/coverage.rs`).
    pub subscriptions_uncovered: AtomicU64,
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
            "lease_busy": g(&self.lease_busy),
            "lease_lost": g(&self.lease_lost),
            "subscriptions_uncovered": g(&self.subscriptions_uncovered),
        })
    }
}

/// Where and how the process logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// `json` or `text`.
    pub format: String,
    /// A tracing filter, used unless `AUTOPILOT_LOG` is set.
    pub filter: String,
    /// Append to this file instead of stderr.
    pub file: Option<std::path::PathBuf>,
}

/// Environment variables the Functions host sets in every app (Flex Consumption sets the
/// site name; Elastic Premium also sets the worker runtime).
const FUNCTIONS_HOST_VARS: [&str; 2] = ["WEBSITE_SITE_NAME", "FUNCTIONS_WORKER_RUNTIME"];

/// The log format to use: the configured one, except that under the Functions host a
/// format nobody set (the `text` default, no `AUTOPILOT__LOG__FORMAT`) becomes `json`, so
/// a deployment that forgot the app setting still logs in fields.
pub fn effective_format(configured: &str, env: impl Fn(&str) -> Option<String>) -> String {
    let in_functions = FUNCTIONS_HOST_VARS.iter().any(|v| env(v).is_some_and(|x| !x.is_empty()));
    if in_functions && configured == "text" && env("AUTOPILOT__LOG__FORMAT").is_none() {
        return "json".into();
    }
    configured.to_owned()
}

/// Installs the global tracing subscriber (idempotent: a second call is ignored).
/// Colour only when writing to a terminal.
pub fn init_with(options: &LogOptions) -> Result<(), String> {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("AUTOPILOT_LOG").unwrap_or_else(|_| EnvFilter::new(&options.filter));
    let json = options.format == "json";
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let _ = match &options.file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("log file {}: {e}", path.display()))?;
            let builder = builder.with_ansi(false).with_writer(std::sync::Mutex::new(file));
            if json { builder.json().try_init() } else { builder.try_init() }
        }
        None => {
            let builder = builder.with_ansi(!json && std::io::stderr().is_terminal()).with_writer(std::io::stderr);
            if json { builder.json().try_init() } else { builder.try_init() }
        }
    };
    Ok(())
}

/// Installs the global tracing subscriber on stderr (idempotent: a second call is ignored).
pub fn init(format: &str, filter: &str) {
    let _ = init_with(&LogOptions { format: format.into(), filter: filter.into(), file: None });
}

#[cfg(test)]
mod tests {
    use super::effective_format;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn json_by_default_under_the_functions_host() {
        assert_eq!(effective_format("text", env(&[])), "text");
        assert_eq!(effective_format("text", env(&[("WEBSITE_SITE_NAME", "plap-func")])), "json");
        assert_eq!(effective_format("text", env(&[("FUNCTIONS_WORKER_RUNTIME", "custom")])), "json");
        // Someone asked for text in Azure: they get it.
        let explicit = [("WEBSITE_SITE_NAME", "plap-func"), ("AUTOPILOT__LOG__FORMAT", "text")];
        assert_eq!(effective_format("text", env(&explicit)), "text");
        assert_eq!(effective_format("json", env(&[])), "json");
    }
}
