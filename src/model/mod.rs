//! The vocabulary: resource ids and the private endpoint as read from ARM.

pub mod endpoint;
pub mod endpoint_url;
pub mod resource_id;
pub mod retry;

pub use endpoint::{ConnectionStatus, LinkConnection, LinkTarget, NicIpConfig, PrivateEndpoint};
pub use resource_id::{IdError, ResourceId};
pub use retry::{Classify, Retry};

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
