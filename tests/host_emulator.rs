//! The host emulator against a small recording axum server: exact wire encoding, the host's
//! failure rules, Event Grid fan-out, Service Bus settlement, and process start-up readiness.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autopilot_sandbox::host_emulator::{
    HostEmulator, HostValue, InvokeOutcome, SbSettlement, ServiceBusProps, encode_value, spawn_handler,
    spawn_handler_with_budget,
};
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use private_link_autopilot::intake::protocol::{InvocationRequest, InvocationResponse};
use serde_json::{Map, Value, json};
use support::fixture_json;

#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Value,
}

type Log = Arc<Mutex<Vec<Recorded>>>;

/// Concurrency probe for `/Events` (only `event_grid_fan_out` calls it).
static EVENTS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static EVENTS_MAX_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The test handler. Behaviour is chosen by function name (the request path).
async fn handle(log: Log, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    log.lock().unwrap().push(Recorded { method, path: uri.path().to_string(), headers, body: parsed.clone() });
    match uri.path() {
        "/Echo" => json_response(
            StatusCode::OK,
            &json!({"Outputs": {"echo": parsed}, "Logs": ["got it"], "ReturnValue": null}),
        ),
        "/Fail" => json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"Outputs": {}, "Logs": ["lost"]})),
        "/Empty" => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "").into_response(),
        "/Text" => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "{}").into_response(),
        "/Slow" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            json_response(StatusCode::OK, &json!({}))
        }
        "/Events" => {
            let now = EVENTS_IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
            EVENTS_MAX_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            EVENTS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
            if parsed["Data"]["event"]["id"] == json!("bad") {
                json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({}))
            } else {
                json_response(StatusCode::OK, &json!({"Logs": ["event ok"]}))
            }
        }
        "/Http" => {
            let url = parsed["Data"]["req"]["Url"].clone();
            let bytes = InvocationResponse::http(201, &json!({ "url": url })).to_json_bytes();
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn start_server() -> (String, Log) {
    let log: Log = Arc::default();
    let for_handler = Arc::clone(&log);
    let app = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        handle(Arc::clone(&for_handler), method, uri, headers, body)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), log)
}

fn last(log: &Log) -> Recorded {
    log.lock().unwrap().last().cloned().expect("a recorded request")
}

fn header_value<'a>(r: &'a Recorded, name: &str) -> &'a str {
    r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("header {name} missing"))
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.chars()
            .enumerate()
            .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
}

fn is_traceparent(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 4
        && parts[0] == "00"
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[3] == "00"
        && parts[1..3].iter().all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// `2023-10-12T20:13:49`: seconds precision, no offset, no `Z`.
fn is_host_datetime(s: &str) -> bool {
    s.len() == 19 && s.as_bytes()[10] == b'T' && !s.ends_with('Z')
}

#[tokio::test]
async fn invoke_wire_encoding_and_headers() {
    let (url, log) = start_server().await;
    let host = HostEmulator::new(&url);
    let mut data = Map::new();
    data.insert("msg".into(), encode_value(HostValue::String("{\"a\":1}".into())));
    let mut metadata = Map::new();
    metadata.insert("DeliveryCount".into(), encode_value(HostValue::Int(3)));
    metadata.insert("MessageId".into(), encode_value(HostValue::String("m1".into())));
    metadata.insert("Flag".into(), encode_value(HostValue::Bool(false)));
    metadata.insert(
        "EnqueuedTimeUtc".into(),
        encode_value(HostValue::DateTime(time::macros::datetime!(2023-10-12 20:13:49.64 UTC))),
    );
    metadata.insert("QueueTrigger".into(), json!("\"dropped: keys ending in trigger\""));
    metadata.insert("Nothing".into(), Value::Null);

    let outcome = host.invoke("Echo", data, metadata).await.unwrap();
    let InvokeOutcome::Succeeded(result) = outcome else { panic!("expected success, got {outcome:?}") };
    assert_eq!(result.logs, vec!["got it"]);
    assert_eq!(result.return_value, Value::Null);

    let r = last(&log);
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.path, "/Echo");
    assert!(header_value(&r, "x-azure-functions-hostversion").starts_with("4."));
    assert!(is_guid(header_value(&r, "x-azure-functions-invocationid")));
    assert!(header_value(&r, "user-agent").starts_with("Azure-Functions-Host/4."));
    assert_eq!(header_value(&r, "content-type"), "application/json; charset=utf-8");
    assert!(is_traceparent(header_value(&r, "traceparent")));
    assert_eq!(header_value(&r, "transfer-encoding"), "chunked");
    assert!(r.headers.get("content-length").is_none());

    // Exact encodings of §1.2.
    assert_eq!(r.body["Data"]["msg"], json!("\"{\\\"a\\\":1}\""));
    let md = r.body["Metadata"].as_object().unwrap();
    assert_eq!(md["DeliveryCount"], json!("3"));
    assert_eq!(md["MessageId"], json!("\"m1\""));
    assert_eq!(md["Flag"], json!("false"));
    assert_eq!(md["EnqueuedTimeUtc"], json!("2023-10-12T20:13:49"));
    assert!(!md.contains_key("QueueTrigger") && !md.contains_key("Nothing"));
    let sys = &md["sys"];
    assert_eq!(sys["MethodName"], json!("Echo"));
    assert!(sys["UtcNow"].as_str().unwrap().ends_with('Z'));
    assert!(is_guid(sys["RandGuid"].as_str().unwrap()));
    // The echoed request is what the handler's own parser reads back.
    assert_eq!(result.outputs["echo"], r.body);
    let back = InvocationRequest::from_value(r.body.clone()).unwrap();
    assert_eq!(back.data_value("msg"), Some(json!({"a": 1})));
    assert_eq!(back.metadata_u64("DeliveryCount"), Some(3));
    assert_eq!(back.metadata_str("MessageId").as_deref(), Some("m1"));

    // Every invocation gets its own id.
    host.invoke("Echo", Map::new(), Map::new()).await.unwrap();
    let ids: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.headers["x-azure-functions-invocationid"].to_str().unwrap().to_string())
        .collect();
    assert_ne!(ids[0], ids[1]);
}

#[tokio::test]
async fn failure_rules() {
    let (url, log) = start_server().await;
    let host = HostEmulator::new(&url).with_function_timeout(Duration::from_millis(100));

    let fail = host.invoke("Fail", Map::new(), Map::new()).await.unwrap();
    assert!(matches!(&fail, InvokeOutcome::Failed(m) if m.contains("500")), "{fail:?}");
    let empty = host.invoke("Empty", Map::new(), Map::new()).await.unwrap();
    assert!(matches!(&empty, InvokeOutcome::Failed(m) if m.contains("hang")), "{empty:?}");
    let text = host.invoke("Text", Map::new(), Map::new()).await.unwrap();
    assert!(matches!(&text, InvokeOutcome::Failed(m) if m.contains("content type")), "{text:?}");
    let slow = host.invoke("Slow", Map::new(), Map::new()).await.unwrap();
    assert!(matches!(&slow, InvokeOutcome::Failed(m) if m.contains("functionTimeout")), "{slow:?}");
    let missing = host.invoke("NoSuchFunction", Map::new(), Map::new()).await.unwrap();
    assert!(matches!(&missing, InvokeOutcome::Failed(m) if m.contains("404")), "{missing:?}");
    assert_eq!(log.lock().unwrap().len(), 5);

    assert!(host.invoke("../etc", Map::new(), Map::new()).await.is_err());
    assert!(host.invoke("", Map::new(), Map::new()).await.is_err());

    // Nothing listening: the invocation fails, it does not error out.
    let port = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let down = HostEmulator::new(&format!("http://127.0.0.1:{port}")).invoke("Echo", Map::new(), Map::new()).await;
    assert!(matches!(down, Ok(InvokeOutcome::Failed(_))), "{down:?}");
}

#[tokio::test]
async fn event_grid_fan_out() {
    let (url, log) = start_server().await;
    let host = HostEmulator::new(&url);
    let event = fixture_json("functions/eventgrid-trigger-request.json")["Data"]["event"].clone();
    let events: Vec<Value> = (0..4)
        .map(|i| {
            let mut e = event.clone();
            e["id"] = json!(format!("ok-{i}"));
            e
        })
        .collect();

    let delivery = host.deliver_event_grid("Events", events).await;
    assert_eq!(delivery.status, 202);
    assert_eq!(delivery.outcomes.len(), 4);
    assert!(delivery.outcomes.iter().all(InvokeOutcome::is_success));
    // Four 300 ms invocations run in parallel, like the extension runs them.
    let max = EVENTS_MAX_IN_FLIGHT.load(Ordering::SeqCst);
    assert!(max >= 2, "invocations were not concurrent (max in flight {max})");

    let recorded = log.lock().unwrap().clone();
    assert_eq!(recorded.len(), 4);
    for r in &recorded {
        assert!(r.body["Data"]["event"].is_object(), "event arrives as an object");
        assert_eq!(r.body["Metadata"]["data"], event["data"]);
        assert_eq!(r.body["Metadata"]["sys"]["MethodName"], json!("Events"));
    }

    let mut bad = event.clone();
    bad["id"] = json!("bad");
    let delivery = host.deliver_event_grid("Events", vec![event.clone(), bad]).await;
    assert_eq!(delivery.status, 500);
    assert!(delivery.outcomes[0].is_success());
    assert!(!delivery.outcomes[1].is_success());

    // The host's webhook: validation handshake, notification, bad header.
    let validation = fixture_json("functions/eg-subscription-validation-event.json");
    let (status, body) =
        host.eventgrid_webhook("Events", Some("SubscriptionValidation"), validation.to_string().as_bytes()).await;
    assert_eq!((status, body), (200, json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})));
    let batch = json!([event]).to_string();
    assert_eq!(host.eventgrid_webhook("Events", Some("Notification"), batch.as_bytes()).await.0, 202);
    assert_eq!(host.eventgrid_webhook("Events", None, batch.as_bytes()).await.0, 400);
    assert_eq!(host.eventgrid_webhook("Events", Some("Unsubscribe"), b"").await.0, 202);
}

#[tokio::test]
async fn service_bus_encoding_and_metadata_pollution() {
    let (url, log) = start_server().await;
    let host = HostEmulator::new(&url);
    let props = ServiceBusProps {
        message_id: "m-1".into(),
        delivery_count: 2,
        correlation_id: Some("corr".into()),
        sequence_number: 42,
        content_type: Some("application/json".into()),
        ..ServiceBusProps::default()
    };
    let body =
        r#"{"deliveryCount":0,"MessageId":"evil","message":"hello","n":2,"flag":true,"nested":{"x":1},"list":[1]}"#;
    assert_eq!(host.deliver_service_bus("Echo", body, props.clone(), false).await, SbSettlement::Complete);

    let r = last(&log);
    assert_eq!(r.body["Data"]["msg"], Value::String(Value::String(body.into()).to_string()));
    let md = r.body["Metadata"].as_object().unwrap();
    // Body properties overwrite same-named keys (case-insensitively) ...
    assert_eq!(md.get("deliveryCount"), Some(&json!("\"0\"")));
    assert!(!md.contains_key("DeliveryCount"));
    assert_eq!(md["MessageId"], json!("\"evil\""));
    // ... scalars as (re-encoded) strings, objects as objects, arrays skipped.
    assert_eq!(md["message"], json!("\"hello\""));
    assert_eq!(md["n"], json!("\"2\""));
    assert_eq!(md["flag"], json!("\"True\""));
    assert_eq!(md["nested"], json!({"x": 1}));
    assert!(!md.contains_key("list"));
    // Untouched broker properties keep the host's encodings.
    assert_eq!(md["SequenceNumber"], json!("42"));
    assert_eq!(md["CorrelationId"], json!("\"corr\""));
    assert_eq!(md["ContentType"], json!("\"application/json\""));
    assert!(is_guid(&md["LockToken"].as_str().unwrap().replace('"', "")));
    assert!(is_host_datetime(md["ExpiresAtUtc"].as_str().unwrap()));
    assert!(md["EnqueuedTime"].as_str().unwrap().ends_with("+00:00"));
    assert_eq!(md["Client"]["IsClosed"], json!(false));
    assert_eq!(md["MessageActions"], json!({}));
    assert!(!md.contains_key("SessionId"), "unset properties are absent");
    assert!(md.contains_key("sys"));
    let req = InvocationRequest::from_value(r.body.clone()).unwrap();
    assert_eq!(req.data_value("msg").unwrap()["message"], json!("hello"));

    // dataType binary: base64 body, no pollution.
    assert_eq!(host.deliver_service_bus("Echo", body, props.clone(), true).await, SbSettlement::Complete);
    let r = last(&log);
    let msg = r.body["Data"]["msg"].as_str().unwrap();
    assert_eq!(private_link_autopilot::intake::protocol::decode_binary(&json!(msg)), Some(body.as_bytes().to_vec()));
    assert_eq!(r.body["Metadata"]["DeliveryCount"], json!("2"));
    assert_eq!(r.body["Metadata"]["MessageId"], json!("\"m-1\""));
    assert!(r.body["Metadata"].get("message").is_none());

    // A non-JSON body is not merged; a failing handler abandons.
    host.deliver_service_bus("Echo", "plain text", props.clone(), false).await;
    assert_eq!(last(&log).body["Metadata"]["DeliveryCount"], json!("2"));
    assert!(matches!(
        host.deliver_service_bus("Fail", body, props, false).await,
        SbSettlement::Abandon(reason) if reason.contains("500")
    ));
}

#[tokio::test]
async fn timer_and_http_shapes() {
    let (url, log) = start_server().await;
    let host = HostEmulator::new(&url);

    assert!(host.invoke_timer("Echo", true).await.unwrap().is_success());
    let timer = last(&log).body["Data"]["timer"].clone();
    assert_eq!(timer["Schedule"], json!({"AdjustForDST": true}));
    assert_eq!(timer["IsPastDue"], json!(true));
    for k in ["Last", "Next", "LastUpdated"] {
        assert!(timer["ScheduleStatus"][k].as_str().unwrap().ends_with("+00:00"), "{k}");
    }

    let res = host.invoke_http("Http", "get", "/api/status/pe1?verbose=1&x=a&x=b", None).await.unwrap();
    assert_eq!(res.status, 201);
    assert_eq!(res.body, json!({"url": "http://localhost:7071/api/status/pe1?verbose=1&x=a&x=b"}));
    assert_eq!(res.headers["Content-Type"], json!("application/json"));
    assert_eq!(res.failure, None);
    let r = last(&log);
    let req = &r.body["Data"]["req"];
    assert_eq!(req["Method"], json!("GET"));
    assert_eq!(req["Query"], json!({"verbose": "1", "x": "a,b"}));
    assert_eq!(req["Headers"]["Host"], json!(["localhost:7071"]));
    assert!(req.get("Body").is_none());
    assert_eq!(req["Params"], json!({}));
    assert!(req["Identities"].is_array());
    assert_eq!(r.body["Metadata"]["Query"], json!({"verbose": "1", "x": "a,b"}));
    assert_eq!(r.body["Metadata"]["Headers"]["Host"], json!("localhost:7071"));

    host.invoke_http("Http", "POST", "api/x", Some(json!({"a": 1}))).await.unwrap();
    assert_eq!(last(&log).body["Data"]["req"]["Body"], json!("{\"a\":1}"));

    let failed = host.invoke_http("Fail", "GET", "/api/x", None).await.unwrap();
    assert_eq!(failed.status, 500);
    assert!(failed.failure.is_some());
    let no_res = host.invoke_http("Echo", "GET", "/api/x", None).await.unwrap();
    assert_eq!(no_res.status, 500, "Echo returns no Outputs.res");
}

const PY_WRAPPER: &str = r#"echo "env port=$FUNCTIONS_CUSTOMHANDLER_PORT http=$FUNCTIONS_HTTPWORKER_PORT worker=$FUNCTIONS_CUSTOMHANDLER_WORKER_ID/$FUNCTIONS_HTTPWORKER_ID root=$FUNCTIONS_APP_ROOT_PATH cwd=$(pwd) extra=$AUTOPILOT_TEST_EXTRA" >&2
exec python3 -m http.server --bind 127.0.0.1 "$FUNCTIONS_CUSTOMHANDLER_PORT""#;

#[tokio::test]
async fn spawn_handler_waits_for_readiness() {
    let root = tempfile::tempdir().unwrap();
    let app_root = root.path().canonicalize().unwrap();
    let extra = [("AUTOPILOT_TEST_EXTRA".to_string(), "yes".to_string())];
    let handler = spawn_handler(std::path::Path::new("/bin/sh"), &["-c", PY_WRAPPER], &app_root, &extra)
        .await
        .expect("python http.server starts");
    eprintln!("python3 http.server ready after {:?}", handler.ready_after);
    assert!(handler.ready_after < Duration::from_secs(30));
    assert!(handler.base_url.starts_with("http://127.0.0.1:"));
    let port = handler.base_url.rsplit(':').next().unwrap().to_string();

    // http.server answers POST with 501: a non-2xx, so the invocation fails like on the host.
    let outcome = handler.host().invoke("Anything", Map::new(), Map::new()).await.unwrap();
    assert!(matches!(&outcome, InvokeOutcome::Failed(m) if m.contains("501")), "{outcome:?}");

    // stderr is captured line by line (give the reader task a moment).
    let mut env_line = None;
    for _ in 0..40 {
        env_line = handler.stderr_lines().into_iter().find(|l| l.starts_with("env "));
        if env_line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let env_line = env_line.expect("the wrapper's env line on stderr");
    assert!(env_line.contains(&format!("port={port} http={port}")), "{env_line}");
    assert!(env_line.contains(&format!("root={}", app_root.display())), "{env_line}");
    assert!(env_line.contains(&format!("cwd={}", app_root.display())), "{env_line}");
    assert!(env_line.contains("extra=yes"), "{env_line}");
    let worker = env_line.split("worker=").nth(1).unwrap().split(' ').next().unwrap();
    let (a, b) = worker.split_once('/').unwrap();
    assert!(is_guid(a) && a == b, "{worker}");

    // Dropping the handler kills the process: the port stops answering.
    let base = handler.base_url.clone();
    drop(handler);
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_millis(500)).build().unwrap();
    let mut gone = false;
    for _ in 0..80 {
        if client.get(format!("{base}/")).send().await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(gone, "handler still answering after drop");
}

#[tokio::test]
async fn spawn_handler_reports_early_exit_and_timeout() {
    let root = tempfile::tempdir().unwrap();
    let sh = std::path::Path::new("/bin/sh");
    let err = spawn_handler(sh, &["-c", "echo boom >&2; exit 3"], root.path(), &[]).await.unwrap_err();
    assert!(err.contains("exited") && err.contains("boom"), "{err}");

    let started = Instant::now();
    let err = spawn_handler_with_budget(sh, &["-c", "exec sleep 30"], root.path(), &[], Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(err.contains("did not answer"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A relative executable found under the app root is run from there (host behaviour).
    let script = root.path().join("handler.sh");
    std::fs::write(&script, "#!/bin/sh\necho relative-ok >&2\nexit 4\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let err = spawn_handler(std::path::Path::new("handler.sh"), &[], root.path(), &[]).await.unwrap_err();
    assert!(err.contains("relative-ok"), "{err}");

    let err = spawn_handler(std::path::Path::new("/nonexistent/handler"), &[], root.path(), &[]).await.unwrap_err();
    assert!(err.contains("cannot start"), "{err}");
}
