//! The `[vendors]` configuration section and the factory that turns it into clients.
//!
//! Kept apart from the [`super::Vendor`] trait so that reading settings (secret variable
//! names, base URLs, which vendors are on) is one place: each client's `from_config`
//! uses the helpers here, so a missing or bad setting reads the same for every vendor.

use std::sync::Arc;

use serde::Deserialize;

use super::{ClickHouse, ClickHouseConfig, Elastic, ElasticConfig, Vendor, Zilliz, ZillizConfig, routing};
use crate::model::Secret;

/// The `[vendors]` configuration section; each vendor is off unless `enabled`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VendorsConfig {
    pub clickhouse: ClickHouseConfig,
    pub elastic: ElasticConfig,
    pub zilliz: ZillizConfig,
    /// `[[vendors.rules]]`: which targets an endpoint goes to (see `routing.rs`).
    pub rules: Vec<routing::VendorRule>,
}

/// HTTP settings every vendor section carries (each section has these three keys).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Per-request timeout.
    pub request_timeout_ms: u64,
    /// Client-side limit: at most this many requests per `rate_limit_window_ms` per key.
    pub rate_limit_requests: u32,
    pub rate_limit_window_ms: u64,
}

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

/// Reads a secret from the environment variable named by `setting`.
pub(super) fn secret_from_env(
    env: &impl Fn(&str) -> Option<String>,
    section: &str,
    setting: &str,
    var: &str,
) -> Result<Secret, String> {
    if var.trim().is_empty() {
        return Err(format!(
            "[vendors.{section}] {setting} is empty: name the environment variable holding the secret"
        ));
    }
    match env(var) {
        Some(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
        _ => Err(format!(
            "[vendors.{section}] {setting}: environment variable {var} is not set (or empty); \
             in Azure set it as an app setting (a Key Vault reference)"
        )),
    }
}

pub(super) fn require_setting(section: &str, setting: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() { Err(format!("[vendors.{section}] {setting} must be set")) } else { Ok(()) }
}

pub(super) fn normalize_base_url(section: &str, base_url: &str) -> Result<String, String> {
    let trimmed = base_url.trim().trim_end_matches('/');
    // The vendor key travels with every request: https, or http to loopback (the fakes).
    match crate::model::endpoint_url::credential_url(trimmed) {
        Ok(_) => Ok(trimmed.to_string()),
        Err(why) => Err(format!("[vendors.{section}] base_url {trimmed:?}: {why}")),
    }
}
