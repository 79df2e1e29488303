//! Zone management (`dns.zone_management = "create"`) and zone replicas, end to end
//! against the fake ARM: a missing zone is created (never one that would shadow a
//! same-named zone elsewhere), linked, written, and removed again only when it is ours
//! and empty; foreign links are never touched; a zone named in several places gets the
//! record in each place, with conflicts per place.

use std::net::Ipv4Addr;

use autopilot_sandbox::fake_arm::{EndpointSpec, FakeArmOptions, dns};
use autopilot_sandbox::harness::{
    HUB_RESOURCE_GROUP as HUB_RG, HUB_SUBSCRIPTION as HUB, SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB,
    Sandbox, SandboxOptions,
};
use private_link_autopilot::arm::ArmRequest;
use private_link_autopilot::arm::client::Method;
use private_link_autopilot::config::Config;
use private_link_autopilot::config::ZoneSettings;
use private_link_autopilot::effects::dns::zones::{LinkState, OWNED_TAG, ZoneState};
use private_link_autopilot::model::resource_id::ResourceId;
use private_link_autopilot::reconcile::{DnsAction, Mode, Outcome, Report};
use serde_json::json;

const CH_ZONE: &str = "eastus2.privatelink.azure.clickhouse.cloud";
const CH_ALIAS: &str = "production-eastus2-0-0.00000000-0000-4000-8000-00000000c0de.eastus2.azure.privatelinkservice";
const OTHER_SUB: &str = "33333333-3333-3333-3333-333333333333";
const DR_RG: &str = "dns-dr";

fn spoke_vnet() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks/spoke-vnet")
}

fn clickhouse(name: &str, ip: &str) -> EndpointSpec {
    EndpointSpec::alias(SUB, RG, name, "eastus2", CH_ALIAS).approved().with_ip(ip.parse().unwrap())
}

async fn sandbox(zones: &[&str], configure: impl FnOnce(&mut Config) + Send + 'static) -> Sandbox {
    let options = SandboxOptions {
        arm: FakeArmOptions { lro_retry_after_secs: 0, lro_polls: 0, ..FakeArmOptions::default() },
        zones: zones.iter().map(|z| z.to_string()).collect(),
        configure: Box::new(configure),
        workers: 0,
        ..SandboxOptions::default()
    };
    Sandbox::start(options).await.expect("sandbox starts")
}

fn create_mode(c: &mut Config) {
    c.dns.zone_management = "create".into();
}

async fn reconcile(sb: &Sandbox, id: &str, mode: Mode) -> Report {
    sb.app.reconciler.invalidate_caches();
    sb.app.reconciler.reconcile(&ResourceId::parse(id).unwrap(), mode).await
}

fn ips(v: &[&str]) -> Vec<Ipv4Addr> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

fn conflicts(report: &Report) -> Vec<String> {
    report
        .plan
        .actions
        .iter()
        .filter_map(|a| match a {
            DnsAction::Conflict { key, reason, .. } => Some(format!("{}: {reason}", key.label())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn missing_zone_is_created_linked_and_written_once() {
    let sb = sandbox(&[], create_mode).await;
    let id = sb.arm.put_endpoint(&clickhouse("ch-new", "10.1.0.10"));

    let dry = reconcile(&sb, &id, Mode::DryRun).await;
    let z = dry.zones.iter().find(|z| z.zone == CH_ZONE).expect("zone in the dry run");
    assert_eq!(z.state, ZoneState::WouldCreate, "{z:?}");
    assert_eq!(z.links[0].state, LinkState::WouldCreate);
    assert!(sb.arm.resource(&sb.zone_id(CH_ZONE)).is_none(), "a dry run creates nothing");

    sb.arm.clear_log();
    let report = reconcile(&sb, &id, Mode::Apply).await;
    assert_eq!(report.outcome, Outcome::Done, "{report:#?}");
    let dns_requests = |sb: &Sandbox| {
        sb.arm
            .requests()
            .iter()
            .filter(|r| r.path.contains("privateDnsZones") || r.path.contains("ResourceGraph"))
            .count()
    };
    eprintln!("requests to create, link and write: {}", dns_requests(&sb));
    let zone = sb.arm.resource(&sb.zone_id(CH_ZONE)).expect("zone created in the hub");
    assert_eq!(zone["tags"][OWNED_TAG], "true");
    assert_eq!(zone["location"], "global");
    let links = sb.arm.links(&sb.zone_id(CH_ZONE));
    assert_eq!(links.len(), 1, "{links:#?}");
    let linked = links[0]["properties"]["virtualNetwork"]["id"].as_str().unwrap();
    assert!(linked.eq_ignore_ascii_case(&spoke_vnet()), "{linked}");
    assert_eq!(links[0]["properties"]["registrationEnabled"], false);
    assert_eq!(links[0]["tags"][OWNED_TAG], "true");
    // Not a privatelink.* zone: no resolutionPolicy is sent even when configured.
    assert!(links[0]["properties"].get("resolutionPolicy").is_none());
    let rec = sb.arm.record(&sb.zone_id(CH_ZONE), "*").expect("record written");
    assert_eq!(rec.addresses, ips(&["10.1.0.10"]));
    let z = report.zones.iter().find(|z| z.zone == CH_ZONE).unwrap();
    assert_eq!(z.state, ZoneState::Created);
    assert_eq!(z.links[0].state, LinkState::Created);
    // Zone and link creations were conditional and awaited.
    let puts: Vec<_> = sb
        .arm
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && !r.path.contains("/A/") && r.path.contains("privateDnsZones"))
        .collect();
    assert_eq!(puts.len(), 2, "{puts:#?}");
    assert!(puts.iter().all(|r| r.if_none_match.as_deref() == Some("*")), "{puts:#?}");

    // Idempotent: the next reconcile writes nothing.
    sb.arm.clear_log();
    let again = reconcile(&sb, &id, Mode::Apply).await;
    assert_eq!(again.outcome, Outcome::Done);
    assert_eq!(sb.arm.writes_to("privateDnsZones"), 0, "{:#?}", sb.arm.requests());
    eprintln!("requests on a converged re-run: {}", dns_requests(&sb));

    // Status shows the zone and its link.
    let status = private_link_autopilot::ops::endpoint_status(&sb.app, &ResourceId::parse(&id).unwrap()).await;
    let text = status.render();
    assert!(text.contains(&format!("zone {CH_ZONE}: present")), "{text}");
    assert!(text.contains("plautopilot-spoke-vnet-"), "{text}");
}

#[tokio::test]
async fn same_named_zone_elsewhere_is_not_shadowed() {
    let sb = sandbox(&[], |c| {
        create_mode(c);
        c.dns.zone_search_subscriptions = vec![OTHER_SUB.into()];
    })
    .await;
    let elsewhere = sb.arm.add_zone(OTHER_SUB, "corp-dns", CH_ZONE);
    let id = sb.arm.put_endpoint(&clickhouse("ch-shadow", "10.1.0.11"));
    let report = reconcile(&sb, &id, Mode::Apply).await;
    assert!(sb.arm.resource(&sb.zone_id(CH_ZONE)).is_none(), "no second zone of that name");
    assert!(sb.arm.links(&elsewhere).is_empty(), "the other zone is not touched");
    let z = report.zones.iter().find(|z| z.zone == CH_ZONE).unwrap();
    assert_eq!(z.state, ZoneState::NotCreated);
    assert!(z.detail.to_ascii_lowercase().contains(&elsewhere.to_ascii_lowercase()), "{}", z.detail);
    let c = conflicts(&report);
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(c[0].contains("shadow"), "{c:?}");
    let events = private_link_autopilot::reconcile::report_events::events_for(&report);
    assert!(events.iter().any(|e| e.kind == "dns.zone.not_created"), "{events:#?}");
}

#[tokio::test]
async fn foreign_links_are_left_alone_and_an_overlap_is_reported() {
    let sb = sandbox(&[CH_ZONE], create_mode).await;
    // The user already linked the spoke to the hub zone: that link stays exactly as it is.
    let hub_zone = sb.zone_id(CH_ZONE);
    let theirs = sb.arm.add_link(&hub_zone, "corp-link", &spoke_vnet(), None, json!({"owner": "network-team"}));
    let before = sb.arm.resource(&theirs).unwrap();
    let id = sb.arm.put_endpoint(&clickhouse("ch-foreign", "10.1.0.12"));
    let report = reconcile(&sb, &id, Mode::Apply).await;
    assert_eq!(report.outcome, Outcome::Done, "{report:#?}");
    assert_eq!(sb.arm.resource(&theirs).unwrap(), before, "a foreign link is never modified");
    assert_eq!(sb.arm.links(&hub_zone).len(), 1);
    assert!(sb.arm.record(&hub_zone, "*").is_some());
    let z = report.zones.iter().find(|z| z.zone == CH_ZONE).unwrap();
    assert_eq!(z.links[0].state, LinkState::Foreign, "{z:?}");

    // A second spoke is already linked to a same-named zone in its own subscription:
    // Azure refuses the overlapping link; the record is still written, the link reported.
    let other_vnet =
        format!("/subscriptions/{OTHER_SUB}/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/vnet2");
    let local = sb.arm.add_zone(OTHER_SUB, "net", CH_ZONE);
    sb.arm.add_link(&local, "local", &other_vnet, None, json!({}));
    let spec = EndpointSpec::alias(OTHER_SUB, "net", "ch-overlap", "eastus2", CH_ALIAS)
        .approved()
        .with_ip("10.2.0.4".parse().unwrap());
    let spec = EndpointSpec { subnet: Some(format!("{other_vnet}/subnets/endpoints")), ..spec };
    let id2 = sb.arm.put_endpoint(&spec);
    let report = reconcile(&sb, &id2, Mode::Apply).await;
    let z = report.zones.iter().find(|z| z.zone == CH_ZONE).unwrap();
    let link = z.links.iter().find(|l| l.vnet == other_vnet.to_ascii_lowercase()).unwrap();
    assert_eq!(link.state, LinkState::Failed, "{z:?}");
    assert!(link.detail.contains("overlapping namespaces"), "{}", link.detail);
    assert_eq!(sb.arm.links(&hub_zone).len(), 1, "no link was added");
    let events = private_link_autopilot::reconcile::report_events::events_for(&report);
    assert!(events.iter().any(|e| e.kind == "dns.link.failed"), "{events:#?}");
}

#[tokio::test]
async fn our_empty_zone_goes_with_the_last_record_and_a_used_one_stays() {
    // A named zone elsewhere: the zones created in the default place are still found.
    let sb = sandbox(&[], |c| {
        create_mode(c);
        c.dns.zones.push(ZoneSettings {
            name: "privatelink.blob.core.windows.net".into(),
            provider: "azure".into(),
            subscription: OTHER_SUB.into(),
            resource_group: "blob-dns".into(),
            server: String::new(),
            link_to: None,
        });
    })
    .await;
    let a = sb.arm.put_endpoint(&clickhouse("ch-gone", "10.1.0.13"));
    assert_eq!(reconcile(&sb, &a, Mode::Apply).await.outcome, Outcome::Done);
    let zone = sb.zone_id(CH_ZONE);
    assert!(sb.arm.resource(&zone).is_some());

    sb.arm.delete_endpoint(&a);
    let dry = reconcile(&sb, &a, Mode::DryRun).await;
    let z = dry.zones.iter().find(|z| z.zone == CH_ZONE).expect("cleanup planned");
    assert_eq!(z.state, ZoneState::WouldRemove, "{z:?}");
    let report = reconcile(&sb, &a, Mode::Apply).await;
    assert_eq!(report.outcome, Outcome::Done, "{report:#?}");
    assert!(sb.arm.record(&zone, "*").is_none(), "record removed");
    assert!(sb.arm.resource(&zone).is_none(), "our empty zone removed");
    let z = report.zones.iter().find(|z| z.zone == CH_ZONE).unwrap();
    assert_eq!(z.state, ZoneState::Removed);
    assert_eq!(z.links[0].state, LinkState::Removed);

    // Again, but someone put a record of their own into our zone: it stays.
    let b = sb.arm.put_endpoint(&clickhouse("ch-kept", "10.1.0.14"));
    assert_eq!(reconcile(&sb, &b, Mode::Apply).await.outcome, Outcome::Done);
    sb.arm.put_record(&zone, "manual", &ips(&["10.7.7.7"]), json!({}));
    sb.arm.delete_endpoint(&b);
    let report = reconcile(&sb, &b, Mode::Apply).await;
    assert!(sb.arm.record(&zone, "*").is_none(), "our record removed");
    assert!(sb.arm.record(&zone, "manual").is_some(), "theirs kept");
    assert!(sb.arm.resource(&zone).is_some(), "a zone with foreign records is kept");
    assert_eq!(sb.arm.links(&zone).len(), 1, "and so is its link");
    let z = report.zones.iter().find(|z| z.zone == CH_ZONE).unwrap();
    assert_eq!(z.state, ZoneState::Kept);
    assert!(z.detail.contains("not empty"), "{}", z.detail);

    // A zone we did not create is never removed.
    let c = sb.arm.put_endpoint(&clickhouse("ch-user-zone", "10.1.0.15"));
    let user_zone = dns::zone_id(HUB, HUB_RG, "privatelink.eastus2.kusto.windows.net");
    sb.arm.add_zone(HUB, HUB_RG, "privatelink.eastus2.kusto.windows.net");
    let _ = reconcile(&sb, &c, Mode::Apply).await;
    sb.arm.delete_endpoint(&c);
    let _ = reconcile(&sb, &c, Mode::Apply).await;
    assert!(sb.arm.resource(&user_zone).is_some());
}

fn dr_hub_vnet() -> String {
    format!("/subscriptions/{OTHER_SUB}/resourceGroups/net-dr/providers/Microsoft.Network/virtualNetworks/hub-dr")
}

fn replicas(c: &mut Config) {
    for (sub, rg, link_to) in [(HUB, HUB_RG, None), (OTHER_SUB, DR_RG, Some(vec![dr_hub_vnet()]))] {
        c.dns.zones.push(ZoneSettings {
            name: CH_ZONE.into(),
            provider: "azure".into(),
            subscription: sub.into(),
            resource_group: rg.into(),
            server: String::new(),
            link_to,
        });
    }
}

#[tokio::test]
async fn every_replica_gets_the_record_and_conflicts_stay_in_theirs() {
    let sb = sandbox(&[CH_ZONE], replicas).await;
    let hub = sb.zone_id(CH_ZONE);
    let dr = sb.arm.add_zone(OTHER_SUB, DR_RG, CH_ZONE);
    let a = sb.arm.put_endpoint(&clickhouse("ch-r1", "10.1.0.20"));
    let report = reconcile(&sb, &a, Mode::Apply).await;
    assert_eq!(report.outcome, Outcome::Done, "{report:#?}");
    for zone in [&hub, &dr] {
        let rec = sb.arm.record(zone, "*").unwrap_or_else(|| panic!("record in {zone}"));
        assert_eq!(rec.addresses, ips(&["10.1.0.20"]));
        assert!(rec.is_managed());
    }
    let replicas: Vec<String> = report.plan.actions.iter().map(|a| a.key().replica.clone()).collect();
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    assert!(replicas.contains(&format!("{OTHER_SUB}/{DR_RG}")), "{replicas:?}");
    let json = serde_json::to_value(&report.plan).unwrap();
    assert!(json.to_string().contains(&format!("\"replica\":\"{OTHER_SUB}/{DR_RG}\"")), "{json}");

    // A foreign record in the DR copy blocks that copy only.
    sb.arm.put_record(&dr, "api", &ips(&["10.9.9.9"]), json!({"owner": "dr-team"}));
    let spec =
        EndpointSpec::alias(SUB, RG, "ch-r2", "eastus2", CH_ALIAS).approved().with_ip("10.1.0.21".parse().unwrap());
    // (Same target, same VNet: joins the wildcard in both replicas.)
    let b = sb.arm.put_endpoint(&spec);
    let report = reconcile(&sb, &b, Mode::Apply).await;
    assert_eq!(report.outcome, Outcome::Done);
    assert!(conflicts(&report).is_empty(), "{:?}", conflicts(&report));
    // Make the DR wildcard foreign and reconcile a third endpoint: a conflict in DR only.
    sb.arm.put_record(&dr, "*", &ips(&["10.9.9.9"]), json!({"owner": "dr-team"}));
    let c = sb.arm.put_endpoint(&clickhouse("ch-r3", "10.1.0.22"));
    let report = reconcile(&sb, &c, Mode::Apply).await;
    let cs = conflicts(&report);
    assert_eq!(cs.len(), 1, "{cs:?}");
    assert!(cs[0].contains(&format!("[{OTHER_SUB}/{DR_RG}]")), "{cs:?}");
    assert_eq!(sb.arm.record(&hub, "*").unwrap().addresses, ips(&["10.1.0.20", "10.1.0.21", "10.1.0.22"]));
    assert_eq!(sb.arm.record(&dr, "*").unwrap().addresses, ips(&["10.9.9.9"]), "never overwritten");

    // Status lists each replica.
    let status = private_link_autopilot::ops::endpoint_status(&sb.app, &ResourceId::parse(&c).unwrap()).await;
    assert_eq!(status.dns.len(), 2, "{:#?}", status.dns);
    assert!(status.dns.iter().any(|d| d.state == "conflict" && d.record.contains(DR_RG)), "{:#?}", status.dns);

    // A deleted endpoint leaves every replica it owned a share in.
    sb.arm.delete_endpoint(&a);
    let report = reconcile(&sb, &a, Mode::Apply).await;
    assert_eq!(report.outcome, Outcome::Done, "{report:#?}");
    assert_eq!(sb.arm.record(&hub, "*").unwrap().addresses, ips(&["10.1.0.21", "10.1.0.22"]));
}

#[tokio::test]
async fn off_mode_creates_nothing_and_says_why() {
    let sb = sandbox(&[], |_| {}).await;
    let id = sb.arm.put_endpoint(&clickhouse("ch-off", "10.1.0.30"));
    let report = reconcile(&sb, &id, Mode::Apply).await;
    match &report.outcome {
        Outcome::Failed { reason } => {
            assert!(reason.contains("zone_management") && reason.contains("does not exist"), "{reason}")
        }
        other => panic!("expected a clear failure, got {other:?}"),
    }
    assert!(sb.arm.resource(&sb.zone_id(CH_ZONE)).is_none());
    assert_eq!(sb.arm.writes_to("virtualNetworkLinks"), 0);
    let status = private_link_autopilot::ops::endpoint_status(&sb.app, &ResourceId::parse(&id).unwrap()).await;
    let text = status.render();
    assert!(text.contains("not_created") && text.contains("zone_management is off"), "{text}");
}

#[tokio::test]
async fn a_link_falling_back_to_internet_is_a_status_warning() {
    let zone = "privatelink.blob.core.windows.net";
    let sb = sandbox(&[zone, CH_ZONE], |_| {}).await;
    sb.arm.add_link(&sb.zone_id(CH_ZONE), "fallback", &spoke_vnet(), Some("NxDomainRedirect"), json!({}));
    let id = sb.arm.put_endpoint(&clickhouse("ch-fallback", "10.1.0.31"));
    let status = private_link_autopilot::ops::endpoint_status(&sb.app, &ResourceId::parse(&id).unwrap()).await;
    assert_eq!(status.warnings.len(), 1, "{status:#?}");
    assert!(status.warnings[0].contains("NxDomainRedirect"), "{:?}", status.warnings);
    assert!(status.render().contains("warning"), "{}", status.render());
}

#[tokio::test]
async fn the_fake_is_strict_about_links_and_zone_writes() {
    let zone = "privatelink.eastus2.kusto.windows.net";
    let sb = sandbox(&[], |c| {
        create_mode(c);
        c.dns.link_resolution_policy = "Default".into();
    })
    .await;
    let arm = &sb.app.arm;
    // The fake is strict where Azure is: the policy exists from 2024-06-01, on privatelink zones.
    let plz = sb.arm.add_zone(HUB, HUB_RG, zone);
    let other = sb.arm.add_zone(HUB, HUB_RG, "corp.example.com");
    let body = json!({"location": "global", "properties": {"virtualNetwork": {"id": spoke_vnet()},
        "registrationEnabled": false, "resolutionPolicy": "NxDomainRedirect"}});
    let put = |zone: &str, api: &str| {
        ArmRequest::new(Method::Put, format!("{zone}/virtualNetworkLinks/l1"), api).body(body.clone())
    };
    let e = arm.send(put(&plz, "2020-06-01")).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    let e = arm.send(put(&other, "2024-06-01")).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    arm.send_and_wait(put(&plz, "2024-06-01")).await.expect("accepted on a privatelink zone");
    let e = arm.send(ArmRequest::new(Method::Delete, &plz, "2024-06-01")).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "a zone with links is not deleted: {e}");
    let e = arm
        .send(
            ArmRequest::new(Method::Put, &plz, "2024-06-01")
                .header("If-None-Match", "*")
                .body(json!({"location": "global"})),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(412), "{e}");

    // With RBAC on, linking needs `virtualNetworks/join/action` on the VNet, as in Azure.
    use autopilot_sandbox::fake_arm::rbac::{Assignment, Grants};
    sb.arm.set_grants(Some(Grants {
        object_id: "o".into(),
        client_id: "c".into(),
        assignments: vec![Assignment {
            role: "dns".into(),
            scope: format!("/subscriptions/{HUB}"),
            actions: vec!["Microsoft.Network/privateDnsZones/*".into()],
        }],
    }));
    let link = |name: &str| {
        ArmRequest::new(Method::Put, format!("{other}/virtualNetworkLinks/{name}"), "2024-06-01")
            .body(json!({"location": "global", "properties": {"virtualNetwork": {"id": spoke_vnet()}}}))
    };
    let e = arm.send(link("l2")).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    let denied = sb.arm.denials();
    assert_eq!(denied.last().unwrap().action, "Microsoft.Network/virtualNetworks/join/action", "{denied:?}");
}

#[tokio::test]
async fn plan_lists_each_replica_and_the_zone_work() {
    let sb = sandbox(&[CH_ZONE], |c| {
        replicas(c);
        create_mode(c);
        c.sweep.subscriptions = vec![SUB.into()];
        c.sweep.source = "arm".into();
    })
    .await;
    // The DR copy does not exist yet: the plan says it would be created and linked.
    sb.arm.put_endpoint(&clickhouse("ch-plan", "10.1.0.40"));
    let plan = private_link_autopilot::runtime::sweep::plan_subscriptions(&sb.app, &[SUB.to_owned()], &|_, _| {})
        .await
        .expect("plan");
    assert_eq!(plan.changes.len(), 1, "{plan:#?}");
    let json = serde_json::to_value(&plan).unwrap().to_string();
    assert!(json.contains(&format!("\"replica\":\"{}/{}\"", HUB.to_ascii_lowercase(), HUB_RG)), "{json}");
    assert!(json.contains(&format!("\"replica\":\"{OTHER_SUB}/{DR_RG}\"")), "{json}");
    let report = &plan.changes[0];
    let dr = report.zones.iter().find(|z| z.replica == format!("{OTHER_SUB}/{DR_RG}")).expect("DR zone planned");
    assert_eq!(dr.state, ZoneState::WouldCreate, "the hub copy is a replica, not a zone to avoid: {dr:?}");
    assert!(json.contains("\"state\":\"would_create\""), "{json}");
    assert!(sb.arm.resource(&dns::zone_id(OTHER_SUB, DR_RG, CH_ZONE)).is_none(), "a plan writes nothing");
    let hub = report.zones.iter().find(|z| z.replica == format!("{}/{}", HUB.to_ascii_lowercase(), HUB_RG));
    assert!(hub.is_some_and(|z| z.detail.contains("link_to")), "{:#?}", report.zones);

    // Applied: the DR copy is created and linked to the DR hub only; both copies hold the record.
    let id = report.endpoint.clone();
    let applied = reconcile(&sb, &id, Mode::Apply).await;
    assert_eq!(applied.outcome, Outcome::Done, "{applied:#?}");
    let dr = dns::zone_id(OTHER_SUB, DR_RG, CH_ZONE);
    let links = sb.arm.links(&dr);
    assert_eq!(links.len(), 1, "{links:#?}");
    assert!(links[0]["properties"]["virtualNetwork"]["id"].as_str().unwrap().eq_ignore_ascii_case(&dr_hub_vnet()));
    assert!(sb.arm.links(&sb.zone_id(CH_ZONE)).is_empty(), "the spoke is not linked to two copies");
    assert!(sb.arm.record(&dr, "*").is_some() && sb.arm.record(&sb.zone_id(CH_ZONE), "*").is_some());
}

/// A deleted owner of a shared name leaves every replica: the re-read record keeps the
/// replica it came from, so the update goes back to that copy (it once went to the first
/// copy with the DR copy's ETag: 412 on every retry).
#[tokio::test]
async fn a_shared_record_shrinks_in_every_replica() {
    let sb = sandbox(&[CH_ZONE], replicas).await;
    let hub = sb.zone_id(CH_ZONE);
    let dr = sb.arm.add_zone(OTHER_SUB, DR_RG, CH_ZONE);
    let a = sb.arm.put_endpoint(&clickhouse("ch-s1", "10.1.0.50"));
    let b = sb.arm.put_endpoint(&clickhouse("ch-s2", "10.1.0.51"));
    for id in [&a, &b] {
        assert_eq!(reconcile(&sb, id, Mode::Apply).await.outcome, Outcome::Done);
    }
    for zone in [&hub, &dr] {
        assert_eq!(sb.arm.record(zone, "*").unwrap().addresses, ips(&["10.1.0.50", "10.1.0.51"]), "{zone}");
    }
    sb.arm.delete_endpoint(&a);
    let report = reconcile(&sb, &a, Mode::Apply).await;
    assert_eq!(report.outcome, Outcome::Done, "{report:#?}");
    for zone in [&hub, &dr] {
        assert_eq!(sb.arm.record(zone, "*").unwrap().addresses, ips(&["10.1.0.51"]), "{zone}");
    }
}
