//! Exponential backoff with jitter, and `Retry-After` parsing.
//!
//! One policy type serves every retry loop (ARM calls, reconcile requeues, vendor
//! calls) so that "how long do we wait" has one answer. Jitter keeps many endpoints that
//! failed together from retrying in lock-step; a server's `Retry-After` is a floor we
//! never undercut.

use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry (attempt 1), before jitter.
    pub base: Duration,
    /// Ceiling for the computed delay (a server's Retry-After may exceed it, up to `hard_max`).
    pub max: Duration,
    /// Never wait longer than this, whatever a server says.
    pub hard_max: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max, hard_max: Duration::from_secs(3600) }
    }

    /// The un-jittered delay for `attempt` (1-based): base * 2^(attempt-1), capped.
    pub fn nominal(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let d = self.base.saturating_mul(1u32 << exp.min(20));
        d.min(self.max)
    }

    /// "Equal jitter": uniformly in [nominal/2, nominal]. Never zero for a non-zero base.
    pub fn delay(&self, attempt: u32) -> Duration {
        let n = self.nominal(attempt);
        let half = n / 2;
        let spread = n.saturating_sub(half).as_millis() as u64;
        half + Duration::from_millis(if spread == 0 { 0 } else { fastrand::u64(0..=spread) })
    }

    /// The delay for `attempt`, but never less than the server's `retry_after`.
    pub fn delay_honouring(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let d = self.delay(attempt);
        match retry_after {
            Some(ra) => d.max(ra).min(self.hard_max),
            None => d,
        }
    }
}

/// Parses an HTTP `Retry-After` value: delta-seconds or an HTTP-date. Returns `None`
/// for anything else (the caller then uses its own backoff).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(24 * 3600)));
    }
    if let Ok(secs) = v.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(Duration::from_secs_f64(secs.min(24.0 * 3600.0)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_jitters_within_bounds() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(b.nominal(1), Duration::from_millis(100));
        assert_eq!(b.nominal(3), Duration::from_millis(400));
        assert_eq!(b.nominal(50), Duration::from_secs(2));
        for attempt in 1..10 {
            let d = b.delay(attempt);
            assert!(d >= b.nominal(attempt) / 2 && d <= b.nominal(attempt));
        }
    }

    #[test]
    fn retry_after_is_a_floor() {
        let b = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
        assert!(b.delay_honouring(1, Some(Duration::from_secs(10))) >= Duration::from_secs(10));
    }

    #[test]
    fn parses_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784111777);
        assert_eq!(parse_retry_after("10", now), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
