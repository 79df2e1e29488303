//! Approving connections to resources we own, end to end through the handler and the
//! fake ARM: Kusto (long-running PUT), our own Private Link Service (sync 200), the
//! policy (left Pending by default, Rejected when configured), idempotence.

use private_link_autopilot::effects::approvals::ApprovalAction;
use private_link_autopilot::model::ResourceId;
use private_link_autopilot::reconcile::Mode;
use private_link_autopilot::sandbox::fake_arm::{EndpointSpec, FakeArmOptions, MemberSpec};
use private_link_autopilot::sandbox::harness::{
    SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB, Sandbox, SandboxOptions,
};

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
    sb.deliver(vec![private_link_autopilot::sandbox::events::event_grid(
        private_link_autopilot::sandbox::events::ResourceEvent::WriteSuccess,
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
    let server = private_link_autopilot::sandbox::loopback::LoopbackServer::start(app).await.unwrap();
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
    assert!(matches!(out, private_link_autopilot::sandbox::host_emulator::InvokeOutcome::Succeeded(_)), "{out:?}");
    assert_eq!(status(&sb.arm.target_connection(&id).unwrap()), "Approved");
    assert!(sb.arm.record(&sb.zone_id("privatelink.eastus2.kusto.windows.net"), "adxowned").is_some());
}
