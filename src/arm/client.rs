//! ARM transport. STUB with the agreed interface: the ARM-client helper replaces the bodies.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::credential::TokenSource;

/// Settings for [`ArmClient`]; defaults are production values.
#[derive(Debug, Clone)]
pub struct ArmConfig {
    /// `https://management.azure.com` in Azure; a loopback URL for the sandbox and tests.
    pub base_url: String,
    /// Scope for tokens.
    pub token_scope: String,
    /// Per-attempt timeout.
    pub request_timeout: Duration,
    /// Retries after the first attempt for 429/5xx/connection errors.
    pub max_retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Requests in flight at once.
    pub max_concurrency: usize,
    /// Client-side bucket per subscription: (burst, refill per second).
    pub reads: (u32, f64),
    pub writes: (u32, f64),
    pub deletes: (u32, f64),
    /// Resource Graph: (queries, per window).
    pub resource_graph: (u32, Duration),
    /// Ceiling on polling a long-running operation.
    pub lro_timeout: Duration,
}

impl Default for ArmConfig {
    fn default() -> Self {
        Self {
            base_url: "https://management.azure.com".into(),
            token_scope: "https://management.azure.com/.default".into(),
            request_timeout: Duration::from_secs(20),
            max_retries: 4,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_concurrency: 16,
            reads: (250, 25.0),
            writes: (200, 10.0),
            deletes: (200, 10.0),
            resource_graph: (15, Duration::from_secs(5)),
            lro_timeout: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Patch,
    Post,
    Delete,
}

/// One ARM call. `path` starts with `/` and has no query; `api_version` is appended.
#[derive(Debug, Clone)]
pub struct ArmRequest {
    pub method: Method,
    pub path: String,
    pub api_version: String,
    /// Extra query pairs (e.g. `$top`), besides api-version.
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    /// e.g. `If-Match`, `If-None-Match`.
    pub headers: Vec<(String, String)>,
}

impl ArmRequest {
    pub fn new(method: Method, path: impl Into<String>, api_version: &str) -> Self {
        Self { method, path: path.into(), api_version: api_version.into(), query: vec![], body: None, headers: vec![] }
    }
    pub fn get(path: impl Into<String>, api_version: &str) -> Self {
        Self::new(Method::Get, path, api_version)
    }
    pub fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn query(mut self, name: &str, value: &str) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }
}

/// A successful (2xx) answer.
#[derive(Debug, Clone)]
pub struct ArmResponse {
    pub status: u16,
    /// Lower-cased header names.
    pub headers: Vec<(String, String)>,
    /// `Value::Null` when the body is empty.
    pub body: Value,
}

impl ArmResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
    pub fn etag(&self) -> Option<&str> {
        self.header("etag")
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ArmError {
    /// A non-2xx answer that is final (not retryable, or retries exhausted).
    #[error("ARM {method:?} {path} -> {status} {code}: {message}")]
    Api { method: Method, path: String, status: u16, code: String, message: String, retry_after: Option<Duration> },
    /// Connection failures or timeouts after retries.
    #[error("ARM {method:?} {path}: transport error: {message}")]
    Transport { method: Method, path: String, message: String },
    /// Could not get a token.
    #[error("could not get an ARM token: {0}")]
    Auth(String),
    /// A long-running operation ended Failed/Canceled or did not finish in time.
    #[error("ARM operation {path} ended {status}: {code}: {message}")]
    Operation { path: String, status: String, code: String, message: String },
}

impl ArmError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ArmError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
    pub fn code(&self) -> Option<&str> {
        match self {
            ArmError::Api { code, .. } | ArmError::Operation { code, .. } => Some(code),
            _ => None,
        }
    }
    /// Worth retrying later (throttled, 5xx, transport, another operation in progress).
    pub fn is_transient(&self) -> bool {
        match self {
            ArmError::Api { status, code, .. } => {
                *status == 429 || *status >= 500 || *status == 408 || code == "AnotherOperationInProgress"
            }
            ArmError::Transport { .. } => true,
            ArmError::Auth(_) => true,
            ArmError::Operation { .. } => false,
        }
    }
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ArmError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The ARM client: cheap to clone (shared state inside).
#[derive(Debug, Clone)]
pub struct ArmClient {
    #[allow(dead_code)]
    inner: Arc<()>,
}

impl ArmClient {
    pub fn new(_config: ArmConfig, _credential: Arc<dyn TokenSource>) -> Result<Self, ArmError> {
        todo!("ARM-client helper")
    }

    /// Sends one request with retries; `Ok` only for 2xx.
    pub async fn send(&self, _req: ArmRequest) -> Result<ArmResponse, ArmError> {
        todo!("ARM-client helper")
    }

    /// Sends a request that may start a long-running operation (201/202 with
    /// `Azure-AsyncOperation` or `Location`) and polls it to the end; returns the final
    /// resource (a GET of `req.path` if the operation result has no body).
    pub async fn send_and_wait(&self, _req: ArmRequest) -> Result<ArmResponse, ArmError> {
        todo!("ARM-client helper")
    }

    /// GETs `path` and follows `nextLink`, concatenating the `value` arrays.
    pub async fn list_all(&self, _path: &str, _api_version: &str) -> Result<Vec<Value>, ArmError> {
        todo!("ARM-client helper")
    }

    pub fn base_url(&self) -> &str {
        todo!("ARM-client helper")
    }
}
