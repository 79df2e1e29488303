//! The settings every vendor client reads the same way: its HTTP limits
//! ([`HttpSettings`]), its secrets (named environment variables), required ids and the
//! base URL. Each client's `from_config` uses these helpers, so a missing or bad setting
//! reads the same for every vendor.
//!
//! Why apart from `config.rs`: the `[vendors]` section embeds each client's own section
//! type, so it sits above the clients; these helpers sit below them.

use crate::model::Secret;

/// HTTP settings every vendor section carries (each section has these three keys).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Per-request timeout.
    pub request_timeout_ms: u64,
    /// Client-side limit: at most this many requests per `rate_limit_window_ms` per key.
    pub rate_limit_requests: u32,
    pub rate_limit_window_ms: u64,
}

impl HttpSettings {
    /// The three HTTP keys every `[vendors.<name>]` section carries (copied, not
    /// flattened: `deny_unknown_fields` does not work through `#[serde(flatten)]`).
    pub fn new(request_timeout_ms: u64, rate_limit_requests: u32, rate_limit_window_ms: u64) -> Self {
        Self { request_timeout_ms, rate_limit_requests, rate_limit_window_ms }
    }
}

/// Reads a secret from the environment variable named by `setting`.
pub(crate) fn secret_from_env(
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

pub(crate) fn require_setting(section: &str, setting: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() { Err(format!("[vendors.{section}] {setting} must be set")) } else { Ok(()) }
}

pub(crate) fn normalize_base_url(section: &str, base_url: &str) -> Result<String, String> {
    let trimmed = base_url.trim().trim_end_matches('/');
    // The vendor key travels with every request: https, or http to loopback (the fakes).
    match crate::model::endpoint_url::credential_url(trimmed) {
        Ok(_) => Ok(trimmed.to_string()),
        Err(why) => Err(format!("[vendors.{section}] base_url {trimmed:?}: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_must_be_named_and_present() {
        let env = |_: &str| None;
        let err = secret_from_env(&env, "clickhouse", "key_id_env", "CH_ID").unwrap_err();
        assert!(err.contains("CH_ID") && err.contains("key_id_env"), "{err}");
    }
}
