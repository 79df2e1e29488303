//! The two functions that keep things converged without an event: `Sweep` (timer) and
//! `WorkQueue` (Service Bus trigger), driven through the host emulator against the fake
//! ARM and the fake Service Bus.

use std::net::Ipv4Addr;
use std::sync::Arc;

use autopilot_sandbox::fake_arm::{EndpointSpec, FakeArmOptions, Fault};
use autopilot_sandbox::fake_servicebus::{
    FakeGrant, FakeQueueOptions, FakeRight, FakeServiceBus, FakeServiceBusOptions,
};
use autopilot_sandbox::fake_table::FakeTableService;
use autopilot_sandbox::harness::{SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB, Sandbox, SandboxOptions};
use autopilot_sandbox::host_emulator::{InvokeOutcome, SbSettlement, ServiceBusProps};
use axum::http::Method;
use private_link_autopilot::arm::credential::StaticToken;
use private_link_autopilot::model::ResourceId;
use private_link_autopilot::queue::WorkQueue;
use private_link_autopilot::queue::servicebus::{
    ServiceBusAuth, ServiceBusCredentials, ServiceBusQueue, ServiceBusSettings,
};
use private_link_autopilot::queue::work;
use serde_json::json;

const ZONE: &str = "eastus2.privatelink.azure.clickhouse.cloud";
const ALIAS: &str = "production-eastus2-0-0.00000000-0000-4000-8000-00000000c0de.eastus2.azure.privatelinkservice";

fn clickhouse(name: &str, ip: [u8; 4]) -> EndpointSpec {
    EndpointSpec::alias(SUB, RG, name, "eastus2", ALIAS).approved().with_ip(Ipv4Addr::from(ip))
}

async fn sandbox(service_bus: Option<Arc<ServiceBusQueue>>) -> Sandbox {
    Sandbox::start(SandboxOptions {
        arm: FakeArmOptions { lro_retry_after_secs: 1, ..FakeArmOptions::default() },
        zones: vec![ZONE.into()],
        configure: Box::new(|c| {
            c.sweep.subscriptions = vec![SUB.into()];
            c.reconcile.zone_scan_cache_secs = 0;
        }),
        workers: 0,
        service_bus,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox")
}

fn logs(outcome: &InvokeOutcome) -> Vec<String> {
    match outcome {
        InvokeOutcome::Succeeded(r) => r.logs.clone(),
        InvokeOutcome::Failed(why) => panic!("invocation failed: {why}"),
    }
}

#[tokio::test]
async fn sweep_converges_missed_events_drift_and_orphans() {
    let sb = sandbox(None).await;
    let zone = sb.zone_id(ZONE);
    // Three endpoints whose events were never delivered.
    for (i, name) in ["ch-s1", "ch-s2", "ch-s3"].iter().enumerate() {
        sb.arm.put_endpoint(&clickhouse(name, [10, 1, 2, 10 + i as u8]));
    }
    let out = sb.host.invoke_timer("Sweep", false).await.unwrap();
    assert!(logs(&out)[0].starts_with("sweep: 3 listed"), "{:?}", logs(&out));
    let rec = sb.arm.record(&zone, "*").expect("missed events converged");
    assert_eq!(rec.addresses.len(), 3);

    // Drift: someone edits our record; an endpoint is deleted without an event.
    let mut meta = serde_json::Value::Object(rec.metadata.clone());
    meta["note"] = json!("hand edit");
    sb.arm.put_record(&zone, "*", &[Ipv4Addr::new(10, 9, 9, 9)], meta);
    let gone = format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/privateEndpoints/ch-s3");
    sb.arm.delete_endpoint(&gone);
    let out = sb.host.invoke_timer("Sweep", false).await.unwrap();
    assert!(logs(&out)[0].contains("2 listed, 1 owners not listed re-checked"), "{:?}", logs(&out));
    let rec = sb.arm.record(&zone, "*").unwrap();
    let want: Vec<Ipv4Addr> = vec![Ipv4Addr::new(10, 1, 2, 10), Ipv4Addr::new(10, 1, 2, 11)];
    assert_eq!(rec.addresses, want, "drift repaired, orphan's address removed");

    // Nothing left to do: a third run writes nothing.
    sb.arm.clear_log();
    sb.host.invoke_timer("Sweep", false).await.unwrap();
    assert_eq!(sb.arm.writes_to("/A/"), 0);
}

/// The sweep plans from the zone listing it already made (no GET per record), and a
/// listing that went stale before the write cannot clobber: the write is conditional on
/// the listed ETag, is refused, and the retry reads the record itself.
#[tokio::test]
async fn sweep_reads_records_from_its_listing_and_a_stale_listing_cannot_clobber() {
    let sb = sandbox(None).await;
    let zone = sb.zone_id(ZONE);
    for (i, name) in ["ch-l1", "ch-l2"].iter().enumerate() {
        sb.arm.put_endpoint(&clickhouse(name, [10, 1, 4, 10 + i as u8]));
    }
    sb.host.invoke_timer("Sweep", false).await.unwrap();
    let want = vec![Ipv4Addr::new(10, 1, 4, 10), Ipv4Addr::new(10, 1, 4, 11)];
    assert_eq!(sb.arm.record(&zone, "*").unwrap().addresses, want);

    // A converged re-sweep: the zone is listed, no record set is read one by one.
    sb.arm.clear_log();
    sb.host.invoke_timer("Sweep", false).await.unwrap();
    let record_gets = sb.arm.requests().iter().filter(|r| r.method == "GET" && r.path.contains("/A/")).count();
    assert_eq!(record_gets, 0, "{:?}", sb.arm.requests());
    assert_eq!(sb.arm.writes_to("/A/"), 0);

    // The listing sees a hand edit; a second edit lands before the sweep writes.
    let rec = sb.arm.record(&zone, "*").unwrap();
    let meta = serde_json::Value::Object(rec.metadata.clone());
    sb.arm.put_record(&zone, "*", &[Ipv4Addr::new(10, 9, 9, 9)], meta.clone());
    let listing = std::sync::Arc::new(sb.app.reconciler.dns_snapshot().await.unwrap());
    sb.arm.put_record(&zone, "*", &[Ipv4Addr::new(10, 8, 8, 8)], meta);
    sb.arm.clear_log();
    let id = ResourceId::parse_private_endpoint(&format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/privateEndpoints/ch-l1"
    ))
    .unwrap();
    let reconcile = sb.app.reconciler.reconcile(&id, private_link_autopilot::reconcile::Mode::Apply);
    let report = private_link_autopilot::reconcile::snapshot::DnsSnapshot::scope(Some(listing), reconcile).await;
    assert_eq!(report.outcome, private_link_autopilot::reconcile::Outcome::Done, "{report:?}");
    let log = sb.arm.requests();
    let refused: Vec<_> = log.iter().filter(|r| r.path.contains("/A/") && r.status == 412).collect();
    assert_eq!(refused.len(), 1, "the write with the listed ETag was refused: {log:?}");
    assert!(log.iter().any(|r| r.method == "GET" && r.path.contains("/A/")), "then the record was read itself");
    let after = sb.arm.record(&zone, "*").unwrap().addresses;
    assert_eq!(after, vec![Ipv4Addr::new(10, 1, 4, 10), Ipv4Addr::new(10, 1, 4, 11)], "converged");
}

#[tokio::test]
async fn sweeps_never_overlap() {
    let sb = sandbox(None).await;
    sb.arm.put_endpoint(&clickhouse("ch-slow", [10, 1, 3, 1]));
    sb.arm.inject(Fault::delay(
        None,
        "/providers/Microsoft.ResourceGraph/resources",
        std::time::Duration::from_millis(600),
        1,
    ));
    let (a, b) = tokio::join!(sb.host.invoke_timer("Sweep", false), async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        sb.host.invoke_timer("Sweep", false).await
    });
    let (a, b) = (logs(&a.unwrap()), logs(&b.unwrap()));
    assert!(a[0].starts_with("sweep: 1 listed"), "{a:?}");
    assert_eq!(b, vec!["sweep already running; this run is skipped".to_owned()]);
}

/// The deployed shape (infra/modules/servicebus.bicep): only the work queue exists, the
/// identity holds Data Sender + Data Receiver + Reader on it and nothing else, and dead
/// letters go to the Table the module creates.
async fn fake_bus() -> (FakeServiceBus, FakeTableService, Arc<ServiceBusQueue>) {
    let fake = FakeServiceBus::start(FakeServiceBusOptions {
        queues: vec![FakeQueueOptions::new("work")],
        bearer_grants: Some(vec![FakeGrant::new("work", &[FakeRight::Send, FakeRight::Listen, FakeRight::ArmRead])]),
        ..FakeServiceBusOptions::default()
    })
    .await
    .unwrap();
    let token = fake.bearer_token().cloned().unwrap();
    let table = FakeTableService::start(token.expose(), 100).await.unwrap();
    let settings = ServiceBusSettings {
        namespace: fake.namespace().to_owned(),
        queue: "work".into(),
        dead_letter_queue: String::new(),
        auth: ServiceBusAuth::ManagedIdentity { client_id: String::new() },
        endpoint_override: fake.base_url().to_owned(),
        lock_secs: 60,
        dead_letter_table_endpoint: table.base_url(),
        dead_letter_table: DEAD_LETTER_TABLE.into(),
        arm_queue_id: format!(
            "/subscriptions/{SUB}/resourceGroups/rg-autopilot/providers/Microsoft.ServiceBus/namespaces/{}/queues/work",
            fake.namespace()
        ),
        management_endpoint: fake.base_url().to_owned(),
        dedupe_bucket_secs: 60,
    };
    let creds = ServiceBusCredentials::Tokens(Arc::new(StaticToken(token)));
    let queue = Arc::new(ServiceBusQueue::connect(settings, creds).unwrap());
    (fake, table, queue)
}

const DEAD_LETTER_TABLE: &str = "deadletters";

fn props(message_id: &str) -> ServiceBusProps {
    ServiceBusProps { message_id: message_id.into(), ..ServiceBusProps::default() }
}

#[tokio::test]
async fn work_queue_trigger_reconciles_and_reschedules_on_service_bus() {
    let (bus, table, queue) = fake_bus().await;
    let sb = sandbox(Some(queue.clone())).await;
    let id = sb.arm.put_endpoint(&clickhouse("ch-wq", [10, 1, 4, 1]));
    let pe = ResourceId::parse_private_endpoint(&id).unwrap();
    let body = work::reconcile_retry(&pe, 1, work::now_unix(), "test", std::time::Duration::ZERO).body.to_string();

    // Delivered by the host's serviceBusTrigger: converges, answered 2xx (host completes).
    let settled = sb.host.deliver_service_bus("WorkQueue", &body, props("m1"), false).await;
    assert_eq!(settled, SbSettlement::Complete);
    assert!(sb.arm.record(&sb.zone_id(ZONE), "*").is_some());

    // ARM failing: a delayed copy goes to Service Bus and the host still completes this one.
    sb.arm.inject(Fault::status(Some(Method::GET), "/privateEndpoints/ch-wq", 500, 20));
    let settled = sb.host.deliver_service_bus("WorkQueue", &body, props("m2"), false).await;
    assert_eq!(settled, SbSettlement::Complete);
    let active = bus.queue_snapshot("work").unwrap().active;
    assert_eq!(active.len(), 1, "the retry is scheduled on the queue");
    assert_eq!(active[0].correlation_id.as_deref(), Some(pe.key()));

    // A message that is not ours is parked with its reason, not retried forever.
    let settled = sb.host.deliver_service_bus("WorkQueue", "{\"v\":99}", props("m3"), false).await;
    assert_eq!(settled, SbSettlement::Complete);
    assert_eq!(table.entity_count(DEAD_LETTER_TABLE), 1, "parked in the table infra creates");
    let dead = queue.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("unreadable"), "{dead:?}");
    assert!(bus.requests().iter().all(|r| r.status != 401 && r.status != 404), "nothing outside the grants");
}

#[tokio::test]
async fn work_queue_without_service_bus_fails_loudly() {
    let sb = sandbox(None).await;
    let settled = sb.host.deliver_service_bus("WorkQueue", "{}", props("m1"), false).await;
    assert!(matches!(settled, SbSettlement::Abandon(_)), "{settled:?}");
}

/// In Azure: the Event Grid handler queues the vendor work on Service Bus, the host's
/// serviceBusTrigger hands it to the `WorkQueue` function, which registers the endpoint
/// with the vendor and (still Pending) schedules an approval re-check on Service Bus.
#[tokio::test]
async fn vendor_work_travels_through_service_bus() {
    use autopilot_sandbox::vendors::SandboxVendors;
    let (bus, _table, queue) = fake_bus().await;
    let vendors = SandboxVendors::start().await.unwrap();
    let mut base = private_link_autopilot::config::Config::default();
    vendors.configure(&mut base);
    let section = base.vendors.clone();
    let sb = Sandbox::start(SandboxOptions {
        zones: vec![ZONE.into()],
        configure: Box::new(move |c| c.vendors = section),
        env: vendors.env(),
        workers: 0,
        service_bus: Some(queue),
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let pending = EndpointSpec::alias(SUB, RG, "ch-sb", "eastus2", ALIAS).with_ip(Ipv4Addr::from([10, 1, 5, 1]));
    let (id, delivery) = sb.create(&pending).await;
    assert_eq!(delivery.status, 202);
    let active = bus.queue_snapshot("work").unwrap().active;
    assert_eq!(active.len(), 1, "one vendor work item queued");
    let body = String::from_utf8(active[0].body.clone()).unwrap();
    assert!(body.contains("\"kind\":\"vendor\"") && body.contains("clickhouse"), "{body}");
    assert_eq!(vendors.clickhouse.state().services.values().flatten().count(), 0, "not called from the event handler");

    let settled = sb.host.deliver_service_bus("WorkQueue", &body, props(&active[0].message_id), false).await;
    assert_eq!(settled, SbSettlement::Complete);
    let registered: Vec<String> = vendors.clickhouse.state().services.values().flatten().cloned().collect();
    assert_eq!(registered.len(), 1);
    assert!(registered[0].eq_ignore_ascii_case(&id));
    let recheck = bus.queue_snapshot("work").unwrap().active;
    assert!(
        recheck.iter().any(|m| String::from_utf8_lossy(&m.body).contains("\"kind\":\"recheck\"")),
        "a re-check is scheduled while the connection is Pending"
    );
}

/// The Status health view in the deployed shape: depth is a number (from ARM, with the
/// Reader grant only), dead letters are counted without listing or locking anything, and a
/// park that cannot be stored still answers 2xx so the work does not run again.
#[tokio::test]
async fn health_counts_in_the_deployed_shape_and_failed_parks_do_not_loop() {
    let (bus, table, queue) = fake_bus().await;
    let sb = sandbox(Some(queue.clone())).await;
    let settled = sb.host.deliver_service_bus("WorkQueue", "{\"v\":99}", props("bad-1"), false).await;
    assert_eq!(settled, SbSettlement::Complete);
    assert_eq!(table.entity_count(DEAD_LETTER_TABLE), 1);

    let before = bus.requests().len();
    let res = sb.host.invoke_http("Status", "GET", "/api/status", None).await.unwrap();
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(res.body["queue"]["depth"], json!(0), "{}", res.body);
    assert_eq!(res.body["queue"]["dead_letters"], json!(1), "{}", res.body);
    let health_calls = bus.requests()[before..].to_vec();
    assert!(health_calls.iter().all(|r| !r.path_and_query.contains("/messages")), "{health_calls:?}");

    // The table refuses writes: the park fails, the host is still answered 2xx (complete),
    // and the invalid message is not redelivered into the same failure.
    table.fail_next(503, 10);
    let settled = sb.host.deliver_service_bus("WorkQueue", "{\"v\":98}", props("bad-2"), false).await;
    assert_eq!(settled, SbSettlement::Complete);
}
