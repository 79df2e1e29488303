//! ARM transport: tokens, retries, client-side throttling, long-running operations.
//!
//! "Events are hints, ARM is the truth": every handler re-reads ARM, so this client is
//! on the hot path of everything and must be a good citizen of ARM's shared budgets.
//!
//! * **Retries** happen here, for what ARM documents as transient (408, 429, 500, 502,
//!   503, 504, connection failures and timeouts, 409 `AnotherOperationInProgress`, 429
//!   `RetryableErrorDueToAnotherOperation`), with the crate-wide [`Backoff`] and the
//!   server's `Retry-After` / `retry-after-ms` / `x-ms-retry-after-ms` as a floor. A wait
//!   longer than `max(backoff_max, 60 s)` is not slept inside the call: the error is
//!   returned with `retry_after` so the work queue can requeue instead of pinning a task.
//!   Everything else is final at once; when retries run out the caller gets
//!   [`ArmError::Api`] (with `retry_after`) or [`ArmError::Transport`].
//! * **Throttling**: every attempt (LRO polls and list pages included) takes a token from
//!   a [`Budget`] bucket first, and a semaphore bounds the requests in flight. See
//!   [`super::budget`] for why.
//! * **Long-running operations** ([`ArmClient::send_and_wait`]) follow
//!   `Azure-AsyncOperation`, else `Location`; **paging** ([`ArmClient::list_all`]) follows
//!   `nextLink`. Those URLs come from the server, so they are followed (and the bearer
//!   token sent to them) only when their scheme, host and port equal `base_url`'s: a
//!   compromised or confused response must never make us hand our token to another host.
//! * **No secrets in output**: tracing records method, path (no query), status, elapsed
//!   time and attempt, never headers or bodies; `Debug` of the client shows no token;
//!   redirects are not followed (ARM does not redirect, and a redirect would carry the
//!   `Authorization` header).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{debug, warn};
use url::Url;

use super::budget::{BucketKey, Budget, BudgetConfig};
use super::credential::{Secret, TokenSource};
use crate::backoff::{Backoff, parse_retry_after};

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
    /// Shortest wait between two polls of a long-running operation, whatever
    /// `Retry-After` says (and the first step of our own backoff when it says nothing).
    pub lro_poll_min: Duration,
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
            lro_poll_min: Duration::from_secs(1),
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

impl Method {
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }

    fn to_reqwest(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Post => reqwest::Method::POST,
            Method::Delete => reqwest::Method::DELETE,
        }
    }
}

/// Never page more than this in [`ArmClient::list_all`]: a server that keeps answering
/// with a `nextLink` (or loops) must not keep us busy forever.
pub const MAX_LIST_PAGES: usize = 1000;

/// A server-requested wait longer than this (or `backoff_max`, if larger) is not slept
/// inside one call; the error goes back with `retry_after` for the caller to requeue.
const MAX_IN_CALL_WAIT: Duration = Duration::from_secs(60);

/// Longest gap between LRO polls when the server gives no `Retry-After`.
const LRO_POLL_MAX: Duration = Duration::from_secs(30);

/// Error messages from bodies are cut to this many characters.
const MAX_MESSAGE_CHARS: usize = 1000;
/// ... and non-JSON bodies (HTML error pages from proxies, etc.) to this many.
const MAX_TEXT_CHARS: usize = 300;

/// Code of [`ArmError::Api`] with `status: 0`: refused on our side, nothing was sent.
pub const CODE_INVALID_REQUEST: &str = "ClientInvalidRequest";
/// A polling URL or `nextLink` pointing outside `base_url`'s origin.
pub const CODE_UNTRUSTED_URL: &str = "UntrustedUrl";
/// A list that did not end within [`MAX_LIST_PAGES`].
pub const CODE_TOO_MANY_PAGES: &str = "TooManyPages";
/// A list page that is not an object.
pub const CODE_INVALID_LIST: &str = "InvalidListResponse";

/// The ARM client: cheap to clone (shared state inside).
#[derive(Clone)]
pub struct ArmClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: ArmConfig,
    /// `config.base_url` without a trailing slash: paths are appended to it.
    base: String,
    /// Only URLs with this scheme/host/port get our token.
    origin: Origin,
    http: reqwest::Client,
    credential: Arc<dyn TokenSource>,
    budget: Budget,
    in_flight: Semaphore,
    backoff: Backoff,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    fn of(url: &Url) -> Self {
        Self {
            scheme: url.scheme().to_ascii_lowercase(),
            host: url.host_str().unwrap_or_default().to_ascii_lowercase(),
            port: url.port_or_known_default(),
        }
    }
    fn display(&self) -> String {
        match self.port {
            Some(p) => format!("{}://{}:{p}", self.scheme, self.host),
            None => format!("{}://{}", self.scheme, self.host),
        }
    }
}

impl std::fmt::Debug for ArmClient {
    // Hand-written so that neither the credential nor anything derived from it can ever
    // end up in a log line via `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClient")
            .field("base_url", &self.inner.base)
            .field("max_concurrency", &self.inner.config.max_concurrency)
            .field("max_retries", &self.inner.config.max_retries)
            .finish_non_exhaustive()
    }
}

/// One HTTP exchange, before we decide what it means.
struct RawAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// What the retry loop sends: the pieces of an [`ArmRequest`] after validation.
struct Prepared<'a> {
    method: Method,
    url: Url,
    /// For logs and errors: the URL path, never the query.
    path: String,
    body: Option<Vec<u8>>,
    headers: &'a [(HeaderName, HeaderValue)],
}

impl ArmClient {
    /// Builds the client. A bad `base_url` (not http(s), no host, a query) or an HTTP
    /// client that cannot be built is reported as [`ArmError::Transport`] with an empty
    /// path. Zero or nonsensical bucket sizes are clamped to a working minimum.
    pub fn new(config: ArmConfig, credential: Arc<dyn TokenSource>) -> Result<Self, ArmError> {
        let config_error = |message: String| ArmError::Transport { method: Method::Get, path: String::new(), message };
        let base = config.base_url.trim_end_matches('/').to_string();
        let parsed = Url::parse(&base).map_err(|e| config_error(format!("invalid base_url {base:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(config_error(format!("base_url {base:?} must be an http(s) URL with a host")));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(config_error(format!("base_url {base:?} must not have a query or fragment")));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("private-link-autopilot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| config_error(format!("could not build the HTTP client: {}", error_chain(&e))))?;
        let budget = Budget::new(BudgetConfig {
            reads: config.reads,
            writes: config.writes,
            deletes: config.deletes,
            resource_graph: config.resource_graph,
        });
        let backoff = Backoff::new(config.backoff_base, config.backoff_max);
        let in_flight = Semaphore::new(config.max_concurrency.clamp(1, Semaphore::MAX_PERMITS));
        let origin = Origin::of(&parsed);
        Ok(Self { inner: Arc::new(Inner { config, base, origin, http, credential, budget, in_flight, backoff }) })
    }

    /// The configured base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    pub fn config(&self) -> &ArmConfig {
        &self.inner.config
    }

    /// The client-side throttling buckets (for metrics and tests).
    pub fn budget(&self) -> &Budget {
        &self.inner.budget
    }

    /// Sends one request with retries; `Ok` only for 2xx.
    pub async fn send(&self, req: ArmRequest) -> Result<ArmResponse, ArmError> {
        let url = self.build_url(&req)?;
        let headers = validate_headers(&req)?;
        let body = encode_body(&req)?;
        self.execute(Prepared { method: req.method, path: req.path.clone(), url, body, headers: &headers }).await
    }

    /// Sends a request that may start a long-running operation (201/202 with
    /// `Azure-AsyncOperation` or `Location`) and polls it to the end; returns the final
    /// resource (a GET of `req.path` if the operation result has no body).
    ///
    /// * 200/204 (or 201/202 without either header) are returned as they are.
    /// * `Azure-AsyncOperation`: polled until `status` is Succeeded/Failed/Canceled.
    ///   Succeeded: PUT/PATCH return a fresh GET of `req.path`; POST returns the `Location`
    ///   result if there is one; DELETE returns the final status response.
    /// * `Location`: polled until it stops answering 202; its answer is the result (PUT/PATCH
    ///   with an empty result fall back to a GET of `req.path`).
    /// * Failed/Canceled -> [`ArmError::Operation`]; not done within `lro_timeout` ->
    ///   [`ArmError::Operation`] with status `TimedOut`.
    pub async fn send_and_wait(&self, req: ArmRequest) -> Result<ArmResponse, ArmError> {
        let method = req.method;
        let path = req.path.clone();
        let api_version = req.api_version.clone();
        let first = self.send(req).await?;
        if !matches!(first.status, 201 | 202) {
            return Ok(first);
        }
        let deadline = Instant::now() + self.inner.config.lro_timeout;
        let async_op = first.header("azure-asyncoperation").filter(|v| !v.trim().is_empty());
        let location = first.header("location").filter(|v| !v.trim().is_empty());

        if let Some(op) = async_op {
            let op_url = self.trusted_url(method, &path, op, "Azure-AsyncOperation")?;
            // Check the Location too before polling, so a bad header fails fast.
            let loc_url = match location {
                Some(l) if method == Method::Post => Some(self.trusted_url(method, &path, l, "Location")?),
                _ => None,
            };
            let final_status = self.poll_async_operation(op_url, &path, &first.headers, deadline).await?;
            return match method {
                Method::Put | Method::Patch => self.send(ArmRequest::get(path, &api_version)).await,
                Method::Post => match loc_url {
                    Some(u) => self.poll_location(u, &path, &final_status.headers, deadline).await,
                    None => Ok(final_status),
                },
                Method::Get | Method::Delete => Ok(final_status),
            };
        }
        if let Some(loc) = location {
            let loc_url = self.trusted_url(method, &path, loc, "Location")?;
            let last = self.poll_location(loc_url, &path, &first.headers, deadline).await?;
            if matches!(method, Method::Put | Method::Patch) && last.body.is_null() {
                return self.send(ArmRequest::get(path, &api_version)).await;
            }
            return Ok(last);
        }
        Ok(first)
    }

    /// GETs a list and follows `nextLink` (same origin only, at most [`MAX_LIST_PAGES`]
    /// pages), concatenating the `value` arrays. A page without `value` counts as empty.
    pub async fn list_all(&self, path: &str, api_version: &str) -> Result<Vec<Value>, ArmError> {
        let mut items = Vec::new();
        let mut page = self.send(ArmRequest::get(path, api_version)).await?;
        for pages in 1..=MAX_LIST_PAGES {
            let Value::Object(mut map) = std::mem::take(&mut page.body) else {
                return Err(refused(Method::Get, path, CODE_INVALID_LIST, "a list page is not a JSON object".into()));
            };
            if let Some(Value::Array(values)) = map.remove("value") {
                items.extend(values);
            }
            let next = match map.remove("nextLink") {
                Some(Value::String(s)) if !s.trim().is_empty() => s,
                _ => return Ok(items),
            };
            if pages == MAX_LIST_PAGES {
                break;
            }
            let url = self.trusted_url(Method::Get, path, &next, "nextLink")?;
            page = self
                .execute(Prepared { method: Method::Get, path: url.path().to_string(), url, body: None, headers: &[] })
                .await?;
        }
        Err(refused(
            Method::Get,
            path,
            CODE_TOO_MANY_PAGES,
            format!("the list did not end within {MAX_LIST_PAGES} pages"),
        ))
    }

    /// `{base_url}{path}?api-version=...&<query>`.
    fn build_url(&self, req: &ArmRequest) -> Result<Url, ArmError> {
        let bad = |m: String| refused(req.method, &req.path, CODE_INVALID_REQUEST, m);
        if !req.path.starts_with('/') || req.path.contains(['?', '#']) {
            return Err(bad("the path must start with '/' and carry no query or fragment".into()));
        }
        if req.api_version.trim().is_empty() {
            return Err(bad("api-version is empty".into()));
        }
        let mut url =
            Url::parse(&format!("{}{}", self.inner.base, req.path)).map_err(|e| bad(format!("invalid URL: {e}")))?;
        let mut query = format!("api-version={}", encode_query_component(&req.api_version));
        for (k, v) in &req.query {
            query.push('&');
            query.push_str(&encode_query_component(k));
            query.push('=');
            query.push_str(&encode_query_component(v));
        }
        url.set_query(Some(&query));
        Ok(url)
    }

    /// Resolves a server-supplied URL (absolute, or relative to `base_url`) and accepts it
    /// only on our origin.
    fn trusted_url(&self, method: Method, path: &str, raw: &str, what: &str) -> Result<Url, ArmError> {
        let base = Url::parse(&format!("{}/", self.inner.base))
            .map_err(|e| refused(method, path, CODE_UNTRUSTED_URL, format!("invalid base_url: {e}")))?;
        let url = base
            .join(raw.trim())
            .map_err(|e| refused(method, path, CODE_UNTRUSTED_URL, format!("the {what} URL does not parse: {e}")))?;
        let origin = Origin::of(&url);
        if origin != self.inner.origin {
            return Err(refused(
                method,
                path,
                CODE_UNTRUSTED_URL,
                format!(
                    "refusing to follow the {what} URL on {}: only {} is trusted with our token",
                    origin.display(),
                    self.inner.origin.display()
                ),
            ));
        }
        Ok(url)
    }

    /// Polls an `Azure-AsyncOperation` URL until its `status` is terminal.
    async fn poll_async_operation(
        &self,
        url: Url,
        path: &str,
        first_headers: &[(String, String)],
        deadline: Instant,
    ) -> Result<ArmResponse, ArmError> {
        self.poll_until(url, path, first_headers, deadline, |resp| {
            let status = resp.body.get("status").and_then(Value::as_str).unwrap_or_default().to_string();
            if status.eq_ignore_ascii_case("succeeded") {
                return Some(Ok(resp));
            }
            if status.eq_ignore_ascii_case("failed") || status.eq_ignore_ascii_case("canceled") {
                let (code, message) = error_from_value(&resp.body);
                let default_code =
                    if status.eq_ignore_ascii_case("failed") { "OperationFailed" } else { "OperationCanceled" };
                return Some(Err(ArmError::Operation {
                    path: path.to_string(),
                    status,
                    code: code.unwrap_or_else(|| default_code.to_string()),
                    message: message.unwrap_or_else(|| "the operation ended without an error message".into()),
                }));
            }
            None
        })
        .await
    }

    /// Polls a `Location` URL until it stops answering 202.
    async fn poll_location(
        &self,
        url: Url,
        path: &str,
        first_headers: &[(String, String)],
        deadline: Instant,
    ) -> Result<ArmResponse, ArmError> {
        self.poll_until(url, path, first_headers, deadline, |resp| (resp.status != 202).then_some(Ok(resp))).await
    }

    /// GETs `url` (honouring Retry-After between polls, within `deadline`) until `done`
    /// returns an answer.
    async fn poll_until(
        &self,
        url: Url,
        path: &str,
        first_headers: &[(String, String)],
        deadline: Instant,
        done: impl Fn(ArmResponse) -> Option<Result<ArmResponse, ArmError>>,
    ) -> Result<ArmResponse, ArmError> {
        let mut delay = self.poll_delay(first_headers, 1);
        let mut poll: u32 = 1;
        loop {
            self.sleep_until_poll(path, delay, deadline).await?;
            let resp = self.poll_get(&url).await?;
            let headers = resp.headers.clone();
            if let Some(result) = done(resp) {
                return result;
            }
            poll = poll.saturating_add(1);
            delay = self.poll_delay(&headers, poll);
        }
    }

    async fn poll_get(&self, url: &Url) -> Result<ArmResponse, ArmError> {
        self.execute(Prepared {
            method: Method::Get,
            path: url.path().to_string(),
            url: url.clone(),
            body: None,
            headers: &[],
        })
        .await
    }

    /// Sleeps `delay`, but never past `deadline`; fails once the deadline has passed.
    async fn sleep_until_poll(&self, path: &str, delay: Duration, deadline: Instant) -> Result<(), ArmError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(ArmError::Operation {
                path: path.to_string(),
                status: "TimedOut".into(),
                code: "OperationTimedOut".into(),
                message: format!("the operation was still running after {:?}", self.inner.config.lro_timeout),
            });
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        Ok(())
    }

    /// `Retry-After` floored by `lro_poll_min`; without one, our own gentle backoff.
    fn poll_delay(&self, headers: &[(String, String)], poll: u32) -> Duration {
        let min = self.inner.config.lro_poll_min;
        match server_retry_after(headers) {
            Some(ra) => ra.max(min),
            None => Backoff::new(min, LRO_POLL_MAX.max(min)).delay(poll).max(min),
        }
    }

    /// The retry loop around one request.
    async fn execute(&self, p: Prepared<'_>) -> Result<ArmResponse, ArmError> {
        let inner = &*self.inner;
        let key = BucketKey::classify(p.method, p.url.path());
        let max_wait = inner.config.backoff_max.max(MAX_IN_CALL_WAIT);
        let mut attempt: u32 = 1;
        loop {
            inner.budget.acquire(&key).await;
            // After the budget wait, which can be long: the token is as fresh as possible.
            let token = inner.credential.token(&inner.config.token_scope).await.map_err(ArmError::Auth)?;
            let outcome = {
                // The semaphore is never closed; if it somehow were, sending unbounded
                // is better than failing every request.
                let _permit = inner.in_flight.acquire().await.ok();
                let started = Instant::now();
                let outcome = self.attempt(&p, &token).await;
                let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                let status = outcome.as_ref().map(|a| a.status).unwrap_or(0);
                debug!(method = p.method.as_str(), path = %p.path, status, elapsed_ms, attempt, "ARM request");
                outcome
            };
            let can_retry = attempt <= inner.config.max_retries;
            match outcome {
                Ok(answer) => {
                    inner.budget.observe(&key, &answer.headers);
                    if (200..300).contains(&answer.status) {
                        return Ok(ArmResponse {
                            status: answer.status,
                            body: parse_success_body(&answer.body),
                            headers: answer.headers,
                        });
                    }
                    let (code, message) = parse_error_body(answer.status, &answer.body);
                    let retry_after = server_retry_after(&answer.headers);
                    if answer.status == 429 {
                        // Hold everyone on this bucket, not just us.
                        inner.budget.pause(&key, retry_after.unwrap_or_else(|| inner.backoff.nominal(attempt)));
                    }
                    if can_retry && is_retryable(answer.status, &code) {
                        let wait = inner.backoff.delay_honouring(attempt, retry_after);
                        if wait <= max_wait {
                            let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                            warn!(method = p.method.as_str(), path = %p.path, status = answer.status, reason = %code, wait_ms, attempt, "ARM request will be retried");
                            tokio::time::sleep(wait).await;
                            attempt += 1;
                            continue;
                        }
                    }
                    return Err(ArmError::Api {
                        method: p.method,
                        path: p.path,
                        status: answer.status,
                        code,
                        message,
                        retry_after,
                    });
                }
                Err(e) => {
                    let message = error_chain(&e);
                    if can_retry && is_retryable_transport(&e) {
                        let wait = inner.backoff.delay(attempt);
                        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                        let reason = if e.is_timeout() {
                            "timeout"
                        } else if e.is_connect() {
                            "connect"
                        } else {
                            "transport"
                        };
                        warn!(method = p.method.as_str(), path = %p.path, reason, wait_ms, attempt, "ARM request will be retried");
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(ArmError::Transport { method: p.method, path: p.path, message });
                }
            }
        }
    }

    /// One HTTP exchange; the per-attempt timeout covers connecting, sending and reading
    /// the whole body.
    async fn attempt(&self, p: &Prepared<'_>, token: &Secret) -> Result<RawAnswer, reqwest::Error> {
        let mut rb = self
            .inner
            .http
            .request(p.method.to_reqwest(), p.url.clone())
            .timeout(self.inner.config.request_timeout)
            .bearer_auth(token.expose())
            .header(reqwest::header::ACCEPT, "application/json");
        for (name, value) in p.headers {
            rb = rb.header(name.clone(), value.clone());
        }
        if let Some(body) = &p.body {
            rb = rb.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone());
        } else if matches!(p.method, Method::Put | Method::Patch | Method::Post) {
            // Some front ends answer 411 to a body-less write without a length.
            rb = rb.header(reqwest::header::CONTENT_LENGTH, "0");
        }
        let resp = rb.send().await?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = resp.bytes().await?.to_vec();
        Ok(RawAnswer { status, headers, body })
    }
}

/// A request we refuse on our side: `status: 0` (nothing was sent) and not transient.
fn refused(method: Method, path: &str, code: &str, message: String) -> ArmError {
    ArmError::Api { method, path: path.to_string(), status: 0, code: code.to_string(), message, retry_after: None }
}

fn validate_headers(req: &ArmRequest) -> Result<Vec<(HeaderName, HeaderValue)>, ArmError> {
    req.headers
        .iter()
        .map(|(k, v)| {
            let bad = |m: String| refused(req.method, &req.path, CODE_INVALID_REQUEST, m);
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad(format!("invalid header name {k:?}")))?;
            if name == reqwest::header::AUTHORIZATION {
                return Err(bad("the Authorization header is set by the client".into()));
            }
            // The value is not echoed: callers might put something sensitive in it.
            let value = HeaderValue::from_str(v).map_err(|_| bad(format!("invalid value for header {k:?}")))?;
            Ok((name, value))
        })
        .collect()
}

fn encode_body(req: &ArmRequest) -> Result<Option<Vec<u8>>, ArmError> {
    req.body
        .as_ref()
        .map(|b| {
            serde_json::to_vec(b).map_err(|e| {
                refused(req.method, &req.path, CODE_INVALID_REQUEST, format!("body does not serialize: {e}"))
            })
        })
        .transpose()
}

/// Percent-encodes a query key or value. Unlike form encoding it keeps `$` (ARM's
/// `$top`, `$filter`, `$skipToken`) and other sub-delimiters verbatim, and writes a space
/// as `%20`, never `+`; `&`, `=`, `#`, `+`, `%`, quotes and non-ASCII are escaped.
fn encode_query_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~$()*,;:@/!".contains(&b);
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn is_retryable(status: u16, code: &str) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
        || (status == 409 && code.eq_ignore_ascii_case("AnotherOperationInProgress"))
}

fn is_retryable_transport(e: &reqwest::Error) -> bool {
    // Builder errors (a malformed request) would fail the same way again.
    !e.is_builder() && (e.is_timeout() || e.is_connect() || e.is_request() || e.is_body() || e.is_decode())
}

/// The server's requested wait: `Retry-After` (seconds or HTTP date) and the
/// millisecond variants; the longest one wins, since each is a floor.
pub fn server_retry_after(headers: &[(String, String)]) -> Option<Duration> {
    let mut best: Option<Duration> = None;
    for (k, v) in headers {
        let d = match k.as_str() {
            "retry-after" => parse_retry_after(v, SystemTime::now()),
            "retry-after-ms" | "x-ms-retry-after-ms" => {
                v.trim().parse::<u64>().ok().map(|ms| Duration::from_millis(ms.min(24 * 3600 * 1000)))
            }
            _ => None,
        };
        if let Some(d) = d {
            best = Some(best.map_or(d, |b| b.max(d)));
        }
    }
    best
}

/// 2xx bodies: empty -> `Null`, JSON -> the value, anything else -> the text.
fn parse_success_body(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// `(code, message)` of an ARM error body, leniently: `{"error":{code,message}}`, a
/// top-level `{code,message}`, `null`s, or non-JSON text (code `HTTP<status>`).
pub fn parse_error_body(status: u16, bytes: &[u8]) -> (String, String) {
    let fallback_code = || format!("HTTP{status}");
    let reason = || {
        reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no error body")
            .to_string()
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return (fallback_code(), reason());
    }
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        let (code, message) = error_from_value(&v);
        if code.is_some() || message.is_some() {
            return (code.unwrap_or_else(fallback_code), message.unwrap_or_else(reason));
        }
    }
    let text = clean_text(&String::from_utf8_lossy(bytes), MAX_TEXT_CHARS);
    (fallback_code(), if text.is_empty() { reason() } else { text })
}

/// Code and message from an error envelope or an LRO status body (`{"status":"Failed","error":{..}}`).
fn error_from_value(v: &Value) -> (Option<String>, Option<String>) {
    let scalar = |x: Option<&Value>| -> Option<String> {
        match x? {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            // OData style: {"message": {"lang": "en-US", "value": "..."}}
            Value::Object(o) => o.get("value").and_then(Value::as_str).map(str::to_string),
            _ => None,
        }
    };
    let envelope = match v.get("error") {
        Some(e @ Value::Object(_)) => e,
        Some(Value::String(s)) if !s.trim().is_empty() => {
            return (None, Some(clean_text(s, MAX_MESSAGE_CHARS)));
        }
        _ => v,
    };
    let code = scalar(envelope.get("code")).map(|c| clean_text(&c, 200));
    let message = scalar(envelope.get("message")).map(|m| clean_text(&m, MAX_MESSAGE_CHARS));
    (code, message)
}

/// Drops control characters (no log injection, no terminal escapes) and cuts to `max` chars.
fn clean_text(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect::<String>().trim().to_string()
}

/// `Display` of an error and its sources, without the URL (its query is nobody's business).
fn error_chain(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    if let Some(url) = e.url() {
        msg = msg.replace(&format!(" ({url})"), "").replace(url.as_str(), "<url>");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !msg.contains(&part) {
            msg.push_str(": ");
            msg.push_str(&part);
        }
        source = s.source();
    }
    clean_text(&msg, MAX_MESSAGE_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arm::credential::StaticToken;

    fn client(base: &str) -> ArmClient {
        let cfg = ArmConfig { base_url: base.into(), ..Default::default() };
        ArmClient::new(cfg, Arc::new(StaticToken(Secret::new("s3cr3t-token")))).expect("client")
    }

    #[test]
    fn parses_error_bodies_leniently() {
        let arm = br#"{"error":{"code":"ResourceNotFound","message":"gone","details":[]}}"#;
        assert_eq!(parse_error_body(404, arm), ("ResourceNotFound".into(), "gone".into()));
        let top = br#"{"code":"Conflict","message":"busy"}"#;
        assert_eq!(parse_error_body(409, top), ("Conflict".into(), "busy".into()));
        let nulls = br#"{"error":{"code":null,"message":null}}"#;
        assert_eq!(
            parse_error_body(500, nulls),
            ("HTTP500".into(), "{\"error\":{\"code\":null,\"message\":null}}".into())
        );
        assert_eq!(parse_error_body(502, b""), ("HTTP502".into(), "Bad Gateway".into()));
        let html = format!("<html>\n\x1b[31m{}</html>", "x".repeat(500));
        let (code, msg) = parse_error_body(503, html.as_bytes());
        assert_eq!(code, "HTTP503");
        assert_eq!(msg.chars().count(), 300);
        assert!(!msg.chars().any(char::is_control));
        assert_eq!(parse_error_body(400, br#"{"error":"bad thing"}"#), ("HTTP400".into(), "bad thing".into()));
        assert_eq!(parse_error_body(400, br#"{"error":{"code":"X"}}"#), ("X".into(), "Bad Request".into()));
    }

    #[test]
    fn parses_success_bodies() {
        assert_eq!(parse_success_body(b""), Value::Null);
        assert_eq!(parse_success_body(b" \n"), Value::Null);
        assert_eq!(parse_success_body(br#"{"a":1}"#), serde_json::json!({"a":1}));
        assert_eq!(parse_success_body(b"OK"), Value::String("OK".into()));
    }

    #[test]
    fn retry_after_takes_the_longest_hint() {
        let h = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        assert_eq!(server_retry_after(&h(&[("retry-after", "2")])), Some(Duration::from_secs(2)));
        assert_eq!(
            server_retry_after(&h(&[("retry-after", "1"), ("x-ms-retry-after-ms", "1500")])),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(server_retry_after(&h(&[("retry-after-ms", "20")])), Some(Duration::from_millis(20)));
        assert_eq!(server_retry_after(&h(&[("retry-after", "later")])), None);
    }

    #[test]
    fn retryable_set() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_retryable(s, "Whatever"));
        }
        assert!(is_retryable(409, "AnotherOperationInProgress"));
        assert!(!is_retryable(409, "Conflict"));
        assert!(!is_retryable(404, "ResourceNotFound"));
        assert!(!is_retryable(501, "NotImplemented"));
    }

    #[test]
    fn builds_urls_with_api_version_and_query() {
        let c = client("http://127.0.0.1:9/");
        let req = ArmRequest::get("/subscriptions/s/providers/X/y", "2024-06-01")
            .query("$top", "10")
            .query("$filter", "name eq 'a&b'");
        let url = c.build_url(&req).expect("url");
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/subscriptions/s/providers/X/y?api-version=2024-06-01&$top=10&$filter=name%20eq%20%27a%26b%27"
        );
        assert!(c.build_url(&ArmRequest::get("/x?y=1", "v")).is_err());
        assert!(c.build_url(&ArmRequest::get("x", "v")).is_err());
        assert!(c.build_url(&ArmRequest::get("/x", " ")).is_err());
    }

    #[test]
    fn trusts_only_the_base_origin() {
        let c = client("https://management.azure.com");
        let ok =
            c.trusted_url(Method::Get, "/p", "https://management.azure.com:443/subscriptions/s/op?x=1", "Location");
        assert!(ok.is_ok());
        assert!(c.trusted_url(Method::Get, "/p", "/subscriptions/s/op", "Location").is_ok());
        for bad in ["http://management.azure.com/x", "https://evil.example/x", "https://management.azure.com:8443/x"] {
            let err = c.trusted_url(Method::Get, "/p", bad, "Location").expect_err(bad);
            assert_eq!(err.code(), Some(CODE_UNTRUSTED_URL));
            assert!(!err.is_transient());
        }
    }

    #[test]
    fn rejects_bad_config_and_headers() {
        let bad = ArmConfig { base_url: "ftp://x".into(), ..Default::default() };
        assert!(ArmClient::new(bad, Arc::new(StaticToken(Secret::new("t")))).is_err());
        let req = ArmRequest::get("/x", "v").header("Authorization", "Bearer other");
        assert!(validate_headers(&req).is_err());
        let req = ArmRequest::get("/x", "v").header("If-Match", "\"abc\"");
        assert_eq!(validate_headers(&req).map(|h| h.len()).ok(), Some(1));
    }

    #[test]
    fn debug_hides_the_token() {
        let c = client("http://127.0.0.1:9");
        let s = format!("{c:?}");
        assert!(!s.contains("s3cr3t"), "{s}");
        assert!(s.contains("127.0.0.1:9"));
    }
}
