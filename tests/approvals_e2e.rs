//! Approving connections to resources we own, end to end through the handler and the
//! fake ARM: Kusto (long-running PUT), our own Private Link Service (sync 200), the
//! policy (fail closed without one; left Pending by default, Rejected when configured),
//! idempotence, api-versions chosen from the provider registration (the fake serves
//! connections only at the versions the specs list), Azure Monitor workspaces left for the
//! portal, and clean-up after a deletion isolated per target.

use autopilot_sandbox::fake_arm::{EndpointSpec, FakeArmOptions, Fault, MemberSpec};
use autopilot_sandbox::harness::{SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB, Sandbox, SandboxOptions};
use axum::http::Method as HttpMethod;
use private_link_autopilot::arm::ArmRequest;
use private_link_autopilot::arm::client::Method;
use private_link_autopilot::arm::providers::{self, VersionSource};
use private_link_autopilot::effects::approvals::{self, ApprovalAction, DESCRIPTION_LIMIT};
use private_link_autopilot::model::ResourceId;
use private_link_autopilot::reconcile::{Mode, Outcome};

fn kusto_id() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Kusto/Clusters/adxowned")
}

fn pls_id() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/privateLinkServices/our-pls")
}

async fn sandbox(configure: impl FnOnce(&mut private_link_autopilot::config::Config) + Send + 'static) -> Sandbox {
    let sb = Sandbox::start(SandboxOptions {
        arm: FakeArmOptions { lro_retry_after_secs: 1, ..FakeArmOptions::default() },
        zones: vec!["privatelink.eastus2.kusto.windows.net".into()],
        configure: Box::new(move |c| {
            c.approvals.owned_resources = vec![kusto_id(), pls_id()];
            // A policy: approvals fail closed without one.
            c.approvals.allowed_subscriptions = vec![SUB.into()];
            configure(c);
        }),
        workers: 0,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox");
    sb.arm.add_link_target(&kusto_id(), "eastus2");
    sb.arm.add_link_target(&pls_id(), "eastus2");
    sb
}

fn kusto_pe(name: &str) -> EndpointSpec {
    EndpointSpec::resource(
        SUB,
        RG,
        name,
        "eastus2",
        &kusto_id(),
        "cluster",
        vec![MemberSpec::new("Engine", &["adxowned.eastus2.kusto.windows.net"])],
    )
    .manual()
}

fn status(v: &serde_json::Value) -> &str {
    v.pointer("/properties/privateLinkServiceConnectionState/status").and_then(|s| s.as_str()).unwrap_or_default()
}

#[tokio::test]
async fn kusto_connection_is_approved_through_the_long_running_put() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let audit_path = audit.display().to_string();
    let sb = sandbox(move |c| c.audit.file = audit_path).await;
    let (id, delivery) = sb.create(&kusto_pe("adx-pe")).await;
    assert_eq!(delivery.status, 202);
    assert_eq!(status(&sb.arm.target_connection(&id).unwrap()), "Approved");
    let pe = sb.arm.resource(&id).unwrap();
    assert_eq!(
        pe.pointer(
            "/properties/manualPrivateLinkServiceConnections/0/properties/privateLinkServiceConnectionState/status"
        )
        .and_then(|s| s.as_str()),
        Some("Approved"),
        "the endpoint sees the approval"
    );
    assert!(sb.arm.requests().iter().any(|r| r.path.contains("/operationResults/")), "LRO polled");
    assert_eq!(sb.app.queue.depth().await.unwrap(), 0, "converged within the invocation");
    // DNS was written in the same reconcile.
    assert!(sb.arm.record(&sb.zone_id("privatelink.eastus2.kusto.windows.net"), "adxowned").is_some());
    // Idempotent: a second event approves nothing again.
    sb.deliver(vec![autopilot_sandbox::events::event_grid(
        autopilot_sandbox::events::ResourceEvent::WriteSuccess,
        &id,
    )])
    .await;
    assert_eq!(sb.arm.writes_to("/privateEndpointConnections/"), 1);
    // Audited as CloudEvents with the endpoint as subject.
    let lines = std::fs::read_to_string(&audit).unwrap();
    let events: Vec<serde_json::Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let approved =
        events.iter().find(|e| e["type"] == "com.privatelinkautopilot.approval.approved").expect("approval audited");
    assert_eq!(approved["specversion"], "1.0");
    assert_eq!(approved["subject"].as_str().unwrap().to_ascii_lowercase(), id.to_ascii_lowercase());
    assert!(events.iter().any(|e| e["type"] == "com.privatelinkautopilot.dns.record.written"));
}

#[tokio::test]
async fn audit_events_reach_an_event_grid_topic_with_a_bearer_token() {
    use axum::http::{HeaderMap, StatusCode};
    use private_link_autopilot::arm::Secret;
    use private_link_autopilot::arm::credential::StaticToken;
    use private_link_autopilot::effects::audit::{AuditEvent, AuditSink, EventGridSink};
    use std::sync::{Arc, Mutex};

    let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (seen2, calls2) = (seen.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/api/events",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (seen, calls) = (seen2.clone(), calls2.clone());
            async move {
                // First call throttled: the sink must retry.
                if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")]).into_response();
                }
                let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
                if !ct.starts_with("application/cloudevents-batch+json") || auth != "Bearer topic-token" {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                let batch: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
                seen.lock().unwrap().extend(batch);
                StatusCode::OK.into_response()
            }
        }),
    );
    use axum::response::IntoResponse;
    let server = autopilot_sandbox::loopback::LoopbackServer::start(app).await.unwrap();
    let endpoint = format!("{}/api/events", server.base_url());
    let sink = EventGridSink::new(&endpoint, Arc::new(StaticToken(Secret::new("topic-token"))), "/test").unwrap();
    let event = AuditEvent {
        kind: "dns.record.written".into(),
        subject: "/subscriptions/s/x".into(),
        data: serde_json::json!({}),
    };
    sink.publish(&[event]).await.expect("published after one retry");
    let published = seen.lock().unwrap().clone();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0]["type"], "com.privatelinkautopilot.dns.record.written");
    let wrong = EventGridSink::new(&endpoint, Arc::new(StaticToken(Secret::new("nope"))), "/test").unwrap();
    let err = wrong.publish(&[AuditEvent { kind: "x".into(), subject: "s".into(), data: serde_json::json!({}) }]).await;
    assert!(err.unwrap_err().contains("401"));
}

#[tokio::test]
async fn own_private_link_service_is_approved_synchronously() {
    let sb = sandbox(|_| {}).await;
    let spec =
        EndpointSpec::resource(SUB, RG, "pls-pe", "eastus2", &pls_id(), "", vec![MemberSpec::new("", &[])]).manual();
    let (id, _) = sb.create(&spec).await;
    assert_eq!(status(&sb.arm.target_connection(&id).unwrap()), "Approved");
    assert!(!sb.arm.requests().iter().any(|r| r.path.contains("/operationResults/")), "no LRO for PLS");
}

#[tokio::test]
async fn policy_violation_is_left_pending_and_reported() {
    let sb = sandbox(|c| c.approvals.allowed_subscriptions = vec!["33333333-3333-3333-3333-333333333333".into()]).await;
    let (id, _) = sb.create(&kusto_pe("adx-other")).await;
    assert_eq!(status(&sb.arm.target_connection(&id).unwrap()), "Pending");
    assert_eq!(sb.arm.writes_to("/privateEndpointConnections/"), 0);
    let report = sb.app.reconciler.reconcile(&ResourceId::parse(&id).unwrap(), Mode::DryRun).await;
    assert_eq!(report.approvals[0].action, ApprovalAction::LeftPending);
    assert!(report.approvals[0].reason.contains("allowed_subscriptions"), "{:?}", report.approvals);
}

#[tokio::test]
async fn policy_violation_is_rejected_when_configured() {
    let sb = sandbox(|c| {
        c.approvals.request_message_pattern = "CHG-*".into();
        c.approvals.on_violation = "reject".into();
    })
    .await;
    let (id, _) = sb.create(&kusto_pe("adx-nomsg")).await;
    assert_eq!(status(&sb.arm.target_connection(&id).unwrap()), "Rejected");
}

#[tokio::test]
async fn targets_we_do_not_own_are_not_touched() {
    let sb = sandbox(|c| c.approvals.owned_resources = vec![pls_id()]).await;
    let (id, _) = sb.create(&kusto_pe("adx-notours")).await;
    assert_eq!(status(&sb.arm.target_connection(&id).unwrap()), "Pending");
    assert!(!sb.arm.requests().iter().any(|r| r.path.contains("privateEndpointConnections")));
}

/// Deleting an endpoint clears what was approved on its behalf, whichever answer Azure
/// gives: the connection gone already (nothing to do) or left `Disconnected` (removed).
#[tokio::test]
async fn deletion_removes_a_leftover_connection_whichever_way_azure_answers() {
    for keep in [false, true] {
        let sb = sandbox(|_| {}).await;
        sb.arm.keep_connections_on_delete(keep);
        let (id, _) = sb.create(&kusto_pe(&format!("adx-del-{keep}"))).await;
        assert_eq!(status(&sb.arm.target_connection(&id).expect("connection")), "Approved");
        sb.delete(&id).await;
        assert!(sb.arm.target_connection(&id).is_none(), "keep={keep}: no connection left for a deleted endpoint");
        let deletes = sb
            .arm
            .requests()
            .iter()
            .filter(|r| r.method == "DELETE" && r.path.to_ascii_lowercase().contains("privateendpointconnections"))
            .count();
        assert_eq!(deletes, usize::from(keep), "keep={keep}: removed only when Azure left it");
        // A redelivered delete event finds nothing more to do.
        let rid = ResourceId::parse_private_endpoint(&id).unwrap();
        let report = sb.app.reconciler.reconcile(&rid, Mode::Apply).await;
        assert!(report.approvals.iter().all(|d| d.action != ApprovalAction::Removed), "{:?}", report.approvals);
    }
}

/// The tenant policy table: allowed tenant, another tenant, a subscription we cannot read
/// (unknown tenant), and `reject` for violations.
#[tokio::test]
async fn tenant_policy_allowed_denied_and_unknown() {
    const T1: &str = "aaaaaaaa-0000-0000-0000-000000000001";
    const T2: &str = "bbbbbbbb-0000-0000-0000-000000000002";
    let (s_t1, s_t2, s_hidden) = (
        "44444444-0000-0000-0000-000000000001",
        "44444444-0000-0000-0000-000000000002",
        "44444444-0000-0000-0000-000000000003",
    );
    let pe_in = |sub: &str, name: &str| {
        EndpointSpec::resource(
            sub,
            "apps",
            name,
            "eastus2",
            &kusto_id(),
            "cluster",
            vec![MemberSpec::new("Engine", &["adxowned.eastus2.kusto.windows.net"])],
        )
        .manual()
    };
    for on_violation in ["leave_pending", "reject"] {
        let sb = sandbox(move |c| {
            c.approvals.allowed_subscriptions.clear();
            c.approvals.allowed_tenants = vec![T1.into()];
            c.approvals.on_violation = on_violation.into();
        })
        .await;
        sb.arm.set_subscription_tenant(s_t1, T1);
        sb.arm.set_subscription_tenant(s_t2, T2);
        sb.arm.deny_subscription(s_hidden);
        let (ok1, _) = sb.create(&pe_in(s_t1, "adx-t1-a")).await;
        let (ok2, _) = sb.create(&pe_in(s_t1, "adx-t1-b")).await;
        let (other, _) = sb.create(&pe_in(s_t2, "adx-t2")).await;
        let (hidden, _) = sb.create(&pe_in(s_hidden, "adx-hidden")).await;
        assert_eq!(status(&sb.arm.target_connection(&ok1).unwrap()), "Approved");
        assert_eq!(status(&sb.arm.target_connection(&ok2).unwrap()), "Approved");
        let denied = if on_violation == "reject" { "Rejected" } else { "Pending" };
        assert_eq!(status(&sb.arm.target_connection(&other).unwrap()), denied, "{on_violation}");
        assert_eq!(status(&sb.arm.target_connection(&hidden).unwrap()), denied, "{on_violation}");
        let lookups = |sub: &str| {
            sb.arm.requests().iter().filter(|r| r.path.eq_ignore_ascii_case(&format!("/subscriptions/{sub}"))).count()
        };
        assert_eq!(lookups(s_t1), 1, "the tenant is read once per subscription");
        if on_violation == "leave_pending" {
            let reconciler = &sb.app.reconciler;
            let reason = async |id: &str| {
                let rid = ResourceId::parse(id).unwrap();
                reconciler.reconcile(&rid, Mode::DryRun).await.approvals[0].reason.clone()
            };
            let r = reason(&other).await;
            assert!(r.contains(T2) && r.contains("allowed_tenants"), "{r}");
            let r = reason(&hidden).await;
            assert!(r.contains("unknown tenant") && r.contains("403"), "{r}");
        }
    }
}

/// A missed event: the endpoint was created while the handler was down. The sweep finds
/// it and approves its Pending connection on the owned cluster, like the event would have.
#[tokio::test]
async fn the_sweep_approves_a_connection_whose_event_was_missed() {
    let sb = sandbox(|c| c.sweep.subscriptions = vec![SUB.into()]).await;
    let id = sb.arm.put_endpoint(&kusto_pe("adx-missed"));
    assert_eq!(status(&sb.arm.target_connection(&id).unwrap()), "Pending");
    let out = sb.host.invoke_timer("Sweep", false).await.unwrap();
    assert!(matches!(out, autopilot_sandbox::host_emulator::InvokeOutcome::Succeeded(_)), "{out:?}");
    assert_eq!(status(&sb.arm.target_connection(&id).unwrap()), "Approved");
    assert!(sb.arm.record(&sb.zone_id("privatelink.eastus2.kusto.windows.net"), "adxowned").is_some());
}

fn resource_id(namespace_type: &str, name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/{namespace_type}/{name}")
}

fn vault_id() -> String {
    resource_id("Microsoft.KeyVault/vaults", "kv-owned")
}

fn storage_id() -> String {
    resource_id("Microsoft.Storage/storageAccounts", "stowned")
}

fn monitor_id() -> String {
    resource_id("Microsoft.Monitor/accounts", "amw-owned")
}

fn pe_to(target: &str, name: &str, group: &str) -> EndpointSpec {
    EndpointSpec::resource(SUB, RG, name, "eastus2", target, group, vec![MemberSpec::new(group, &[])]).manual()
}

fn description(v: &serde_json::Value) -> &str {
    v.pointer("/properties/privateLinkServiceConnectionState/description").and_then(|s| s.as_str()).unwrap_or_default()
}

/// F12: with owned resources and no requester restriction nothing is approved, whatever
/// `on_violation` says; the reason names the missing policy and `allow_any`.
#[tokio::test]
async fn no_policy_leaves_every_connection_pending_and_says_so() {
    for on_violation in ["leave_pending", "reject"] {
        let sb = sandbox(move |c| {
            c.approvals.allowed_subscriptions.clear();
            c.approvals.on_violation = on_violation.into();
        })
        .await;
        let (id, _) = sb.create(&kusto_pe("adx-nopolicy")).await;
        assert_eq!(status(&sb.arm.target_connection(&id).unwrap()), "Pending", "{on_violation}");
        assert_eq!(sb.arm.writes_to("/privateEndpointConnections/"), 0, "{on_violation}");
        let report = sb.app.reconciler.reconcile(&ResourceId::parse(&id).unwrap(), Mode::DryRun).await;
        let d = &report.approvals[0];
        assert_eq!(d.action, ApprovalAction::LeftPending);
        assert!(d.reason.contains("no approval policy is configured") && d.reason.contains("allow_any"), "{d:?}");
    }
}

/// The request message is the requester's own text: matching it is never enough.
#[tokio::test]
async fn request_message_pattern_alone_approves_nothing() {
    let sb = sandbox(|c| {
        c.approvals.allowed_subscriptions.clear();
        c.approvals.request_message_pattern = "Requested by*".into();
    })
    .await;
    let (id, _) = sb.create(&kusto_pe("adx-msgonly")).await;
    assert_eq!(status(&sb.arm.target_connection(&id).unwrap()), "Pending");
    let report = sb.app.reconciler.reconcile(&ResourceId::parse(&id).unwrap(), Mode::DryRun).await;
    assert!(report.approvals[0].reason.contains("no approval policy"), "{:?}", report.approvals);
    assert!(sb.app.config.approvals.validate().unwrap().iter().any(|w| w.contains("not one")));
}

/// `allow_any = true` is the explicit opt-in to approve any requester, and says so.
#[tokio::test]
async fn allow_any_approves_any_requester_and_says_so() {
    let sb = sandbox(|c| {
        c.approvals.allowed_subscriptions.clear();
        c.approvals.allow_any = true;
    })
    .await;
    let (id, _) = sb.create(&kusto_pe("adx-any")).await;
    let conn = sb.arm.target_connection(&id).unwrap();
    assert_eq!(status(&conn), "Approved");
    assert_eq!(description(&conn), "Approved by Private Link Autopilot: policy allow_any (any requester)");
}

/// The description names the product and the rule that approved, within Azure's limit;
/// the Kusto PUT carries status and description only (the fake refuses `actionsRequired`).
#[tokio::test]
async fn approval_description_names_the_product_and_the_rule() {
    let sb = sandbox(|c| c.approvals.request_message_pattern = "Requested by*".into()).await;
    let (id, _) = sb.create(&kusto_pe("adx-desc")).await;
    let conn = sb.arm.target_connection(&id).unwrap();
    assert_eq!(status(&conn), "Approved");
    assert_eq!(
        description(&conn),
        format!("Approved by Private Link Autopilot: policy allowed_subscriptions matched {SUB}")
    );

    let long_vnet = format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks/");
    let sb = sandbox(move |c| {
        c.approvals.allowed_vnets = vec![long_vnet.clone()];
        c.approvals.description = format!("Approved by Private Link Autopilot for the {} team", "platform ".repeat(20));
    })
    .await;
    let (id, _) = sb.create(&kusto_pe("adx-long")).await;
    let conn = sb.arm.target_connection(&id).unwrap();
    assert_eq!(status(&conn), "Approved");
    let d = description(&conn);
    assert!(d.starts_with("Approved by Private Link Autopilot") && d.ends_with("..."), "{d}");
    assert_eq!(d.chars().count(), DESCRIPTION_LIMIT);
}

/// The strict fake answers what ARM answers: the sub-resource only where the spec has it,
/// only at the spec's versions; the Kusto body may not carry read-only properties.
#[tokio::test]
async fn the_fake_serves_connections_only_at_spec_versions() {
    let sb = sandbox(|c| c.approvals.owned_resources.push(vault_id())).await;
    sb.arm.add_link_target(&vault_id(), "eastus2");
    sb.arm.add_link_target(&monitor_id(), "eastus2");
    let arm = &sb.app.arm;
    let list =
        |target: String, api: &str| arm.send(ArmRequest::get(format!("{target}/privateEndpointConnections"), api));
    let e = list(vault_id(), "2024-04-01").await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(400), Some("NoRegisteredProviderFound")), "{e}");
    assert!(e.to_string().contains("The supported api-versions are '2026-03-01-preview, 2026-02-01"), "{e}");
    list(vault_id(), "2026-02-01").await.expect("a spec version is served");
    let e = list(monitor_id(), "2023-04-03").await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(404), Some("InvalidResourceType")), "{e}");

    let (id, _) = sb.create(&kusto_pe("adx-body")).await;
    let name = sb.arm.target_connection(&id).unwrap()["name"].as_str().unwrap().to_owned();
    let put = ArmRequest::new(Method::Put, format!("{}/privateEndpointConnections/{name}", kusto_id()), "2025-02-14")
        .body(serde_json::json!({"properties": {"privateLinkServiceConnectionState": {
            "status": "Approved", "description": "x", "actionsRequired": "None"}}}));
    let e = arm.send(put).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("read-only"), "{e}");
}

/// Generic targets: the version comes from the provider registration (newest stable,
/// previews skipped), read once per namespace, and the approval goes through.
#[tokio::test]
async fn generic_targets_use_the_newest_stable_version_the_provider_registers() {
    let sb = sandbox(|c| c.approvals.owned_resources = vec![vault_id()]).await;
    sb.arm.add_link_target(&vault_id(), "eastus2");
    let choice = providers::child_api_version(&sb.app.arm, &vault_id(), "privateEndpointConnections").await.unwrap();
    assert_eq!((choice.version.as_str(), choice.source), ("2026-02-01", VersionSource::Provider));
    let (a, _) = sb.create(&pe_to(&vault_id(), "kv-pe-a", "vault")).await;
    let (b, _) = sb.create(&pe_to(&vault_id(), "kv-pe-b", "vault")).await;
    assert_eq!(status(&sb.arm.target_connection(&a).unwrap()), "Approved");
    assert_eq!(status(&sb.arm.target_connection(&b).unwrap()), "Approved");
    let provider_reads = sb
        .arm
        .requests()
        .iter()
        .filter(|r| r.path.eq_ignore_ascii_case(&format!("/subscriptions/{SUB}/providers/Microsoft.KeyVault")))
        .count();
    assert_eq!(provider_reads, 1, "cached per namespace");
    assert!(sb.arm.requests().iter().all(|r| r.status != 400), "no request was refused");
}

/// A provider registration we may not read (403): the spec-derived table decides.
#[tokio::test]
async fn provider_read_failure_falls_back_to_the_spec_table() {
    let sb = sandbox(|c| c.approvals.owned_resources = vec![storage_id()]).await;
    sb.arm.add_link_target(&storage_id(), "eastus2");
    let provider = format!("/subscriptions/{SUB}/providers/Microsoft.Storage");
    sb.arm.inject(Fault::status(Some(HttpMethod::GET), &provider, 403, 1));
    let (id, _) = sb.create(&pe_to(&storage_id(), "st-pe", "blob")).await;
    assert_eq!(status(&sb.arm.target_connection(&id).unwrap()), "Approved");
    assert_eq!(sb.arm.requests().iter().filter(|r| r.path.eq_ignore_ascii_case(&provider)).count(), 1);
    let choice = providers::child_api_version(&sb.app.arm, &storage_id(), "privateEndpointConnections").await.unwrap();
    assert_eq!((choice.version.as_str(), choice.source), ("2026-04-01", VersionSource::Fallback));
}

/// One owned target that cannot be read (an unknown type: no registration, no spec entry;
/// another answering 403) never fails the clean-up of an unrelated endpoint's deletion.
#[tokio::test]
async fn one_failing_target_never_fails_an_unrelated_delete() {
    let widget = resource_id("Contoso.Widgets/widgets", "w1");
    let widget2 = widget.clone();
    let sb = sandbox(move |c| c.approvals.owned_resources.extend([widget2, storage_id()])).await;
    sb.arm.add_link_target(&widget, "eastus2");
    sb.arm.add_link_target(&storage_id(), "eastus2");
    sb.arm.keep_connections_on_delete(true);
    let (id, _) = sb.create(&kusto_pe("adx-isolated")).await;
    assert_eq!(status(&sb.arm.target_connection(&id).unwrap()), "Approved");
    let storage_list = format!("{}/privateEndpointConnections", storage_id());
    sb.arm.inject(Fault::status(Some(HttpMethod::GET), &storage_list, 403, 2));
    sb.delete(&id).await;
    assert!(sb.arm.target_connection(&id).is_none(), "the Kusto leftover was removed despite the broken targets");
    let rid = ResourceId::parse_private_endpoint(&id).unwrap();
    let report = sb.app.reconciler.reconcile(&rid, Mode::Apply).await;
    assert!(matches!(report.outcome, Outcome::Done), "{:?}", report.outcome);
    let failed: Vec<_> = report.approvals.iter().filter(|d| d.action == ApprovalAction::Failed).collect();
    assert!(failed.iter().any(|d| d.target == widget && d.reason.contains("api-version")), "{failed:?}");
    assert!(failed.iter().any(|d| d.target == storage_id() && d.reason.contains("403")), "{failed:?}");
}

/// Azure Monitor workspaces have no connection API in any spec version: nothing is
/// called, the decision says to approve in the portal and is audited as left Pending.
#[tokio::test]
async fn monitor_workspace_connections_are_left_for_the_azure_portal() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let audit_path = audit.display().to_string();
    let sb = sandbox(move |c| {
        c.approvals.owned_resources = vec![monitor_id()];
        c.audit.file = audit_path;
    })
    .await;
    sb.arm.add_link_target(&monitor_id(), "eastus2");
    let (id, delivery) = sb.create(&pe_to(&monitor_id(), "amw-pe", "prometheusMetrics")).await;
    assert_eq!(delivery.status, 202);
    assert_eq!(status(&sb.arm.target_connection(&id).unwrap()), "Pending");
    let report = sb.app.reconciler.reconcile(&ResourceId::parse(&id).unwrap(), Mode::DryRun).await;
    let d = &report.approvals[0];
    assert_eq!(d.action, ApprovalAction::LeftPending);
    assert!(d.reason.contains("approve it in the Azure portal") && d.reason.contains(SUB), "{d:?}");
    let lines = std::fs::read_to_string(&audit).unwrap();
    assert!(lines.contains("com.privatelinkautopilot.approval.left_pending") && lines.contains("Azure portal"));
    sb.delete(&id).await;
    let rid = ResourceId::parse_private_endpoint(&id).unwrap();
    let report = sb.app.reconciler.reconcile(&rid, Mode::Apply).await;
    assert!(matches!(report.outcome, Outcome::Done), "{:?}", report.outcome);
    assert!(
        !sb.arm.requests().iter().any(|r| r.path.to_ascii_lowercase().contains("privateendpointconnections")),
        "no connection call for a Monitor workspace"
    );
}

/// F2's last line of defence: `clear_for_deleted` on an endpoint that still exists (a
/// `Failed` update, say) removes nothing.
#[tokio::test]
async fn a_live_endpoints_connection_is_never_removed() {
    let sb = sandbox(|_| {}).await;
    let (id, _) = sb.create(&kusto_pe("adx-live")).await;
    assert_eq!(status(&sb.arm.target_connection(&id).unwrap()), "Approved");
    let rid = ResourceId::parse_private_endpoint(&id).unwrap();
    let decisions =
        approvals::clear_for_deleted(&sb.app.arm, &sb.app.config.approvals, &rid, Mode::Apply).await.unwrap();
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(decisions[0].action, ApprovalAction::Unchanged);
    assert!(decisions[0].reason.contains("still exists"), "{decisions:?}");
    assert_eq!(status(&sb.arm.target_connection(&id).unwrap()), "Approved");
    assert!(!sb.arm.requests().iter().any(|r| r.method == "DELETE"));
}
