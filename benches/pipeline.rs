//! Handler benchmarks (issue 2 item 10), run with `cargo bench --bench pipeline`.
//!
//! Measures the release binary the Functions host would start, as a separate process:
//! 1. start-up: process spawn -> first successful `GET /` (the host's readiness probe),
//!    median of 30 runs;
//! 2. a burst of 1,000 Event Grid events (one invocation each, 100 in flight) against
//!    the fake ARM answering every request after a fixed latency: events/s and the
//!    handler's peak RSS (`VmHWM`).
//!
//! ARM's real budget (25 reads/s per subscription and principal) would bound a single
//! subscription to a few endpoints per second; the burst raises both the fake's and the
//! client's budgets so the number measures the handler, not the budget.
//!
//! `BENCH_PIN=1` (needs `taskset`) keeps this process (fake ARM, host emulator) on core 0 and
//! the handler on core 1, to see how much of the in-flight latency is the two sharing cores.

mod support;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{cpu_ms, free_port, median, percentile};

use autopilot_sandbox::events::{self, ResourceEvent};
use autopilot_sandbox::fake_arm::{EndpointSpec, FakeArm, FakeArmOptions, MemberSpec, SANDBOX_TOKEN};
use autopilot_sandbox::harness::{
    HUB_RESOURCE_GROUP, HUB_SUBSCRIPTION, SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB,
};
use autopilot_sandbox::host_emulator::HostEmulator;

const BIN: &str = env!("CARGO_BIN_EXE_autopilot");

fn ready(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(50)) else { return false };
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
}

fn spawn(port: u16, dir: &std::path::Path, arm_url: &str) -> Child {
    spawn_with(port, dir, arm_url, &[])
}

fn spawn_with(port: u16, dir: &std::path::Path, arm_url: &str, extra: &[(&str, &str)]) -> Child {
    // BENCH_PIN=1: the handler on core 1 (this process is on core 0, see `main`).
    let mut cmd = if pinned() {
        let mut c = Command::new("taskset");
        c.args(["-c", "1", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    cmd.arg("serve")
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("AUTOPILOT__QUEUE__PATH", dir.join(format!("q{port}.sqlite")))
        .env("AUTOPILOT__ARM__BASE_URL", arm_url)
        .env("AUTOPILOT__ARM__READS_BURST", "100000")
        .env("AUTOPILOT__ARM__READS_PER_SEC", "100000")
        .env("AUTOPILOT__ARM__WRITES_BURST", "100000")
        .env("AUTOPILOT__ARM__WRITES_PER_SEC", "100000")
        .env("AUTOPILOT__ARM__MAX_CONCURRENCY", "64")
        .env("AUTOPILOT__DNS__DEFAULT_SUBSCRIPTION", HUB_SUBSCRIPTION)
        .env("AUTOPILOT__DNS__DEFAULT_RESOURCE_GROUP", HUB_RESOURCE_GROUP)
        .env("AUTOPILOT_ARM_STATIC_TOKEN", SANDBOX_TOKEN)
        .env("AUTOPILOT_LOG", "warn")
        .env("AUTOPILOT__MARKS__ENABLED", std::env::var("BENCH_MARKS").unwrap_or("true".into()))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn autopilot serve")
}

fn pinned() -> bool {
    std::env::var("BENCH_PIN").is_ok_and(|v| v == "1")
}

fn proc_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn startup(dir: &std::path::Path) {
    let mut times = Vec::new();
    for _ in 0..30 {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let t = Instant::now();
        let mut child = spawn(port, dir, "http://127.0.0.1:9");
        while !ready(addr) {
            if t.elapsed() > Duration::from_secs(10) {
                panic!("handler not ready in 10 s");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        let _ = child.kill();
        let _ = child.wait();
    }
    let min = times.iter().copied().fold(f64::MAX, f64::min);
    println!("start-up to first health: median {:.1} ms (min {min:.1} ms, 30 runs)", median(times));
}

async fn burst(dir: &std::path::Path, latency_ms: u64, events_n: usize) -> (f64, f64, f64) {
    let options = FakeArmOptions {
        latency: Duration::from_millis(latency_ms),
        reads: (1_000_000, 1_000_000.0),
        writes: (1_000_000, 1_000_000.0),
        ..FakeArmOptions::default()
    };
    let arm = FakeArm::start(options).await.expect("fake ARM");
    arm.add_zone(HUB_SUBSCRIPTION, HUB_RESOURCE_GROUP, "privatelink.vaultcore.azure.net");
    let mut ids = Vec::new();
    for i in 0..events_n {
        let vault = format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/kv{i}");
        let spec = EndpointSpec::resource(
            SUB,
            RG,
            &format!("pe-kv{i}"),
            "eastus2",
            &vault,
            "vault",
            vec![MemberSpec::new("default", &[&format!("kv{i}.vault.azure.net")])],
        );
        ids.push(arm.put_endpoint(&spec));
    }
    let port = free_port();
    let mut child = spawn(port, dir, &arm.base_url());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while !ready(addr) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = child.id();
    let idle_rss = proc_kb(pid, "VmRSS:");
    let cpu_before = cpu_ms(pid);
    let host = HostEmulator::new(&format!("http://{addr}"));
    let gate = Arc::new(tokio::sync::Semaphore::new(100));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for id in &ids {
        let (host, gate) = (host.clone(), gate.clone());
        let event = events::event_grid(ResourceEvent::WriteSuccess, id);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            host.deliver_event_grid("PrivateEndpointEvents", vec![event]).await.status
        }));
    }
    let mut ok = 0;
    for task in tasks {
        if task.await.unwrap_or(0) == 202 {
            ok += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let peak = proc_kb(pid, "VmHWM:");
    let cpu_per_event = (cpu_ms(pid) - cpu_before) / events_n as f64;
    let records = arm.all_records().len();
    let _ = child.kill();
    let _ = child.wait();
    let rate = events_n as f64 / secs;
    println!(
        "  burst of {events_n} events, ARM latency {latency_ms} ms: {ok} acknowledged, {records} records, {rate:.0} events/s, \
         {cpu_per_event:.2} ms CPU per event, peak RSS {:.1} MB (idle {:.1} MB)",
        peak as f64 / 1024.0,
        idle_rss as f64 / 1024.0
    );
    (rate, peak as f64 / 1024.0, cpu_per_event)
}

/// Event -> record as a user feels it: every ARM call answers after `latency_ms`; each
/// event's time from delivery to the handler's acknowledgement (record written, marks
/// merged). `in_flight` events are delivered at once. Returns the per-event latencies (ms),
/// the ARM requests per event and the CPU per event on each side.
async fn event_latency(dir: &std::path::Path, latency_ms: u64, in_flight: usize) -> (Vec<f64>, f64, CpuSplit) {
    let options = FakeArmOptions {
        latency: Duration::from_millis(latency_ms),
        reads: (1_000_000, 1_000_000.0),
        writes: (1_000_000, 1_000_000.0),
        ..FakeArmOptions::default()
    };
    let arm = FakeArm::start(options).await.expect("fake ARM");
    arm.add_zone(HUB_SUBSCRIPTION, HUB_RESOURCE_GROUP, "privatelink.vaultcore.azure.net");
    let ids: Vec<String> = (0..in_flight)
        .map(|i| {
            let vault = format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/lat{i}");
            arm.put_endpoint(&EndpointSpec::resource(
                SUB,
                RG,
                &format!("pe-lat{i}"),
                "eastus2",
                &vault,
                "vault",
                vec![MemberSpec::new("default", &[&format!("lat{i}.vault.azure.net")])],
            ))
        })
        .collect();
    let port = free_port();
    // Every event in flight gets its own reconcile and its ARM calls go out at once: the
    // measure is the handler's path, not a concurrency cap.
    let parallel = in_flight.max(32).to_string();
    let concurrency = (in_flight * 2).max(64).to_string();
    let extra = [
        ("AUTOPILOT__RECONCILE__MAX_PARALLEL", parallel.as_str()),
        ("AUTOPILOT__ARM__MAX_CONCURRENCY", concurrency.as_str()),
    ];
    let mut child = spawn_with(port, dir, &arm.base_url(), &extra);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while !ready(addr) {
        std::thread::sleep(Duration::from_millis(1));
    }
    arm.clear_log();
    let pid = child.id();
    let (handler_before, fakes_before) = (cpu_ms(pid), cpu_ms(std::process::id()));
    let host = HostEmulator::new(&format!("http://{addr}"));
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let host = host.clone();
            let event = events::event_grid(ResourceEvent::WriteSuccess, id);
            tokio::spawn(async move {
                let t = Instant::now();
                let status = host.deliver_event_grid("PrivateEndpointEvents", vec![event]).await.status;
                (status, t.elapsed().as_secs_f64() * 1000.0)
            })
        })
        .collect();
    let mut times = Vec::new();
    for task in tasks {
        let (status, ms) = task.await.expect("delivery");
        assert_eq!(status, 202);
        times.push(ms);
    }
    let cpu = CpuSplit {
        handler_ms: (cpu_ms(pid) - handler_before) / in_flight as f64,
        fakes_ms: (cpu_ms(std::process::id()) - fakes_before) / in_flight as f64,
    };
    assert_eq!(arm.all_records().len(), in_flight, "every event's record is written");
    let per_event = arm.requests().len() as f64 / in_flight as f64;
    let _ = child.kill();
    let _ = child.wait();
    (times, per_event, cpu)
}

/// CPU per event (user + system) of the handler process and of this process, which runs
/// the fake ARM and the host emulator: both share the machine's cores, so both bound
/// event -> record latency when many events are in flight.
#[derive(Clone, Copy, Default)]
struct CpuSplit {
    handler_ms: f64,
    fakes_ms: f64,
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let dir = std::env::temp_dir().join(format!("autopilot-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    // BENCH_ONLY=latency runs only the event -> record measurements.
    let only_latency = std::env::var("BENCH_ONLY").is_ok_and(|v| v == "latency");
    if !only_latency {
        startup(&dir);
    }
    if pinned() {
        // Before the runtime starts, so all its threads (fake ARM, host emulator) stay on core 0.
        let pid = std::process::id().to_string();
        let status = Command::new("taskset").args(["-a", "-p", "-c", "0", &pid]).stdout(Stdio::null()).status();
        assert!(status.is_ok_and(|s| s.success()), "taskset failed");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    // One event at a time (10 runs), then 1,000 at once, ARM answering after 100 ms.
    let mut singles = Vec::new();
    let mut requests = 0.0;
    for _ in 0..10 {
        let (t, r, _) = rt.block_on(event_latency(&dir, 100, 1));
        singles.extend(t);
        requests = r;
    }
    println!(
        "event -> record, ARM at 100 ms per call: median {:.0} ms, p95 {:.0} ms (min {:.0}, max {:.0}; 10 runs), {requests:.0} ARM requests per event",
        median(singles.clone()),
        percentile(singles.clone(), 0.95),
        singles.iter().copied().fold(f64::MAX, f64::min),
        singles.iter().copied().fold(0.0, f64::max)
    );
    // BENCH_IN_FLIGHT_RUNS (default 1) repeats the 1,000-in-flight measurement.
    let runs: usize = std::env::var("BENCH_IN_FLIGHT_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    for _ in 0..runs {
        let (many, requests, cpu) = rt.block_on(event_latency(&dir, 100, 1000));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        // Every event waits for 3 sequential round trips; the CPU the 1,000 events need,
        // spread over the cores, comes on top for the median event (about half of it
        // is spent before the median event's last answer).
        println!(
            "event -> record, 1,000 events in flight, ARM at 100 ms per call: median {:.0} ms, p90 {:.0} ms, p95 {:.0} ms, \
             max {:.0} ms, {requests:.1} ARM requests per event; CPU per event: handler {:.3} ms, fake ARM + host emulator \
             {:.3} ms; all CPU over {cores} cores = {:.0} ms (handler alone {:.0} ms)",
            median(many.clone()),
            percentile(many.clone(), 0.9),
            percentile(many.clone(), 0.95),
            many.iter().copied().fold(0.0, f64::max),
            cpu.handler_ms,
            cpu.fakes_ms,
            (cpu.handler_ms + cpu.fakes_ms) * 1000.0 / cores,
            cpu.handler_ms * 1000.0 / cores,
        );
    }
    for latency in [0, 5].into_iter().filter(|_| !only_latency) {
        let runs: Vec<(f64, f64, f64)> = (0..3).map(|_| rt.block_on(burst(&dir, latency, 1000))).collect();
        println!(
            "burst of 1000 events, ARM latency {latency} ms: median {:.0} events/s, {:.2} ms CPU per reconciled event, \
             median peak RSS {:.1} MB (3 runs)",
            median(runs.iter().map(|r| r.0).collect()),
            median(runs.iter().map(|r| r.2).collect()),
            median(runs.iter().map(|r| r.1).collect())
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
