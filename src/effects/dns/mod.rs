//! DNS providers: where A records for private endpoints are written.
//!
//! The reconciler speaks one small vocabulary ([`RecordKey`] and [`Ownership`] from
//! `model`, [`ARecordSet`] in `provider`) and one trait ([`DnsProvider`]); each backend (Azure Private DNS over
//! ARM, RFC 2136 dynamic update) translates it to its wire format and keeps ownership
//! where that backend can keep it (record-set metadata in Azure, a TXT record beside the
//! name on a plain DNS server). This is ExternalDNS's provider + registry split.
//!
//! Writes are conditional: `create` only succeeds if nothing is there, `update` and
//! `delete` only if the set still is what we read (`previous`). A lost race therefore
//! surfaces as [`DnsErrorKind::PreconditionFailed`] and the reconciler re-reads and
//! re-plans instead of clobbering a concurrent change.

pub mod azure;
pub mod provider;
pub mod rfc2136;
pub mod router;
pub mod zones;

// This file only declares and re-exports: the provider seam is in `provider.rs`, so the
// backends and the router import it without a circle through this file.
pub use provider::{ARecordSet, DnsError, DnsErrorKind, DnsProvider, MAX_RECORDS_PER_SET};
pub use router::DnsRouter;

// The record vocabulary is shared with the catalog and the planner, so it lives in
// `model`; these re-exports keep `effects::dns::{RecordKey, Ownership, ...}` working.
pub use crate::model::ownership::{
    MANAGED_BY, OPAQUE_PREFIX, Owners, Ownership, Share, opaque_ref, owner_key_of, same_ref, target_ref, vnet_ref,
};
pub use crate::model::record_key::RecordKey;
