//! `autopilot status` and `autopilot plan --subscription`: read-only views built on the
//! reconciler's dry run, checked against the sandbox (fake ARM + fake vendors).

use std::net::Ipv4Addr;
use std::time::Duration;

use autopilot_sandbox::fake_arm::EndpointSpec;
use autopilot_sandbox::fake_vendors::count_writes;
use autopilot_sandbox::harness::{SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB, Sandbox, SandboxOptions};
use autopilot_sandbox::vendors::SandboxVendors;
use private_link_autopilot::config::Config;
use private_link_autopilot::model::ResourceId;
use private_link_autopilot::ops;
use private_link_autopilot::runtime::sweep::plan_subscriptions;

const CH_ZONE: &str = "eastus2.privatelink.azure.clickhouse.cloud";
const CH_ALIAS: &str = "production-eastus2-0-0.00000000-0000-4000-8000-00000000c0de.eastus2.azure.privatelinkservice";

async fn world() -> (Sandbox, SandboxVendors) {
    let vendors = SandboxVendors::start().await.unwrap();
    let mut base = Config::default();
    vendors.configure(&mut base);
    let section = base.vendors.clone();
    let sb = Sandbox::start(SandboxOptions {
        zones: vec![CH_ZONE.into()],
        configure: Box::new(move |c| {
            c.vendors = section;
            c.reconcile.retry_base_secs = 1;
            c.marks.recheck_window_secs = 0;
            c.sweep.subscriptions = vec![SUB.into()];
        }),
        env: vendors.env(),
        workers: 1,
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    (sb, vendors)
}

#[tokio::test]
async fn status_shows_dns_vendor_and_approval_side_by_side() {
    let (sb, vendors) = world().await;
    let (id, _) = sb.create(&EndpointSpec::alias(SUB, RG, "ch-status", "eastus2", CH_ALIAS).approved()).await;
    assert!(sb.drain(Duration::from_secs(20)).await);
    let rid = ResourceId::parse_private_endpoint(&id).unwrap();

    let st = ops::endpoint_status(&sb.app, &rid).await;
    assert_eq!(st.exists, Some(true));
    assert_eq!(st.connection_state.as_deref(), Some("Approved"));
    assert_eq!(st.dns.len(), 1);
    assert_eq!(st.dns[0].state, "in place");
    assert_eq!(st.vendors.len(), 1);
    assert_eq!(st.vendors[0].registered, Some(true));
    assert!(st.vendors[0].ledger_recorded_at.is_some());
    assert_eq!(st.marks.get("plautopilot-state").map(String::as_str), Some("Approved"));
    assert!(st.converged, "{}", st.render());
    let text = st.render();
    assert!(text.contains("in place") && text.contains("registered") && text.contains("clickhouse"), "{text}");

    // Someone removes the endpoint from the ClickHouse service by hand: status says so.
    let mut state = vendors.clickhouse.state();
    for ids in state.services.values_mut() {
        ids.clear();
    }
    vendors.clickhouse.set_state(state);
    let st = ops::endpoint_status(&sb.app, &rid).await;
    assert_eq!(st.vendors[0].registered, Some(false));
    assert!(!st.converged);
    assert!(st.render().contains("NOT registered"));
}

#[tokio::test]
async fn plan_over_subscriptions_reports_what_the_sweep_would_do_and_writes_nothing() {
    let (sb, vendors) = world().await;
    let (a, _) = sb.create(&EndpointSpec::alias(SUB, RG, "ch-a", "eastus2", CH_ALIAS).approved()).await;
    let (b, _) = sb.create(&EndpointSpec::alias(SUB, RG, "ch-b", "eastus2", CH_ALIAS).approved()).await;
    assert!(sb.drain(Duration::from_secs(20)).await);
    // A missed event (an endpoint nobody told us about) and a deletion without an event.
    sb.arm.put_endpoint(&EndpointSpec::alias(SUB, RG, "ch-missed", "eastus2", CH_ALIAS).approved());
    sb.arm.delete_endpoint(&b);
    sb.arm.clear_log();
    vendors.clickhouse.clear_requests();

    let calls = std::sync::Mutex::new(Vec::new());
    let plan = plan_subscriptions(&sb.app, &[SUB.to_owned()], &|done, total| {
        calls.lock().unwrap().push((done, total));
    })
    .await
    .unwrap();
    assert_eq!(plan.listed, 2, "ch-a and ch-missed");
    assert_eq!(plan.dns_owners_not_listed, 1, "ch-b still owns a share of the wildcard");
    assert_eq!(plan.vendor_registrations_not_listed, 0, "ch-b is counted once, as a DNS owner");
    let changed: Vec<&str> = plan.changes.iter().map(|r| r.endpoint.rsplit('/').next().unwrap()).collect();
    assert_eq!(changed, vec!["ch-b", "ch-missed"], "ch-a is converged");
    let gone = plan.changes.iter().find(|r| r.endpoint.ends_with("ch-b")).unwrap();
    assert!(gone.vendors.iter().any(|v| v.needs_work()), "deregistration planned: {:?}", gone.vendors);
    assert_eq!(calls.lock().unwrap().last(), Some(&(3, 3)), "progress reaches the total");
    assert_eq!(sb.arm.requests().iter().filter(|r| r.is_write()).count(), 0, "a plan writes nothing to ARM");
    assert_eq!(count_writes(&vendors.clickhouse.requests()), 0, "nor to vendors");
    let _ = (a, Ipv4Addr::LOCALHOST);
}
