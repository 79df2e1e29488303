//! Vendor allowlists end to end: Event Grid event -> handler -> reconcile plans vendor
//! work -> embedded queue -> worker re-reads ARM -> fake ClickHouse / Elastic / Zilliz,
//! with the ledger, retries, dead letters, approval re-checks and marks.

#[path = "support/azurite.rs"]
mod azurite;

use std::sync::Arc;
use std::time::Duration;

use autopilot_sandbox::fake_arm::{EndpointSpec, FakeArmOptions};
use autopilot_sandbox::fake_vendors::clickhouse::ClickHouseFakeOptions;
use autopilot_sandbox::fake_vendors::elastic::Hide;
use autopilot_sandbox::fake_vendors::{Fault, count_writes};
use autopilot_sandbox::harness::{SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB, Sandbox, SandboxOptions};
use autopilot_sandbox::vendors::{
    CLICKHOUSE_ALIAS as CH_ALIAS, ELASTIC_ALIAS as ES_ALIAS, SandboxVendors, ZILLIZ_ALIAS as ZZ_ALIAS, ZONES,
};
use private_link_autopilot::config::Config;
use private_link_autopilot::model::ResourceId;
use private_link_autopilot::queue::{Delivery, work};
use private_link_autopilot::runtime::worker;

fn clickhouse(name: &str) -> EndpointSpec {
    EndpointSpec::alias(SUB, RG, name, "eastus2", CH_ALIAS)
}
fn elastic(name: &str) -> EndpointSpec {
    EndpointSpec::alias(SUB, RG, name, "eastus2", ES_ALIAS)
}
fn zilliz(name: &str) -> EndpointSpec {
    EndpointSpec::alias(SUB, RG, name, "eastus2", ZZ_ALIAS).with_tag("autopilot.zilliz.clusters", "in01-3f2a9c")
}

struct World {
    sb: Sandbox,
    vendors: SandboxVendors,
    audit: tempfile::TempPath,
}

impl World {
    fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
    fn audit_types(&self) -> Vec<String> {
        self.audit_lines().iter().filter_map(|e| e["type"].as_str().map(str::to_owned)).collect()
    }
    async fn settle(&self) {
        assert!(self.sb.drain(Duration::from_secs(30)).await, "queue did not drain");
    }
}

async fn world(configure: impl FnOnce(&mut Config) + Send + 'static) -> World {
    world_with(|_| {}, 2, configure).await
}

/// A world whose fake ClickHouse has been adjusted first (e.g. more services), with
/// `workers` queue workers (0: the test drives the queue).
async fn world_with(
    clickhouse_fake: impl FnOnce(&mut ClickHouseFakeOptions),
    workers: usize,
    configure: impl FnOnce(&mut Config) + Send + 'static,
) -> World {
    let vendors = SandboxVendors::start_with(|ch, _, _| clickhouse_fake(ch)).await.expect("fake vendors start");
    let audit = tempfile::NamedTempFile::new().expect("temp").into_temp_path();
    let audit_path = audit.to_string_lossy().to_string();
    let mut base = Config::default();
    vendors.configure(&mut base);
    let vendor_section = base.vendors.clone();
    let options = SandboxOptions {
        arm: FakeArmOptions::default(),
        zones: ZONES.iter().map(|z| (*z).to_owned()).collect(),
        configure: Box::new(move |c: &mut Config| {
            c.vendors = vendor_section;
            c.reconcile.retry_base_secs = 1;
            c.reconcile.retry_max_secs = 2;
            c.audit.file = audit_path;
            configure(c);
        }),
        env: vendors.env(),
        workers,
        ..SandboxOptions::default()
    };
    let sb = Sandbox::start(options).await.expect("sandbox starts");
    World { sb, vendors, audit }
}

impl World {
    /// Starts one queue worker, as `serve` does (for worlds started with none).
    fn start_worker(&self) -> tokio::sync::watch::Sender<bool> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let app = &self.sb.app;
        tokio::spawn(worker::run(
            app.queue.clone(),
            app.reconciler.clone(),
            app.retry.clone(),
            Duration::from_secs(1),
            stopped,
        ));
        stop
    }

    /// The next queued vendor work item (skipping anything else), locked for `lock`.
    async fn take_vendor_item(&self, lock: Duration) -> Delivery {
        loop {
            let d = self.sb.app.queue.receive(Duration::from_secs(5), lock).await.unwrap().expect("a queued item");
            if d.dedupe_key.starts_with("vendor:") {
                return d;
            }
            self.sb.app.queue.complete(&d).await.unwrap();
        }
    }
}

fn pe_id(id: &str) -> ResourceId {
    ResourceId::parse_private_endpoint(id).unwrap()
}

/// Stop approval re-checks at once: these tests are about the vendor calls.
fn no_rechecks(c: &mut Config) {
    c.marks.recheck_window_secs = 0;
}

#[tokio::test]
async fn create_registers_with_each_vendor_and_delete_deregisters() {
    let w = world(no_rechecks).await;
    let (ch, _) = w.sb.create(&clickhouse("ch-1")).await;
    let (es, _) = w.sb.create(&elastic("es-1")).await;
    let (zz, _) = w.sb.create(&zilliz("zz-1")).await;
    w.settle().await;

    let ch_state = w.vendors.clickhouse.state();
    let ids: Vec<&String> = ch_state.services.values().flatten().collect();
    assert_eq!(ids.len(), 1, "{ch_state:?}");
    assert!(ids[0].eq_ignore_ascii_case(&ch), "ClickHouse gets the ARM id: {ids:?}");
    let es_state = w.vendors.elastic.state();
    assert_eq!(es_state.rulesets.len(), 1);
    let rs = es_state.rulesets.values().next().unwrap();
    assert_eq!(rs.rules[0].0, "es-1");
    assert_eq!(w.vendors.zilliz.state().endpoints.len(), 1);
    assert!(w.vendors.zilliz.state().endpoints[0].endpoint_id.starts_with("zz-1."));
    let ledger = w.sb.app.reconciler.vendor_sync().unwrap().ledger().list().await.unwrap();
    assert_eq!(ledger.len(), 3, "{ledger:?}");
    let types = w.audit_types();
    assert_eq!(types.iter().filter(|t| t.ends_with("vendor.registered")).count(), 3, "{types:?}");

    // The same events again: look-before-write, nothing new is written.
    w.vendors.clickhouse.clear_requests();
    w.vendors.elastic.clear_requests();
    w.vendors.zilliz.clear_requests();
    w.sb.create(&clickhouse("ch-1")).await;
    w.sb.create(&elastic("es-1")).await;
    w.sb.create(&zilliz("zz-1")).await;
    w.settle().await;
    assert_eq!(count_writes(&w.vendors.clickhouse.requests()), 0);
    assert_eq!(count_writes(&w.vendors.elastic.requests()), 0);
    assert_eq!(count_writes(&w.vendors.zilliz.requests()), 0);

    // Deletion: ARM forgets the guid, the ledger does not.
    for id in [&ch, &es, &zz] {
        w.sb.delete(id).await;
    }
    w.settle().await;
    assert!(w.vendors.clickhouse.state().services.values().all(Vec::is_empty));
    assert!(w.vendors.elastic.state().rulesets.is_empty());
    assert!(w.vendors.zilliz.state().endpoints.is_empty());
    assert!(w.sb.app.reconciler.vendor_sync().unwrap().ledger().list().await.unwrap().is_empty());
    let types = w.audit_types();
    assert_eq!(types.iter().filter(|t| t.ends_with("vendor.deregistered")).count(), 3, "{types:?}");
}

#[tokio::test]
async fn transient_failures_are_retried_until_they_pass() {
    let w = world(no_rechecks).await;
    w.vendors.clickhouse.inject(Fault::ServerError, 2);
    w.vendors.elastic.inject(Fault::TooManyRequests { retry_after: Some(Duration::from_secs(1)) }, 1);
    w.vendors.elastic.hide_connections(Hide::Requests(2));
    w.sb.create(&clickhouse("ch-retry")).await;
    w.sb.create(&elastic("es-retry")).await;
    w.settle().await;
    assert_eq!(w.vendors.clickhouse.state().services.values().flatten().count(), 1);
    assert_eq!(w.vendors.elastic.state().rulesets.len(), 1);
    let stats = w.sb.app.stats.snapshot();
    assert!(stats["vendor_calls_failed"].as_u64().unwrap() >= 3, "{stats}");
    assert_eq!(stats["dead_lettered"], 0, "{stats}");
}

#[tokio::test]
async fn a_vendor_503_three_times_then_200_gives_exactly_one_registration() {
    let w = world(no_rechecks).await;
    w.vendors.clickhouse.inject(Fault::Status(503), 3);
    w.sb.create(&clickhouse("ch-503")).await;
    w.settle().await;
    let ids: Vec<String> = w.vendors.clickhouse.state().services.values().flatten().cloned().collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let requests = w.vendors.clickhouse.requests();
    assert_eq!(count_writes(&requests), 1, "one PATCH: the 503s hit the reads before it: {requests:?}");
    let stats = w.sb.app.stats.snapshot();
    assert_eq!(stats["vendor_calls_failed"], 3, "{stats}");
    assert_eq!(stats["dead_lettered"], 0, "{stats}");
}

#[tokio::test]
async fn a_worker_killed_after_the_vendor_call_leaves_one_registration_after_redelivery() {
    let w = world_with(|_| {}, 0, no_rechecks).await;
    let (id, _) = w.sb.create(&clickhouse("ch-crash")).await;
    // A worker takes the item, makes the vendor call, and dies before completing it.
    let d = w.take_vendor_item(Duration::from_millis(500)).await;
    let (item, endpoint) = work::parse(&d.body).unwrap();
    assert_eq!(endpoint, pe_id(&id));
    worker::execute(&w.sb.app.reconciler, &item, &endpoint).await;
    assert_eq!(w.vendors.clickhouse.state().services.values().flatten().count(), 1);
    drop(d);
    // The lock expires; a new worker gets the item again and finds it already done.
    let _stop = w.start_worker();
    w.settle().await;
    assert_eq!(w.vendors.clickhouse.state().services.values().flatten().count(), 1);
    let requests = w.vendors.clickhouse.requests();
    assert_eq!(count_writes(&requests), 1, "the redelivery read, saw it there, wrote nothing: {requests:?}");
    assert_eq!(requests.len(), 3, "GET+PATCH, then the redelivery's GET: {requests:?}");
    assert!(w.sb.app.queue.dead_letters().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_same_message_twice_gives_one_registration() {
    let w = world_with(|_| {}, 0, no_rechecks).await;
    let (id, _) = w.sb.create(&zilliz("zz-twice")).await;
    // The message the handler queued, sent again (a retried send) and delivered twice.
    let guid = w.sb.arm.resource(&id).unwrap()["properties"]["resourceGuid"].as_str().unwrap().to_owned();
    let again = work::vendor_work(&pe_id(&id), "zilliz", &guid, "sent again");
    w.sb.app.queue.enqueue(again).await.unwrap();
    assert_eq!(w.sb.app.queue.depth().await.unwrap(), 1, "duplicate detection keeps one");
    let d = w.take_vendor_item(Duration::from_secs(30)).await;
    let (item, endpoint) = work::parse(&d.body).unwrap();
    worker::execute(&w.sb.app.reconciler, &item, &endpoint).await;
    worker::execute(&w.sb.app.reconciler, &item, &endpoint).await;
    w.sb.app.queue.complete(&d).await.unwrap();
    let st = w.vendors.zilliz.state();
    assert_eq!(st.endpoints.len(), 1, "{st:?}");
    let creates = w
        .vendors
        .zilliz
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/privateEndpoints"))
        .count();
    assert_eq!(creates, 1, "the second run looked first and wrote nothing");
}

#[tokio::test]
async fn a_delete_before_the_register_is_processed_leaves_nothing_registered() {
    let w = world_with(|_| {}, 0, no_rechecks).await;
    let (ch, _) = w.sb.create(&clickhouse("ch-early-delete")).await;
    let (es, _) = w.sb.create(&elastic("es-early-delete")).await;
    assert_eq!(w.sb.app.queue.depth().await.unwrap(), 2, "two register items waiting");
    w.sb.delete(&ch).await;
    w.sb.delete(&es).await;
    let _stop = w.start_worker();
    w.settle().await;
    assert!(w.vendors.clickhouse.state().services.values().all(Vec::is_empty));
    assert!(w.vendors.elastic.state().rulesets.is_empty());
    assert_eq!(count_writes(&w.vendors.clickhouse.requests()), 0, "never registered, so nothing to undo");
    assert_eq!(count_writes(&w.vendors.elastic.requests()), 0);
    assert!(w.sb.app.reconciler.vendor_sync().unwrap().ledger().list().await.unwrap().is_empty());
}

/// ClickHouse's limit shape (10 requests per window per key) on a 200 ms window, on both
/// the fake and the client: 200 endpoints need 400 requests, so at least ~8 s of pacing,
/// and not one of them may be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_200_endpoints_stays_inside_the_vendor_rate_limit() {
    const WINDOW_MS: u64 = 200;
    let w = world_with(
        |ch| ch.rate_limit = Some((10, Duration::from_millis(WINDOW_MS))),
        4,
        |c| {
            no_rechecks(c);
            c.vendors.clickhouse.rate_limit_window_ms = WINDOW_MS;
        },
    )
    .await;
    let started = std::time::Instant::now();
    for i in 0..200 {
        let id = w.sb.arm.put_endpoint(&clickhouse(&format!("ch-burst-{i:03}")));
        w.sb.app.queue.enqueue(work::vendor_work(&pe_id(&id), "clickhouse", "", "burst")).await.unwrap();
    }
    assert!(w.sb.drain(Duration::from_secs(90)).await, "queue drained");
    let elapsed = started.elapsed();
    let ids = w.vendors.clickhouse.state().services.values().flatten().count();
    assert_eq!(ids, 200);
    let stats = w.sb.app.stats.snapshot();
    assert_eq!(stats["vendor_calls_failed"], 0, "no 429 (it would be a failed call): {stats}");
    assert_eq!(w.vendors.clickhouse.requests().len(), 400);
    let min = Duration::from_millis(WINDOW_MS * (400 / 10 - 1));
    assert!(elapsed >= min, "paced: {elapsed:?} >= {min:?}");
}

#[tokio::test]
async fn a_permanent_failure_is_dead_lettered_with_a_readable_reason_and_no_secret() {
    let w = world(|c| {
        no_rechecks(c);
        // A deployment Elastic does not know: its API answers 404 on association.
        c.vendors.elastic.deployment_ids = vec!["no-such-deployment".into()];
    })
    .await;
    let (id, _) = w.sb.create(&elastic("es-bad")).await;
    w.settle().await;
    let dead = w.sb.app.queue.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = &dead[0].reason;
    // The endpoint in short in the reason, its full id beside it.
    assert!(reason.contains("elastic") && reason.contains("/es-bad: ") && reason.contains("404"), "{reason}");
    assert!(dead[0].correlation_id.eq_ignore_ascii_case(&id), "{dead:?}");
    let lines = w.audit_lines();
    let dl: Vec<_> = lines.iter().filter(|e| e["type"].as_str().unwrap().ends_with("vendor.dead_lettered")).collect();
    assert_eq!(dl.len(), 1, "{lines:?}");
    assert_eq!(dl[0]["subject"], id.as_str());
    let everything = format!("{reason}\n{}", std::fs::read_to_string(&w.audit).unwrap());
    for secret in w.vendors.secrets() {
        assert!(!everything.contains(&secret), "a secret leaked into a reason or an audit event");
    }
}

#[tokio::test]
async fn wrong_credentials_are_a_configuration_dead_letter() {
    let vendors_key = "CLICKHOUSE_KEY_SECRET";
    // A world whose ClickHouse secret is wrong.
    let vendors = SandboxVendors::start().await.unwrap();
    let mut base = Config::default();
    vendors.configure(&mut base);
    let section = base.vendors.clone();
    let mut env = vendors.env();
    for (k, v) in env.iter_mut() {
        if k == vendors_key {
            *v = "wrong-secret-value-123".into();
        }
    }
    let sb = Sandbox::start(SandboxOptions {
        zones: ZONES.iter().map(|z| (*z).to_owned()).collect(),
        configure: Box::new(move |c| {
            c.vendors = section;
            c.reconcile.retry_base_secs = 1;
            c.marks.recheck_window_secs = 0;
        }),
        env,
        workers: 1,
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    sb.create(&clickhouse("ch-badkey")).await;
    assert!(sb.drain(Duration::from_secs(20)).await);
    let dead = sb.app.queue.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("401") && dead[0].reason.contains("credentials"), "{}", dead[0].reason);
    assert!(!dead[0].reason.contains("wrong-secret-value-123"));
    assert_eq!(dead[0].delivery_count, 1, "configuration errors are not retried");
}

#[tokio::test]
async fn a_register_message_for_a_deleted_endpoint_deregisters() {
    let w = world(no_rechecks).await;
    let (id, _) = w.sb.create(&elastic("es-gone")).await;
    w.settle().await;
    assert_eq!(w.vendors.elastic.state().rulesets.len(), 1);
    // The endpoint disappears, but only a (stale) register message arrives.
    w.sb.arm.delete_endpoint(&id);
    let rid = private_link_autopilot::model::ResourceId::parse_private_endpoint(&id).unwrap();
    w.sb.app
        .queue
        .enqueue(private_link_autopilot::queue::work::vendor_work(&rid, "elastic", "", "stale"))
        .await
        .unwrap();
    w.settle().await;
    assert!(w.vendors.elastic.state().rulesets.is_empty(), "re-read ARM, so it became a deregistration");
}

#[tokio::test]
async fn a_routing_change_withdraws_the_endpoint_from_the_targets_it_left() {
    const SECOND: &str = "svc-second";
    let w = world_with(|ch| ch.service_ids.push(SECOND.into()), 2, no_rechecks).await;
    let first = ClickHouseFakeOptions::default().service_ids[0].clone();
    let (id, _) = w.sb.create(&clickhouse("ch-moves")).await;
    w.settle().await;
    let st = w.vendors.clickhouse.state();
    assert!(st.services.values().all(|ids| ids.len() == 1), "both default services have it: {st:?}");

    // The team narrows it to the second service with the targets tag.
    let moved = clickhouse("ch-moves").with_tag("autopilot.vendor.targets", SECOND);
    w.sb.create(&moved).await;
    w.settle().await;
    let st = w.vendors.clickhouse.state();
    assert!(st.services[&first].is_empty(), "withdrawn from the service it left: {st:?}");
    assert_eq!(st.services[SECOND].len(), 1, "kept where it still goes: {st:?}");
    let ledger = w.sb.app.reconciler.vendor_sync().unwrap().ledger().list().await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].endpoint.targets, vec![SECOND.to_string()], "the ledger follows the route");
    let lines = w.audit_lines();
    let withdrawn: Vec<_> =
        lines.iter().filter(|e| e["type"].as_str().unwrap().ends_with("vendor.withdrawn")).collect();
    assert_eq!(withdrawn.len(), 1, "{lines:?}");
    assert_eq!(withdrawn[0]["data"]["detail"]["targets"], serde_json::json!([first]));

    // Deleting it then leaves nothing anywhere.
    w.sb.delete(&id).await;
    w.settle().await;
    assert!(w.vendors.clickhouse.state().services.values().all(Vec::is_empty));
    assert!(w.sb.app.reconciler.vendor_sync().unwrap().ledger().list().await.unwrap().is_empty());
}

/// Vendor drift the sweep repairs: someone removed a live endpoint from the vendor's
/// list (re-registered), and an endpoint was deleted without its event reaching us
/// (deregistered, found through the ledger).
#[tokio::test]
async fn the_sweep_re_registers_vendor_drift_and_deregisters_vendor_orphans() {
    let w = world(|c| {
        no_rechecks(c);
        c.sweep.subscriptions = vec![SUB.into()];
    })
    .await;
    let (live, _) = w.sb.create(&clickhouse("ch-live")).await;
    let (gone, _) = w.sb.create(&zilliz("zz-gone")).await;
    w.settle().await;
    // Drift: the ClickHouse list is edited by hand; the Zilliz endpoint is deleted silently.
    let mut st = w.vendors.clickhouse.state();
    for ids in st.services.values_mut() {
        ids.clear();
    }
    w.vendors.clickhouse.set_state(st);
    w.sb.arm.delete_endpoint(&gone);
    w.sb.host.invoke_timer("Sweep", false).await.unwrap();
    w.settle().await;
    let ids: Vec<String> = w.vendors.clickhouse.state().services.values().flatten().cloned().collect();
    assert_eq!(ids.len(), 1, "re-registered: {ids:?}");
    assert!(ids[0].eq_ignore_ascii_case(&live));
    assert!(w.vendors.zilliz.state().endpoints.is_empty(), "the orphan was deregistered");
    let ledger = w.sb.app.reconciler.vendor_sync().unwrap().ledger().list().await.unwrap();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
}

/// A ledger entry written before targets were spelled out says `[]` for "the defaults":
/// a routing change still withdraws the endpoint from the defaults it left.
#[tokio::test]
async fn a_routing_change_from_an_old_ledger_entry_withdraws_from_the_defaults() {
    const SECOND: &str = "svc-second";
    let w = world_with(|ch| ch.service_ids.push(SECOND.into()), 2, no_rechecks).await;
    let first = ClickHouseFakeOptions::default().service_ids[0].clone();
    w.sb.create(&clickhouse("ch-legacy")).await;
    w.settle().await;
    let ledger = w.sb.app.reconciler.vendor_sync().unwrap().ledger().clone();
    let listed = ledger.list().await.unwrap().remove(0);
    let mut entry = ledger.get("clickhouse", &listed.endpoint.pe_id).await.unwrap().unwrap();
    entry.endpoint.targets.clear();
    ledger.record("clickhouse", &entry.endpoint, Some(&entry.version)).await.unwrap();

    w.sb.create(&clickhouse("ch-legacy").with_tag("autopilot.vendor.targets", &SECOND.to_uppercase())).await;
    w.settle().await;
    let st = w.vendors.clickhouse.state();
    assert!(st.services[&first].is_empty(), "{st:?}");
    assert_eq!(st.services[SECOND].len(), 1, "{st:?}");
    let entry = ledger.list().await.unwrap().remove(0);
    assert_eq!(entry.endpoint.targets, vec![SECOND.to_string()], "the tag's id in the configuration's spelling");
}

#[tokio::test]
async fn an_endpoint_matching_no_rule_is_reported_not_registered() {
    let w = world(|c| {
        no_rechecks(c);
        c.vendors.clickhouse.service_ids.clear();
        c.vendors.rules = vec![private_link_autopilot::effects::vendors::routing::VendorRule {
            vendor: "clickhouse".into(),
            region: "westeurope".into(),
            targets: vec!["svc-eu".into()],
            ..Default::default()
        }];
    })
    .await;
    w.sb.create(&clickhouse("ch-nowhere")).await;
    w.settle().await;
    assert!(w.vendors.clickhouse.state().services.values().all(Vec::is_empty));
    assert_eq!(w.vendors.clickhouse.requests().len(), 0, "no vendor call at all");
    let lines = w.audit_lines();
    let unmatched: Vec<_> =
        lines.iter().filter(|e| e["type"].as_str().unwrap().ends_with("vendor.unmatched")).collect();
    assert_eq!(unmatched.len(), 1, "{lines:?}");
    assert!(unmatched[0]["data"]["reason"].as_str().unwrap().contains("no [[vendors.rules]] entry"));
}

#[tokio::test]
async fn a_vendor_that_approves_after_some_rechecks_gets_the_endpoint_marked() {
    let w = world(|_| {}).await;
    let (id, _) = w.sb.create(&zilliz("zz-approve")).await;
    // Registered, still Pending: re-checks keep coming while the vendor thinks.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(w.vendors.zilliz.state().endpoints.len(), 1);
    let tags = w.sb.arm.resource(&id).unwrap()["tags"].clone();
    assert_eq!(tags["plautopilot-state"], "Pending", "{tags}");
    assert!(tags["plautopilot-done"].as_str().unwrap().contains("vendor:zilliz"), "{tags}");
    assert_eq!(tags["autopilot.zilliz.clusters"], "in01-3f2a9c", "foreign tags untouched");
    // The vendor approves in its own subscription: no event reaches us.
    w.sb.arm.set_connection_status(&id, "Approved");
    w.settle().await;
    let tags = w.sb.arm.resource(&id).unwrap()["tags"].clone();
    assert_eq!(tags["plautopilot-state"], "Approved", "{tags}");
    let types = w.audit_types();
    assert!(types.iter().filter(|t| t.ends_with("endpoint.marked")).count() >= 2, "{types:?}");
}

#[tokio::test]
async fn a_dead_lettered_vendor_item_is_replayed_once_the_cause_is_fixed() {
    let w = world(|c| {
        no_rechecks(c);
        c.reconcile.retry_window_secs = 2;
    })
    .await;
    // ClickHouse is down for longer than the retry window.
    w.vendors.clickhouse.inject(Fault::ServerError, 1000);
    w.sb.create(&clickhouse("ch-down")).await;
    w.settle().await;
    let dead = w.sb.app.queue.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].reason.contains("still failing after") && dead[0].reason.contains("HTTP 500"),
        "{}",
        dead[0].reason
    );

    // The operator fixes the cause (ClickHouse is back) and replays: registered once.
    w.vendors.clickhouse.clear_faults();
    // One last hiccup after the replay: a fresh retry window, so it is retried.
    w.vendors.clickhouse.inject(Fault::ServerError, 1);
    w.sb.app.queue.replay(&dead[0].message_id).await.unwrap();
    assert!(w.sb.app.queue.replay(&dead[0].message_id).await.is_err(), "a second replay finds nothing");
    w.settle().await;
    assert_eq!(w.vendors.clickhouse.state().services.values().flatten().count(), 1);
    assert!(w.sb.app.queue.dead_letters().await.unwrap().is_empty());
}

// ------------------------------------------------ several instances, one endpoint (F6, F11)
//
// Vendor work for one endpoint is not serialised across function-app instances. These
// tests run two `VendorSync`s ("instance A" and "instance B": their own vendor clients,
// rate limiters and caches) against the same fake vendors and the same ledger, with vendor
// latency so their calls overlap.

mod races {
    use std::sync::Arc;
    use std::time::Duration;

    use autopilot_sandbox::harness::{SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB};
    use autopilot_sandbox::vendors::{
        CLICKHOUSE_ALIAS as CH_ALIAS, ELASTIC_ALIAS as ES_ALIAS, SandboxVendors, ZILLIZ_ALIAS as ZZ_ALIAS,
    };
    use private_link_autopilot::config::Config;
    use private_link_autopilot::effects::vendors::build_vendors;
    use private_link_autopilot::effects::vendors::ledger::{Ledger, SqliteLedger};
    use private_link_autopilot::effects::vendors::sync::{SyncError, VendorDone, VendorSync};
    use private_link_autopilot::effects::vendors::zilliz::endpoint_id as zilliz_id;
    use private_link_autopilot::model::PrivateEndpoint;
    use serde_json::json;

    pub struct Instances {
        pub vendors: SandboxVendors,
        pub ledger: Arc<dyn Ledger>,
        pub a: VendorSync,
        pub b: VendorSync,
    }

    pub async fn two_instances(latency: Duration) -> Instances {
        two_instances_with(latency, Arc::new(SqliteLedger::open_in_memory().unwrap())).await
    }

    /// Two instances sharing `ledger` (SQLite, the Table fake or Azurite).
    pub async fn two_instances_with(latency: Duration, ledger: Arc<dyn Ledger>) -> Instances {
        let vendors = SandboxVendors::start_with(|ch, es, zz| {
            ch.rate_limit = None;
            es.rate_limit = None;
            zz.rate_limit = None;
        })
        .await
        .expect("fake vendors start");
        vendors.clickhouse.set_latency(latency);
        vendors.elastic.set_latency(latency);
        vendors.zilliz.set_latency(latency);
        let mut c = Config::default();
        vendors.configure(&mut c);
        c.vendors.clickhouse.rate_limit_requests = 10_000;
        c.vendors.elastic.rate_limit_requests = 10_000;
        c.vendors.zilliz.rate_limit_requests = 10_000;
        let env = vendors.env();
        let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let instance =
            || VendorSync::new(build_vendors(&c.vendors, lookup).unwrap(), c.vendors.clone(), ledger.clone());
        let (a, b) = (instance(), instance());
        Instances { vendors, ledger, a, b }
    }

    /// A private endpoint as ARM returns it.
    pub fn endpoint(name: &str, guid: &str, alias: &str) -> PrivateEndpoint {
        PrivateEndpoint::from_arm_json(&json!({
            "id": format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/privateEndpoints/{name}"),
            "name": name,
            "location": "eastus2",
            "tags": {"autopilot.zilliz.clusters": "in01-3f2a9c"},
            "properties": {
                "resourceGuid": guid,
                "provisioningState": "Succeeded",
                "privateLinkServiceConnections": [{"name": "c", "properties": {
                    "privateLinkServiceId": alias,
                    "privateLinkServiceConnectionState": {"status": "Pending"},
                }}],
            },
        }))
        .unwrap()
    }

    pub fn clickhouse(name: &str, guid: &str) -> PrivateEndpoint {
        endpoint(name, guid, CH_ALIAS)
    }
    pub fn elastic(name: &str, guid: &str) -> PrivateEndpoint {
        endpoint(name, guid, ES_ALIAS)
    }
    pub fn zilliz(name: &str, guid: &str) -> PrivateEndpoint {
        endpoint(name, guid, ZZ_ALIAS)
    }

    impl Instances {
        /// Elastic rulesets whose rule names this guid.
        pub fn elastic_rulesets(&self, guid: &str) -> Vec<(String, Vec<String>)> {
            let st = self.vendors.elastic.state();
            st.rulesets
                .values()
                .filter(|r| r.rules.iter().any(|(_, g)| g == guid))
                .map(|r| (r.id.clone(), r.deployments.clone()))
                .collect()
        }
        pub fn zilliz_endpoints(&self, name: &str) -> Vec<String> {
            let prefix = format!("{name}.");
            let st = self.vendors.zilliz.state();
            st.endpoints.iter().filter(|e| e.endpoint_id.starts_with(&prefix)).map(|e| e.endpoint_id.clone()).collect()
        }
        /// How many ClickHouse services list this endpoint id (any casing), and how often.
        pub fn clickhouse_listings(&self, pe_id: &str) -> usize {
            let st = self.vendors.clickhouse.state();
            st.services.values().flatten().filter(|x| x.eq_ignore_ascii_case(pe_id)).count()
        }
    }

    pub fn registered(r: &Result<VendorDone, impl std::fmt::Display>) -> bool {
        matches!(r, Ok(VendorDone::Registered { .. }))
    }

    /// A failure the queue retries (after reading ARM again).
    pub fn transient(e: &SyncError) -> bool {
        match e {
            SyncError::Vendor(e) => e.is_transient(),
            SyncError::Ledger(e) => e.is_transient(),
        }
    }

    pub fn zilliz_endpoint_id(name: &str, guid: &str) -> String {
        zilliz_id(name, guid)
    }
}

/// F6: two instances register the same new endpoint at the same moment: one Elastic
/// ruleset (associated with every deployment), no ClickHouse "already added" failure,
/// no duplicate Zilliz endpoint; both instances report success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_registering_at_once_make_one_registration_per_vendor() {
    let w = races::two_instances(Duration::from_millis(120)).await;
    let guid = "5dc81a36-0000-4000-8000-0000000000e1";

    let es = races::elastic("es-race", guid);
    let (a, b) = tokio::join!(w.a.register("elastic", &es), w.b.register("elastic", &es));
    assert!(races::registered(&a) && races::registered(&b), "{a:?} {b:?}");
    let rulesets = w.elastic_rulesets(guid);
    assert_eq!(rulesets.len(), 1, "exactly one ruleset survives the race: {rulesets:?}");
    let mut deployments = rulesets[0].1.clone();
    deployments.sort();
    let mut expected = autopilot_sandbox::fake_vendors::elastic::ElasticFakeOptions::default().deployment_ids;
    expected.sort();
    assert_eq!(deployments, expected, "the kept ruleset is associated with every deployment");

    let ch = races::clickhouse("ch-race", guid);
    let (a, b) = tokio::join!(w.a.register("clickhouse", &ch), w.b.register("clickhouse", &ch));
    assert!(races::registered(&a) && races::registered(&b), "no 'already added' failure: {a:?} {b:?}");
    let services = ClickHouseFakeOptions::default().service_ids.len();
    assert_eq!(w.clickhouse_listings(ch.id.as_str()), services, "{:?}", w.vendors.clickhouse.state());

    let zz = races::zilliz("zz-race", guid);
    let (a, b) = tokio::join!(w.a.register("zilliz", &zz), w.b.register("zilliz", &zz));
    assert!(races::registered(&a) && races::registered(&b), "{a:?} {b:?}");
    assert_eq!(w.zilliz_endpoints("zz-race"), vec![races::zilliz_endpoint_id("zz-race", guid)]);

    let entries = w.ledger.list().await.unwrap();
    assert_eq!(entries.len(), 3, "one ledger entry per vendor: {entries:?}");

    // Both deregister at once too: nothing left anywhere, no failure.
    for (vendor, pe) in [("elastic", &es), ("clickhouse", &ch), ("zilliz", &zz)] {
        let (a, b) = tokio::join!(w.a.deregister(vendor, &pe.id), w.b.deregister(vendor, &pe.id));
        assert!(a.is_ok() && b.is_ok(), "{vendor}: {a:?} {b:?}");
    }
    assert!(w.elastic_rulesets(guid).is_empty());
    assert_eq!(w.clickhouse_listings(ch.id.as_str()), 0);
    assert!(w.zilliz_endpoints("zz-race").is_empty());
    assert!(w.ledger.list().await.unwrap().is_empty());
}

/// F6: instance B registers (it read ARM just before the delete) while instance A
/// deregisters (it read ARM just after), started at many offsets from each other. However
/// they interleave, an endpoint the vendor still allowlists has a ledger entry, so the
/// next deregistration (the sweep's) removes it.
async fn register_racing_deregister(w: &races::Instances) {
    let guid = "5dc81a36-0000-4000-8000-0000000000e2";
    let mut unrecorded = Vec::new();
    for (round, offset_ms) in (0..=200).step_by(10).enumerate() {
        let pe = races::clickhouse(&format!("ch-flip-{round}"), guid);
        let register = w.b.register("clickhouse", &pe);
        let deregister = async {
            tokio::time::sleep(Duration::from_millis(offset_ms)).await;
            w.a.deregister("clickhouse", &pe.id).await
        };
        let (r, d) = tokio::join!(register, deregister);
        assert!(r.is_ok() && d.is_ok(), "offset {offset_ms} ms: {r:?} {d:?}");
        let allowlisted = w.clickhouse_listings(pe.id.as_str()) > 0;
        let recorded = w.ledger.get("clickhouse", pe.id.as_str()).await.unwrap().is_some();
        if allowlisted && !recorded {
            unrecorded.push(offset_ms);
        }
        // What the sweep does for an endpoint ARM no longer has.
        w.a.deregister("clickhouse", &pe.id).await.unwrap();
        assert_eq!(w.clickhouse_listings(pe.id.as_str()), 0, "offset {offset_ms} ms: cleaned up");
    }
    assert!(unrecorded.is_empty(), "allowlisted with no ledger entry at offsets (ms) {unrecorded:?}");
    assert!(w.ledger.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_racing_a_deregister_never_leaves_an_unrecorded_allowlisting() {
    register_racing_deregister(&races::two_instances(Duration::from_millis(25)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_race_with_the_table_ledger_on_the_fake_table_service() {
    use autopilot_sandbox::fake_table::FakeTableService;
    use private_link_autopilot::arm::Secret;
    use private_link_autopilot::arm::credential::StaticToken;
    use private_link_autopilot::effects::vendors::ledger::TableLedger;
    let fake = FakeTableService::start("t", 1000).await.unwrap();
    let ledger = TableLedger::new(&fake.base_url(), "vendorregistrations", Arc::new(StaticToken(Secret::new("t"))));
    let w = races::two_instances_with(Duration::from_millis(25), Arc::new(ledger.unwrap())).await;
    register_racing_deregister(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_race_with_the_table_ledger_on_azurite() {
    let Some(a) = azurite::azurite() else { return };
    let ledger = azurite::azurite_ledger(a, azurite::storage_token(3600));
    let w = races::two_instances_with(Duration::from_millis(25), Arc::new(ledger)).await;
    register_racing_deregister(&w).await;
}

/// F11: an endpoint deleted and recreated under the same name (new `resourceGuid`) before
/// its vendor item runs: the old guid's Elastic ruleset and Zilliz endpoint are removed,
/// and the ledger names the new one, so the final deletion leaves nothing behind.
#[tokio::test]
async fn an_endpoint_recreated_under_the_same_name_replaces_its_old_registration() {
    let w = races::two_instances(Duration::ZERO).await;
    let (old, new) = ("97d744b9-0000-4000-8000-000000000001", "c324e073-0000-4000-8000-000000000002");

    w.a.register("elastic", &races::elastic("es-re", old)).await.unwrap();
    w.a.register("zilliz", &races::zilliz("zz-re", old)).await.unwrap();
    assert_eq!(w.elastic_rulesets(old).len(), 1);

    // Recreated: the next register (on either instance) sees the new guid.
    let es = races::elastic("es-re", new);
    let zz = races::zilliz("zz-re", new);
    w.b.register("elastic", &es).await.unwrap();
    w.b.register("zilliz", &zz).await.unwrap();
    assert!(w.elastic_rulesets(old).is_empty(), "the old guid's ruleset is withdrawn");
    assert_eq!(w.elastic_rulesets(new).len(), 1);
    assert_eq!(w.zilliz_endpoints("zz-re"), vec![races::zilliz_endpoint_id("zz-re", new)]);
    for (vendor, pe) in [("elastic", &es), ("zilliz", &zz)] {
        let entry = w.ledger.get(vendor, pe.id.as_str()).await.unwrap().unwrap();
        assert_eq!(entry.endpoint.resource_guid.as_deref(), Some(new), "{vendor}");
    }

    // The final delete leaves nothing.
    w.a.deregister("elastic", &es.id).await.unwrap();
    w.a.deregister("zilliz", &zz.id).await.unwrap();
    assert!(w.vendors.elastic.state().rulesets.is_empty(), "{:?}", w.vendors.elastic.state());
    assert!(w.zilliz_endpoints("zz-re").is_empty());
    assert!(w.ledger.list().await.unwrap().is_empty());
}

/// F11 end to end: an endpoint deleted and recreated under the same name, the delete's
/// event lost, so the only vendor item that runs is the recreated endpoint's register.
/// The old guid's Elastic ruleset and Zilliz endpoint are removed, and the final delete
/// leaves nothing behind.
#[tokio::test]
async fn an_endpoint_replaced_under_the_same_name_leaves_no_orphan_end_to_end() {
    let w = world(no_rechecks).await;
    let (es, _) = w.sb.create(&elastic("es-re")).await;
    let (zz, _) = w.sb.create(&zilliz("zz-re")).await;
    w.settle().await;
    let guids = |w: &World| -> Vec<String> {
        w.vendors.elastic.state().rulesets.values().flat_map(|r| r.rules.iter().map(|(_, g)| g.clone())).collect()
    };
    let zilliz_ids = |w: &World| -> Vec<String> {
        w.vendors.zilliz.state().endpoints.iter().map(|e| e.endpoint_id.clone()).collect()
    };
    let old = guids(&w);
    assert_eq!(old.len(), 1, "{old:?}");
    let old_zilliz = zilliz_ids(&w);
    assert_eq!(old_zilliz.len(), 1, "{old_zilliz:?}");

    // Deleted and recreated (new resourceGuid); the delete's event never arrives.
    assert!(w.sb.arm.delete_endpoint(&es));
    assert!(w.sb.arm.delete_endpoint(&zz));
    w.sb.create(&elastic("es-re")).await;
    w.sb.create(&zilliz("zz-re")).await;
    w.settle().await;
    let new = guids(&w);
    assert_eq!(new.len(), 1, "only the new endpoint's ruleset: {new:?}");
    assert_ne!(new, old);
    let new_zilliz = zilliz_ids(&w);
    assert_eq!(new_zilliz.len(), 1, "only the new endpoint's Zilliz endpoint: {new_zilliz:?}");
    assert_ne!(new_zilliz, old_zilliz);

    w.sb.delete(&es).await;
    w.sb.delete(&zz).await;
    w.settle().await;
    assert!(w.vendors.elastic.state().rulesets.is_empty(), "{:?}", w.vendors.elastic.state());
    assert!(w.vendors.zilliz.state().endpoints.is_empty(), "{:?}", w.vendors.zilliz.state());
    assert!(w.sb.app.reconciler.vendor_sync().unwrap().ledger().list().await.unwrap().is_empty());
}

/// F11 under a race: instance B still registers the old endpoint (its read of ARM is
/// stale) while instance A registers the endpoint that replaced it. Whatever the
/// interleaving, the vendor ends with only what the ledger names (the queue's retry of a
/// stale item re-reads ARM and registers the live endpoint, so B's item may fail
/// transiently, never leave an unrecorded ruleset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_register_racing_the_replacement_leaves_only_what_the_ledger_names() {
    let w = races::two_instances(Duration::from_millis(20)).await;
    for (round, offset_ms) in (0..=160).step_by(20).enumerate() {
        let name = format!("es-swap-{round}");
        let (old, new) = (
            format!("0000000{round}-old0-4000-8000-000000000001"),
            format!("0000000{round}-new0-4000-8000-000000000002"),
        );
        let stale = races::elastic(&name, &old);
        let live = races::elastic(&name, &new);
        let replacement = async {
            tokio::time::sleep(Duration::from_millis(offset_ms)).await;
            w.a.register("elastic", &live).await
        };
        let (b, a) = tokio::join!(w.b.register("elastic", &stale), replacement);
        for r in [&a, &b] {
            assert!(races::registered(r) || r.as_ref().is_err_and(races::transient), "offset {offset_ms}: {r:?}");
        }
        // The queue retries whichever item failed, after reading ARM: the live endpoint.
        if a.is_err() || b.is_err() {
            w.a.register("elastic", &live).await.unwrap();
        }
        let entry = w.ledger.get("elastic", live.id.as_str()).await.unwrap().expect("recorded");
        assert_eq!(entry.endpoint.resource_guid.as_deref(), Some(new.as_str()), "offset {offset_ms}");
        assert!(w.elastic_rulesets(&old).is_empty(), "offset {offset_ms}: the stale endpoint's ruleset is gone");
        assert_eq!(w.elastic_rulesets(&new).len(), 1, "offset {offset_ms}");
    }
}
