//! The HTTP transport every vendor client shares: one reqwest client, one base URL, one
//! rate limiter, and the reading of `Retry-After` hints.
//!
//! The clients differ in envelopes and error conventions, not in how bytes go over the
//! wire: the timeout, the refusal to follow redirects (they would carry our credential),
//! holding back after a 429 and keeping secrets out of printed headers live here once.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

use super::api::VendorError;
use super::rate_limit::RateLimiter;
use super::settings::HttpSettings;
use crate::backoff::parse_retry_after;

/// What came back from a vendor, whatever the status.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub status: StatusCode,
    pub body: Vec<u8>,
    /// From `Retry-After`, or ClickHouse's (undocumented) `X-RateLimit-Reset` on a 429.
    pub retry_after: Option<Duration>,
}

/// The part every client shares: one reqwest client, one base URL, one rate limiter.
#[derive(Debug)]
pub(crate) struct Transport {
    vendor: &'static str,
    http: reqwest::Client,
    base_url: String,
    limiter: RateLimiter,
}

/// When a 429 carries no hint, hold everyone back this long.
const DEFAULT_429_HOLD: Duration = Duration::from_secs(1);
/// Vendor error text is cut to this many characters in messages.
const MAX_DETAIL_CHARS: usize = 500;

impl Transport {
    pub(crate) fn new(vendor: &'static str, base_url: String, settings: &HttpSettings) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.request_timeout_ms.max(1)))
            .connect_timeout(Duration::from_secs(10))
            // A redirect could carry our Authorization header to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("private-link-autopilot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("[vendors.{vendor}] cannot build the HTTP client: {e}"))?;
        Ok(Self {
            vendor,
            http,
            base_url,
            limiter: RateLimiter::new(
                settings.rate_limit_requests,
                Duration::from_millis(settings.rate_limit_window_ms),
            ),
        })
    }

    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.base_url, path))
            .header(reqwest::header::ACCEPT, "application/json")
    }

    /// Sends within the rate limit. Transport failures become Transient errors naming
    /// `context`; any HTTP status is returned for the vendor to interpret.
    pub(crate) async fn send(&self, req: reqwest::RequestBuilder, context: &str) -> Result<RawResponse, VendorError> {
        let permit = self.limiter.acquire().await;
        let result = async {
            let resp = req.send().await?;
            let status = resp.status();
            let retry_after = retry_hint(resp.headers(), status);
            let body = resp.bytes().await?.to_vec();
            Ok::<_, reqwest::Error>(RawResponse { status, body, retry_after })
        }
        .await;
        drop(permit);
        let raw = result.map_err(|e| {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            // reqwest's text names the URL (no secrets there: credentials travel in headers).
            VendorError::transient(format!("{context}: {what}: {e}"))
        })?;
        if raw.status == StatusCode::TOO_MANY_REQUESTS {
            self.limiter.hold_for(raw.retry_after.unwrap_or(DEFAULT_429_HOLD));
        }
        Ok(raw)
    }

    pub(crate) fn vendor(&self) -> &'static str {
        self.vendor
    }
}

fn retry_hint(headers: &reqwest::header::HeaderMap, status: StatusCode) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(d) = header("retry-after").and_then(|v| parse_retry_after(v, SystemTime::now())) {
        return Some(d);
    }
    // The official ClickHouse Terraform provider waits X-RateLimit-Reset (+1 s) on 429;
    // the header is undocumented, so it is only a hint when present.
    if status == StatusCode::TOO_MANY_REQUESTS {
        return header("x-ratelimit-reset")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(3600) + 1));
    }
    None
}

/// Vendor error text made safe for a message: one line, bounded.
pub(crate) fn clip(text: &str) -> String {
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut out: String = one_line.trim().chars().take(MAX_DETAIL_CHARS).collect();
    if one_line.trim().chars().count() > MAX_DETAIL_CHARS {
        out.push('…');
    }
    out
}

/// Marks a header value as sensitive so reqwest/hyper never print it.
pub(crate) fn sensitive_header(value: &str) -> Result<reqwest::header::HeaderValue, String> {
    let mut v = reqwest::header::HeaderValue::from_str(value)
        .map_err(|_| "the credential contains characters not allowed in an HTTP header".to_string())?;
    v.set_sensitive(true);
    Ok(v)
}
