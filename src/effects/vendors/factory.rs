//! Turns the `[vendors]` section into the enabled clients.
//!
//! Why a file of its own: it is the one place that names every client, so it sits on top
//! of `vendors/`; nothing inside `vendors/` imports it (the app does).

use std::sync::Arc;

use super::api::Vendor;
use super::clickhouse::ClickHouse;
use super::config::VendorsConfig;
use super::elastic::Elastic;
use super::routing;
use super::zilliz::Zilliz;

/// Builds the enabled vendors. `env` resolves secret variable names (tests pass a map;
/// production passes `std::env::var`). The error names the missing or bad setting.
pub fn build_vendors(
    cfg: &VendorsConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Arc<dyn Vendor>>, String> {
    routing::validate(cfg)?;
    let mut out: Vec<Arc<dyn Vendor>> = Vec::new();
    if cfg.clickhouse.enabled {
        out.push(Arc::new(ClickHouse::from_config(&cfg.clickhouse, &env)?));
    }
    if cfg.elastic.enabled {
        out.push(Arc::new(Elastic::from_config(&cfg.elastic, &env)?));
    }
    if cfg.zilliz.enabled {
        out.push(Arc::new(Zilliz::from_config(&cfg.zilliz, &env)?));
    }
    Ok(out)
}
