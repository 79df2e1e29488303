//! The `[vendors]` configuration section: each vendor's own section and the routing
//! rules (`[[vendors.rules]]`).
//!
//! Why a file of its own: the section embeds each client's settings type, so it sits
//! above the clients; routing and the sync read it; the factory (`factory.rs`) turns it
//! into clients. The rules are plain data here; how they match is `routing.rs`.

use serde::Deserialize;

use super::clickhouse::ClickHouseConfig;
use super::elastic::ElasticConfig;
use super::zilliz::ZillizConfig;

/// The `[vendors]` configuration section; each vendor is off unless `enabled`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VendorsConfig {
    pub clickhouse: ClickHouseConfig,
    pub elastic: ElasticConfig,
    pub zilliz: ZillizConfig,
    /// `[[vendors.rules]]`: which targets an endpoint goes to (see `routing.rs`).
    pub rules: Vec<VendorRule>,
}

/// `[[vendors.rules]]`: empty match fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VendorRule {
    /// `clickhouse`, `elastic` or `zilliz`.
    pub vendor: String,
    /// Glob on the Private Link Service alias the endpoint targets (`*` = any run).
    pub alias: String,
    /// The endpoint's Azure region (e.g. `eastus2`).
    pub region: String,
    /// Subscription ids the endpoint must live in.
    pub subscriptions: Vec<String>,
    /// ClickHouse service ids, Elastic deployment ids; ignored for Zilliz (one project).
    pub targets: Vec<String>,
}
