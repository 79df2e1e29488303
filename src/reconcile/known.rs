//! Keeping the catalog's exact vendor aliases fresh.
//!
//! A vendor endpoint is recognised by the exact alias of the vendor's Private Link
//! Service, never by a pattern: the alias's first label is a PLS name that anyone who
//! creates a PLS chooses. The aliases come from the configuration
//! (`[catalog.vendor_aliases]`, Elastic's published table in the built-in catalog) and
//! from the vendors' own APIs (ClickHouse `privateEndpointConfig`, Zilliz's endpoint
//! services), learnt here when an endpoint shows an alias nobody knows, at most once per
//! `reconcile.known_names_refresh_secs`, and added to what the catalog knows. A vendor that cannot be asked keeps the aliases already
//! known; nothing is ever matched by guess.

use std::time::{Duration, Instant};

use super::settings::ReconcileSettings;
use crate::catalog::Catalog;
use crate::effects::vendors::sync::VendorSync;

/// Asks every enabled vendor for its published aliases when the last refresh is older
/// than the setting (or never happened); `true` when it asked. Concurrent callers wait
/// for one refresh.
pub async fn refresh_if_stale(
    catalog: &Catalog,
    sync: &VendorSync,
    last: &tokio::sync::Mutex<Option<Instant>>,
    settings: &ReconcileSettings,
) -> bool {
    let mut last = last.lock().await;
    let every = Duration::from_secs(settings.known_names_refresh_secs.max(1));
    if last.is_some_and(|at| at.elapsed() < every) {
        return false;
    }
    for name in sync.names().collect::<Vec<_>>() {
        let Some(vendor) = sync.vendor(name) else { continue };
        let targets = sync.configured_targets(name);
        // Bounded: a slow vendor must not hold every reconcile behind this lock.
        match tokio::time::timeout(Duration::from_secs(10), vendor.published_aliases(&targets)).await {
            Ok(Ok(aliases)) => {
                tracing::debug!(vendor = name, count = aliases.len(), "learnt the vendor's published aliases");
                catalog.learn(|k| k.add_aliases(name, aliases.iter()));
            }
            Ok(Err(e)) => {
                tracing::warn!(vendor = name, error = %e, "could not learn the vendor's aliases; keeping the known ones")
            }
            Err(_) => {
                tracing::warn!(vendor = name, "asking the vendor for its aliases timed out; keeping the known ones")
            }
        }
    }
    *last = Some(Instant::now());
    true
}
