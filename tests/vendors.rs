//! Vendor allowlist clients against their local fakes, and both against the fixtures.
//! What every client must do alike (idempotence, races, transient and rejected-key
//! errors) is the conformance suite in `tests/vendor_conformance.rs`; this file keeps
//! each vendor's own behaviour.

mod support;

use std::time::Duration;

use autopilot_sandbox::fake_vendors::clickhouse::{ClickHouseFake, ClickHouseFakeOptions};
use autopilot_sandbox::fake_vendors::count_writes;
use private_link_autopilot::effects::vendors::clickhouse::{self as ch, ClickHouse, ClickHouseConfig, EndpointIdKind};
use private_link_autopilot::effects::vendors::{Change, Vendor, VendorEndpoint, VendorErrorKind};
use support::env_of;

const PE_ID: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-net/providers/Microsoft.Network/privateEndpoints/pe-clickhouse-westus3";
const PE_GUID: &str = "d73e9b55-7b9c-4f8d-8f0a-40e737f1ccbf";

fn endpoint() -> VendorEndpoint {
    VendorEndpoint {
        pe_id: PE_ID.into(),
        pe_name: "pe-clickhouse-westus3".into(),
        resource_guid: Some(PE_GUID.into()),
        subscription_id: "00000000-0000-0000-0000-000000000000".into(),
        location: "westus3".into(),
        alias: None,
        targets: vec![],
    }
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
async fn clickhouse_withdraw_leaves_other_services_and_the_organization() {
    let fake = clickhouse_fake(2).await;
    let client = clickhouse_client(&clickhouse_config(&fake, 2), CH_SECRET);
    let ep = endpoint();
    client.register(&ep).await.unwrap();
    fake.clear_requests();
    assert_eq!(client.withdraw(&ep, &["svc-1".into()]).await.unwrap(), Change::Applied);
    let st = fake.state();
    assert!(st.services["svc-1"].is_empty(), "{st:?}");
    assert_eq!(st.services["svc-2"], vec![PE_ID.to_string()], "the other service keeps it");
    assert_eq!(st.org_private_endpoints.len(), 1, "the organization entry belongs to the endpoint: kept");
    assert_eq!(count_writes(&fake.requests()), 1);
    fake.clear_requests();
    assert_eq!(client.withdraw(&ep, &["svc-1".into()]).await.unwrap(), Change::AlreadyInPlace);
    assert_eq!(count_writes(&fake.requests()), 0, "already withdrawn: no write");
}

#[tokio::test]
async fn clickhouse_withdraw_from_a_service_that_is_gone_is_done() {
    let fake = clickhouse_fake(1).await;
    let client = clickhouse_client(&clickhouse_config(&fake, 1), CH_SECRET);
    let ep = endpoint();
    client.register(&ep).await.unwrap();
    assert_eq!(client.withdraw(&ep, &["svc-retired".into()]).await.unwrap(), Change::AlreadyInPlace);
    assert_eq!(fake.state().services["svc-1"], vec![PE_ID.to_string()], "the live service keeps it");
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
    // The client says the operation and the cause; the caller adds the vendor's name.
    assert!(err.message.contains("401") && err.message.contains("GET service"), "{err}");
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

// ---------------------------------------------------------------- Elastic

use autopilot_sandbox::fake_vendors::elastic::{ElasticFake, ElasticFakeOptions, Hide};
use private_link_autopilot::effects::vendors::elastic::{self as es, Elastic, ElasticConfig};

const ES_KEY: &str = "es-api-key-5c4b3a2910";
const DEPLOYMENT: &str = "a8c854b1ff854d46a4e0ad5cb82ab9a9";

async fn elastic_fake() -> ElasticFake {
    ElasticFake::start(ElasticFakeOptions {
        api_key: ES_KEY.into(),
        deployment_ids: vec![DEPLOYMENT.into(), "d2".into()],
        ..Default::default()
    })
    .await
    .expect("fake starts")
}

fn elastic_config(fake: &ElasticFake) -> ElasticConfig {
    ElasticConfig {
        enabled: true,
        base_url: fake.base_url(),
        region: "azure-eastus2".into(),
        deployment_ids: vec![DEPLOYMENT.into(), "d2".into()],
        ..Default::default()
    }
}

fn elastic_client(cfg: &ElasticConfig, key: &str) -> Elastic {
    Elastic::from_config(cfg, &env_of(&[("ELASTIC_API_KEY", key)])).expect("client builds")
}

#[tokio::test]
async fn elastic_create_associate_then_repeat_is_a_no_op() {
    let fake = elastic_fake().await;
    let client = elastic_client(&elastic_config(&fake), ES_KEY);
    let ep = endpoint();
    assert_eq!(client.register(&ep).await.unwrap(), Change::Applied);
    let st = fake.state();
    assert_eq!(st.rulesets.len(), 1);
    let rs = st.rulesets.values().next().unwrap();
    assert_eq!(rs.ruleset_type, "azure_private_endpoint");
    assert_eq!(rs.region, "azure-eastus2");
    assert_eq!(rs.rules, vec![(ep.pe_name.clone(), PE_GUID.to_string())]);
    assert_eq!(rs.deployments, vec![DEPLOYMENT.to_string(), "d2".to_string()]);
    assert_eq!(rs.name, es::ruleset_name(&ep.pe_name, PE_GUID));
    assert!(!rs.include_by_default);
    assert_eq!(count_writes(&fake.requests()), 3, "create + two associations");

    fake.clear_requests();
    assert_eq!(client.register(&ep).await.unwrap(), Change::AlreadyInPlace);
    assert_eq!(count_writes(&fake.requests()), 0);
    assert!(client.is_registered(&ep).await.unwrap());
}

#[tokio::test]
async fn elastic_missing_association_is_repaired_without_a_second_ruleset() {
    let fake = elastic_fake().await;
    let mut cfg = elastic_config(&fake);
    cfg.deployment_ids = vec![DEPLOYMENT.into()];
    elastic_client(&cfg, ES_KEY).register(&endpoint()).await.unwrap();
    let both = elastic_client(&elastic_config(&fake), ES_KEY);
    assert!(!both.is_registered(&endpoint()).await.unwrap());
    fake.clear_requests();
    assert_eq!(both.register(&endpoint()).await.unwrap(), Change::Applied);
    assert_eq!(count_writes(&fake.requests()), 1, "{:?}", fake.requests());
    assert_eq!(fake.state().rulesets.len(), 1);
}

#[tokio::test]
async fn elastic_delete_disassociates_then_deletes_and_gone_is_success() {
    let fake = elastic_fake().await;
    let client = elastic_client(&elastic_config(&fake), ES_KEY);
    let ep = endpoint();
    client.register(&ep).await.unwrap();
    let id = fake.state().rulesets.keys().next().unwrap().clone();
    fake.clear_requests();
    assert_eq!(client.deregister(&ep).await.unwrap(), Change::Applied);
    assert!(fake.state().rulesets.is_empty());
    let writes: Vec<_> = fake.requests().into_iter().filter(|r| r.is_write()).collect();
    let paths: Vec<&str> = writes.iter().map(|r| r.path.as_str()).collect();
    let base = format!("/api/v1/deployments/traffic-filter/rulesets/{id}");
    assert_eq!(
        paths,
        vec![
            format!("{base}/associations/deployment/{DEPLOYMENT}").as_str(),
            format!("{base}/associations/deployment/d2").as_str(),
            format!("{base}?ignore_associations=false").as_str(),
        ]
    );
    assert!(writes.iter().all(|r| r.method == "DELETE"));

    fake.clear_requests();
    assert_eq!(client.deregister(&ep).await.unwrap(), Change::AlreadyInPlace);
    assert_eq!(count_writes(&fake.requests()), 0);
}

#[tokio::test]
async fn elastic_withdraw_disassociates_only_the_dropped_deployment() {
    let fake = elastic_fake().await;
    let client = elastic_client(&elastic_config(&fake), ES_KEY);
    let ep = endpoint();
    client.register(&ep).await.unwrap();
    let id = fake.state().rulesets.keys().next().unwrap().clone();
    fake.clear_requests();
    assert_eq!(client.withdraw(&ep, &["d2".into()]).await.unwrap(), Change::Applied);
    let writes: Vec<_> = fake.requests().into_iter().filter(|r| r.is_write()).collect();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].path, format!("/api/v1/deployments/traffic-filter/rulesets/{id}/associations/deployment/d2"));
    let st = fake.state();
    assert_eq!(st.rulesets[&id].deployments, vec![DEPLOYMENT.to_string()], "the ruleset stays for the other");
    fake.clear_requests();
    assert_eq!(client.withdraw(&ep, &["d2".into()]).await.unwrap(), Change::AlreadyInPlace);
    assert_eq!(count_writes(&fake.requests()), 0);
}

#[tokio::test]
async fn elastic_withdraw_matches_deployment_ids_whatever_their_case() {
    let fake = elastic_fake().await;
    let client = elastic_client(&elastic_config(&fake), ES_KEY);
    let ep = endpoint();
    client.register(&ep).await.unwrap();
    assert_eq!(client.withdraw(&ep, &["D2".into()]).await.unwrap(), Change::Applied);
    let st = fake.state();
    assert_eq!(st.rulesets.values().next().unwrap().deployments, vec![DEPLOYMENT.to_string()]);
}

#[tokio::test]
async fn elastic_404_on_delete_means_already_gone() {
    // The ruleset vanishes between our list and our delete: 404s are success.
    let fake = elastic_fake().await;
    let client = elastic_client(&elastic_config(&fake), ES_KEY);
    client.register(&endpoint()).await.unwrap();
    let id = fake.state().rulesets.keys().next().unwrap().clone();
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/deployments/traffic-filter/rulesets/{id}?ignore_associations=true", fake.base_url());
    let resp = http.delete(&url).header("Authorization", format!("ApiKey {ES_KEY}")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http.delete(&url).header("Authorization", format!("ApiKey {ES_KEY}")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let errors = es::parse_errors(&resp.bytes().await.unwrap());
    assert_eq!(errors[0].code, "traffic_filter.not_found");
    assert_eq!(client.deregister(&endpoint()).await.unwrap(), Change::AlreadyInPlace);
}

#[tokio::test]
async fn elastic_connection_not_found_is_transient_then_succeeds() {
    let fake = elastic_fake().await;
    let mut cfg = elastic_config(&fake);
    cfg.connection_not_found_retry_secs = 600;
    let client = elastic_client(&cfg, ES_KEY);
    fake.hide_connections(Hide::Requests(2));
    for _ in 0..2 {
        let err = client.register(&endpoint()).await.unwrap_err();
        assert_eq!(err.kind, VendorErrorKind::Transient, "{err}");
        assert!(err.message.contains(es::CONNECTION_NOT_FOUND), "{err}");
        assert!(err.retry_after.is_some());
        assert_eq!(err.give_up_after, Some(Duration::from_secs(600)));
    }
    assert!(fake.state().rulesets.is_empty());
    assert_eq!(client.register(&endpoint()).await.unwrap(), Change::Applied);
    assert_eq!(fake.state().rulesets.len(), 1);

    // Time-bounded hiding works the same way (after a fresh rate-limit window, so the
    // client's own pacing cannot outlast the hiding).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let other = VendorEndpoint { resource_guid: Some("11111111-2222-3333-4444-555555555555".into()), ..endpoint() };
    fake.hide_connections(Hide::For(Duration::from_millis(300)));
    assert!(client.register(&other).await.unwrap_err().is_transient());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(client.register(&other).await.unwrap(), Change::Applied);
}

#[tokio::test]
async fn elastic_region_defaults_to_the_alias_region() {
    let fake = elastic_fake().await;
    let mut cfg = elastic_config(&fake);
    cfg.region = String::new();
    let client = elastic_client(&cfg, ES_KEY);
    let ep = VendorEndpoint {
        alias: Some(
            "eastus2-prod-002-privatelink-service.64359fdd-7893-4215-9929-ece3287e1371.eastus2.azure.privatelinkservice"
                .into(),
        ),
        ..endpoint()
    };
    assert_eq!(client.region_for(&ep), "azure-eastus2");
    assert_eq!(client.region_for(&endpoint()), "azure-westus3", "falls back to the PE location");
    client.register(&ep).await.unwrap();
    assert_eq!(fake.state().rulesets.values().next().unwrap().region, "azure-eastus2");
}

#[tokio::test]
async fn elastic_wrong_key_names_the_vendor_code_and_a_missing_guid_is_permanent() {
    let fake = elastic_fake().await;
    let wrong = "wrong-es-key-0099";
    let client = elastic_client(&elastic_config(&fake), wrong);
    let err = client.register(&endpoint()).await.unwrap_err();
    assert_eq!(err.kind, VendorErrorKind::Config, "{err}");
    assert!(err.message.contains("root.unauthorized"), "{err}");
    for text in [err.to_string(), format!("{err:?}"), format!("{client:?}")] {
        assert!(!text.contains(wrong) && !text.contains(ES_KEY), "secret leaked: {text}");
    }

    let client = elastic_client(&elastic_config(&fake), ES_KEY);
    let mut no_guid = endpoint();
    no_guid.resource_guid = None;
    assert_eq!(client.register(&no_guid).await.unwrap_err().kind, VendorErrorKind::Permanent);
}

#[tokio::test]
async fn elastic_fixtures_and_fake_replies_parse_alike() {
    let fx = support::fixture_json("vendors/elastic.api-examples.json");
    let list: es::RulesetList = serde_json::from_value(fx["ech_list_rulesets"]["response_200_shape"].clone()).unwrap();
    let rs = &list.rulesets[0];
    assert_eq!(rs.ruleset_type, es::RULESET_TYPE);
    assert_eq!(rs.rules[0].azure_endpoint_guid.as_deref(), Some("7c0f05e4-e32b-4b10-a246-7b77f7dcc63c"));
    assert_eq!(rs.associations.as_ref().unwrap()[0].id, DEPLOYMENT);
    let created: es::CreatedRuleset =
        serde_json::from_value(fx["ech_create_private_connection_policy"]["response_201"].clone()).unwrap();
    assert_eq!(created.id, "5470a0010ebf437bb9294ea9fcba0ba0");
    let errs = es::parse_errors(&serde_json::to_vec(&fx["ech_error_envelope"]).unwrap());
    assert_eq!(errs[0].code, "traffic_filter.not_found");

    // The fixture's create body is accepted by the fake, and the fake's list parses alike.
    let fake = elastic_fake().await;
    let http = reqwest::Client::new();
    let auth = format!("ApiKey {ES_KEY}");
    let base = format!("{}/api/v1/deployments/traffic-filter/rulesets", fake.base_url());
    let resp = http
        .post(&base)
        .header("Authorization", &auth)
        .json(&fx["ech_create_private_connection_policy"]["body"])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: es::CreatedRuleset = resp.json().await.unwrap();
    let assoc_url = format!("{base}/{}/associations", created.id);
    for expected in [201, 200] {
        let resp = http
            .post(&assoc_url)
            .header("Authorization", &auth)
            .json(&fx["ech_associate"]["body"])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), expected);
    }
    let resp = http.get(&assoc_url).header("Authorization", &auth).send().await.unwrap();
    let assoc: serde_json::Value = resp.json().await.unwrap();
    let mut expected = fx["ech_list_associations_response_200"].clone();
    expected.as_object_mut().unwrap().remove("_source");
    assert_eq!(assoc, expected);
    let resp = http
        .get(format!("{base}?region=azure-japaneast&include_associations=true"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    let list: es::RulesetList = resp.json().await.unwrap();
    assert_eq!(list.rulesets.len(), 1);
    assert_eq!(list.rulesets[0].rules[0].azure_endpoint_name.as_deref(), Some("azure-demo"));
}

// ---------------------------------------------------------------- Zilliz

use autopilot_sandbox::fake_vendors::zilliz::{FakeZillizEndpoint, ZillizFake, ZillizFakeOptions};
use private_link_autopilot::effects::vendors::zilliz::{self as zz, Zilliz, ZillizConfig};

const ZZ_KEY: &str = "zilliz-key-aa11bb22cc33";

async fn zilliz_fake() -> ZillizFake {
    ZillizFake::start(ZillizFakeOptions { api_key: ZZ_KEY.into(), ..Default::default() }).await.expect("fake starts")
}

fn zilliz_config(fake: &ZillizFake) -> ZillizConfig {
    ZillizConfig {
        enabled: true,
        base_url: fake.base_url(),
        project_id: ZillizFakeOptions::default().project_id,
        region_id: "az-eastus".into(),
        ..Default::default()
    }
}

fn zilliz_client(cfg: &ZillizConfig, key: &str) -> Zilliz {
    Zilliz::from_config(cfg, &env_of(&[("ZILLIZ_API_KEY", key)])).expect("client builds")
}

#[tokio::test]
async fn zilliz_register_whitelists_once_and_uses_name_dot_guid() {
    let fake = zilliz_fake().await;
    let client = zilliz_client(&zilliz_config(&fake), ZZ_KEY);
    let ep = endpoint();
    assert_eq!(client.register(&ep).await.unwrap(), Change::Applied);
    let st = fake.state();
    assert_eq!(st.endpoints.len(), 1);
    assert_eq!(st.endpoints[0].endpoint_id, format!("pe-clickhouse-westus3.{PE_GUID}"));
    assert_eq!(st.endpoints[0].region_id, "az-eastus");
    assert_eq!(st.whitelist, vec![("az-eastus".to_string(), ep.subscription_id.clone())]);
    assert_eq!(count_writes(&fake.requests()), 2, "whitelist + create");

    fake.clear_requests();
    assert_eq!(client.register(&ep).await.unwrap(), Change::AlreadyInPlace);
    assert_eq!(count_writes(&fake.requests()), 0);

    // A second endpoint of the same subscription: no second whitelist call.
    let other = VendorEndpoint { pe_name: "pe-two".into(), ..endpoint() };
    fake.clear_requests();
    client.register(&other).await.unwrap();
    let writes: Vec<_> = fake.requests().into_iter().filter(|r| r.is_write()).collect();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(writes[0].path.ends_with("/privateEndpoints"));
    assert!(client.is_registered(&other).await.unwrap());
}

#[tokio::test]
async fn zilliz_deregister_and_already_gone() {
    let fake = zilliz_fake().await;
    let client = zilliz_client(&zilliz_config(&fake), ZZ_KEY);
    let ep = endpoint();
    client.register(&ep).await.unwrap();
    fake.clear_requests();
    assert_eq!(client.deregister(&ep).await.unwrap(), Change::Applied);
    assert!(fake.state().endpoints.is_empty());
    let writes: Vec<_> = fake.requests().into_iter().filter(|r| r.is_write()).collect();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].method, "DELETE");
    assert!(writes[0].path.ends_with(&format!("/privateEndpoints/pe-clickhouse-westus3.{PE_GUID}?regionId=az-eastus")));
    fake.clear_requests();
    assert_eq!(client.deregister(&ep).await.unwrap(), Change::AlreadyInPlace);
    assert_eq!(count_writes(&fake.requests()), 0);
}

#[tokio::test]
async fn zilliz_http_200_with_a_code_is_an_error_with_the_body_message() {
    let fake = zilliz_fake().await;
    let mut cfg = zilliz_config(&fake);
    cfg.region_id = "az-nowhere".into();
    let err = zilliz_client(&cfg, ZZ_KEY).register(&endpoint()).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.message.contains("96001") && err.message.contains("Invalid RegionId: az-nowhere"), "{err}");

    let client = zilliz_client(&zilliz_config(&fake), ZZ_KEY);
    fake.fail_with_code(90999, "something odd happened", 1);
    let err = client.register(&endpoint()).await.unwrap_err();
    assert_eq!(err.kind, VendorErrorKind::Permanent, "{err}");
    assert!(err.message.contains("something odd happened"), "{err}");

    fake.fail_with_code(503, "busy", 1);
    assert!(client.register(&endpoint()).await.unwrap_err().is_transient());

    let mut cfg = zilliz_config(&fake);
    cfg.transient_codes = vec![90999];
    fake.fail_with_code(90999, "something odd happened", 1);
    assert!(zilliz_client(&cfg, ZZ_KEY).register(&endpoint()).await.unwrap_err().is_transient());

    fake.fail_with_code(96013, "No permission for project", 1);
    assert_eq!(client.register(&endpoint()).await.unwrap_err().kind, VendorErrorKind::Config);
}

#[tokio::test]
async fn zilliz_missing_guid_is_permanent_and_names_it() {
    let fake = zilliz_fake().await;
    let client = zilliz_client(&zilliz_config(&fake), ZZ_KEY);
    let mut ep = endpoint();
    ep.resource_guid = None;
    let err = client.register(&ep).await.unwrap_err();
    assert_eq!(err.kind, VendorErrorKind::Permanent);
    // The endpoint is named once, by the caller (the worker's dead-letter reason).
    assert!(err.message.contains("resourceGuid") && !err.message.contains(PE_ID), "{err}");
    assert!(fake.requests().is_empty(), "nothing sent");
}

#[tokio::test]
async fn zilliz_lists_across_pages() {
    let fake = zilliz_fake().await;
    let client = zilliz_client(&zilliz_config(&fake), ZZ_KEY);
    let mut seeded = fake.state();
    for i in 0..150 {
        seeded.endpoints.push(FakeZillizEndpoint {
            region_id: "az-eastus".into(),
            endpoint_id: zz::endpoint_id(&format!("pe-{i:03}"), PE_GUID),
        });
    }
    fake.set_state(seeded);
    let last = VendorEndpoint { pe_name: "pe-149".into(), ..endpoint() };
    assert!(client.is_registered(&last).await.unwrap(), "found on page 2");
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn zilliz_fixtures_and_fake_replies_parse_alike() {
    let fx = support::fixture_json("vendors/zilliz.private-endpoints-api.examples.json");
    let list: zz::Reply<zz::EndpointPage> =
        serde_json::from_value(fx["list_private_endpoints"]["response"].clone()).unwrap();
    assert_eq!(list.code, 0);
    let page = list.data.unwrap();
    assert_eq!(page.endpoints[0].endpoint_id, "zilliz.d73e9b55-7b9c-4f8d-8f0a-40e737f1ccbf");
    assert_eq!(
        page.endpoints[0].endpoint_id,
        fx["azure_endpoint_id"].as_str().unwrap().split(", e.g. ").nth(1).unwrap()
    );
    assert_eq!(zz::endpoint_id("zilliz", "d73e9b55-7b9c-4f8d-8f0a-40e737f1ccbf"), page.endpoints[0].endpoint_id);
    let services: zz::Reply<zz::EndpointServicePage> =
        serde_json::from_value(fx["list_endpoint_services"]["response"].clone()).unwrap();
    assert_eq!(services.data.unwrap().endpoint_services[0].whitelist_required, Some(true));
    let wl: zz::Reply<serde_json::Value> =
        serde_json::from_value(fx["add_whitelist_entry"]["response"].clone()).unwrap();
    assert_eq!(zz::failure_code(wl.code), None);

    // The fixture's request bodies against the fake; replies parse with the same types.
    let fake = zilliz_fake().await;
    let http = reqwest::Client::new();
    let project = ZillizFakeOptions::default().project_id;
    let base = format!("{}/v2/projects/{project}", fake.base_url());
    let resp = http
        .post(format!("{base}/privateEndpointWhitelist"))
        .bearer_auth(ZZ_KEY)
        .json(&fx["add_whitelist_entry"]["body"])
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body, fx["add_whitelist_entry"]["response"]);
    let resp = http
        .post(format!("{base}/privateEndpoints"))
        .bearer_auth(ZZ_KEY)
        .json(&fx["create_private_endpoint"]["body"])
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body, fx["create_private_endpoint"]["response"]);
    let resp = http
        .get(format!("{base}/privateEndpoints?currentPage=1&pageSize=100"))
        .bearer_auth(ZZ_KEY)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body["data"]["endpoints"][0]["endpointId"],
        fx["list_private_endpoints"]["response"]["data"]["endpoints"][0]["endpointId"]
    );
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&body["data"]["endpoints"][0]),
        keys(&fx["list_private_endpoints"]["response"]["data"]["endpoints"][0])
    );
    let _: zz::Reply<zz::EndpointPage> = serde_json::from_value(body).unwrap();
    let resp = http
        .get(format!("{}/v2/privateEndpointServices?regionId=az-eastus", fake.base_url()))
        .bearer_auth(ZZ_KEY)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(keys(&body["data"]), keys(&fx["list_endpoint_services"]["response"]["data"]));
    let resp = http
        .delete(format!("{base}/privateEndpoints/zilliz.d73e9b55-7b9c-4f8d-8f0a-40e737f1ccbf?regionId=az-eastus"))
        .bearer_auth(ZZ_KEY)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body, fx["delete_private_endpoint"]["response"]);
}

// ---------------------------------------------------------------- wiring

use private_link_autopilot::effects::vendors::{VendorsConfig, build_vendors};
use private_link_autopilot::model::endpoint::PrivateEndpoint;

#[test]
fn config_parses_with_defaults_and_rejects_unknown_keys() {
    let cfg: VendorsConfig = toml::from_str(
        r#"
        [clickhouse]
        enabled = true
        organization_id = "org"
        service_ids = ["s1", "s2"]
        endpoint_id = "resource_guid"
        [zilliz]
        project_id = "p"
        "#,
    )
    .unwrap();
    assert_eq!(cfg.clickhouse.endpoint_id, EndpointIdKind::ResourceGuid);
    assert_eq!(cfg.clickhouse.base_url, "https://api.clickhouse.cloud");
    assert_eq!((cfg.clickhouse.rate_limit_requests, cfg.clickhouse.rate_limit_window_ms), (10, 10_000));
    assert_eq!(cfg.elastic.api_key_env, "ELASTIC_API_KEY");
    assert!(!cfg.zilliz.enabled);
    let err = toml::from_str::<VendorsConfig>("[elastic]\napi_key = \"oops\"\n").unwrap_err().to_string();
    assert!(err.contains("api_key"), "{err}");
}

#[test]
fn build_vendors_names_the_missing_setting() {
    let mut cfg = VendorsConfig::default();
    assert!(build_vendors(&cfg, |_| None).unwrap().is_empty(), "all off by default");
    cfg.clickhouse.enabled = true;
    cfg.clickhouse.organization_id = "org".into();
    cfg.clickhouse.service_ids = vec!["s".into()];
    let err = build_vendors(&cfg, |_| None).unwrap_err();
    assert!(err.contains("CLICKHOUSE_KEY_ID"), "{err}");
    let err = build_vendors(&cfg, env_of(&[("CLICKHOUSE_KEY_ID", "id")])).unwrap_err();
    assert!(err.contains("CLICKHOUSE_KEY_SECRET"), "{err}");
    cfg.elastic.enabled = true;
    let err = build_vendors(&cfg, env_of(&[("CLICKHOUSE_KEY_ID", "i"), ("CLICKHOUSE_KEY_SECRET", "s")])).unwrap_err();
    assert!(err.contains("deployment_ids"), "{err}");
    cfg.elastic.deployment_ids = vec!["d".into()];
    cfg.zilliz.enabled = true;
    let err = build_vendors(&cfg, |_| Some("x".into())).unwrap_err();
    assert!(err.contains("[vendors.zilliz] project_id"), "{err}");
    cfg.zilliz.project_id = "p".into();
    let vendors = build_vendors(&cfg, |_| Some("x".into())).unwrap();
    let names: Vec<&str> = vendors.iter().map(|v| v.name()).collect();
    assert_eq!(names, vec!["clickhouse", "elastic", "zilliz"]);
}

#[test]
fn vendor_endpoint_from_arm_endpoint_round_trips_through_json() {
    let arm = serde_json::json!({
        "id": PE_ID,
        "name": "pe-clickhouse-westus3",
        "location": "WestUS3",
        "properties": {
            "resourceGuid": PE_GUID,
            "provisioningState": "Succeeded",
            "manualPrivateLinkServiceConnections": [{
                "name": "c",
                "properties": {
                    "privateLinkServiceId": "production-westus3-0-0.00000000-0000-4000-8000-00000000c0de.westus3.azure.privatelinkservice",
                    "privateLinkServiceConnectionState": { "status": "Pending" }
                }
            }]
        }
    });
    let pe = PrivateEndpoint::from_arm_json(&arm).unwrap();
    let ep = VendorEndpoint::from_endpoint(&pe);
    assert_eq!(ep.pe_id, PE_ID);
    assert_eq!(ep.resource_guid.as_deref(), Some(PE_GUID));
    assert_eq!(ep.subscription_id, "00000000-0000-0000-0000-000000000000");
    assert_eq!(ep.location, "westus3");
    assert_eq!(ep.alias_region(), Some("westus3"));
    let back: VendorEndpoint = serde_json::from_str(&serde_json::to_string(&ep).unwrap()).unwrap();
    assert_eq!(back, ep);
}

/// Rulesets a race already duplicated (two instances each created one): the next
/// register keeps the lowest id, the same choice on every instance, deletes the other
/// even though it is associated, and associates the kept one with every deployment.
#[tokio::test]
async fn elastic_register_keeps_the_lowest_id_of_duplicate_rulesets() {
    use autopilot_sandbox::fake_vendors::elastic::{ElasticState, FakeRuleset};
    let fake = elastic_fake().await;
    let client = elastic_client(&elastic_config(&fake), ES_KEY);
    let ruleset = |id: &str, deployments: &[&str]| FakeRuleset {
        id: id.into(),
        name: "pl-autopilot-dup".into(),
        description: String::new(),
        region: "azure-eastus2".into(),
        ruleset_type: es::RULESET_TYPE.into(),
        include_by_default: false,
        rules: vec![(endpoint().pe_name, PE_GUID.into())],
        deployments: deployments.iter().map(|d| d.to_string()).collect(),
    };
    let mut st = ElasticState::default();
    st.rulesets.insert("f0".into(), ruleset("f0", &[DEPLOYMENT, "d2"]));
    st.rulesets.insert("0a".into(), ruleset("0a", &[]));
    fake.set_state(st);
    assert_eq!(client.register(&endpoint()).await.unwrap(), Change::Applied);
    let st = fake.state();
    assert_eq!(st.rulesets.keys().collect::<Vec<_>>(), vec!["0a"], "{st:?}");
    let mut deployments = st.rulesets["0a"].deployments.clone();
    deployments.sort();
    let mut expected = vec![DEPLOYMENT.to_string(), "d2".to_string()];
    expected.sort();
    assert_eq!(deployments, expected);
    assert_eq!(client.register(&endpoint()).await.unwrap(), Change::AlreadyInPlace);
}
