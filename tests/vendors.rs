//! Vendor allowlist clients against their local fakes, and both against the fixtures.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use private_link_autopilot::effects::vendors::clickhouse::{self as ch, ClickHouse, ClickHouseConfig, EndpointIdKind};
use private_link_autopilot::effects::vendors::{Change, Vendor, VendorEndpoint, VendorErrorKind};
use private_link_autopilot::sandbox::fake_vendors::clickhouse::{ClickHouseFake, ClickHouseFakeOptions};
use private_link_autopilot::sandbox::fake_vendors::{Fault, count_writes};

const PE_ID: &str =
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-net/providers/Microsoft.Network/privateEndpoints/pe-clickhouse-westus3";
const PE_GUID: &str = "d73e9b55-7b9c-4f8d-8f0a-40e737f1ccbf";

fn endpoint() -> VendorEndpoint {
    VendorEndpoint {
        pe_id: PE_ID.into(),
        pe_name: "pe-clickhouse-westus3".into(),
        resource_guid: Some(PE_GUID.into()),
        subscription_id: "00000000-0000-0000-0000-000000000000".into(),
        location: "westus3".into(),
        alias: None,
    }
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |k: &str| map.get(k).cloned()
}

// ---------------------------------------------------------------- ClickHouse

const CH_SECRET: &str = "ch-secret-value-9f8e7d";

async fn clickhouse_fake(services: usize) -> ClickHouseFake {
    ClickHouseFake::start(ClickHouseFakeOptions {
        key_id: "key-1".into(),
        key_secret: CH_SECRET.into(),
        service_ids: (1..=services).map(|i| format!("svc-{i}")).collect(),
        // ClickHouse's shape (10 per window) on a 1 s window so tests stay fast.
        rate_limit: Some((10, Duration::from_secs(1))),
        ..Default::default()
    })
    .await
    .expect("fake starts")
}

fn clickhouse_config(fake: &ClickHouseFake, services: usize) -> ClickHouseConfig {
    ClickHouseConfig {
        enabled: true,
        base_url: fake.base_url(),
        organization_id: ClickHouseFakeOptions::default().organization_id,
        service_ids: (1..=services).map(|i| format!("svc-{i}")).collect(),
        rate_limit_window_ms: 1000,
        ..Default::default()
    }
}

fn clickhouse_client(cfg: &ClickHouseConfig, secret: &str) -> ClickHouse {
    ClickHouse::from_config(cfg, &env_of(&[("CLICKHOUSE_KEY_ID", "key-1"), ("CLICKHOUSE_KEY_SECRET", secret)]))
        .expect("client builds")
}

#[tokio::test]
async fn clickhouse_register_twice_writes_once_per_service() {
    let fake = clickhouse_fake(2).await;
    let client = clickhouse_client(&clickhouse_config(&fake, 2), CH_SECRET);
    let ep = endpoint();
    assert_eq!(client.register(&ep).await.unwrap(), Change::Applied);
    assert_eq!(count_writes(&fake.requests()), 2, "one PATCH per service: {:?}", fake.requests());
    fake.clear_requests();
    assert_eq!(client.register(&ep).await.unwrap(), Change::AlreadyInPlace);
    assert_eq!(count_writes(&fake.requests()), 0, "no duplicate add is ever sent");
    assert!(client.is_registered(&ep).await.unwrap());
    let st = fake.state();
    for ids in st.services.values() {
        assert_eq!(ids, &vec![PE_ID.to_string()]);
    }
}

#[tokio::test]
async fn clickhouse_reads_before_adding_so_a_seeded_id_is_not_re_added() {
    let fake = clickhouse_fake(1).await;
    let mut seeded = fake.state();
    // Stored in a different case: ARM ids are case-insensitive.
    seeded.services.insert("svc-1".into(), vec![PE_ID.to_ascii_lowercase()]);
    fake.set_state(seeded);
    let client = clickhouse_client(&clickhouse_config(&fake, 1), CH_SECRET);
    assert_eq!(client.register(&endpoint()).await.unwrap(), Change::AlreadyInPlace);
    assert_eq!(count_writes(&fake.requests()), 0);
}

#[tokio::test]
async fn clickhouse_deregister_removes_from_services_and_organization() {
    let fake = clickhouse_fake(2).await;
    let client = clickhouse_client(&clickhouse_config(&fake, 2), CH_SECRET);
    let ep = endpoint();
    client.register(&ep).await.unwrap();
    assert_eq!(fake.state().org_private_endpoints.len(), 1, "a service add registers with the organization");
    fake.clear_requests();
    assert_eq!(client.deregister(&ep).await.unwrap(), Change::Applied);
    let st = fake.state();
    assert!(st.services.values().all(Vec::is_empty), "{st:?}");
    assert!(st.org_private_endpoints.is_empty(), "organization entry removed: {st:?}");
    let writes: Vec<_> = fake.requests().into_iter().filter(|r| r.is_write()).collect();
    assert_eq!(writes.len(), 3, "{writes:?}");
    assert_eq!(writes[2].path, format!("/v1/organizations/{}", ClickHouseFakeOptions::default().organization_id));

    // Already gone: success, no write.
    fake.clear_requests();
    assert_eq!(client.deregister(&ep).await.unwrap(), Change::AlreadyInPlace);
    assert_eq!(count_writes(&fake.requests()), 0);
}

#[tokio::test]
async fn clickhouse_resource_guid_mode() {
    let fake = clickhouse_fake(1).await;
    let mut cfg = clickhouse_config(&fake, 1);
    cfg.endpoint_id = EndpointIdKind::ResourceGuid;
    let client = clickhouse_client(&cfg, CH_SECRET);
    client.register(&endpoint()).await.unwrap();
    assert_eq!(fake.state().services["svc-1"], vec![PE_GUID.to_string()]);

    let mut no_guid = endpoint();
    no_guid.resource_guid = None;
    let err = client.register(&no_guid).await.unwrap_err();
    assert_eq!(err.kind, VendorErrorKind::Permanent);
    assert!(err.message.contains("resourceGuid"), "{err}");

    // A client in the default mode still cleans up the legacy form.
    let cleaner = clickhouse_client(&clickhouse_config(&fake, 1), CH_SECRET);
    assert_eq!(cleaner.deregister(&endpoint()).await.unwrap(), Change::Applied);
    assert!(fake.state().services["svc-1"].is_empty());
    assert!(fake.state().org_private_endpoints.is_empty());
}

#[tokio::test]
async fn clickhouse_wrong_key_is_a_config_error_without_the_secret() {
    let fake = clickhouse_fake(1).await;
    let wrong = "wrong-secret-123456";
    let client = clickhouse_client(&clickhouse_config(&fake, 1), wrong);
    let err = client.register(&endpoint()).await.unwrap_err();
    assert_eq!(err.kind, VendorErrorKind::Config, "{err}");
    assert!(err.message.contains("401") && err.message.contains("clickhouse"), "{err}");
    for text in [err.to_string(), format!("{err:?}"), format!("{client:?}")] {
        assert!(!text.contains(wrong) && !text.contains(CH_SECRET), "secret leaked: {text}");
        assert!(!text.contains("key-1"), "key id leaked: {text}");
    }
}

#[tokio::test]
async fn clickhouse_burst_of_25_calls_never_sees_a_429() {
    // Same limit shape as ClickHouse (10 per window), short window to keep the test fast.
    let window = Duration::from_millis(400);
    let fake = ClickHouseFake::start(ClickHouseFakeOptions {
        key_id: "key-1".into(),
        key_secret: CH_SECRET.into(),
        service_ids: vec!["svc-1".into()],
        rate_limit: Some((10, window)),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut cfg = clickhouse_config(&fake, 1);
    cfg.rate_limit_window_ms = window.as_millis() as u64;
    let client = std::sync::Arc::new(clickhouse_client(&cfg, CH_SECRET));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..25 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move { c.is_registered(&endpoint()).await }));
    }
    for t in tasks {
        assert!(!t.await.unwrap().unwrap(), "no 429 (it would be an error)");
    }
    assert_eq!(fake.requests().len(), 25);
    // 25 requests at 10 per window need at least two full windows.
    assert!(started.elapsed() >= window * 2, "{:?}", started.elapsed());
}

#[tokio::test]
async fn clickhouse_fake_limit_answers_429_with_a_reset_hint() {
    let fake = ClickHouseFake::start(ClickHouseFakeOptions {
        key_id: "key-1".into(),
        key_secret: CH_SECRET.into(),
        service_ids: vec!["svc-1".into()],
        rate_limit: Some((1, Duration::from_secs(30))),
        ..Default::default()
    })
    .await
    .unwrap();
    // The client's own limit is looser than the server's here, on purpose.
    let client = clickhouse_client(&clickhouse_config(&fake, 1), CH_SECRET);
    client.is_registered(&endpoint()).await.unwrap();
    let err = client.is_registered(&endpoint()).await.unwrap_err();
    assert_eq!(err.kind, VendorErrorKind::Transient);
    let ra = err.retry_after.expect("X-RateLimit-Reset read");
    assert!(ra >= Duration::from_secs(29) && ra <= Duration::from_secs(32), "{ra:?}");
}

#[tokio::test]
async fn clickhouse_injected_429_500_and_timeout_are_transient() {
    let fake = clickhouse_fake(1).await;
    let mut cfg = clickhouse_config(&fake, 1);
    cfg.request_timeout_ms = 300;
    let client = clickhouse_client(&cfg, CH_SECRET);
    let ep = endpoint();

    fake.inject(Fault::TooManyRequests { retry_after: Some(Duration::from_secs(2)) }, 1);
    let err = client.register(&ep).await.unwrap_err();
    assert_eq!((err.kind, err.retry_after), (VendorErrorKind::Transient, Some(Duration::from_secs(2))));

    fake.inject(Fault::ServerError, 1);
    let err = client.register(&ep).await.unwrap_err();
    assert_eq!(err.kind, VendorErrorKind::Transient, "{err}");
    assert!(err.message.contains("500"), "{err}");

    fake.inject(Fault::Timeout(Duration::from_secs(2)), 1);
    let err = client.register(&ep).await.unwrap_err();
    assert_eq!(err.kind, VendorErrorKind::Transient, "{err}");
    assert!(err.message.contains("timed out"), "{err}");

    assert_eq!(client.register(&ep).await.unwrap(), Change::Applied, "works once the faults are used up");
}

#[tokio::test]
async fn clickhouse_unknown_service_is_permanent_with_the_vendor_text() {
    let fake = clickhouse_fake(1).await;
    let mut cfg = clickhouse_config(&fake, 1);
    cfg.service_ids = vec!["svc-missing".into()];
    let err = clickhouse_client(&cfg, CH_SECRET).register(&endpoint()).await.unwrap_err();
    assert_eq!(err.kind, VendorErrorKind::Permanent);
    assert!(err.message.contains("service not found") && err.message.contains("svc-missing"), "{err}");
}

#[tokio::test]
async fn clickhouse_fixtures_and_fake_replies_parse_alike() {
    let fx = support::fixture_json("vendors/clickhouse.api-examples.json");
    // The fixture's reply excerpt, wrapped in the documented envelope.
    let mut envelope = fx["envelope_success"].clone();
    envelope["result"] = fx["service_add_private_endpoint"]["response_result_excerpt"].clone();
    let svc: ch::Service = ch::parse_result(&serde_json::to_vec(&envelope).unwrap()).unwrap();
    assert_eq!(svc.private_endpoint_ids.unwrap(), vec![PE_ID.to_string()]);
    envelope["result"] = fx["org_list_private_endpoints"]["response_result_excerpt"].clone();
    let org: ch::Organization = ch::parse_result(&serde_json::to_vec(&envelope).unwrap()).unwrap();
    assert_eq!(org.private_endpoints.unwrap()[0].region.as_deref(), Some("westus3"));
    for e in fx["envelope_error_examples"].as_array().unwrap() {
        let text = ch::error_text(&serde_json::to_vec(&e["body"]).unwrap());
        assert!(text.starts_with("BAD_REQUEST: "), "{text}");
    }
    // The fake's request bodies follow the fixture: the documented add body is accepted.
    let fake = clickhouse_fake(1).await;
    let http = reqwest::Client::new();
    let org_id = ClickHouseFakeOptions::default().organization_id;
    let url = format!("{}/v1/organizations/{org_id}/services/svc-1", fake.base_url());
    let resp = http
        .patch(&url)
        .basic_auth("key-1", Some(CH_SECRET))
        .json(&fx["service_add_private_endpoint"]["body"])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let svc: ch::Service = ch::parse_result(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(svc.private_endpoint_ids.unwrap(), vec![PE_ID.to_string()]);
    // The fixture's remove body too, and the org remove body shape.
    let resp = http
        .patch(&url)
        .basic_auth("key-1", Some(CH_SECRET))
        .json(&fx["service_remove_private_endpoint"]["body"])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let org_url = format!("{}/v1/organizations/{org_id}", fake.base_url());
    let resp = http.get(&org_url).basic_auth("key-1", Some(CH_SECRET)).send().await.unwrap();
    let org: ch::Organization = ch::parse_result(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(org.private_endpoints.unwrap().len(), 1);
    let resp = http
        .patch(&org_url)
        .basic_auth("key-1", Some(CH_SECRET))
        .json(&fx["org_remove_private_endpoint"]["body"])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Errors from the fake carry the same envelope as the fixture's.
    let resp = http.get(&org_url).basic_auth("key-1", Some("nope")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    let fixture_keys: Vec<&String> = fx["envelope_error_examples"][0]["body"].as_object().unwrap().keys().collect();
    let fake_keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(fake_keys.len(), fixture_keys.len());
    assert!(fixture_keys.iter().all(|k| body.get(k.as_str()).is_some()), "{body}");
}
