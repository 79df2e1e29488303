//! The registration ledger: one behaviour suite (round trip, versions, insert-only create,
//! conditional replace and forget) run against SQLite (laptop, demo), the fake Table
//! service and Azurite (Microsoft's Azure Storage emulator), plus the Table-only failure
//! modes the fake can inject and paging with and without `NextRowKey`.
//!
//! Azurite: `.ci/run` starts `azurite-table` over HTTPS with `--oauth basic` and exports
//! `AUTOPILOT_TEST_AZURITE_TABLE` (the account URL) and `AUTOPILOT_TEST_AZURITE_CA` (the
//! PEM of the test CA that signed its certificate). Without them, the tests start their
//! own `azurite-table` if it is on PATH. Otherwise they skip with a note, except under
//! `CI=true`, where they fail. The client is the production `TableLedger` with its bearer
//! token (an unsigned JWT, which `--oauth basic` accepts once issuer, audience and
//! lifetime check out); only the HTTP client is given the test CA as an extra root.

#[path = "support/azurite.rs"]
mod azurite;

use std::sync::Arc;
use std::time::Instant;

use autopilot_sandbox::fake_table::FakeTableService;
use private_link_autopilot::arm::Secret;
use private_link_autopilot::arm::credential::StaticToken;
use private_link_autopilot::effects::vendors::VendorEndpoint;
use private_link_autopilot::effects::vendors::ledger::{Ledger, LedgerError, SqliteLedger, TableLedger, Version};

const TOKEN: &str = "storage-token-7f3a";

fn ep(n: usize) -> VendorEndpoint {
    VendorEndpoint {
        pe_id: format!("/subscriptions/S/resourceGroups/RG/providers/Microsoft.Network/privateEndpoints/PE-{n:04}"),
        pe_name: format!("PE-{n:04}"),
        resource_guid: Some(format!("guid-{n}")),
        subscription_id: "S".into(),
        location: "eastus2".into(),
        alias: Some("a.b.eastus2.azure.privatelinkservice".into()),
        targets: vec!["svc-1".into()],
    }
}

fn conflict<T: std::fmt::Debug>(r: Result<T, LedgerError>, what: &str) {
    match r {
        Err(e @ LedgerError::Conflict(_)) => assert!(e.is_transient(), "{what}: a conflict is retried"),
        other => panic!("{what}: expected a conflict, got {other:?}"),
    }
}

/// The behaviour every ledger has.
async fn behaves(l: &dyn Ledger) {
    let e = ep(1);
    let v1 = l.record("elastic", &e, None).await.unwrap();
    conflict(l.record("elastic", &e, None).await, "create of an existing entry");
    l.record("zilliz", &ep(2), None).await.unwrap();
    let got = l.get("elastic", &e.pe_id.to_ascii_lowercase()).await.unwrap().expect("recorded");
    assert_eq!(got.endpoint, e, "round trip keeps ARM's casing and the targets");
    assert_eq!(got.version, v1, "get returns the version the write returned");
    assert!(got.recorded_at > 0);
    assert!(l.get("zilliz", &e.pe_id).await.unwrap().is_none());

    // Replace the version read; a second writer holding the same version loses.
    let mut moved = e.clone();
    moved.targets = vec!["svc-2".into()];
    let v2 = l.record("elastic", &moved, Some(&v1)).await.unwrap();
    assert_ne!(v2, v1, "every write makes a new version");
    conflict(l.record("elastic", &e, Some(&v1)).await, "replace of a stale version");
    assert_eq!(l.get("elastic", &e.pe_id).await.unwrap().unwrap().endpoint.targets, vec!["svc-2".to_string()]);

    // Forget only erases the version that was read.
    conflict(l.forget("elastic", &e.pe_id, &v1).await, "forget of a stale version");
    assert!(l.get("elastic", &e.pe_id).await.unwrap().is_some(), "a newer registration is never erased");
    l.forget("elastic", &e.pe_id, &v2).await.unwrap();
    l.forget("elastic", &e.pe_id, &v2).await.unwrap();
    assert!(l.get("elastic", &e.pe_id).await.unwrap().is_none());
    conflict(l.record("elastic", &e, Some(&v2)).await, "replace of a forgotten entry");

    // Created again: the old incarnation's version matches nothing.
    let v3 = l.record("elastic", &e, None).await.unwrap();
    assert_ne!(v3, v1);
    assert_ne!(v3, v2);
    conflict(l.forget("elastic", &e.pe_id, &v1).await, "forget with the old incarnation's version");
    conflict(l.forget("elastic", &e.pe_id, &Version::default()).await, "forget without a version");

    let all = l.list().await.unwrap();
    assert_eq!(all.iter().map(|r| r.vendor.as_str()).collect::<Vec<_>>(), vec!["elastic", "zilliz"]);
    let v = l.get("zilliz", &ep(2).pe_id).await.unwrap().unwrap().version;
    l.forget("zilliz", &ep(2).pe_id, &v).await.unwrap();
    assert_eq!(l.list().await.unwrap().len(), 1);
}

/// Two writers racing from the same read: exactly one wins each round.
async fn one_writer_wins(l: Arc<dyn Ledger>) {
    let e = ep(7);
    let v = l.record("clickhouse", &e, None).await.unwrap();
    let (a, b) = tokio::join!(l.record("clickhouse", &e, Some(&v)), l.record("clickhouse", &e, Some(&v)));
    assert_eq!([a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(), 1, "{a:?} {b:?}");
    let e8 = ep(8);
    let (a, b) = tokio::join!(l.record("clickhouse", &e8, None), l.record("clickhouse", &e8, None));
    assert_eq!([a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(), 1, "{a:?} {b:?}");
}

fn table(fake: &FakeTableService) -> TableLedger {
    TableLedger::new(&fake.base_url(), "vendorregistrations", Arc::new(StaticToken(Secret::new(TOKEN)))).unwrap()
}

#[tokio::test]
async fn sqlite_ledger_behaves() {
    behaves(&SqliteLedger::open_in_memory().unwrap()).await;
    one_writer_wins(Arc::new(SqliteLedger::open_in_memory().unwrap())).await;
}

#[tokio::test]
async fn fake_table_ledger_behaves() {
    let fake = FakeTableService::start(TOKEN, 1000).await.unwrap();
    behaves(&table(&fake)).await;
    let fake = FakeTableService::start(TOKEN, 1000).await.unwrap();
    one_writer_wins(Arc::new(table(&fake))).await;
}

/// A ledger file written before versions existed opens, reads, and is conditional after.
#[tokio::test]
async fn sqlite_ledger_upgrades_a_file_without_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE vendor_registrations (vendor TEXT NOT NULL, endpoint_key TEXT NOT NULL,
             endpoint TEXT NOT NULL, recorded_at INTEGER NOT NULL, PRIMARY KEY (vendor, endpoint_key))",
        )
        .unwrap();
        let e = ep(3);
        c.execute(
            "INSERT INTO vendor_registrations VALUES ('elastic', ?1, ?2, 5)",
            rusqlite::params![e.pe_id.to_ascii_lowercase(), serde_json::to_string(&e).unwrap()],
        )
        .unwrap();
    }
    let l = SqliteLedger::open(&path).unwrap();
    let got = l.get("elastic", &ep(3).pe_id).await.unwrap().unwrap();
    let v = l.record("elastic", &ep(3), Some(&got.version)).await.unwrap();
    assert_ne!(v, got.version);
    conflict(l.forget("elastic", &ep(3).pe_id, &got.version).await, "stale version after the upgrade");
    l.forget("elastic", &ep(3).pe_id, &v).await.unwrap();
}

#[tokio::test]
async fn table_ledger_pages_through_2500_entries() {
    let fake = FakeTableService::start(TOKEN, 1000).await.unwrap();
    let l = table(&fake);
    for n in 0..2500 {
        l.record("clickhouse", &ep(n), None).await.unwrap();
    }
    assert_eq!(fake.entity_count("vendorregistrations"), 2500);
    let before = fake.requests();
    assert_eq!(l.list().await.unwrap().len(), 2500);
    assert_eq!(fake.requests() - before, 3, "three pages of 1,000");
}

/// The service may end a page with `x-ms-continuation-NextPartitionKey` alone; only its
/// absence ends the query (a client that wants both headers stops after one vendor).
#[tokio::test]
async fn table_ledger_pages_on_next_partition_key_alone() {
    let fake = FakeTableService::start(TOKEN, 1000).await.unwrap();
    fake.set_partition_only_continuation(true);
    let l = table(&fake);
    for (i, vendor) in ["clickhouse", "elastic", "zilliz"].into_iter().enumerate() {
        for n in 0..5 {
            l.record(vendor, &ep(i * 10 + n), None).await.unwrap();
        }
    }
    let before = fake.requests();
    let all = l.list().await.unwrap();
    assert_eq!(all.len(), 15, "every partition is read: {all:?}");
    assert_eq!(fake.requests() - before, 3, "one page per partition");
    assert_eq!(all.iter().filter(|r| r.vendor == "zilliz").count(), 5);
}

#[tokio::test]
async fn table_failures_are_classified_and_never_show_the_token() {
    let fake = FakeTableService::start(TOKEN, 1000).await.unwrap();
    let l = table(&fake);
    l.record("elastic", &ep(1), None).await.unwrap();
    fake.fail_next(503, 2);
    assert!(l.get("elastic", &ep(1).pe_id).await.unwrap().is_some(), "two 503s are retried inside the call");
    fake.fail_next(503, 5);
    let e = l.get("elastic", &ep(1).pe_id).await.unwrap_err();
    assert!(matches!(e, LedgerError::Unavailable(_)) && e.is_transient(), "{e}");
    fake.fail_next(403, 1);
    let e = l.get("elastic", &ep(1).pe_id).await.unwrap_err();
    assert!(matches!(e, LedgerError::Config(_)), "{e}");
    assert!(e.to_string().contains("Storage Table Data Contributor"), "{e}");
    let wrong =
        TableLedger::new(&fake.base_url(), "vendorregistrations", Arc::new(StaticToken(Secret::new("nope")))).unwrap();
    let e = wrong.list().await.unwrap_err();
    for text in [e.to_string(), format!("{e:?}"), format!("{wrong:?}")] {
        assert!(!text.contains(TOKEN) && !text.contains("nope"), "{text}");
    }
}

// ---------------------------------------------------------------- Azurite

use azurite::{azurite, azurite_ledger, storage_token};

#[tokio::test]
async fn azurite_table_ledger_behaves() {
    let Some(a) = azurite() else { return };
    behaves(&azurite_ledger(a, storage_token(3600))).await;
    one_writer_wins(Arc::new(azurite_ledger(a, storage_token(3600)))).await;
}

/// More than one page (Azurite returns at most 1,000 entities per query page) across
/// three partitions.
#[tokio::test]
async fn azurite_table_ledger_pages() {
    let Some(a) = azurite() else { return };
    let l = Arc::new(azurite_ledger(a, storage_token(3600)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk in 0..8 {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            for n in (chunk..1100).step_by(8) {
                let vendor = ["clickhouse", "elastic", "zilliz"][n % 3];
                l.record(vendor, &ep(n), None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = l.list().await.unwrap();
    assert_eq!(all.len(), 1100, "listed in {:?}", started.elapsed());
    let mut keys: Vec<_> = all.iter().map(|r| (r.vendor.clone(), r.endpoint.pe_id.clone())).collect();
    keys.dedup();
    assert_eq!(keys.len(), 1100, "no entity twice");
}

/// Azurite's refusals map like the service's: an expired token is a configuration error
/// that names the role, and never shows the token.
#[tokio::test]
async fn azurite_refuses_an_expired_token() {
    let Some(a) = azurite() else { return };
    let token = storage_token(-60);
    let l = azurite_ledger(a, token.clone());
    let e = l.get("elastic", &ep(1).pe_id).await.unwrap_err();
    assert!(matches!(e, LedgerError::Config(_)), "{e}");
    assert!(!e.to_string().contains(&token) && !format!("{l:?}").contains(&token), "{e}");
}
