//! The registration ledger: the same behaviour from SQLite (laptop, demo) and Azure Table
//! storage (Azure; against the fake Table service), plus the Table-only failure modes.

use std::sync::Arc;

use private_link_autopilot::arm::Secret;
use private_link_autopilot::arm::credential::StaticToken;
use private_link_autopilot::effects::vendors::VendorEndpoint;
use private_link_autopilot::effects::vendors::ledger::{Ledger, LedgerError, SqliteLedger, TableLedger};
use private_link_autopilot::sandbox::fake_table::FakeTableService;

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

async fn behaves(l: &dyn Ledger) {
    let e = ep(1);
    l.record("elastic", &e).await.unwrap();
    l.record("elastic", &e).await.unwrap();
    l.record("zilliz", &ep(2)).await.unwrap();
    let got = l.get("elastic", &e.pe_id.to_ascii_lowercase()).await.unwrap().expect("recorded");
    assert_eq!(got.endpoint, e, "round trip keeps ARM's casing and the targets");
    assert!(got.recorded_at > 0);
    assert!(l.get("zilliz", &e.pe_id).await.unwrap().is_none());
    let all = l.list().await.unwrap();
    assert_eq!(all.iter().map(|r| r.vendor.as_str()).collect::<Vec<_>>(), vec!["elastic", "zilliz"]);
    l.forget("elastic", &e.pe_id).await.unwrap();
    l.forget("elastic", &e.pe_id).await.unwrap();
    assert_eq!(l.list().await.unwrap().len(), 1);
}

fn table(fake: &FakeTableService) -> TableLedger {
    TableLedger::new(&fake.base_url(), "vendorregistrations", Arc::new(StaticToken(Secret::new(TOKEN)))).unwrap()
}

#[tokio::test]
async fn sqlite_ledger_behaves() {
    behaves(&SqliteLedger::open_in_memory().unwrap()).await;
}

#[tokio::test]
async fn table_ledger_behaves() {
    let fake = FakeTableService::start(TOKEN, 1000).await.unwrap();
    behaves(&table(&fake)).await;
}

#[tokio::test]
async fn table_ledger_pages_through_2500_entries() {
    let fake = FakeTableService::start(TOKEN, 1000).await.unwrap();
    let l = table(&fake);
    for n in 0..2500 {
        l.record("clickhouse", &ep(n)).await.unwrap();
    }
    assert_eq!(fake.entity_count("vendorregistrations"), 2500);
    let before = fake.requests();
    assert_eq!(l.list().await.unwrap().len(), 2500);
    assert_eq!(fake.requests() - before, 3, "three pages of 1,000");
}

#[tokio::test]
async fn table_failures_are_classified_and_never_show_the_token() {
    let fake = FakeTableService::start(TOKEN, 1000).await.unwrap();
    let l = table(&fake);
    l.record("elastic", &ep(1)).await.unwrap();
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
