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
            // zilliz-westus3 is dead-lettered by Zilliz and never approved: no record.
            "*.eastus2.privatelink.azure.clickhouse.cloud",
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
    // Left registered: ch-analytics-2 (ClickHouse) and zilliz-vectors (Zilliz); es-logs
    // and ch-analytics-1 were deregistered when deleted.
    assert_eq!(s.vendor_registrations, 2);
    assert_eq!(s.dead_letters.len(), 1, "{:?}", s.dead_letters);
    assert!(s.dead_letters[0].contains("zilliz-westus3") && s.dead_letters[0].contains("96001"));
    if ci {
        assert!(s.used_bind);
    }
}

/// The demo binary at debug level: no vendor key, TSIG secret or ARM token in its output.
#[test]
fn no_secret_reaches_the_logs() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .arg("demo")
        .env("AUTOPILOT_LOG", "debug")
        .output()
        .expect("demo runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("vendor.dead_lettered"), "the run did reach the vendor paths");
    let vendors = private_link_autopilot::sandbox::vendors::SandboxVendors::secrets_for_tests();
    for secret in vendors.iter().map(String::as_str).chain([private_link_autopilot::sandbox::fake_arm::SANDBOX_TOKEN]) {
        assert!(!text.contains(secret), "a secret appears in the demo's output");
    }
}
