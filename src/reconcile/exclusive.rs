//! One writer per endpoint: within this process by a keyed lock, across instances by a
//! lease (`arm::lease`, and its module docs for why a lease rather than sessions).
//!
//! Every path that writes for an endpoint (the event handler, the work queue, the sweep,
//! re-checks) goes through [`Exclusive::run`]. While the work runs, the lease is renewed
//! every third of its time to live; if a renewal finds it taken (this instance stalled
//! past the expiry) or cannot renew before it expires, the work is cancelled at its next
//! await, exactly like a deadline cancels it: every write it made is idempotent and
//! conditional, and the endpoint is requeued. A busy lease is not an error either: the
//! caller requeues the endpoint for shortly after the holder's expiry, because the
//! holder may have read ARM before the change that brought us here.
//!
//! Without a lease store (the embedded deployment: one process) only the keyed lock
//! applies.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::arm::lease::{Acquired, Lease, LeaseError, LeaseStore};
use crate::telemetry::Stats;

use super::locks::KeyedLocks;

/// Why the work did not run (or did not finish).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Another instance holds the endpoint; try again after `retry_after`.
    Busy { holder: String, retry_after: Duration },
    /// The lease was lost while the work ran; the work was cancelled.
    Lost,
    /// The lease store failed.
    Store(LeaseError),
}

impl Refused {
    /// How soon to try again, and why, in words for the outcome.
    pub fn requeue(&self) -> (Duration, String) {
        match self {
            Self::Busy { holder, retry_after } => {
                (*retry_after, format!("another instance ({holder}) is converging this endpoint"))
            }
            Self::Lost => (Duration::from_secs(1), "this instance lost the endpoint's lease; work cancelled".into()),
            Self::Store(e) => (Duration::from_secs(5), format!("lease store: {e}")),
        }
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Store(e) if !e.is_transient())
    }
}

#[derive(Debug)]
pub struct Exclusive {
    locks: KeyedLocks,
    leases: Option<Leases>,
}

#[derive(Debug)]
struct Leases {
    store: Arc<dyn LeaseStore>,
    ttl: Duration,
    instance: String,
    stats: Arc<Stats>,
}

impl Exclusive {
    /// In-process exclusion only.
    pub fn local() -> Self {
        Self { locks: KeyedLocks::default(), leases: None }
    }

    /// Also a lease in `store` per endpoint, held for `ttl` at a time by `instance`.
    pub fn with_leases(store: Arc<dyn LeaseStore>, ttl: Duration, instance: String, stats: Arc<Stats>) -> Self {
        let ttl = ttl.max(Duration::from_secs(3));
        Self { locks: KeyedLocks::default(), leases: Some(Leases { store, ttl, instance, stats }) }
    }

    /// Runs `work` as the only writer of `key`, or says why not.
    pub async fn run<T>(&self, key: &str, work: impl Future<Output = T>) -> Result<T, Refused> {
        let _local = self.locks.lock(key).await;
        let Some(leases) = &self.leases else {
            return Ok(work.await);
        };
        let holder = format!("{}#{:08x}", leases.instance, fastrand::u32(..));
        let lease = match leases.store.acquire(key, &holder, leases.ttl).await {
            Ok(Acquired::Held(lease)) => lease,
            Ok(Acquired::Busy { holder, for_at_most }) => {
                Stats::inc(&leases.stats.lease_busy);
                // The holder usually finishes within a second; its expiry bounds the wait.
                let retry_after = for_at_most.clamp(Duration::from_secs(1), Duration::from_secs(2))
                    + Duration::from_millis(fastrand::u64(0..1000));
                return Err(Refused::Busy { holder, retry_after });
            }
            Err(e) => return Err(Refused::Store(e)),
        };
        let current = Arc::new(tokio::sync::Mutex::new(lease));
        let outcome = tokio::select! {
            out = work => Ok(out),
            () = keep(leases, Arc::clone(&current)) => {
                Stats::inc(&leases.stats.lease_lost);
                Err(Refused::Lost)
            }
        };
        let lease = current.lock().await.clone();
        // Bounded: a slow store must not hold the caller; an unreleased lease expires.
        match tokio::time::timeout(Duration::from_secs(2), leases.store.release(&lease)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(key, error = %e, "lease not released; it expires"),
            Err(_) => tracing::debug!(key, "lease release timed out; it expires"),
        }
        outcome
    }
}

/// Renews the lease until it is lost (returns) or the caller's work finishes (dropped).
async fn keep(leases: &Leases, current: Arc<tokio::sync::Mutex<Lease>>) {
    let every = leases.ttl / 3;
    let mut valid_until = tokio::time::Instant::now() + leases.ttl;
    loop {
        tokio::time::sleep(every).await;
        let lease = current.lock().await.clone();
        let attempt = tokio::time::timeout(every, leases.store.renew(&lease, leases.ttl)).await;
        match attempt {
            Ok(Ok(renewed)) => {
                *current.lock().await = renewed;
                valid_until = tokio::time::Instant::now() + leases.ttl;
            }
            Ok(Err(LeaseError::Lost)) => return,
            Ok(Err(e)) => tracing::warn!(key = %lease.key, error = %e, "lease renewal failed; retrying"),
            Err(_) => tracing::warn!(key = %lease.key, "lease renewal timed out; retrying"),
        }
        // Stop before another instance could take it over, with a second to spare.
        if tokio::time::Instant::now() + every + Duration::from_secs(1) >= valid_until {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arm::lease::MemoryLeases;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn instance(store: &Arc<MemoryLeases>, name: &str) -> Exclusive {
        let store: Arc<dyn LeaseStore> = store.clone();
        Exclusive::with_leases(store, Duration::from_secs(3), name.into(), Arc::new(Stats::default()))
    }

    #[tokio::test]
    async fn two_instances_never_write_one_endpoint_at_once() {
        let store = Arc::new(MemoryLeases::default());
        let (a, b) = (Arc::new(instance(&store, "a")), Arc::new(instance(&store, "b")));
        let inside = Arc::new(AtomicUsize::new(0));
        let ran = Arc::new(AtomicUsize::new(0));
        let busy = Arc::new(AtomicUsize::new(0));
        let mut tasks = vec![];
        for i in 0..20 {
            let x = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (inside, ran, busy) = (inside.clone(), ran.clone(), busy.clone());
            tasks.push(tokio::spawn(async move {
                let r = x
                    .run("pe-1", async {
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two writers at once");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        inside.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await;
                match r {
                    Ok(()) => ran.fetch_add(1, Ordering::SeqCst),
                    Err(Refused::Busy { retry_after, .. }) => {
                        assert!(retry_after >= Duration::from_secs(1));
                        busy.fetch_add(1, Ordering::SeqCst)
                    }
                    Err(other) => panic!("unexpected {other:?}"),
                };
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(ran.load(Ordering::SeqCst) + busy.load(Ordering::SeqCst), 20);
        assert!(busy.load(Ordering::SeqCst) > 0, "the other instance must have been refused at least once");
        // Released: the next one runs at once.
        assert!(a.run("pe-1", async {}).await.is_ok());
    }

    #[tokio::test]
    async fn long_work_keeps_its_lease_and_a_stolen_lease_cancels_the_work() {
        let store = Arc::new(MemoryLeases::default());
        let a = instance(&store, "a");
        // 4 s of work against a 3 s lease: renewals keep it.
        let r = a.run("pe-2", tokio::time::sleep(Duration::from_millis(4000))).await;
        assert_eq!(r, Ok(()));
        // A lease the store no longer knows (taken over) cancels the work at the next renewal.
        let store2 = Arc::new(MemoryLeases::default());
        let b = instance(&store2, "b");
        let thief = store2.clone();
        let steal = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            thief.rows_clear();
        });
        let r = b.run("pe-3", tokio::time::sleep(Duration::from_secs(10))).await;
        steal.await.unwrap();
        assert_eq!(r, Err(Refused::Lost));
    }
}
