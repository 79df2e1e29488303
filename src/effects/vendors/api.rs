//! What every vendor client is and speaks: the [`Vendor`] trait, the endpoint as a vendor
//! sees it ([`VendorEndpoint`]), the outcome of an idempotent call ([`Change`]) and the
//! failure the queue classifies ([`VendorError`]).
//!
//! Why a file of its own: the clients (`clickhouse.rs`, `elastic.rs`, `zilliz.rs`), the
//! shared transport, routing, the ledger and the sync all import these words, while
//! `factory.rs` imports the clients. Keeping the words here, below the clients, and the
//! factory above them makes the imports inside `vendors/` run one way.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::model::endpoint::{LinkTarget, PrivateEndpoint};

/// The outcome of an idempotent operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// We wrote something.
    Applied,
    /// The vendor already was in the desired state; nothing was written.
    AlreadyInPlace,
}

impl Change {
    /// `Applied` if any part was applied.
    pub fn merge(self, other: Change) -> Change {
        if self == Change::Applied || other == Change::Applied { Change::Applied } else { Change::AlreadyInPlace }
    }
}

/// What a vendor needs to know about a private endpoint. Serializable because it travels
/// in queue messages: a delete is processed after ARM has forgotten the endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorEndpoint {
    /// The ARM resource id, with the casing ARM returned (vendors may compare verbatim).
    pub pe_id: String,
    pub pe_name: String,
    /// `properties.resourceGuid`; needed by Elastic and Zilliz (and ClickHouse legacy mode).
    pub resource_guid: Option<String>,
    pub subscription_id: String,
    /// The endpoint's Azure region, lower case (e.g. `eastus2`).
    pub location: String,
    /// The Private Link Service alias the endpoint targets, if it targets one (lower case).
    pub alias: Option<String>,
    /// What to register the endpoint with on the vendor's side, as chosen by the routing
    /// rules (`routing.rs`): ClickHouse service ids, Elastic deployment ids, a Zilliz
    /// project id. Empty means the vendor section's own defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
}

impl VendorEndpoint {
    pub fn from_endpoint(pe: &PrivateEndpoint) -> Self {
        let alias = pe.connections.iter().find_map(|c| match &c.target {
            LinkTarget::Alias(a) => Some(a.clone()),
            _ => None,
        });
        Self {
            pe_id: pe.id.as_str().to_string(),
            pe_name: pe.name.clone(),
            resource_guid: pe.resource_guid.clone().filter(|g| !g.trim().is_empty()),
            subscription_id: pe.id.subscription().to_string(),
            location: pe.location.to_ascii_lowercase(),
            alias,
            targets: vec![],
        }
    }

    /// The region label of the target alias (`<prefix>.<guid>.<region>.azure.privatelinkservice`).
    pub fn alias_region(&self) -> Option<&str> {
        let alias = self.alias.as_deref()?;
        let labels: Vec<&str> = alias.split('.').collect();
        (labels.len() >= 5).then(|| labels[labels.len() - 3]).filter(|r| !r.is_empty())
    }

    /// The guid, or a Permanent error naming what needs it: retrying cannot conjure one.
    pub(super) fn require_guid(&self, why: &str) -> Result<&str, VendorError> {
        self.resource_guid
            .as_deref()
            .ok_or_else(|| VendorError::permanent(format!("the endpoint has no properties.resourceGuid, which {why}")))
    }
}

/// How the queue should treat a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VendorErrorKind {
    /// Retry later: 429, 5xx, timeouts, connection errors, "not visible yet".
    Transient,
    /// The request itself is wrong for this endpoint (4xx): retrying will not help.
    Permanent,
    /// Our configuration is wrong (credentials rejected, missing setting, unknown ids).
    Config,
}

/// A failed vendor call. `message` is the operation and the vendor's answer (not the
/// vendor's name nor the endpoint: the callers add those once) and never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorError {
    pub kind: VendorErrorKind,
    pub message: String,
    /// The server's Retry-After (or equivalent): do not retry sooner.
    pub retry_after: Option<Duration>,
    /// For transient errors that become permanent if they persist (Elastic cannot see a
    /// new connection yet): stop retrying once this much time has passed since the work
    /// item first failed with it. `None` = the queue's normal retry window.
    pub give_up_after: Option<Duration>,
    /// The HTTP status, when the vendor answered with one.
    pub status: Option<u16>,
}

impl VendorError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: VendorErrorKind::Transient,
            message: message.into(),
            retry_after: None,
            give_up_after: None,
            status: None,
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: VendorErrorKind::Permanent,
            message: message.into(),
            retry_after: None,
            give_up_after: None,
            status: None,
        }
    }
    pub fn config(message: impl Into<String>) -> Self {
        Self {
            kind: VendorErrorKind::Config,
            message: message.into(),
            retry_after: None,
            give_up_after: None,
            status: None,
        }
    }
    /// `Retry::Transient` (see its [`crate::model::Classify`] impl).
    pub fn is_transient(&self) -> bool {
        crate::model::Classify::retry(self).is_transient()
    }

    /// Classifies an HTTP failure: 401/403 mean our key or its role is wrong (Config),
    /// 408/429/5xx are Transient, any other status is Permanent.
    pub(crate) fn from_status(status: StatusCode, context: &str, detail: &str, retry_after: Option<Duration>) -> Self {
        let detail = if detail.is_empty() { "(no error text)" } else { detail };
        let mut err = match status.as_u16() {
            401 => Self::config(format!("{context}: credentials rejected (HTTP 401): {detail}")),
            403 => Self::config(format!("{context}: the API key lacks the required role (HTTP 403): {detail}")),
            408 | 425 | 429 => Self::transient(format!("{context}: HTTP {}: {detail}", status.as_u16())),
            s if s >= 500 => Self::transient(format!("{context}: HTTP {s}: {detail}")),
            s => Self::permanent(format!("{context}: HTTP {s}: {detail}")),
        };
        err.retry_after = retry_after;
        err.status = Some(status.as_u16());
        err
    }
}

impl fmt::Display for VendorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            VendorErrorKind::Transient => "transient",
            VendorErrorKind::Permanent => "permanent",
            VendorErrorKind::Config => "configuration",
        };
        write!(f, "{kind} error: {}", self.message)?;
        if let Some(ra) = self.retry_after {
            write!(f, " (retry after {} s)", ra.as_secs_f64())?;
        }
        Ok(())
    }
}

impl std::error::Error for VendorError {}

/// Transient keeps the vendor's Retry-After; a rejected key or role is our configuration.
impl crate::model::Classify for VendorError {
    fn retry(&self) -> crate::model::Retry {
        use crate::model::Retry;
        match self.kind {
            VendorErrorKind::Transient => Retry::Transient { after: self.retry_after },
            VendorErrorKind::Permanent => Retry::Permanent,
            VendorErrorKind::Config => Retry::Misconfigured,
        }
    }
}

/// One vendor's allowlist, the seam the reconciler and the queue use.
#[async_trait::async_trait]
pub trait Vendor: Send + Sync + fmt::Debug {
    /// `"clickhouse"`, `"elastic"` or `"zilliz"` (the catalog's `vendor` value).
    fn name(&self) -> &'static str;
    /// Makes the vendor accept the endpoint. Idempotent.
    async fn register(&self, ep: &VendorEndpoint) -> Result<Change, VendorError>;
    /// Removes every trace of the endpoint. "Already gone" is success.
    async fn deregister(&self, ep: &VendorEndpoint) -> Result<Change, VendorError>;
    /// Whether `register` would write nothing.
    async fn is_registered(&self, ep: &VendorEndpoint) -> Result<bool, VendorError>;
    /// Removes the endpoint from these targets only (its routing moved away from them),
    /// leaving its registration with its other targets. "Already gone" is success.
    async fn withdraw(&self, ep: &VendorEndpoint, targets: &[String]) -> Result<Change, VendorError>;
    /// The exact Private Link Service aliases the vendor publishes for these configured
    /// targets (services, projects), as its API states them. The catalog matches vendor
    /// endpoints only against these (or configured ones), never against a name pattern.
    /// Default: the vendor has no such API (Elastic publishes a table; it is configured).
    async fn published_aliases(&self, _targets: &[String]) -> Result<Vec<String>, VendorError> {
        Ok(Vec::new())
    }
    /// One read-only call with the key, for `autopilot doctor`: `Err` when the vendor
    /// refuses it. Default: read the published aliases of these targets.
    async fn check_credentials(&self, targets: &[String]) -> Result<(), VendorError> {
        self.published_aliases(targets).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_region_is_the_third_label_from_the_end() {
        let ep = VendorEndpoint {
            pe_id: "/subscriptions/s/resourceGroups/r/providers/Microsoft.Network/privateEndpoints/p".into(),
            pe_name: "p".into(),
            resource_guid: None,
            subscription_id: "s".into(),
            location: "westus3".into(),
            alias: Some("production-eastus2-0-0.0000.eastus2.azure.privatelinkservice".into()),
            targets: vec![],
        };
        assert_eq!(ep.alias_region(), Some("eastus2"));
    }

    #[test]
    fn status_classification() {
        let e = VendorError::from_status(StatusCode::UNAUTHORIZED, "x", "bad", None);
        assert_eq!(e.kind, VendorErrorKind::Config);
        let e = VendorError::from_status(StatusCode::SERVICE_UNAVAILABLE, "x", "", None);
        assert_eq!(e.kind, VendorErrorKind::Transient);
        let e = VendorError::from_status(StatusCode::BAD_REQUEST, "x", "nope", None);
        assert_eq!(e.kind, VendorErrorKind::Permanent);
        assert!(e.to_string().contains("nope"));
    }
}
