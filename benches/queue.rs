//! Queue and worker benchmarks (issue 3 item 8), run with `cargo bench --bench queue`.
//!
//! 1. The embedded queue alone: enqueue, receive and complete 10,000 messages on a file
//!    (SQLite in WAL mode, as `serve` uses it), one consumer and four, median of 3 runs.
//! 2. The vendor worker: 900 vendor work items (300 endpoints each for ClickHouse, Elastic
//!    and Zilliz) queued at once, drained by the embedded queue's 4 workers, each item
//!    re-reading the endpoint from the fake ARM, writing the ledger and calling the fake
//!    vendor (look, then write), against fakes answering after a fixed latency. Median of
//!    3 runs per latency.
//!
//! The vendors' real rate limits (ClickHouse 10 requests / 10 s per key) would make the
//! second number "the limit", so both the fakes' and the clients' limits are lifted:
//! the number measures the worker, not the vendors. Approval re-checks are off for the
//! same reason.

mod support;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::median;

use autopilot_sandbox::fake_arm::{EndpointSpec, FakeArmOptions};
use autopilot_sandbox::harness::{SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB, Sandbox, SandboxOptions};
use autopilot_sandbox::vendors::{
    CLICKHOUSE_ALIAS as CH_ALIAS, ELASTIC_ALIAS as ES_ALIAS, SandboxVendors, ZILLIZ_ALIAS as ZZ_ALIAS, ZONES,
};
use private_link_autopilot::config::Config;
use private_link_autopilot::model::ResourceId;
use private_link_autopilot::queue::{NewMessage, SqliteQueue, WorkQueue, work};

const QUEUE_MESSAGES: usize = 10_000;
const PER_VENDOR: usize = 300;
const WORKERS: usize = 4;

fn message(key: &str) -> NewMessage {
    NewMessage {
        dedupe_key: key.to_owned(),
        correlation_id: format!("/subscriptions/{SUB}/bench/{key}"),
        body: serde_json::json!({ "envelope": { "v": 1, "key": key } }),
        delay: Duration::ZERO,
    }
}

/// Messages/s for enqueue + receive + complete, with `consumers` concurrent consumers.
async fn embedded_queue(dir: &std::path::Path, run: usize, consumers: usize) -> f64 {
    let path = dir.join(format!("queue-{consumers}-{run}.sqlite"));
    let q = Arc::new(SqliteQueue::open(&path).expect("open queue"));
    let started = Instant::now();
    for i in 0..QUEUE_MESSAGES {
        q.enqueue(message(&format!("m-{i:05}"))).await.expect("enqueue");
    }
    let tasks: Vec<_> = (0..consumers)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move {
                let mut n = 0usize;
                while let Some(d) = q.receive(Duration::ZERO, Duration::from_secs(60)).await.expect("receive") {
                    q.complete(&d).await.expect("complete");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut received = 0;
    for t in tasks {
        received += t.await.expect("consumer");
    }
    assert_eq!(received, QUEUE_MESSAGES, "every message received once");
    QUEUE_MESSAGES as f64 / started.elapsed().as_secs_f64()
}

/// Vendor work items/s through the workers, vendors answering after `latency`.
async fn vendor_worker(latency: Duration) -> f64 {
    let vendors = SandboxVendors::start_with(|ch, es, zz| {
        ch.rate_limit = None;
        es.rate_limit = None;
        zz.rate_limit = None;
    })
    .await
    .expect("fake vendors");
    vendors.clickhouse.set_latency(latency);
    vendors.elastic.set_latency(latency);
    vendors.zilliz.set_latency(latency);
    let mut base = Config::default();
    vendors.configure(&mut base);
    let mut section = base.vendors.clone();
    for limit in [
        (&mut section.clickhouse.rate_limit_requests, &mut section.clickhouse.rate_limit_window_ms),
        (&mut section.elastic.rate_limit_requests, &mut section.elastic.rate_limit_window_ms),
        (&mut section.zilliz.rate_limit_requests, &mut section.zilliz.rate_limit_window_ms),
    ] {
        *limit.0 = 1_000_000;
        *limit.1 = 1_000;
    }
    let options = SandboxOptions {
        arm: FakeArmOptions {
            reads: (1_000_000, 1_000_000.0),
            writes: (1_000_000, 1_000_000.0),
            ..FakeArmOptions::default()
        },
        zones: ZONES.iter().map(|z| (*z).to_owned()).collect(),
        configure: Box::new(move |c: &mut Config| {
            c.vendors = section;
            c.marks.recheck_window_secs = 0;
            for (burst, rate) in [
                (&mut c.arm.reads_burst, &mut c.arm.reads_per_sec),
                (&mut c.arm.writes_burst, &mut c.arm.writes_per_sec),
            ] {
                *burst = 1_000_000;
                *rate = 1_000_000.0;
            }
        }),
        env: vendors.env(),
        workers: 0,
        ..SandboxOptions::default()
    };
    let sb = Sandbox::start(options).await.expect("sandbox");
    let mut work = Vec::new();
    for i in 0..PER_VENDOR {
        let ch = EndpointSpec::alias(SUB, RG, &format!("ch-{i}"), "eastus2", CH_ALIAS);
        let es = EndpointSpec::alias(SUB, RG, &format!("es-{i}"), "eastus2", ES_ALIAS);
        let zz = EndpointSpec::alias(SUB, RG, &format!("zz-{i}"), "eastus2", ZZ_ALIAS)
            .with_tag("autopilot.zilliz.clusters", "in01-3f2a9c");
        for (spec, vendor) in [(ch, "clickhouse"), (es, "elastic"), (zz, "zilliz")] {
            let id = ResourceId::parse_private_endpoint(&sb.arm.put_endpoint(&spec)).expect("endpoint id");
            work.push(work::vendor_work(&id, vendor, "", "benchmark"));
        }
    }
    let items = work.len();
    for m in work {
        sb.app.queue.enqueue(m).await.expect("enqueue");
    }

    let started = Instant::now();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let lock = Duration::from_secs(120);
    for _ in 0..WORKERS {
        tokio::spawn(private_link_autopilot::runtime::worker::run(
            sb.app.queue.clone(),
            sb.app.reconciler.clone(),
            sb.app.retry.clone(),
            lock,
            stopped.clone(),
        ));
    }
    assert!(sb.drain(Duration::from_secs(300)).await, "queue drained");
    let secs = started.elapsed().as_secs_f64();
    let _ = stop.send(true);

    let ch_ids: usize = vendors.clickhouse.state().services.values().map(Vec::len).sum();
    let (es_n, zz_n) = (vendors.elastic.state().rulesets.len(), vendors.zilliz.state().endpoints.len());
    let services = vendors.clickhouse.state().services.len().max(1);
    assert_eq!((ch_ids / services, es_n, zz_n), (PER_VENDOR, PER_VENDOR, PER_VENDOR), "every item registered");
    let dead = sb.app.queue.dead_letters().await.expect("dead letters").len();
    assert_eq!(dead, 0, "no dead letters");
    let rate = items as f64 / secs;
    println!(
        "  {items} vendor work items, vendor latency {} ms, {WORKERS} workers: {secs:.2} s = {rate:.0} items/s",
        latency.as_millis()
    );
    rate
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    for consumers in [1, WORKERS] {
        let runs: Vec<f64> = (0..3).map(|run| rt.block_on(embedded_queue(dir.path(), run, consumers))).collect();
        println!(
            "embedded queue, {QUEUE_MESSAGES} messages enqueue+receive+complete, {consumers} consumer(s): \
             median {:.0} messages/s (3 runs: {:.0?})",
            median(runs.clone()),
            runs
        );
    }
    for latency_ms in [0, 20] {
        let runs: Vec<f64> = (0..3).map(|_| rt.block_on(vendor_worker(Duration::from_millis(latency_ms)))).collect();
        println!(
            "vendor worker, {} items, vendor latency {latency_ms} ms: median {:.0} items/s (3 runs)",
            3 * PER_VENDOR,
            median(runs)
        );
    }
}
