//! Many instances at once (issue #14): three `autopilot serve` processes behind one fake
//! Service Bus, one fake ARM, one fake Table service and the fake vendors, every event
//! delivered to two instances while a sweep runs; then half the endpoints deleted and
//! recreated under the same names. And a burst during which one instance is SIGKILLed and
//! restarted. See `support/fleet.rs` for how the hosts are played.

#[path = "support/fleet.rs"]
mod fleet;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use autopilot_sandbox::events::{ResourceEvent, event_grid};
use autopilot_sandbox::fake_arm::{EndpointSpec, MemberSpec};
use autopilot_sandbox::harness::{
    HUB_RESOURCE_GROUP, HUB_SUBSCRIPTION, SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB,
};
use autopilot_sandbox::vendors::{CLICKHOUSE_ALIAS, ELASTIC_ALIAS};
use fleet::{Fleet, FleetOptions, LEDGER_TABLE};
use private_link_autopilot::queue::WorkQueue;
use serde_json::Value;

const VAULT_ZONE: &str = "privatelink.vaultcore.azure.net";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    ClickHouse,
    Elastic,
    Vault,
}

fn kind_of(i: usize) -> Kind {
    match i % 5 {
        0 | 1 => Kind::ClickHouse,
        2 | 3 => Kind::Elastic,
        _ => Kind::Vault,
    }
}

fn spec(i: usize, kind: Kind) -> EndpointSpec {
    let ip = Ipv4Addr::new(10, 3 + (i / 250) as u8, (i % 250) as u8, 4);
    let name = format!("pe-{i:03}");
    match kind {
        // Vendor endpoints stay Pending (the vendor approves later): registered, no record.
        Kind::ClickHouse => EndpointSpec::alias(SUB, RG, &name, "eastus2", CLICKHOUSE_ALIAS).with_ip(ip),
        Kind::Elastic => EndpointSpec::alias(SUB, RG, &name, "eastus2", ELASTIC_ALIAS).with_ip(ip),
        Kind::Vault => {
            let vault = format!("kv-{i:03}");
            let target =
                format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/{vault}");
            EndpointSpec::resource(
                SUB,
                RG,
                &name,
                "eastus2",
                &target,
                "vault",
                vec![MemberSpec::new("default", &[&format!("{vault}.vault.azure.net")])],
            )
            .with_ip(ip)
        }
    }
}

fn guid(fleet: &Fleet, id: &str) -> String {
    fleet
        .arm
        .resource(id)
        .and_then(|v| v.pointer("/properties/resourceGuid").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

/// ARM's buckets ten times larger than the real ones: this test is about races; the
/// budgets have their own test (`four_instances_share_arms_budget`).
fn options() -> FleetOptions {
    let mut o = FleetOptions::default();
    o.arm.reads = (2500, 250.0);
    o.arm.writes = (2000, 100.0);
    o.arm.deletes = (2000, 100.0);
    o.reads = (2500, 250.0);
    // The vendors' client-side limits lifted too (the fakes enforce none here).
    for vendor in ["CLICKHOUSE", "ELASTIC"] {
        o.env.push((format!("AUTOPILOT__VENDORS__{vendor}__RATE_LIMIT_REQUESTS"), "1000".into()));
    }
    o.env.push(("AUTOPILOT__MARKS__RECHECK_WINDOW_SECS".into(), "0".into()));
    o
}

async fn fleet_with_vault_zone(options: FleetOptions) -> Fleet {
    let f = Fleet::start(options).await;
    f.arm.add_zone(HUB_SUBSCRIPTION, HUB_RESOURCE_GROUP, VAULT_ZONE);
    f
}

/// Delivers each event to instances `a` and `b` at once, `batch` events per delivery.
async fn deliver_twice(f: &Fleet, events: Vec<Value>, batch: usize) {
    let n = f.live().len();
    let mut deliveries = vec![];
    for (k, chunk) in events.chunks(batch).enumerate() {
        let (a, b) = (k % n, (k + 1) % n);
        deliveries.push(async move {
            let (x, y) = tokio::join!(f.deliver(a, chunk.to_vec()), f.deliver(b, chunk.to_vec()));
            assert!((200..300).contains(&x.status) && (200..300).contains(&y.status), "{x:?} {y:?}");
        });
    }
    futures::future::join_all(deliveries).await;
}

/// What the vendors hold, the ledger says and DNS shows, checked against ARM.
fn check_end_state(f: &Fleet, live: &BTreeMap<String, (Kind, String)>, gone_guids: &[String]) {
    let ch = f.vendors.clickhouse.state();
    let es = f.vendors.elastic.state();
    let services = ch.services.len();
    let ch_live: Vec<_> = live.iter().filter(|(_, (k, _))| *k == Kind::ClickHouse).collect();
    let es_live: Vec<_> = live.iter().filter(|(_, (k, _))| *k == Kind::Elastic).collect();
    for (id, (_, g)) in &ch_live {
        let n =
            ch.services.values().flatten().filter(|x| x.eq_ignore_ascii_case(id) || x.eq_ignore_ascii_case(g)).count();
        assert_eq!(n, services, "{id}: one registration per ClickHouse service: {:?}\n{}", ch.services, f.stderr());
    }
    assert_eq!(ch.services.values().flatten().count(), ch_live.len() * services, "nothing else on ClickHouse's lists");
    for (id, (_, g)) in &es_live {
        let sets = es.rulesets.values().filter(|r| r.rules.iter().any(|(_, x)| x == g)).count();
        assert_eq!(
            sets,
            1,
            "{id} ({g}, now {}): exactly one Elastic ruleset\n{}\n{:?}",
            guid(f, id),
            f.grep(id.rsplit('/').next().unwrap()),
            es.rulesets.values().filter(|r| r.name.contains(id.rsplit('/').next().unwrap())).collect::<Vec<_>>()
        );
    }
    assert_eq!(es.rulesets.len(), es_live.len(), "no duplicate or orphaned rulesets");
    for g in gone_guids {
        assert!(!es.rulesets.values().any(|r| r.rules.iter().any(|(_, x)| x == g)), "old guid {g} still allowed");
        assert!(!ch.services.values().flatten().any(|x| x.eq_ignore_ascii_case(g)), "old guid {g} still allowed");
    }
    // The ledger equals the vendors' lists: one row per (vendor, endpoint), current guid.
    let rows = f.table.entities(LEDGER_TABLE);
    let mut ledger: BTreeMap<(String, String), String> = BTreeMap::new();
    for r in &rows {
        let ep: Value = serde_json::from_str(r["Endpoint"].as_str().unwrap()).unwrap();
        let key = (r["PartitionKey"].as_str().unwrap().to_owned(), ep["pe_id"].as_str().unwrap().to_ascii_lowercase());
        assert!(ledger.insert(key, ep["resource_guid"].as_str().unwrap_or_default().to_owned()).is_none());
    }
    assert_eq!(ledger.len(), ch_live.len() + es_live.len(), "ledger rows: {ledger:?}");
    for (id, (kind, g)) in live {
        let vendor = match kind {
            Kind::ClickHouse => "clickhouse",
            Kind::Elastic => "elastic",
            Kind::Vault => continue,
        };
        assert_eq!(
            ledger.get(&(vendor.to_owned(), id.to_ascii_lowercase())),
            Some(g),
            "{id}: ledger has the current guid"
        );
    }
    // DNS: every vault endpoint's record, with its address; marks: the final state.
    let zone = autopilot_sandbox::fake_arm::dns::zone_id(HUB_SUBSCRIPTION, HUB_RESOURCE_GROUP, VAULT_ZONE);
    for (id, (kind, _)) in live {
        let tags = f.arm.resource(id).unwrap()["tags"].clone();
        let state = tags["plautopilot-state"].as_str().unwrap_or_default().to_owned();
        if *kind == Kind::Vault {
            let name = id.rsplit('/').next().unwrap().replace("pe-", "kv-");
            assert!(f.arm.record(&zone, &name).is_some(), "{id}: record {name}");
            assert_eq!(state, "Approved", "{id}: marks {tags}");
        } else {
            assert_eq!(state, "Pending", "{id}: marks {tags}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_converge_one_estate_without_duplicates() {
    let f = fleet_with_vault_zone(options()).await;
    let started = Instant::now();
    let mut live: BTreeMap<String, (Kind, String)> = BTreeMap::new();
    let mut events = vec![];
    for i in 0..200 {
        let id = f.arm.put_endpoint(&spec(i, kind_of(i)));
        live.insert(id.clone(), (kind_of(i), guid(&f, &id)));
        events.push(event_grid(ResourceEvent::WriteSuccess, &id));
    }
    // Every event to two instances while instance 2 sweeps.
    tokio::join!(deliver_twice(&f, events, 10), f.sweep(2));
    assert!(f.settle(Duration::from_secs(3), Duration::from_secs(240)).await, "did not settle\n{}", f.stderr());
    check_end_state(&f, &live, &[]);
    let first = started.elapsed();

    // Half deleted and recreated under the same names (new resourceGuid); the delete and
    // the create events for one endpoint may arrive in either order.
    let mut gone = vec![];
    let mut events = vec![];
    for i in (0..200).step_by(2) {
        let id = spec(i, kind_of(i)).id();
        gone.push(live[&id].1.clone());
        f.arm.delete_endpoint(&id);
        let delete = event_grid(ResourceEvent::DeleteSuccess, &id);
        f.arm.put_endpoint(&spec(i, kind_of(i)));
        let fresh = guid(&f, &id);
        assert_ne!(fresh, live[&id].1, "recreated with a new guid");
        live.insert(id.clone(), (kind_of(i), fresh));
        let write = event_grid(ResourceEvent::WriteSuccess, &id);
        if i % 4 == 0 {
            events.extend([delete, write]);
        } else {
            events.extend([write, delete]);
        }
    }
    tokio::join!(deliver_twice(&f, events, 10), f.sweep(1));
    // Deletions are only noticed by reading ARM: a sweep after the burst is the backstop.
    assert!(f.settle(Duration::from_secs(3), Duration::from_secs(240)).await, "did not settle\n{}", f.stderr());
    f.sweep(0).await;
    assert!(f.settle(Duration::from_secs(3), Duration::from_secs(240)).await, "did not settle\n{}", f.stderr());
    check_end_state(&f, &live, &gone);

    let dead = f.queue.dead_letters().await.unwrap();
    assert!(dead.is_empty(), "no dead letter: {dead:?}");
    assert!(f.bus.queue_snapshot("work").unwrap().dead_letter.is_empty(), "nothing in the broker's DLQ");
    assert_eq!(f.abandoned.load(std::sync::atomic::Ordering::SeqCst), 0, "every invocation answered 2xx");
    eprintln!("200 endpoints on 3 instances: first pass {first:?}, with recreation {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_killed_mid_burst_loses_nothing() {
    let f = fleet_with_vault_zone(options()).await;
    let mut live: BTreeMap<String, (Kind, String)> = BTreeMap::new();
    let mut batches = vec![];
    for b in 0..12 {
        let mut events = vec![];
        for i in (b * 5)..(b * 5 + 5) {
            // Two thirds vendor work (through the queue), one third DNS.
            let kind = if i % 3 == 2 { Kind::Vault } else { Kind::ClickHouse };
            let id = f.arm.put_endpoint(&spec(i, kind));
            live.insert(id.clone(), (kind, guid(&f, &id)));
            events.push(event_grid(ResourceEvent::WriteSuccess, &id));
        }
        batches.push(events);
    }
    let killer = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        f.kill(0).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        f.restart(0).await;
    };
    let burst = async {
        let mut deliveries = vec![];
        for (k, events) in batches.into_iter().enumerate() {
            let f = &f;
            deliveries.push(async move {
                tokio::time::sleep(Duration::from_millis(60 * k as u64)).await;
                let d = f.deliver(k % 3, events).await;
                assert!((200..300).contains(&d.status), "{d:?}");
            });
        }
        futures::future::join_all(deliveries).await;
    };
    tokio::join!(killer, burst);
    assert!(f.settle(Duration::from_secs(3), Duration::from_secs(240)).await, "did not settle\n{}", f.stderr());
    check_end_state(&f, &live, &[]);
    let dead = f.queue.dead_letters().await.unwrap();
    assert!(dead.is_empty(), "no dead letter: {dead:?}");
}

/// Four instances, each believing it owns ARM's whole read budget, against a fake ARM
/// enforcing one shared bucket (scaled down: 60 reads, 10 per second, so the test is
/// short): ARM answers 429 with Retry-After, the instances wait it out or requeue, and
/// nothing fails, is dead-lettered or is left unconverged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_instances_share_arms_budget() {
    let mut o = options();
    o.instances = 4;
    o.arm.reads = (60, 10.0);
    o.reads = (60, 10.0);
    let f = fleet_with_vault_zone(o).await;
    let started = Instant::now();
    let mut live: BTreeMap<String, (Kind, String)> = BTreeMap::new();
    let mut batches: Vec<Vec<Value>> = vec![vec![]; 4];
    for i in 0..60 {
        let i = i * 5 + 4; // vault endpoints only: DNS, marks, no vendor
        let id = f.arm.put_endpoint(&spec(i, Kind::Vault));
        live.insert(id.clone(), (Kind::Vault, guid(&f, &id)));
        batches[i % 4].push(event_grid(ResourceEvent::WriteSuccess, &id));
    }
    let deliveries = batches.into_iter().enumerate().map(|(k, events)| {
        let f = &f;
        async move {
            for chunk in events.chunks(5) {
                let d = f.deliver(k, chunk.to_vec()).await;
                assert!((200..300).contains(&d.status), "{d:?}");
            }
        }
    });
    futures::future::join_all(deliveries).await;
    assert!(f.settle(Duration::from_secs(3), Duration::from_secs(240)).await, "did not settle\n{}", f.stderr());
    check_end_state(&f, &live, &[]);
    let throttled = f.arm.requests().iter().filter(|r| r.status == 429).count();
    assert!(throttled > 0, "the shared bucket was never exhausted: the test proves nothing");
    assert!(f.queue.dead_letters().await.unwrap().is_empty(), "no dead letter");
    assert_eq!(f.abandoned.load(std::sync::atomic::Ordering::SeqCst), 0);
    eprintln!(
        "4 instances, 60 endpoints, shared 60+10/s read bucket: {throttled} answers 429, converged in {:?}",
        started.elapsed()
    );
}
