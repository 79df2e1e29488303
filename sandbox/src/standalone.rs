//! `autopilot sandbox`: the fakes as a standalone process, for tools that are not Rust.
//!
//! The demo and the Rust tests start the fakes in-process, which proves the product
//! against them but not the fakes against anyone else's client. Running them as a
//! process that prints where they listen lets Microsoft's own SDKs (the Python
//! `azure-mgmt-*` clients in `tests/python/`), `curl`, or a separately started
//! `autopilot serve` talk to them over the wire: if an official client parses every
//! answer, the fake's shapes are ARM's shapes, not just the shapes our client expects.
//!
//! The first stdout line is one JSON object ([`Standalone::describe`]): the URLs, the
//! token, the hub and spoke coordinates, the vendor aliases, and `env`, the environment
//! `autopilot serve` needs to use these fakes (built from the same [`sandbox_config`] and
//! [`SandboxVendors::configure`] the in-process sandbox uses, so the two cannot drift;
//! a unit test loads `env` back through [`Config::load`]). Logs go to stderr. The
//! process runs until SIGINT or SIGTERM.
//!
//! What it does not do: `serve` cannot be pointed at the fake Service Bus (the product
//! has no endpoint override setting, by design: the data plane URL is derived from the
//! namespace), so `env` keeps the embedded queue and the Service Bus coordinates are
//! printed for scripts that speak its REST protocol. Approving a connection to a vendor
//! alias, which has no owner in the fake, goes through the admin route
//! `PUT {pe}/x-sandbox/connectionState` (see `fake_arm::network`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::fake_arm::network::NETWORK_API;
use super::fake_arm::{FakeArm, FakeArmOptions};
use super::fake_servicebus::{FakeServiceBus, FakeServiceBusOptions};
use super::harness::{HUB_RESOURCE_GROUP, HUB_SUBSCRIPTION, SPOKE_RESOURCE_GROUP, SPOKE_SUBSCRIPTION, sandbox_config};
use super::vendors::{self, SandboxVendors};
use private_link_autopilot::config::Config;

/// Common first-party privatelink zones created next to the vendors' zones, so the
/// usual targets (Key Vault, Blob storage, SQL) get records without setup.
pub const COMMON_ZONES: [&str; 3] =
    ["privatelink.vaultcore.azure.net", "privatelink.blob.core.windows.net", "privatelink.database.windows.net"];

/// The Private DNS api-version the fake and the official clients use.
pub const PRIVATE_DNS_API: &str = "2024-06-01";

/// The environment variable `autopilot serve` reads the static ARM token from (see
/// `main.rs`; accepted only for a loopback ARM).
pub const STATIC_TOKEN_ENV: &str = "AUTOPILOT_ARM_STATIC_TOKEN";

/// The running fakes.
pub struct Standalone {
    pub arm: FakeArm,
    pub vendors: SandboxVendors,
    pub service_bus: FakeServiceBus,
}

impl std::fmt::Debug for Standalone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Standalone").field("arm", &self.arm).finish_non_exhaustive()
    }
}

impl Standalone {
    /// Starts the fake ARM (hub zones created), the three vendors and Service Bus.
    pub async fn start() -> Result<Self, String> {
        // A script's poller honours Retry-After: ARM's 60 s would make every
        // long-running call a minute long. One poll answers InProgress, as before.
        let options = FakeArmOptions { lro_retry_after_secs: 1, ..FakeArmOptions::default() };
        let arm = FakeArm::start(options).await.map_err(|e| format!("fake ARM: {e}"))?;
        for zone in vendors::ZONES.iter().chain(COMMON_ZONES.iter()) {
            arm.add_zone(HUB_SUBSCRIPTION, HUB_RESOURCE_GROUP, zone);
        }
        let vendors = SandboxVendors::start().await.map_err(|e| format!("fake vendors: {e}"))?;
        let service_bus = FakeServiceBus::start(FakeServiceBusOptions::default())
            .await
            .map_err(|e| format!("fake Service Bus: {e}"))?;
        Ok(Self { arm, vendors, service_bus })
    }

    /// The configuration `serve` gets from [`env`](Self::env).
    pub fn config(&self) -> Config {
        let mut c = sandbox_config(&self.arm.base_url());
        self.vendors.configure(&mut c);
        c
    }

    /// The environment for `autopilot serve` against these fakes: `AUTOPILOT__*`
    /// overrides of what [`config`](Self::config) sets, the vendor keys under the
    /// variable names the configuration points at, and the static ARM token.
    pub fn env(&self) -> BTreeMap<String, String> {
        serve_env(&self.config(), self.arm.token(), self.vendors.env())
    }
}

/// The environment for `autopilot serve` with `c` (a [`sandbox_config`] with the vendors
/// configured): `AUTOPILOT__*` overrides, the vendor keys (`vendor_env`) and the static
/// ARM token. Shared by `autopilot sandbox` and the multi-process tests.
pub fn serve_env(c: &Config, arm_token: &str, vendor_env: Vec<(String, String)>) -> BTreeMap<String, String> {
    let list = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_owned(), v);
    };
    set("AUTOPILOT__ARM__BASE_URL", c.arm.base_url.clone());
    set(STATIC_TOKEN_ENV, arm_token.to_owned());
    set("AUTOPILOT__DNS__DEFAULT_SUBSCRIPTION", c.dns.default_subscription.clone());
    set("AUTOPILOT__DNS__DEFAULT_RESOURCE_GROUP", c.dns.default_resource_group.clone());
    set("AUTOPILOT__DNS__SHARE_ACROSS_VNETS", c.dns.share_across_vnets.to_string());
    for (vendor, aliases) in &c.catalog.vendor_aliases {
        set(&format!("AUTOPILOT__CATALOG__VENDOR_ALIASES__{}", vendor.to_ascii_uppercase()), list(aliases));
    }
    for (vendor, names) in &c.catalog.vendor_names {
        set(&format!("AUTOPILOT__CATALOG__VENDOR_NAMES__{}", vendor.to_ascii_uppercase()), list(names));
    }
    // In memory for the ledger, nowhere for audit: a sandbox run leaves no files
    // behind but the embedded queue (`AUTOPILOT__QUEUE__PATH`, relative to the cwd).
    set("AUTOPILOT__AUDIT__FILE", String::new());
    set("AUTOPILOT__LEDGER__PATH", String::new());
    set("AUTOPILOT__RECONCILE__RETRY_BASE_SECS", c.reconcile.retry_base_secs.to_string());
    set("AUTOPILOT__RECONCILE__RETRY_MAX_SECS", c.reconcile.retry_max_secs.to_string());
    let ch = &c.vendors.clickhouse;
    set("AUTOPILOT__VENDORS__CLICKHOUSE__ENABLED", ch.enabled.to_string());
    set("AUTOPILOT__VENDORS__CLICKHOUSE__BASE_URL", ch.base_url.clone());
    set("AUTOPILOT__VENDORS__CLICKHOUSE__ORGANIZATION_ID", ch.organization_id.clone());
    set("AUTOPILOT__VENDORS__CLICKHOUSE__SERVICE_IDS", list(&ch.service_ids));
    set("AUTOPILOT__VENDORS__CLICKHOUSE__KEY_ID_ENV", ch.key_id_env.clone());
    set("AUTOPILOT__VENDORS__CLICKHOUSE__KEY_SECRET_ENV", ch.key_secret_env.clone());
    let es = &c.vendors.elastic;
    set("AUTOPILOT__VENDORS__ELASTIC__ENABLED", es.enabled.to_string());
    set("AUTOPILOT__VENDORS__ELASTIC__BASE_URL", es.base_url.clone());
    set("AUTOPILOT__VENDORS__ELASTIC__DEPLOYMENT_IDS", list(&es.deployment_ids));
    set("AUTOPILOT__VENDORS__ELASTIC__API_KEY_ENV", es.api_key_env.clone());
    set("AUTOPILOT__VENDORS__ELASTIC__CONNECTION_NOT_FOUND_RETRY_SECS", es.connection_not_found_retry_secs.to_string());
    let zz = &c.vendors.zilliz;
    set("AUTOPILOT__VENDORS__ZILLIZ__ENABLED", zz.enabled.to_string());
    set("AUTOPILOT__VENDORS__ZILLIZ__BASE_URL", zz.base_url.clone());
    set("AUTOPILOT__VENDORS__ZILLIZ__PROJECT_ID", zz.project_id.clone());
    set("AUTOPILOT__VENDORS__ZILLIZ__API_KEY_ENV", zz.api_key_env.clone());
    for (k, v) in vendor_env {
        set(&k, v);
    }
    env
}

impl Standalone {
    /// The first stdout line: everything a script needs to find and use the fakes.
    pub fn describe(&self) -> Value {
        let arm_url = self.arm.base_url();
        let zone_ids: BTreeMap<&str, String> = vendors::ZONES
            .iter()
            .chain(COMMON_ZONES.iter())
            .map(|z| (*z, super::fake_arm::dns::zone_id(HUB_SUBSCRIPTION, HUB_RESOURCE_GROUP, z)))
            .collect();
        json!({
            "arm_url": arm_url,
            "arm_token": self.arm.token(),
            "clickhouse_url": self.vendors.clickhouse.base_url(),
            "elastic_url": self.vendors.elastic.base_url(),
            "zilliz_url": self.vendors.zilliz.base_url(),
            "servicebus_url": self.service_bus.base_url(),
            "servicebus": {
                "namespace": self.service_bus.namespace(),
                "queues": ["work", "work-deadletter"],
                "sas_key_name": self.service_bus.key_name(),
                "sas_key": self.service_bus.key().expose(),
            },
            "hub": {"subscription": HUB_SUBSCRIPTION, "resource_group": HUB_RESOURCE_GROUP},
            "spoke": {"subscription": SPOKE_SUBSCRIPTION, "resource_group": SPOKE_RESOURCE_GROUP},
            "zones": zone_ids,
            "aliases": {
                "clickhouse": vendors::CLICKHOUSE_ALIAS,
                "elastic": vendors::ELASTIC_ALIAS,
                "zilliz": vendors::ZILLIZ_ALIAS,
            },
            "api_versions": {"network": NETWORK_API, "private_dns": PRIVATE_DNS_API},
            "approve_alias_route": "PUT {private endpoint id}/x-sandbox/connectionState?api-version=2025-07-01 \
                                    {\"status\":\"Approved\"}",
            "env": self.env(),
        })
    }
}

/// `autopilot sandbox`: start, print the description line, run until SIGINT/SIGTERM.
pub async fn run() -> Result<(), String> {
    let sandbox = Standalone::start().await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", sandbox.describe()).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    eprintln!("autopilot sandbox: fake ARM at {} (Ctrl-C to stop)", sandbox.arm.base_url());
    shutdown_signal().await;
    // Let in-flight answers finish before the servers are dropped.
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(sandbox);
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `env` must configure `serve` exactly like the in-process sandbox.
    #[tokio::test]
    async fn env_loads_into_the_sandbox_configuration() {
        let sb = Standalone::start().await.unwrap();
        let env: Vec<(String, String)> = sb.env().into_iter().collect();
        let loaded = Config::load(None, env.clone()).unwrap();
        let want = sb.config();
        assert_eq!(loaded.arm.base_url, want.arm.base_url);
        assert_eq!(loaded.dns.default_subscription, want.dns.default_subscription);
        assert_eq!(loaded.dns.default_resource_group, want.dns.default_resource_group);
        assert_eq!(loaded.dns.share_across_vnets, want.dns.share_across_vnets);
        assert_eq!(loaded.catalog.vendor_aliases, want.catalog.vendor_aliases);
        assert_eq!(loaded.catalog.vendor_names, want.catalog.vendor_names);
        assert_eq!(loaded.vendors, want.vendors);
        assert_eq!(loaded.audit.file, "");
        assert_eq!(loaded.ledger.path, "");
        let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        private_link_autopilot::effects::vendors::build_vendors(&loaded.vendors, lookup).unwrap();
        let line = sb.describe();
        for key in ["arm_url", "arm_token", "clickhouse_url", "elastic_url", "zilliz_url", "servicebus_url"] {
            assert!(line[key].as_str().is_some_and(|v| !v.is_empty()), "{key}");
        }
        assert!(!line.to_string().contains('\n'));
        // The hub zones exist.
        for zone in line["zones"].as_object().unwrap().values() {
            assert!(sb.arm.resource(zone.as_str().unwrap()).is_some(), "{zone}");
        }
    }
}
