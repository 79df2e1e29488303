//! The RFC 2136 provider against a real BIND 9 (see `support/bind.rs`; skips without
//! `named` unless `CI=true`).

#[path = "support/bind.rs"]
mod bind;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use private_link_autopilot::arm::Secret;
use private_link_autopilot::effects::dns::rfc2136::{Rfc2136Config, Rfc2136Provider};
use private_link_autopilot::effects::dns::{ARecordSet, DnsErrorKind, DnsProvider, Ownership, RecordKey};

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
    ARecordSet::managed(key.clone(), 300, BTreeMap::from([(pe.to_ascii_lowercase(), ips)]))
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
    owners.insert(PE_A.to_ascii_lowercase(), BTreeSet::from([Ipv4Addr::new(10, 2, 0, 4)]));
    owners.insert("/subscriptions/s/x/pe-b".to_string(), BTreeSet::from([Ipv4Addr::new(10, 2, 0, 5)]));
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
