//! The fake ARM answers like the official examples in `../shared/fixtures/arm`: the
//! fixture's own request is replayed against the fake and the answer compared with the
//! fixture's response (status, headers, JSON shape; values differ where they are ids).

mod support;

use std::collections::BTreeSet;

use autopilot_sandbox::fake_arm::{EndpointSpec, FakeArm, FakeArmOptions, SANDBOX_TOKEN};
use private_link_autopilot::model::endpoint::PrivateEndpoint;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::fixture_json;

/// Every key path (objects only; array items merged) of a JSON value.
fn shape(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = format!("{prefix}/{k}");
                out.insert(p.clone());
                shape(v, &p, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| shape(v, &format!("{prefix}[]"), out)),
        _ => {}
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    shape(v, "", &mut out);
    out
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        // The fake serves each type only at its published versions (Private DNS 2024-06-01,
        // Network 2025-07-01).
        let api = if path.to_ascii_lowercase().contains("/privatednszones") { "2024-06-01" } else { "2025-07-01" };
        let mut req =
            self.http.request(method, format!("{}{path}?api-version={api}", self.base)).bearer_auth(SANDBOX_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("fake answers");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

async fn start() -> (FakeArm, Client) {
    let arm = FakeArm::start(FakeArmOptions::default()).await.unwrap();
    let base = arm.base_url();
    (arm, Client { http: reqwest::Client::new(), base })
}

#[tokio::test]
async fn record_set_put_get_list_delete_match_the_examples() {
    let (arm, c) = start().await;
    let put = fixture_json("arm/RecordSetAPut.json");
    let p = &put["parameters"];
    let zone = arm.add_zone(
        p["subscriptionId"].as_str().unwrap(),
        p["resourceGroupName"].as_str().unwrap(),
        p["privateZoneName"].as_str().unwrap(),
    );
    let path = format!("{zone}/A/{}", p["relativeRecordSetName"].as_str().unwrap());

    let (status, headers, body) = c.send(reqwest::Method::PUT, &path, Some(p["parameters"].clone())).await;
    assert_eq!(status, StatusCode::CREATED);
    let expected = &put["responses"]["201"]["body"];
    assert_eq!(keys(&body), keys(expected), "PUT 201 body shape");
    assert_eq!(body["name"], expected["name"], "names come back lower-cased");
    assert_eq!(body["properties"]["fqdn"], expected["properties"]["fqdn"], "fqdn with its trailing dot");
    assert_eq!(body["type"], expected["type"]);
    assert!(headers.contains_key("etag"));

    let (status, _, body) = c.send(reqwest::Method::PUT, &path, Some(p["parameters"].clone())).await;
    assert_eq!(status, StatusCode::OK, "update answers 200");
    assert_eq!(keys(&body), keys(&put["responses"]["200"]["body"]));

    let get = fixture_json("arm/RecordSetAGet.json");
    let (status, _, body) = c.send(reqwest::Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys(&body), keys(&get["responses"]["200"]["body"]));

    let list = fixture_json("arm/RecordSetAList.json");
    let (_, _, body) = c.send(reqwest::Method::GET, &format!("{zone}/A"), None).await;
    let item_shape: BTreeSet<String> = keys(&list["responses"]["200"]["body"]["value"][0]);
    assert!(keys(&body["value"][0]).is_superset(&item_shape), "list items shaped like the example");

    // Conditional requests: create-only on an existing set and a stale ETag are 412.
    let mut pre = c.http.put(format!("{}{path}?api-version=2024-06-01", c.base)).bearer_auth(SANDBOX_TOKEN);
    pre = pre.header("If-None-Match", "*").json(&p["parameters"]);
    let resp = pre.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "PreconditionFailed");

    let del = fixture_json("arm/RecordSetADelete.json");
    assert!(del["responses"].get("200").is_some() && del["responses"].get("204").is_some());
    assert_eq!(c.send(reqwest::Method::DELETE, &path, None).await.0, StatusCode::OK);
    assert_eq!(c.send(reqwest::Method::DELETE, &path, None).await.0, StatusCode::NO_CONTENT);
    let (status, _, body) = c.send(reqwest::Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "ResourceNotFound");
}

#[tokio::test]
async fn zone_put_is_a_long_running_operation_like_the_example() {
    let (_arm, c) = start().await;
    let fx = fixture_json("arm/PrivateZonePut.json");
    let p = &fx["parameters"];
    let path = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/privateDnsZones/{}",
        p["subscriptionId"].as_str().unwrap(),
        p["resourceGroupName"].as_str().unwrap(),
        p["privateZoneName"].as_str().unwrap()
    );
    let (status, headers, _) = c.send(reqwest::Method::PUT, &path, Some(p["parameters"].clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let expected = fx["responses"]["202"]["headers"].as_object().unwrap();
    for (name, value) in expected {
        let got = headers.get(name.as_str()).unwrap_or_else(|| panic!("header {name}")).to_str().unwrap();
        if name == "Retry-After" {
            assert_eq!(got, value.as_str().unwrap());
        } else {
            let kind = if name == "Location" { "privateDnsOperationResults" } else { "privateDnsOperationStatuses" };
            assert!(got.contains(kind) && got.contains("api-version=2024-06-01"), "{name}: {got}");
        }
    }
    let status_url = headers["azure-asyncoperation"].to_str().unwrap().to_owned();
    let poll: Value = c.http.get(&status_url).bearer_auth(SANDBOX_TOKEN).send().await.unwrap().json().await.unwrap();
    assert!(["InProgress", "Succeeded"].contains(&poll["status"].as_str().unwrap()));
    let (_, _, zone) = c.send(reqwest::Method::GET, &path, None).await;
    let fixture_zone = &fx["responses"]["200"]["body"];
    assert!(keys(&zone).is_superset(&keys(fixture_zone).into_iter().filter(|k| !k.starts_with("/tags/")).collect()));
    assert_eq!(zone["location"], "global", "sent \"Global\", got back \"global\"");
}

#[tokio::test]
async fn private_endpoint_and_nic_have_the_real_shape() {
    let (arm, c) = start().await;
    let id = arm.put_endpoint(&EndpointSpec::alias(
        "sub1",
        "rg1",
        "pe1",
        "eastus2",
        "production-eastus2-0-0.00000000-0000-4000-8000-00000000c0de.eastus2.azure.privatelinkservice",
    ));
    let (status, _, pe) = c.send(reqwest::Method::GET, &id, None).await;
    assert_eq!(status, StatusCode::OK);
    for fixture in ["arm/PrivateEndpointGet.json", "arm/PrivateEndpointGetForManualApproval.json"] {
        let fx = &fixture_json(fixture)["responses"]["200"]["body"];
        let want: BTreeSet<String> = fx["properties"].as_object().unwrap().keys().cloned().collect();
        let got: BTreeSet<String> = pe["properties"].as_object().unwrap().keys().cloned().collect();
        assert!(got.is_superset(&want), "{fixture}: missing {:?}", want.difference(&got).collect::<Vec<_>>());
        // The same parser reads both.
        PrivateEndpoint::from_arm_json(fx).expect("fixture parses");
    }
    assert!(pe["properties"]["resourceGuid"].is_string(), "resourceGuid as in real answers");
    let conn = &pe["properties"]["manualPrivateLinkServiceConnections"][0]["properties"];
    assert!(conn["privateLinkServiceId"].as_str().unwrap().ends_with(".azure.privatelinkservice"), "alias verbatim");
    assert_eq!(conn["groupIds"], json!([]));
    assert_eq!(conn["privateLinkServiceConnectionState"]["status"], "Pending");

    let nic_id = pe["properties"]["networkInterfaces"][0]["id"].as_str().unwrap();
    let (_, _, nic) = c.send(reqwest::Method::GET, nic_id, None).await;
    let fx_nic = &fixture_json("arm/NetworkInterfaceGet.json")["responses"]["200"]["body"];
    let ip_keys = |v: &Value| -> BTreeSet<String> {
        v["properties"]["ipConfigurations"][0]["properties"].as_object().unwrap().keys().cloned().collect()
    };
    for k in [
        "privateIPAddress",
        "privateIPAllocationMethod",
        "subnet",
        "primary",
        "privateIPAddressVersion",
        "provisioningState",
    ] {
        assert!(ip_keys(fx_nic).contains(k) && ip_keys(&nic).contains(k), "{k}");
    }
    assert_eq!(nic["properties"]["privateEndpoint"]["id"], Value::String(id.clone()));
    let mut parsed = PrivateEndpoint::from_arm_json(&pe).unwrap();
    parsed.add_nic(&nic);
    assert_eq!(parsed.addresses().len(), 1);
    assert!(parsed.resource_guid.is_some());
}

#[tokio::test]
async fn auth_api_version_and_throttling_answer_like_arm() {
    let arm = FakeArm::start(FakeArmOptions { reads: (2, 0.5), ..FakeArmOptions::default() }).await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/subscriptions/s/providers/Microsoft.Network/privateEndpoints", arm.base_url());
    let r = http.get(format!("{url}?api-version=2025-07-01")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http.get(&url).bearer_auth(SANDBOX_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "MissingApiVersionParameter");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = http.get(format!("{url}?api-version=2025-07-01")).bearer_auth(SANDBOX_TOKEN).send().await.unwrap();
        statuses.push((r.status().as_u16(), r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned())));
        if r.status() == StatusCode::OK {
            assert!(r.headers().contains_key("x-ms-ratelimit-remaining-subscription-reads"));
        }
    }
    assert_eq!(statuses[0].0, 200);
    assert_eq!(statuses[2].0, 429);
    assert_eq!(statuses[2].1.as_deref(), Some("2"), "Retry-After in seconds until a token refills");
}
