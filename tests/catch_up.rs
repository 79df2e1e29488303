//! The `resourcechanges` catch-up (`CatchUp` timer, `reconcile::catch_up`): an endpoint
//! created or deleted without an event is found in Resource Graph's change records since
//! the watermark and queued for the normal reconcile; the watermark advances only after
//! the queueing, never backwards; a missing or too-old watermark (Resource Graph keeps
//! changes 14 days) runs the full sweep instead; a failed read keeps the watermark.

use std::time::Duration;

use autopilot_sandbox::fake_arm::{EndpointSpec, FakeArmOptions, Fault, MemberSpec};
use autopilot_sandbox::harness::{SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB, Sandbox, SandboxOptions};
use autopilot_sandbox::host_emulator::InvokeOutcome;
use private_link_autopilot::queue::work::now_unix;
use private_link_autopilot::reconcile::catch_up::{self, INDEX_DELAY_SECS, RETENTION_SECS};
use serde_json::Value;

const ZONE: &str = "privatelink.eastus2.kusto.windows.net";

fn kusto_pe(name: &str, cluster: &str) -> EndpointSpec {
    let target = format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Kusto/Clusters/{cluster}");
    EndpointSpec::resource(
        SUB,
        RG,
        name,
        "eastus2",
        &target,
        "cluster",
        vec![MemberSpec::new("Engine", &[&format!("{cluster}.eastus2.kusto.windows.net")])],
    )
}

struct Env {
    sb: Sandbox,
    audit: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn env(workers: usize) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let audit_path = audit.display().to_string();
    let sb = Sandbox::start(SandboxOptions {
        arm: FakeArmOptions::default(),
        zones: vec![ZONE.into()],
        configure: Box::new(move |c| {
            c.audit.file = audit_path;
            c.sweep.subscriptions = vec![SUB.into()];
        }),
        workers,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox");
    Env { sb, audit, _dir: dir }
}

async fn run(sb: &Sandbox) -> Result<Value, String> {
    match sb.host.invoke_timer("CatchUp", false).await? {
        InvokeOutcome::Succeeded(r) => Ok(r.return_value),
        InvokeOutcome::Failed(why) => Err(why),
    }
}

async fn watermark(sb: &Sandbox) -> Option<u64> {
    catch_up::load_watermark(sb.app.small_state.as_ref()).await.unwrap()
}

async fn set_watermark(sb: &Sandbox, unix: u64) {
    sb.app.small_state.put(catch_up::WATERMARK_KEY, &serde_json::json!({"unix": unix})).await.unwrap();
}

fn completed(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "com.privatelinkautopilot.sweep.catch_up_completed")
        .collect()
}

#[tokio::test]
async fn an_endpoint_created_without_an_event_is_reconciled_from_resourcechanges() {
    let e = env(1).await;
    let start = now_unix();
    set_watermark(&e.sb, start - 3600).await;
    // Created in ARM; no event is delivered.
    e.sb.arm.put_endpoint(&kusto_pe("adx-missed", "adxmissed"));
    assert!(e.sb.arm.change_records() >= 1);

    let out = run(&e.sb).await.unwrap();
    assert_eq!(out["full_sweep"], false, "{out}");
    assert_eq!(out["endpoints_queued"], 1, "{out}");
    assert!(out["changes"].as_u64().unwrap() >= 1, "{out}");
    assert!(e.sb.drain(Duration::from_secs(10)).await, "the queued reconcile ran");
    assert!(e.sb.arm.record(&e.sb.zone_id(ZONE), "adxmissed").is_some(), "the missed endpoint got its record");

    // The watermark advanced to `now - INDEX_DELAY_SECS` (the last minutes are read again).
    let w = watermark(&e.sb).await.unwrap();
    assert!(w >= start - INDEX_DELAY_SECS && w <= now_unix() - INDEX_DELAY_SECS, "{w}");
    let done = completed(&e.audit);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["subject"], "catchup");
    assert_eq!(done[0]["data"]["endpoints_queued"], 1);
}

#[tokio::test]
async fn a_deletion_without_an_event_is_cleaned_up_from_resourcechanges() {
    let e = env(1).await;
    let (id, _) = e.sb.create(&kusto_pe("adx-gone", "adxgone")).await;
    assert!(e.sb.arm.record(&e.sb.zone_id(ZONE), "adxgone").is_some());
    set_watermark(&e.sb, now_unix() - 60).await;
    e.sb.arm.delete_endpoint(&id);
    let out = run(&e.sb).await.unwrap();
    assert_eq!(out["endpoints_queued"], 1, "{out}");
    assert!(e.sb.drain(Duration::from_secs(10)).await);
    assert!(e.sb.arm.record(&e.sb.zone_id(ZONE), "adxgone").is_none(), "its record was removed");
}

#[tokio::test]
async fn a_watermark_older_than_fourteen_days_falls_back_to_a_full_sweep() {
    let e = env(0).await;
    e.sb.arm.put_endpoint(&kusto_pe("adx-old", "adxold"));
    // Resource Graph kept nothing from before: the changes of the gap are gone.
    e.sb.arm.backdate_changes(Duration::from_secs(RETENTION_SECS + 60));
    assert_eq!(e.sb.arm.change_records(), 0);
    set_watermark(&e.sb, now_unix() - RETENTION_SECS - 3600).await;

    let out = run(&e.sb).await.unwrap();
    assert_eq!(out["full_sweep"], true, "{out}");
    assert!(e.sb.arm.record(&e.sb.zone_id(ZONE), "adxold").is_some(), "the sweep reconciled it");
    let w = watermark(&e.sb).await.unwrap();
    assert!(w + INDEX_DELAY_SECS + 60 >= now_unix(), "the watermark restarts from the sweep: {w}");
    assert_eq!(completed(&e.audit)[0]["data"]["full_sweep"], true);

    // The next run is incremental again.
    let out = run(&e.sb).await.unwrap();
    assert_eq!(out["full_sweep"], false, "{out}");
}

#[tokio::test]
async fn the_first_run_has_no_watermark_and_sweeps() {
    let e = env(0).await;
    assert_eq!(watermark(&e.sb).await, None);
    let out = run(&e.sb).await.unwrap();
    assert_eq!(out["full_sweep"], true, "{out}");
    assert!(watermark(&e.sb).await.is_some());
}

#[tokio::test]
async fn a_failed_read_keeps_the_watermark() {
    let e = env(0).await;
    let before = now_unix() - 1800;
    set_watermark(&e.sb, before).await;
    e.sb.arm.put_endpoint(&kusto_pe("adx-later", "adxlater"));
    e.sb.arm.inject(Fault::status(None, "/providers/Microsoft.ResourceGraph/", 500, 20));
    assert!(run(&e.sb).await.is_err(), "the run fails loudly");
    assert_eq!(watermark(&e.sb).await, Some(before), "nothing was skipped");
    assert_eq!(completed(&e.audit)[0]["data"]["error"].as_str().map(|s| s.contains("resourcechanges")), Some(true));

    // Recovered: the next run reads the same window and catches the endpoint.
    e.sb.arm.clear_faults();
    let out = run(&e.sb).await.unwrap();
    assert_eq!(out["endpoints_queued"], 1, "{out}");
}

#[tokio::test]
async fn our_own_mark_writes_do_not_queue_the_endpoint_again() {
    use private_link_autopilot::arm::ArmRequest;
    use private_link_autopilot::arm::client::Method;
    let e = env(0).await;
    let (id, _) = e.sb.create(&kusto_pe("adx-marked", "adxmarked")).await;
    // Everything so far is older than the window.
    e.sb.arm.backdate_changes(Duration::from_secs(7200));
    set_watermark(&e.sb, now_unix() - 3600).await;
    let tag = |name: &str| {
        ArmRequest::new(
            Method::Patch,
            format!("{id}/providers/Microsoft.Resources/tags/default"),
            private_link_autopilot::effects::marks::TAGS_API,
        )
        .body(serde_json::json!({"operation": "Merge", "properties": {"tags": {name: "x"}}}))
    };
    // A tag under our mark prefix: the product's own write.
    e.sb.app.arm.send_and_wait(tag("plautopilot-note")).await.unwrap();
    let out = run(&e.sb).await.unwrap();
    assert!(out["changes"].as_u64().unwrap() >= 1, "{out}");
    assert_eq!(out["endpoints_queued"], 0, "{out}");
    // Someone else's tag is a change like any other.
    e.sb.app.arm.send_and_wait(tag("owner")).await.unwrap();
    let out = run(&e.sb).await.unwrap();
    assert_eq!(out["endpoints_queued"], 1, "{out}");
}
