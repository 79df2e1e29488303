//! README's first command, `autopilot demo`, ends in the right state. In CI the BIND 9
//! variant is required (the RFC 2136 path must run, not skip).

use autopilot_sandbox::demo::{self, BindChoice};

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
            // The ClickHouse wildcard twice: the hub's zone and its DR replica.
            "*.eastus2.privatelink.azure.clickhouse.cloud",
            "*.eastus2.privatelink.azure.clickhouse.cloud",
            "amw-metrics-a1b2.privatelink.eastus2.prometheus.monitor.azure.com",
            "kv-secrets.privatelink.vaultcore.azure.net",
        ]
    );
    let wildcards: Vec<_> = s.rows.iter().filter(|r| r.zone == demo::CLICKHOUSE_ZONE).collect();
    for wildcard in &wildcards {
        assert_eq!(wildcard.owner, "ch-analytics-2", "the survivor keeps the shared wildcard in every replica");
        assert_eq!(wildcard.addresses.len(), 1, "{wildcard:?}");
    }
    let places: Vec<&str> = wildcards.iter().map(|r| r.place.as_str()).collect();
    assert_eq!(places, vec!["", "DR replica in dns-dr"], "the hub's copy and the DR replica");
    // Zone management created the missing vendor zone and linked it to the spoke VNet
    // (the hub's other zones were linked already, by someone else: left alone).
    assert_eq!(s.zones_created, vec![demo::ZILLIZ_ZONE.to_owned()]);
    assert_eq!(s.links_created, vec![format!("{} -> spoke-vnet", demo::ZILLIZ_ZONE)]);
    assert!(s.rows.iter().any(|r| r.zone == demo::ZILLIZ_ZONE), "and the record went into it");
    // The managed endpoint from the unreadable Microsoft subscription, approved from the
    // target side by its rule, with a description that says who approved it and why.
    let (status, description) = &s.managed_connection;
    assert_eq!(status, "Approved", "{description}");
    assert!(
        description.starts_with(&format!("Approved by Private Link Autopilot: rule {}", demo::MANAGED_RULE)),
        "{description}"
    );
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
    let vendors = autopilot_sandbox::vendors::SandboxVendors::secrets_for_tests();
    for secret in vendors.iter().map(String::as_str).chain([autopilot_sandbox::fake_arm::SANDBOX_TOKEN]) {
        assert!(!text.contains(secret), "a secret appears in the demo's output");
    }
}

/// The demo's dead letter (Zilliz has no Private Link in westus3) says each thing once:
/// the endpoint in short (its full id is the record's correlation id), the vendor, the
/// cause, and is short enough to read at a glance.
#[tokio::test]
async fn the_dead_letter_reason_says_each_thing_once() {
    let s = demo::run(BindChoice::Off).await.expect("demo runs");
    assert_eq!(s.dead_letters.len(), 1, "{:?}", s.dead_letters);
    let reason = &s.dead_letters[0];
    assert_eq!(reason.matches("zilliz-westus3").count(), 1, "the endpoint once: {reason}");
    assert!(!reason.contains("/subscriptions/") && !reason.contains("22222222"), "no full id: {reason}");
    assert!(reason.starts_with("app-spoke/zilliz-westus3: "), "the endpoint first, in short: {reason}");
    let vendor = reason.to_ascii_lowercase().matches("zilliz").count() - reason.matches("zilliz-westus3").count();
    assert_eq!(vendor, 1, "the vendor once: {reason}");
    assert_eq!(reason.matches("96001").count(), 1, "the cause once: {reason}");
    assert_eq!(reason.matches("error:").count(), 1, "one error label: {reason}");
    assert!(reason.len() <= 160, "{} characters: {reason}", reason.len());
}

/// `autopilot demo | cat` reads as a story: stdout has no escape codes and no log lines,
/// and stderr holds warnings and errors only (no INFO lines) unless asked.
#[test]
fn stdout_is_the_narrative_and_stderr_has_no_info() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .arg("demo")
        .arg("--bind")
        .arg("off")
        .env_remove("AUTOPILOT_LOG")
        .env_remove("AUTOPILOT__LOG__FILTER")
        .output()
        .expect("demo runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(!stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'), "ANSI escape codes in piped output");
    for line in stdout.lines() {
        let log_like =
            [" TRACE ", " DEBUG ", " INFO ", " WARN ", " ERROR ", "\"level\":"].iter().any(|l| line.contains(l))
                || line.get(..4).is_some_and(|y| y.chars().all(|c| c.is_ascii_digit()) && line.get(4..5) == Some("-"));
        assert!(!log_like, "a log line on stdout: {line}");
    }
    assert!(stdout.contains("1. create") && stdout.contains("7. where things stand"), "{stdout}");
    assert!(stdout.contains("dead-lettered"), "every step's outcome is shown: {stdout}");
    // Zone management, the DR replica and the target-side approval each show as a line.
    for line in [
        "+ zone az-eastus2.vectordb.zillizcloud.com created in dns-hub, tagged plautopilot-owned=true",
        "+ link plautopilot-spoke-vnet-",
        "(DR replica in dns-dr)",
        "CatchUp timer   Resource Graph listed 1 Pending connection(s) on owned storage accounts; approved 1",
        "description: Approved by Private Link Autopilot: rule data-factory-managed-vnet (subscription ",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(
        !stderr.lines().any(|l| l.contains(" INFO ") || l.contains(" DEBUG ")),
        "INFO on stderr by default:\n{stderr}"
    );
}

/// `--log-file` keeps the full log (info) in a file whose path is printed.
#[test]
fn log_file_gets_the_logs_and_its_path_is_printed() {
    let dir = std::env::temp_dir().join(format!("autopilot-demo-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("demo.log");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .args(["demo", "--bind", "off", "--log-file"])
        .arg(&path)
        .env_remove("AUTOPILOT_LOG")
        .output()
        .expect("demo runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().next().is_some_and(|l| l.contains(&path.display().to_string())), "{stdout}");
    let log = std::fs::read_to_string(&path).unwrap();
    assert!(log.contains(" INFO ") && !log.contains('\u{1b}'), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
