//! Client-side token buckets mirroring ARM's throttling (per subscription and kind of
//! operation: reads, writes, deletes), so a burst of work waits on our side instead of
//! collecting 429s that slow every caller of the subscription. Waiting sleeps; it never
//! spins or blocks the runtime.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::client::{ArmConfig, Method};

#[derive(Debug)]
struct Bucket {
    capacity: f64,
    tokens: f64,
    per_sec: f64,
    last: Instant,
    paused_until: Option<Instant>,
}

impl Bucket {
    fn new(burst: u32, per_sec: f64) -> Self {
        let capacity = f64::from(burst.max(1));
        Self { capacity, tokens: capacity, per_sec: per_sec.max(0.001), last: Instant::now(), paused_until: None }
    }
    /// Takes a token or says how long until one is available.
    fn take(&mut self, now: Instant) -> Option<Duration> {
        if let Some(until) = self.paused_until {
            if now < until {
                return Some(until - now);
            }
            self.paused_until = None;
        }
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }
}

#[derive(Debug)]
pub struct Budget {
    reads: (u32, f64),
    writes: (u32, f64),
    deletes: (u32, f64),
    buckets: Mutex<HashMap<(String, u8), Bucket>>,
}

fn kind(method: Method) -> u8 {
    match method {
        Method::Get => 0,
        Method::Delete => 2,
        _ => 1,
    }
}

fn subscription_of(path: &str) -> String {
    let mut segs = path.split('/').filter(|s| !s.is_empty());
    match (segs.next(), segs.next()) {
        (Some(s), Some(id)) if s.eq_ignore_ascii_case("subscriptions") => id.to_ascii_lowercase(),
        _ => "tenant".into(),
    }
}

impl Budget {
    pub fn new(c: &ArmConfig) -> Self {
        Self { reads: c.reads, writes: c.writes, deletes: c.deletes, buckets: Mutex::new(HashMap::new()) }
    }

    fn with_bucket<T>(&self, method: Method, path: &str, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let k = kind(method);
        let (burst, rate) = match k {
            0 => self.reads,
            2 => self.deletes,
            _ => self.writes,
        };
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.entry((subscription_of(path), k)).or_insert_with(|| Bucket::new(burst, rate));
        f(b)
    }

    /// Waits until the bucket for this request has a token.
    pub async fn acquire(&self, method: Method, path: &str) {
        loop {
            match self.with_bucket(method, path, |b| b.take(Instant::now())) {
                None => return,
                Some(wait) => tokio::time::sleep(wait.max(Duration::from_millis(1))).await,
            }
        }
    }

    /// After a 429: nobody sends on this bucket until `for_` has passed.
    pub fn pause(&self, method: Method, path: &str, for_: Duration) {
        self.with_bucket(method, path, |b| b.paused_until = Some(Instant::now() + for_));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limits_rate_after_the_burst() {
        let cfg = ArmConfig { reads: (5, 10.0), ..ArmConfig::default() };
        let b = Budget::new(&cfg);
        let start = Instant::now();
        for _ in 0..25 {
            b.acquire(Method::Get, "/subscriptions/s1/x").await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1900) && took <= Duration::from_millis(2200), "{took:?}");
        // Another subscription has its own bucket.
        let start = Instant::now();
        b.acquire(Method::Get, "/subscriptions/s2/x").await;
        assert!(start.elapsed() < Duration::from_millis(5));
    }

    #[tokio::test(start_paused = true)]
    async fn pause_blocks_until_retry_after() {
        let b = Budget::new(&ArmConfig::default());
        b.pause(Method::Put, "/subscriptions/s1/x", Duration::from_secs(10));
        let start = Instant::now();
        b.acquire(Method::Put, "/subscriptions/s1/x").await;
        assert!(start.elapsed() >= Duration::from_secs(10));
    }
}
