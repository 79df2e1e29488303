//! Every invocation finishes inside its host's timeout: a work item is cut off at its
//! deadline and requeued (never killed with the process), a sweep answers the host in
//! constant size whatever the estate, and it reports `sweep.completed` even when it fails.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use autopilot_sandbox::fake_arm::{EndpointSpec, FakeArmOptions, Fault};
use autopilot_sandbox::harness::{SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB, Sandbox, SandboxOptions};
use autopilot_sandbox::host_emulator::InvokeOutcome;
use autopilot_sandbox::vendors::CLICKHOUSE_ALIAS;
use private_link_autopilot::model::ResourceId;
use private_link_autopilot::queue::work;
use private_link_autopilot::reconcile::Outcome;
use private_link_autopilot::runtime::worker;

const ZONE: &str = "eastus2.privatelink.azure.clickhouse.cloud";

async fn sandbox(configure: impl FnOnce(&mut private_link_autopilot::config::Config) + Send + 'static) -> Sandbox {
    Sandbox::start(SandboxOptions {
        arm: FakeArmOptions::default(),
        zones: vec![ZONE.into()],
        configure: Box::new(configure),
        workers: 0,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox")
}

#[tokio::test]
async fn a_work_item_is_requeued_at_its_deadline() {
    let sb = sandbox(|c| c.reconcile.work_deadline_secs = 1).await;
    let id = sb.arm.put_endpoint(&EndpointSpec::alias(SUB, RG, "ch-slow", "eastus2", CLICKHOUSE_ALIAS).approved());
    // ARM hangs on the endpoint read far longer than the item may take.
    sb.arm.inject(Fault::delay(None, "/privateEndpoints/ch-slow", Duration::from_secs(30), 1));
    let rid = ResourceId::parse_private_endpoint(&id).unwrap();
    let item = work::parse(&work::reconcile_retry(&rid, 1, work::now_unix(), "test", Duration::ZERO).body).unwrap().0;
    let started = Instant::now();
    let executed = worker::execute(&sb.app.reconciler, &item, &rid).await;
    assert!(started.elapsed() < Duration::from_secs(3), "cut off at the deadline: {:?}", started.elapsed());
    match executed.outcome {
        Outcome::Requeue { reason, .. } => assert!(reason.contains("deadline"), "{reason}"),
        other => panic!("expected a requeue, got {other:?}"),
    }
}

#[tokio::test]
async fn a_sweep_answers_in_constant_size() {
    let sb = sandbox(|c| c.sweep.subscriptions = vec![SUB.into()]).await;
    for i in 0..150u8 {
        let spec = EndpointSpec::alias(SUB, RG, &format!("ch-{i}"), "eastus2", CLICKHOUSE_ALIAS)
            .approved()
            .with_ip(Ipv4Addr::new(10, 9, 0, i));
        sb.arm.put_endpoint(&spec);
    }
    let out = sb.host.invoke_timer("Sweep", false).await.unwrap();
    let InvokeOutcome::Succeeded(r) = out else { panic!("sweep failed: {out:?}") };
    assert!(r.logs.len() <= 52, "{} log lines", r.logs.len());
    assert!(r.logs[0].starts_with("sweep: 150 listed"), "{:?}", r.logs[0]);
    assert!(r.return_value.is_object(), "counts, not one report per endpoint: {}", r.return_value);
    assert_eq!(r.return_value["reconciled"], 150);
    assert!(serde_json::to_string(&r.return_value).unwrap().len() < 2_000);
}

#[tokio::test]
async fn a_failed_sweep_still_reports_its_completion() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let path = audit.display().to_string();
    let sb = sandbox(move |c| {
        c.sweep.subscriptions = vec![SUB.into()];
        c.audit.file = path;
    })
    .await;
    sb.arm.inject(Fault::status(None, "/providers/Microsoft.ResourceGraph/resources", 403, 10));
    let out = sb.host.invoke_timer("Sweep", false).await.unwrap();
    assert!(matches!(out, InvokeOutcome::Failed(_)), "{out:?}");
    let text = std::fs::read_to_string(&audit).unwrap_or_default();
    let event = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["type"].as_str().is_some_and(|t| t.ends_with("sweep.completed")))
        .expect("sweep.completed published");
    assert!(event["data"]["error"].as_str().is_some_and(|e| e.contains("listing")), "{event}");
}
