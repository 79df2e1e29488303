//! Approvals from the target side (`CatchUp` timer, `effects::target_approvals`): Pending
//! connections on owned resources found with Resource Graph, whoever asked for them.
//! A managed private endpoint in a Microsoft subscription our identity may not read
//! (the fake answers 403 for its tenant) is approved by a subscription rule, a partner by
//! its tenant; the description names the product, the rule and the time; everything is
//! audited; a requester nobody configured stays Pending with a reason (once); a
//! description pattern never approves by itself; a warning goes out before a requester's
//! known expiry; a second run writes nothing.

use autopilot_sandbox::fake_arm::FakeArmOptions;
use autopilot_sandbox::harness::{SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB, Sandbox, SandboxOptions};
use autopilot_sandbox::host_emulator::InvokeOutcome;
use private_link_autopilot::effects::target_approvals::RequesterRule;
use serde_json::Value;

/// A Microsoft-managed subscription (Databricks serverless, say): not ours to read.
const MANAGED_SUB: &str = "9f0e0d0c-0000-4000-8000-00000000d8b5";
/// A partner's subscription, readable (its tenant is known).
const PARTNER_SUB: &str = "33333333-3333-3333-3333-333333333333";
const PARTNER_TENANT: &str = "44444444-4444-4444-4444-444444444444";
/// Someone nobody configured.
const STRANGER_SUB: &str = "55555555-5555-5555-5555-555555555555";

fn storage_id() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Storage/storageAccounts/lakeowned")
}

fn pe_in(sub: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/managed-rg/providers/Microsoft.Network/privateEndpoints/{name}")
}

fn databricks_rule() -> RequesterRule {
    RequesterRule {
        name: "databricks-ncc".into(),
        subscriptions: vec![MANAGED_SUB.into()],
        tenants: vec![],
        endpoint_name_pattern: String::new(),
        description_pattern: String::new(),
        approve: true,
        expires_after_secs: 14 * 24 * 3600,
        warn_before_secs: 3 * 24 * 3600,
    }
}

struct Env {
    sb: Sandbox,
    audit: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn env(configure: impl FnOnce(&mut private_link_autopilot::config::Config) + Send + 'static) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let audit_path = audit.display().to_string();
    let sb = Sandbox::start(SandboxOptions {
        arm: FakeArmOptions::default(),
        configure: Box::new(move |c| {
            c.audit.file = audit_path;
            c.approvals.target_scopes = vec![format!("/subscriptions/{SUB}/resourceGroups/{RG}")];
            c.approvals.target_types = vec!["Microsoft.Storage/storageAccounts".into()];
            configure(c);
        }),
        workers: 0,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox");
    sb.arm.add_link_target(&storage_id(), "eastus2");
    sb.arm.deny_subscription(MANAGED_SUB);
    sb.arm.deny_subscription(STRANGER_SUB);
    sb.arm.set_subscription_tenant(PARTNER_SUB, PARTNER_TENANT);
    Env { sb, audit, _dir: dir }
}

async fn run(sb: &Sandbox) -> Value {
    match sb.host.invoke_timer("CatchUp", false).await.expect("invoke") {
        InvokeOutcome::Succeeded(r) => r.return_value,
        InvokeOutcome::Failed(why) => panic!("CatchUp failed: {why}"),
    }
}

fn connection(sb: &Sandbox, name: &str) -> Value {
    sb.arm.resource(&format!("{}/privateEndpointConnections/{name}", storage_id())).expect("connection")
}

fn state(v: &Value) -> (String, String) {
    let s = &v["properties"]["privateLinkServiceConnectionState"];
    (s["status"].as_str().unwrap_or_default().to_owned(), s["description"].as_str().unwrap_or_default().to_owned())
}

fn audit_events(path: &std::path::Path, kind: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == format!("com.privatelinkautopilot.{kind}"))
        .collect()
}

#[tokio::test]
async fn a_managed_endpoint_in_a_tenant_we_cannot_read_is_approved_by_its_subscription_rule() {
    let e = env(|c| c.approvals.requesters = vec![databricks_rule()]).await;
    let pe = pe_in(MANAGED_SUB, "databricks-ncc-pe-1");
    let name = e.sb.arm.add_foreign_connection(&storage_id(), &pe, "Databricks serverless", None);

    let out = run(&e.sb).await;
    assert_eq!(out["target_approvals"]["approved"], 1, "{out}");
    let (status, description) = state(&connection(&e.sb, &name));
    assert_eq!(status, "Approved");
    assert!(
        description.starts_with(&format!(
            "Approved by Private Link Autopilot: rule databricks-ncc (subscription {MANAGED_SUB}) at 20"
        )),
        "traceable: product, rule, time: {description}"
    );
    assert!(description.chars().count() <= 140);
    // Its tenant could not be read (403): the subscription rule did not need it.
    assert!(
        !e.sb.arm.requests().iter().any(|r| r.path.eq_ignore_ascii_case(&format!("/subscriptions/{MANAGED_SUB}"))),
        "no tenant lookup when no rule or policy names tenants"
    );
    let approved = audit_events(&e.audit, "approval.approved");
    assert_eq!(approved.len(), 1);
    assert_eq!(approved[0]["subject"], pe.as_str());
    assert_eq!(approved[0]["data"]["connection"], name.as_str());
    assert_eq!(audit_events(&e.audit, "sweep.catch_up_completed").len(), 1);

    // A second run finds nothing Pending and writes nothing.
    e.sb.arm.clear_log();
    let out = run(&e.sb).await;
    assert_eq!(out["target_approvals"]["listed"], 0, "{out}");
    assert_eq!(e.sb.arm.writes_to("/privateEndpointConnections/"), 0);
    assert_eq!(audit_events(&e.audit, "approval.approved").len(), 1);
}

#[tokio::test]
async fn a_partner_is_approved_by_its_tenant_when_its_subscription_is_readable() {
    let e = env(|c| {
        c.approvals.requesters = vec![
            databricks_rule(),
            RequesterRule {
                name: "partner".into(),
                subscriptions: vec![],
                tenants: vec![PARTNER_TENANT.into()],
                ..databricks_rule()
            },
        ]
    })
    .await;
    let name = e.sb.arm.add_foreign_connection(&storage_id(), &pe_in(PARTNER_SUB, "partner-pe"), "", None);
    let unknown = e.sb.arm.add_foreign_connection(&storage_id(), &pe_in(STRANGER_SUB, "who"), "", None);
    e.sb.arm.add_foreign_connection(&storage_id(), &pe_in(STRANGER_SUB, "who2"), "", None);
    let out = run(&e.sb).await;
    // One tenant lookup per subscription and run, a refusal included.
    let lookups =
        e.sb.arm
            .requests()
            .iter()
            .filter(|r| r.path.eq_ignore_ascii_case(&format!("/subscriptions/{STRANGER_SUB}")))
            .map(|r| r.status)
            .collect::<Vec<_>>();
    assert_eq!(lookups, [403]);
    assert_eq!(out["target_approvals"]["approved"], 1, "{out}");
    let (status, description) = state(&connection(&e.sb, &name));
    assert_eq!(status, "Approved");
    assert!(description.contains(&format!("rule partner (tenant {PARTNER_TENANT})")), "{description}");
    // The stranger's tenant is unreadable (403): no tenant rule can match it.
    assert_eq!(state(&connection(&e.sb, &unknown)).0, "Pending");
    let left = audit_events(&e.audit, "approval.left_pending");
    assert_eq!(left.len(), 2);
    let reason = left[0]["data"]["reason"].as_str().unwrap();
    assert!(reason.contains(STRANGER_SUB) && reason.contains("tenant unknown"), "{reason}");
}

#[tokio::test]
async fn a_requester_nobody_configured_stays_pending_with_a_reason_said_once() {
    let e = env(|c| c.approvals.requesters = vec![databricks_rule()]).await;
    let pe = pe_in(STRANGER_SUB, "stranger");
    let name = e.sb.arm.add_foreign_connection(&storage_id(), &pe, "please approve", None);
    let out = run(&e.sb).await;
    assert_eq!(out["target_approvals"]["left_pending"], 1, "{out}");
    assert_eq!(state(&connection(&e.sb, &name)).0, "Pending");
    let left = audit_events(&e.audit, "approval.left_pending");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["subject"], pe.as_str());
    assert!(left[0]["data"]["reason"].as_str().unwrap().contains("no [[approvals.requesters]] rule recognises"));

    // The same verdict next time: nothing written, nothing audited again.
    e.sb.arm.clear_log();
    let out = run(&e.sb).await;
    assert_eq!(out["target_approvals"]["left_pending"], 1);
    assert_eq!(e.sb.arm.writes_to("/privateEndpointConnections/"), 0);
    assert_eq!(audit_events(&e.audit, "approval.left_pending").len(), 1, "said once");
}

#[tokio::test]
async fn a_description_pattern_alone_approves_nothing() {
    // The global policy has only a message pattern and allow_any: allow_any does not reach
    // connections found on the target side, and the pattern is only a hint.
    let e = env(|c| {
        c.approvals.allow_any = true;
        c.approvals.request_message_pattern = "*databricks*".into();
        c.approvals.requesters =
            vec![RequesterRule { description_pattern: "*workspace 1234*".into(), ..databricks_rule() }];
    })
    .await;
    let stranger = e.sb.arm.add_foreign_connection(&storage_id(), &pe_in(STRANGER_SUB, "x"), "databricks pls", None);
    // The rule recognises the subscription, but the description does not match its hint.
    let managed =
        e.sb.arm.add_foreign_connection(&storage_id(), &pe_in(MANAGED_SUB, "y"), "databricks workspace 999", None);
    let out = run(&e.sb).await;
    assert_eq!(out["target_approvals"]["approved"], 0, "{out}");
    assert_eq!(out["target_approvals"]["left_pending"], 2, "{out}");
    assert_eq!(state(&connection(&e.sb, &stranger)).0, "Pending");
    assert_eq!(state(&connection(&e.sb, &managed)).0, "Pending");
    let reasons: Vec<String> = audit_events(&e.audit, "approval.left_pending")
        .iter()
        .map(|e| e["data"]["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("allow_any does not reach connections found on the target side")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("does not match its description_pattern")), "{reasons:?}");
    assert_eq!(e.sb.arm.writes_to("/privateEndpointConnections/"), 0);
    // A rule with only patterns is refused at configuration time.
    let hint_only = RequesterRule { subscriptions: vec![], ..databricks_rule() };
    assert!(hint_only.validate().is_err());
}

#[tokio::test]
async fn a_warning_goes_out_before_the_requesters_expiry_and_only_once() {
    let e = env(|c| {
        // Recognised but left to a person: the case the warning is for.
        c.approvals.requesters = vec![RequesterRule { approve: false, ..databricks_rule() }];
    })
    .await;
    let fmt = |days: i64| {
        (time::OffsetDateTime::now_utc() - time::Duration::days(days))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let old_pe = pe_in(MANAGED_SUB, "ncc-old");
    let old = e.sb.arm.add_foreign_connection(&storage_id(), &old_pe, "", Some(&fmt(12)));
    let fresh = e.sb.arm.add_foreign_connection(&storage_id(), &pe_in(MANAGED_SUB, "ncc-new"), "", Some(&fmt(1)));

    let out = run(&e.sb).await;
    let warnings = out["target_approvals"]["expiry_warnings"].as_array().unwrap().clone();
    assert_eq!(warnings.len(), 1, "{out}");
    assert_eq!(warnings[0]["connection"], old.as_str());
    assert_eq!(warnings[0]["rule"], "databricks-ncc");
    assert_eq!(warnings[0]["clock"], "systemData.createdAt");
    let audited = audit_events(&e.audit, "approval.expiry_warning");
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0]["subject"], old_pe.as_str());
    assert_eq!(state(&connection(&e.sb, &old)).0, "Pending");
    assert_eq!(state(&connection(&e.sb, &fresh)).0, "Pending");
    // `Status` shows the last run's warnings.
    let status = private_link_autopilot::intake::server::health(&e.sb.app).await;
    assert_eq!(status["catch_up"]["target_approvals"]["expiry_warnings"].as_array().map(Vec::len), Some(1));

    // Once per connection.
    let out = run(&e.sb).await;
    assert_eq!(out["target_approvals"]["expiry_warnings"].as_array().map(Vec::len), Some(0), "{out}");
    assert_eq!(audit_events(&e.audit, "approval.expiry_warning").len(), 1);
}

#[tokio::test]
async fn without_systemdata_the_clock_starts_when_the_scan_first_saw_it() {
    // warn_before >= expires_after: the first sighting is already inside the window.
    let e = env(|c| {
        c.approvals.requesters = vec![RequesterRule {
            approve: false,
            expires_after_secs: 3600,
            warn_before_secs: 3600,
            ..databricks_rule()
        }]
    })
    .await;
    e.sb.arm.add_foreign_connection(&storage_id(), &pe_in(MANAGED_SUB, "ncc"), "", None);
    let out = run(&e.sb).await;
    let warnings = out["target_approvals"]["expiry_warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{out}");
    assert_eq!(warnings[0]["clock"], "first seen");
}

#[tokio::test]
async fn an_allowed_subscription_in_the_global_policy_also_approves_from_the_target_side() {
    let e = env(|c| {
        c.approvals.allowed_subscriptions = vec![PARTNER_SUB.into()];
        // The endpoint side would reject; the target side never does.
        c.approvals.on_violation = "reject".into();
    })
    .await;
    let name = e.sb.arm.add_foreign_connection(&storage_id(), &pe_in(PARTNER_SUB, "p"), "", None);
    let other = e.sb.arm.add_foreign_connection(&storage_id(), &pe_in(STRANGER_SUB, "s"), "", None);
    run(&e.sb).await;
    let (status, description) = state(&connection(&e.sb, &name));
    assert_eq!(status, "Approved");
    assert!(description.contains(&format!("policy allowed_subscriptions matched {PARTNER_SUB}")), "{description}");
    assert_eq!(state(&connection(&e.sb, &other)).0, "Pending");
}

#[tokio::test]
async fn resources_outside_the_scopes_or_types_are_not_touched() {
    let e = env(|c| c.approvals.requesters = vec![databricks_rule()]).await;
    let elsewhere =
        format!("/subscriptions/{SUB}/resourceGroups/other-rg/providers/Microsoft.Storage/storageAccounts/notours");
    e.sb.arm.add_link_target(&elsewhere, "eastus2");
    e.sb.arm.add_foreign_connection(&elsewhere, &pe_in(MANAGED_SUB, "a"), "", None);
    let out = run(&e.sb).await;
    assert_eq!(out["target_approvals"]["listed"], 0, "{out}");
    assert_eq!(e.sb.arm.writes_to("/privateEndpointConnections/"), 0);
}

#[tokio::test]
async fn the_plan_shows_what_the_next_scan_would_decide_and_writes_nothing() {
    use private_link_autopilot::effects::approvals::ApprovalAction;
    let e = env(|c| c.approvals.requesters = vec![databricks_rule()]).await;
    let managed = e.sb.arm.add_foreign_connection(&storage_id(), &pe_in(MANAGED_SUB, "m"), "", None);
    e.sb.arm.add_foreign_connection(&storage_id(), &pe_in(STRANGER_SUB, "s"), "", None);
    let plan = private_link_autopilot::ops::plan_targets(&e.sb.app).await.unwrap();
    assert_eq!(plan.listed, 2);
    assert_eq!(plan.count(ApprovalAction::WouldApprove), 1);
    assert_eq!(plan.count(ApprovalAction::LeftPending), 1);
    assert!(plan.events.is_empty(), "a plan audits nothing");
    assert_eq!(e.sb.arm.writes_to("/privateEndpointConnections/"), 0);
    assert_eq!(state(&connection(&e.sb, &managed)).0, "Pending");
    // Nothing remembered either: the real run still audits the stranger once.
    run(&e.sb).await;
    assert_eq!(audit_events(&e.audit, "approval.left_pending").len(), 1);
}
