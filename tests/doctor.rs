//! `autopilot doctor` and the sweep's coverage check, against the sandbox's fake ARM with
//! RBAC enforced from `infra/permissions.json` (the grants `azd up` assigns).
//!
//! * a deployment as infra leaves it: every check passes (exit 0);
//! * one grant removed: doctor names the action, the scope and the `az role assignment`
//!   line, and fails (non-zero exit);
//! * an event subscription missing in one subscription, a zone link missing: named, with
//!   their fixes; `--json` has the documented shape;
//! * the sweep reports an uncovered subscription (result + `sweep.coverage_gap` audit event),
//!   and with `coverage.create_missing` creates its topic and event subscription, after
//!   which a second sweep finds nothing to do.

use std::time::{Duration, Instant};

use autopilot_sandbox::fake_arm::FakeArmOptions;
use autopilot_sandbox::fake_arm::rbac::{Grants, InfraParams};
use autopilot_sandbox::harness::{HUB_RESOURCE_GROUP, HUB_SUBSCRIPTION, SPOKE_SUBSCRIPTION, Sandbox, SandboxOptions};
use private_link_autopilot::config::{Config, ZoneSettings};
use private_link_autopilot::doctor::{self, Report, Status};
use private_link_autopilot::reconcile::coverage::{self, CoverageSettings};
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
        link_to: Default::default(),
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
    link_hub(&sb);
    sb
}

/// The hub VNet's link on the zone, as infra's users create it.
fn link_hub(sb: &Sandbox) {
    let zone = sb.zone_id(ZONE);
    sb.arm.add_resource(json!({
        "id": format!("{zone}/virtualNetworkLinks/hub"),
        "name": "hub",
        "type": "Microsoft.Network/privateDnsZones/virtualNetworkLinks",
        "location": "global",
        "properties": {"virtualNetwork": {"id": hub_vnet()}, "registrationEnabled": false,
            "virtualNetworkLinkState": "Completed", "provisioningState": "Succeeded"},
    }));
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
    // The Status function's counters show it until a sweep finds it covered.
    assert_eq!(sb.app.stats.snapshot()["subscriptions_uncovered"], 1);
    let gaps = audit_events(&audit, "sweep.coverage_gap", 1).await;
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
    let created = audit_events(&audit2, "sweep.coverage_created", 1).await;
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
    assert_eq!(sb.app.stats.snapshot()["subscriptions_uncovered"], 0);
    assert_eq!(sb.arm.writes_to("Microsoft.EventGrid"), writes, "the second sweep wrote again");
}

/// Creation under enforced RBAC: infra's event subscription writer role (assigned with
/// createMissingEventSubscriptions) is enough, and without it the refusal is named by the
/// sweep's gap and by doctor.
#[tokio::test]
async fn creation_needs_exactly_the_writer_role_infra_assigns_with_the_switch() {
    const BOTH: &[&str] = &[SPOKE_SUBSCRIPTION, NEW_SUBSCRIPTION];
    let storage = "/subscriptions/44444444-4444-4444-4444-444444444444/resourceGroups/rg-autopilot/providers/Microsoft.Storage/storageAccounts/stautopilot";
    for switched_on in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.jsonl");
        let audit_path = audit.display().to_string();
        let grants =
            Grants::from_infra(&InfraParams { create_missing_event_subscriptions: switched_on, ..params(BOTH) });
        let sb = Sandbox::start(SandboxOptions {
            arm: FakeArmOptions { lro_retry_after_secs: 1, rbac: Some(grants), ..FakeArmOptions::default() },
            zones: vec![ZONE.into()],
            configure: Box::new(move |c| {
                configure(c, BOTH, Some(audit_path));
                c.coverage.create_missing = true;
                c.coverage.dead_letter_storage_account_id = storage.into();
            }),
            workers: 0,
            ..SandboxOptions::default()
        })
        .await
        .unwrap();
        link_hub(&sb);
        cover(&sb, SPOKE_SUBSCRIPTION, true);
        let result = sweep(&sb).await;
        let denials = sb.arm.denials();
        if switched_on {
            assert_eq!(result["coverage_created"], 1, "{result} {denials:#?}");
            assert_eq!(result["coverage_gaps"], 0, "{result}");
            assert!(denials.is_empty(), "{denials:#?}");
            let created = audit_events(&audit, "sweep.coverage_created", 1).await;
            let follow_up = created[0]["data"]["follow_up"][0].as_str().unwrap_or_default();
            assert!(
                follow_up.contains("Storage Blob Data Contributor") && follow_up.contains("eventgrid-deadletter"),
                "{}",
                created[0]
            );
            let r = run(&sb).await;
            assert!(r.ok, "{}", r.render(false));
            assert!(
                r.checks.iter().any(|c| c.subject.starts_with("eventSubscriptionWriter at ") && c.status == Status::Ok)
            );
        } else {
            assert_eq!(result["coverage_created"], 0, "{result}");
            assert_eq!(result["coverage_gaps"], 1, "{result}");
            assert!(denials.iter().any(|d| d.action == "Microsoft.EventGrid/systemTopics/write"), "{denials:#?}");
            let gaps = audit_events(&audit, "sweep.coverage_gap", 1).await;
            let fix = gaps[0]["data"]["fix"].as_str().unwrap_or_default();
            assert!(fix.contains("Microsoft.EventGrid/systemTopics/write") && fix.contains(NEW_SUBSCRIPTION), "{fix}");
            let r = run(&sb).await;
            assert!(!r.ok);
            let missing: Vec<_> = failures(&r).into_iter().filter(|c| c.area == "permissions").collect();
            assert_eq!(missing.len(), 2, "one per subscription in scope: {}", r.render(false));
            assert!(
                missing.iter().all(|c| c.detail.contains("Microsoft.EventGrid/systemTopics/eventSubscriptions/write"))
            );
            assert!(missing[0].fix.as_deref().unwrap().contains("event subscription writer"), "{:?}", missing[0]);
        }
    }
}

/// Vendor secrets (set, unresolved Key Vault reference, or asked of the vault through ARM)
/// and one read-only call per vendor with its key.
#[tokio::test]
async fn vendor_secrets_and_keys_are_checked() {
    use autopilot_sandbox::vendors::SandboxVendors;
    let vendors = SandboxVendors::start().await.unwrap();
    let mut base = Config::default();
    vendors.configure(&mut base);
    let section = base.vendors.clone();
    let vault = format!(
        "/subscriptions/{HUB_SUBSCRIPTION}/resourceGroups/rg-autopilot/providers/Microsoft.KeyVault/vaults/kvautopilot"
    );
    let vault_id = vault.clone();
    let sb = Sandbox::start(SandboxOptions {
        zones: vec![ZONE.into()],
        configure: Box::new(move |c| {
            configure(c, &[], None);
            c.vendors = section;
            c.doctor.key_vault_id = vault_id;
        }),
        env: vendors.env(),
        workers: 0,
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    link_hub(&sb);
    let env: std::collections::HashMap<String, String> = vendors.env().into_iter().collect();
    let r = doctor::run(&sb.app, &|k| env.get(k).cloned()).await;
    let area = |r: &Report, a: &str, s: Status| r.checks.iter().filter(|c| c.area == a && c.status == s).count();
    assert_eq!(area(&r, "secrets", Status::Ok), 4, "{}", r.render(false));
    assert_eq!(area(&r, "vendors", Status::Ok), 3, "{}", r.render(false));
    assert!(r.ok, "{}", r.render(false));
    // No secret value is ever shown.
    let json = serde_json::to_string(&r).unwrap();
    for secret in vendors.secrets() {
        assert!(!json.contains(&secret), "a secret leaked into the report");
    }

    // A wrong Elastic key, an unresolved Zilliz reference, and ClickHouse's variables not
    // set here: the vault is asked (one secret exists, the other does not).
    sb.arm.add_resource(json!({
        "id": format!("{vault}/secrets/clickhouse-key-id"),
        "name": "clickhouse-key-id",
        "type": "Microsoft.KeyVault/vaults/secrets",
        "properties": {"attributes": {"enabled": true}},
    }));
    let mut env = env.clone();
    env.insert("ELASTIC_API_KEY".into(), "not-the-key".into());
    env.insert("ZILLIZ_API_KEY".into(), "@Microsoft.KeyVault(VaultName=kvautopilot;SecretName=zilliz-api-key)".into());
    env.remove("CLICKHOUSE_KEY_ID");
    env.remove("CLICKHOUSE_KEY_SECRET");
    let r = doctor::run(&sb.app, &|k| env.get(k).cloned()).await;
    assert!(!r.ok);
    let find = |area: &str, subject: &str| {
        r.checks.iter().find(|c| c.area == area && c.subject == subject).unwrap_or_else(|| panic!("{area} {subject}"))
    };
    assert_eq!(find("secrets", "clickhouse CLICKHOUSE_KEY_ID").status, Status::Ok);
    let missing = find("secrets", "clickhouse CLICKHOUSE_KEY_SECRET");
    assert_eq!(missing.status, Status::Fail);
    assert_eq!(
        missing.fix.as_deref(),
        Some("az keyvault secret set --vault-name kvautopilot --name clickhouse-key-secret --value <the key>")
    );
    let unresolved = find("secrets", "zilliz ZILLIZ_API_KEY");
    assert_eq!(unresolved.status, Status::Fail);
    assert!(unresolved.detail.contains("unresolved Key Vault reference"), "{unresolved:?}");
    let elastic = find("vendors", "elastic key");
    assert_eq!(elastic.status, Status::Fail, "{elastic:?}");
    assert!(elastic.fix.as_deref().unwrap().contains("refuses the key"), "{elastic:?}");
    let clickhouse = find("vendors", "clickhouse key");
    assert_eq!(clickhouse.status, Status::Fail);
    assert!(clickhouse.detail.contains("CLICKHOUSE_KEY_ID"), "{clickhouse:?}");
}

/// The Service Bus queue and the audit topic, read through ARM.
#[tokio::test]
async fn the_queue_and_the_audit_topic_are_read_through_arm() {
    let queue = "/subscriptions/44444444-4444-4444-4444-444444444444/resourceGroups/rg-autopilot/providers/Microsoft.ServiceBus/namespaces/sb-autopilot/queues/autopilot-work";
    let topic = "/subscriptions/44444444-4444-4444-4444-444444444444/resourceGroups/rg-autopilot/providers/Microsoft.EventGrid/topics/evgt-autopilot";
    let endpoint = "http://127.0.0.1:9/api/events";
    let sb = Sandbox::start(SandboxOptions {
        zones: vec![ZONE.into()],
        configure: Box::new(move |c| {
            configure(c, &[], None);
            c.queue.kind = "servicebus".into();
            c.queue.namespace = "sb-autopilot".into();
            c.queue.arm_queue_id = queue.into();
            c.audit.topic_endpoint = endpoint.into();
            c.doctor.audit_topic_id = topic.into();
        }),
        workers: 0,
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let r = run(&sb).await;
    let of = |r: &Report, area: &str| r.checks.iter().find(|c| c.area == area).cloned().unwrap();
    assert_eq!(of(&r, "servicebus").status, Status::Fail, "{}", r.render(false));
    assert!(of(&r, "servicebus").detail.contains("does not exist"));
    assert_eq!(of(&r, "audit").status, Status::Fail);
    sb.arm
        .add_resource(json!({"id": queue, "name": "autopilot-work", "type": "Microsoft.ServiceBus/namespaces/queues",
        "properties": {"countDetails": {"activeMessageCount": 0}}}));
    sb.arm.add_resource(json!({"id": topic, "name": "evgt-autopilot", "type": "Microsoft.EventGrid/topics",
        "location": "eastus2", "properties": {"endpoint": "https://evgt-autopilot.eastus2-1.eventgrid.azure.net/api/events"}}));
    let r = run(&sb).await;
    assert_eq!(of(&r, "servicebus").status, Status::Ok, "{}", r.render(false));
    let audit = of(&r, "audit");
    assert_eq!(audit.status, Status::Fail, "the topic publishes elsewhere: {audit:?}");
    assert!(
        audit.fix.as_deref().unwrap().contains("AUTOPILOT__AUDIT__TOPIC_ENDPOINT=https://evgt-autopilot"),
        "{audit:?}"
    );
}

/// The binary: `doctor` exits non-zero while something is wrong and 0 once it is fixed,
/// prints no ANSI codes to a pipe, and `--json` is one JSON document; `dlq list --json`
/// prints a JSON array.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_exit_code_follows_the_checks() {
    use autopilot_sandbox::fake_arm::FakeArm;
    let arm = FakeArm::start(FakeArmOptions { lro_retry_after_secs: 1, ..FakeArmOptions::default() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run_cli = |args: &'static [&'static str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_autopilot"));
        cmd.args(args)
            .env_clear()
            .env("AUTOPILOT__ARM__BASE_URL", arm.base_url())
            .env("AUTOPILOT_ARM_STATIC_TOKEN", arm.token())
            .env("AUTOPILOT__SWEEP__SUBSCRIPTIONS", format!(r#"["{SPOKE_SUBSCRIPTION}"]"#))
            .env("AUTOPILOT__QUEUE__PATH", dir.path().join("queue.sqlite"))
            .env("AUTOPILOT__AUDIT__FILE", "")
            .env("AUTOPILOT_LOG", "error");
        async move { cmd.output().await.unwrap() }
    };
    let out = run_cli(&["doctor", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["ok"], false);
    assert!(v["checks"].as_array().unwrap().iter().any(|c| c["area"] == "coverage" && c["status"] == "fail"));

    let topic = arm.add_system_topic(SPOKE_SUBSCRIPTION, EVENTS_RG, "evgst-autopilot-cli");
    arm.add_event_subscription(
        &topic,
        "private-endpoints-to-autopilot",
        coverage::event_subscription_body(&coverage_settings())["properties"].clone(),
    );
    let out = run_cli(&["doctor"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("✔ subscription") && !text.contains('\x1b'), "{text}");

    let out = run_cli(&["dlq", "list", "--json"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v, json!([]));
}

/// Grants at owned resources (the connection approver) and at an owned cluster's
/// subscription (the Kusto operation reader) are checked too, at their own scopes.
#[tokio::test]
async fn owned_resource_grants_are_checked_where_infra_assigns_them() {
    let kusto =
        format!("/subscriptions/{NEW_SUBSCRIPTION}/resourceGroups/rg-data/providers/Microsoft.Kusto/Clusters/adxowned");
    let params = InfraParams { owned_resource_ids: vec![kusto.clone()], ..params(&[SPOKE_SUBSCRIPTION]) };
    for removed in [None, Some("Microsoft.Kusto/locations/operationresults/read")] {
        let grants = Grants::from_infra(&params);
        let grants = match removed {
            Some(a) => grants.without_action(a),
            None => grants,
        };
        let owned = kusto.clone();
        let sb = Sandbox::start(SandboxOptions {
            arm: FakeArmOptions { rbac: Some(grants), ..FakeArmOptions::default() },
            zones: vec![ZONE.into()],
            configure: Box::new(move |c| {
                configure(c, &[SPOKE_SUBSCRIPTION], None);
                c.approvals.owned_resources = vec![owned];
                c.approvals.allowed_subscriptions = vec![SPOKE_SUBSCRIPTION.into()];
            }),
            workers: 0,
            ..SandboxOptions::default()
        })
        .await
        .unwrap();
        link_hub(&sb);
        cover(&sb, SPOKE_SUBSCRIPTION, true);
        let r = run(&sb).await;
        let approver =
            r.checks.iter().find(|c| c.subject == format!("connectionApprover at {kusto}")).expect("approver");
        assert_eq!(approver.status, Status::Ok, "{}", r.render(false));
        let reader = r
            .checks
            .iter()
            .find(|c| c.subject == format!("kustoOperationReader at /subscriptions/{NEW_SUBSCRIPTION}"))
            .expect("kusto operation reader");
        match removed {
            None => {
                assert_eq!(reader.status, Status::Ok, "{}", r.render(false));
                assert!(r.ok, "{}", r.render(false));
            }
            Some(action) => {
                assert_eq!(reader.status, Status::Fail, "{}", r.render(false));
                assert!(reader.detail.contains(action), "{reader:?}");
                assert!(reader.fix.as_deref().unwrap().contains("Kusto operation reader"), "{reader:?}");
                assert!(!r.ok);
            }
        }
    }
}
