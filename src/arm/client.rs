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
#[derive(Clone)]
pub struct ArmClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: ArmConfig,
    http: reqwest::Client,
    credential: Arc<dyn TokenSource>,
    permits: tokio::sync::Semaphore,
    budget: super::budget::Budget,
}

impl std::fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token: only where we talk to.
        f.debug_struct("ArmClient").field("base_url", &self.inner.config.base_url).finish_non_exhaustive()
    }
}

fn method_name(m: Method) -> reqwest::Method {
    match m {
        Method::Get => reqwest::Method::GET,
        Method::Put => reqwest::Method::PUT,
        Method::Patch => reqwest::Method::PATCH,
        Method::Post => reqwest::Method::POST,
        Method::Delete => reqwest::Method::DELETE,
    }
}

fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// Lenient ARM error body parsing: `{"error":{code,message}}`, `{code,message}`, or text.
pub fn parse_error_body(status: u16, text: &str) -> (String, String) {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        let e = v.get("error").filter(|e| e.is_object()).unwrap_or(&v);
        let code = e.get("code").and_then(Value::as_str).map(clean);
        let message = e.get("message").and_then(Value::as_str).map(clean);
        if code.is_some() || message.is_some() {
            return (code.unwrap_or_else(|| format!("HTTP{status}")), message.unwrap_or_default());
        }
    }
    (format!("HTTP{status}"), clean(text))
}

fn retryable(status: u16, code: &str) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504) || code == "AnotherOperationInProgress"
}

fn header_map(h: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    h.iter().filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_string()))).collect()
}

fn retry_after_of(headers: &[(String, String)]) -> Option<Duration> {
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let ms = get("retry-after-ms")
        .or_else(|| get("x-ms-retry-after-ms"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis);
    ms.or_else(|| get("retry-after").and_then(|v| crate::backoff::parse_retry_after(v, std::time::SystemTime::now())))
}

impl ArmClient {
    pub fn new(config: ArmConfig, credential: Arc<dyn TokenSource>) -> Result<Self, ArmError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| ArmError::Transport { method: Method::Get, path: String::new(), message: e.to_string() })?;
        let budget = super::budget::Budget::new(&config);
        let permits = tokio::sync::Semaphore::new(config.max_concurrency.max(1));
        Ok(Self { inner: Arc::new(Inner { config, http, credential, permits, budget }) })
    }

    pub fn base_url(&self) -> &str {
        &self.inner.config.base_url
    }

    /// Only URLs on the configured ARM origin get our token.
    fn same_origin(&self, url: &str) -> bool {
        let base = self.base_url().trim_end_matches('/');
        url == base || url.starts_with(&format!("{base}/"))
    }

    /// Sends one request with retries; `Ok` only for 2xx.
    pub async fn send(&self, req: ArmRequest) -> Result<ArmResponse, ArmError> {
        let mut url = format!("{}{}?api-version={}", self.base_url(), req.path, req.api_version);
        for (k, v) in &req.query {
            url.push('&');
            url.push_str(&url::form_urlencoded::Serializer::new(String::new()).append_pair(k, v).finish());
        }
        self.send_url(req.method, &url, &req.path, req.body.as_ref(), &req.headers).await
    }

    async fn send_url(
        &self,
        method: Method,
        url: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(String, String)],
    ) -> Result<ArmResponse, ArmError> {
        if !self.same_origin(url) {
            return Err(ArmError::Transport {
                method,
                path: path.into(),
                message: "refusing to follow a URL outside the configured ARM endpoint".into(),
            });
        }
        let cfg = &self.inner.config;
        let backoff = crate::backoff::Backoff::new(cfg.backoff_base, cfg.backoff_max);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.inner.budget.acquire(method, path).await;
            let token = self.inner.credential.token(&cfg.token_scope).await.map_err(ArmError::Auth)?;
            let started = std::time::Instant::now();
            let result = {
                let _permit = self.inner.permits.acquire().await.map_err(|e| ArmError::Auth(e.to_string()))?;
                let mut rb = self.inner.http.request(method_name(method), url).bearer_auth(token.expose());
                for (k, v) in headers {
                    rb = rb.header(k.as_str(), v.as_str());
                }
                if let Some(b) = body {
                    rb = rb.json(b);
                }
                match rb.send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let headers = header_map(resp.headers());
                        let text = resp.text().await.unwrap_or_default();
                        Ok((status, headers, text))
                    }
                    Err(e) => Err(if e.is_timeout() { "timed out".to_string() } else { clean(&e.to_string()) }),
                }
            };
            let elapsed_ms = started.elapsed().as_millis() as u64;
            match result {
                Ok((status, headers, text)) if (200..300).contains(&status) => {
                    tracing::debug!(?method, path, status, elapsed_ms, attempt, "arm");
                    let body = if text.trim().is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_str(&text).unwrap_or(Value::String(text))
                    };
                    return Ok(ArmResponse { status, headers, body });
                }
                Ok((status, headers, text)) => {
                    let (code, message) = parse_error_body(status, &text);
                    let retry_after = retry_after_of(&headers);
                    if status == 429 {
                        self.inner.budget.pause(method, path, retry_after.unwrap_or(Duration::from_secs(1)));
                    }
                    if retryable(status, &code) && attempt <= cfg.max_retries {
                        let wait = backoff.delay_honouring(attempt, retry_after);
                        tracing::warn!(?method, path, status, %code, attempt, wait_ms = wait.as_millis() as u64, "arm retry");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    tracing::debug!(?method, path, status, elapsed_ms, attempt, %code, "arm error");
                    return Err(ArmError::Api { method, path: path.into(), status, code, message, retry_after });
                }
                Err(message) => {
                    if attempt <= cfg.max_retries {
                        let wait = backoff.delay(attempt);
                        tracing::warn!(?method, path, %message, attempt, wait_ms = wait.as_millis() as u64, "arm retry");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(ArmError::Transport { method, path: path.into(), message });
                }
            }
        }
    }

    /// Sends a request that may start a long-running operation (201/202 with
    /// `Azure-AsyncOperation` or `Location`) and polls it to the end; returns the final
    /// resource (a GET of `req.path` if the operation result has no body).
    pub async fn send_and_wait(&self, req: ArmRequest) -> Result<ArmResponse, ArmError> {
        let (method, path, api) = (req.method, req.path.clone(), req.api_version.clone());
        let first = self.send(req).await?;
        if first.status != 201 && first.status != 202 {
            return Ok(first);
        }
        let async_op = first.header("azure-asyncoperation").map(str::to_string);
        let location = first.header("location").map(str::to_string);
        let deadline = std::time::Instant::now() + self.inner.config.lro_timeout;
        let mut wait = retry_after_of(&first.headers).unwrap_or(Duration::from_secs(1));
        let poll_url = async_op.clone().or(location.clone());
        let Some(poll_url) = poll_url else { return Ok(first) };
        let mut last = first;
        loop {
            if std::time::Instant::now() > deadline {
                return Err(ArmError::Operation {
                    path,
                    status: "Timeout".into(),
                    code: "OperationTimedOut".into(),
                    message: "long-running operation did not finish in time".into(),
                });
            }
            tokio::time::sleep(wait).await;
            let r = self.send_url(Method::Get, &poll_url, &path, None, &[]).await?;
            wait = retry_after_of(&r.headers).unwrap_or(wait);
            if async_op.is_some() {
                let status = r.body.get("status").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
                match status.as_str() {
                    "succeeded" => break,
                    "failed" | "canceled" | "cancelled" => {
                        let (code, message) = parse_error_body(500, &r.body.to_string());
                        return Err(ArmError::Operation { path, status, code, message });
                    }
                    _ => continue,
                }
            } else if r.status != 202 {
                last = r;
                break;
            }
        }
        if matches!(method, Method::Put | Method::Patch) && (async_op.is_some() || last.body.is_null()) {
            return self.send(ArmRequest::get(path, &api)).await;
        }
        Ok(last)
    }

    /// GETs `path` and follows `nextLink`, concatenating the `value` arrays.
    pub async fn list_all(&self, path: &str, api_version: &str) -> Result<Vec<Value>, ArmError> {
        let mut out = Vec::new();
        let mut page = self.send(ArmRequest::get(path, api_version)).await?;
        for _ in 0..1000 {
            if let Some(items) = page.body.get("value").and_then(Value::as_array) {
                out.extend(items.iter().cloned());
            }
            let Some(next) = page.body.get("nextLink").and_then(Value::as_str).map(str::to_string) else { break };
            page = self.send_url(Method::Get, &next, path, None, &[]).await?;
        }
        Ok(out)
    }
}
