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
//! - `inject(fault, n)` makes the next `n` requests fail (500, 429 or 503 with
//!   Retry-After, or a response slower than any sane client timeout).
//! - `hold_next_write()` parks the next write until the test lets it go: a deterministic
//!   way to make another client win the race between a read and a write.
//! - `gate()`: all of the above as one [`Gate`] handle, so a suite written once (the vendor
//!   conformance suite) drives every fake the same way.
//! - A per-key rate limit like the vendor's (answering 429), checked after authentication.
//! - `set_latency(d)`: every answer waits `d` first (benchmarks).
//!
//! Request handling order: log, latency, write hold, injected fault, authentication
//! (401), rate limit (429), then the route. Everything before authentication is one
//! function, [`Gate::admit`]; a fake contributes only its error envelope, so a fault looks
//! the same (status, Retry-After, delay) whichever vendor answers it.

/// The handle methods every fake shares (`base_url`, `state`, `set_state`, `requests`,
/// `clear_requests`, `inject`, `hold_next_write`, `gate`), for a handle with
/// `server: ServerTask` and `inner: Arc<Inner>` holding `gate: Arc<Gate>` and
/// `state: Mutex<$state>`.
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
        pub fn inject(&self, fault: $crate::fake_vendors::Fault, count: usize) {
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
        /// The next write waits until the returned hold is released (or dropped).
        pub fn hold_next_write(&self) -> $crate::fake_vendors::WriteHold {
            self.inner.gate.hold_next_write()
        }
        /// The fake's log, faults, latency and write hold as one shared handle.
        pub fn gate(&self) -> std::sync::Arc<$crate::fake_vendors::Gate> {
            self.inner.gate.clone()
        }
    };
}

pub mod clickhouse;
pub mod elastic;
pub mod zilliz;

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use tokio::sync::oneshot;
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
    /// HTTP 503 (maintenance, overload) with the vendor's error envelope and, if given,
    /// `Retry-After` in seconds.
    ServiceUnavailable { retry_after: Option<Duration> },
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

/// The parts every fake shares: request log, fault queue, write hold, latency and the
/// per-key sliding window. One per fake; tests reach it through the fake's `gate()`.
#[derive(Debug)]
pub struct Gate {
    log: Mutex<Vec<LoggedRequest>>,
    faults: Mutex<VecDeque<Fault>>,
    limit: Option<(usize, Duration)>,
    arrivals: Mutex<HashMap<String, VecDeque<Instant>>>,
    latency: Mutex<Duration>,
    hold: Mutex<Option<ArmedHold>>,
}

/// The fake's half of a [`WriteHold`].
#[derive(Debug)]
struct ArmedHold {
    reached: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// The test's half of a held write: [`reached`](Self::reached) resolves once the write
/// has arrived and is parked; [`release`](Self::release) (or dropping the hold) lets it
/// through to the vendor.
#[derive(Debug)]
pub struct WriteHold {
    reached: Option<oneshot::Receiver<()>>,
    release: oneshot::Sender<()>,
}

impl WriteHold {
    /// Waits until a write is parked; `false` if none arrived within `patience`.
    pub async fn reached(&mut self, patience: Duration) -> bool {
        let Some(rx) = self.reached.take() else { return true };
        matches!(tokio::time::timeout(patience, rx).await, Ok(Ok(())))
    }

    /// Lets the parked write reach the vendor.
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

impl Gate {
    pub(crate) fn new(limit: Option<(u32, Duration)>) -> Self {
        Self {
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            limit: limit.map(|(n, w)| ((n as usize).max(1), w)),
            arrivals: Mutex::new(HashMap::new()),
            latency: Mutex::new(Duration::ZERO),
            hold: Mutex::new(None),
        }
    }

    /// Everything a request meets before the vendor looks at it: the log, the latency,
    /// an armed write hold, an injected fault. `Some(answer)` ends the request with the
    /// fault, worded by `envelope(status, message)` (the vendor's error body) and carrying
    /// `Retry-After` when the fault has one.
    pub(crate) async fn admit(
        &self,
        method: &Method,
        uri: &Uri,
        envelope: impl Fn(StatusCode, &str) -> Response,
    ) -> Option<Response> {
        self.record(method, uri);
        self.pause().await;
        if method != Method::GET {
            let armed = lock(&self.hold).take();
            if let Some(ArmedHold { reached, release }) = armed {
                let _ = reached.send(());
                // A dropped hold lets the write through as well.
                let _ = release.await;
            }
        }
        let (status, message, retry_after) = match self.take_fault()? {
            Fault::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, "injected failure", None),
            Fault::Status(code) => {
                (StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "injected failure", None)
            }
            Fault::TooManyRequests { retry_after } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded", retry_after)
            }
            Fault::ServiceUnavailable { retry_after } => {
                (StatusCode::SERVICE_UNAVAILABLE, "service temporarily unavailable", retry_after)
            }
            Fault::Timeout(d) => {
                tokio::time::sleep(d).await;
                (StatusCode::GATEWAY_TIMEOUT, "injected delay", None)
            }
        };
        let mut answer = envelope(status, message);
        if let Some(d) = retry_after {
            answer.headers_mut().insert("retry-after", HeaderValue::from(whole_seconds(d)));
        }
        Some(answer)
    }

    /// Parks the next write (any method but GET) until the returned hold is released.
    /// Arming a new hold replaces one not yet used.
    pub fn hold_next_write(&self) -> WriteHold {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *lock(&self.hold) = Some(ArmedHold { reached: reached_tx, release: release_rx });
        WriteHold { reached: Some(reached_rx), release: release_tx }
    }

    fn record(&self, method: &Method, uri: &Uri) {
        let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| uri.path().to_string());
        lock(&self.log).push(LoggedRequest { method: method.as_str().to_string(), path });
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.log).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.log).clear();
    }

    pub fn inject(&self, fault: Fault, count: usize) {
        let mut q = lock(&self.faults);
        q.extend(std::iter::repeat_n(fault, count));
    }

    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.latency) = latency;
    }

    /// Waits the configured latency (none by default).
    async fn pause(&self) {
        let latency = *lock(&self.latency);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    fn take_fault(&self) -> Option<Fault> {
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
