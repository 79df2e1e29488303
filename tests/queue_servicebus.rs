//! The Service Bus work queue against the local fake of the Service Bus REST API, in both
//! auth modes (SAS through `azure_messaging_servicebus`, bearer token through the same
//! requests), plus the trigger path (`POST /WorkQueue` invocations).
//!
//! The shared conformance suite runs check by check. Two checks are replaced by Service
//! Bus variants (see `src/queue/servicebus/mod.rs`, "Duplicate detection"):
//! `dedupe_collapses_while_waiting` (on Service Bus the *first* copy's due time stays, and
//! only an identical body collapses) and `dedupe_ignores_locked_message` (a *different*
//! body — the next attempt — is accepted while the previous one is locked; an identical
//! one is dropped by duplicate detection). `lock_expiry_redelivers` runs on a queue whose
//! entity `LockDuration` is the suite's short lock, because Service Bus locks for the
//! entity's duration, not the receiver's `lock_for`.

#[path = "support/queue_conformance.rs"]
mod queue_conformance;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use private_link_autopilot::arm::credential::{Secret, StaticToken};
use private_link_autopilot::backoff::Backoff;
use private_link_autopilot::model::ResourceId;
use private_link_autopilot::queue::servicebus::{
    ServiceBusAuth, ServiceBusCredentials, ServiceBusQueue, ServiceBusSettings,
};
use private_link_autopilot::queue::trigger::{self, TriggerQueue};
use private_link_autopilot::queue::worker::{RetryPolicy, Settlement};
use private_link_autopilot::queue::{Delivery, NewMessage, QueueError, WorkQueue, work};
use private_link_autopilot::reconcile::Outcome;
use private_link_autopilot::sandbox::fake_servicebus::{FakeQueueOptions, FakeServiceBus, FakeServiceBusOptions};
use serde_json::{Value, json};

const QUEUES: usize = 16;
const SHORT_LOCK: Duration = Duration::from_millis(400);
static NEXT_QUEUE: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone, Copy, Debug)]
enum Mode {
    Sas,
    Bearer,
}

/// A fake with `q0..qN` (60 s lock) and `short0..shortN` (400 ms lock), each with its
/// `-deadletter` companion.
async fn fake() -> FakeServiceBus {
    let mut queues = Vec::new();
    for i in 0..QUEUES {
        for name in [format!("q{i}"), format!("short{i}")] {
            let mut q = FakeQueueOptions::new(&name);
            if name.starts_with("short") {
                q.lock_duration = SHORT_LOCK;
            }
            queues.push(q);
            queues.push(FakeQueueOptions::new(&format!("{name}-deadletter")));
        }
    }
    FakeServiceBus::start(FakeServiceBusOptions { queues, ..Default::default() }).await.expect("start fake")
}

fn settings(fake: &FakeServiceBus, queue: &str, mode: Mode) -> ServiceBusSettings {
    ServiceBusSettings {
        namespace: fake.namespace().to_owned(),
        queue: queue.to_owned(),
        dead_letter_queue: String::new(),
        auth: match mode {
            Mode::Sas => ServiceBusAuth::Sas { key_name: fake.key_name().to_owned(), key_env: "UNUSED".into() },
            Mode::Bearer => ServiceBusAuth::ManagedIdentity { client_id: String::new() },
        },
        endpoint_override: fake.base_url().to_owned(),
        lock_secs: 60,
    }
}

fn credentials(fake: &FakeServiceBus, mode: Mode) -> ServiceBusCredentials {
    match mode {
        Mode::Sas => ServiceBusCredentials::SasKey { key_name: fake.key_name().to_owned(), key: fake.key().clone() },
        Mode::Bearer => {
            let token = fake.bearer_token().cloned().expect("fake has a bearer token");
            ServiceBusCredentials::Tokens(Arc::new(StaticToken(token)))
        }
    }
}

fn queue_on(fake: &FakeServiceBus, name: &str, mode: Mode) -> Arc<ServiceBusQueue> {
    Arc::new(ServiceBusQueue::connect(settings(fake, name, mode), credentials(fake, mode)).expect("connect"))
}

fn fresh(fake: &FakeServiceBus, prefix: &str, mode: Mode) -> Arc<ServiceBusQueue> {
    let i = NEXT_QUEUE.fetch_add(1, Ordering::SeqCst) % QUEUES;
    queue_on(fake, &format!("{prefix}{i}"), mode)
}

macro_rules! conformance {
    ($($check:ident => $prefix:literal),* $(,)?) => {
        mod sas {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let fake = fake().await;
                    queue_conformance::$check(fresh(&fake, $prefix, Mode::Sas)).await;
                }
            )*
        }
        mod bearer {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let fake = fake().await;
                    queue_conformance::$check(fresh(&fake, $prefix, Mode::Bearer)).await;
                    assert!(fake.requests().iter().all(|r| r.auth == "bearer"), "every request used the bearer token");
                }
            )*
        }
    };
}

conformance!(
    round_trip => "q",
    delay_is_respected => "q",
    lock_expiry_redelivers => "short",
    abandon_redelivers_at_once => "q",
    dead_letter_parks_message => "q",
    replay_is_idempotent => "q",
    concurrent_receivers_deliver_once => "q",
    receive_times_out_empty => "q",
    receive_wakes_on_enqueue => "q",
    depth_counts_waiting_and_locked => "q",
);

fn attempt_message(key: &str, attempt: u32, delay: Duration) -> NewMessage {
    NewMessage {
        dedupe_key: key.to_owned(),
        correlation_id: format!("corr-{key}"),
        body: json!({"v": 1, "work": {"kind": "reconcile", "key": key, "attempt": attempt}}),
        delay,
    }
}

/// Service Bus variant of `dedupe_collapses_while_waiting`.
#[tokio::test]
async fn duplicate_detection_collapses_identical_messages_first_due_time_wins() {
    let fake = fake().await;
    let q = fresh(&fake, "q", Mode::Sas);
    q.enqueue(attempt_message("k", 1, Duration::from_secs(3600))).await.expect("enqueue");
    q.enqueue(attempt_message("k", 1, Duration::ZERO)).await.expect("duplicate is accepted (201)");
    assert_eq!(q.depth().await.expect("depth"), 1, "identical body collapses");
    assert!(q.receive(Duration::ZERO, Duration::ZERO).await.expect("receive").is_none(), "the first due time stays");
    q.enqueue(attempt_message("other", 1, Duration::ZERO)).await.expect("enqueue");
    q.enqueue(attempt_message("k", 2, Duration::ZERO)).await.expect("enqueue");
    assert_eq!(q.depth().await.expect("depth"), 3, "another key or another attempt is a new message");
    let sends =
        fake.requests().into_iter().filter(|r| r.method == "POST" && r.path_and_query.ends_with("/messages")).count();
    assert_eq!(sends, 4, "every enqueue reached the service");
}

/// Service Bus variant of `dedupe_ignores_locked_message`: the worker's next attempt is
/// never swallowed, even within the duplicate-detection window.
#[tokio::test]
async fn next_attempt_is_accepted_while_the_previous_is_locked() {
    let fake = fake().await;
    let q = fresh(&fake, "q", Mode::Sas);
    q.enqueue(attempt_message("in-flight", 1, Duration::ZERO)).await.expect("enqueue");
    let first = q.receive(Duration::from_secs(5), Duration::ZERO).await.expect("receive").expect("first");
    q.enqueue(attempt_message("in-flight", 2, Duration::ZERO)).await.expect("enqueue next attempt");
    assert_eq!(q.depth().await.expect("depth"), 2);
    let second = q.receive(Duration::from_secs(5), Duration::ZERO).await.expect("receive").expect("second");
    assert_ne!(second.message_id, first.message_id);
    assert_eq!(second.body["work"]["attempt"], 2);
    q.complete(&first).await.expect("complete");
    q.complete(&second).await.expect("complete");
    // The documented loss: an identical body within the window is dropped.
    q.enqueue(attempt_message("in-flight", 1, Duration::ZERO)).await.expect("enqueue");
    assert_eq!(q.depth().await.expect("depth"), 0, "same body within the window is a duplicate");
}

/// The wire shape: BrokerProperties JSON with MessageId/CorrelationId/Label and an RFC 2616
/// ScheduledEnqueueTimeUtc, the dedupe key as a quoted custom property, JSON content type,
/// the crate's SAS format; nothing secret in the log.
#[tokio::test]
async fn broker_properties_and_sas_on_the_wire() {
    let fake = fake().await;
    let q = fresh(&fake, "q", Mode::Sas);
    q.enqueue(attempt_message("wire", 1, Duration::from_secs(90))).await.expect("enqueue");
    let sent = fake.requests().into_iter().find(|r| r.method == "POST").expect("a send");
    assert_eq!(sent.status, 201);
    assert_eq!(sent.auth, format!("sas:{}", fake.key_name()));
    assert_eq!(sent.content_type.as_deref(), Some("application/json"));
    let bp: Value = serde_json::from_str(sent.broker_properties.as_deref().expect("BrokerProperties")).expect("json");
    assert_eq!(bp["MessageId"].as_str().map(str::len), Some(32));
    assert_eq!(bp["CorrelationId"], "corr-wire");
    assert_eq!(bp["Label"], "work");
    let at = bp["ScheduledEnqueueTimeUtc"].as_str().expect("scheduled");
    assert!(at.ends_with(" GMT") && httpdate::parse_http_date(at).is_ok(), "RFC 2616 date: {at}");
    assert!(
        sent.custom_properties.contains(&("dedupekey".to_owned(), "\"wire\"".to_owned())),
        "{:?}",
        sent.custom_properties
    );
    let logged = format!("{:?}", fake.requests());
    assert!(
        !logged.contains(fake.key().expose()) && !logged.contains("SharedAccessSignature"),
        "no secrets in the log"
    );
    assert!(!format!("{q:?}").contains(fake.key().expose()));

    let snap = fake.queue_snapshot(q.settings().queue.as_str()).expect("snapshot");
    assert_eq!(snap.active.len(), 1);
    assert_eq!(snap.active[0].correlation_id.as_deref(), Some("corr-wire"));
}

async fn expect_config_error(q: &ServiceBusQueue, what: &str) {
    match q.enqueue(attempt_message("x", 1, Duration::ZERO)).await {
        Err(QueueError::Config(msg)) => assert!(msg.contains("401"), "{what}: {msg}"),
        other => panic!("{what}: expected a 401 Config error, got {other:?}"),
    }
}

#[tokio::test]
async fn rejects_wrong_key_wrong_key_name_and_bad_bearer() {
    let fake = fake().await;
    let s = settings(&fake, "q0", Mode::Sas);
    let wrong_key = ServiceBusCredentials::SasKey { key_name: fake.key_name().to_owned(), key: Secret::new("nope") };
    expect_config_error(&ServiceBusQueue::connect(s.clone(), wrong_key).expect("connect"), "wrong key").await;
    let wrong_name = ServiceBusCredentials::SasKey { key_name: "other".into(), key: fake.key().clone() };
    expect_config_error(&ServiceBusQueue::connect(s.clone(), wrong_name).expect("connect"), "wrong key name").await;
    let bad_bearer = ServiceBusCredentials::Tokens(Arc::new(StaticToken(Secret::new("forged"))));
    expect_config_error(&ServiceBusQueue::connect(s, bad_bearer).expect("connect"), "bad bearer").await;
    assert!(fake.requests().iter().all(|r| r.status == 401));
    assert!(fake.queue_snapshot("q0").expect("q0").active.is_empty());
}

/// Expired tokens and tokens for another resource, built by hand in the crate's format.
#[tokio::test]
async fn rejects_expired_and_misdirected_sas() {
    use base64::Engine as _;
    use hmac::Mac as _;
    let fake = fake().await;
    let sign = |resource: &str, se: u64| {
        let sr: String = url::form_urlencoded::byte_serialize(resource.as_bytes()).collect();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(fake.key().expose().as_bytes()).expect("hmac");
        mac.update(format!("{sr}\n{se}").as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let sig: String = url::form_urlencoded::byte_serialize(sig.as_bytes()).collect();
        format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn={}", fake.key_name())
    };
    let base = format!("https://{}.servicebus.windows.net", fake.namespace());
    let future = work::now_unix() + 3600;
    let client = reqwest::Client::new();
    let post = |auth: String| {
        client.post(format!("{}/q0/messages", fake.base_url())).header("authorization", auth).body("{}").send()
    };
    let ok = post(sign(&format!("{base}/q0/messages"), future)).await.expect("send");
    assert_eq!(ok.status().as_u16(), 201, "a valid token works");
    let ns_wide = post(sign(&base, future)).await.expect("send");
    assert_eq!(ns_wide.status().as_u16(), 201, "a namespace-wide token covers the queue");
    let expired = post(sign(&format!("{base}/q0/messages"), work::now_unix() - 10)).await.expect("send");
    assert_eq!(expired.status().as_u16(), 401, "expired");
    let other = post(sign(&format!("{base}/q1/messages"), future)).await.expect("send");
    assert_eq!(other.status().as_u16(), 401, "token for another entity");
    let unknown = client
        .post(format!("{}/nope/messages", fake.base_url()))
        .header("authorization", sign(&format!("{base}/nope/messages"), future))
        .send()
        .await
        .expect("send");
    assert_eq!(unknown.status().as_u16(), 410, "unknown entity");
}

/// Ten abandons (the host's answer to non-2xx) move the message to `$DeadLetterQueue` with
/// MaxDeliveryCountExceeded; `dead_letters` lists it and `replay` brings it back.
#[tokio::test]
async fn broker_dead_letters_after_max_deliveries() {
    let fake = fake().await;
    let q = fresh(&fake, "q", Mode::Sas);
    q.enqueue(attempt_message("poison", 1, Duration::ZERO)).await.expect("enqueue");
    for n in 1..=10 {
        let d = q.receive(Duration::from_secs(5), Duration::ZERO).await.expect("receive").expect("delivery");
        assert_eq!(d.delivery_count, n);
        q.abandon(&d).await.expect("abandon");
    }
    assert!(q.receive(Duration::ZERO, Duration::ZERO).await.expect("receive").is_none(), "gone from the queue");
    let snap = fake.queue_snapshot(q.settings().queue.as_str()).expect("snapshot");
    assert_eq!(snap.dead_letter.len(), 1, "in $DeadLetterQueue");
    let dead = q.dead_letters().await.expect("list");
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.starts_with("MaxDeliveryCountExceeded"), "{}", dead[0].reason);
    assert_eq!(dead[0].dedupe_key, "poison");
    assert_eq!(dead[0].delivery_count, 10);
    q.replay(&dead[0].message_id).await.expect("replay");
    let back = q.receive(Duration::from_secs(5), Duration::ZERO).await.expect("receive").expect("replayed");
    assert_eq!(back.delivery_count, 1);
    assert_eq!(back.body, attempt_message("poison", 1, Duration::ZERO).body);
}

#[tokio::test]
async fn injected_faults_are_unavailable_then_recover() {
    let fake = fake().await;
    let q = fresh(&fake, "q", Mode::Sas);
    for code in [500, 503, 429] {
        fake.fail_next(1, code);
        match q.enqueue(attempt_message("f", 1, Duration::ZERO)).await {
            Err(QueueError::Unavailable(msg)) => assert!(msg.contains(&code.to_string()), "{msg}"),
            other => panic!("{code}: expected Unavailable, got {other:?}"),
        }
    }
    q.enqueue(attempt_message("f", 1, Duration::ZERO)).await.expect("recovered");
    assert_eq!(q.depth().await.expect("depth"), 1);
}

// ---------------------------------------------------------------- trigger path

const PE: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Network/privateEndpoints/pe1";

fn policy() -> RetryPolicy {
    RetryPolicy {
        backoff: Backoff::new(Duration::from_secs(10), Duration::from_secs(300)),
        window: Duration::from_secs(3600),
        max_attempts: 50,
        recheck_window: Duration::from_secs(3600),
    }
}

fn envelope(attempt: u32) -> Value {
    let id = ResourceId::parse_private_endpoint(PE).expect("pe id");
    work::reconcile_retry(&id, attempt, work::now_unix(), "dns not ready", Duration::ZERO).body
}

/// An invocation as the host sends it: body double-encoded, metadata per §1.6.
fn invocation(data: Value) -> Vec<u8> {
    json!({
        "Data": {"message": data},
        "Metadata": {
            "DeliveryCount": "1",
            "MessageId": "\"m-1\"",
            "LockToken": "\"lock-1\"",
            "CorrelationId": "\"corr-1\"",
            "EnqueuedTimeUtc": "2023-10-12T20:13:49",
            "UserProperties": {"DedupeKey": "reconcile:pe1"},
            "ApplicationProperties": {"DedupeKey": "reconcile:pe1"},
            "v": "1",
            "sys": {"MethodName": "WorkQueue", "UtcNow": "2023-10-12T20:13:49.64Z", "RandGuid": "x"}
        }
    })
    .to_string()
    .into_bytes()
}

fn double_encoded(body: &Value) -> Value {
    Value::String(Value::String(body.to_string()).to_string())
}

#[test]
fn trigger_parses_the_fixture_and_host_encodings() {
    let fixture = support::fixture_json("functions/ch-servicebus-trigger-request.azfunc-test.json");
    let req = private_link_autopilot::intake::protocol::InvocationRequest::from_value(fixture).expect("request");
    let m = trigger::parse_message(&req, "queue");
    assert_eq!(m.unreadable, None);
    assert_eq!(m.delivery.body, json!({"message": "hello", "number": 2}));
    assert_eq!(m.delivery.message_id, "4e773554-f6b7-4ea2-b07d-4c5fd5aba741");
    assert_eq!(m.delivery.lock_token, "4e773554-f6b7-4ea2-b07d-4c5fd5aba741");
    assert_eq!(m.delivery.delivery_count, 1);
    assert_eq!(m.delivery.enqueued_at, std::time::UNIX_EPOCH + Duration::from_secs(1_697_141_629));

    let body = envelope(3);
    let parse = |data: Value| {
        let req =
            private_link_autopilot::intake::protocol::InvocationRequest::parse(&invocation(data)).expect("request");
        trigger::parse_message(&req, trigger::MESSAGE_BINDING)
    };
    use base64::Engine as _;
    for data in [
        double_encoded(&body),
        Value::String(body.to_string()),
        Value::String(base64::engine::general_purpose::STANDARD.encode(body.to_string())),
    ] {
        let m = parse(data);
        assert_eq!(m.unreadable, None);
        assert_eq!(m.delivery.body, body);
        assert_eq!(m.delivery.dedupe_key, "reconcile:pe1");
        assert_eq!(m.delivery.correlation_id, "corr-1");
    }
}

/// Records what the trigger path sent instead of sending it; can be told to fail.
#[derive(Default, Debug)]
struct Recorder {
    scheduled: std::sync::Mutex<Vec<NewMessage>>,
    parked: std::sync::Mutex<Vec<(Delivery, String)>>,
    fail: bool,
}

#[async_trait::async_trait]
impl TriggerQueue for Recorder {
    async fn schedule(&self, msg: NewMessage) -> Result<(), QueueError> {
        if self.fail {
            return Err(QueueError::Unavailable("injected".into()));
        }
        self.scheduled.lock().expect("lock").push(msg);
        Ok(())
    }
    async fn park(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError> {
        if self.fail {
            return Err(QueueError::Unavailable("injected".into()));
        }
        self.parked.lock().expect("lock").push((delivery.clone(), reason.to_owned()));
        Ok(())
    }
}

#[tokio::test]
async fn hostile_invocations_are_parked_with_a_reason_never_a_panic() {
    let good = envelope(1);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bad base64", invocation(json!("!!!not-base64@@")), "not JSON"),
        ("non-JSON text", invocation(json!("\"hello world\"")), "not JSON"),
        ("base64 of non-JSON", invocation(json!("aGVsbG8=")), "base64"),
        ("missing envelope", invocation(double_encoded(&json!({"endpoint": PE}))), "not a work envelope"),
        ("unknown version", invocation(double_encoded(&json!({"v": 99, "work": good["work"]}))), "version 99"),
        (
            "bad endpoint",
            invocation(double_encoded(
                &json!({"v": 1, "work": {"kind": "reconcile", "endpoint": "/nope", "attempt": 1, "first_failed_at": 0, "reason": ""}}),
            )),
            "invalid endpoint",
        ),
        ("number body", invocation(json!(42)), "a number"),
        ("null body", invocation(Value::Null), "null"),
        ("empty string", invocation(json!("")), "not JSON"),
        ("array body", invocation(double_encoded(&json!([1, 2]))), "not a work envelope"),
        (
            "no Data.message",
            json!({"Data": {"other": "x"}, "Metadata": {}}).to_string().into_bytes(),
            "no Data.message",
        ),
    ];
    for (what, body, expect) in cases {
        let rec = Recorder::default();
        let called = AtomicUsize::new(0);
        let answer = trigger::handle_trigger(&body, &rec, &policy(), |_, _| async {
            called.fetch_add(1, Ordering::SeqCst);
            Outcome::Done
        })
        .await;
        assert_eq!(answer.status, 200, "{what}: parked, then 2xx");
        assert_eq!(called.load(Ordering::SeqCst), 0, "{what}: handler not called");
        let parked = rec.parked.lock().expect("lock");
        assert_eq!(parked.len(), 1, "{what}");
        assert!(parked[0].1.contains(expect), "{what}: reason {:?} should mention {expect:?}", parked[0].1);
        assert!(matches!(answer.settlement, Settlement::DeadLettered { .. }), "{what}");
    }
    // Not a host invocation at all: nothing to park, non-2xx.
    let rec = Recorder::default();
    let answer = trigger::handle_trigger(b"{not json", &rec, &policy(), |_, _| async { Outcome::Done }).await;
    assert_eq!(answer.status, 400);
    assert!(rec.parked.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn trigger_outcomes_against_the_fake() {
    let fake = fake().await;
    let q = fresh(&fake, "q", Mode::Sas);
    let body = invocation(double_encoded(&envelope(2)));

    // Done → 2xx, nothing sent.
    let a = trigger::handle_trigger(&body, &*q, &policy(), |_, _| async { Outcome::Done }).await;
    assert_eq!((a.status, a.settlement), (200, Settlement::Completed));
    assert_eq!(q.depth().await.expect("depth"), 0);

    // Transient → a delayed copy with the next attempt, then 2xx.
    let started = Instant::now();
    let a = trigger::handle_trigger(&body, &*q, &policy(), |d, id| async move {
        assert_eq!(d.delivery_count, 1);
        assert_eq!(id.to_string().to_ascii_lowercase(), PE.to_ascii_lowercase());
        Outcome::Requeue { after: Duration::from_secs(30), reason: "zone busy".into() }
    })
    .await;
    assert_eq!(a.status, 200);
    let Settlement::Rescheduled { attempt, after } = a.settlement else { panic!("{:?}", a.settlement) };
    assert_eq!(attempt, 3);
    assert!(after >= Duration::from_secs(30), "Retry-After honoured: {after:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let snap = fake.queue_snapshot(q.settings().queue.as_str()).expect("snapshot");
    assert_eq!(snap.active.len(), 1);
    let copy: Value = serde_json::from_slice(&snap.active[0].body).expect("json");
    assert_eq!(copy["work"]["attempt"], 3);
    assert!(snap.active[0].visible_at >= std::time::SystemTime::now() + Duration::from_secs(25), "scheduled later");

    // Permanent → parked with its reason, then 2xx.
    let a = trigger::handle_trigger(&body, &*q, &policy(), |_, _| async {
        Outcome::Failed { reason: "403 from vendor".into() }
    })
    .await;
    assert_eq!(a.status, 200);
    let dead = q.dead_letters().await.expect("list");
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("403 from vendor"), "{}", dead[0].reason);
    assert_eq!(dead[0].message_id, "m-1");
    assert_eq!(dead[0].dedupe_key, "reconcile:pe1");

    // The send fails → non-2xx so the host abandons and redelivers.
    fake.fail_next(1, 503);
    let a = trigger::handle_trigger(&body, &*q, &policy(), |_, _| async {
        Outcome::Requeue { after: Duration::from_secs(1), reason: "again".into() }
    })
    .await;
    assert_eq!(a.status, 500);
    assert!(matches!(a.settlement, Settlement::Abandoned { .. }));
    fake.fail_next(1, 500);
    let a =
        trigger::handle_trigger(&body, &*q, &policy(), |_, _| async { Outcome::Failed { reason: "x".into() } }).await;
    assert_eq!(a.status, 500, "dead-letter send failed");
    let rec = Recorder { fail: true, ..Default::default() };
    let a = trigger::handle_trigger(&body, &rec, &policy(), |_, _| async {
        Outcome::Requeue { after: Duration::ZERO, reason: "r".into() }
    })
    .await;
    assert_eq!(a.status, 500);
}
