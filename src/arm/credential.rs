//! Bearer tokens for ARM (and, later, Service Bus and Event Grid).
//! STUB: the ARM-client helper replaces this file.

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

/// Something that hands out bearer tokens for a scope such as
/// `https://management.azure.com/.default`.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync + fmt::Debug {
    async fn token(&self, scope: &str) -> Result<Secret, String>;
}

/// A fixed token: the sandbox and tests.
#[derive(Debug, Clone)]
pub struct StaticToken(pub Secret);

#[async_trait::async_trait]
impl TokenSource for StaticToken {
    async fn token(&self, _scope: &str) -> Result<Secret, String> {
        Ok(self.0.clone())
    }
}
