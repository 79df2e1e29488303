//! The whole product wired to the fakes: fake ARM on loopback, the real handler
//! (`intake::server::router`) on loopback behind the host emulator, the embedded queue
//! and its workers. `autopilot demo`, the end-to-end tests and the benchmarks all start
//! one of these, so what they show is what `serve` does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use super::events::{self, ResourceEvent};
use super::fake_arm::{EndpointSpec, FakeArm, FakeArmOptions, dns};
use super::host_emulator::{Bindings, EventGridDelivery, HostEmulator};
use private_link_autopilot::app::{App, ZoneRoute};
use private_link_autopilot::arm::credential::StaticToken;
use private_link_autopilot::config::Config;
use private_link_autopilot::model::Secret;
use private_link_autopilot::queue::servicebus::ServiceBusQueue;
use private_link_autopilot::queue::{SqliteQueue, WorkQueue};
use private_link_autopilot::runtime::worker;

/// The hub subscription and resource group holding the private DNS zones.
pub const HUB_SUBSCRIPTION: &str = "11111111-1111-1111-1111-111111111111";
pub const HUB_RESOURCE_GROUP: &str = "dns-hub";
/// Where the application teams' endpoints live.
pub const SPOKE_SUBSCRIPTION: &str = "22222222-2222-2222-2222-222222222222";
pub const SPOKE_RESOURCE_GROUP: &str = "app-spoke";

/// The function name of the Event Grid trigger (folder under `handlers/`).
pub const EVENTS_FUNCTION: &str = "PrivateEndpointEvents";

pub struct SandboxOptions {
    pub arm: FakeArmOptions,
    /// Private DNS zones to create in the hub before starting.
    pub zones: Vec<String>,
    /// Adjusts the configuration derived for the sandbox (timeouts, retries...).
    pub configure: Box<dyn FnOnce(&mut Config) + Send>,
    /// Zones served by other DNS backends (RFC 2136).
    pub extra_routes: Vec<ZoneRoute>,
    /// Embedded queue file; `None` = in memory.
    pub queue_path: Option<PathBuf>,
    /// Queue workers draining retries (0 = none; tests then drive the queue).
    pub workers: usize,
    /// Use this Service Bus queue (e.g. on the fake Service Bus) instead of the embedded
    /// one; the `WorkQueue` function then settles through it, as in Azure.
    pub service_bus: Option<Arc<ServiceBusQueue>>,
    /// The environment the application reads secrets from (vendor keys).
    pub env: Vec<(String, String)>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            arm: FakeArmOptions::default(),
            zones: Vec::new(),
            configure: Box::new(|_| {}),
            extra_routes: Vec::new(),
            queue_path: None,
            workers: 1,
            service_bus: None,
            env: Vec::new(),
        }
    }
}

pub struct Sandbox {
    pub arm: FakeArm,
    pub app: Arc<App>,
    pub host: HostEmulator,
    pub handler_addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("arm", &self.arm).field("handler", &self.handler_addr).finish()
    }
}

/// The configuration `serve` would use, pointed at the fake ARM.
pub fn sandbox_config(arm_base_url: &str) -> Config {
    let mut c = Config::default();
    c.arm.base_url = arm_base_url.to_owned();
    c.dns.default_subscription = HUB_SUBSCRIPTION.to_owned();
    c.dns.default_resource_group = HUB_RESOURCE_GROUP.to_owned();
    // Tests and the demo choose where audit events go (a temp file), not the cwd.
    c.audit.file = String::new();
    // The vendor ledger lives as long as the sandbox.
    c.ledger.path = String::new();
    // The sandbox vendors' exact aliases and the Zilliz project's clusters, configured as
    // an operator would (the vendors' APIs add theirs when the vendors are enabled).
    use super::vendors::{CLICKHOUSE_ALIAS, ZILLIZ_ALIAS, ZILLIZ_CLUSTERS};
    c.catalog.vendor_aliases.insert("clickhouse".into(), vec![CLICKHOUSE_ALIAS.into()]);
    c.catalog.vendor_aliases.insert("zilliz".into(), vec![ZILLIZ_ALIAS.into()]);
    c.catalog.vendor_names.insert("zilliz".into(), ZILLIZ_CLUSTERS.iter().map(|s| (*s).to_owned()).collect());
    // The sandbox's spokes reach each other through the hub (transit routing), so the
    // vendors' regional wildcards may take endpoints from several spokes; the product's
    // default is off (see `dns.share_across_vnets`).
    c.dns.share_across_vnets = true;
    c
}

impl Sandbox {
    pub async fn start(options: SandboxOptions) -> Result<Self, String> {
        let arm = FakeArm::start(options.arm).await.map_err(|e| format!("fake ARM: {e}"))?;
        for zone in &options.zones {
            arm.add_zone(HUB_SUBSCRIPTION, HUB_RESOURCE_GROUP, zone);
        }
        let mut config = sandbox_config(&arm.base_url());
        (options.configure)(&mut config);
        let queue: Arc<dyn WorkQueue> = match (&options.service_bus, &options.queue_path) {
            (Some(sb), _) => sb.clone(),
            (None, Some(p)) => Arc::new(SqliteQueue::open(p).map_err(|e| format!("queue {}: {e}", p.display()))?),
            (None, None) => Arc::new(SqliteQueue::open_in_memory().map_err(|e| format!("queue: {e}"))?),
        };
        let credential = Arc::new(StaticToken(Secret::new(arm.token())));
        let lock = Duration::from_secs(config.queue.lock_secs.max(1));
        let env: std::collections::HashMap<String, String> = options.env.into_iter().collect();
        let mut app = App::build_with_env(config, credential, queue, options.extra_routes, &|k| env.get(k).cloned())?;
        if let Some(sb) = options.service_bus {
            app = app.with_trigger_queue(sb);
        }
        let app = Arc::new(app);
        let (stop, stopped) = watch::channel(false);
        for _ in 0..options.workers {
            tokio::spawn(worker::run(
                app.queue.clone(),
                app.reconciler.clone(),
                app.retry.clone(),
                lock,
                stopped.clone(),
            ));
        }
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("handler listener: {e}"))?;
        let handler_addr = listener.local_addr().map_err(|e| e.to_string())?;
        let router = private_link_autopilot::intake::server::router(app.clone());
        let mut stopped_server = stopped.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped_server.changed().await;
                })
                .await;
        });
        // Binding names as in handlers/*/function.json (tests/function_app.rs checks them).
        let bindings = Bindings {
            service_bus: private_link_autopilot::intake::queue_trigger::MESSAGE_BINDING.into(),
            ..Bindings::default()
        };
        let host = HostEmulator::new(&format!("http://{handler_addr}")).with_bindings(bindings);
        Ok(Self { arm, app, host, handler_addr, stop })
    }

    /// A hub zone's resource id.
    pub fn zone_id(&self, zone: &str) -> String {
        dns::zone_id(HUB_SUBSCRIPTION, HUB_RESOURCE_GROUP, zone)
    }

    /// Creates an endpoint in the fake ARM and delivers the write event to the handler.
    pub async fn create(&self, spec: &EndpointSpec) -> (String, EventGridDelivery) {
        let id = self.arm.put_endpoint(spec);
        let delivery = self.deliver(vec![events::event_grid(ResourceEvent::WriteSuccess, &id)]).await;
        (id, delivery)
    }

    /// Deletes an endpoint in the fake ARM and delivers the delete event.
    pub async fn delete(&self, id: &str) -> EventGridDelivery {
        self.arm.delete_endpoint(id);
        self.deliver(vec![events::event_grid(ResourceEvent::DeleteSuccess, id)]).await
    }

    /// Delivers a batch of events through the host emulator to the real handler.
    pub async fn deliver(&self, events: Vec<Value>) -> EventGridDelivery {
        self.host.deliver_event_grid(EVENTS_FUNCTION, events).await
    }

    /// Waits until the work queue is empty (retries done) or `timeout` passes;
    /// returns whether it drained.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.app.queue.depth().await.unwrap_or(usize::MAX) == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
