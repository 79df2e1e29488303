//! Marks: the endpoint's state written as tags through the Tags API (Merge), foreign
//! tags untouched, no write when nothing changed, Azure's 50-tag limit respected, and a
//! Pending endpoint past its deadline reported with the missing step.

use std::time::Duration;

use autopilot_sandbox::events::{self, ResourceEvent};
use autopilot_sandbox::fake_arm::EndpointSpec;
use autopilot_sandbox::harness::{SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB, Sandbox, SandboxOptions};

const ZONE: &str = "eastus2.privatelink.azure.clickhouse.cloud";
const ALIAS: &str = "production-eastus2-0-0.00000000-0000-4000-8000-00000000c0de.eastus2.azure.privatelinkservice";

async fn sandbox(audit: &std::path::Path, overdue_after: u64) -> Sandbox {
    let audit = audit.display().to_string();
    Sandbox::start(SandboxOptions {
        zones: vec![ZONE.into()],
        configure: Box::new(move |c| {
            c.audit.file = audit;
            c.marks.pending_warning_after_secs = overdue_after;
        }),
        workers: 0,
        ..SandboxOptions::default()
    })
    .await
    .unwrap()
}

fn audit_types(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["type"].as_str().map(str::to_owned))
        .collect()
}

fn tag_patches(sb: &Sandbox) -> usize {
    sb.arm
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.to_ascii_lowercase().ends_with("/tags/default"))
        .count()
}

#[tokio::test]
async fn marks_merge_beside_foreign_tags_and_repeat_events_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("a.jsonl");
    let sb = sandbox(&audit, 3600).await;
    let spec = EndpointSpec::alias(SUB, RG, "ch-marked", "eastus2", ALIAS).with_tag("costcenter", "4711");
    let (id, _) = sb.create(&spec).await;
    let tags = sb.arm.resource(&id).unwrap()["tags"].clone();
    assert_eq!(tags["costcenter"], "4711", "foreign tag kept: {tags}");
    assert_eq!(tags["plautopilot-state"], "Pending");
    assert_eq!(tags["plautopilot-done"], "", "records wait for approval");
    assert!(tags["plautopilot-since"].as_str().is_some_and(|s| s.ends_with('Z')));
    assert_eq!(tag_patches(&sb), 1);
    let redeliver = || sb.deliver(vec![events::event_grid(ResourceEvent::WriteSuccess, &id)]);
    redeliver().await;
    assert_eq!(tag_patches(&sb), 1, "same state: no second write");
    sb.arm.set_connection_status(&id, "Approved");
    redeliver().await;
    assert_eq!(tag_patches(&sb), 2);
    assert_eq!(sb.arm.resource(&id).unwrap()["tags"]["plautopilot-state"], "Approved");
    assert_eq!(sb.arm.resource(&id).unwrap()["tags"]["plautopilot-done"], "dns");
    assert!(sb.arm.record(&sb.zone_id(ZONE), "*").is_some(), "written once approved");
    assert_eq!(audit_types(&audit).iter().filter(|t| t.ends_with("endpoint.marked")).count(), 2);
    assert!(!audit_types(&audit).iter().any(|t| t.ends_with("pending_overdue")));
}

#[tokio::test]
async fn a_full_tag_set_is_not_pushed_past_fifty() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("a.jsonl");
    let sb = sandbox(&audit, 3600).await;
    let mut spec = EndpointSpec::alias(SUB, RG, "ch-full", "eastus2", ALIAS).approved();
    for i in 0..49 {
        spec = spec.with_tag(&format!("t{i:02}"), "x");
    }
    let (id, delivery) = sb.create(&spec).await;
    assert_eq!(delivery.status, 202);
    assert_eq!(tag_patches(&sb), 0, "49 + 3 would pass 50: no write");
    assert_eq!(sb.arm.resource(&id).unwrap()["tags"].as_object().unwrap().len(), 49);
    assert!(sb.arm.record(&sb.zone_id(ZONE), "*").is_some(), "DNS is not held back by marks");
    assert!(audit_types(&audit).iter().any(|t| t.ends_with("endpoint.mark_skipped")));
}

#[tokio::test]
async fn an_endpoint_pending_too_long_raises_a_warning_naming_the_missing_step() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("a.jsonl");
    let sb = sandbox(&audit, 0).await;
    let (id, _) = sb.create(&EndpointSpec::alias(SUB, RG, "ch-waiting", "eastus2", ALIAS)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&audit).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let warn = lines
        .iter()
        .find(|e| e["type"].as_str().unwrap().ends_with("endpoint.pending_overdue"))
        .expect("overdue warning");
    let step = warn["data"]["missing_step"].as_str().unwrap();
    assert!(step.contains("not registered with clickhouse") || step.contains("approved"), "{step}");
    let tags = sb.arm.resource(&id).unwrap()["tags"].clone();
    assert_eq!(tags["plautopilot-overdue"], step, "the missing step is on the endpoint too: {tags}");

    // Still overdue on the next events: the warning is not repeated.
    let redeliver = || sb.deliver(vec![events::event_grid(ResourceEvent::WriteSuccess, &id)]);
    redeliver().await;
    redeliver().await;
    let count = |t: &str| audit_types(&audit).iter().filter(|x| x.ends_with(t)).count();
    assert_eq!(count("endpoint.pending_overdue"), 1, "one warning per overdue spell");

    // Approved: the overdue tag is emptied (Merge cannot delete a tag).
    sb.arm.set_connection_status(&id, "Approved");
    redeliver().await;
    let tags = sb.arm.resource(&id).unwrap()["tags"].clone();
    assert_eq!(tags["plautopilot-state"], "Approved");
    assert_eq!(tags["plautopilot-overdue"], "", "{tags}");
    assert_eq!(count("endpoint.pending_overdue"), 1);
}

#[tokio::test]
async fn at_the_tag_limit_the_overdue_tag_gives_way_to_the_state_marks() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("a.jsonl");
    let sb = sandbox(&audit, 0).await;
    let mut spec = EndpointSpec::alias(SUB, RG, "ch-47", "eastus2", ALIAS);
    for i in 0..47 {
        spec = spec.with_tag(&format!("t{i:02}"), "x");
    }
    let (id, _) = sb.create(&spec).await;
    let tags = sb.arm.resource(&id).unwrap()["tags"].clone();
    assert_eq!(tags.as_object().unwrap().len(), 50, "47 + state, done, since: {tags}");
    assert_eq!(tags["plautopilot-state"], "Pending");
    assert!(tags.get("plautopilot-overdue").is_none(), "no room for it: {tags}");
    let types = audit_types(&audit);
    assert!(types.iter().any(|t| t.ends_with("endpoint.pending_overdue")), "{types:?}");
    assert!(!types.iter().any(|t| t.ends_with("endpoint.mark_skipped")), "the marks were written: {types:?}");
}
