//! Bearer tokens for ARM (and, later, Service Bus and Event Grid).
//!
//! The rest of the crate only sees [`TokenSource`]: tests and the sandbox plug in a
//! [`StaticToken`], production an [`AzureTokenSource`]. azure_identity 1.x has no
//! `DefaultAzureCredential`, so [`AzureTokenSource::from_env`] makes the one choice this
//! service needs: the managed identity when running in Functions/App Service (the
//! platform sets `IDENTITY_ENDPOINT`), otherwise the developer's `az` / `azd` login.
//!
//! The managed-identity credential caches tokens itself (refreshing 300 s before
//! expiry); the CLI credentials do not and would spawn `az` for every request, so for the
//! developer path tokens are cached here, per scope, and refreshed 5 minutes before
//! `expires_on`. One async mutex per scope makes concurrent callers wait for a single
//! refresh instead of starting one `az` process each.
//!
//! Tokens only ever travel as [`Secret`], whose `Debug`/`Display` print `***`, and error
//! messages are built from the SDK's error text, never from a token.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use azure_core::credentials::TokenCredential;
use azure_identity::{
    DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
};
use time::OffsetDateTime;
use tracing::{info, warn};

// `Secret` is shared by every client that holds a credential (vendors, RFC 2136 TSIG,
// Service Bus), so it lives in `model`; re-exported here for `arm::credential::Secret`.
pub use crate::model::Secret;

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

/// Refresh a cached token this long before it expires (what the SDK's own caches do).
const REFRESH_BEFORE: time::Duration = time::Duration::minutes(5);
/// If a refresh fails, a cached token that is still valid this much longer is used anyway:
/// a flaky `az` should not fail requests that a perfectly good token can serve.
const STALE_GRACE: time::Duration = time::Duration::seconds(30);
/// The longest a token may take to arrive (managed identity endpoint, `az`).
pub const TOKEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// SDK error messages (which may embed CLI output) are cut to this many characters.
const MAX_ERROR_CHARS: usize = 1000;

/// Which credential [`AzureTokenSource`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzureCredentialKind {
    /// App Service / Functions managed identity (`IDENTITY_ENDPOINT`, `MSI_ENDPOINT`).
    ManagedIdentity,
    /// `az` CLI, then `azd`: a developer machine.
    DeveloperTools,
    /// Whatever was passed to [`AzureTokenSource::with_credential`].
    Custom,
}

#[derive(Clone)]
struct CachedToken {
    token: Secret,
    expires_on: OffsetDateTime,
}

type Slot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

/// Tokens from `azure_identity`, with our own cache where the credential has none.
pub struct AzureTokenSource {
    kind: AzureCredentialKind,
    credential: Arc<dyn TokenCredential>,
    /// `None`: the credential caches by itself. Otherwise one slot per scope.
    cache: Option<Mutex<HashMap<String, Slot>>>,
}

impl fmt::Debug for AzureTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureTokenSource")
            .field("kind", &self.kind)
            .field("cached", &self.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl AzureTokenSource {
    /// Picks the credential from the environment: the managed identity (user-assigned
    /// by client id when given) if `IDENTITY_ENDPOINT` or `MSI_ENDPOINT` is set, else the
    /// developer tools (`az`, then `azd`). The client id is ignored for developer tools.
    pub fn from_env(user_assigned_client_id: Option<String>) -> Result<Self, String> {
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        let client_id = user_assigned_client_id.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        if set("IDENTITY_ENDPOINT") || set("MSI_ENDPOINT") {
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                ..Default::default()
            };
            let credential = ManagedIdentityCredential::new(Some(options))
                .map_err(|e| clean(&format!("managed identity credential: {e}")))?;
            info!(user_assigned = client_id.is_some(), "ARM tokens come from the managed identity");
            // The SDK caches managed-identity tokens itself.
            Ok(Self { kind: AzureCredentialKind::ManagedIdentity, credential, cache: None })
        } else {
            if client_id.is_some() {
                info!("no managed identity endpoint: ignoring the user-assigned client id, using developer tools");
            }
            let credential =
                DeveloperToolsCredential::new(None).map_err(|e| clean(&format!("developer tools credential: {e}")))?;
            info!("ARM tokens come from the developer tools (az CLI, then azd)");
            Ok(Self { kind: AzureCredentialKind::DeveloperTools, credential, cache: Some(Mutex::new(HashMap::new())) })
        }
    }

    /// Wraps any `azure_core` credential; `cache` adds our per-scope cache (use it for
    /// credentials that do not cache by themselves).
    pub fn with_credential(credential: Arc<dyn TokenCredential>, cache: bool) -> Self {
        Self { kind: AzureCredentialKind::Custom, credential, cache: cache.then(|| Mutex::new(HashMap::new())) }
    }

    pub fn kind(&self) -> AzureCredentialKind {
        self.kind
    }

    /// Every client (ARM, ledger, audit, Service Bus) gets its tokens here, so this one
    /// bound covers them all: a hung identity endpoint fails the call instead of hanging it.
    async fn fetch(&self, scope: &str) -> Result<CachedToken, String> {
        let t = tokio::time::timeout(TOKEN_TIMEOUT, self.credential.get_token(&[scope], None))
            .await
            .map_err(|_| {
                format!("{:?} credential did not answer within {} s for {scope}", self.kind, TOKEN_TIMEOUT.as_secs())
            })?
            .map_err(|e| clean(&format!("{:?} credential could not get a token for {scope}: {e}", self.kind)))?;
        Ok(CachedToken { token: Secret::new(t.token.secret()), expires_on: t.expires_on })
    }
}

#[async_trait::async_trait]
impl TokenSource for AzureTokenSource {
    async fn token(&self, scope: &str) -> Result<Secret, String> {
        let Some(cache) = &self.cache else {
            return self.fetch(scope).await.map(|c| c.token);
        };
        let slot = {
            let mut map = cache.lock().unwrap_or_else(PoisonError::into_inner);
            map.entry(scope.to_string()).or_default().clone()
        };
        // Held across the fetch on purpose: concurrent callers wait for one refresh.
        let mut cached = slot.lock().await;
        let now = OffsetDateTime::now_utc();
        if let Some(c) = cached.as_ref().filter(|c| c.expires_on - now > REFRESH_BEFORE) {
            return Ok(c.token.clone());
        }
        match self.fetch(scope).await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                *cached = Some(fresh);
                Ok(token)
            }
            Err(e) => match cached.as_ref().filter(|c| c.expires_on - now > STALE_GRACE) {
                Some(c) => {
                    warn!(error = %e, "token refresh failed; using the cached token until it expires");
                    Ok(c.token.clone())
                }
                None => Err(e),
            },
        }
    }
}

/// Drops control characters and bounds the length of an error message.
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_ERROR_CHARS).collect::<String>().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::credentials::{AccessToken, TokenRequestOptions};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Hands out `t1`, `t2`, ... valid for `lifetime`; fails once `fail_after` calls were made.
    #[derive(Debug)]
    struct Counting {
        calls: AtomicUsize,
        lifetime: time::Duration,
        fail_after: usize,
    }

    #[async_trait::async_trait]
    impl TokenCredential for Counting {
        async fn get_token(
            &self,
            scopes: &[&str],
            _options: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            assert_eq!(scopes.len(), 1);
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n > self.fail_after {
                return Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    "az: not logged in\nplease run az login",
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Ok(AccessToken::new(format!("t{n}"), OffsetDateTime::now_utc() + self.lifetime))
        }
    }

    /// Never answers, like an identity endpoint that accepted the connection and hung.
    #[derive(Debug)]
    struct Hung;

    #[async_trait::async_trait]
    impl TokenCredential for Hung {
        async fn get_token(&self, _: &[&str], _: Option<TokenRequestOptions<'_>>) -> azure_core::Result<AccessToken> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_identity_endpoint_fails_the_call_instead_of_hanging_it() {
        let source = AzureTokenSource::with_credential(Arc::new(Hung), true);
        let err = source.token("https://management.azure.com/.default").await.unwrap_err();
        assert!(err.contains("did not answer within 20 s"), "{err}");
    }

    fn source(lifetime: time::Duration, fail_after: usize) -> (Arc<Counting>, AzureTokenSource) {
        let cred = Arc::new(Counting { calls: AtomicUsize::new(0), lifetime, fail_after });
        (cred.clone(), AzureTokenSource::with_credential(cred, true))
    }

    #[tokio::test]
    async fn caches_per_scope_and_single_flights() {
        let (cred, src) = source(time::Duration::hours(1), usize::MAX);
        let (a, b) = tokio::join!(src.token("s1"), src.token("s1"));
        assert_eq!(a.map(|s| s.expose().to_string()), Ok("t1".into()));
        assert_eq!(b.map(|s| s.expose().to_string()), Ok("t1".into()));
        assert_eq!(cred.calls.load(Ordering::SeqCst), 1);
        assert_eq!(src.token("s2").await.map(|s| s.expose().to_string()), Ok("t2".into()));
        assert_eq!(cred.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refreshes_five_minutes_before_expiry() {
        let (cred, src) = source(time::Duration::minutes(4), usize::MAX);
        assert_eq!(src.token("s").await.map(|s| s.expose().to_string()), Ok("t1".into()));
        assert_eq!(src.token("s").await.map(|s| s.expose().to_string()), Ok("t2".into()));
        assert_eq!(cred.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn failed_refresh_falls_back_to_a_still_valid_token_and_errors_are_clean() {
        let (_cred, src) = source(time::Duration::minutes(4), 1);
        assert!(src.token("s").await.is_ok());
        // Inside the refresh window, the refresh fails, the old token is still valid.
        assert_eq!(src.token("s").await.map(|s| s.expose().to_string()), Ok("t1".into()));

        let (_cred, src) = source(time::Duration::minutes(4), 0);
        let err = src.token("s").await.expect_err("no token");
        assert!(err.contains("not logged in"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn debug_shows_no_secret() {
        let (_c, src) = source(time::Duration::hours(1), 0);
        assert!(format!("{src:?}").starts_with("AzureTokenSource"));
        assert_eq!(format!("{:?}", Secret::new("abc")), "Secret(***)");
    }
}
