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

/// Tokens from `azure_identity` 1.x. There is no `DefaultAzureCredential` in 1.x, so the
/// fallback is composed here: managed identity when the platform offers one (Functions
/// sets `IDENTITY_ENDPOINT`; VMs answer IMDS via `MSI_ENDPOINT`), else the developer's
/// `az`/`azd` login. The developer-tools path runs a CLI per call, so tokens are cached
/// until five minutes before they expire.
#[derive(Debug)]
pub struct AzureTokenSource {
    credential: Result<std::sync::Arc<dyn azure_core::credentials::TokenCredential>, String>,
    cache: tokio::sync::Mutex<std::collections::HashMap<String, (Secret, time::OffsetDateTime)>>,
}

impl AzureTokenSource {
    pub fn from_env(user_assigned_client_id: Option<String>) -> Self {
        use azure_identity::{
            DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
        };
        let managed = std::env::var_os("IDENTITY_ENDPOINT").is_some() || std::env::var_os("MSI_ENDPOINT").is_some();
        let credential: Result<std::sync::Arc<dyn azure_core::credentials::TokenCredential>, String> = if managed {
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: user_assigned_client_id.map(UserAssignedId::ClientId),
                ..Default::default()
            };
            ManagedIdentityCredential::new(Some(options))
                .map(|c| c as std::sync::Arc<dyn azure_core::credentials::TokenCredential>)
                .map_err(|e| format!("managed identity: {e}"))
        } else {
            DeveloperToolsCredential::new(None)
                .map(|c| c as std::sync::Arc<dyn azure_core::credentials::TokenCredential>)
                .map_err(|e| format!("developer tools credential (az/azd login): {e}"))
        };
        Self { credential, cache: tokio::sync::Mutex::new(std::collections::HashMap::new()) }
    }
}

#[async_trait::async_trait]
impl TokenSource for AzureTokenSource {
    async fn token(&self, scope: &str) -> Result<Secret, String> {
        let mut cache = self.cache.lock().await;
        let now = time::OffsetDateTime::now_utc();
        if let Some((t, exp)) = cache.get(scope)
            && *exp - time::Duration::minutes(5) > now
        {
            return Ok(t.clone());
        }
        let cred = self.credential.as_ref().map_err(Clone::clone)?;
        let token = cred.get_token(&[scope], None).await.map_err(|e| format!("token for {scope}: {e}"))?;
        let secret = Secret::new(token.token.secret());
        cache.insert(scope.to_string(), (secret.clone(), token.expires_on));
        Ok(secret)
    }
}
