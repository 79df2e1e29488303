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
//! * **Long-running operations** ([`ArmClient::send_and_wait`], in [`super::lro`]) follow
//!   `Azure-AsyncOperation`, else `Location`; **paging** ([`ArmClient::list_all`]) follows
//!   `nextLink`. Those URLs come from the server, so they are followed (and the bearer
//!   token sent to them) only when their scheme, host and port equal `base_url`'s: a
//!   compromised or confused response must never make us hand our token to another host.
//! * **No secrets in output**: tracing records method, path (no query), status, elapsed
//!   time and attempt, never headers or bodies; `Debug` of the client shows no token;
//!   redirects are not followed (ARM does not redirect, and a redirect would carry the
//!   `Authorization` header).

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{debug, warn};
use url::Url;

use super::budget::{BucketKey, Budget, BudgetConfig};
use super::credential::{Secret, TokenSource};
use super::error::{error_chain, is_retryable, is_retryable_transport, refused};
use crate::backoff::Backoff;

// The request vocabulary and the error type live in their own files; these re-exports
// keep `crate::arm::client::{Method, ArmError, CODE_*, ...}` working for every caller.
pub use super::error::{
    ArmError, CODE_INVALID_LIST, CODE_INVALID_REQUEST, CODE_TOO_MANY_PAGES, CODE_UNTRUSTED_URL, parse_error_body,
    server_retry_after,
};
pub use super::request::{ArmRequest, ArmResponse, Method};

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

/// Never page more than this in [`ArmClient::list_all`]: a server that keeps answering
/// with a `nextLink` (or loops) must not keep us busy forever.
pub const MAX_LIST_PAGES: usize = 1000;

/// A server-requested wait longer than this (or `backoff_max`, if larger) is not slept
/// inside one call; the error goes back with `retry_after` for the caller to requeue.
const MAX_IN_CALL_WAIT: Duration = Duration::from_secs(60);

/// The ARM client: cheap to clone (shared state inside).
#[derive(Clone)]
pub struct ArmClient {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) config: ArmConfig,
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
pub(super) struct Prepared<'a> {
    pub(super) method: Method,
    pub(super) url: Url,
    /// For logs and errors: the URL path, never the query.
    pub(super) path: String,
    pub(super) body: Option<Vec<u8>>,
    pub(super) headers: &'a [(HeaderName, HeaderValue)],
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
    pub(super) fn trusted_url(&self, method: Method, path: &str, raw: &str, what: &str) -> Result<Url, ArmError> {
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

    /// The retry loop around one request.
    pub(super) async fn execute(&self, p: Prepared<'_>) -> Result<ArmResponse, ArmError> {
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

/// 2xx bodies: empty -> `Null`, JSON -> the value, anything else -> the text.
fn parse_success_body(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
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
