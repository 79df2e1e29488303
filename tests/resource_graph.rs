//! Listing private endpoints with Azure Resource Graph, end to end: the real
//! [`ArmClient`] and `arm::graph` against the fake ARM's Resource Graph (paging with
//! `$skipToken`, subscription scope and chunking, validation, the per-principal quota,
//! the index lagging ARM), and the parser against the official example payloads.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autopilot_sandbox::fake_arm::{EndpointSpec, FakeArm, FakeArmOptions, SANDBOX_TOKEN};
use private_link_autopilot::arm::credential::StaticToken;
use private_link_autopilot::arm::endpoints::{EndpointState, read_endpoint};
use private_link_autopilot::arm::graph::{GRAPH_API, GRAPH_PATH, list_private_endpoints, parse_page};
use private_link_autopilot::arm::{ArmClient, ArmConfig, Secret};
use private_link_autopilot::model::ResourceId;
use serde_json::{Value, json};
use support::fixture_json;

const SUB_A: &str = "0b1f6471-1bf0-4dda-aec3-111111111111";
const SUB_B: &str = "0b1f6471-1bf0-4dda-aec3-222222222222";
const SUB_C: &str = "0b1f6471-1bf0-4dda-aec3-333333333333";

fn client(arm: &FakeArm) -> ArmClient {
    let cfg = ArmConfig { base_url: arm.base_url(), ..ArmConfig::default() };
    ArmClient::new(cfg, Arc::new(StaticToken(Secret::new(SANDBOX_TOKEN)))).expect("client")
}

/// Creates `n` endpoints in `sub` and returns their ids.
fn seed(arm: &FakeArm, sub: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let spec = EndpointSpec::alias(
                sub,
                &format!("RG-{}", i % 7),
                &format!("pe-{i:05}"),
                "eastus2",
                "vendor.a1b2c3.eastus2.azure.privatelinkservice",
            );
            arm.put_endpoint(&spec)
        })
        .collect()
}

fn graph_posts(arm: &FakeArm) -> Vec<u16> {
    arm.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.eq_ignore_ascii_case(GRAPH_PATH))
        .map(|r| r.status)
        .collect()
}

/// The first private IP of the endpoint's NIC, as ARM has it.
fn arm_ip(arm: &FakeArm, pe_id: &str) -> String {
    let pe = arm.resource(pe_id).expect("pe");
    let nic_id = pe.pointer("/properties/networkInterfaces/0/id").and_then(Value::as_str).expect("nic id");
    let nic = arm.resource(nic_id).expect("nic");
    nic.pointer("/properties/ipConfigurations/0/properties/privateIPAddress")
        .and_then(Value::as_str)
        .expect("ip")
        .into()
}

/// A raw Resource Graph POST (what the client would send), for the fake's own contract.
async fn raw_post(arm: &FakeArm, token: Option<&str>, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let url = format!("{}{GRAPH_PATH}?api-version={GRAPH_API}", arm.base_url());
    let mut req = reqwest::Client::new().post(url).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("fake answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

fn is_hms(v: &str) -> bool {
    let parts: Vec<&str> = v.split(':').collect();
    parts.len() == 3 && parts.iter().all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
}

fn subs(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn lists_2500_endpoints_across_3_subscriptions_once_in_3_pages() {
    let arm = FakeArm::start(FakeArmOptions::default()).await.expect("fake");
    let mut created = seed(&arm, SUB_A, 1000);
    created.extend(seed(&arm, SUB_B, 900));
    created.extend(seed(&arm, SUB_C, 600));
    let arm_client = client(&arm);
    arm.clear_log();

    let listed = list_private_endpoints(&arm_client, &subs(&[SUB_A, SUB_B, SUB_C])).await.expect("listed");

    assert_eq!(listed.len(), 2500);
    let ids: HashSet<&str> = listed.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 2500, "every endpoint exactly once");
    // Ids come back as stored (not lower-cased).
    assert_eq!(ids, created.iter().map(String::as_str).collect::<HashSet<_>>());
    assert_eq!(graph_posts(&arm), vec![200, 200, 200], "1000 + 1000 + 500 rows");
    // The join brought each NIC's address.
    for e in listed.iter().step_by(97) {
        assert_eq!(e.nic_ips, vec![arm_ip(&arm, &e.id)], "{}", e.id);
    }
}

#[tokio::test]
async fn lists_only_the_requested_subscriptions() {
    let arm = FakeArm::start(FakeArmOptions::default()).await.expect("fake");
    seed(&arm, SUB_A, 3);
    let b: BTreeSet<String> = seed(&arm, SUB_B, 4).into_iter().collect();
    seed(&arm, SUB_C, 5);
    let arm_client = client(&arm);

    let only_b = list_private_endpoints(&arm_client, &subs(&[SUB_B])).await.expect("listed");
    assert_eq!(only_b.iter().map(|e| e.id.clone()).collect::<BTreeSet<_>>(), b);

    // Subscription ids are case-insensitive, and repeating one changes nothing.
    let upper = SUB_B.to_ascii_uppercase();
    let again = list_private_endpoints(&arm_client, &subs(&[&upper, SUB_B])).await.expect("listed");
    assert_eq!(again.len(), 4);

    let two = list_private_endpoints(&arm_client, &subs(&[SUB_A, SUB_C])).await.expect("listed");
    assert_eq!(two.len(), 8);
    assert!(two.iter().all(|e| !e.id.contains(SUB_B)));

    let unknown = list_private_endpoints(&arm_client, &subs(&["00000000-0000-0000-0000-00000000dead"])).await;
    assert_eq!(unknown.expect("listed").len(), 0);

    // No scope, no query: an empty scope must never turn into a tenant-wide one.
    arm.clear_log();
    assert!(list_private_endpoints(&arm_client, &[]).await.expect("empty").is_empty());
    assert!(graph_posts(&arm).is_empty());
}

#[tokio::test]
async fn more_than_1000_subscriptions_are_queried_in_chunks() {
    let arm = FakeArm::start(FakeArmOptions::default()).await.expect("fake");
    let a = seed(&arm, SUB_A, 2);
    let c = seed(&arm, SUB_C, 3);
    let mut scope: Vec<String> = (0..1500).map(|i| format!("00000000-0000-0000-0000-{i:012}")).collect();
    scope[10] = SUB_A.into();
    scope[1200] = SUB_C.into();
    let arm_client = client(&arm);
    arm.clear_log();

    let listed = list_private_endpoints(&arm_client, &scope).await.expect("listed");

    // The fake answers 400 to more than 1000 subscriptions, so two 200s prove the split.
    assert_eq!(graph_posts(&arm), vec![200, 200]);
    let got: BTreeSet<String> = listed.into_iter().map(|e| e.id).collect();
    assert_eq!(got, a.into_iter().chain(c).collect::<BTreeSet<_>>());
}

#[tokio::test]
async fn bad_requests_get_arm_shaped_400s() {
    let arm = FakeArm::start(FakeArmOptions::default()).await.expect("fake");
    seed(&arm, SUB_A, 2);
    let query = "Resources | project id";
    for top in [json!(0), json!(1001), json!("10"), json!(-1), json!(2.5)] {
        let body = json!({"subscriptions": [SUB_A], "query": query, "options": {"$top": top}});
        let (status, headers, err) = raw_post(&arm, Some(SANDBOX_TOKEN), &body).await;
        assert_eq!(status, 400, "$top {top}");
        assert!(err.pointer("/error/code").and_then(Value::as_str).is_some_and(|c| !c.is_empty()), "{err}");
        assert!(err.pointer("/error/message").and_then(Value::as_str).is_some_and(|m| m.contains("$top")), "{err}");
        // Even a refused query reports the quota.
        assert!(is_hms(header(&headers, "x-ms-user-quota-resets-after")));
    }
    for body in [
        json!({"subscriptions": [], "query": query}),
        json!({"subscriptions": [SUB_A]}),
        json!({"subscriptions": [SUB_A], "query": query, "options": {"$skipToken": "not a token"}}),
        json!({"subscriptions": [SUB_A, 7], "query": query}),
    ] {
        let (status, _, err) = raw_post(&arm, Some(SANDBOX_TOKEN), &body).await;
        assert_eq!(status, 400, "{body}");
        assert!(err.pointer("/error/code").is_some(), "{err}");
    }
    let ok = json!({"subscriptions": [SUB_A], "query": query, "options": {"$top": 1000}});
    assert_eq!(raw_post(&arm, Some(SANDBOX_TOKEN), &ok).await.0, 200);
    assert_eq!(raw_post(&arm, Some("someone-else"), &ok).await.0, 401);
    assert_eq!(raw_post(&arm, None, &ok).await.0, 401);

    // Through the client a 400 is a final error, not retried.
    let arm_client = client(&arm);
    arm.clear_log();
    let req = private_link_autopilot::arm::ArmRequest::new(
        private_link_autopilot::arm::client::Method::Post,
        GRAPH_PATH,
        GRAPH_API,
    )
    .body(json!({"subscriptions": [SUB_A], "query": query, "options": {"$top": 0}}));
    let err = arm_client.send(req).await.expect_err("400");
    assert_eq!(err.status(), Some(400));
    assert!(!err.is_transient());
    assert_eq!(graph_posts(&arm), vec![400]);
}

#[tokio::test]
async fn official_examples_parse_and_the_fake_answers_in_their_shape() {
    let first = fixture_json("arm/ResourcesFirstPageQuery.json");
    let next = fixture_json("arm/ResourcesNextPageQuery.json");
    for (fixture, want_ids) in
        [(&first, ["yetanothertest_OsDisk", "TestAA", "TestRB"]), (&next, ["second_OsDisk", "AATest", "RBTest"])]
    {
        let body = &fixture["responses"]["200"]["body"];
        let page = parse_page(body).expect("the official example parses");
        assert_eq!(page.rows.len(), 3);
        for (row, want) in page.rows.iter().zip(want_ids) {
            assert!(row.id.contains(want), "{} vs {want}", row.id);
            assert!(row.id.starts_with("/subscriptions/cfbbd179-59d2-4052-aa06-9270a38aa9d6/resourceGroups/"));
            assert!(row.nic_ips.is_empty(), "no NIC column in the example");
        }
        assert_eq!(page.skip_token.as_deref(), body["$skipToken"].as_str());
        assert_eq!((page.total_records, page.count, page.result_truncated), (Some(386), Some(3), false));
    }

    // The fixtures' own requests, replayed on the fake with our subscription: same top-level keys.
    let arm = FakeArm::start(FakeArmOptions::default()).await.expect("fake");
    seed(&arm, SUB_A, 7);
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<BTreeSet<_>>()).unwrap_or_default();
    let mut request = first["parameters"]["query"].clone();
    request["subscriptions"] = json!([SUB_A]);
    let (status, _, answer) = raw_post(&arm, Some(SANDBOX_TOKEN), &request).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(keys(&answer), keys(&first["responses"]["200"]["body"]));
    assert_eq!(answer["resultTruncated"], json!("false"), "a string, like the service");
    assert_eq!(answer["count"], json!(3));
    assert_eq!(answer["totalRecords"], json!(7));

    let mut request = next["parameters"]["query"].clone();
    request["subscriptions"] = json!([SUB_A]);
    request["options"]["$skipToken"] = answer["$skipToken"].clone();
    let (status, _, answer2) = raw_post(&arm, Some(SANDBOX_TOKEN), &request).await;
    assert_eq!(status, 200, "{answer2}");
    assert_eq!(keys(&answer2), keys(&next["responses"]["200"]["body"]));
    // The token remembered the page size ($top 3) although the next request omits it.
    assert_eq!(answer2["count"], json!(3));
    let first_ids = parse_page(&answer).expect("fake page parses").rows;
    let next_ids = parse_page(&answer2).expect("fake page parses").rows;
    assert!(first_ids.last().map(|r| r.id.to_ascii_lowercase()) < next_ids.first().map(|r| r.id.to_ascii_lowercase()));
}

#[tokio::test]
async fn quota_headers_and_429_from_the_fake() {
    let arm =
        FakeArm::start(FakeArmOptions { resource_graph_quota: (2, Duration::from_secs(60)), ..Default::default() })
            .await
            .expect("fake");
    let body = json!({"subscriptions": [SUB_A], "query": "Resources | project id"});
    for remaining in ["1", "0"] {
        let (status, headers, _) = raw_post(&arm, Some(SANDBOX_TOKEN), &body).await;
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "x-ms-user-quota-remaining"), remaining);
        let reset = header(&headers, "x-ms-user-quota-resets-after");
        assert!(is_hms(reset) && ("00:00:59"..="00:01:00").contains(&reset), "{reset}");
    }
    let (status, headers, err) = raw_post(&arm, Some(SANDBOX_TOKEN), &body).await;
    assert_eq!(status, 429);
    assert_eq!(err.pointer("/error/code").and_then(Value::as_str), Some("RateLimiting"));
    let retry_after: u64 = header(&headers, "retry-after").parse().expect("Retry-After in seconds");
    assert!((59..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(header(&headers, "x-ms-user-quota-remaining"), "0");
    assert!(is_hms(header(&headers, "x-ms-user-quota-resets-after")));
}

/// The client's Resource Graph bucket lowers itself from `x-ms-user-quota-remaining` and,
/// at zero, waits out `x-ms-user-quota-resets-after`: a lone client never sees a 429.
#[tokio::test]
async fn a_client_stays_inside_the_quota_without_429s() {
    let arm =
        FakeArm::start(FakeArmOptions { resource_graph_quota: (3, Duration::from_secs(5)), ..Default::default() })
            .await
            .expect("fake");
    seed(&arm, SUB_A, 2);
    let arm_client = client(&arm);
    let started = Instant::now();
    for _ in 0..6 {
        let listed = list_private_endpoints(&arm_client, &subs(&[SUB_A])).await.expect("listed");
        assert_eq!(listed.len(), 2);
    }
    let elapsed = started.elapsed();
    assert_eq!(graph_posts(&arm), vec![200; 6], "no 429: the client waited for the reset");
    // Six queries at 3 per 5 s need a second window.
    assert!(elapsed >= Duration::from_secs(4), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
}

/// Another process of the same principal spends the quota behind our back: the 429's
/// `Retry-After` is honoured and the query then succeeds.
#[tokio::test]
async fn a_429_from_a_shared_quota_is_retried_after_retry_after() {
    let arm =
        FakeArm::start(FakeArmOptions { resource_graph_quota: (3, Duration::from_secs(5)), ..Default::default() })
            .await
            .expect("fake");
    seed(&arm, SUB_A, 2);
    let (ours, theirs) = (client(&arm), client(&arm));
    for _ in 0..3 {
        list_private_endpoints(&theirs, &subs(&[SUB_A])).await.expect("listed");
    }
    let started = Instant::now();
    let listed = list_private_endpoints(&ours, &subs(&[SUB_A])).await.expect("retried after Retry-After");
    assert_eq!(listed.len(), 2);
    assert_eq!(graph_posts(&arm), vec![200, 200, 200, 429, 200]);
    assert!(started.elapsed() >= Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_just_deleted_endpoint_is_still_listed_while_graph_lags() {
    let arm = FakeArm::start(FakeArmOptions::default()).await.expect("fake");
    let ids = seed(&arm, SUB_A, 3);
    let arm_client = client(&arm);
    let scope = subs(&[SUB_A]);

    // Without lag, a deletion shows at once.
    assert!(arm.delete_endpoint(&ids[0]));
    assert_eq!(list_private_endpoints(&arm_client, &scope).await.expect("listed").len(), 2);

    arm.set_graph_lag(Duration::from_millis(800));
    let ip = arm_ip(&arm, &ids[1]);
    assert!(arm.delete_endpoint(&ids[1]));
    let listed = list_private_endpoints(&arm_client, &scope).await.expect("listed");
    let ghost = listed.iter().find(|e| e.id == ids[1]).expect("still listed: the index lags ARM");
    assert_eq!(ghost.nic_ips, vec![ip], "with its NIC's address, as the index last saw it");
    assert_eq!(listed.len(), 2);
    // Which is why the sweep re-reads ARM before acting on a delete.
    let id = ResourceId::parse(&ids[1]).expect("id");
    assert!(matches!(read_endpoint(&arm_client, &id).await.expect("read"), EndpointState::Absent));

    tokio::time::sleep(Duration::from_millis(900)).await;
    let listed = list_private_endpoints(&arm_client, &scope).await.expect("listed");
    assert_eq!(listed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), vec![ids[2].as_str()]);
}
