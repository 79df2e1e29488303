//! ARM client against a tiny scripted HTTP server on 127.0.0.1: retries, Retry-After,
//! timeouts, error bodies, client-side throttling, long-running operations, paging, and
//! that the bearer token never leaks into logs, `Debug` output or other hosts.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use private_link_autopilot::arm::client::{CODE_UNTRUSTED_URL, Method};
use private_link_autopilot::arm::credential::StaticToken;
use private_link_autopilot::arm::{ArmClient, ArmConfig, ArmError, ArmRequest, Secret};
use serde_json::{Value, json};

const TOKEN: &str = "tok-4f7c2e9a-never-log-me";

// ---------------------------------------------------------------- log capture

/// Everything any test logs, at every level, from every crate.
fn log_buffer() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = BufWriter(buf.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        // Another test binary cannot interfere: each test file is its own process.
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

#[derive(Clone)]
struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------- test server

#[derive(Debug, Clone)]
struct Hit {
    method: String,
    path: String,
    query: String,
    auth: Option<String>,
    at: Instant,
}

#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    fn new(status: u16) -> Self {
        Self { status, headers: vec![], body: String::new(), delay: Duration::ZERO }
    }
    fn json(status: u16, v: Value) -> Self {
        Self::new(status).body(&v.to_string()).header("content-type", "application/json")
    }
    fn body(mut self, b: &str) -> Self {
        self.body = b.into();
        self
    }
    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

/// `(hit, index of this hit among all hits, server base URL) -> reply`.
type Script = Arc<dyn Fn(&Hit, usize, &str) -> Reply + Send + Sync>;

#[derive(Clone)]
struct Srv {
    base: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    script: Script,
}

impl Srv {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("hits").clone()
    }
}

async fn handle(State(s): State<Srv>, req: Request) -> Response {
    let hit = Hit {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().unwrap_or_default().to_string(),
        auth: req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string),
        at: Instant::now(),
    };
    let n = {
        let mut hits = s.hits.lock().expect("hits");
        hits.push(hit.clone());
        hits.len() - 1
    };
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let reply = (s.script)(&hit, n, &s.base);
    tokio::time::sleep(reply.delay).await;
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut resp = (StatusCode::from_u16(reply.status).expect("status"), reply.body).into_response();
    for (k, v) in reply.headers {
        resp.headers_mut()
            .insert(HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(&v).expect("value"));
    }
    resp
}

async fn serve(script: impl Fn(&Hit, usize, &str) -> Reply + Send + Sync + 'static) -> Srv {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let srv = Srv {
        base,
        hits: Arc::default(),
        in_flight: Arc::default(),
        max_in_flight: Arc::default(),
        script: Arc::new(script),
    };
    let app = Router::new().fallback(handle).with_state(srv.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    srv
}

fn config(base: &str) -> ArmConfig {
    ArmConfig {
        base_url: base.into(),
        request_timeout: Duration::from_secs(5),
        max_retries: 3,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        lro_poll_min: Duration::from_millis(10),
        lro_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

fn client(cfg: ArmConfig) -> ArmClient {
    log_buffer();
    ArmClient::new(cfg, Arc::new(StaticToken(Secret::new(TOKEN)))).expect("client")
}

const PE: &str = "/subscriptions/SUB-1/resourceGroups/rg/providers/Microsoft.Network/privateEndpoints/pe1";

fn not_found() -> Reply {
    Reply::json(
        404,
        json!({"error": {"code": "ResourceNotFound", "message": "The Resource 'Microsoft.Network/privateEndpoints/pe1' under resource group 'rg' was not found.", "details": []}}),
    )
}

// ---------------------------------------------------------------- retries

#[tokio::test]
async fn throttled_429_waits_for_retry_after_then_succeeds() {
    let srv = serve(|_, n, _| {
        if n == 0 {
            Reply::json(429, json!({"error": {"code": "TooManyRequests", "message": "slow down"}}))
                .header("retry-after", "1")
        } else {
            Reply::json(200, json!({"name": "pe1"}))
        }
    })
    .await;
    let c = client(config(&srv.base));
    let start = Instant::now();
    let resp = c.send(ArmRequest::get(PE, "2025-07-01")).await.expect("ok after retry");
    assert!(start.elapsed() >= Duration::from_secs(1), "{:?}", start.elapsed());
    assert_eq!(resp.body["name"], "pe1");
    let hits = srv.hits();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].path, PE);
    assert_eq!(hits[0].query, "api-version=2025-07-01");
    assert_eq!(hits[0].auth.as_deref(), Some(format!("Bearer {TOKEN}").as_str()));
}

#[tokio::test]
async fn two_500s_then_200_takes_three_attempts() {
    let srv = serve(|_, n, _| if n < 2 { Reply::new(500).body("oops") } else { Reply::new(200) }).await;
    let c = client(config(&srv.base));
    let resp = c.send(ArmRequest::get(PE, "v")).await.expect("ok");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, Value::Null, "empty body is Null");
    assert_eq!(srv.hits().len(), 3);
}

#[tokio::test]
async fn a_hanging_attempt_times_out_and_is_retried() {
    let srv = serve(|_, n, _| {
        if n == 0 { Reply::new(200).body("late").delay(Duration::from_secs(3)) } else { Reply::new(200).body("fresh") }
    })
    .await;
    let c = client(ArmConfig { request_timeout: Duration::from_millis(300), ..config(&srv.base) });
    let start = Instant::now();
    let resp = c.send(ArmRequest::get(PE, "v")).await.expect("ok");
    assert_eq!(resp.body, Value::String("fresh".into()), "non-JSON 2xx body is a string");
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    assert_eq!(srv.hits().len(), 2);
}

#[tokio::test]
async fn not_found_is_final_after_one_attempt() {
    let srv = serve(|_, _, _| not_found()).await;
    let c = client(config(&srv.base));
    let err = c.send(ArmRequest::get(PE, "v")).await.expect_err("404");
    match &err {
        ArmError::Api { method, path, status, code, message, retry_after } => {
            assert_eq!((*method, path.as_str(), *status, code.as_str()), (Method::Get, PE, 404, "ResourceNotFound"));
            assert!(message.contains("was not found"));
            assert_eq!(*retry_after, None);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!err.is_transient());
    assert_eq!(srv.hits().len(), 1);
}

#[tokio::test]
async fn non_json_error_body_becomes_http_code_and_clean_text() {
    let page = format!("<html><body>\r\n\tForbidden by proxy\u{1b}[0m {}</body></html>", "z".repeat(400));
    let srv = serve(move |_, _, _| Reply::new(403).body(&page).header("content-type", "text/html")).await;
    let c = client(config(&srv.base));
    let err = c.send(ArmRequest::get(PE, "v")).await.expect_err("403");
    let ArmError::Api { status, code, message, .. } = &err else { panic!("unexpected {err:?}") };
    assert_eq!((*status, code.as_str()), (403, "HTTP403"));
    assert!(message.starts_with("<html><body>Forbidden by proxy"), "{message}");
    assert_eq!(message.chars().count(), 300);
    assert!(!message.chars().any(char::is_control));
    assert_eq!(srv.hits().len(), 1);
}

#[tokio::test]
async fn exhausted_retries_return_the_error_with_retry_after() {
    let srv = serve(|_, _, _| {
        Reply::json(503, json!({"error": {"code": "ServiceUnavailable", "message": "busy"}}))
            .header("retry-after-ms", "20")
    })
    .await;
    let c = client(ArmConfig { max_retries: 2, ..config(&srv.base) });
    let err = c.send(ArmRequest::get(PE, "v")).await.expect_err("503");
    assert_eq!(err.status(), Some(503));
    assert_eq!(err.code(), Some("ServiceUnavailable"));
    assert_eq!(err.retry_after(), Some(Duration::from_millis(20)));
    assert!(err.is_transient());
    assert_eq!(srv.hits().len(), 3);
}

#[tokio::test]
async fn another_operation_in_progress_is_retried_but_conflict_is_not() {
    let srv = serve(|hit, n, _| {
        if hit.path.ends_with("/busy") && n == 0 {
            Reply::json(409, json!({"error": {"code": "AnotherOperationInProgress", "message": "wait"}}))
        } else if hit.path.ends_with("/busy") {
            Reply::json(200, json!({}))
        } else {
            Reply::json(409, json!({"code": "Conflict", "message": "nope"}))
        }
    })
    .await;
    let c = client(config(&srv.base));
    let put = |p: &str| ArmRequest::new(Method::Put, format!("/subscriptions/s/x{p}"), "v").body(json!({"a": 1}));
    assert!(c.send(put("/busy")).await.is_ok());
    let err = c.send(put("/other")).await.expect_err("conflict");
    assert_eq!((err.status(), err.code()), (Some(409), Some("Conflict")));
    assert_eq!(srv.hits().len(), 3);
}

#[tokio::test]
async fn connection_refused_is_a_transport_error_after_retries() {
    // Bind and drop to get a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let c = client(ArmConfig { max_retries: 1, ..config(&format!("http://127.0.0.1:{port}")) });
    let err = c.send(ArmRequest::get(PE, "v")).await.expect_err("refused");
    let ArmError::Transport { path, message, .. } = &err else { panic!("unexpected {err:?}") };
    assert_eq!(path, PE);
    assert!(!message.contains("api-version"), "no URL/query in the message: {message}");
    eprintln!("transport error: {err}");
    assert!(err.is_transient());
}

// ---------------------------------------------------------------- budget

#[tokio::test]
async fn read_bucket_limits_the_rate() {
    let srv = serve(|_, _, _| Reply::json(200, json!({}))).await;
    let c = client(ArmConfig { reads: (5, 10.0), ..config(&srv.base) });
    let start = Instant::now();
    let calls = (0..25).map(|_| c.send(ArmRequest::get(PE, "v")));
    for r in futures_join_all(calls).await {
        r.expect("ok");
    }
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(1800), "{elapsed:?}");
    let hits = srv.hits();
    assert_eq!(hits.len(), 25);
    // In any stretch of time, at most burst + rate * duration requests (+2 for scheduling jitter).
    for i in 0..hits.len() {
        for j in i..hits.len() {
            let span = hits[j].at.duration_since(hits[i].at).as_secs_f64();
            let count = (j - i + 1) as f64;
            assert!(count <= 5.0 + 10.0 * span + 2.0, "{count} requests in {span:.3}s");
        }
    }
    eprintln!("25 GETs at 5 burst + 10/s took {elapsed:?}");
}

#[tokio::test]
async fn a_429_pauses_the_bucket_for_other_callers() {
    let srv = serve(|hit, _, _| {
        if hit.path.contains("/sub-a/") && hit.path.ends_with("/first") {
            Reply::new(429).header("retry-after", "1")
        } else {
            Reply::json(200, json!({}))
        }
    })
    .await;
    let c = client(ArmConfig { max_retries: 0, ..config(&srv.base) });
    let err = c.send(ArmRequest::get("/subscriptions/sub-a/x/first", "v")).await.expect_err("429");
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));

    let start = Instant::now();
    c.send(ArmRequest::get("/subscriptions/sub-b/x", "v")).await.expect("other subscription");
    assert!(start.elapsed() < Duration::from_millis(500), "other buckets are not paused");
    c.send(ArmRequest::get("/subscriptions/SUB-A/x/second", "v")).await.expect("after pause");
    assert!(start.elapsed() >= Duration::from_millis(900), "{:?}", start.elapsed());
}

#[tokio::test]
async fn remaining_quota_headers_lower_the_bucket() {
    let srv =
        serve(|_, _, _| Reply::json(200, json!({})).header("x-ms-ratelimit-remaining-subscription-reads", "0")).await;
    let c = client(ArmConfig { reads: (100, 5.0), ..config(&srv.base) });
    c.send(ArmRequest::get(PE, "v")).await.expect("first");
    let start = Instant::now();
    c.send(ArmRequest::get(PE, "v")).await.expect("second");
    // ARM says 0 left: the next token takes 1/5 s to refill.
    assert!(start.elapsed() >= Duration::from_millis(180), "{:?}", start.elapsed());
}

#[tokio::test]
async fn resource_graph_has_its_own_bucket() {
    let srv = serve(|_, _, _| Reply::json(200, json!({"data": []}))).await;
    let c = client(ArmConfig { resource_graph: (2, Duration::from_millis(500)), ..config(&srv.base) });
    let start = Instant::now();
    for _ in 0..4 {
        let q = ArmRequest::new(Method::Post, "/providers/Microsoft.ResourceGraph/resources", "2024-04-01")
            .body(json!({"query": "Resources | project id"}));
        c.send(q).await.expect("query");
    }
    assert!(start.elapsed() >= Duration::from_millis(450), "{:?}", start.elapsed());
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let srv = serve(|_, _, _| Reply::json(200, json!({})).delay(Duration::from_millis(100))).await;
    let c = client(ArmConfig { max_concurrency: 3, ..config(&srv.base) });
    let calls = (0..12).map(|i| c.send(ArmRequest::get(format!("/subscriptions/s{i}/x"), "v")));
    for r in futures_join_all(calls).await {
        r.expect("ok");
    }
    let max = srv.max_in_flight.load(Ordering::SeqCst);
    assert!((2..=3).contains(&max), "max in flight {max}");
}

// ---------------------------------------------------------------- long-running operations

const ZONE: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/privateDnsZones/z.example";

#[tokio::test]
async fn azure_async_operation_is_polled_then_the_resource_is_read() {
    let polls = AtomicUsize::new(0);
    let srv = serve(move |hit, _, base| match (hit.method.as_str(), hit.path.as_str()) {
        ("PUT", ZONE) => Reply::json(201, json!({"properties": {"provisioningState": "Creating"}}))
            .header("azure-asyncoperation", &format!("{base}/subscriptions/s/providers/Microsoft.Network/privateDnsOperationStatuses/op1?api-version=2024-06-01"))
            .header("location", &format!("{base}/subscriptions/s/providers/Microsoft.Network/privateDnsOperationResults/op1?api-version=2024-06-01"))
            .header("retry-after", "0"),
        ("GET", p) if p.ends_with("/privateDnsOperationStatuses/op1") => {
            // The third poll succeeds; status values compare case-insensitively.
            let status = if polls.fetch_add(1, Ordering::SeqCst) < 2 { "InProgress" } else { "succeeded" };
            Reply::json(200, json!({"status": status}))
        }
        ("GET", ZONE) => Reply::json(200, json!({"name": "z.example", "properties": {"provisioningState": "Succeeded"}})),
        _ => not_found(),
    })
    .await;
    let c = client(config(&srv.base));
    let req = ArmRequest::new(Method::Put, ZONE, "2024-06-01").body(json!({"location": "global"}));
    let resp = c.send_and_wait(req).await.expect("lro");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body["properties"]["provisioningState"], "Succeeded");
    let hits = srv.hits();
    let seq: Vec<_> =
        hits.iter().map(|h| format!("{} {}", h.method, h.path.rsplit('/').next().unwrap_or(""))).collect();
    assert_eq!(seq, ["PUT z.example", "GET op1", "GET op1", "GET op1", "GET z.example"]);
    assert_eq!(hits[1].query, "api-version=2024-06-01", "the polling URL is followed as given");
    assert!(hits.iter().all(|h| h.auth.as_deref() == Some(format!("Bearer {TOKEN}").as_str())));
}

#[tokio::test]
async fn location_is_polled_until_it_stops_answering_202() {
    let polls = AtomicUsize::new(0);
    let srv = serve(move |hit, _, base| match (hit.method.as_str(), hit.path.as_str()) {
        ("DELETE", ZONE) => {
            Reply::new(202).header("location", &format!("{base}/subscriptions/s/operationResults/del1?api-version=v"))
        }
        ("GET", "/subscriptions/s/operationResults/del1") if polls.fetch_add(1, Ordering::SeqCst) < 2 => {
            Reply::new(202)
        }
        ("GET", "/subscriptions/s/operationResults/del1") => Reply::json(200, json!({"deleted": true})),
        _ => not_found(),
    })
    .await;
    let c = client(config(&srv.base));
    let resp = c.send_and_wait(ArmRequest::new(Method::Delete, ZONE, "v")).await.expect("lro");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, json!({"deleted": true}));
    assert_eq!(srv.hits().len(), 4, "DELETE + 202 + 202 + 200");
}

#[tokio::test]
async fn synchronous_answers_are_returned_at_once() {
    let srv = serve(|_, _, _| Reply::json(201, json!({"name": "recorda"}))).await;
    let c = client(config(&srv.base));
    let put = ArmRequest::new(Method::Put, format!("{ZONE}/A/recordA"), "v").body(json!({"properties": {"ttl": 10}}));
    let resp = c.send_and_wait(put).await.expect("201 without polling headers");
    assert_eq!((resp.status, resp.body["name"].as_str()), (201, Some("recorda")));
    assert_eq!(srv.hits().len(), 1);
}

#[tokio::test]
async fn a_failed_operation_carries_its_error() {
    let srv = serve(|hit, _, base| match hit.method.as_str() {
        "PUT" => Reply::new(202).header("azure-asyncoperation", &format!("{base}/subscriptions/s/operations/op2")),
        _ => Reply::json(
            200,
            json!({"status": "Failed", "error": {"code": "InvalidPrivateLinkServiceId", "message": "alias not found"}}),
        ),
    })
    .await;
    let c = client(config(&srv.base));
    let err = c.send_and_wait(ArmRequest::new(Method::Put, PE, "v").body(json!({}))).await.expect_err("failed");
    match err {
        ArmError::Operation { path, status, code, message } => {
            assert_eq!((path.as_str(), status.as_str(), code.as_str()), (PE, "Failed", "InvalidPrivateLinkServiceId"));
            assert_eq!(message, "alias not found");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn an_operation_that_never_ends_times_out() {
    let srv = serve(|hit, _, base| match hit.method.as_str() {
        "PUT" => Reply::new(202).header("azure-asyncoperation", &format!("{base}/subscriptions/s/operations/op3")),
        _ => Reply::json(200, json!({"status": "Running"})),
    })
    .await;
    let c = client(ArmConfig { lro_timeout: Duration::from_millis(300), ..config(&srv.base) });
    let start = Instant::now();
    let err = c.send_and_wait(ArmRequest::new(Method::Put, PE, "v")).await.expect_err("timeout");
    assert!(matches!(&err, ArmError::Operation { status, .. } if status == "TimedOut"), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_polling_url_on_another_host_is_refused_without_sending_the_token() {
    let elsewhere = serve(|_, _, _| Reply::json(200, json!({"status": "Succeeded"}))).await;
    let other = elsewhere.base.clone();
    let srv = serve(move |_, _, _| {
        Reply::new(202).header("azure-asyncoperation", &format!("{other}/subscriptions/s/operations/steal"))
    })
    .await;
    let c = client(config(&srv.base));
    let err = c.send_and_wait(ArmRequest::new(Method::Delete, PE, "v")).await.expect_err("refused");
    assert_eq!(err.code(), Some(CODE_UNTRUSTED_URL));
    assert!(err.to_string().contains("refusing to follow"), "{err}");
    assert!(!err.is_transient());
    assert!(elsewhere.hits().is_empty(), "nothing may reach the other host");
}

// ---------------------------------------------------------------- paging

#[tokio::test]
async fn next_link_pages_are_concatenated() {
    let srv = serve(|hit, _, base| {
        let list = format!("{ZONE}/A");
        if hit.path != list {
            return not_found();
        }
        if hit.query.contains("$skipToken=p3") {
            Reply::json(200, json!({"value": [{"name": "c"}]}))
        } else if hit.query.contains("$skipToken=p2") {
            Reply::json(200, json!({"value": [], "nextLink": format!("{base}{list}?api-version=2024-06-01&$skipToken=p3")}))
        } else {
            Reply::json(
                200,
                json!({"value": [{"name": "a"}, {"name": "b"}], "nextLink": format!("{base}{list}?api-version=2024-06-01&$skipToken=p2")}),
            )
        }
    })
    .await;
    let c = client(config(&srv.base));
    let items = c.list_all(&format!("{ZONE}/A"), "2024-06-01").await.expect("list");
    let names: Vec<_> = items.iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(srv.hits().len(), 3);
}

#[tokio::test]
async fn next_link_to_another_host_is_refused() {
    let srv = serve(|_, _, _| {
        Reply::json(200, json!({"value": [1], "nextLink": "https://evil.example/subscriptions/s/x?api-version=v"}))
    })
    .await;
    let c = client(config(&srv.base));
    let err = c.list_all("/subscriptions/s/x", "v").await.expect_err("refused");
    assert_eq!(err.code(), Some(CODE_UNTRUSTED_URL));
    assert_eq!(srv.hits().len(), 1);
}

// ---------------------------------------------------------------- secrets

#[tokio::test]
async fn the_token_never_reaches_logs_or_debug_output() {
    let buf = log_buffer();
    let srv = serve(
        |_, n, _| if n == 0 { Reply::new(503).header("retry-after-ms", "5") } else { Reply::json(200, json!({})) },
    )
    .await;
    let c = client(config(&srv.base));
    c.send(ArmRequest::get(PE, "v").header("If-Match", "\"etag-1\"")).await.expect("ok after a retry");
    let _ = c.send(ArmRequest::get("/subscriptions/s/missing", "v")).await;

    let debug = format!("{c:?}");
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(debug.contains(&srv.base));

    let logs = String::from_utf8_lossy(&buf.lock().expect("buf")).into_owned();
    assert!(logs.contains("ARM request"), "our debug! lines are captured");
    assert!(logs.contains("will be retried"), "our warn! lines are captured");
    assert!(!logs.contains(TOKEN), "token leaked into logs");
    assert!(!logs.contains("api-version"), "no query strings in logs");
}

/// `join_all` without pulling in the futures crate: spawn-free, polls all in one task.
async fn futures_join_all<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().flatten().collect()
}
