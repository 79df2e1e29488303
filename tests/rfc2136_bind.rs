//! The RFC 2136 provider against a real BIND 9 (see `support/bind.rs`; skips without
//! `named` unless `CI=true`).

#[path = "support/bind.rs"]
mod bind;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use private_link_autopilot::arm::Secret;
use private_link_autopilot::effects::dns::rfc2136::{Rfc2136Config, Rfc2136Provider};
use private_link_autopilot::effects::dns::{ARecordSet, DnsErrorKind, DnsProvider};
use private_link_autopilot::model::ownership::{Share, opaque_ref};
use private_link_autopilot::model::{Ownership, RecordKey};

const ZONE: &str = "privatelink.eastus2.azure.elastic-cloud.com";
const PE_A: &str = "/subscriptions/s/resourceGroups/RG/providers/Microsoft.Network/privateEndpoints/pe-a";

async fn start() -> Option<bind::Bind> {
    tokio::task::spawn_blocking(bind::start).await.expect("start bind")
}

fn provider(b: &bind::Bind) -> Rfc2136Provider {
    let mut cfg = Rfc2136Config::new(b.addr(), bind::KEY_NAME, Secret::new(b.secret.clone()));
    cfg.timeout = Duration::from_secs(5);
    cfg.allow_axfr = true;
    Rfc2136Provider::new(cfg).expect("provider")
}

fn owned(key: &RecordKey, pe: &str, ips: &[[u8; 4]]) -> ARecordSet {
    let ips: BTreeSet<Ipv4Addr> = ips.iter().map(|o| Ipv4Addr::from(*o)).collect();
    // The TXT publishes owners in their opaque form, so that is how they read back.
    ARecordSet::managed(key.clone(), 300, BTreeMap::from([(opaque_ref(pe), Share::new(ips, "", ""))]))
}

async fn dig(b: &bind::Bind, name: &str, rtype: &str) -> String {
    let (port, name, rtype) = (b.port.to_string(), name.to_string(), rtype.to_string());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("dig")
            .args(["@127.0.0.1", "-p", &port, &name, &rtype, "+short", "+tcp"])
            .output()
            .expect("dig")
    })
    .await
    .expect("dig task");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    lines.sort();
    lines.join("\n")
}

#[tokio::test]
async fn create_is_visible_idempotent_and_repairs_drift() {
    let Some(b) = start().await else { return };
    let p = provider(&b);
    let key = RecordKey::new(ZONE, "abc");
    assert_eq!(p.get(&key).await.expect("get"), None);

    let want = owned(&key, PE_A, &[[10, 1, 0, 4]]);
    p.create(&want).await.expect("create");
    assert_eq!(dig(&b, &key.fqdn(), "A").await, "10.1.0.4");

    // Idempotent re-run: read, see it matches, and a second create loses cleanly.
    let read = p.get(&key).await.expect("get").expect("present");
    assert_eq!(read.addresses, want.addresses);
    assert_eq!(read.ownership, want.ownership);
    assert_eq!(read.ttl, 300);
    let err = p.create(&want).await.expect_err("second create must fail");
    assert_eq!(err.kind, DnsErrorKind::PreconditionFailed, "{err}");

    // A person changes the address; the provider repairs from what `get` read.
    b.nsupdate(&format!("update delete {} A\nupdate add {} 300 A 10.9.9.9", key.fqdn(), key.fqdn()));
    let drifted = p.get(&key).await.expect("get").expect("present");
    assert_eq!(drifted.addresses, BTreeSet::from([Ipv4Addr::new(10, 9, 9, 9)]));
    assert!(drifted.ownership.is_managed());
    p.update(&drifted, &want).await.expect("repair");
    assert_eq!(dig(&b, &key.fqdn(), "A").await, "10.1.0.4");

    // A stale `previous` (the drifted set) now fails the prerequisite.
    let err = p.update(&drifted, &want).await.expect_err("stale update");
    assert_eq!(err.kind, DnsErrorKind::PreconditionFailed, "{err}");

    // Delete removes both A and TXT; deleting again is success.
    let current = p.get(&key).await.expect("get").expect("present");
    p.delete(&current).await.expect("delete");
    assert_eq!(dig(&b, &key.fqdn(), "A").await, "");
    assert_eq!(dig(&b, &format!("plautopilot-abc.{ZONE}"), "TXT").await, "");
    p.delete(&current).await.expect("delete again");
    assert_eq!(p.get(&key).await.expect("get"), None);
}

#[tokio::test]
async fn concurrent_change_fails_the_precondition() {
    let Some(b) = start().await else { return };
    let p = provider(&b);
    let key = RecordKey::new(ZONE, "race");
    p.create(&owned(&key, PE_A, &[[10, 1, 0, 5]])).await.expect("create");
    let read = p.get(&key).await.expect("get").expect("present");
    b.nsupdate(&format!("update add {} 300 A 10.7.7.7", key.fqdn()));
    let err = p.update(&read, &owned(&key, PE_A, &[[10, 1, 0, 6]])).await.expect_err("lost race");
    assert_eq!(err.kind, DnsErrorKind::PreconditionFailed, "{err}");
    let err = p.delete(&read).await.expect_err("lost race on delete");
    assert_eq!(err.kind, DnsErrorKind::PreconditionFailed, "{err}");
    assert_eq!(dig(&b, &key.fqdn(), "A").await, "10.1.0.5\n10.7.7.7");
}

#[tokio::test]
async fn foreign_records_are_reported_and_never_changed() {
    let Some(b) = start().await else { return };
    let p = provider(&b);
    let key = RecordKey::new("example.internal", "db");
    b.nsupdate(&format!("update add {} 300 A 192.0.2.10", key.fqdn()));
    let read = p.get(&key).await.expect("get").expect("present");
    match &read.ownership {
        Ownership::Foreign(why) => assert!(why.contains("no ownership TXT"), "{why}"),
        o => panic!("expected foreign, got {o:?}"),
    }
    let err = p.create(&owned(&key, PE_A, &[[10, 0, 0, 1]])).await.expect_err("create over foreign");
    assert_eq!(err.kind, DnsErrorKind::PreconditionFailed);
    let err = p.update(&read, &owned(&key, PE_A, &[[10, 0, 0, 1]])).await.expect_err("update foreign");
    assert_eq!(err.kind, DnsErrorKind::Permanent);
    let err = p.delete(&read).await.expect_err("delete foreign");
    assert_eq!(err.kind, DnsErrorKind::Permanent);
    assert_eq!(dig(&b, &key.fqdn(), "A").await, "192.0.2.10");
}

#[tokio::test]
async fn wildcard_answers_any_name_and_is_listed() {
    let Some(b) = start().await else { return };
    let p = provider(&b);
    let key = RecordKey::new(ZONE, "*.es");
    let mut owners = BTreeMap::new();
    owners.insert(opaque_ref(PE_A), Share::new(BTreeSet::from([Ipv4Addr::new(10, 2, 0, 4)]), "", ""));
    owners.insert(
        opaque_ref("/subscriptions/s/x/pe-b"),
        Share::new(BTreeSet::from([Ipv4Addr::new(10, 2, 0, 5)]), "", ""),
    );
    let set = ARecordSet::managed(key.clone(), 60, owners.clone());
    p.create(&set).await.expect("create wildcard");
    assert_eq!(dig(&b, &format!("abc.es.{ZONE}"), "A").await, "10.2.0.4\n10.2.0.5");
    let read = p.get(&key).await.expect("get").expect("present");
    assert_eq!(read.ownership, Ownership::Managed(owners));
    // A name covered by the wildcard is not "present" for the provider.
    assert_eq!(p.get(&RecordKey::new(ZONE, "abc.es")).await.expect("get"), None);

    let listed = p.list(ZONE).await.expect("list");
    let w = listed.iter().find(|s| s.key == key).expect("wildcard listed");
    assert_eq!(w.ownership, read.ownership);
    assert!(listed.iter().any(|s| s.key.name == "ns" && !s.ownership.is_managed()));

    let mut no_axfr = p.config().clone();
    no_axfr.allow_axfr = false;
    let err = Rfc2136Provider::new(no_axfr).expect("provider").list(ZONE).await.expect_err("no axfr");
    assert_eq!(err.kind, DnsErrorKind::Permanent);
    assert!(err.message.contains(ZONE) && err.message.contains("127.0.0.1"), "{err}");
}

#[tokio::test]
async fn wrong_key_is_permanent_and_closed_port_transient() {
    let Some(b) = start().await else { return };
    let key = RecordKey::new(ZONE, "k");
    let mut cfg = provider(&b).config().clone();
    cfg.tsig_secret = Secret::new("d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktMTIzNA==");
    let err = Rfc2136Provider::new(cfg.clone()).expect("p").create(&owned(&key, PE_A, &[[10, 0, 0, 1]])).await;
    let err = err.expect_err("bad secret");
    assert_eq!(err.kind, DnsErrorKind::Permanent, "{err}");
    assert!(err.message.contains("BADSIG") || err.message.contains("BADKEY"), "{err}");
    assert!(err.message.contains(ZONE), "{err}");
    assert!(err.message.contains(&b.addr().to_string()), "server missing: {err}");
    assert!(!err.message.contains("d3Jvbmcta2V5"), "secret leaked: {err}");

    cfg.tsig_key_name = "nobody-key".into();
    let err = Rfc2136Provider::new(cfg).expect("p").get(&key).await.expect_err("unknown key");
    assert_eq!(err.kind, DnsErrorKind::Permanent, "{err}");
    assert!(err.message.contains("BADKEY") || err.message.contains("BADSIG"), "{err}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let mut cfg = Rfc2136Config::new(closed, bind::KEY_NAME, Secret::new(b.secret.clone()));
    cfg.timeout = Duration::from_secs(2);
    let err = Rfc2136Provider::new(cfg).expect("p").get(&key).await.expect_err("closed port");
    assert_eq!(err.kind, DnsErrorKind::Transient, "{err}");
}

/// The `status:` of a full `dig` answer (NOERROR, NXDOMAIN, ...).
async fn dig_status(b: &bind::Bind, name: &str) -> String {
    let (port, name) = (b.port, name.to_string());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("dig")
            .args(["@127.0.0.1", "-p", &port.to_string(), &name, "A", "+tcp", "+time=2", "+tries=1"])
            .output()
            .expect("dig")
    })
    .await
    .expect("dig task");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split("status: ").nth(1).and_then(|r| r.split(',').next()).unwrap_or("no status").to_string()
}

#[tokio::test]
async fn apex_wildcard_answers_elastic_names_two_labels_below_the_zone() {
    let Some(b) = start().await else { return };
    let p = provider(&b);
    let key = RecordKey::new(ZONE, "*");
    p.create(&owned(&key, PE_A, &[[10, 3, 0, 4]])).await.expect("create *");
    // Elastic: <alias>.es.privatelink.<region>.azure.elastic-cloud.com, two labels below the zone.
    assert_eq!(dig(&b, &format!("abc.es.{ZONE}"), "A").await, "10.3.0.4");
    assert_eq!(dig(&b, &format!("x.{ZONE}"), "A").await, "10.3.0.4");
    // Ownership sits on a sibling of `*`: neither under it nor an `es` node that would
    // stop the wildcard from matching `*.es.<zone>` names.
    assert!(dig(&b, &format!("plautopilot-_wildcard.{ZONE}"), "TXT").await.contains("heritage=pl-autopilot"));
    assert_eq!(dig_status(&b, &format!("es.{ZONE}")).await, "NOERROR", "es is answered by the wildcard");
    let read = p.get(&key).await.expect("get").expect("present");
    assert!(read.ownership.is_managed());
    // Names merely covered by the wildcard hold nothing of their own.
    assert_eq!(p.get(&RecordKey::new(ZONE, "abc")).await.expect("get"), None);
    p.delete(&read).await.expect("delete");
    assert_eq!(dig_status(&b, &format!("abc.es.{ZONE}")).await, "NXDOMAIN");
    assert_eq!(dig(&b, &format!("plautopilot-_wildcard.{ZONE}"), "TXT").await, "");
}

#[tokio::test]
async fn deleted_record_resolves_nxdomain() {
    let Some(b) = start().await else { return };
    let p = provider(&b);
    let key = RecordKey::new("example.internal", "gone");
    p.create(&owned(&key, PE_A, &[[10, 4, 0, 1]])).await.expect("create");
    assert_eq!(dig_status(&b, &key.fqdn()).await, "NOERROR");
    let read = p.get(&key).await.expect("get").expect("present");
    p.delete(&read).await.expect("delete");
    assert_eq!(dig_status(&b, &key.fqdn()).await, "NXDOMAIN");
}

#[tokio::test]
async fn a_cname_is_foreign_and_blocks_create() {
    let Some(b) = start().await else { return };
    let p = provider(&b);
    let key = RecordKey::new("example.internal", "alias");
    b.nsupdate(&format!("update add {} 300 CNAME ns.example.internal.", key.fqdn()));
    let read = p.get(&key).await.expect("get").expect("present");
    match &read.ownership {
        Ownership::Foreign(why) => assert!(why.contains("CNAME"), "{why}"),
        o => panic!("expected foreign, got {o:?}"),
    }
    // BIND would answer NOERROR and silently drop an A beside a CNAME; the prerequisite
    // turns that into a visible failure.
    let err = p.create(&owned(&key, PE_A, &[[10, 0, 0, 7]])).await.expect_err("create beside CNAME");
    assert_eq!(err.kind, DnsErrorKind::PreconditionFailed, "{err}");
    assert_eq!(dig(&b, &key.fqdn(), "CNAME").await, "ns.example.internal.");
}

#[tokio::test]
async fn ownership_left_without_its_a_record_is_repaired_or_removed() {
    let Some(b) = start().await else { return };
    let p = provider(&b);
    let key = RecordKey::new("example.internal", "half");
    let want = owned(&key, PE_A, &[[10, 5, 0, 1]]);
    p.create(&want).await.expect("create");
    b.nsupdate(&format!("update delete {} A", key.fqdn()));
    // The stale TXT is reported (managed, no addresses) so the plan can act on it.
    let stale = p.get(&key).await.expect("get").expect("stale ownership reported");
    assert!(stale.addresses.is_empty() && stale.ownership.is_managed(), "{stale:?}");
    p.update(&stale, &want).await.expect("repair");
    assert_eq!(dig(&b, &key.fqdn(), "A").await, "10.5.0.1");

    b.nsupdate(&format!("update delete {} A", key.fqdn()));
    let stale = p.get(&key).await.expect("get").expect("stale ownership reported");
    p.delete(&stale).await.expect("remove stale ownership");
    assert_eq!(p.get(&key).await.expect("get"), None);
    assert_eq!(dig(&b, "plautopilot-half.example.internal", "TXT").await, "");
}

#[tokio::test]
async fn unknown_zone_is_permanent_and_named() {
    let Some(b) = start().await else { return };
    let p = provider(&b);
    let key = RecordKey::new("not-served.example", "x");
    let err = p.create(&owned(&key, PE_A, &[[10, 0, 0, 1]])).await.expect_err("unknown zone");
    assert_eq!(err.kind, DnsErrorKind::Permanent, "{err}");
    assert!(err.message.contains("NOTAUTH") || err.message.contains("NOTZONE"), "{err}");
    assert!(err.message.contains("not-served.example") && err.message.contains(&b.addr().to_string()), "{err}");
    let err = p.get(&key).await.expect_err("query in unknown zone");
    assert_eq!(err.kind, DnsErrorKind::Permanent, "{err}");
    assert!(err.message.contains("REFUSED") || err.message.contains("NOTAUTH"), "{err}");
    let err = p.list("not-served.example").await.expect_err("axfr of unknown zone");
    assert_eq!(err.kind, DnsErrorKind::Permanent, "{err}");
}

#[tokio::test]
async fn axfr_of_a_multi_message_zone_is_verified_and_listed() {
    let Some(b) = start().await else { return };
    let p = provider(&b);
    let managed = RecordKey::new(bind::BULK_ZONE, "mine");
    p.create(&owned(&managed, PE_A, &[[10, 6, 0, 1]])).await.expect("create");
    let listed = p.list(bind::BULK_ZONE).await.expect("list");
    // BULK_HOSTS foreign hosts, `ns`, and ours; BIND sends this in several TSIG-signed messages.
    assert_eq!(listed.len(), bind::BULK_HOSTS + 2);
    let mine = listed.iter().find(|s| s.key == managed).expect("managed set listed");
    assert_eq!(mine.ownership, owned(&managed, PE_A, &[[10, 6, 0, 1]]).ownership);
    assert_eq!(listed.iter().filter(|s| s.ownership.is_managed()).count(), 1);
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_transient_timeout() {
    // No BIND needed: a listener that accepts and then stays silent.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = silent.local_addr().expect("addr");
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            open.push(sock);
        }
    });
    let mut cfg = Rfc2136Config::new(addr, "autopilot-key", Secret::new("c2VjcmV0LXNlY3JldC1zZWNyZXQ="));
    cfg.timeout = Duration::from_millis(300);
    let err = Rfc2136Provider::new(cfg).expect("p").get(&RecordKey::new(ZONE, "x")).await.expect_err("timeout");
    assert_eq!(err.kind, DnsErrorKind::Transient, "{err}");
    assert!(err.message.contains(ZONE) && err.message.contains(&addr.to_string()), "{err}");
    hold.abort();
}

/// The sweep plans from zone listings. An RFC 2136 listing (AXFR, A records only) cannot
/// show a CNAME, so a name missing from it is read from the server: the sweep's plan
/// reports the CNAME as a conflict instead of planning a create, and the sweep itself
/// leaves the CNAME alone.
#[tokio::test]
async fn a_sweep_reads_the_names_an_rfc2136_listing_cannot_show() {
    use autopilot_sandbox::fake_arm::EndpointSpec;
    use autopilot_sandbox::harness::{SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB, Sandbox, SandboxOptions};
    use autopilot_sandbox::vendors::ELASTIC_ALIAS as ES_ALIAS;
    use private_link_autopilot::reconcile::DnsAction;
    let Some(b) = start().await else { return };
    let fqdn = format!("*.{ZONE}");
    b.nsupdate(&format!("update add {fqdn} 300 CNAME elsewhere.example."));
    let p: std::sync::Arc<dyn DnsProvider> = std::sync::Arc::new(provider(&b));
    let sb = Sandbox::start(SandboxOptions {
        extra_routes: vec![(ZONE.to_owned(), p)],
        configure: Box::new(|c| c.sweep.subscriptions = vec![SUB.to_owned()]),
        workers: 0,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox");
    sb.arm.put_endpoint(&EndpointSpec::alias(SUB, RG, "es-cname", "eastus2", ES_ALIAS).approved());

    let plan = private_link_autopilot::runtime::sweep::plan_subscriptions(&sb.app, &[SUB.to_owned()], &|_, _| {})
        .await
        .expect("plan");
    let id = private_link_autopilot::model::ResourceId::parse_private_endpoint(&format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/privateEndpoints/es-cname"
    ))
    .unwrap();
    let direct = sb.app.reconciler.reconcile(&id, private_link_autopilot::reconcile::Mode::DryRun).await;
    let mut all: Vec<&DnsAction> = plan.changes.iter().flat_map(|r| r.plan.actions.iter()).collect();
    all.extend(direct.plan.actions.iter());
    assert!(!all.iter().any(|a| matches!(a, DnsAction::Create { .. })), "no create beside a CNAME: {all:?}");
    assert!(direct.plan.actions.iter().any(|a| matches!(a, DnsAction::Conflict { .. })), "{:?}", direct.plan);

    sb.host.invoke_timer("Sweep", false).await.expect("sweep");
    assert_eq!(dig(&b, &fqdn, "CNAME").await, "elsewhere.example.", "the CNAME is left alone");
}
