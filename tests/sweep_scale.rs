//! A sweep of 1,000 missed endpoints stays inside ARM's budgets. The fake ARM enforces
//! ARM's per-subscription token buckets (reads: 250 burst + 25/s, writes and deletes:
//! 200 burst + 10/s) and answers 429 + Retry-After past them; the client runs with its
//! defaults, which are the same numbers. The hub subscription (all the zones) takes the
//! 1,000 record writes: 200 at once, then 10 per second, so the run takes about 80 s,
//! inside the sweep's 240 s deadline. A second sweep of the converged estate compares
//! Resource Graph's view of each endpoint (with its NIC) with the zone listing and reads ARM
//! for none of them: a dozen requests (the listings), under a second, no writes (it was
//! 3,000 reads and 20 s when every endpoint was re-read).

use std::time::{Duration, Instant};

use autopilot_sandbox::fake_arm::{EndpointSpec, FakeArmOptions, MemberSpec};
use autopilot_sandbox::harness::{Sandbox, SandboxOptions};
use autopilot_sandbox::host_emulator::InvokeOutcome;

const ZONE: &str = "privatelink.vaultcore.azure.net";
const SPOKES: [&str; 4] = [
    "30000000-0000-0000-0000-000000000001",
    "30000000-0000-0000-0000-000000000002",
    "30000000-0000-0000-0000-000000000003",
    "30000000-0000-0000-0000-000000000004",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_of_1000_endpoints_stays_within_arms_budget() {
    let arm = FakeArmOptions::default();
    assert_eq!((arm.reads, arm.writes, arm.deletes), ((250, 25.0), (200, 10.0), (200, 10.0)), "ARM's numbers");
    let sb = Sandbox::start(SandboxOptions {
        arm: FakeArmOptions { page_size: 100, ..arm },
        zones: vec![ZONE.into()],
        configure: Box::new(move |c| {
            c.sweep.subscriptions = SPOKES.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!((c.arm.reads_burst, c.arm.writes_burst), (250, 200), "the client's defaults match ARM");
        }),
        workers: 0,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox");
    for i in 0..1000 {
        let sub = SPOKES[i % SPOKES.len()];
        let vault = format!("/subscriptions/{sub}/resourceGroups/apps/providers/Microsoft.KeyVault/vaults/kv{i:04}");
        let fqdn = format!("kv{i:04}.vault.azure.net");
        sb.arm.put_endpoint(&EndpointSpec::resource(
            sub,
            "apps",
            &format!("pe-kv{i:04}"),
            "eastus2",
            &vault,
            "vault",
            vec![MemberSpec::new("default", &[fqdn.as_str()])],
        ));
    }
    sb.arm.clear_log();

    let started = Instant::now();
    let outcome = sb.host.invoke_timer("Sweep", false).await.expect("sweep invoked");
    let elapsed = started.elapsed();
    let logs = match outcome {
        InvokeOutcome::Succeeded(r) => r.logs,
        InvokeOutcome::Failed(why) => panic!("sweep failed: {why}"),
    };
    let requests = sb.arm.requests();
    let throttled = requests.iter().filter(|r| r.status == 429).count();
    let failed = requests.iter().filter(|r| r.status >= 500).count();
    println!(
        "1,000 endpoints swept in {:.1} s: {} ARM requests, {throttled} throttled; {}",
        elapsed.as_secs_f64(),
        requests.len(),
        logs[0]
    );
    assert!(logs[0].starts_with("sweep: 1000 listed"), "{}", logs[0]);
    assert!(logs[0].contains("0 not converged"), "every endpoint converged within the run: {}", logs[0]);
    assert_eq!(throttled, 0, "the client stayed inside the buckets");
    assert_eq!(failed, 0);
    let records = sb.arm.all_records().into_iter().filter(|r| r.zone == ZONE).count();
    assert_eq!(records, 1000);
    assert_eq!(sb.app.queue.depth().await.unwrap(), 0, "nothing left for the queue");

    // A second sweep over a converged estate: reads only (zone listings, no record writes).
    sb.arm.clear_log();
    let started = Instant::now();
    sb.host.invoke_timer("Sweep", false).await.expect("second sweep");
    let writes = sb.arm.requests().iter().filter(|r| r.is_write()).count();
    let requests = sb.arm.requests();
    let record_reads = requests.iter().filter(|r| r.method == "GET" && r.path.contains("/A/")).count();
    println!(
        "converged re-sweep: {:.1} s, {} ARM requests, {writes} writes, {record_reads} single-record reads",
        started.elapsed().as_secs_f64(),
        requests.len()
    );
    assert_eq!(writes, 0);
    assert_eq!(record_reads, 0, "records come from the sweep's zone listing");
    let endpoint_reads = requests.iter().filter(|r| r.method == "GET" && r.path.contains("/privateEndpoints/")).count();
    assert_eq!(endpoint_reads, 0, "a converged endpoint is confirmed from the listings, not re-read");
    assert!(requests.len() < 50, "listings only: {} requests", requests.len());
    assert!(elapsed < Duration::from_secs(240), "inside the sweep deadline");
}
