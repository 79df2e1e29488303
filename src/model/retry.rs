//! The one answer every failure gives to "is this worth another try, and when?".
//!
//! Each backend has its own error type (ARM, DNS, vendors, the ledger, leases, the
//! queue), because each fails in its own words. What the runtime does with a failure
//! depends on one thing only: its [`Retry`] class. Every error type says its class once,
//! through [`Classify`], next to its variants, instead of each caller re-deriving a
//! `bool`. This is ExternalDNS's soft-error sentinel with the server's retry hint, and
//! the input of kube-runtime's single `error_policy` (here `runtime/error_policy.rs`).
//!
//! It sits at the ground (`model`) so that every layer can name it without importing
//! the layers above.

use std::time::Duration;

/// What a failure means for the work that hit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Worth another try later: throttled, 5xx, timeouts, connection errors, "not ready
    /// yet". `after` is the server's Retry-After (a floor for the backoff), when it gave one.
    Transient { after: Option<Duration> },
    /// Someone changed the thing since we read it (ETag mismatch, RFC 2136 prerequisite,
    /// a concurrent ledger write): re-read and decide again; worth retrying.
    Conflict,
    /// The request is wrong for this thing: it fails the same way until a person changes
    /// the thing itself.
    Permanent,
    /// Our own configuration or permissions are wrong (credentials rejected, a missing
    /// setting or role): it fails the same way until a person changes the configuration.
    Misconfigured,
}

impl Retry {
    /// A transient failure without a server hint.
    pub const LATER: Retry = Retry::Transient { after: None };

    /// Transient (not a conflict): the ad-hoc `is_transient` of every error type.
    pub fn is_transient(self) -> bool {
        matches!(self, Retry::Transient { .. })
    }

    /// Another try can succeed without a person: transient or a conflict.
    pub fn worth_retrying(self) -> bool {
        matches!(self, Retry::Transient { .. } | Retry::Conflict)
    }

    /// The server's requested wait, if any.
    pub fn after(self) -> Option<Duration> {
        match self {
            Retry::Transient { after } => after,
            _ => None,
        }
    }
}

/// An error that knows its [`Retry`] class.
pub trait Classify {
    fn retry(&self) -> Retry;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_and_conflict_are_worth_retrying() {
        let hint = Some(Duration::from_secs(7));
        assert!(Retry::Transient { after: hint }.worth_retrying());
        assert!(Retry::Conflict.worth_retrying());
        assert!(!Retry::Permanent.worth_retrying());
        assert!(!Retry::Misconfigured.worth_retrying());
        assert!(Retry::LATER.is_transient());
        assert!(!Retry::Conflict.is_transient());
        assert_eq!(Retry::Transient { after: hint }.after(), hint);
        assert_eq!(Retry::Permanent.after(), None);
    }
}
