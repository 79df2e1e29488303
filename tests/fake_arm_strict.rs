//! The fake ARM is as strict as ARM where a client can go wrong without noticing:
//! api-versions per resource type (every route), the Tags API's accepted (202) PATCH,
//! read-only record-set properties, and Resource Graph tables and columns. Each test
//! fails if the product (or the fake) drifts: the product's pinned versions must be
//! published for their types, and the whole pipeline must run without one refusal.

mod support;

use autopilot_sandbox::fake_arm::versions::{SPEC_VERSIONS, spec_versions};
use autopilot_sandbox::fake_arm::{EndpointSpec, FakeArm, FakeArmOptions, MemberSpec, SANDBOX_TOKEN};
use autopilot_sandbox::harness::{
    HUB_RESOURCE_GROUP as HUB_RG, HUB_SUBSCRIPTION as HUB, SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB,
    Sandbox, SandboxOptions,
};
use private_link_autopilot::arm::{endpoints::NETWORK_API, graph, providers::PROVIDERS_API};
use private_link_autopilot::effects::approvals::SUBSCRIPTIONS_API;
use private_link_autopilot::effects::dns::azure::PRIVATE_DNS_API;
use private_link_autopilot::effects::marks::TAGS_API;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ZONE: &str = "privatelink.vaultcore.azure.net";

async fn send(arm: &FakeArm, method: Method, path: &str, api: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}?api-version={api}", arm.base_url()))
        .bearer_auth(SANDBOX_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("fake answers");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn vault_pe(name: &str) -> EndpointSpec {
    let target = format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/kv-{name}");
    EndpointSpec::resource(
        SUB,
        RG,
        name,
        "eastus2",
        &target,
        "vault",
        vec![MemberSpec::new("default", &[&format!("kv-{name}.vault.azure.net")])],
    )
}

/// The product's pinned versions are published for the types it sends them to.
#[test]
fn the_products_versions_are_published_for_their_types() {
    for (rtype, api) in [
        ("Microsoft.Network/privateEndpoints", NETWORK_API),
        ("Microsoft.Network/privateEndpoints/privateDnsZoneGroups", NETWORK_API),
        ("Microsoft.Network/networkInterfaces", NETWORK_API),
        ("Microsoft.Network/privateDnsZones", PRIVATE_DNS_API),
        ("Microsoft.Network/privateDnsZones/A", PRIVATE_DNS_API),
        ("Microsoft.Resources/tags", TAGS_API),
        ("Microsoft.Resources/subscriptions", SUBSCRIPTIONS_API),
        ("Microsoft.Resources/subscriptions/providers", PROVIDERS_API),
        ("Microsoft.ResourceGraph/resources", graph::GRAPH_API),
    ] {
        let versions = spec_versions(rtype).unwrap_or_else(|| panic!("{rtype} is not in the fake's table"));
        assert!(versions.contains(&api), "the product sends {api} to {rtype}, which is published at {versions:?}");
    }
}

/// The checked-in table agrees with the shared fixture it was derived from (when the
/// fixture is there: the shipped fake must not need it).
#[test]
fn the_version_table_matches_the_fixture() {
    let path = support::shared_dir().join("fixtures/arm/api-versions.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("note: {} not found; table not compared", path.display());
        return;
    };
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut compared = 0;
    for (rtype, versions) in SPEC_VERSIONS {
        let Some(fixture) = doc["types"][*rtype].as_array() else { continue };
        let fixture: Vec<&str> = fixture.iter().filter_map(Value::as_str).collect();
        assert_eq!(&fixture, versions, "{rtype}: the checked-in table differs from {}", path.display());
        compared += 1;
    }
    assert!(compared >= 6, "only {compared} rows found in the fixture");
}

/// Every route the fake serves refuses a version its type was never published at, with
/// ARM's code, and serves the product's.
#[tokio::test]
async fn every_route_refuses_an_unpublished_api_version() {
    let arm = FakeArm::start(FakeArmOptions::default()).await.unwrap();
    let zone = arm.add_zone(HUB, HUB_RG, ZONE);
    let pe = arm.put_endpoint(&vault_pe("kv1"));
    arm.set_subscription_tenant(SUB, "tenant-1");
    let nic =
        arm.resource(&pe).unwrap().pointer("/properties/networkInterfaces/0/id").unwrap().as_str().unwrap().to_owned();
    let graph_body = json!({"subscriptions": [SUB], "query": graph::PRIVATE_ENDPOINTS_QUERY});
    let tags_body = json!({"operation": "Merge", "properties": {"tags": {"a": "b"}}});
    let record_body = json!({"properties": {"ttl": 10, "aRecords": [{"ipv4Address": "10.0.0.9"}]}});
    let zones = format!("/subscriptions/{HUB}/resourceGroups/{HUB_RG}/providers/Microsoft.Network/privateDnsZones");
    let cases: Vec<(Method, String, &str, Option<Value>, &str)> = vec![
        (Method::GET, pe.clone(), NETWORK_API, None, "NoRegisteredProviderFound"),
        (Method::GET, format!("{pe}/privateDnsZoneGroups"), NETWORK_API, None, "NoRegisteredProviderFound"),
        (Method::GET, nic, NETWORK_API, None, "NoRegisteredProviderFound"),
        (
            Method::GET,
            format!("/subscriptions/{SUB}/providers/Microsoft.Network/privateEndpoints"),
            NETWORK_API,
            None,
            "NoRegisteredProviderFound",
        ),
        (Method::GET, zones, PRIVATE_DNS_API, None, "NoRegisteredProviderFound"),
        (Method::GET, zone.clone(), PRIVATE_DNS_API, None, "NoRegisteredProviderFound"),
        (Method::GET, format!("{zone}/A"), PRIVATE_DNS_API, None, "NoRegisteredProviderFound"),
        (Method::PUT, format!("{zone}/A/x"), PRIVATE_DNS_API, Some(record_body), "NoRegisteredProviderFound"),
        (Method::DELETE, format!("{zone}/A/x"), PRIVATE_DNS_API, None, "NoRegisteredProviderFound"),
        (
            Method::PATCH,
            format!("{pe}/providers/Microsoft.Resources/tags/default"),
            TAGS_API,
            Some(tags_body),
            "InvalidApiVersionParameter",
        ),
        (
            Method::GET,
            format!("{pe}/providers/Microsoft.Resources/tags/default"),
            TAGS_API,
            None,
            "InvalidApiVersionParameter",
        ),
        (Method::GET, format!("/subscriptions/{SUB}"), SUBSCRIPTIONS_API, None, "InvalidApiVersionParameter"),
        (
            Method::GET,
            format!("/subscriptions/{SUB}/providers/Microsoft.Kusto"),
            PROVIDERS_API,
            None,
            "InvalidApiVersionParameter",
        ),
        (
            Method::POST,
            "/providers/Microsoft.ResourceGraph/resources".into(),
            graph::GRAPH_API,
            Some(graph_body),
            "NoRegisteredProviderFound",
        ),
    ];
    for (method, path, good, body, code) in cases {
        // A version that exists for other types (the audit's generic approval version).
        let (status, err) = send(&arm, method.clone(), &path, "2024-04-02", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}: {err}");
        assert_eq!(err["error"]["code"], code, "{method} {path}: {err}");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("2024-04-02") && message.contains(good), "{method} {path}: {message}");
        let (status, answer) = send(&arm, method.clone(), &path, good, body).await;
        assert!(status.is_success(), "{method} {path} at {good}: {status} {answer}");
    }
}

/// The whole pipeline (create, delete, sweep, marks) sends only published versions:
/// a product change to a wrong version fails here with the fake's 400.
#[tokio::test]
async fn the_pipeline_never_meets_a_version_refusal() {
    let sb = Sandbox::start(SandboxOptions {
        arm: FakeArmOptions { lro_retry_after_secs: 1, ..FakeArmOptions::default() },
        zones: vec![ZONE.into()],
        configure: Box::new(|c| c.sweep.subscriptions = vec![SUB.into()]),
        workers: 0,
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let (a, _) = sb.create(&vault_pe("kv1")).await;
    let (b, _) = sb.create(&vault_pe("kv2")).await;
    sb.delete(&b).await;
    sb.host.invoke_timer("Sweep", false).await.unwrap();
    assert!(sb.arm.record(&sb.zone_id(ZONE), "kv-kv1").is_some());
    assert!(sb.arm.resource(&a).unwrap()["tags"]["plautopilot-state"].is_string());
    let refused: Vec<_> = sb.arm.requests().into_iter().filter(|r| r.status == 400).collect();
    assert!(refused.is_empty(), "{refused:#?}");
}

/// An accepted (202) Tags PATCH takes effect only when its `location` is followed, and
/// the product's marks follow it.
#[tokio::test]
async fn an_accepted_tags_patch_is_followed_to_its_end() {
    // Raw protocol first: 202 + lower-case location, nothing applied until polled.
    let arm = FakeArm::start(FakeArmOptions { tags_accepted_every: 1, ..FakeArmOptions::default() }).await.unwrap();
    let pe = arm.put_endpoint(&vault_pe("kv0"));
    let resp = reqwest::Client::new()
        .patch(format!("{}{pe}/providers/Microsoft.Resources/tags/default?api-version={TAGS_API}", arm.base_url()))
        .bearer_auth(SANDBOX_TOKEN)
        .json(&json!({"operation": "Merge", "properties": {"tags": {"k": "v"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.contains(&format!("/subscriptions/{SUB}/operationresults/")), "{location}");
    assert!(arm.resource(&pe).unwrap()["tags"].get("k").is_none(), "applied before the operation completed");
    let mut last = StatusCode::ACCEPTED;
    for _ in 0..5 {
        last = reqwest::Client::new().get(&location).bearer_auth(SANDBOX_TOKEN).send().await.unwrap().status();
        if last != StatusCode::ACCEPTED {
            break;
        }
    }
    assert_eq!(last, StatusCode::NO_CONTENT);
    assert_eq!(arm.resource(&pe).unwrap()["tags"]["k"], "v");

    // The product: every mark write is accepted asynchronously, and the marks land.
    let sb = Sandbox::start(SandboxOptions {
        arm: FakeArmOptions { lro_retry_after_secs: 1, tags_accepted_every: 1, ..FakeArmOptions::default() },
        zones: vec![ZONE.into()],
        workers: 0,
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let (id, _) = sb.create(&vault_pe("kv1")).await;
    let tags = sb.arm.resource(&id).unwrap()["tags"].clone();
    assert_eq!(tags["plautopilot-state"], "Approved", "{tags}");
    let log = sb.arm.requests();
    assert!(log.iter().any(|r| r.method == "PATCH" && r.status == 202));
    assert!(log.iter().any(|r| r.path.contains("/operationresults/") && r.status == 204));
}

/// Record-set bodies may not carry the spec's read-only properties.
#[tokio::test]
async fn record_set_bodies_with_read_only_properties_are_refused() {
    let arm = FakeArm::start(FakeArmOptions::default()).await.unwrap();
    let zone = arm.add_zone(HUB, HUB_RG, ZONE);
    for (prop, value) in [("fqdn", json!("x.privatelink.vaultcore.azure.net.")), ("isAutoRegistered", json!(false))] {
        let mut body = json!({"properties": {"ttl": 10, "aRecords": [{"ipv4Address": "10.0.0.9"}]}});
        body["properties"][prop] = value;
        let (status, err) = send(&arm, Method::PUT, &format!("{zone}/A/x"), PRIVATE_DNS_API, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{prop}: {err}");
        assert!(err["error"]["message"].as_str().unwrap().contains(prop), "{err}");
    }
    let body = json!({"properties": {"ttl": 10, "aRecords": [{"ipv4Address": "10.0.0.9"}]}});
    let (status, _) = send(&arm, Method::PUT, &format!("{zone}/A/x"), PRIVATE_DNS_API, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED);
}

/// Resource Graph refuses unknown tables and columns; the product's query passes.
#[tokio::test]
async fn resource_graph_refuses_unknown_tables_and_columns() {
    let arm = FakeArm::start(FakeArmOptions::default()).await.unwrap();
    let path = "/providers/Microsoft.ResourceGraph/resources";
    for (query, code) in [
        ("PrivateEndpointResources | project id", "UnknownTable"),
        ("Resources | where typ =~ 'microsoft.network/privateendpoints' | project id", "UnknownColumn"),
        (
            "Resources | join kind=leftouter (NicResources | project nicId = tolower(id)) on nicId | project id",
            "UnknownTable",
        ),
    ] {
        let body = json!({"subscriptions": [SUB], "query": query});
        let (status, err) = send(&arm, Method::POST, path, graph::GRAPH_API, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {err}");
        assert_eq!(err["error"]["code"], "BadRequest");
        assert_eq!(err["error"]["details"][0]["code"], "InvalidQuery");
        assert_eq!(err["error"]["details"][1]["code"], code, "{query}: {err}");
    }
    let body = json!({"subscriptions": [SUB], "query": graph::PRIVATE_ENDPOINTS_QUERY});
    let (status, answer) = send(&arm, Method::POST, path, graph::GRAPH_API, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}
