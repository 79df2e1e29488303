//! The custom handler through the real axum router, driven by the host emulator.

mod support;

use std::sync::Arc;

use autopilot_sandbox::host_emulator::{HostEmulator, InvokeOutcome};
use private_link_autopilot::app::App;
use private_link_autopilot::arm::credential::{Secret, StaticToken};
use private_link_autopilot::config::Config;
use private_link_autopilot::intake::server;
use private_link_autopilot::queue::{SqliteQueue, WorkQueue};
use serde_json::{Value, json};

/// Starts the handler with ARM pointed at a closed loopback port: every ARM call fails.
async fn start_handler() -> (String, Arc<App>) {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let mut config = Config::defaults();
    config.arm.base_url = format!("http://127.0.0.1:{dead_port}");
    config.arm.max_retries = 0;
    config.reconcile.deadline_ms = 3000;
    let queue: Arc<dyn WorkQueue> = Arc::new(SqliteQueue::open_in_memory().unwrap());
    let app = Arc::new(App::build(config, Arc::new(StaticToken(Secret::new("t"))), queue, vec![]).expect("app builds"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = server::router(app.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (base, app)
}

#[test]
fn every_function_folder_has_a_route_and_every_route_a_folder() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("handlers");
    let mut folders: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|d| d.path().join("function.json").is_file())
        .map(|d| d.file_name().to_string_lossy().to_string())
        .collect();
    folders.sort();
    let mut routes: Vec<String> = server::FUNCTIONS.iter().map(|s| s.to_string()).collect();
    routes.sort();
    assert_eq!(folders, routes);
    for f in &folders {
        let text = std::fs::read_to_string(root.join(f).join("function.json")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v["bindings"].as_array().is_some_and(|b| !b.is_empty()), "{f}: bindings");
    }
    let host: Value = serde_json::from_str(&std::fs::read_to_string(root.join("../host.json")).unwrap()).unwrap();
    assert_eq!(host["customHandler"]["description"]["defaultExecutablePath"], "autopilot");
    assert!(host["extensionBundle"]["id"].is_string());
}

#[tokio::test]
async fn readiness_and_health() {
    let (base, _app) = start_handler().await;
    let r = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(r.status(), 200);
    let host = HostEmulator::new(&base);
    let res = host.invoke_http("Status", "GET", "/api/status", None).await.unwrap();
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(res.body["status"], "ok");
}

#[tokio::test]
async fn non_pe_events_are_acknowledged_and_ignored() {
    let (base, app) = start_handler().await;
    let host = HostEmulator::new(&base);
    let ev = support::fixture_json("eventgrid/resource_write_success.event-grid-schema.json");
    let events = match ev {
        Value::Array(a) => a,
        v => vec![v],
    };
    let delivery = host.deliver_event_grid("PrivateEndpointEvents", events).await;
    assert_eq!(delivery.status, 202);
    assert_eq!(app.queue.depth().await.unwrap(), 0);
    assert!(app.stats.snapshot()["events_ignored"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn arm_failure_is_queued_as_a_retry_before_the_ack() {
    let (base, app) = start_handler().await;
    let host = HostEmulator::new(&base);
    let req = support::fixture_json("functions/eventgrid-trigger-request.json");
    let event = req["Data"]["event"].clone();
    let delivery = host.deliver_event_grid("PrivateEndpointEvents", vec![event.clone(), event]).await;
    assert_eq!(delivery.status, 202, "{delivery:?}");
    // Both deliveries name the same endpoint: one waiting retry (dedupe).
    assert_eq!(app.queue.depth().await.unwrap(), 1);
}

#[tokio::test]
async fn malformed_invocations_are_rejected_cleanly() {
    let (base, app) = start_handler().await;
    let client = reqwest::Client::new();
    for body in ["", "not json", "[]", "{\"Metadata\":{}}", "{\"Data\":{\"other\":1}}"] {
        let r = client.post(format!("{base}/PrivateEndpointEvents")).body(body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
    }
    let host = HostEmulator::new(&base);
    match host
        .invoke(
            "PrivateEndpointEvents",
            serde_json::Map::from_iter([("event".into(), json!({"id": 1}))]),
            Default::default(),
        )
        .await
        .unwrap()
    {
        InvokeOutcome::Succeeded(r) => assert!(r.logs.iter().any(|l| l.contains("rejected")), "{:?}", r.logs),
        other => panic!("{other:?}"),
    }
    assert!(app.stats.snapshot()["invocations_rejected"].as_u64().unwrap() >= 5);
}

#[test]
fn rfc2136_zones_are_wired_from_config_and_name_missing_secrets() {
    use private_link_autopilot::app::rfc2136_routes;
    use private_link_autopilot::config::{DnsServerSettings, ZoneSettings};
    let mut config = Config::defaults();
    config.dns.servers.push(DnsServerSettings {
        name: "corp".into(),
        address: "127.0.0.1:5353".into(),
        tsig_key_name: "autopilot".into(),
        tsig_algorithm: "hmac-sha256".into(),
        tsig_secret_env: "CORP_TSIG".into(),
        timeout_secs: 5,
        allow_axfr: true,
    });
    config.dns.zones.push(ZoneSettings {
        name: "example.internal".into(),
        provider: "rfc2136".into(),
        subscription: String::new(),
        resource_group: String::new(),
        server: "corp".into(),
        link_to: None,
    });
    config.validate().unwrap();
    let err = rfc2136_routes(&config, |_| None).unwrap_err();
    assert!(err.contains("CORP_TSIG"), "{err}");
    let routes = rfc2136_routes(&config, |_| Some("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0".into())).unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].1.kind(), "rfc2136");
}
