//! The floor under the pipeline benchmark: the same traffic with none of the product in it.
//!
//! Run with `cargo bench --bench floor`. Issue #16 wants one event to reach its record in
//! ≤ 350 ms with ARM answering every call after 100 ms, and the same with 1,000 events in
//! flight. With 1,000 in flight the pipeline bench is bound by CPU, so the question is what
//! the HTTP stack alone costs on this machine. This bench replays the pipeline's traffic with
//! stand-ins that do nothing but answer:
//! - "ARM": an axum server whose every route sleeps 100 ms, then returns a JSON body of about
//!   the real answer's size (sizes from the ARM examples in shared/fixtures/arm);
//! - "the handler": an axum server in a child process (this binary again, `FLOOR_ROLE=handler`),
//!   which for each invocation makes the pipeline's 5 ARM requests in its 3 sequential steps
//!   (endpoint; NIC and zone groups together; record PUT with `If-None-Match: *` and tag PATCH
//!   together) through one shared reqwest client, then answers like a custom handler;
//! - "the host": a driver in this process that fires N invocations at once (chunked JSON POSTs
//!   like the host emulator's) and times each.
//!
//! The crates are the product's own (same versions, same features), so the numbers are the
//! floor of hyper/reqwest/tokio over loopback TCP with zero product work: no JSON parsing, no
//! planning, no token, budget, RBAC or logging. `FLOOR_PIN=1` pins this process (ARM and
//! host) to core 0 and the handler to core 1 with `taskset`, to see whether sharing the cores
//! is what costs. `FLOOR_RUNS` (default 5) sets the number of 1,000-in-flight runs.

mod support;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{cpu_ms, free_port, median, percentile};

use axum::Router;
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{get, post};

/// Every "ARM" answer comes after this long, like the pipeline bench's fake ARM.
const ARM_LATENCY: Duration = Duration::from_millis(100);
/// Answer sizes in bytes, from the ARM examples: endpoint GET, NIC GET, zone-group listing,
/// record set PUT, tag PATCH (which returns the endpoint).
const ENDPOINT_BYTES: usize = 1_500;
const NIC_BYTES: usize = 2_240;
const ZONE_GROUPS_BYTES: usize = 900;
const RECORD_BYTES: usize = 400;
const TAGS_BYTES: usize = 1_500;
/// About the size of one Event Grid event as the host encodes it.
const INVOCATION_BYTES: usize = 1_600;

/// A JSON object of about `size` bytes: `{"id":"…","pad":"xxx…"}`.
fn json_of_size(size: usize) -> Bytes {
    let head = r#"{"id":"/subscriptions/00000000-0000-0000-0000-000000000000","pad":""#;
    let pad = size.saturating_sub(head.len() + 2);
    Bytes::from(format!("{head}{}\"}}", "x".repeat(pad)))
}

fn json_response(body: Bytes) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json; charset=utf-8")], body)
}

async fn arm_answer(size: usize) -> impl IntoResponse {
    tokio::time::sleep(ARM_LATENCY).await;
    json_response(json_of_size(size))
}

/// The "ARM" stand-in: one route per request the pipeline makes.
fn arm_router() -> Router {
    Router::new()
        .route("/endpoint/{n}", get(|| arm_answer(ENDPOINT_BYTES)).patch(|_: Bytes| arm_answer(TAGS_BYTES)))
        .route("/nic/{n}", get(|| arm_answer(NIC_BYTES)))
        .route("/zonegroups/{n}", get(|| arm_answer(ZONE_GROUPS_BYTES)))
        .route("/record/{n}", axum::routing::put(|_: Bytes| arm_answer(RECORD_BYTES)))
}

/// The "handler" stand-in: serves invocations until killed.
fn run_handler() {
    let port: u16 = std::env::var("FLOOR_PORT").expect("FLOOR_PORT").parse().expect("port");
    let arm = std::env::var("FLOOR_ARM").expect("FLOOR_ARM");
    // Like `#[tokio::main]` in the product: one worker per core this process may use.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("floor/0")
            .build()
            .expect("client");
        let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let app = Router::new().route("/", get(|| async { "ok" })).route(
            "/{function}",
            post(move |_: Bytes| {
                let (client, arm) = (client.clone(), arm.clone());
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async move { invocation(&client, &arm, n).await }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        axum::serve(listener, app).await.expect("serve");
    });
}

/// The pipeline's 5 ARM requests in its 3 sequential steps; bodies read, not parsed.
async fn invocation(client: &reqwest::Client, arm: &str, n: u64) -> impl IntoResponse + use<> {
    let send = |request: reqwest::RequestBuilder| async move {
        let response = request.header("Authorization", "Bearer floor").send().await.expect("ARM request");
        assert!(response.status().is_success());
        response.bytes().await.expect("ARM body").len()
    };
    let mut read = send(client.get(format!("{arm}/endpoint/{n}?api-version=2024-05-01"))).await;
    let (nic, groups) = tokio::join!(
        send(client.get(format!("{arm}/nic/{n}?api-version=2024-05-01"))),
        send(client.get(format!("{arm}/zonegroups/{n}?api-version=2024-05-01")))
    );
    let record_body = r#"{"properties":{"ttl":10,"aRecords":[{"ipv4Address":"10.0.0.4"}],"metadata":{"owner":"x"}}}"#;
    let tags_body = r#"{"tags":{"autopilot-dns":"privatelink.vaultcore.azure.net","autopilot-state":"ok"}}"#;
    let (record, tags) = tokio::join!(
        send(
            client
                .put(format!("{arm}/record/{n}?api-version=2024-06-01"))
                .header("If-None-Match", "*")
                .header(CONTENT_TYPE, "application/json")
                .body(record_body)
        ),
        send(
            client
                .patch(format!("{arm}/endpoint/{n}?api-version=2024-05-01"))
                .header(CONTENT_TYPE, "application/json")
                .body(tags_body)
        )
    );
    read += nic + groups + record + tags;
    json_response(Bytes::from(format!(r#"{{"Outputs":{{}},"Logs":[],"ReturnValue":{read}}}"#)))
}

/// Busy CPU of the whole machine so far, in ms (`/proc/stat`, all but idle and iowait), and the
/// part of it in interrupts (irq + softirq, where loopback TCP's receive path runs, and which
/// the kernel may charge to no process). The rest minus ours shows how much other work
/// (builds on this shared machine) ran during a run.
fn machine_busy_ms() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or_default();
    let ticks: Vec<f64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0.0);
    let total: f64 = ticks.iter().take(8).sum();
    ((total - at(3) - at(4)) * 10.0, (at(5) + at(6)) * 10.0)
}

fn spawn_handler(port: u16, arm: &str, pin: bool) -> Child {
    let exe = std::env::current_exe().expect("own path");
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.arg("-c").arg("1").arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.env("FLOOR_ROLE", "handler")
        .env("FLOOR_PORT", port.to_string())
        .env("FLOOR_ARM", arm)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd.spawn().expect("spawn handler")
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let t = Instant::now();
    while client.get(format!("{base}/")).send().await.is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "handler not ready in 10 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A one-chunk body with no size hint, so hyper sends it chunked like the host does.
struct ChunkedBody(Option<Bytes>);

impl http_body::Body for ChunkedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }
}

struct Run {
    latencies: Vec<f64>,
    handler_cpu_ms: f64,
    host_cpu_ms: f64,
    /// Interrupt CPU (irq + softirq) of the whole machine during the run, per event.
    irq_cpu_ms: f64,
    /// CPU used by other processes during the run (outside interrupts), per event.
    others_cpu_ms: f64,
}

/// One run: a fresh "ARM", a fresh handler process, `n` invocations fired at once.
async fn run(n: usize, pin: bool) -> Run {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind ARM");
    let arm_addr: SocketAddr = listener.local_addr().expect("ARM addr");
    let arm = tokio::spawn(async move { axum::serve(listener, arm_router()).await });
    let port = free_port();
    let mut child = spawn_handler(port, &format!("http://{arm_addr}"), pin);
    let base = format!("http://127.0.0.1:{port}");
    // Like the host emulator: a fresh client per handler, no proxy.
    let host = reqwest::Client::builder().no_proxy().connect_timeout(Duration::from_secs(5)).build().expect("client");
    wait_ready(&host, &base).await;
    let pid = child.id();
    let (handler_before, host_before, busy_before) = (cpu_ms(pid), cpu_ms(std::process::id()), machine_busy_ms());
    let invocation = json_of_size(INVOCATION_BYTES);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (host, url, body) = (host.clone(), format!("{base}/PrivateEndpointEvents"), invocation.clone());
            tokio::spawn(async move {
                let t = Instant::now();
                let response = host
                    .post(url)
                    .header(CONTENT_TYPE, "application/json; charset=utf-8")
                    .header("X-Azure-Functions-InvocationId", "00000000-0000-0000-0000-000000000000")
                    .body(reqwest::Body::wrap(ChunkedBody(Some(body))))
                    .send()
                    .await
                    .expect("invocation");
                assert!(response.status().is_success());
                let _ = response.bytes().await.expect("invocation body");
                t.elapsed().as_secs_f64() * 1000.0
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    for task in tasks {
        latencies.push(task.await.expect("delivery"));
    }
    let handler_cpu_ms = (cpu_ms(pid) - handler_before) / n as f64;
    let host_cpu_ms = (cpu_ms(std::process::id()) - host_before) / n as f64;
    let busy_after = machine_busy_ms();
    let irq_cpu_ms = (busy_after.1 - busy_before.1) / n as f64;
    let others_cpu_ms = (busy_after.0 - busy_before.0) / n as f64 - irq_cpu_ms - handler_cpu_ms - host_cpu_ms;
    let _ = child.kill();
    let _ = child.wait();
    arm.abort();
    Run { latencies, handler_cpu_ms, host_cpu_ms, irq_cpu_ms, others_cpu_ms }
}

fn main() {
    if std::env::var("FLOOR_ROLE").is_ok_and(|r| r == "handler") {
        run_handler();
        return;
    }
    let pin = std::env::var("FLOOR_PIN").is_ok_and(|v| v == "1");
    if pin {
        // Before the runtime starts, so every thread it makes inherits core 0.
        let status = Command::new("taskset")
            .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status()
            .expect("taskset");
        assert!(status.success(), "taskset failed");
    }
    let label = if pin { "pinned (ARM + host on core 0, handler on core 1)" } else { "not pinned" };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut singles = Vec::new();
    for _ in 0..10 {
        singles.extend(rt.block_on(run(1, pin)).latencies);
    }
    println!(
        "floor, {label}, 1 event, ARM at 100 ms: median {:.1} ms, p95 {:.1} ms, max {:.1} ms (10 runs)",
        median(singles.clone()),
        percentile(singles.clone(), 0.95),
        singles.iter().copied().fold(0.0, f64::max)
    );
    let runs: usize = std::env::var("FLOOR_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let (mut medians, mut p95s, mut maxes) = (Vec::new(), Vec::new(), Vec::new());
    let mut handler = Vec::new();
    let mut host = Vec::new();
    for _ in 0..runs {
        let r = rt.block_on(run(1000, pin));
        let m = median(r.latencies.clone());
        println!(
            "floor, {label}, 1,000 in flight: median {m:.0} ms, p95 {:.0} ms, max {:.0} ms; CPU per event: handler {:.3} ms, \
             ARM + host {:.3} ms, irq + softirq {:.3} ms, other processes {:.3} ms",
            percentile(r.latencies.clone(), 0.95),
            r.latencies.iter().copied().fold(0.0, f64::max),
            r.handler_cpu_ms,
            r.host_cpu_ms,
            r.irq_cpu_ms,
            r.others_cpu_ms
        );
        medians.push(m);
        p95s.push(percentile(r.latencies.clone(), 0.95));
        maxes.push(r.latencies.iter().copied().fold(0.0, f64::max));
        handler.push(r.handler_cpu_ms);
        host.push(r.host_cpu_ms);
    }
    println!(
        "floor, {label}, 1,000 in flight, medians of {runs} runs: latency median {:.0} ms, p95 {:.0} ms, max {:.0} ms; \
         CPU per event: handler {:.3} ms, ARM + host {:.3} ms",
        median(medians),
        median(p95s),
        median(maxes),
        median(handler),
        median(host)
    );
}
