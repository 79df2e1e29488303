//! Conformance suite for [`WorkQueue`] implementations.
//!
//! Every queue backend (embedded SQLite, Service Bus against its fake REST API) must pass
//! the same checks, because the reconcile and vendor workers are written against the
//! trait's documented semantics, not against a backend. The suite therefore uses only the
//! trait: no storage details, no backdoors. Backend-specific properties (surviving a
//! restart, corrupt rows) belong in that backend's own tests.
//!
//! Each check takes a fresh, empty queue and panics with a message naming the violated
//! rule. Include this file from a test crate with
//! `#[path = "support/queue_conformance.rs"] mod queue_conformance;` and either call
//! [`run_all`] or the checks one by one.
//!
//! Timing: the checks use sub-second delays and locks with generous upper bounds so they
//! stay reliable on a loaded CI machine; lower bounds are exact (a message must never be
//! delivered early).
#![allow(dead_code)] // Each including test crate uses a different subset.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use private_link_autopilot::queue::{Delivery, NewMessage, QueueError, WorkQueue};
use serde_json::json;

/// Lock long enough that it never expires during a check.
const LONG_LOCK: Duration = Duration::from_secs(60);
/// Lock used where a check wants it to expire.
const SHORT_LOCK: Duration = Duration::from_millis(400);
/// Upper bound for "should arrive promptly"; only reached when an implementation is broken.
const PATIENCE: Duration = Duration::from_secs(10);

/// Runs every check, each on a queue fresh from `make`.
pub async fn run_all<Q, F, Fut>(make: F)
where
    Q: WorkQueue + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<Q>>,
{
    round_trip(make().await).await;
    delay_is_respected(make().await).await;
    dedupe_collapses_while_waiting(make().await).await;
    dedupe_ignores_locked_message(make().await).await;
    lock_expiry_redelivers(make().await).await;
    abandon_redelivers_at_once(make().await).await;
    dead_letter_parks_message(make().await).await;
    replay_is_idempotent(make().await).await;
    concurrent_receivers_deliver_once(make().await).await;
    receive_times_out_empty(make().await).await;
    receive_wakes_on_enqueue(make().await).await;
    depth_counts_waiting_and_locked(make().await).await;
}

/// A message with a distinctive body.
pub fn message(key: &str, delay: Duration) -> NewMessage {
    NewMessage {
        dedupe_key: key.to_owned(),
        correlation_id: format!("corr-{key}"),
        body: json!({"v": 1, "work": {"kind": "reconcile", "key": key, "nested": [1, 2.5, null, "x"]}}),
        delay,
    }
}

async fn enqueue<Q: WorkQueue>(q: &Q, msg: NewMessage) {
    let key = msg.dedupe_key.clone();
    q.enqueue(msg).await.unwrap_or_else(|e| panic!("enqueue {key}: {e}"));
}

/// Receives a message that must be there (waiting up to [`PATIENCE`]).
async fn must_receive<Q: WorkQueue>(q: &Q, lock_for: Duration, what: &str) -> Delivery {
    match q.receive(PATIENCE, lock_for).await {
        Ok(Some(d)) => d,
        Ok(None) => panic!("{what}: expected a delivery within {PATIENCE:?}, got none"),
        Err(e) => panic!("{what}: receive failed: {e}"),
    }
}

/// Asserts that nothing is receivable within `wait`.
async fn must_be_empty<Q: WorkQueue>(q: &Q, wait: Duration, what: &str) {
    match q.receive(wait, LONG_LOCK).await {
        Ok(None) => {}
        Ok(Some(d)) => panic!("{what}: expected no delivery, got {} ({})", d.message_id, d.dedupe_key),
        Err(e) => panic!("{what}: receive failed: {e}"),
    }
}

async fn depth<Q: WorkQueue>(q: &Q) -> usize {
    q.depth().await.unwrap_or_else(|e| panic!("depth: {e}"))
}

fn assert_lock_lost(result: Result<(), QueueError>, what: &str) {
    match result {
        Err(QueueError::LockLost(_)) => {}
        other => panic!("{what}: expected LockLost, got {other:?}"),
    }
}

/// Enqueue, receive, complete: every field survives and the first delivery counts 1.
pub async fn round_trip<Q: WorkQueue + 'static>(q: Arc<Q>) {
    let before = SystemTime::now() - Duration::from_secs(1);
    let sent = message("round-trip", Duration::ZERO);
    enqueue(&*q, sent.clone()).await;
    let after = SystemTime::now() + Duration::from_secs(1);
    assert_eq!(depth(&*q).await, 1, "round_trip: depth after one enqueue");

    let d = must_receive(&*q, LONG_LOCK, "round_trip").await;
    assert_eq!(d.dedupe_key, sent.dedupe_key, "round_trip: dedupe_key");
    assert_eq!(d.correlation_id, sent.correlation_id, "round_trip: correlation_id");
    assert_eq!(d.body, sent.body, "round_trip: body");
    assert_eq!(d.delivery_count, 1, "round_trip: first delivery counts 1");
    assert!(!d.message_id.is_empty() && !d.lock_token.is_empty(), "round_trip: ids present");
    assert!(before <= d.enqueued_at && d.enqueued_at <= after, "round_trip: enqueued_at {:?}", d.enqueued_at);

    must_be_empty(&*q, Duration::from_millis(100), "round_trip: a locked message is not handed out twice").await;
    q.complete(&d).await.unwrap_or_else(|e| panic!("round_trip: complete: {e}"));
    assert_eq!(depth(&*q).await, 0, "round_trip: depth after complete");
    assert_lock_lost(q.complete(&d).await, "round_trip: completing twice");
    must_be_empty(&*q, Duration::from_millis(100), "round_trip: completed message is gone").await;
}

/// A delayed message is invisible until its due time, then receivable.
pub async fn delay_is_respected<Q: WorkQueue + 'static>(q: Arc<Q>) {
    let delay = Duration::from_millis(600);
    let started = Instant::now();
    enqueue(&*q, message("delayed", delay)).await;
    assert_eq!(depth(&*q).await, 1, "delay: a delayed message counts in depth");
    must_be_empty(&*q, Duration::ZERO, "delay: not receivable right away").await;

    let d = must_receive(&*q, LONG_LOCK, "delay: receivable once due").await;
    let waited = started.elapsed();
    assert!(waited >= delay, "delay: delivered after {waited:?}, before the {delay:?} delay");
    assert_eq!(d.dedupe_key, "delayed");
    q.complete(&d).await.unwrap_or_else(|e| panic!("delay: complete: {e}"));
}

/// While a message waits, a second one with the same key is absorbed and the sooner due
/// time wins, in either order.
pub async fn dedupe_collapses_while_waiting<Q: WorkQueue + 'static>(q: Arc<Q>) {
    let far = Duration::from_secs(3600);

    // Later first, then sooner: the waiting message becomes due now.
    enqueue(&*q, message("later-then-sooner", far)).await;
    enqueue(&*q, message("later-then-sooner", Duration::ZERO)).await;
    assert_eq!(depth(&*q).await, 1, "dedupe: second enqueue with the same key must not add a copy");
    let started = Instant::now();
    let d = must_receive(&*q, LONG_LOCK, "dedupe: the earlier due time must win").await;
    assert!(started.elapsed() < Duration::from_secs(5), "dedupe: took {:?}", started.elapsed());
    assert_eq!(d.dedupe_key, "later-then-sooner");
    q.complete(&d).await.unwrap_or_else(|e| panic!("dedupe: complete: {e}"));
    assert_eq!(depth(&*q).await, 0, "dedupe: nothing left after completing the collapsed message");

    // Sooner first, then later: still one message, still due now.
    enqueue(&*q, message("sooner-then-later", Duration::ZERO)).await;
    enqueue(&*q, message("sooner-then-later", far)).await;
    assert_eq!(depth(&*q).await, 1, "dedupe: later duplicate must not add a copy");
    let d = must_receive(&*q, LONG_LOCK, "dedupe: the sooner message stays due").await;
    q.complete(&d).await.unwrap_or_else(|e| panic!("dedupe: complete: {e}"));
    assert_eq!(depth(&*q).await, 0, "dedupe: the later duplicate was not kept");

    // Different keys never collapse.
    enqueue(&*q, message("key-a", Duration::ZERO)).await;
    enqueue(&*q, message("key-b", Duration::ZERO)).await;
    assert_eq!(depth(&*q).await, 2, "dedupe: distinct keys are distinct messages");
}

/// A message that is locked (in flight) does not absorb a new one with its key: the new
/// fact arrived after the worker started and needs its own delivery.
pub async fn dedupe_ignores_locked_message<Q: WorkQueue + 'static>(q: Arc<Q>) {
    enqueue(&*q, message("in-flight", Duration::ZERO)).await;
    let first = must_receive(&*q, LONG_LOCK, "dedupe-locked: first").await;
    enqueue(&*q, message("in-flight", Duration::ZERO)).await;
    assert_eq!(depth(&*q).await, 2, "dedupe-locked: a locked message must not absorb a new enqueue");

    let second = must_receive(&*q, LONG_LOCK, "dedupe-locked: the new message is receivable").await;
    assert_eq!(second.dedupe_key, "in-flight");
    assert_ne!(second.message_id, first.message_id, "dedupe-locked: must be a different message");
    assert_eq!(second.delivery_count, 1, "dedupe-locked: new message's first delivery");
    q.complete(&first).await.unwrap_or_else(|e| panic!("dedupe-locked: complete first: {e}"));
    q.complete(&second).await.unwrap_or_else(|e| panic!("dedupe-locked: complete second: {e}"));
    assert_eq!(depth(&*q).await, 0);
}

/// The "worker killed between the vendor call and completion" case: the lock expires, the
/// message comes back with delivery_count 2, and the old holder can no longer settle it.
pub async fn lock_expiry_redelivers<Q: WorkQueue + 'static>(q: Arc<Q>) {
    enqueue(&*q, message("crashy", Duration::ZERO)).await;
    let started = Instant::now();
    let stale = must_receive(&*q, SHORT_LOCK, "lock-expiry: first delivery").await;
    must_be_empty(&*q, Duration::ZERO, "lock-expiry: locked message is not receivable").await;

    let again = must_receive(&*q, LONG_LOCK, "lock-expiry: redelivery after the lock expired").await;
    assert!(started.elapsed() >= SHORT_LOCK, "lock-expiry: redelivered after {:?}", started.elapsed());
    assert_eq!(again.message_id, stale.message_id, "lock-expiry: same message");
    assert_eq!(again.delivery_count, 2, "lock-expiry: second delivery counts 2");
    assert_ne!(again.lock_token, stale.lock_token, "lock-expiry: a new lock token");
    assert_eq!(again.body, stale.body, "lock-expiry: same body");

    assert_lock_lost(q.complete(&stale).await, "lock-expiry: complete with the old token");
    assert_lock_lost(q.abandon(&stale).await, "lock-expiry: abandon with the old token");
    assert_lock_lost(q.dead_letter(&stale, "late").await, "lock-expiry: dead_letter with the old token");
    assert_eq!(depth(&*q).await, 1, "lock-expiry: stale settles changed nothing");

    q.complete(&again).await.unwrap_or_else(|e| panic!("lock-expiry: complete with the new token: {e}"));
    assert_eq!(depth(&*q).await, 0);
}

/// Abandon makes the message receivable at once and keeps counting deliveries.
pub async fn abandon_redelivers_at_once<Q: WorkQueue + 'static>(q: Arc<Q>) {
    enqueue(&*q, message("abandoned", Duration::ZERO)).await;
    let first = must_receive(&*q, LONG_LOCK, "abandon: first delivery").await;
    q.abandon(&first).await.unwrap_or_else(|e| panic!("abandon: {e}"));

    let started = Instant::now();
    let again = must_receive(&*q, LONG_LOCK, "abandon: redelivery").await;
    assert!(started.elapsed() < Duration::from_secs(5), "abandon: redelivery took {:?}", started.elapsed());
    assert_eq!(again.message_id, first.message_id, "abandon: same message");
    assert_eq!(again.delivery_count, 2, "abandon: delivery count is kept and incremented");
    assert_lock_lost(q.complete(&first).await, "abandon: the abandoned delivery's token is dead");
    q.complete(&again).await.unwrap_or_else(|e| panic!("abandon: complete: {e}"));
}

/// Dead-lettered messages leave the queue and are listed, newest first, with the reason
/// and the delivery count.
pub async fn dead_letter_parks_message<Q: WorkQueue + 'static>(q: Arc<Q>) {
    enqueue(&*q, message("poison-1", Duration::ZERO)).await;
    let d1 = must_receive(&*q, LONG_LOCK, "dead-letter: first").await;
    q.abandon(&d1).await.unwrap_or_else(|e| panic!("dead-letter: abandon: {e}"));
    let d1 = must_receive(&*q, LONG_LOCK, "dead-letter: first again").await;
    let before = SystemTime::now() - Duration::from_secs(1);
    q.dead_letter(&d1, "vendor rejected the allowlist entry: 403 Forbidden").await.unwrap_or_else(|e| panic!("{e}"));
    assert_lock_lost(q.complete(&d1).await, "dead-letter: completing a dead-lettered delivery");

    // Dead-letter timestamps may have coarse resolution; make the order unambiguous.
    tokio::time::sleep(Duration::from_millis(50)).await;
    enqueue(&*q, message("poison-2", Duration::ZERO)).await;
    let d2 = must_receive(&*q, LONG_LOCK, "dead-letter: second").await;
    q.dead_letter(&d2, "unknown vendor").await.unwrap_or_else(|e| panic!("{e}"));
    let after = SystemTime::now() + Duration::from_secs(1);

    must_be_empty(&*q, Duration::from_millis(200), "dead-letter: parked messages are not receivable").await;
    assert_eq!(depth(&*q).await, 0, "dead-letter: parked messages do not count in depth");

    let dead = q.dead_letters().await.unwrap_or_else(|e| panic!("dead_letters: {e}"));
    assert_eq!(dead.len(), 2, "dead-letter: both listed: {dead:?}");
    assert_eq!(dead[0].dedupe_key, "poison-2", "dead-letter: newest first");
    assert_eq!(dead[0].reason, "unknown vendor");
    assert_eq!(dead[0].delivery_count, 1);
    let first = &dead[1];
    assert_eq!(first.dedupe_key, "poison-1");
    assert_eq!(first.correlation_id, "corr-poison-1");
    assert_eq!(first.body, message("poison-1", Duration::ZERO).body);
    assert_eq!(first.reason, "vendor rejected the allowlist entry: 403 Forbidden");
    assert_eq!(first.delivery_count, 2, "dead-letter: delivery count at the time it was parked");
    assert!(
        before <= first.dead_lettered_at && first.dead_lettered_at <= after,
        "dead-letter: dead_lettered_at {:?}",
        first.dead_lettered_at
    );
}

/// Replay puts a dead-lettered message back once; a second replay of the same id, or an
/// unknown id, is NotFound.
pub async fn replay_is_idempotent<Q: WorkQueue + 'static>(q: Arc<Q>) {
    enqueue(&*q, message("replayed", Duration::ZERO)).await;
    let d = must_receive(&*q, LONG_LOCK, "replay: first").await;
    q.abandon(&d).await.unwrap_or_else(|e| panic!("replay: abandon: {e}"));
    let d = must_receive(&*q, LONG_LOCK, "replay: second").await;
    q.dead_letter(&d, "transient outage, replay later").await.unwrap_or_else(|e| panic!("{e}"));

    let dead = q.dead_letters().await.unwrap_or_else(|e| panic!("dead_letters: {e}"));
    assert_eq!(dead.len(), 1);
    let id = dead[0].message_id.clone();

    q.replay(&id).await.unwrap_or_else(|e| panic!("replay: {e}"));
    match q.replay(&id).await {
        Err(QueueError::NotFound(_)) => {}
        other => panic!("replay: second replay of {id} must be NotFound, got {other:?}"),
    }
    match q.replay("no-such-message").await {
        Err(QueueError::NotFound(_)) => {}
        other => panic!("replay: unknown id must be NotFound, got {other:?}"),
    }
    assert!(q.dead_letters().await.unwrap_or_else(|e| panic!("{e}")).is_empty(), "replay: no longer dead");
    assert_eq!(depth(&*q).await, 1, "replay: exactly one copy is back");

    // The id may change on backends that re-send (Service Bus); the content may not.
    let back = must_receive(&*q, LONG_LOCK, "replay: receivable again").await;
    assert_eq!(back.dedupe_key, "replayed");
    assert_eq!(back.correlation_id, "corr-replayed");
    assert_eq!(back.body, message("replayed", Duration::ZERO).body);
    assert_eq!(back.delivery_count, 1, "replay: delivery count starts over");
    q.complete(&back).await.unwrap_or_else(|e| panic!("replay: complete: {e}"));
    must_be_empty(&*q, Duration::from_millis(100), "replay: only one copy").await;
}

/// Many receivers racing over many messages: each message is delivered exactly once when
/// every delivery is completed.
pub async fn concurrent_receivers_deliver_once<Q: WorkQueue + 'static>(q: Arc<Q>) {
    const MESSAGES: usize = 500;
    const RECEIVERS: usize = 8;
    for i in 0..MESSAGES {
        enqueue(&*q, message(&format!("m-{i:04}"), Duration::ZERO)).await;
    }
    assert_eq!(depth(&*q).await, MESSAGES);

    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..RECEIVERS {
        let (q, done) = (Arc::clone(&q), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while done.load(Ordering::SeqCst) < MESSAGES {
                match q.receive(Duration::from_millis(200), LONG_LOCK).await {
                    Ok(Some(d)) => {
                        q.complete(&d).await.unwrap_or_else(|e| panic!("worker {worker}: complete: {e}"));
                        done.fetch_add(1, Ordering::SeqCst);
                        seen.push((d.dedupe_key, d.delivery_count));
                    }
                    Ok(None) => {}
                    Err(e) => panic!("worker {worker}: receive: {e}"),
                }
            }
            seen
        }));
    }
    let all = tokio::time::timeout(Duration::from_secs(120), async {
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap_or_else(|e| panic!("receiver task failed: {e}")));
        }
        all
    })
    .await
    .unwrap_or_else(|_| panic!("concurrent: {MESSAGES} messages not drained in 120s"));

    let mut counts: HashMap<String, usize> = HashMap::new();
    for (key, delivery_count) in &all {
        assert_eq!(*delivery_count, 1, "concurrent: {key} was delivered before");
        *counts.entry(key.clone()).or_default() += 1;
    }
    assert_eq!(all.len(), MESSAGES, "concurrent: total deliveries");
    assert_eq!(counts.len(), MESSAGES, "concurrent: distinct messages");
    assert!(counts.values().all(|&n| n == 1), "concurrent: some message was delivered twice");
    assert_eq!(depth(&*q).await, 0);
}

/// With nothing due, receive returns None after about `wait`, not before and not much later.
pub async fn receive_times_out_empty<Q: WorkQueue + 'static>(q: Arc<Q>) {
    let wait = Duration::from_millis(400);
    let started = Instant::now();
    must_be_empty(&*q, wait, "timeout: empty queue").await;
    let took = started.elapsed();
    // Allow a few ms of timer and clock rounding below `wait`.
    assert!(took + Duration::from_millis(5) >= wait, "timeout: returned after {took:?}, before {wait:?}");
    assert!(took < wait + Duration::from_secs(3), "timeout: returned after {took:?}");

    // A message due later than `wait` does not cut the wait short either.
    enqueue(&*q, message("not-yet", Duration::from_secs(3600))).await;
    let started = Instant::now();
    must_be_empty(&*q, wait, "timeout: only a far-future message").await;
    assert!(started.elapsed() + Duration::from_millis(5) >= wait, "timeout: returned early");
}

/// A receiver waiting on an empty queue wakes as soon as a message is enqueued.
pub async fn receive_wakes_on_enqueue<Q: WorkQueue + 'static>(q: Arc<Q>) {
    let wait = Duration::from_secs(30);
    let producer = {
        let q = Arc::clone(&q);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            enqueue(&*q, message("wake-up", Duration::ZERO)).await;
        })
    };
    let started = Instant::now();
    let d = match q.receive(wait, LONG_LOCK).await {
        Ok(Some(d)) => d,
        other => panic!("wake: expected the enqueued message, got {other:?}"),
    };
    let took = started.elapsed();
    // The enqueue happens at ~300 ms; a receiver that merely re-polls every second or so
    // (instead of being woken) shows up here.
    assert!(took < Duration::from_millis(900), "wake: receive returned after {took:?}, not woken by the enqueue");
    assert_eq!(d.dedupe_key, "wake-up");
    producer.await.unwrap_or_else(|e| panic!("producer task failed: {e}"));
    q.complete(&d).await.unwrap_or_else(|e| panic!("wake: complete: {e}"));
}

/// depth counts waiting (including delayed) and locked messages, not dead-lettered ones.
pub async fn depth_counts_waiting_and_locked<Q: WorkQueue + 'static>(q: Arc<Q>) {
    assert_eq!(depth(&*q).await, 0, "depth: empty queue");
    enqueue(&*q, message("d-1", Duration::ZERO)).await;
    enqueue(&*q, message("d-2", Duration::ZERO)).await;
    enqueue(&*q, message("d-3", Duration::from_secs(3600))).await;
    assert_eq!(depth(&*q).await, 3, "depth: waiting and delayed");

    let a = must_receive(&*q, LONG_LOCK, "depth: a").await;
    assert_eq!(depth(&*q).await, 3, "depth: a locked message still counts");
    q.complete(&a).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(depth(&*q).await, 2, "depth: after complete");

    let b = must_receive(&*q, LONG_LOCK, "depth: b").await;
    q.dead_letter(&b, "parked").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(depth(&*q).await, 1, "depth: dead letters do not count");

    // Replay by the id the dead-letter listing reports (a backend may re-key on park).
    let dead = q.dead_letters().await.unwrap_or_else(|e| panic!("dead_letters: {e}"));
    let parked = dead.first().unwrap_or_else(|| panic!("depth: the dead letter is listed"));
    q.replay(&parked.message_id).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(depth(&*q).await, 2, "depth: a replayed message counts again");
}
