//! What went wrong with an ARM call, and whether it is worth another try.
//!
//! [`ArmError`] and its classification, the error codes we raise ourselves, and the
//! lenient parsing of error bodies and `Retry-After` hints. The retry loop in
//! [`super::client`] and the long-running-operation poller in [`super::lro`] both read
//! answers through these, so a status means the same thing on every path.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::request::Method;
use crate::backoff::parse_retry_after;
use crate::model::{Classify, Retry};

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
    /// Worth retrying later: `Retry::Transient` (see [`Classify`] below).
    pub fn is_transient(&self) -> bool {
        self.retry().is_transient()
    }
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ArmError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Throttled, 5xx, a timeout, a transport failure, no token yet, or another operation in
/// progress: transient (with the server's Retry-After). A 412 is a lost race (conflict).
/// Anything else ARM answered, and a failed long-running operation, is permanent.
impl Classify for ArmError {
    fn retry(&self) -> Retry {
        match self {
            ArmError::Api { status, code, retry_after, .. } => {
                if *status == 429 || *status >= 500 || *status == 408 || code == "AnotherOperationInProgress" {
                    Retry::Transient { after: *retry_after }
                } else if *status == 412 {
                    Retry::Conflict
                } else {
                    Retry::Permanent
                }
            }
            ArmError::Transport { .. } | ArmError::Auth(_) => Retry::LATER,
            ArmError::Operation { .. } => Retry::Permanent,
        }
    }
}

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

/// A request we refuse on our side: `status: 0` (nothing was sent) and not transient.
pub(super) fn refused(method: Method, path: &str, code: &str, message: String) -> ArmError {
    ArmError::Api { method, path: path.to_string(), status: 0, code: code.to_string(), message, retry_after: None }
}

/// Whether the client retries an answer *within the same call* (after its backoff,
/// inside its budget). Narrower than [`ArmError`]'s [`Retry`] class on purpose: a 501 or
/// 505 is left to the work queue's slower retry instead of being hammered now.
pub(super) fn is_retryable(status: u16, code: &str) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
        || (status == 409 && code.eq_ignore_ascii_case("AnotherOperationInProgress"))
}

/// Whether a transport failure is retried within the same call.
pub(super) fn is_retryable_transport(e: &reqwest::Error) -> bool {
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
pub(super) fn error_from_value(v: &Value) -> (Option<String>, Option<String>) {
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
pub(super) fn error_chain(e: &reqwest::Error) -> String {
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
