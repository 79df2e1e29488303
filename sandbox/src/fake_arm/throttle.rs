//! ARM's throttling as the fake enforces it: a token bucket per subscription and
//! operation kind (the 2024 model), and Private DNS's own read window on top.
//!
//! Requests to a subscription we never throttle on (tenant-level paths have no
//! subscription segment) share one bucket keyed by the empty string, as ARM's tenant
//! buckets do.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::Method;

use super::{Answer, FakeArmOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    Read,
    Write,
    Delete,
}

impl OpKind {
    pub fn of(method: &Method) -> Self {
        match *method {
            Method::GET | Method::HEAD => Self::Read,
            Method::DELETE => Self::Delete,
            _ => Self::Write,
        }
    }

    pub fn remaining_header(self) -> &'static str {
        match self {
            Self::Read => "x-ms-ratelimit-remaining-subscription-reads",
            Self::Write => "x-ms-ratelimit-remaining-subscription-writes",
            Self::Delete => "x-ms-ratelimit-remaining-subscription-deletes",
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let dt = now.duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_sec).min(self.burst);
        self.at = now;
    }
}

#[derive(Debug)]
pub struct Buckets {
    limits: HashMap<OpKind, (u32, f64)>,
    buckets: Mutex<HashMap<(String, OpKind), Bucket>>,
    dns_window: Option<(u32, Duration)>,
    dns_reads: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Buckets {
    pub fn new(o: &FakeArmOptions) -> Self {
        let limits = HashMap::from([(OpKind::Read, o.reads), (OpKind::Write, o.writes), (OpKind::Delete, o.deletes)]);
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
            dns_window: o.private_dns_reads,
            dns_reads: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token; `Ok(remaining)` or the 429 ARM would send.
    pub fn take(&self, subscription: &str, kind: OpKind, private_dns_read: bool) -> Result<u64, Answer> {
        let now = Instant::now();
        if private_dns_read && let Some((limit, window)) = self.dns_window {
            let mut all = self.dns_reads.lock().unwrap_or_else(|p| p.into_inner());
            let seen = all.entry(subscription.to_owned()).or_default();
            while seen.front().is_some_and(|t| now.duration_since(*t) >= window) {
                seen.pop_front();
            }
            if seen.len() >= limit as usize {
                return Err(Answer::error(
                    429,
                    "TooManyRequests",
                    "The request is being throttled as the limit has been reached for operation type - Read_ObservationWindow.",
                )
                .with_header("Retry-After", "10"));
            }
            seen.push_back(now);
        }
        let (burst, per_sec) = self.limits[&kind];
        let mut all = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = all.entry((subscription.to_owned(), kind)).or_insert_with(|| Bucket {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_sec,
            at: now,
        });
        b.refill(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(b.tokens.floor() as u64);
        }
        let wait = if per_sec > 0.0 { ((1.0 - b.tokens) / per_sec).ceil().max(1.0) } else { 60.0 };
        Err(Answer::error(
            429,
            "SubscriptionRequestsThrottled",
            format!(
                "Number of '{}' requests for subscription '{subscription}' exceeded the limit. Please try again after '{wait}' seconds.",
                match kind {
                    OpKind::Read => "read",
                    OpKind::Write => "write",
                    OpKind::Delete => "delete",
                }
            ),
        )
        .with_header("Retry-After", format!("{wait}")))
    }
}
