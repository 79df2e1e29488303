//! Runs the vendor conformance suite (`tests/support/vendor_conformance.rs`) against the
//! ClickHouse, Elastic and Zilliz clients, each with its fake. One test per check and
//! vendor, so a failure names both the rule and the vendor.
//!
//! The fakes run without their server-side rate limit here: two clients share one key in
//! the race checks, and the limits have their own tests in `tests/vendors.rs`.

mod support;
#[path = "support/vendor_conformance.rs"]
mod vendor_conformance;

use std::sync::Arc;

use autopilot_sandbox::fake_vendors::Gate;
use autopilot_sandbox::fake_vendors::clickhouse::{ClickHouseFake, ClickHouseFakeOptions};
use autopilot_sandbox::fake_vendors::elastic::{ElasticFake, ElasticFakeOptions};
use autopilot_sandbox::fake_vendors::zilliz::{ZillizFake, ZillizFakeOptions};
use private_link_autopilot::effects::vendors::{
    ClickHouse, ClickHouseConfig, Elastic, ElasticConfig, Vendor, VendorEndpoint, Zilliz, ZillizConfig,
};
use support::env_of;
use vendor_conformance::Subject;

const SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";
/// Every client gives up on a reply after this long (the timeout check waits five seconds).
const TIMEOUT_MS: u64 = 1000;
/// Generous client-side pacing: the suite tests behaviour, not limits.
const RATE: (u32, u64) = (100, 1000);

/// The subject for one vendor: `client(key)` builds a client with that key, `right` is the
/// key the fake accepts, `wrong` one it refuses; `registrations` counts in the fake's state.
fn subject<F: Send + Sync + 'static>(
    fake: F,
    gate: Arc<Gate>,
    client: impl Fn(&str) -> Arc<dyn Vendor>,
    (right, wrong): (&str, &str),
    registrations: impl Fn(&F, &VendorEndpoint) -> usize + Send + Sync + 'static,
    location: &str,
) -> Subject {
    let fake = Arc::new(fake);
    let held = fake.clone();
    Subject {
        client: client(right),
        rival: client(right),
        wrong_key: client(wrong),
        secrets: vec![right.into(), wrong.into()],
        gate,
        registrations: Box::new(move |ep| registrations(&held, ep)),
        endpoint: VendorEndpoint {
            pe_id: format!(
                "/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-net/providers/Microsoft.Network/privateEndpoints/pe-conformance"
            ),
            pe_name: "pe-conformance".into(),
            resource_guid: Some("d73e9b55-7b9c-4f8d-8f0a-40e737f1ccbf".into()),
            subscription_id: SUBSCRIPTION.into(),
            location: location.into(),
            alias: None,
            targets: vec![],
        },
        _fake: Box::new(fake),
    }
}

fn built<V: Vendor + 'static>(made: Result<V, String>) -> Arc<dyn Vendor> {
    Arc::new(made.unwrap_or_else(|e| panic!("client builds: {e}")))
}

async fn clickhouse() -> Subject {
    let opts = ClickHouseFakeOptions {
        key_id: "key-conformance".into(),
        key_secret: "ch-conformance-secret-4e5f".into(),
        service_ids: vec!["svc-1".into()],
        rate_limit: None,
        ..Default::default()
    };
    let fake = ClickHouseFake::start(opts.clone()).await.unwrap_or_else(|e| panic!("fake starts: {e}"));
    let cfg = ClickHouseConfig {
        enabled: true,
        base_url: fake.base_url(),
        organization_id: opts.organization_id.clone(),
        service_ids: opts.service_ids.clone(),
        request_timeout_ms: TIMEOUT_MS,
        rate_limit_requests: RATE.0,
        rate_limit_window_ms: RATE.1,
        ..Default::default()
    };
    let client = |secret: &str| {
        let env = env_of(&[("CLICKHOUSE_KEY_ID", "key-conformance"), ("CLICKHOUSE_KEY_SECRET", secret)]);
        built(ClickHouse::from_config(&cfg, &env))
    };
    let gate = fake.gate();
    // ClickHouse's allowlist entry: the endpoint's id in the service.
    let registrations = |fake: &ClickHouseFake, ep: &VendorEndpoint| {
        fake.state().services.values().flatten().filter(|id| id.eq_ignore_ascii_case(&ep.pe_id)).count()
    };
    subject(fake, gate, client, (&opts.key_secret, "ch-wrong-secret-0a0b"), registrations, "westus3")
}

async fn elastic() -> Subject {
    let opts = ElasticFakeOptions { api_key: "es-conformance-key-77aa".into(), rate_limit: None, ..Default::default() };
    let fake = ElasticFake::start(opts.clone()).await.unwrap_or_else(|e| panic!("fake starts: {e}"));
    let cfg = ElasticConfig {
        enabled: true,
        base_url: fake.base_url(),
        region: "azure-eastus2".into(),
        deployment_ids: opts.deployment_ids.clone(),
        request_timeout_ms: TIMEOUT_MS,
        rate_limit_requests: RATE.0,
        rate_limit_window_ms: RATE.1,
        ..Default::default()
    };
    let client = |key: &str| built(Elastic::from_config(&cfg, &env_of(&[("ELASTIC_API_KEY", key)])));
    let gate = fake.gate();
    // Elastic's allowlist entry: a ruleset with a rule for the endpoint's guid.
    let registrations = |fake: &ElasticFake, ep: &VendorEndpoint| {
        let guid = ep.resource_guid.clone().unwrap_or_default();
        fake.state().rulesets.values().filter(|r| r.rules.iter().any(|(_, g)| *g == guid)).count()
    };
    subject(fake, gate, client, (&opts.api_key, "es-wrong-key-88bb"), registrations, "eastus2")
}

async fn zilliz() -> Subject {
    let opts = ZillizFakeOptions { api_key: "zz-conformance-key-19c3".into(), rate_limit: None, ..Default::default() };
    let fake = ZillizFake::start(opts.clone()).await.unwrap_or_else(|e| panic!("fake starts: {e}"));
    let cfg = ZillizConfig {
        enabled: true,
        base_url: fake.base_url(),
        project_id: opts.project_id.clone(),
        region_id: "az-eastus".into(),
        request_timeout_ms: TIMEOUT_MS,
        rate_limit_requests: RATE.0,
        rate_limit_window_ms: RATE.1,
        ..Default::default()
    };
    let client = |key: &str| built(Zilliz::from_config(&cfg, &env_of(&[("ZILLIZ_API_KEY", key)])));
    let gate = fake.gate();
    // Zilliz's allowlist entry: an endpoint `<name>.<guid>` in the project.
    let registrations = |fake: &ZillizFake, ep: &VendorEndpoint| {
        let id = format!("{}.{}", ep.pe_name, ep.resource_guid.clone().unwrap_or_default());
        fake.state().endpoints.iter().filter(|e| e.endpoint_id.eq_ignore_ascii_case(&id)).count()
    };
    subject(fake, gate, client, (&opts.api_key, "zz-wrong-key-2d4e"), registrations, "eastus")
}

/// One test per (vendor, check).
macro_rules! conformance {
    ($($vendor:ident),* ; $checks:tt) => {
        $( conformance!(@vendor $vendor $checks); )*
    };
    (@vendor $vendor:ident [$($check:ident),* $(,)?]) => {
        mod $vendor {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::vendor_conformance::$check(super::$vendor().await).await;
                }
            )*
        }
    };
}

conformance!(clickhouse, elastic, zilliz; [
    register_is_idempotent,
    register_twice_leaves_one_registration,
    duplicate_answer_after_a_lost_race_is_success,
    racing_clients_leave_one_registration,
    deregister_of_absent_is_success,
    throttled_or_unavailable_is_transient_with_retry_after,
    server_error_and_timeout_are_transient,
    rejected_key_is_a_config_error_without_the_key,
    is_registered_agrees_with_the_vendor,
]);
