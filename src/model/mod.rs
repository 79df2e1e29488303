//! The vocabulary every layer shares: resource ids, the private endpoint as read from
//! ARM, DNS record keys and ownership, secrets, the reconcile mode and the clock.
//!
//! It sits at the bottom and imports nothing of the crate's other modules, so any layer
//! may use it without an upward arrow.

pub mod endpoint;
pub mod endpoint_url;
pub mod ownership;
pub mod record_key;
pub mod resource_id;
pub mod retry;
pub mod secret;

pub use endpoint::{ConnectionStatus, LinkConnection, LinkTarget, NicIpConfig, PrivateEndpoint};
pub use ownership::Ownership;
pub use record_key::RecordKey;
pub use resource_id::{IdError, ResourceId};
pub use retry::{Classify, Retry};
pub use secret::Secret;

/// Whether a reconcile writes (`Apply`) or only says what it would write (`DryRun`): the
/// reconcile's and every effect's one switch, so it lives with the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    /// Compute and return the plan; write nothing.
    DryRun,
}

/// Unix seconds now (the clock of retry windows and ledger stamps).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A random (version 4) GUID, e.g. a CloudEvent's `id`.
pub fn new_guid() -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        fastrand::u32(..),
        fastrand::u16(..),
        fastrand::u16(..0x1000),
        0x8000 | fastrand::u16(..0x4000),
        fastrand::u64(..1 << 48)
    )
}
