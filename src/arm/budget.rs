//! Client-side token buckets mirroring ARM's throttling.
//!
//! Since 2024 ARM throttles with a per-region token bucket per subscription, per
//! principal and per operation kind (reads 250 + 25/s, writes and deletes 200 + 10/s),
//! and Resource Graph has its own per-principal quota (about 15 queries per 5 s). A 429
//! costs far more than waiting a little: it comes with a `Retry-After`, and "if you send a
//! request before the retry value has elapsed, your request isn't processed and a new
//! retry value is returned". So every request first takes a token from a local bucket that
//! has the same shape as ARM's, and the bucket is corrected from what ARM tells us:
//!
//! * the `x-ms-ratelimit-remaining-*` / `x-ms-user-quota-*` headers only ever *lower* our
//!   count (other processes of the same principal share ARM's bucket, so ARM may know of
//!   spending we never saw; it can never know of less);
//! * a 429 empties the bucket and pauses it until `Retry-After` has passed, so the other
//!   tasks queue here instead of collecting 429s of their own.
//!
//! Waiting is a reservation: a caller takes its token at once (the count may go negative)
//! and sleeps until the refill has paid for it. Callers are therefore served in arrival
//! order, nobody spins, and there is no thundering herd when a pause ends. A caller whose
//! future is dropped while waiting does not give its token back; that only makes us
//! slightly more conservative.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::request::Method;

/// The operation kinds ARM budgets separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// GET / HEAD.
    Read,
    /// PUT / PATCH / POST.
    Write,
    /// DELETE.
    Delete,
    /// `POST /providers/Microsoft.ResourceGraph/resources`: its own per-principal quota.
    ResourceGraph,
}

/// Which bucket a request draws from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BucketKey {
    /// Lower-cased subscription id, `"tenant"` for tenant-level paths, or `"principal"`
    /// for Resource Graph (whose quota is per principal, not per subscription).
    pub scope: String,
    pub kind: OpKind,
}

impl BucketKey {
    /// Classifies a request by method and URL path (no query).
    pub fn classify(method: Method, path: &str) -> Self {
        let kind = match method {
            Method::Get => OpKind::Read,
            Method::Delete => OpKind::Delete,
            Method::Post if is_resource_graph(path) => OpKind::ResourceGraph,
            Method::Put | Method::Patch | Method::Post => OpKind::Write,
        };
        let scope = if kind == OpKind::ResourceGraph {
            "principal".to_string()
        } else {
            subscription_of(path).unwrap_or_else(|| "tenant".to_string())
        };
        Self { scope, kind }
    }
}

fn is_resource_graph(path: &str) -> bool {
    path.trim_end_matches('/').eq_ignore_ascii_case("/providers/Microsoft.ResourceGraph/resources")
}

/// The lower-cased `{id}` of a path starting `/subscriptions/{id}`, if any.
pub fn subscription_of(path: &str) -> Option<String> {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let first = segments.next()?;
    if !first.eq_ignore_ascii_case("subscriptions") {
        return None;
    }
    segments.next().map(|s| s.to_ascii_lowercase())
}

/// Bucket sizes: `(burst, refill per second)` per kind, Resource Graph as `(queries, window)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    pub reads: (u32, f64),
    pub writes: (u32, f64),
    pub deletes: (u32, f64),
    pub resource_graph: (u32, Duration),
}

impl BudgetConfig {
    /// `(capacity, refill per second)` for a kind, sanitised so that a mistyped config
    /// (zero, negative, NaN) cannot make a bucket that never refills.
    fn shape(&self, kind: OpKind) -> (f64, f64) {
        let (burst, rate) = match kind {
            OpKind::Read => self.reads,
            OpKind::Write => self.writes,
            OpKind::Delete => self.deletes,
            OpKind::ResourceGraph => {
                let (n, window) = self.resource_graph;
                let secs = window.as_secs_f64();
                (n, if secs > 0.0 { f64::from(n.max(1)) / secs } else { f64::from(n.max(1)) })
            }
        };
        let rate = if rate.is_finite() && rate > 0.0 { rate.max(0.001) } else { 0.001 };
        (f64::from(burst.max(1)), rate)
    }
}

#[derive(Debug)]
struct Bucket {
    /// May go negative: outstanding reservations.
    tokens: f64,
    capacity: f64,
    rate: f64,
    updated: Instant,
    paused_until: Option<Instant>,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity);
        self.updated = now;
    }

    fn pause_left(&self, now: Instant) -> Duration {
        self.paused_until.map(|p| p.saturating_duration_since(now)).unwrap_or(Duration::ZERO)
    }
}

/// All buckets of one client. Cheap to share behind the client's `Arc`.
#[derive(Debug)]
pub struct Budget {
    config: BudgetConfig,
    buckets: Mutex<HashMap<BucketKey, Arc<Mutex<Bucket>>>>,
}

/// The guarded sections never panic, but if one ever did the bucket state is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Budget {
    pub fn new(config: BudgetConfig) -> Self {
        Self { config, buckets: Mutex::new(HashMap::new()) }
    }

    fn bucket(&self, key: &BucketKey) -> Arc<Mutex<Bucket>> {
        let mut map = lock(&self.buckets);
        map.entry(key.clone())
            .or_insert_with(|| {
                let (capacity, rate) = self.config.shape(key.kind);
                Arc::new(Mutex::new(Bucket {
                    tokens: capacity,
                    capacity,
                    rate,
                    updated: Instant::now(),
                    paused_until: None,
                }))
            })
            .clone()
    }

    /// Takes one token, sleeping (never spinning) until the refill has paid for it and
    /// any pause from a 429 is over. Returns how long it waited.
    pub async fn acquire(&self, key: &BucketKey) -> Duration {
        let bucket = self.bucket(key);
        let start = Instant::now();
        let mut wait = {
            let mut b = lock(&bucket);
            let now = Instant::now();
            b.refill(now);
            b.tokens -= 1.0;
            let debt = if b.tokens < 0.0 { Duration::from_secs_f64(-b.tokens / b.rate) } else { Duration::ZERO };
            debt.max(b.pause_left(now))
        };
        // A 429 seen by another task while we slept may have extended the pause; the
        // token is already ours, so only the pause is waited out again.
        while !wait.is_zero() {
            tokio::time::sleep(wait).await;
            wait = lock(&bucket).pause_left(Instant::now());
        }
        start.elapsed()
    }

    /// Lowers the bucket to what ARM says is left (never raises it).
    pub fn lower_to(&self, key: &BucketKey, remaining: u64) {
        let bucket = self.bucket(key);
        let mut b = lock(&bucket);
        b.refill(Instant::now());
        // u64 -> f64 is exact for any plausible count.
        b.tokens = b.tokens.min(remaining as f64);
    }

    /// Empties the bucket and holds every caller until `for_how_long` has passed (a 429).
    pub fn pause(&self, key: &BucketKey, for_how_long: Duration) {
        let bucket = self.bucket(key);
        let mut b = lock(&bucket);
        let now = Instant::now();
        b.refill(now);
        b.tokens = b.tokens.min(0.0);
        let until = now + for_how_long;
        if b.paused_until.is_none_or(|p| p < until) {
            b.paused_until = Some(until);
        }
    }

    /// Reads ARM's remaining-quota headers (lower-cased names) from any response and
    /// adapts the bucket downward.
    pub fn observe(&self, key: &BucketKey, headers: &[(String, String)]) {
        let find = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim());
        let level = if key.scope == "tenant" { "tenant" } else { "subscription" };
        let header = match key.kind {
            OpKind::Read => format!("x-ms-ratelimit-remaining-{level}-reads"),
            OpKind::Write => format!("x-ms-ratelimit-remaining-{level}-writes"),
            OpKind::Delete => format!("x-ms-ratelimit-remaining-{level}-deletes"),
            OpKind::ResourceGraph => "x-ms-user-quota-remaining".to_string(),
        };
        let Some(remaining) = find(&header).and_then(|v| v.parse::<u64>().ok()) else {
            return;
        };
        self.lower_to(key, remaining);
        if key.kind == OpKind::ResourceGraph && remaining == 0 {
            // The quota is spent for this window; nothing refills before it resets.
            if let Some(reset) = find("x-ms-user-quota-resets-after").and_then(parse_hms) {
                self.pause(key, reset);
            }
        }
    }

    /// Tokens currently available (negative: reservations outstanding). For tests and metrics.
    pub fn available(&self, key: &BucketKey) -> f64 {
        let bucket = self.bucket(key);
        let mut b = lock(&bucket);
        b.refill(Instant::now());
        b.tokens
    }
}

/// Parses Resource Graph's `hh:mm:ss` (hours may exceed 23; seconds may carry a fraction).
pub fn parse_hms(v: &str) -> Option<Duration> {
    let mut parts = v.trim().split(':');
    let h: u64 = parts.next()?.trim().parse().ok()?;
    let m: u64 = parts.next()?.trim().parse().ok()?;
    let s: f64 = parts.next()?.trim().parse().ok()?;
    if parts.next().is_some() || m >= 60 || !(0.0..60.0).contains(&s) {
        return None;
    }
    Some(Duration::from_secs(h.min(24) * 3600 + m * 60) + Duration::from_secs_f64(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BudgetConfig {
        BudgetConfig {
            reads: (3, 20.0),
            writes: (2, 10.0),
            deletes: (2, 10.0),
            resource_graph: (2, Duration::from_secs(1)),
        }
    }

    #[test]
    fn classifies_by_method_and_subscription() {
        let k = BucketKey::classify(Method::Get, "/subscriptions/ABC-1/resourceGroups/rg/providers/X/y/z");
        assert_eq!(k, BucketKey { scope: "abc-1".into(), kind: OpKind::Read });
        assert_eq!(BucketKey::classify(Method::Delete, "/SUBSCRIPTIONS/s1/x").kind, OpKind::Delete);
        assert_eq!(BucketKey::classify(Method::Patch, "/subscriptions/s1/x").kind, OpKind::Write);
        assert_eq!(BucketKey::classify(Method::Put, "/providers/Microsoft.Foo/x").scope, "tenant");
        let rg = BucketKey::classify(Method::Post, "/providers/microsoft.resourcegraph/resources");
        assert_eq!(rg, BucketKey { scope: "principal".into(), kind: OpKind::ResourceGraph });
        // A GET on the same path is an ordinary read.
        assert_eq!(BucketKey::classify(Method::Get, "/providers/Microsoft.ResourceGraph/resources").kind, OpKind::Read);
        assert_eq!(subscription_of("/subscriptions"), None);
    }

    #[test]
    fn parses_hms() {
        assert_eq!(parse_hms("00:00:03"), Some(Duration::from_secs(3)));
        assert_eq!(parse_hms("01:02:03"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_hms("0:00:01.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_hms("3"), None);
        assert_eq!(parse_hms("00:61:00"), None);
    }

    #[test]
    fn bad_config_still_refills() {
        let c = BudgetConfig { reads: (0, f64::NAN), ..cfg() };
        let (cap, rate) = c.shape(OpKind::Read);
        assert!(cap >= 1.0 && rate > 0.0);
    }

    #[tokio::test]
    async fn burst_then_rate() {
        let b = Budget::new(cfg());
        let k = BucketKey::classify(Method::Get, "/subscriptions/s/x");
        for _ in 0..3 {
            assert!(b.acquire(&k).await < Duration::from_millis(5));
        }
        // The 4th token costs 1/20 s.
        let w = b.acquire(&k).await;
        assert!(w >= Duration::from_millis(40), "{w:?}");
    }

    #[tokio::test]
    async fn headers_only_lower_and_quota_reset_pauses() {
        let b = Budget::new(cfg());
        let k = BucketKey::classify(Method::Get, "/subscriptions/s/x");
        b.observe(&k, &[("x-ms-ratelimit-remaining-subscription-reads".into(), "1000".into())]);
        assert!((b.available(&k) - 3.0).abs() < 0.01);
        b.observe(&k, &[("x-ms-ratelimit-remaining-subscription-reads".into(), "1".into())]);
        assert!(b.available(&k) < 1.1);

        let rg = BucketKey::classify(Method::Post, "/providers/Microsoft.ResourceGraph/resources");
        b.observe(
            &rg,
            &[
                ("x-ms-user-quota-remaining".into(), "0".into()),
                ("x-ms-user-quota-resets-after".into(), "00:00:00.3".into()),
            ],
        );
        let w = b.acquire(&rg).await;
        assert!(w >= Duration::from_millis(290), "{w:?}");
    }

    #[tokio::test]
    async fn pause_holds_callers_and_is_per_bucket() {
        let b = Budget::new(cfg());
        let k = BucketKey::classify(Method::Put, "/subscriptions/s/x");
        let other = BucketKey::classify(Method::Put, "/subscriptions/t/x");
        b.pause(&k, Duration::from_millis(200));
        assert!(b.acquire(&other).await < Duration::from_millis(5));
        assert!(b.acquire(&k).await >= Duration::from_millis(195));
    }
}
