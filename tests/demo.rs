//! README's first command, `autopilot demo`, ends in the right state. In CI the BIND 9
//! variant is required (the RFC 2136 path must run, not skip).

use private_link_autopilot::sandbox::demo::{self, BindChoice};

#[tokio::test]
async fn demo_converges_and_cleans_up() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let s = demo::run(if ci { BindChoice::Required } else { BindChoice::Auto }).await.expect("demo runs");
    let names: Vec<String> = s.rows.iter().map(|r| format!("{}.{}", r.name, r.zone)).collect();
    assert_eq!(
        names,
        vec![
            "in01-3f2a9c-privatelink.az-eastus2.vectordb.zillizcloud.com",
            "*.eastus2.privatelink.azure.clickhouse.cloud",
            "*.privatelink.eastus2.azure.elastic-cloud.com",
            "amw-metrics-a1b2.privatelink.eastus2.prometheus.monitor.azure.com",
            "kv-secrets.privatelink.vaultcore.azure.net",
        ]
    );
    let wildcard = s.rows.iter().find(|r| r.zone == demo::CLICKHOUSE_ZONE).unwrap();
    assert_eq!(wildcard.owner, "ch-analytics-2", "the survivor keeps the shared wildcard");
    assert_eq!(wildcard.addresses.len(), 1);
    assert_eq!(s.throttled, 0);
    assert_eq!(s.queue_depth, 0);
    // Every record write and removal is audited (12 writes, 5 removals in this script).
    assert!(s.audit_events >= 15, "audit events: {}", s.audit_events);
    if ci {
        assert!(s.used_bind);
    }
}
