//! End to end through the real handler: Event Grid event -> host emulator -> axum
//! handler -> reconcile -> fake ARM (private endpoints, NICs, private DNS), including
//! ARM's failure modes. "Events are hints, ARM is the truth": every scenario checks the
//! final records, not the calls made.

use std::net::Ipv4Addr;
use std::time::Duration;

use autopilot_sandbox::events::{self, ResourceEvent};
use autopilot_sandbox::fake_arm::{EndpointSpec, FakeArmOptions, Fault, MemberSpec};
use autopilot_sandbox::harness::{SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB, Sandbox, SandboxOptions};
use axum::http::Method;
use private_link_autopilot::model::resource_id::ResourceId;
use private_link_autopilot::reconcile::{DnsAction, Mode, Outcome};
use serde_json::json;

const CH_ZONE: &str = "eastus2.privatelink.azure.clickhouse.cloud";
const CH_ALIAS: &str = "production-eastus2-0-0.00000000-0000-4000-8000-00000000c0de.eastus2.azure.privatelinkservice";

fn clickhouse(name: &str) -> EndpointSpec {
    EndpointSpec::alias(SUB, RG, name, "eastus2", CH_ALIAS).approved()
}

async fn sandbox(configure: impl FnOnce(&mut private_link_autopilot::config::Config) + Send + 'static) -> Sandbox {
    let options = SandboxOptions {
        arm: FakeArmOptions { lro_retry_after_secs: 1, ..FakeArmOptions::default() },
        zones: vec![
            CH_ZONE.into(),
            "privatelink.eastus2.kusto.windows.net".into(),
            "privatelink.blob.core.windows.net".into(),
        ],
        configure: Box::new(configure),
        workers: 0,
        ..SandboxOptions::default()
    };
    Sandbox::start(options).await.expect("sandbox starts")
}

fn ips(v: &[&str]) -> Vec<Ipv4Addr> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

#[tokio::test]
async fn create_then_delete_writes_and_removes_owned_wildcard() {
    let sb = sandbox(|_| {}).await;
    let (id, delivery) = sb.create(&clickhouse("ch-pe1").with_ip("10.1.0.10".parse().unwrap())).await;
    assert_eq!(delivery.status, 202, "{delivery:?}");
    let rec = sb.arm.record(&sb.zone_id(CH_ZONE), "*").expect("wildcard written");
    assert_eq!(rec.addresses, ips(&["10.1.0.10"]));
    assert_eq!(rec.ttl, 300);
    assert!(rec.is_managed(), "ownership metadata: {:?}", rec.metadata);
    assert!(
        rec.metadata.values().any(|v| v.as_str().is_some_and(|s| s.contains(&id.to_ascii_lowercase()))),
        "owner recorded"
    );

    let delivery = sb.delete(&id).await;
    assert_eq!(delivery.status, 202);
    assert!(sb.arm.record(&sb.zone_id(CH_ZONE), "*").is_none(), "removed on delete");
    assert_eq!(sb.app.queue.depth().await.unwrap(), 0, "nothing left to retry");
}

#[tokio::test]
async fn same_event_twice_gives_one_write() {
    let sb = sandbox(|_| {}).await;
    let id = sb.arm.put_endpoint(&clickhouse("ch-dup"));
    let event = events::event_grid(ResourceEvent::WriteSuccess, &id);
    assert_eq!(sb.deliver(vec![event.clone()]).await.status, 202);
    assert_eq!(sb.deliver(vec![event.clone()]).await.status, 202);
    // Event Grid may also put the same event twice in one batch (redelivery).
    assert_eq!(sb.deliver(vec![event.clone(), event]).await.status, 202);
    assert_eq!(sb.arm.writes_to("/A/"), 1, "requests: {:#?}", sb.arm.requests());
}

#[tokio::test]
async fn delete_processed_before_create_ends_with_no_records() {
    let sb = sandbox(|_| {}).await;
    // The endpoint was created and deleted before we heard of either event.
    let id = sb.arm.put_endpoint(&clickhouse("ch-late"));
    sb.arm.delete_endpoint(&id);
    assert_eq!(sb.deliver(vec![events::event_grid(ResourceEvent::DeleteSuccess, &id)]).await.status, 202);
    assert_eq!(sb.deliver(vec![events::event_grid(ResourceEvent::WriteSuccess, &id)]).await.status, 202);
    assert!(sb.arm.all_records().is_empty(), "{:?}", sb.arm.all_records());
    assert_eq!(sb.arm.writes_to("/A/"), 0);

    // And a stale write event after a delete removes what an earlier write created.
    let (id, _) = sb.create(&clickhouse("ch-late2")).await;
    assert_eq!(sb.arm.all_records().len(), 1);
    sb.arm.delete_endpoint(&id);
    assert_eq!(sb.deliver(vec![events::cloud_event(ResourceEvent::WriteSuccess, &id)]).await.status, 202);
    assert!(sb.arm.all_records().is_empty());
}

#[tokio::test]
async fn shared_wildcard_keeps_the_survivor() {
    let sb = sandbox(|_| {}).await;
    let (a, _) = sb.create(&clickhouse("ch-a").with_ip("10.1.0.21".parse().unwrap())).await;
    let (_b, _) = sb.create(&clickhouse("ch-b").with_ip("10.1.0.22".parse().unwrap())).await;
    let rec = sb.arm.record(&sb.zone_id(CH_ZONE), "*").unwrap();
    assert_eq!(rec.addresses, ips(&["10.1.0.21", "10.1.0.22"]));
    sb.delete(&a).await;
    let rec = sb.arm.record(&sb.zone_id(CH_ZONE), "*").expect("survivor keeps the record");
    assert_eq!(rec.addresses, ips(&["10.1.0.22"]));
    assert_eq!(rec.metadata.keys().filter(|k| k.starts_with("plowner")).count(), 1, "{:?}", rec.metadata);
}

#[tokio::test]
async fn foreign_record_is_left_alone_and_reported() {
    let sb = sandbox(|_| {}).await;
    let zone = sb.zone_id(CH_ZONE);
    sb.arm.put_record(&zone, "*", &ips(&["10.9.9.9"]), json!({"owner": "terraform"}));
    let (id, delivery) = sb.create(&clickhouse("ch-conflict")).await;
    assert_eq!(delivery.status, 202);
    let rec = sb.arm.record(&zone, "*").unwrap();
    assert_eq!(rec.addresses, ips(&["10.9.9.9"]), "never overwritten");
    let report = sb.app.reconciler.reconcile(&ResourceId::parse(&id).unwrap(), Mode::DryRun).await;
    let conflict = report.plan.actions.iter().find_map(|a| match a {
        DnsAction::Conflict { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(conflict.is_some(), "reported as a conflict: {report:?}");
    // Deleting the endpoint never deletes the foreign record either.
    sb.delete(&id).await;
    assert_eq!(sb.arm.record(&zone, "*").unwrap().addresses, ips(&["10.9.9.9"]));
    assert_eq!(sb.arm.writes_to("/A/"), 0);
}

fn kusto(name: &str, cluster: &str) -> EndpointSpec {
    let target = format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Kusto/Clusters/{cluster}");
    EndpointSpec::resource(
        SUB,
        RG,
        name,
        "eastus2",
        &target,
        "cluster",
        vec![
            MemberSpec::new("Engine", &[&format!("{cluster}.eastus2.kusto.windows.net")]),
            MemberSpec::new("DataManagement", &[&format!("ingest-{cluster}.eastus2.kusto.windows.net")]),
            MemberSpec::new("blob-abc", &[&format!("{cluster}store.blob.core.windows.net")]),
        ],
    )
}

#[tokio::test]
async fn zone_group_records_belong_to_the_platform() {
    let sb = sandbox(|_| {}).await;
    let kusto_zone = sb.zone_id("privatelink.eastus2.kusto.windows.net");
    // PE 1 uses the platform's zone group: its records are the Network RP's.
    let id1 = sb.arm.put_endpoint(&kusto("adx-pe1", "adx1"));
    sb.arm.add_zone_group(&id1, &[&kusto_zone]);
    let before = sb.arm.record(&kusto_zone, "adx1").expect("zone group wrote it");
    assert_eq!(sb.deliver(vec![events::event_grid(ResourceEvent::WriteSuccess, &id1)]).await.status, 202);
    assert_eq!(sb.arm.record(&kusto_zone, "adx1").unwrap(), before, "zone-group record untouched");
    // The blob zone is not in the zone group: we write that one.
    assert!(sb.arm.record(&sb.zone_id("privatelink.blob.core.windows.net"), "adx1store").is_some());

    // PE 2 to the same cluster without a zone group collides with the platform's record.
    let (id2, _) = sb.create(&kusto("adx-pe2", "adx1")).await;
    assert_eq!(sb.arm.record(&kusto_zone, "adx1").unwrap(), before, "never overwritten");
    let report = sb.app.reconciler.reconcile(&ResourceId::parse(&id2).unwrap(), Mode::DryRun).await;
    assert!(
        report.plan.actions.iter().any(|a| matches!(a, DnsAction::Conflict { key, .. } if key.name == "adx1")),
        "{report:?}"
    );
}

#[tokio::test]
async fn arm_429_with_retry_after_then_success() {
    let sb = sandbox(|_| {}).await;
    sb.arm.inject(Fault::throttle(Some(Method::GET), "/privateEndpoints/ch-429", 1, 1));
    sb.arm.inject(Fault::throttle(Some(Method::PUT), "/A/", 1, 1));
    let started = std::time::Instant::now();
    let (_, delivery) = sb.create(&clickhouse("ch-429")).await;
    assert_eq!(delivery.status, 202);
    assert!(started.elapsed() >= Duration::from_secs(2), "Retry-After honoured: {:?}", started.elapsed());
    assert_eq!(sb.arm.pending_faults(), 0);
    assert_eq!(sb.arm.record(&sb.zone_id(CH_ZONE), "*").unwrap().addresses.len(), 1);
    let statuses: Vec<u16> = sb.arm.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2);
}

#[tokio::test]
async fn arm_500_then_success() {
    let sb = sandbox(|_| {}).await;
    sb.arm.inject(Fault::status(Some(Method::GET), "/networkInterfaces/", 500, 2));
    sb.arm.inject(Fault::status(Some(Method::PUT), "/A/", 503, 1));
    let (_, delivery) = sb.create(&clickhouse("ch-500")).await;
    assert_eq!(delivery.status, 202);
    assert_eq!(sb.arm.record(&sb.zone_id(CH_ZONE), "*").unwrap().addresses.len(), 1);
}

#[tokio::test]
async fn arm_timeout_then_success() {
    let sb = sandbox(|c| c.arm.request_timeout_secs = 1).await;
    sb.arm.inject(Fault::delay(Some(Method::GET), "/privateEndpoints/ch-slow", Duration::from_millis(1500), 1));
    let (_, delivery) = sb.create(&clickhouse("ch-slow")).await;
    assert_eq!(delivery.status, 202);
    assert_eq!(sb.arm.record(&sb.zone_id(CH_ZONE), "*").unwrap().addresses.len(), 1);
}

#[tokio::test]
async fn persistent_failure_is_queued_for_retry_and_converges_later() {
    let sb = sandbox(|c| {
        c.arm.max_retries = 1;
        c.reconcile.retry_base_secs = 1;
    })
    .await;
    sb.arm.inject(Fault::status(Some(Method::GET), "/privateEndpoints/ch-down", 500, 10));
    let (_id, delivery) = sb.create(&clickhouse("ch-down")).await;
    assert_eq!(delivery.status, 202, "acknowledged because the retry is queued");
    assert_eq!(sb.app.queue.depth().await.unwrap(), 1);
    assert!(sb.arm.all_records().is_empty());
    // ARM recovers; the queued retry converges.
    sb.arm.clear_faults();
    // Keep the sender alive: a dropped sender is a shutdown signal.
    let (_keep_running, running) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(private_link_autopilot::runtime::worker::run(
        sb.app.queue.clone(),
        sb.app.reconciler.clone(),
        sb.app.retry.clone(),
        Duration::from_secs(30),
        running,
    ));
    assert!(sb.drain(Duration::from_secs(15)).await, "retry drained");
    worker.abort();
    assert_eq!(sb.arm.all_records().len(), 1);
}

#[tokio::test]
async fn not_yet_provisioned_endpoint_is_retried_not_guessed() {
    let sb = sandbox(|_| {}).await;
    let (id, delivery) = sb.create(&clickhouse("ch-updating").provisioning("Updating")).await;
    assert_eq!(delivery.status, 202);
    assert!(sb.arm.all_records().is_empty());
    let report = sb.app.reconciler.reconcile(&ResourceId::parse(&id).unwrap(), Mode::DryRun).await;
    assert!(matches!(report.outcome, Outcome::Requeue { .. }), "{report:?}");
    assert_eq!(sb.app.queue.depth().await.unwrap(), 1, "a retry is scheduled");
}

#[tokio::test]
async fn client_budget_stays_inside_the_fakes_buckets() {
    // A small bucket at ARM and a slightly smaller one in the client (the margin absorbs
    // requests that leave evenly spaced and arrive bunched): no 429s.
    let options = SandboxOptions {
        arm: FakeArmOptions { reads: (10, 20.0), writes: (10, 20.0), ..FakeArmOptions::default() },
        zones: vec![CH_ZONE.into()],
        configure: Box::new(|c| {
            c.arm.reads_burst = 8;
            c.arm.reads_per_sec = 16.0;
            c.arm.writes_burst = 8;
            c.arm.writes_per_sec = 16.0;
        }),
        workers: 0,
        ..SandboxOptions::default()
    };
    let sb = Sandbox::start(options).await.unwrap();
    let mut batch = Vec::new();
    for i in 0..12 {
        let id = sb.arm.put_endpoint(&clickhouse(&format!("ch-budget-{i}")));
        batch.push(events::event_grid(ResourceEvent::WriteSuccess, &id));
    }
    assert_eq!(sb.deliver(batch).await.status, 202);
    let throttled = sb.arm.requests().iter().filter(|r| r.status == 429).count();
    assert_eq!(throttled, 0);
    assert_eq!(sb.arm.record(&sb.zone_id(CH_ZONE), "*").unwrap().addresses.len(), 12);
}
