//! Runs the shared work-queue conformance suite against [`SqliteQueue`] (in memory and on
//! a file), plus the SQLite-only properties: surviving a restart, parking corrupt rows,
//! and a throughput report (`cargo test --test queue_conformance -- --ignored --nocapture`).

#[path = "support/queue_conformance.rs"]
mod queue_conformance;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use private_link_autopilot::queue::{Delivery, QueueError, SqliteQueue, WorkQueue};

fn open_file(path: &Path) -> SqliteQueue {
    SqliteQueue::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// The whole suite through its single entry point, on in-memory queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_run_all() {
    queue_conformance::run_all(|| async {
        Arc::new(SqliteQueue::open_in_memory().unwrap_or_else(|e| panic!("open in memory: {e}")))
    })
    .await;
}

/// One test per check on a file-backed queue (the production configuration), so a
/// failure names the rule.
macro_rules! file_backed_checks {
    ($($check:ident),* $(,)?) => {
        mod file_backed {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
                    let q = Arc::new(open_file(&dir.path().join("queue.db")));
                    queue_conformance::$check(q).await;
                }
            )*
        }
    };
}

file_backed_checks!(
    round_trip,
    delay_is_respected,
    dedupe_collapses_while_waiting,
    dedupe_ignores_locked_message,
    lock_expiry_redelivers,
    abandon_redelivers_at_once,
    dead_letter_parks_message,
    replay_is_idempotent,
    concurrent_receivers_deliver_once,
    receive_times_out_empty,
    receive_wakes_on_enqueue,
    depth_counts_waiting_and_locked,
);

/// Enqueue 100, leave some locked, dead-letter and complete a few, drop the queue and
/// reopen the same file: nothing lost, locked ones come back after their lock expires,
/// dead letters still listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_restart() {
    const TOTAL: usize = 100;
    const LOCKED: usize = 10;
    const DEAD: usize = 3;
    const COMPLETED: usize = 2;
    // Long enough that the first drain after reopening finishes before it expires.
    let lock_for = Duration::from_secs(4);

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("state").join("queue.db"); // parent created by open
    let mut settled = HashSet::new();
    let locked: Vec<Delivery>;
    let locked_at;
    {
        let q = open_file(&path);
        for i in 0..TOTAL {
            q.enqueue(queue_conformance::message(&format!("r-{i:03}"), Duration::ZERO)).await.expect("enqueue");
        }
        for _ in 0..DEAD {
            let d = q.receive(Duration::ZERO, lock_for).await.expect("receive").expect("due");
            q.dead_letter(&d, "parked before restart").await.expect("dead_letter");
            settled.insert(d.dedupe_key);
        }
        for _ in 0..COMPLETED {
            let d = q.receive(Duration::ZERO, lock_for).await.expect("receive").expect("due");
            q.complete(&d).await.expect("complete");
            settled.insert(d.dedupe_key);
        }
        locked_at = Instant::now();
        let mut held = Vec::new();
        for _ in 0..LOCKED {
            held.push(q.receive(Duration::ZERO, lock_for).await.expect("receive").expect("due"));
        }
        locked = held;
        // The queue (and its connection) is dropped here, with locks outstanding.
    }

    let q = open_file(&path);
    assert_eq!(q.depth().await.expect("depth"), TOTAL - DEAD - COMPLETED, "depth after reopen");
    let dead = q.dead_letters().await.expect("dead_letters");
    assert_eq!(dead.len(), DEAD, "dead letters survive");
    assert!(dead.iter().all(|d| d.reason == "parked before restart" && d.delivery_count == 1), "{dead:?}");

    // Everything not locked is due at once.
    let mut seen = HashSet::new();
    while let Some(d) = q.receive(Duration::ZERO, Duration::from_secs(60)).await.expect("receive") {
        assert_eq!(d.delivery_count, 1, "{} was never delivered before", d.dedupe_key);
        q.complete(&d).await.expect("complete");
        assert!(seen.insert(d.dedupe_key), "delivered twice");
    }
    assert!(locked_at.elapsed() < lock_for, "drain was too slow for this check to be meaningful");
    assert_eq!(seen.len(), TOTAL - DEAD - COMPLETED - LOCKED, "unlocked messages after reopen");

    // The locked ones come back once their locks expire, counted as second deliveries.
    let locked_keys: HashSet<String> = locked.iter().map(|d| d.dedupe_key.clone()).collect();
    for _ in 0..LOCKED {
        let d = q.receive(Duration::from_secs(20), Duration::from_secs(60)).await.expect("receive").expect("back");
        assert!(locked_at.elapsed() >= lock_for, "{} came back before its lock expired", d.dedupe_key);
        assert!(locked_keys.contains(&d.dedupe_key), "{} was not one of the locked ones", d.dedupe_key);
        assert_eq!(d.delivery_count, 2);
        q.complete(&d).await.expect("complete");
        assert!(seen.insert(d.dedupe_key), "delivered twice");
    }
    for stale in &locked {
        assert!(matches!(q.complete(stale).await, Err(QueueError::LockLost(_))), "pre-restart token still valid");
    }

    seen.extend(settled);
    assert_eq!(seen.len(), TOTAL, "every message accounted for");
    assert_eq!(q.depth().await.expect("depth"), 0);
}

/// A row whose body is not JSON (disk corruption, a hand edit) is parked with the reason
/// "corrupt body" instead of wedging or crashing receive.
#[tokio::test]
async fn sqlite_parks_corrupt_rows() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("queue.db");
    let q = open_file(&path);
    q.enqueue(queue_conformance::message("bad", Duration::ZERO)).await.expect("enqueue");
    q.enqueue(queue_conformance::message("good", Duration::ZERO)).await.expect("enqueue");
    {
        let raw = rusqlite::Connection::open(&path).expect("raw open");
        let n = raw.execute("UPDATE messages SET body = '{not json' WHERE dedupe_key = 'bad'", []).expect("corrupt");
        assert_eq!(n, 1);
    }

    let d = q.receive(Duration::ZERO, Duration::from_secs(60)).await.expect("receive").expect("good is due");
    assert_eq!(d.dedupe_key, "good", "the corrupt row ahead of it was skipped");
    q.complete(&d).await.expect("complete");

    let dead = q.dead_letters().await.expect("dead_letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].dedupe_key, "bad");
    assert_eq!(dead[0].reason, "corrupt body");
    assert_eq!(dead[0].delivery_count, 1);
    assert_eq!(dead[0].body, serde_json::Value::String("{not json".to_owned()), "raw text kept for the operator");
    assert_eq!(q.depth().await.expect("depth"), 0);
}

/// Reports messages/s for enqueue + receive + complete of 10,000 messages on a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --ignored --nocapture"]
async fn throughput_report() {
    const N: usize = 10_000;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let q = Arc::new(open_file(&dir.path().join("queue.db")));

    let started = Instant::now();
    for i in 0..N {
        q.enqueue(queue_conformance::message(&format!("t-{i:05}"), Duration::ZERO)).await.expect("enqueue");
    }
    let enqueued = started.elapsed();
    let mut received = 0usize;
    while let Some(d) = q.receive(Duration::ZERO, Duration::from_secs(60)).await.expect("receive") {
        q.complete(&d).await.expect("complete");
        received += 1;
    }
    let total = started.elapsed();
    assert_eq!(received, N);
    let rate = N as f64 / total.as_secs_f64();
    println!(
        "throughput_report: {N} messages enqueue+receive+complete in {:.2}s = {rate:.0} msg/s \
         (enqueue phase {:.2}s, receive+complete phase {:.2}s; single producer, single consumer)",
        total.as_secs_f64(),
        enqueued.as_secs_f64(),
        (total - enqueued).as_secs_f64()
    );

    // Same volume with 4 concurrent workers, which is how the worker pool runs.
    for i in 0..N {
        q.enqueue(queue_conformance::message(&format!("c-{i:05}"), Duration::ZERO)).await.expect("enqueue");
    }
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (q, done) = (Arc::clone(&q), Arc::clone(&done));
            tokio::spawn(async move {
                while let Some(d) = q.receive(Duration::ZERO, Duration::from_secs(60)).await.expect("receive") {
                    q.complete(&d).await.expect("complete");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    assert_eq!(done.load(Ordering::Relaxed), N);
    println!(
        "throughput_report: 4 concurrent workers receive+complete {N} in {:.2}s = {:.0} msg/s",
        started.elapsed().as_secs_f64(),
        N as f64 / started.elapsed().as_secs_f64()
    );
}
