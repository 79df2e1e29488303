//! `autopilot doctor` and the sweep's coverage check, against the sandbox's fake ARM with
//! RBAC enforced from `infra/permissions.json` (the grants `azd up` assigns).
//!
//! * a deployment as infra leaves it: every check passes (exit 0);
//! * one grant removed: doctor names the action, the scope and the `az role assignment`
//!   line, and fails (non-zero exit);
//! * an event subscription missing in one subscription, a zone link missing: named, with
//!   their fixes; `--json` has the documented shape;
//! * the sweep reports an uncovered subscription (result + `coverage.gap` audit event),
//!   and with `coverage.create_missing` creates its topic and event subscription, after
//!   which a second sweep finds nothing to do.

use std::time::{Duration, Instant};

use private_link_autopilot::config::{Config, ZoneSettings};
use private_link_autopilot::doctor::{self, Report, Status};
use private_link_autopilot::reconcile::coverage::{self, CoverageSettings};
use private_link_autopilot::sandbox::fake_arm::FakeArmOptions;
use private_link_autopilot::sandbox::fake_arm::rbac::{Grants, InfraParams};
use private_link_autopilot::sandbox::harness::{
    HUB_RESOURCE_GROUP, HUB_SUBSCRIPTION, SPOKE_SUBSCRIPTION, Sandbox, SandboxOptions,
};
use serde_json::{Value, json};

const ZONE: &str = "privatelink.vaultcore.azure.net";
/// A second subscription in scope (a new landing zone).
const NEW_SUBSCRIPTION: &str = "33333333-3333-3333-3333-333333333333";
const FUNCTION_ID: &str = "/subscriptions/44444444-4444-4444-4444-444444444444/resourceGroups/rg-autopilot/providers/Microsoft.Web/sites/func-autopilot/functions/PrivateEndpointEvents";
const EVENTS_RG: &str = "rg-autopilot-events";

fn hub_vnet() -> String {
    format!(
        "/subscriptions/{HUB_SUBSCRIPTION}/resourceGroups/{HUB_RESOURCE_GROUP}/providers/Microsoft.Network/virtualNetworks/hub"
    )
}

fn spoke_vnet() -> String {
    format!(
        "/subscriptions/{SPOKE_SUBSCRIPTION}/resourceGroups/app-spoke/providers/Microsoft.Network/virtualNetworks/spoke"
    )
}

fn params(subscriptions: &[&str]) -> InfraParams {
    InfraParams {
        subscriptions_in_scope: subscriptions.iter().map(|s| (*s).to_owned()).collect(),
        dns_zone_subscription: HUB_SUBSCRIPTION.into(),
        dns_zone_resource_group: HUB_RESOURCE_GROUP.into(),
        dns_zone_names: vec![ZONE.into()],
        owned_resource_ids: vec![],
        ..InfraParams::default()
    }
}

fn coverage_settings() -> CoverageSettings {
    CoverageSettings { function_id: FUNCTION_ID.into(), ..CoverageSettings::default() }
}

fn configure(c: &mut Config, subscriptions: &[&str], audit: Option<String>) {
    c.dns.zones = vec![ZoneSettings {
        name: ZONE.into(),
        provider: "azure".into(),
        subscription: String::new(),
        resource_group: String::new(),
        server: String::new(),
    }];
    c.sweep.subscriptions = subscriptions.iter().map(|s| (*s).to_owned()).collect();
    c.sweep.source = "arm".into();
    c.coverage = coverage_settings();
    c.doctor.zone_links = vec![hub_vnet()];
    if let Some(a) = audit {
        c.audit.file = a;
    }
}

async fn sandbox(grants: Option<Grants>, subscriptions: &'static [&'static str], audit: Option<String>) -> Sandbox {
    let sb = Sandbox::start(SandboxOptions {
        arm: FakeArmOptions { lro_retry_after_secs: 1, rbac: grants, ..FakeArmOptions::default() },
        zones: vec![ZONE.into()],
        configure: Box::new(move |c| configure(c, subscriptions, audit)),
        workers: 0,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox");
    let zone = sb.zone_id(ZONE);
    sb.arm.add_resource(json!({
        "id": format!("{zone}/virtualNetworkLinks/hub"),
        "name": "hub",
        "type": "Microsoft.Network/privateDnsZones/virtualNetworkLinks",
        "location": "global",
        "properties": {"virtualNetwork": {"id": hub_vnet()}, "registrationEnabled": false,
            "virtualNetworkLinkState": "Completed", "provisioningState": "Succeeded"},
    }));
    sb
}

/// Infra's topic and event subscription in `subscription`.
fn cover(sb: &Sandbox, subscription: &str, with_event_subscription: bool) -> String {
    let topic = sb.arm.add_system_topic(subscription, EVENTS_RG, "evgst-autopilot-test");
    if with_event_subscription {
        let body = coverage::event_subscription_body(&coverage_settings());
        sb.arm.add_event_subscription(&topic, "private-endpoints-to-autopilot", body["properties"].clone());
    }
    topic
}

async fn run(sb: &Sandbox) -> Report {
    doctor::run(&sb.app, &|_| None).await
}

fn failures(r: &Report) -> Vec<&doctor::Check> {
    r.checks.iter().filter(|c| c.status == Status::Fail).collect()
}

#[tokio::test]
async fn a_deployment_as_infra_leaves_it_passes() {
    let sb = sandbox(Some(Grants::from_infra(&params(&[SPOKE_SUBSCRIPTION]))), &[SPOKE_SUBSCRIPTION], None).await;
    cover(&sb, SPOKE_SUBSCRIPTION, true);
    let r = run(&sb).await;
    assert!(r.ok, "{}", r.render(false));
    assert!(failures(&r).is_empty());
    for area in ["permissions", "coverage", "zones"] {
        assert!(
            r.checks.iter().any(|c| c.area == area && c.status == Status::Ok),
            "no passing {area} check: {}",
            r.render(false)
        );
    }
    assert!(sb.arm.denials().is_empty(), "doctor was refused: {:#?}", sb.arm.denials());
    // Read-only: nothing was written.
    assert!(!sb.arm.requests().iter().any(|r| r.is_write()), "doctor wrote something");
    let text = r.render(false);
    assert!(text.contains("✔") && !text.contains('\x1b'), "{text}");
}

#[tokio::test]
async fn a_removed_grant_is_named_with_its_fix() {
    let action = "Microsoft.Network/privateDnsZones/A/write";
    let grants = Grants::from_infra(&params(&[SPOKE_SUBSCRIPTION])).without_action(action);
    let sb = sandbox(Some(grants), &[SPOKE_SUBSCRIPTION], None).await;
    cover(&sb, SPOKE_SUBSCRIPTION, true);
    let r = run(&sb).await;
    assert!(!r.ok);
    let f = failures(&r);
    assert_eq!(f.len(), 1, "{}", r.render(false));
    let c = f[0];
    assert_eq!(c.area, "permissions");
    assert!(c.detail.contains(action), "{c:?}");
    assert!(c.subject.contains("dnsRecordWriter") && c.subject.contains(&format!("privateDnsZones/{ZONE}")), "{c:?}");
    let fix = c.fix.as_deref().unwrap();
    assert!(fix.starts_with("az role assignment create --assignee "), "{fix}");
    assert!(
        fix.contains("DNS A record writer") && fix.contains(&format!("--scope /subscriptions/{HUB_SUBSCRIPTION}")),
        "{fix}"
    );
    assert!(r.render(false).contains("✗"), "{}", r.render(false));
}

#[tokio::test]
async fn without_the_event_grid_read_the_coverage_check_and_the_grant_are_named() {
    let action = "Microsoft.EventGrid/systemTopics/read";
    let grants = Grants::from_infra(&params(&[SPOKE_SUBSCRIPTION])).without_action(action);
    let sb = sandbox(Some(grants), &[SPOKE_SUBSCRIPTION], None).await;
    cover(&sb, SPOKE_SUBSCRIPTION, true);
    let r = run(&sb).await;
    assert!(!r.ok);
    assert!(sb.arm.denials().iter().any(|d| d.action == action), "the fake never refused {action}");
    let f = failures(&r);
    assert!(f.iter().any(|c| c.area == "permissions" && c.detail.contains(action)), "{}", r.render(false));
    assert!(f.iter().any(|c| c.area == "coverage" && c.detail.contains("cannot be read")), "{}", r.render(false));
}

#[tokio::test]
async fn a_missing_event_subscription_and_a_missing_link_are_named() {
    const BOTH: &[&str] = &[SPOKE_SUBSCRIPTION, NEW_SUBSCRIPTION];
    let sb = sandbox(Some(Grants::from_infra(&params(BOTH))), BOTH, None).await;
    cover(&sb, SPOKE_SUBSCRIPTION, true);
    let topic = cover(&sb, NEW_SUBSCRIPTION, false);
    let mut app_config = sb.app.config.clone();
    app_config.doctor.zone_links.push(spoke_vnet());
    // The same app, configured to expect one more VNet link.
    let app = private_link_autopilot::app::App::build(
        app_config,
        std::sync::Arc::new(private_link_autopilot::arm::credential::StaticToken(
            private_link_autopilot::arm::Secret::new(sb.arm.token()),
        )),
        sb.app.queue.clone(),
        vec![],
    )
    .unwrap();
    let r = doctor::run(&app, &|_| None).await;
    eprintln!("{}", r.render(false));
    assert!(!r.ok);
    let f = failures(&r);
    assert_eq!(f.len(), 2, "{}", r.render(false));
    let cov = f.iter().find(|c| c.area == "coverage").expect("coverage failure");
    assert!(cov.subject.contains(NEW_SUBSCRIPTION), "{cov:?}");
    assert!(cov.detail.contains("no event subscription") && cov.detail.contains(&topic), "{cov:?}");
    assert!(cov.fix.as_deref().unwrap().contains("CREATE_MISSING"), "{cov:?}");
    let zone = f.iter().find(|c| c.area == "zones").expect("zone failure");
    assert!(zone.detail.contains(&spoke_vnet()), "{zone:?}");
    assert!(zone.fix.as_deref().unwrap().starts_with("az network private-dns link vnet create"), "{zone:?}");
    // The JSON shape pipelines read.
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["failed"], 2);
    let first = &v["checks"][0];
    for key in ["area", "subject", "status", "detail", "fix"] {
        assert!(first.get(key).is_some(), "{key} missing in {first}");
    }
    assert!(v["checks"].as_array().unwrap().iter().any(|c| c["status"] == "fail" && c["area"] == "coverage"));
}

async fn sweep(sb: &Sandbox) -> Value {
    let out = sb.host.invoke_timer("Sweep", false).await.expect("sweep");
    out.result().unwrap_or_else(|| panic!("sweep failed: {out:?}")).return_value.clone()
}

async fn audit_events(path: &std::path::Path, kind: &str, want: usize) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let events: Vec<Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|e: &Value| e["type"] == format!("com.privatelinkautopilot.{kind}"))
            .collect();
        if events.len() >= want || Instant::now() > until {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_sweep_reports_an_uncovered_subscription_and_creates_it_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    const BOTH: &[&str] = &[SPOKE_SUBSCRIPTION, NEW_SUBSCRIPTION];
    let sb = sandbox(Some(Grants::from_infra(&params(BOTH))), BOTH, Some(audit.display().to_string())).await;
    cover(&sb, SPOKE_SUBSCRIPTION, true);
    let result = sweep(&sb).await;
    assert_eq!(result["coverage_gaps"], 1, "{result}");
    assert_eq!(result["coverage_created"], 0, "{result}");
    let gaps = audit_events(&audit, "coverage.gap", 1).await;
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0]["subject"], format!("/subscriptions/{NEW_SUBSCRIPTION}"));
    assert!(gaps[0]["data"]["problems"][0].as_str().unwrap().contains("no Event Grid system topic"), "{}", gaps[0]);
    assert_eq!(sb.arm.writes_to("Microsoft.EventGrid"), 0, "created without create_missing");

    // The same deployment with creation on: the sweep creates the topic and the event
    // subscription, and the next sweep finds both.
    let dir2 = tempfile::tempdir().unwrap();
    let audit2 = dir2.path().join("audit.jsonl");
    let audit2_path = audit2.display().to_string();
    let sb = Sandbox::start(SandboxOptions {
        arm: FakeArmOptions { lro_retry_after_secs: 1, ..FakeArmOptions::default() },
        zones: vec![ZONE.into()],
        configure: Box::new(move |c| {
            configure(c, BOTH, Some(audit2_path));
            c.coverage.create_missing = true;
        }),
        workers: 0,
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    cover(&sb, SPOKE_SUBSCRIPTION, true);
    let result = sweep(&sb).await;
    assert_eq!(result["coverage_gaps"], 0, "{result}");
    assert_eq!(result["coverage_created"], 1, "{result}");
    let created = audit_events(&audit2, "coverage.created", 1).await;
    assert_eq!(created.len(), 1);
    let found = coverage::check(&sb.app.arm, &sb.app.config.coverage, NEW_SUBSCRIPTION).await;
    assert!(found.covered(), "{found:?}");
    let topic = found.topic.unwrap();
    assert!(topic.contains(&format!("/subscriptions/{NEW_SUBSCRIPTION}/resourceGroups/{EVENTS_RG}/")), "{topic}");
    let writes = sb.arm.writes_to("Microsoft.EventGrid");
    assert_eq!(writes, 2, "one topic, one event subscription");
    let result = sweep(&sb).await;
    assert_eq!(result["coverage_gaps"], 0, "{result}");
    assert_eq!(result["coverage_created"], 0, "{result}");
    assert_eq!(sb.arm.writes_to("Microsoft.EventGrid"), writes, "the second sweep wrote again");
}
