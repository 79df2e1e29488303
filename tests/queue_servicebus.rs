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

use autopilot_sandbox::fake_servicebus::{
    FakeGrant, FakeQueueOptions, FakeRight, FakeServiceBus, FakeServiceBusOptions,
};
use autopilot_sandbox::fake_table::FakeTableService;
use private_link_autopilot::arm::credential::{Secret, StaticToken};
use private_link_autopilot::backoff::Backoff;
use private_link_autopilot::intake::queue_trigger as trigger;
use private_link_autopilot::model::ResourceId;
use private_link_autopilot::queue::servicebus::{
    ServiceBusAuth, ServiceBusCredentials, ServiceBusQueue, ServiceBusSettings,
};
use private_link_autopilot::queue::{Delivery, NewMessage, QueueError, TriggerQueue, WorkQueue, work};
use private_link_autopilot::reconcile::Outcome;
use private_link_autopilot::runtime::error_policy::RetryPolicy;
use private_link_autopilot::runtime::worker::Settlement;
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
        dead_letter_table_endpoint: String::new(),
        dead_letter_table: String::new(),
        arm_queue_id: String::new(),
        management_endpoint: String::new(),
        dedupe_bucket_secs: 60,
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
        /// As deployed: dead letters in the table, counts from ARM.
        mod deployed {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let fake = fake().await;
                    let token = fake.bearer_token().expect("bearer").expose().to_owned();
                    let table = FakeTableService::start(&token, 3).await.expect("table");
                    queue_conformance::$check(fresh_deployed(&fake, &table, $prefix)).await;
                    assert!(
                        fake.requests().iter().all(|r| !r.path_and_query.contains("-deadletter")),
                        "no parked queue in the deployed shape"
                    );
                }
            )*
        }
    };
}

fn fresh_deployed(fake: &FakeServiceBus, table: &FakeTableService, prefix: &str) -> Arc<ServiceBusQueue> {
    let i = NEXT_QUEUE.fetch_add(1, Ordering::SeqCst) % QUEUES;
    let name = format!("{prefix}{i}");
    let mut s = settings(fake, &name, Mode::Bearer);
    s.dead_letter_table_endpoint = table.base_url();
    s.dead_letter_table = "workdeadletters".into();
    s.arm_queue_id = format!(
        "/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/rg/providers/Microsoft.ServiceBus/namespaces/{}/queues/{name}",
        fake.namespace()
    );
    s.management_endpoint = fake.base_url().to_owned();
    Arc::new(ServiceBusQueue::connect(s, credentials(fake, Mode::Bearer)).expect("connect"))
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
    assert_eq!(unknown.status().as_u16(), 404, "unknown entity");
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
    // The park fails → still 2xx (the work already ran; a redelivery would repeat it).
    fake.fail_next(1, 500);
    let a =
        trigger::handle_trigger(&body, &*q, &policy(), |_, _| async { Outcome::Failed { reason: "x".into() } }).await;
    assert_eq!(a.status, 200, "a failed park never answers 500");
    let Settlement::DeadLettered { reason } = &a.settlement else { panic!("{:?}", a.settlement) };
    assert!(reason.starts_with("NOT STORED"), "{reason}");
    let rec = Recorder { fail: true, ..Default::default() };
    let a = trigger::handle_trigger(&body, &rec, &policy(), |_, _| async {
        Outcome::Requeue { after: Duration::ZERO, reason: "r".into() }
    })
    .await;
    assert_eq!(a.status, 500);
}

// ------------------------------------------------ the deployed shape (infra/modules/servicebus.bicep)

const TABLE: &str = "workdeadletters";
const ARM_SUB: &str = "00000000-0000-0000-0000-0000000000aa";

/// What infra deploys: only `work` exists, the identity holds Data Sender + Data Receiver +
/// Reader on it and nothing else, dead letters go to the table.
async fn deployed(max_delivery_count: u32) -> (FakeServiceBus, FakeTableService) {
    let mut work = FakeQueueOptions::new("work");
    work.max_delivery_count = max_delivery_count;
    work.lock_duration = SHORT_LOCK;
    let fake = FakeServiceBus::start(FakeServiceBusOptions {
        queues: vec![work],
        bearer_grants: Some(vec![FakeGrant::new("work", &[FakeRight::Send, FakeRight::Listen, FakeRight::ArmRead])]),
        ..Default::default()
    })
    .await
    .expect("start fake");
    let token = fake.bearer_token().expect("bearer").expose().to_owned();
    let table = FakeTableService::start(&token, 2).await.expect("table");
    (fake, table)
}

fn arm_queue_id(fake: &FakeServiceBus) -> String {
    format!(
        "/subscriptions/{ARM_SUB}/resourceGroups/rg-autopilot/providers/Microsoft.ServiceBus/namespaces/{}/queues/work",
        fake.namespace()
    )
}

/// Settings as `infra/main.bicep` writes them (table + ARM id), or today's shape without.
fn deployed_queue(fake: &FakeServiceBus, table: Option<&FakeTableService>, arm: bool) -> Arc<ServiceBusQueue> {
    let mut s = settings(fake, "work", Mode::Bearer);
    if let Some(t) = table {
        s.dead_letter_table_endpoint = t.base_url();
        s.dead_letter_table = TABLE.into();
    }
    if arm {
        s.arm_queue_id = arm_queue_id(fake);
        s.management_endpoint = fake.base_url().to_owned();
    }
    Arc::new(ServiceBusQueue::connect(s, credentials(fake, Mode::Bearer)).expect("connect"))
}

/// Delivers like the host: non-2xx = abandon = immediate redelivery, up to `max` times.
/// Returns (handler runs, last status).
async fn host_deliveries(q: &ServiceBusQueue, max: u32) -> (usize, u16) {
    let runs = AtomicUsize::new(0);
    let body = invocation(double_encoded(&envelope(1)));
    let mut last = 0;
    for _ in 0..max {
        let a = trigger::handle_trigger(&body, q, &policy(), |_, _| async {
            runs.fetch_add(1, Ordering::SeqCst);
            Outcome::Failed { reason: "vendor answered 404: service not found".into() }
        })
        .await;
        last = a.status;
        if (200..300).contains(&a.status) {
            break;
        }
    }
    (runs.load(Ordering::SeqCst), last)
}

/// F3: today's code parks on `work-deadletter`, which infra never creates: the fake now
/// answers 404 as Service Bus does, and the failed park must not loop the side effects.
#[tokio::test]
async fn park_to_a_missing_entity_runs_the_side_effects_once() {
    let (fake, _table) = deployed(10).await;
    let q = deployed_queue(&fake, None, false);
    let (runs, status) = host_deliveries(&q, 10).await;
    assert_eq!((runs, status), (1, 200), "one execution, answered 2xx although the park failed");
    let park = fake.requests().into_iter().find(|r| r.path_and_query.starts_with("/work-deadletter")).expect("park");
    assert_eq!(park.status, 404, "the entity does not exist in the deployed shape");
}

/// F3 fixed: in the deployed shape the park lands in the table, with the reason, once.
#[tokio::test]
async fn permanent_failure_is_parked_in_the_table_with_its_reason() {
    let (fake, table) = deployed(10).await;
    let q = deployed_queue(&fake, Some(&table), true);
    let (runs, status) = host_deliveries(&q, 10).await;
    assert_eq!((runs, status), (1, 200));
    assert_eq!(table.entity_count(TABLE), 1);
    let dead = q.dead_letters().await.expect("list");
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("vendor answered 404"), "{}", dead[0].reason);
    // A redelivered park (crash between park and complete) replaces, never doubles.
    let _ = host_deliveries(&q, 1).await;
    assert_eq!(table.entity_count(TABLE), 1);
    assert!(fake.requests().iter().all(|r| r.status != 401 && r.status != 404), "{:?}", fake.requests());
}

/// F10: listing must not consume deliveries. Today's listing peek-locks every parked
/// message (DeliveryCount + 1 each time) and after `MaxDeliveryCount` listings the
/// message moves where nothing reads it.
#[tokio::test]
async fn listing_dead_letters_never_consumes_deliveries() {
    let (fake, table) = deployed(2).await;
    let q = deployed_queue(&fake, Some(&table), true);
    // One parked by us, one dead-lettered by the broker (abandoned MaxDeliveryCount times).
    host_deliveries(&q, 1).await;
    q.enqueue(attempt_message("poison", 1, Duration::ZERO)).await.expect("enqueue");
    for _ in 0..2 {
        let d = q.receive(Duration::from_secs(5), SHORT_LOCK).await.expect("receive").expect("message");
        q.abandon(&d).await.expect("abandon");
    }
    assert_eq!(fake.queue_snapshot("work").expect("work").dead_letter.len(), 1, "in the broker's DLQ");

    let seen: Vec<usize> = {
        let mut v = Vec::new();
        for _ in 0..12 {
            v.push(q.dead_letters().await.expect("list").len());
        }
        v
    };
    assert_eq!(seen, vec![2; 12], "every listing sees both");
    let snap = fake.queue_snapshot("work").expect("work");
    assert_eq!(snap.dead_letter.len(), 1, "the broker's dead letter stays put");
    assert!(snap.active.is_empty());
    assert_eq!(table.entity_count(TABLE), 1);
    let locks_outside_dlq = fake
        .requests()
        .iter()
        .filter(|r| r.path_and_query.contains("/messages/head") && !r.path_and_query.contains("$DeadLetterQueue"))
        .count();
    assert_eq!(locks_outside_dlq, 2, "only the two receives above locked anything on the work queue");

    // The health count reads, never lists or locks.
    let before = fake.requests().len();
    assert_eq!(q.dead_letter_count().await.expect("count"), 2);
    assert!(fake.requests()[before..].iter().all(|r| !r.path_and_query.contains("/messages")), "no message touched");

    // Replay from the table: back on the queue, gone from the list.
    let parked = q.dead_letters().await.expect("list").into_iter().find(|d| d.message_id == "m-1").expect("ours");
    q.replay(&parked.message_id).await.expect("replay");
    assert_eq!(table.entity_count(TABLE), 0);
    assert!(matches!(q.replay(&parked.message_id).await, Err(QueueError::NotFound(_))), "replayed once");
    assert_eq!(fake.queue_snapshot("work").expect("work").active.len(), 1);
}

/// Conformance item 4: the entity description needs `Manage`, which infra does not grant;
/// today's depth therefore fails (health shows null). From ARM with Reader it works.
#[tokio::test]
async fn depth_without_manage_comes_from_arm() {
    let (fake, table) = deployed(10).await;
    let today = deployed_queue(&fake, Some(&table), false);
    today.enqueue(attempt_message("d1", 1, Duration::ZERO)).await.expect("enqueue");
    today.enqueue(attempt_message("d2", 1, Duration::from_secs(600))).await.expect("enqueue");
    let err = today.depth().await.expect_err("entity description without Manage");
    assert!(matches!(err, QueueError::Config(_)), "{err}");
    let described = fake.requests().into_iter().rfind(|r| r.method == "GET").expect("GET");
    assert_eq!(described.status, 401);

    let q = deployed_queue(&fake, Some(&table), true);
    assert_eq!(q.depth().await.expect("depth from ARM"), 2, "active + scheduled");
    assert_eq!(q.dead_letter_count().await.expect("count"), 0);

    // Without the Reader grant ARM says 403 and the error names the role.
    let no_reader = FakeServiceBus::start(FakeServiceBusOptions {
        queues: vec![FakeQueueOptions::new("work")],
        bearer_grants: Some(vec![FakeGrant::new("work", &[FakeRight::Send, FakeRight::Listen])]),
        ..Default::default()
    })
    .await
    .expect("fake");
    let e = deployed_queue(&no_reader, None, true).depth().await.expect_err("no Reader");
    assert!(e.to_string().contains("Reader"), "{e}");
}

/// The fake is as strict as the service: unknown entities 404, rights per entity 401,
/// with the service's error body; ARM's 403 for a missing read.
#[tokio::test]
async fn strict_fake_refuses_unknown_entities_and_missing_rights() {
    let fake = FakeServiceBus::start(FakeServiceBusOptions {
        queues: vec![FakeQueueOptions::new("work"), FakeQueueOptions::new("other")],
        bearer_grants: Some(vec![
            FakeGrant::new("work", &[FakeRight::Send]),
            FakeGrant::new("other", &[FakeRight::Listen]),
        ]),
        ..Default::default()
    })
    .await
    .expect("fake");
    let bearer = format!("Bearer {}", fake.bearer_token().expect("bearer").expose());
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str| {
        client.request(method, format!("{}{path}", fake.base_url())).header("authorization", bearer.clone()).send()
    };
    let r = call(reqwest::Method::POST, "/work-deadletter/messages").await.expect("send");
    assert_eq!(r.status().as_u16(), 404);
    let text = r.text().await.expect("body");
    assert!(text.starts_with("<Error><Code>404</Code><Detail>") && text.contains("could not be found"), "{text}");
    assert_eq!(call(reqwest::Method::POST, "/work/messages").await.expect("send").status().as_u16(), 201);
    let r = call(reqwest::Method::POST, "/other/messages").await.expect("send");
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.text().await.expect("body").contains("'Send' claim(s) are required"));
    let r = call(reqwest::Method::POST, "/work/messages/head?timeout=0").await.expect("peek");
    assert_eq!(r.status().as_u16(), 401, "no Listen on work");
    let r = call(reqwest::Method::POST, "/work/$DeadLetterQueue/messages/head?timeout=0").await.expect("peek");
    assert_eq!(r.status().as_u16(), 401, "the queue's grant decides for its DLQ too");
    assert_eq!(
        call(reqwest::Method::POST, "/other/messages/head?timeout=0").await.expect("peek").status().as_u16(),
        204
    );
    let r = call(reqwest::Method::GET, "/work?api-version=2021-05").await.expect("describe");
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.text().await.expect("body").contains("'Manage' claim(s)"));
    let arm = format!(
        "/subscriptions/{ARM_SUB}/resourceGroups/rg/providers/Microsoft.ServiceBus/namespaces/{}/queues/work?api-version=2021-11-01",
        fake.namespace()
    );
    let r = call(reqwest::Method::GET, &arm).await.expect("arm");
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.text().await.expect("body").contains("AuthorizationFailed"));
}

/// Duplicate work for one endpoint collapses on Service Bus even though each copy carries
/// its own `first_failed_at` and reason; the next attempt is never swallowed.
#[tokio::test]
async fn duplicate_work_items_for_one_endpoint_collapse() {
    let fake = fake().await;
    let i = NEXT_QUEUE.fetch_add(1, Ordering::SeqCst) % QUEUES;
    let name = format!("q{i}");
    let mut s = settings(&fake, &name, Mode::Sas);
    // A bucket far wider than the test, so no boundary falls between the two sends.
    s.dedupe_bucket_secs = 400 * 24 * 3600;
    let q = ServiceBusQueue::connect(s, credentials(&fake, Mode::Sas)).expect("connect");
    let id = ResourceId::parse_private_endpoint(PE).expect("pe id");
    let item = |first: u64, reason: &str, attempt: u32| {
        work::Work::Vendor {
            endpoint: PE.to_owned(),
            vendor: "clickhouse".into(),
            attempt,
            first_failed_at: first,
            reason: reason.into(),
        }
        .message(&id, Duration::ZERO)
    };
    q.enqueue(item(1_700_000_000, "endpoint written", 0)).await.expect("first");
    q.enqueue(item(1_700_000_007, "endpoint written again", 0)).await.expect("duplicate");
    let snap = fake.queue_snapshot(&name).expect("queue");
    assert_eq!(snap.active.len(), 1, "one message for one (vendor, endpoint)");
    q.enqueue(item(1_700_000_000, "retry", 1)).await.expect("next attempt");
    assert_eq!(fake.queue_snapshot(&name).expect("queue").active.len(), 2, "the next attempt is its own message");
}

/// Offline check: the entities and grants the Service Bus code reaches in Azure exist in
/// infra, and the app settings point the code at them.
#[test]
fn infra_provides_what_the_service_bus_code_needs() {
    let root = env!("CARGO_MANIFEST_DIR");
    let module = std::fs::read_to_string(format!("{root}/infra/modules/servicebus.bicep")).expect("servicebus.bicep");
    let main = std::fs::read_to_string(format!("{root}/infra/main.bicep")).expect("main.bicep");
    // resource blocks: symbol -> (type, body)
    let blocks: Vec<(String, String, String)> = module
        .split("\nresource ")
        .skip(1)
        .filter_map(|b| {
            let sym = b.split_whitespace().next()?.to_owned();
            let ty = b.split('\'').nth(1)?.split('@').next()?.to_owned();
            let end = b.find("\n}").map_or(b.len(), |e| e + 2);
            Some((sym, ty, b[..end].to_owned()))
        })
        .collect();
    let of_type = |t: &str| blocks.iter().filter(|(_, ty, _)| ty == t).collect::<Vec<_>>();
    let queues = of_type("Microsoft.ServiceBus/namespaces/queues");
    assert_eq!(queues.len(), 1, "one queue: dead letters need no second entity");
    let queue_sym = &queues[0].0;
    let tables = of_type("Microsoft.Storage/storageAccounts/tableServices/tables");
    assert_eq!(tables.len(), 1, "the dead-letter table");
    let table_sym = &tables[0].0;
    let role_var = |name: &str| -> String {
        let line = module.lines().find(|l| l.trim_start().starts_with(&format!("var {name} ="))).expect(name);
        line.split('\'').nth(1).expect("guid").to_owned()
    };
    let grants: Vec<(String, String)> = of_type("Microsoft.Authorization/roleAssignments")
        .iter()
        .map(|(_, _, body)| {
            let scope = body.lines().find_map(|l| l.trim().strip_prefix("scope: ")).expect("scope").to_owned();
            let def = body
                .lines()
                .find_map(|l| l.trim().strip_prefix("roleDefinitionId: "))
                .and_then(|l| l.rsplit(", ").next())
                .map(|v| v.trim_end_matches(')').to_owned())
                .expect("roleDefinitionId");
            (scope, role_var(&def))
        })
        .collect();
    let has = |scope: &str, guid: &str| grants.iter().any(|(s, g)| s == scope && g == guid);
    // Built-in role ids (Azure built-in roles reference).
    assert!(has(queue_sym, "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39"), "Data Sender on the queue: {grants:?}");
    assert!(has(queue_sym, "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"), "Data Receiver on the queue: {grants:?}");
    assert!(has(queue_sym, "acdd72a7-3385-48ef-bd42-f606fba81ae7"), "Reader on the queue (counts): {grants:?}");
    assert!(has(table_sym, "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"), "Table Data Contributor on the table: {grants:?}");
    assert!(
        !grants.iter().any(|(_, g)| g == "090c5cfd-751d-490a-894a-3ce6f1109419"),
        "no Data Owner: nothing needs Manage"
    );
    for setting in [
        "AUTOPILOT__QUEUE__DEAD_LETTER_TABLE_ENDPOINT:",
        "AUTOPILOT__QUEUE__DEAD_LETTER_TABLE: serviceBus.outputs.deadLetterTableName",
        "AUTOPILOT__QUEUE__ARM_QUEUE_ID: serviceBus.outputs.queueId",
        "AUTOPILOT__QUEUE__NAME: serviceBus.outputs.queueName",
    ] {
        assert!(main.contains(setting), "main.bicep app settings lack {setting}");
    }
    assert!(!main.contains("AUTOPILOT__QUEUE__DEAD_LETTER_QUEUE"), "no parked queue in Azure");
    assert!(module.contains(&format!("output deadLetterTableName string = {table_sym}.name")));
    assert!(module.contains(&format!("output queueId string = {queue_sym}.id")));
}

/// The trigger's settlement contract (src/queue/trigger.rs): the host completes on 2xx.
#[test]
fn host_json_lets_the_host_complete_on_2xx() {
    let root = env!("CARGO_MANIFEST_DIR");
    let host: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}/host.json")).expect("host.json")).expect("json");
    let sb = &host["extensions"]["serviceBus"];
    assert_ne!(sb["autoCompleteMessages"], Value::Bool(false), "a custom handler cannot settle by itself");
    let function: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/handlers/WorkQueue/function.json")).expect("function.json"),
    )
    .expect("json");
    let trigger = &function["bindings"][0];
    assert_eq!(trigger["type"], "serviceBusTrigger");
    assert_eq!(trigger["name"], trigger::MESSAGE_BINDING);
    assert_ne!(trigger["autoComplete"], Value::Bool(false));
}
