//! Several `autopilot serve` processes in the deployed shape, for the many-instances tests:
//! one fake ARM, one fake Service Bus (the work queue), one fake Table service (ledger,
//! leases, dead letters) and the three fake vendors, shared by every process.
//!
//! Each process plays one Functions instance. The test process plays each instance's
//! host: it delivers Event Grid batches to a chosen instance, and a pump per instance
//! peek-locks the work queue (like the `serviceBusTrigger`, up to `maxConcurrentCalls`
//! at once) and invokes that instance's `WorkQueue` function, completing on 2xx and
//! abandoning otherwise. A killed instance's host dies with it: its locked messages are
//! never settled and come back when their locks expire.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autopilot_sandbox::fake_arm::{FakeArm, FakeArmOptions};
use autopilot_sandbox::fake_servicebus::{FakeQueueOptions, FakeServiceBus, FakeServiceBusOptions};
use autopilot_sandbox::fake_table::FakeTableService;
use autopilot_sandbox::harness::{HUB_RESOURCE_GROUP, HUB_SUBSCRIPTION, sandbox_config};
use autopilot_sandbox::host_emulator::{
    Bindings, EventGridDelivery, HostEmulator, SbSettlement, ServiceBusProps, SpawnedHandler, spawn_handler,
};
use autopilot_sandbox::standalone::serve_env;
use autopilot_sandbox::vendors::{self, SandboxVendors};
use private_link_autopilot::arm::Secret;
use private_link_autopilot::arm::credential::StaticToken;
use private_link_autopilot::queue::WorkQueue;
use private_link_autopilot::queue::servicebus::{
    ServiceBusAuth, ServiceBusCredentials, ServiceBusQueue, ServiceBusSettings,
};
use serde_json::Value;

pub const DEAD_LETTER_TABLE: &str = "deadletters";
pub const LEDGER_TABLE: &str = "vendorregistrations";
pub const LEASE_TABLE: &str = "endpointleases";
/// The trigger's per-instance concurrency (`host.json` `maxConcurrentCalls`).
pub const MAX_CONCURRENT_CALLS: usize = 5;
/// The work queue's lock: short, so a killed instance's messages come back soon.
pub const LOCK: Duration = Duration::from_secs(8);

pub struct FleetOptions {
    pub instances: usize,
    pub arm: FakeArmOptions,
    /// ARM budget each instance believes it has (reads burst, per second).
    pub reads: (u32, f64),
    /// Extra `AUTOPILOT__*` settings.
    pub env: Vec<(String, String)>,
    /// Vendor fakes without their rate limits (the test is about races, not quotas).
    pub unlimited_vendors: bool,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            instances: 3,
            arm: FakeArmOptions { lro_retry_after_secs: 1, ..FakeArmOptions::default() },
            reads: (250, 25.0),
            env: vec![],
            unlimited_vendors: true,
        }
    }
}

/// One instance: its process (None while killed) and a generation that changes when it dies.
struct Slot {
    handler: Option<SpawnedHandler>,
    url: Option<String>,
    generation: u64,
}

pub struct Fleet {
    pub arm: FakeArm,
    pub vendors: SandboxVendors,
    pub bus: FakeServiceBus,
    pub table: FakeTableService,
    /// The work queue as the hosts (and the test) see it.
    pub queue: Arc<ServiceBusQueue>,
    env: BTreeMap<String, String>,
    root: PathBuf,
    slots: Vec<Arc<Mutex<Slot>>>,
    stop: tokio::sync::watch::Sender<bool>,
    /// Invocations in flight across every pump.
    in_flight: Arc<AtomicU64>,
    /// Settlements that were not Complete (the handler answered non-2xx).
    pub abandoned: Arc<AtomicU64>,
}

/// A host with the binding names of `handlers/*/function.json`.
fn host_for(url: &str) -> HostEmulator {
    let bindings = Bindings {
        service_bus: private_link_autopilot::intake::queue_trigger::MESSAGE_BINDING.into(),
        ..Bindings::default()
    };
    HostEmulator::new(url).with_bindings(bindings)
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_autopilot"))
}

impl Fleet {
    pub async fn start(options: FleetOptions) -> Self {
        let arm = FakeArm::start(options.arm).await.unwrap();
        for zone in vendors::ZONES {
            arm.add_zone(HUB_SUBSCRIPTION, HUB_RESOURCE_GROUP, zone);
        }
        let vendors = if options.unlimited_vendors {
            SandboxVendors::start_with(|ch, es, zz| {
                ch.rate_limit = None;
                es.rate_limit = None;
                zz.rate_limit = None;
            })
            .await
            .unwrap()
        } else {
            SandboxVendors::start().await.unwrap()
        };
        let token = Secret::new(arm.token());
        let mut work = FakeQueueOptions::new("work");
        work.lock_duration = LOCK;
        let bus = FakeServiceBus::start(FakeServiceBusOptions {
            bearer_token: Some(token.clone()),
            queues: vec![work],
            ..FakeServiceBusOptions::default()
        })
        .await
        .unwrap();
        let table = FakeTableService::start(arm.token(), 1000).await.unwrap();

        let mut config = sandbox_config(&arm.base_url());
        vendors.configure(&mut config);
        let mut env = serve_env(&config, arm.token(), vendors.env());
        let mut set = |k: &str, v: String| {
            env.insert(k.to_owned(), v);
        };
        set("AUTOPILOT__QUEUE__KIND", "servicebus".into());
        set("AUTOPILOT__QUEUE__NAMESPACE", bus.namespace().to_owned());
        set("AUTOPILOT__QUEUE__NAME", "work".into());
        set("AUTOPILOT__QUEUE__AUTH", "managed_identity".into());
        set("AUTOPILOT__QUEUE__EMULATOR_ENDPOINT", bus.base_url().to_owned());
        set("AUTOPILOT__QUEUE__LOCK_SECS", LOCK.as_secs().to_string());
        set("AUTOPILOT__QUEUE__DEAD_LETTER_TABLE_ENDPOINT", table.base_url());
        set("AUTOPILOT__QUEUE__DEAD_LETTER_TABLE", DEAD_LETTER_TABLE.into());
        set("AUTOPILOT__LEDGER__KIND", "table".into());
        set("AUTOPILOT__LEDGER__TABLE_ENDPOINT", table.base_url());
        set("AUTOPILOT__LEDGER__TABLE", LEDGER_TABLE.into());
        set("AUTOPILOT__LEASES__KIND", "table".into());
        set("AUTOPILOT__LEASES__TABLE", LEASE_TABLE.into());
        set("AUTOPILOT__LEASES__TTL_SECS", "6".into());
        set("AUTOPILOT__ARM__READS_BURST", options.reads.0.to_string());
        set("AUTOPILOT__ARM__READS_PER_SEC", options.reads.1.to_string());
        set("AUTOPILOT__SWEEP__SUBSCRIPTIONS", format!("[\"{}\"]", autopilot_sandbox::harness::SPOKE_SUBSCRIPTION));
        set("AUTOPILOT__LOG__FILTER", std::env::var("FLEET_LOG").unwrap_or_else(|_| "warn".into()));
        for (k, v) in options.env {
            set(&k, v);
        }

        let settings = ServiceBusSettings {
            namespace: bus.namespace().to_owned(),
            queue: "work".into(),
            dead_letter_queue: String::new(),
            auth: ServiceBusAuth::ManagedIdentity { client_id: String::new() },
            endpoint_override: bus.base_url().to_owned(),
            lock_secs: LOCK.as_secs(),
            dead_letter_table_endpoint: table.base_url(),
            dead_letter_table: DEAD_LETTER_TABLE.into(),
            arm_queue_id: String::new(),
            management_endpoint: String::new(),
            dedupe_bucket_secs: 60,
        };
        let queue = Arc::new(
            ServiceBusQueue::connect(settings, ServiceBusCredentials::Tokens(Arc::new(StaticToken(token)))).unwrap(),
        );
        let root = std::env::temp_dir().join(format!("autopilot-fleet-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&root).unwrap();
        let (stop, _) = tokio::sync::watch::channel(false);
        let mut fleet = Self {
            arm,
            vendors,
            bus,
            table,
            queue,
            env,
            root,
            slots: vec![],
            stop,
            in_flight: Arc::new(AtomicU64::new(0)),
            abandoned: Arc::new(AtomicU64::new(0)),
        };
        for _ in 0..options.instances {
            let slot = Arc::new(Mutex::new(Slot { handler: None, url: None, generation: 0 }));
            fleet.slots.push(slot.clone());
            fleet.spawn_pump(slot);
        }
        for i in 0..options.instances {
            fleet.restart(i).await;
        }
        fleet
    }

    fn spawn_pump(&self, slot: Arc<Mutex<Slot>>) {
        let queue = self.queue.clone();
        let mut stop = self.stop.subscribe();
        let in_flight = self.in_flight.clone();
        let abandoned = self.abandoned.clone();
        tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_CALLS));
            loop {
                if *stop.borrow() {
                    return;
                }
                let (url, generation) = {
                    let s = slot.lock().unwrap();
                    (s.url.clone(), s.generation)
                };
                let Some(url) = url else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let permit = permits.clone().acquire_owned().await.unwrap();
                let delivery = tokio::select! {
                    d = queue.receive(Duration::from_millis(500), LOCK) => d,
                    _ = stop.changed() => return,
                };
                let Ok(Some(delivery)) = delivery else {
                    drop(permit);
                    continue;
                };
                in_flight.fetch_add(1, Ordering::SeqCst);
                let (queue, slot, in_flight, abandoned) =
                    (queue.clone(), slot.clone(), in_flight.clone(), abandoned.clone());
                tokio::spawn(async move {
                    let host = host_for(&url);
                    let props = ServiceBusProps {
                        message_id: delivery.message_id.clone(),
                        delivery_count: delivery.delivery_count,
                        correlation_id: Some(delivery.correlation_id.clone()),
                        ..ServiceBusProps::default()
                    };
                    let settled = host.deliver_service_bus("WorkQueue", &delivery.body.to_string(), props, false).await;
                    // The host died with its handler: nothing is settled, the lock expires.
                    if slot.lock().unwrap().generation == generation {
                        match settled {
                            SbSettlement::Complete => {
                                let _ = queue.complete(&delivery).await;
                            }
                            SbSettlement::Abandon(_) => {
                                abandoned.fetch_add(1, Ordering::SeqCst);
                                let _ = queue.abandon(&delivery).await;
                            }
                        }
                    }
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    drop(permit);
                });
            }
        });
    }

    /// (Re)starts instance `i`.
    pub async fn restart(&self, i: usize) {
        let env: Vec<(String, String)> = self.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let dir = self.root.join(format!("instance-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let handler = spawn_handler(&binary(), &["serve"], &dir, &env).await.unwrap();
        let mut s = self.slots[i].lock().unwrap();
        s.url = Some(handler.base_url.clone());
        s.handler = Some(handler);
    }

    /// Kills instance `i` with SIGKILL (its host goes with it).
    pub async fn kill(&self, i: usize) {
        let handler = {
            let mut s = self.slots[i].lock().unwrap();
            s.generation += 1;
            s.url = None;
            s.handler.take()
        };
        if let Some(mut h) = handler {
            h.kill().await.unwrap();
        }
    }

    pub fn live(&self) -> Vec<usize> {
        (0..self.slots.len()).filter(|i| self.slots[*i].lock().unwrap().url.is_some()).collect()
    }

    pub fn host(&self, i: usize) -> Option<HostEmulator> {
        self.slots[i].lock().unwrap().url.as_deref().map(host_for)
    }

    /// Delivers a batch to instance `i`; on failure Event Grid retries, here on another
    /// live instance, until one answers 2xx.
    pub async fn deliver(&self, i: usize, events: Vec<Value>) -> EventGridDelivery {
        let mut target = i;
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(host) = self.host(target) {
                let d = host.deliver_event_grid("PrivateEndpointEvents", events.clone()).await;
                if (200..300).contains(&d.status) || Instant::now() > until {
                    return d;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let live = self.live();
            target = live[fastrand::usize(..live.len())];
        }
    }

    /// Runs the timer sweep on instance `i`.
    pub async fn sweep(&self, i: usize) {
        if let Some(host) = self.host(i) {
            let _ = host.invoke_timer("Sweep", false).await;
        }
    }

    /// Waits until nothing is queued or in flight for `quiet`, at most `timeout`.
    pub async fn settle(&self, quiet: Duration, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let mut idle_since: Option<Instant> = None;
        while Instant::now() < until {
            let queued = self.bus.queue_snapshot("work").map(|s| s.active.len()).unwrap_or(0);
            let busy = self.in_flight.load(Ordering::SeqCst);
            if std::env::var_os("FLEET_TRACE").is_some() && fastrand::u8(..) < 8 {
                let snap = self.bus.queue_snapshot("work").unwrap();
                let bodies: Vec<String> = snap
                    .active
                    .iter()
                    .take(3)
                    .map(|m| String::from_utf8_lossy(&m.body).chars().take(300).collect())
                    .collect();
                eprintln!("settle: queued {queued} in flight {busy} {bodies:?}");
            }
            if queued == 0 && busy == 0 {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= quiet {
                    return true;
                }
            } else {
                idle_since = None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Every instance's stderr lines containing `needle`.
    pub fn grep(&self, needle: &str) -> String {
        let mut out = String::new();
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(h) = &s.lock().unwrap().handler {
                for l in h.stderr_lines().iter().filter(|l| l.contains(needle)) {
                    out.push_str(&format!("[{i}] {l}\n"));
                }
            }
        }
        out
    }

    /// Every instance's stderr, for failure messages.
    pub fn stderr(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(h) = &s.lock().unwrap().handler {
                for l in h.stderr_lines().iter().rev().take(20).rev() {
                    out.push_str(&format!("[{i}] {l}\n"));
                }
            }
        }
        out
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
