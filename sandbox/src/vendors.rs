//! The three fake vendor APIs started together and the configuration that points the
//! product at them, for the demo and the end-to-end tests. Keys are made up and handed
//! to the application through an explicit environment (never the process's).

use std::time::Duration;

use super::fake_vendors::clickhouse::{ClickHouseFake, ClickHouseFakeOptions};
use super::fake_vendors::elastic::{ElasticFake, ElasticFakeOptions};
use super::fake_vendors::zilliz::{ZillizFake, ZillizFakeOptions};
use private_link_autopilot::config::Config;

/// Private Link Service aliases of the three vendors in the sandbox's region (`eastus2`),
/// exactly as the fake vendors publish them (ClickHouse `privateEndpointConfig`, Zilliz's
/// endpoint services; Elastic's from its published table), and the private DNS zones
/// their records go to.
pub const CLICKHOUSE_ALIAS: &str =
    "production-eastus2-0-0.00000000-0000-4000-8000-00000000c0de.eastus2.azure.privatelinkservice";
pub const ELASTIC_ALIAS: &str =
    "eastus2-prod-002-privatelink-service.64359fdd-7893-4215-9929-ece3287e1371.eastus2.azure.privatelinkservice";
pub const ZILLIZ_ALIAS: &str =
    "zilliz-prod-infra-privatelink.6a90fc24-16c3-40c1-a94c-648987ac7422.eastus2.azure.privatelinkservice";
/// Zilliz cluster ids of the sandbox's project (the names a tag may ask for).
pub const ZILLIZ_CLUSTERS: [&str; 2] = ["in01-3f2a9c", "in01-77aa01"];
pub const ZONES: [&str; 3] = [
    "eastus2.privatelink.azure.clickhouse.cloud",
    "privatelink.eastus2.azure.elastic-cloud.com",
    "az-eastus2.vectordb.zillizcloud.com",
];

pub struct SandboxVendors {
    pub clickhouse: ClickHouseFake,
    pub elastic: ElasticFake,
    pub zilliz: ZillizFake,
    ch: ClickHouseFakeOptions,
    es: ElasticFakeOptions,
    zz: ZillizFakeOptions,
}

impl std::fmt::Debug for SandboxVendors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxVendors").finish_non_exhaustive()
    }
}

impl SandboxVendors {
    /// Fakes for region `eastus2` (the demo's region).
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(|_, _, _| {}).await
    }

    /// Like [`start`](Self::start), after `adjust` changed the fakes' options (the
    /// benchmarks lift the vendors' rate limits to measure the worker, not the limits).
    pub async fn start_with(
        adjust: impl FnOnce(&mut ClickHouseFakeOptions, &mut ElasticFakeOptions, &mut ZillizFakeOptions),
    ) -> std::io::Result<Self> {
        let mut ch = ClickHouseFakeOptions { region: "eastus2".into(), ..ClickHouseFakeOptions::default() };
        let mut es = ElasticFakeOptions::default();
        let mut zz = ZillizFakeOptions::default();
        zz.region_ids.push("az-eastus2".into());
        adjust(&mut ch, &mut es, &mut zz);
        Ok(Self {
            clickhouse: ClickHouseFake::start(ch.clone()).await?,
            elastic: ElasticFake::start(es.clone()).await?,
            zilliz: ZillizFake::start(zz.clone()).await?,
            ch,
            es,
            zz,
        })
    }

    /// Enables the three vendors in `config`, pointed at the fakes, with their defaults.
    pub fn configure(&self, c: &mut Config) {
        let v = &mut c.vendors;
        v.clickhouse.enabled = true;
        v.clickhouse.base_url = self.clickhouse.base_url();
        v.clickhouse.organization_id = self.ch.organization_id.clone();
        v.clickhouse.service_ids = self.ch.service_ids.clone();
        v.elastic.enabled = true;
        v.elastic.base_url = self.elastic.base_url();
        v.elastic.deployment_ids = self.es.deployment_ids.clone();
        // Elastic cannot see a brand-new connection for a while; keep the bound short here.
        v.elastic.connection_not_found_retry_secs = 8;
        v.zilliz.enabled = true;
        v.zilliz.base_url = self.zilliz.base_url();
        v.zilliz.project_id = self.zz.project_id.clone();
        // Fast retries: the sandbox shows a whole backoff in seconds, not hours.
        c.reconcile.retry_base_secs = 1;
        c.reconcile.retry_max_secs = 2;
    }

    /// The secrets, as the app settings (Key Vault references) would provide them.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("CLICKHOUSE_KEY_ID".into(), self.ch.key_id.clone()),
            ("CLICKHOUSE_KEY_SECRET".into(), self.ch.key_secret.clone()),
            ("ELASTIC_API_KEY".into(), self.es.api_key.clone()),
            ("ZILLIZ_API_KEY".into(), self.zz.api_key.clone()),
        ]
    }

    /// Every secret value, for tests proving none of them leaks.
    pub fn secrets(&self) -> Vec<String> {
        self.env().into_iter().map(|(_, v)| v).collect()
    }

    /// The secrets a sandbox started with default options uses (for a test that only
    /// sees another process's output).
    pub fn secrets_for_tests() -> Vec<String> {
        let (ch, es, zz) =
            (ClickHouseFakeOptions::default(), ElasticFakeOptions::default(), ZillizFakeOptions::default());
        vec![ch.key_id, ch.key_secret, es.api_key, zz.api_key]
    }

    /// A generous wait for queue work to reach the vendors.
    pub const SETTLE: Duration = Duration::from_secs(20);
}
