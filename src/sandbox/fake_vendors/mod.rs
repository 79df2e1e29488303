//! Local fakes of the vendor allowlist APIs (ClickHouse Cloud, Elastic Cloud, Zilliz Cloud).
//!
//! There is no internet here, so the vendor clients are tested against these servers,
//! and `autopilot demo` and the end-to-end tests use them too. They follow
//! `shared/reference/vendors.md` and the fixtures in `shared/fixtures/vendors/`: the same
//! paths, methods, bodies, status codes and error envelopes. Where the reference marks a
//! behaviour unconfirmed (a duplicate ClickHouse add, the status of Elastic's
//! `connection_not_found`, Zilliz's auth error code), the fake picks the strictest
//! plausible answer and says so in its module doc, so a client that copes with the fake
//! copes with either answer.
//!
//! Every fake shares the same public surface:
//! - `start(options)` binds `127.0.0.1:0` and returns a handle with `base_url()`;
//!   dropping the handle stops the server.
//! - `state()` returns a snapshot of what the vendor would hold.
//! - `requests()` is the request log (method and path with query; never headers or bodies).
//! - `inject(fault, n)` makes the next `n` requests fail (500, 429 with Retry-After, or a
//!   response slower than any sane client timeout).
//! - A per-key rate limit like the vendor's (answering 429), checked after authentication.
//! - `set_latency(d)`: every answer waits `d` first (benchmarks).
//!
//! Request handling order: log, injected fault, authentication (401), rate limit (429),
//! then the route.

/// The handle methods every fake shares (`base_url`, `state`, `set_state`, `requests`,
/// `clear_requests`, `inject`), for a handle with `server: ServerTask` and
/// `inner: Arc<Inner>` holding `gate: Gate` and `state: Mutex<$state>`.
macro_rules! common_fake_api {
    ($state:ty) => {
        /// `http://127.0.0.1:PORT`; the vendor's paths go below it.
        pub fn base_url(&self) -> String {
            self.server.base_url()
        }
        /// A snapshot of what the vendor holds.
        pub fn state(&self) -> $state {
            lock(&self.inner.state).clone()
        }
        /// Replaces the state (seed a scenario).
        pub fn set_state(&self, state: $state) {
            *lock(&self.inner.state) = state;
        }
        pub fn requests(&self) -> Vec<LoggedRequest> {
            self.inner.gate.requests()
        }
        pub fn clear_requests(&self) {
            self.inner.gate.clear_requests();
        }
        /// The next `count` requests answer with `fault`.
        pub fn inject(&self, fault: Fault, count: usize) {
            self.inner.gate.inject(fault, count);
        }
        /// Drops the faults not yet served (the vendor is back).
        pub fn clear_faults(&self) {
            self.inner.gate.clear_faults();
        }
        /// Every answer waits this long first (benchmarks: "a vendor at fixed latency").
        pub fn set_latency(&self, latency: std::time::Duration) {
            self.inner.gate.set_latency(latency);
        }
    };
}

pub mod clickhouse;
pub mod elastic;
pub mod zilliz;

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::{Method, Uri};
use tokio::time::Instant;

/// A failure the next requests answer with, whatever they ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 500 with the vendor's error envelope.
    ServerError,
    /// This HTTP status (e.g. 503, 401) with the vendor's error envelope.
    Status(u16),
    /// HTTP 429 with the vendor's error envelope and, if given, `Retry-After` in seconds.
    TooManyRequests { retry_after: Option<Duration> },
    /// Answer only after this delay (then 504): exercises client timeouts.
    Timeout(Duration),
}

/// One request as the fake saw it. Headers and bodies are not kept: they may hold secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    /// Path and query, e.g. `/v1/organizations/o/services/s`.
    pub path: String,
}

impl LoggedRequest {
    /// Anything but GET changes (or tries to change) vendor state.
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }
}

/// Counts writes in a request log.
pub fn count_writes(log: &[LoggedRequest]) -> usize {
    log.iter().filter(|r| r.is_write()).count()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Fake state is only ever mutated by short, non-panicking sections.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The parts every fake shares: request log, fault queue, per-key sliding window.
#[derive(Debug)]
pub(crate) struct Gate {
    log: Mutex<Vec<LoggedRequest>>,
    faults: Mutex<VecDeque<Fault>>,
    limit: Option<(usize, Duration)>,
    arrivals: Mutex<HashMap<String, VecDeque<Instant>>>,
    latency: Mutex<Duration>,
}

impl Gate {
    pub(crate) fn new(limit: Option<(u32, Duration)>) -> Self {
        Self {
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            limit: limit.map(|(n, w)| ((n as usize).max(1), w)),
            arrivals: Mutex::new(HashMap::new()),
            latency: Mutex::new(Duration::ZERO),
        }
    }

    pub(crate) fn record(&self, method: &Method, uri: &Uri) {
        let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| uri.path().to_string());
        lock(&self.log).push(LoggedRequest { method: method.as_str().to_string(), path });
    }

    pub(crate) fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.log).clone()
    }

    pub(crate) fn clear_requests(&self) {
        lock(&self.log).clear();
    }

    pub(crate) fn inject(&self, fault: Fault, count: usize) {
        let mut q = lock(&self.faults);
        q.extend(std::iter::repeat_n(fault, count));
    }

    pub(crate) fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        *lock(&self.latency) = latency;
    }

    /// Waits the configured latency (none by default).
    pub(crate) async fn pause(&self) {
        let latency = *lock(&self.latency);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    pub(crate) fn take_fault(&self) -> Option<Fault> {
        lock(&self.faults).pop_front()
    }

    /// Counts the request against `key`'s window; `Err(wait)` when over the limit.
    /// Refused requests do not count (the vendors we mimic count served requests).
    pub(crate) fn check_rate(&self, key: &str) -> Result<(), Duration> {
        let Some((max, window)) = self.limit else { return Ok(()) };
        let now = Instant::now();
        let mut all = lock(&self.arrivals);
        let q = all.entry(key.to_string()).or_default();
        while q.front().is_some_and(|t| *t + window <= now) {
            q.pop_front();
        }
        if q.len() >= max {
            let oldest = q.front().copied().unwrap_or(now);
            return Err((oldest + window).saturating_duration_since(now));
        }
        q.push_back(now);
        Ok(())
    }
}

pub(crate) use super::loopback::LoopbackServer as ServerTask;

/// Seconds for a Retry-After-style header, rounded up so clients never come back early.
pub(crate) fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A request id in the UUIDv4 shape vendors use (random, not cryptographic).
pub(crate) fn request_id() -> String {
    let hex = |n: usize| (0..n).map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0')).collect::<String>();
    format!("{}-{}-4{}-a{}-{}", hex(8), hex(4), hex(3), hex(3), hex(12))
}

/// Splits a path into its non-empty segments.
pub(crate) fn segments(uri: &Uri) -> Vec<String> {
    uri.path().split('/').filter(|s| !s.is_empty()).map(percent_decode).collect()
}

/// Minimal percent-decoding for path segments (ids may be URL-encoded).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |b: u8| char::from(b).to_digit(16);
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query string as key/value pairs.
pub(crate) fn query_pairs(uri: &Uri) -> HashMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect()
}
