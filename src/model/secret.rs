//! A secret value (token, key, password) that cannot leak by formatting.
//!
//! Why it is at the bottom: ARM tokens, vendor API keys, TSIG keys and Service Bus
//! credentials all travel as [`Secret`], and its `Debug`/`Display` print `***`, so "no
//! secrets in logs" holds by type everywhere. Every client that holds a credential needs
//! it, so it lives in `model` rather than in one of them.

use std::fmt;

/// A secret string whose `Debug`/`Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The only way to read the value; grep for it in reviews.
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
