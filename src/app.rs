//! Wiring: from a [`Config`] to the running pieces (ARM client, DNS router, catalog,
//! reconciler, queue). `serve`, `demo`, the CLI commands and the tests all build the
//! application here, so they run the same code.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::arm::{ArmClient, ArmConfig, TokenSource};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::effects::audit::{AuditSink, EventGridSink, JsonLinesSink};
use crate::effects::dns::azure::{AzurePrivateDns, ZoneDirectory, ZoneLocation};
use crate::effects::dns::zones::{ZoneManager, ZonePolicy};
use crate::effects::dns::{DnsProvider, DnsRouter};
use crate::effects::vendors::build_vendors;
use crate::effects::vendors::ledger::{Ledger, SqliteLedger, TableLedger};
use crate::effects::vendors::sync::VendorSync;
use crate::queue::servicebus::{ServiceBusAuth, ServiceBusSettings};
use crate::queue::{TriggerQueue, WorkQueue};
use crate::reconcile::Reconciler;
use crate::runtime::Runtime;
use crate::runtime::error_policy::RetryPolicy;
use crate::telemetry::Stats;

/// The composition: the settings it was built from and the runtime built from them.
/// Intake, `doctor` and the CLI take an `App`; the runtime below takes only its
/// [`Runtime`], which `App` dereferences to (`app.reconciler`, `app.queue`, ...).
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub runtime: Arc<Runtime>,
    /// Set when the queue is Service Bus: the `WorkQueue` trigger settles through it.
    pub trigger_queue: Option<Arc<dyn TriggerQueue>>,
    /// The few facts timer runs remember (the catch-up watermark, target-side Pending
    /// connections): in the `[ledger]` store, see `effects::small_state`. Intake's
    /// `CatchUp` and the CLI read it; the runtime does not.
    pub small_state: Arc<dyn crate::effects::small_state::SmallState>,
    /// For `Status`'s uptime.
    pub started: Instant,
}

impl std::ops::Deref for App {
    type Target = Runtime;
    fn deref(&self) -> &Runtime {
        &self.runtime
    }
}

impl App {
    /// Builds the application. `extra_providers` routes zones to non-Azure backends
    /// (RFC 2136 servers) built by the caller.
    pub fn build(
        config: Config,
        credential: Arc<dyn TokenSource>,
        queue: Arc<dyn WorkQueue>,
        extra_providers: Vec<ZoneRoute>,
    ) -> Result<Self, String> {
        Self::build_with_env(config, credential, queue, extra_providers, &|k| std::env::var(k).ok())
    }

    /// [`App::build`] with the environment that resolves vendor secrets given explicitly
    /// (the sandbox passes its fake vendors' keys without touching the process env).
    pub fn build_with_env(
        config: Config,
        credential: Arc<dyn TokenSource>,
        queue: Arc<dyn WorkQueue>,
        extra_providers: Vec<ZoneRoute>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let arm = ArmClient::new(arm_config(&config), credential.clone()).map_err(|e| format!("ARM client: {e}"))?;
        let catalog_file = (!config.catalog.file.is_empty()).then(|| Path::new(&config.catalog.file));
        let catalog = Catalog::load(catalog_file, config.catalog.include_builtin)
            .map_err(|e| e.to_string())?
            .with_share_across_vnets(config.dns.share_across_vnets);
        catalog.learn(|known| {
            for (vendor, aliases) in &config.catalog.vendor_aliases {
                known.add_aliases(vendor, aliases.iter());
            }
            for (vendor, names) in &config.catalog.vendor_names {
                known.add_items(vendor, names.iter());
            }
        });
        let mut directory = ZoneDirectory::default();
        if !config.dns.default_subscription.is_empty() && !config.dns.default_resource_group.is_empty() {
            directory.default =
                Some(ZoneLocation::new(&config.dns.default_subscription, &config.dns.default_resource_group));
        }
        for z in config.dns.zones.iter().filter(|z| z.provider == "azure") {
            let mut loc = ZoneLocation::new(
                &non_empty(&z.subscription, &config.dns.default_subscription),
                &non_empty(&z.resource_group, &config.dns.default_resource_group),
            );
            loc.link_to = z.link_to.as_ref().map(|v| v.iter().map(|s| s.trim().to_ascii_lowercase()).collect());
            if loc.subscription.is_empty() || loc.resource_group.is_empty() {
                return Err(format!(
                    "dns.zones ({}): subscription and resource_group are required (or set dns.default_subscription \
                     and dns.default_resource_group)",
                    z.name
                ));
            }
            directory.add(&z.name, loc);
        }
        let zones = (config.dns.zone_management == "create")
            .then(|| Arc::new(ZoneManager::new(arm.clone(), directory.clone(), zone_policy(&config))));
        let mut azure = AzurePrivateDns::new(arm.clone(), directory);
        if zones.is_some() {
            azure = azure.with_default_listing();
        }
        let mut router = DnsRouter::new(Some(Arc::new(azure)));
        for (zone, provider) in extra_providers {
            router.route(&zone, provider);
        }
        let stats = Arc::new(Stats::default());
        let mut reconciler =
            Reconciler::new(arm.clone(), Arc::new(catalog), Arc::new(router), config.reconcile.clone(), stats.clone())
                .with_approvals(config.approvals.clone())
                .with_marks(config.marks.clone());
        if let Some(zones) = zones {
            reconciler = reconciler.with_zones(zones);
        }
        if let Some(sink) = audit_sink(&config, &credential, &stats)? {
            reconciler = reconciler.with_audit(sink);
        }
        let vendors = build_vendors(&config.vendors, env)?;
        if !vendors.is_empty() {
            let ledger = ledger(&config, &credential)?;
            reconciler = reconciler.with_vendors(Arc::new(VendorSync::new(vendors, config.vendors.clone(), ledger)));
        }
        if let Some(exclusive) = exclusive(&config, &credential, &stats)? {
            reconciler = reconciler.with_exclusive(exclusive);
        }
        let mut retry = RetryPolicy::new(
            Duration::from_secs(config.reconcile.retry_base_secs),
            Duration::from_secs(config.reconcile.retry_max_secs),
            Duration::from_secs(config.reconcile.retry_window_secs),
        );
        retry.recheck_window = Duration::from_secs(config.marks.recheck_window_secs);
        let reconciler = Arc::new(reconciler);
        let small_state = crate::effects::small_state::from_ledger_settings(&config.ledger, &credential)?;
        let runtime = Runtime {
            parallel: Arc::new(Semaphore::new(config.reconcile.max_parallel)),
            max_parallel: config.reconcile.max_parallel,
            retry,
            arm,
            reconciler,
            queue,
            stats,
            sweep_running: tokio::sync::Mutex::new(()),
            deadline: Duration::from_millis(config.reconcile.deadline_ms),
            sweep: config.sweep.clone(),
            coverage: config.coverage.clone(),
        };
        Ok(Self { runtime: Arc::new(runtime), trigger_queue: None, small_state, started: Instant::now(), config })
    }

    /// Lets the `WorkQueue` trigger schedule retries and park failures on this queue.
    pub fn with_trigger_queue(mut self, queue: Arc<dyn TriggerQueue>) -> Self {
        self.trigger_queue = Some(queue);
        self
    }
}

/// `dns.zone_management = "create"`: what to link and where to search for same-named zones.
fn zone_policy(config: &Config) -> ZonePolicy {
    let mut search: Vec<String> = config.dns.zone_search_subscriptions.clone();
    search.extend(config.sweep.subscriptions.iter().cloned());
    search.push(config.dns.default_subscription.clone());
    search.extend(config.dns.zones.iter().map(|z| z.subscription.clone()));
    let mut seen = std::collections::HashSet::new();
    search.retain(|s| !s.trim().is_empty() && seen.insert(s.trim().to_ascii_lowercase()));
    ZonePolicy {
        link_to: config.dns.link_to.fixed(),
        resolution_policy: config.dns.link_resolution_policy.clone(),
        search_subscriptions: search,
    }
}

fn non_empty(a: &str, b: &str) -> String {
    if a.is_empty() { b.to_string() } else { a.to_string() }
}

pub fn arm_config(config: &Config) -> ArmConfig {
    let a = &config.arm;
    ArmConfig {
        base_url: a.base_url.trim_end_matches('/').to_string(),
        request_timeout: Duration::from_secs(a.request_timeout_secs.max(1)),
        max_retries: a.max_retries,
        max_concurrency: a.max_concurrency,
        reads: (a.reads_burst, a.reads_per_sec),
        writes: (a.writes_burst, a.writes_per_sec),
        deletes: (a.deletes_burst, a.deletes_per_sec),
        ..ArmConfig::default()
    }
}

/// A zone and the backend that serves it.
pub type ZoneRoute = (String, Arc<dyn DnsProvider>);

/// RFC 2136 providers for the zones configured with `provider = "rfc2136"`. Each
/// server's TSIG secret is read from the environment variable its settings name
/// (a Key Vault reference in Azure); a missing one is an error naming that variable.
pub fn rfc2136_routes(config: &Config, env: impl Fn(&str) -> Option<String>) -> Result<Vec<ZoneRoute>, String> {
    use crate::effects::dns::rfc2136::{Rfc2136Config, Rfc2136Provider};
    use crate::model::Secret;
    let mut providers: std::collections::HashMap<String, Arc<dyn DnsProvider>> = Default::default();
    for s in &config.dns.servers {
        let server = s
            .address
            .parse()
            .map_err(|e| format!("dns.servers ({}): address `{}` is not host:port: {e}", s.name, s.address))?;
        let secret = env(&s.tsig_secret_env).filter(|v| !v.is_empty()).ok_or_else(|| {
            format!("dns.servers ({}): environment variable {} (the TSIG secret) is not set", s.name, s.tsig_secret_env)
        })?;
        let mut cfg = Rfc2136Config::new(server, s.tsig_key_name.clone(), Secret::new(secret));
        cfg.tsig_algorithm = s.tsig_algorithm.clone();
        cfg.timeout = Duration::from_secs(s.timeout_secs.max(1));
        cfg.allow_axfr = s.allow_axfr;
        let provider = Rfc2136Provider::new(cfg).map_err(|e| format!("dns.servers ({}): {e}", s.name))?;
        providers.insert(s.name.clone(), Arc::new(provider));
    }
    let mut routes = Vec::new();
    for z in config.dns.zones.iter().filter(|z| z.provider == "rfc2136") {
        let p =
            providers.get(&z.server).ok_or_else(|| format!("dns.zones ({}): unknown server {}", z.name, z.server))?;
        routes.push((z.name.clone(), p.clone()));
    }
    Ok(routes)
}

/// The Service Bus queue's settings from `[queue]` (kind = "servicebus"); managed identity
/// uses the same user-assigned identity as ARM.
pub fn service_bus_settings(config: &Config) -> ServiceBusSettings {
    let q = &config.queue;
    let auth = if q.auth == "sas" {
        ServiceBusAuth::Sas { key_name: q.sas_key_name.clone(), key_env: q.sas_key_env.clone() }
    } else {
        ServiceBusAuth::ManagedIdentity { client_id: config.arm.managed_identity_client_id.clone() }
    };
    ServiceBusSettings {
        namespace: q.namespace.clone(),
        queue: q.name.clone(),
        dead_letter_queue: q.dead_letter_queue.clone(),
        auth,
        endpoint_override: q.emulator_endpoint.trim().to_owned(),
        lock_secs: q.lock_secs,
        dead_letter_table_endpoint: q.dead_letter_table_endpoint.clone(),
        dead_letter_table: q.dead_letter_table.clone(),
        arm_queue_id: q.arm_queue_id.clone(),
        management_endpoint: config.arm.base_url.clone(),
        dedupe_bucket_secs: 60,
    }
}

/// The registration ledger `[ledger]` names.
pub fn ledger(config: &Config, credential: &Arc<dyn TokenSource>) -> Result<Arc<dyn Ledger>, String> {
    let l = &config.ledger;
    match l.kind.as_str() {
        "table" => Ok(Arc::new(TableLedger::new(&l.table_endpoint, &l.table, credential.clone())?)),
        "sqlite" if l.path.trim().is_empty() => {
            Ok(Arc::new(SqliteLedger::open_in_memory().map_err(|e| e.to_string())?))
        }
        "sqlite" => Ok(Arc::new(SqliteLedger::open(Path::new(l.path.trim())).map_err(|e| e.to_string())?)),
        other => Err(format!("ledger.kind {other:?} is not supported by this build")),
    }
}

/// One writer per endpoint across instances, when `[leases]` says `table`.
fn exclusive(
    config: &Config,
    credential: &Arc<dyn TokenSource>,
    stats: &Arc<Stats>,
) -> Result<Option<crate::reconcile::exclusive::Exclusive>, String> {
    let l = &config.leases;
    if l.kind != "table" {
        return Ok(None);
    }
    let store = crate::arm::lease::TableLeases::new(l.endpoint(&config.ledger), &l.table, credential.clone())?;
    Ok(Some(crate::reconcile::exclusive::Exclusive::with_leases(
        Arc::new(store),
        Duration::from_secs(l.ttl_secs),
        instance_name(),
        stats.clone(),
    )))
}

/// Names this instance in lease rows: the Functions instance id when the host gives one.
pub fn instance_name() -> String {
    let host = std::env::var("WEBSITE_INSTANCE_ID")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.chars().take(12).collect::<String>())
        .unwrap_or_else(|| "local".into());
    format!("{host}-{}", std::process::id())
}

/// The audit destination: the Event Grid topic when configured (Azure), else the local
/// JSON-lines file, else none.
fn audit_sink(
    config: &Config,
    credential: &Arc<dyn TokenSource>,
    stats: &Arc<Stats>,
) -> Result<Option<Arc<dyn AuditSink>>, String> {
    let source = "/privatelinkautopilot";
    let a = &config.audit;
    if !a.topic_endpoint.trim().is_empty() {
        let sink = EventGridSink::new(a.topic_endpoint.trim(), credential.clone(), source)?;
        // Never on the way from event to record (see `audit_spool`).
        return Ok(Some(Arc::new(crate::effects::audit_spool::SpooledSink::start(Arc::new(sink), stats.clone()))));
    }
    if !a.file.trim().is_empty() {
        return Ok(Some(Arc::new(JsonLinesSink::new(a.file.trim(), source))));
    }
    Ok(None)
}
