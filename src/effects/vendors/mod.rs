//! SaaS vendor allowlists: telling ClickHouse Cloud, Elastic Cloud and Zilliz Cloud that a
//! private endpoint is ours, so their side of the Private Link accepts it.
//!
//! Why a trait: the reconciler and the work queue only need "make this endpoint known /
//! unknown to that vendor" and "is it?", while each vendor has its own identity for a PE
//! (ClickHouse: the ARM id or the legacy `resourceGuid`; Elastic: name + guid in a
//! traffic-filter ruleset; Zilliz: `<name>.<guid>`), its own envelope and its own error
//! conventions (Zilliz reports failures inside an HTTP 200). Each client hides that.
//!
//! Every operation is *look before you write*: the vendors' add calls are not
//! idempotent (a duplicate ClickHouse add fails, a duplicate Elastic create makes a second
//! ruleset), and the queue delivers at least once. So a client reads the vendor's state,
//! writes only the difference, and reports [`Change::Applied`] or [`Change::AlreadyInPlace`].
//! Removing something already gone is success.
//!
//! Clients make no retries of their own: a failure comes back as a [`VendorError`] whose
//! [`VendorErrorKind`] tells the queue whether to retry (with `retry_after` as a floor and
//! `give_up_after` as a bound) or to dead-letter. Each client paces itself with a
//! per-key [`rate_limit::RateLimiter`] matching the vendor's published limit.
//!
//! Secrets: configuration holds only the *names* of the environment variables (in Azure,
//! app settings that are Key Vault references). Values live in [`crate::model::Secret`], which never
//! prints, and error messages are built from vendor error text, never from a header.
//!
//! Error text says each thing once, so a dead-letter reason reads in one glance: a
//! client's [`VendorError::message`] is the operation in the vendor's terms (its service,
//! deployment, region) and the vendor's own answer, nothing more. It names neither the
//! vendor nor the endpoint: the reconciler, which knows which vendor it called, prefixes
//! `vendor <name>: `, and the worker, which knows the endpoint, prefixes its short
//! `resource-group/name` (the full id travels beside the reason, never inside it).

pub mod api;
pub mod clickhouse;
pub mod config;
pub mod elastic;
pub mod factory;
pub mod ledger;
pub mod rate_limit;
pub mod routing;
pub mod settings;
pub mod sync;
pub mod transport;
pub mod zilliz;

// This file only declares and re-exports, so the paths `crate::effects::vendors::{Vendor,
// VendorsConfig, build_vendors, ...}` keep working. Inside `vendors/` the imports run one
// way: `api`, `settings` and `rate_limit` at the bottom; `transport`, then the clients;
// `config` (the `[vendors]` section), `routing`, `ledger` and `sync`; `factory` on top.
pub use api::{Change, Vendor, VendorEndpoint, VendorError, VendorErrorKind};
pub use clickhouse::{ClickHouse, ClickHouseConfig, EndpointIdKind};
pub use config::VendorsConfig;
pub use elastic::{Elastic, ElasticConfig};
pub use factory::build_vendors;
pub use settings::HttpSettings;
pub use zilliz::{Zilliz, ZillizConfig};
