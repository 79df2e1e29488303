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
    let sb = sandbox(|_| {}).await;
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
