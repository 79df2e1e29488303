//! A hostile tenant: someone who can create private endpoints (and tag them) in one spoke
//! subscription in scope, and nothing else. Each test is one way that person could try
//! to make the product claim a name, join a record, register with a vendor or approve on
//! the strength of something they control. None of it may work: authority comes from
//! the target's approval and our configuration, never from a request.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use autopilot_sandbox::events::{self, ResourceEvent};
use autopilot_sandbox::fake_arm::{EndpointSpec, FakeArmOptions, MemberSpec};
use autopilot_sandbox::harness::{SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB, Sandbox, SandboxOptions};
use autopilot_sandbox::vendors::{CLICKHOUSE_ALIAS, SandboxVendors, ZILLIZ_ALIAS};
use private_link_autopilot::config::Config;
use private_link_autopilot::model::resource_id::ResourceId;
use private_link_autopilot::reconcile::{DnsAction, Mode, Outcome};

const ATTACKER_SUB: &str = "33333333-3333-3333-3333-333333333333";
const ATTACKER_RG: &str = "rg-attacker";
const VICTIM_SUB: &str = "44444444-4444-4444-4444-444444444444";
const VAULT_ZONE: &str = "privatelink.vaultcore.azure.net";
const CH_ZONE: &str = "eastus2.privatelink.azure.clickhouse.cloud";
const ZZ_ZONE: &str = "az-eastus2.vectordb.zillizcloud.com";
const KUSTO_ZONE: &str = "privatelink.eastus2.kusto.windows.net";

async fn sandbox(configure: impl FnOnce(&mut Config) + Send + 'static) -> Sandbox {
    Sandbox::start(SandboxOptions {
        arm: FakeArmOptions { lro_retry_after_secs: 1, ..FakeArmOptions::default() },
        zones: vec![VAULT_ZONE.into(), CH_ZONE.into(), ZZ_ZONE.into(), KUSTO_ZONE.into()],
        configure: Box::new(configure),
        workers: 0,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox starts")
}

fn victim_vault() -> String {
    format!("/subscriptions/{VICTIM_SUB}/resourceGroups/rg-victim/providers/Microsoft.KeyVault/vaults/prodkv")
}

fn vault_endpoint(sub: &str, rg: &str, name: &str) -> EndpointSpec {
    EndpointSpec::resource(
        sub,
        rg,
        name,
        "eastus2",
        &victim_vault(),
        "vault",
        vec![MemberSpec::new("default", &["prodkv.vault.azure.net"])],
    )
}

/// F1, route 1: a manual (Pending) request to another team's Key Vault gets no record.
#[tokio::test]
async fn a_pending_request_to_someone_elses_vault_claims_no_name() {
    let sb = sandbox(|_| {}).await;
    let (_, d) = sb.create(&vault_endpoint(ATTACKER_SUB, ATTACKER_RG, "evil").manual()).await;
    assert_eq!(d.status, 202);
    assert!(sb.arm.record(&sb.zone_id(VAULT_ZONE), "prodkv").is_none(), "no record for a Pending request");
}

/// A connection that is Approved and then leaves Approved (Rejected, Disconnected) gives
/// its name back.
#[tokio::test]
async fn leaving_approved_withdraws_the_share() {
    let sb = sandbox(|_| {}).await;
    let (id, _) = sb.create(&vault_endpoint(SUB, RG, "kv-pe")).await;
    assert!(sb.arm.record(&sb.zone_id(VAULT_ZONE), "prodkv").is_some(), "written while Approved");
    for status in ["Rejected", "Disconnected"] {
        sb.arm.set_connection_status(&id, "Approved");
        sb.deliver(vec![events::event_grid(ResourceEvent::WriteSuccess, &id)]).await;
        assert!(sb.arm.record(&sb.zone_id(VAULT_ZONE), "prodkv").is_some());
        sb.arm.set_connection_status(&id, status);
        sb.deliver(vec![events::event_grid(ResourceEvent::WriteSuccess, &id)]).await;
        assert!(sb.arm.record(&sb.zone_id(VAULT_ZONE), "prodkv").is_none(), "{status}: share withdrawn");
    }
}

/// F1 variant: even an *approved* second endpoint to the same vault from another VNet
/// cannot join a name that is not shared; the conflict names the holder and the way out.
#[tokio::test]
async fn a_second_endpoint_for_an_exclusive_name_is_a_reported_conflict() {
    let sb = sandbox(|c| c.marks.enabled = true).await;
    let (_, _) = sb.create(&vault_endpoint(SUB, RG, "kv-owner").with_ip(Ipv4Addr::new(10, 1, 0, 7))).await;
    let (other, _) =
        sb.create(&vault_endpoint(ATTACKER_SUB, ATTACKER_RG, "kv-second").with_ip(Ipv4Addr::new(10, 66, 0, 7))).await;
    let rec = sb.arm.record(&sb.zone_id(VAULT_ZONE), "prodkv").expect("the first owner's record");
    assert_eq!(rec.addresses, vec![Ipv4Addr::new(10, 1, 0, 7)], "the second endpoint did not join");
    let report = sb.app.reconciler.reconcile(&ResourceId::parse_private_endpoint(&other).unwrap(), Mode::DryRun).await;
    let reason = report
        .plan
        .actions
        .iter()
        .find_map(|a| match a {
            DnsAction::Conflict { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("a conflict");
    assert!(reason.contains("kv-owner") && reason.contains("Way out"), "{reason}");
    // The endpoint itself says so, for whoever looks at it in the portal.
    let tags = sb.arm.resource(&other).unwrap()["tags"].clone();
    let mark = tags["plautopilot-conflict"].as_str().unwrap_or_default().to_owned();
    assert!(mark.contains("prodkv.privatelink.vaultcore.azure.net") && mark.contains("kv-owner"), "{tags}");
}

/// F1, route 2: a Private Link Service of the attacker's own, named like ClickHouse's
/// (`production-…`, another publisher's GUID), is not ClickHouse: no record, no vendor work.
#[tokio::test]
async fn a_look_alike_alias_is_not_the_vendor() {
    let sb = sandbox(|_| {}).await;
    let (honest, _) = sb.create(&EndpointSpec::alias(SUB, RG, "ch-real", "eastus2", CLICKHOUSE_ALIAS).approved()).await;
    assert!(sb.arm.record(&sb.zone_id(CH_ZONE), "*").is_some());
    for alias in [
        "production-evil.deadbeef-0000-4000-8000-000000000000.eastus2.azure.privatelinkservice",
        // ClickHouse's own PLS name under another publisher's GUID.
        "production-eastus2-0-0.deadbeef-0000-4000-8000-000000000000.eastus2.azure.privatelinkservice",
    ] {
        let spec = EndpointSpec::alias(ATTACKER_SUB, ATTACKER_RG, "evil", "eastus2", alias)
            .approved()
            .with_ip(Ipv4Addr::new(10, 66, 6, 6));
        let (evil, _) = sb.create(&spec).await;
        let report =
            sb.app.reconciler.reconcile(&ResourceId::parse_private_endpoint(&evil).unwrap(), Mode::Apply).await;
        assert_eq!(report.target, None, "{alias} matched {:?}", report.target);
        assert!(report.vendors.is_empty(), "no vendor work for a look-alike");
        let rec = sb.arm.record(&sb.zone_id(CH_ZONE), "*").unwrap();
        assert!(!rec.addresses.contains(&Ipv4Addr::new(10, 66, 6, 6)), "{alias} joined the wildcard");
    }
    let _ = honest;
}

/// F1, route 3: a tag naming someone else's Zilliz cluster (or one that does not exist
/// yet) claims nothing; a known cluster held by another endpoint is a conflict.
#[tokio::test]
async fn a_tag_cannot_claim_cluster_names() {
    let sb = sandbox(|_| {}).await;
    let victim = EndpointSpec::alias(SUB, RG, "zz-victim", "eastus2", ZILLIZ_ALIAS)
        .approved()
        .with_ip(Ipv4Addr::new(10, 1, 0, 9))
        .with_tag("autopilot.zilliz.clusters", "in01-3f2a9c");
    sb.create(&victim).await;
    let attacker = EndpointSpec::alias(ATTACKER_SUB, ATTACKER_RG, "zz-evil", "eastus2", ZILLIZ_ALIAS)
        .approved()
        .with_ip(Ipv4Addr::new(10, 66, 0, 9))
        .with_tag("autopilot.zilliz.clusters", "in01-3f2a9c,in01-notyetcreated,in01-elsewhere");
    let (evil, _) = sb.create(&attacker).await;
    let zone = sb.zone_id(ZZ_ZONE);
    let held = sb.arm.record(&zone, "in01-3f2a9c-privatelink").expect("the victim's record");
    assert_eq!(held.addresses, vec![Ipv4Addr::new(10, 1, 0, 9)], "the attacker did not join");
    assert!(sb.arm.record(&zone, "in01-notyetcreated-privatelink").is_none(), "no pre-claimed name");
    assert!(sb.arm.record(&zone, "in01-elsewhere-privatelink").is_none());
    let report = sb.app.reconciler.reconcile(&ResourceId::parse_private_endpoint(&evil).unwrap(), Mode::DryRun).await;
    assert!(report.plan.notes.iter().any(|n| n.contains("in01-notyetcreated") && n.contains("cannot grant")));
    assert_eq!(report.plan.conflicts(), 1, "{:?}", report.plan.actions);
}

/// F2: `provisioningState = Failed` (a failed update of a live endpoint) leaves its
/// record, its approved connection on our target and its vendor registration alone.
#[tokio::test]
async fn a_failed_update_is_not_a_deletion() {
    let kusto = format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Kusto/clusters/adxowned");
    let owned = kusto.clone();
    let sb = sandbox(move |c| {
        c.approvals.owned_resources = vec![owned];
        c.approvals.allowed_subscriptions = vec![SUB.into()];
        c.marks.enabled = true;
    })
    .await;
    sb.arm.add_link_target(&kusto, "eastus2");
    let spec = EndpointSpec::resource(
        SUB,
        RG,
        "adx-pe",
        "eastus2",
        &kusto,
        "cluster",
        vec![MemberSpec::new("Engine", &["adxowned.eastus2.kusto.windows.net"])],
    )
    .manual();
    let (id, _) = sb.create(&spec).await;
    assert!(sb.arm.record(&sb.zone_id(KUSTO_ZONE), "adxowned").is_some(), "approved by policy, then written");
    sb.arm.put_endpoint(&spec.clone().approved().provisioning("Failed"));
    sb.arm.set_connection_status(&id, "Approved");
    let d = sb.deliver(vec![events::event_grid(ResourceEvent::WriteSuccess, &id)]).await;
    assert_eq!(d.status, 202);
    assert!(sb.arm.record(&sb.zone_id(KUSTO_ZONE), "adxowned").is_some(), "record kept");
    let conn = sb.arm.target_connection(&id).expect("the approved connection on our target is kept");
    assert_eq!(conn["properties"]["privateLinkServiceConnectionState"]["status"], "Approved", "{conn}");
    let report = sb.app.reconciler.reconcile(&ResourceId::parse_private_endpoint(&id).unwrap(), Mode::DryRun).await;
    assert!(matches!(report.outcome, Outcome::Requeue { .. }), "re-checked: {:?}", report.outcome);
    let tags = sb.arm.resource(&id).unwrap()["tags"].clone();
    assert_eq!(tags["plautopilot-state"], "ProvisioningFailed", "{tags}");
}

/// F18: ids with `.`/`..`, `%` or empty segments are refused where they enter.
#[test]
fn resource_id_tricks_are_rejected_at_parse() {
    let pe = format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/privateEndpoints");
    for bad in [
        format!("{pe}/.."),
        format!("{pe}/."),
        format!("{pe}/x/../../../../Microsoft.KeyVault/vaults/v"),
        format!("{pe}/a%2f..%2fb"),
        format!("/subscriptions/{SUB}//resourceGroups/{RG}/providers/Microsoft.Network/privateEndpoints/x"),
        format!("{pe}/x\\..\\y"),
    ] {
        assert!(ResourceId::parse_private_endpoint(&bad).is_err(), "accepted {bad}");
    }
    assert!(ResourceId::parse_private_endpoint(&format!("{pe}/fine")).is_ok());
}

/// F17: the ARM token only goes to https, or to a loopback host by its parsed address.
#[test]
fn arm_base_url_is_checked_by_its_host() {
    for bad in ["http://localhost.attacker.example", "http://127.0.0.1.nip.example", "http://10.0.0.5"] {
        let env = [("AUTOPILOT__ARM__BASE_URL".to_string(), bad.to_string())];
        assert!(Config::load(None, env.into_iter()).is_err(), "{bad} accepted");
    }
    let env = [("AUTOPILOT__ARM__BASE_URL".to_string(), "http://127.0.0.1:9".to_string())];
    assert!(Config::load(None, env.into_iter()).is_ok());
}

/// Records follow approval, measured: event -> vendor registration -> the vendor
/// approves after a delay -> the approval re-check writes the record.
#[tokio::test]
async fn records_appear_when_the_vendor_approves() {
    let vendors = SandboxVendors::start().await.unwrap();
    let mut base = Config::default();
    vendors.configure(&mut base);
    let section = base.vendors.clone();
    let sb = Sandbox::start(SandboxOptions {
        zones: vec![CH_ZONE.into()],
        configure: Box::new(move |c| {
            c.vendors = section;
            c.marks.enabled = true;
            c.reconcile.retry_base_secs = 1;
            c.reconcile.retry_max_secs = 1;
        }),
        env: vendors.env(),
        workers: 2,
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let started = Instant::now();
    let (id, d) = sb.create(&EndpointSpec::alias(SUB, RG, "ch-timed", "eastus2", CLICKHOUSE_ALIAS)).await;
    assert_eq!(d.status, 202);
    assert!(sb.arm.record(&sb.zone_id(CH_ZONE), "*").is_none(), "nothing before approval");
    // The vendor approves 1.5 s after registering the endpoint (in its subscription).
    let registered = loop {
        if vendors.clickhouse.state().services.values().flatten().count() == 1 {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "registered in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(sb.arm.record(&sb.zone_id(CH_ZONE), "*").is_none(), "still nothing while Pending");
    sb.arm.set_connection_status(&id, "Approved");
    let approved = started.elapsed();
    let written = loop {
        if sb.arm.record(&sb.zone_id(CH_ZONE), "*").is_some() {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "written after approval");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "event -> registered {:.0} ms; approved at {:.0} ms; record written {:.0} ms after approval",
        registered.as_secs_f64() * 1e3,
        approved.as_secs_f64() * 1e3,
        (written - approved).as_secs_f64() * 1e3
    );
    assert!(written - approved < Duration::from_secs(5));
}

/// F17: vendor keys and the audit token go to https, or to loopback only.
#[test]
fn vendor_and_audit_urls_must_be_https_off_loopback() {
    use private_link_autopilot::arm::Secret;
    use private_link_autopilot::arm::credential::StaticToken;
    use private_link_autopilot::effects::audit::EventGridSink;
    use private_link_autopilot::effects::vendors::build_vendors;
    let mut vendors = Config::default().vendors;
    vendors.clickhouse.enabled = true;
    vendors.clickhouse.organization_id = "org".into();
    vendors.clickhouse.service_ids = vec!["svc".into()];
    vendors.clickhouse.key_id_env = "K".into();
    vendors.clickhouse.key_secret_env = "S".into();
    let env = |_: &str| Some("x".to_string());
    for bad in ["http://api.clickhouse.example", "http://localhost.attacker.example"] {
        vendors.clickhouse.base_url = bad.into();
        let err = build_vendors(&vendors, env).expect_err(bad);
        assert!(err.contains("loopback"), "{err}");
    }
    vendors.clickhouse.base_url = "http://127.0.0.1:1".into();
    assert!(build_vendors(&vendors, env).is_ok());
    let token = std::sync::Arc::new(StaticToken(Secret::new(String::from("t"))));
    assert!(EventGridSink::new("http://topic.eastus2-1.eventgrid.azure.net/api/events", token.clone(), "s").is_err());
    assert!(EventGridSink::new("https://topic.eastus2-1.eventgrid.azure.net/api/events", token, "s").is_ok());
}
