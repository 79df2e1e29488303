//! `autopilot demo`: the product end to end on a laptop, no Azure needed.
//!
//! It starts the fake ARM (and, when `named` is installed, a real BIND 9 serving the
//! Elastic zone over RFC 2136), runs the real handler behind the host emulator with the
//! embedded queue, then plays a platform team's day: one private endpoint per catalog
//! entry is created and its Event Grid event delivered, the vendors approve, an event is
//! redelivered, three endpoints are deleted. Zone management is on (`dns.zone_management =
//! "create"`): the Zilliz zone does not exist in the hub, so the approval that first needs it
//! creates it and links it to the spoke VNet; the ClickHouse zone has a DR replica (a
//! same-named zone in another subscription, a second `[[dns.zones]]` entry) that gets every
//! record too. Then a Data Factory managed private endpoint, living in a Microsoft
//! subscription our identity cannot read, asks for the team's storage account; the
//! `CatchUp` timer finds it Pending with Resource Graph and approves it from the target side
//! under a configured requester rule. At the end it prints the records with their owners,
//! the vendors' allowlists, the dead letter and the audit events.
//!
//! The output is written for someone seeing the product for the first time: stdout is
//! the narrative only, numbered steps with one line per outcome (a DNS change, a vendor
//! registration, a dead letter), and nothing else; the logs go to stderr at warning level
//! (see `telemetry`), so `autopilot demo 2>/dev/null` reads as a story and a failure still
//! shows up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bind::{KEY_NAME, LocalBind, find_named};
use super::events::{self, ResourceEvent};
use super::fake_arm::{EndpointSpec, FakeArmOptions, MemberSpec};
use super::fake_vendors::Fault;
use super::harness::{
    HUB_RESOURCE_GROUP, HUB_SUBSCRIPTION, SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB, Sandbox,
    SandboxOptions,
};
use super::host_emulator::InvokeOutcome;
use super::vendors::SandboxVendors;
use private_link_autopilot::config::ZoneSettings;
use private_link_autopilot::effects::dns::DnsProvider;
use private_link_autopilot::effects::dns::rfc2136::{Rfc2136Config, Rfc2136Provider};
use private_link_autopilot::effects::dns::zones::OWNED_TAG;
use private_link_autopilot::effects::target_approvals::RequesterRule;
use private_link_autopilot::model::Ownership;
use private_link_autopilot::model::Secret;

const ZILLIZ_WESTUS3_ALIAS: &str =
    "zilliz-prod-infra-privatelink.6a90fc24-16c3-40c1-a94c-648987ac7422.westus3.azure.privatelinkservice";
pub const CLICKHOUSE_ZONE: &str = "eastus2.privatelink.azure.clickhouse.cloud";
pub const ELASTIC_ZONE: &str = "privatelink.eastus2.azure.elastic-cloud.com";
/// Not in the hub when the demo starts: zone management creates it.
pub const ZILLIZ_ZONE: &str = "az-eastus2.vectordb.zillizcloud.com";
/// Where the ClickHouse zone's DR replica lives.
pub const DR_SUBSCRIPTION: &str = "33333333-3333-3333-3333-333333333333";
pub const DR_RESOURCE_GROUP: &str = "dns-dr";
/// A Microsoft-managed subscription holding Data Factory's managed private endpoints: our
/// identity may not read it (the fake answers 403), as for any Microsoft tenant.
const MANAGED_SUBSCRIPTION: &str = "9f0e0d0c-0000-4000-8000-0000000adf01";
/// The requester rule the operator wrote for it (`[[approvals.requesters]]`).
pub const MANAGED_RULE: &str = "data-factory-managed-vnet";
/// The zones in the hub when the demo starts (each already linked to the spoke VNet).
const AZURE_ZONES: [&str; 8] = [
    CLICKHOUSE_ZONE,
    "az-westus3.vectordb.zillizcloud.com",
    "privatelink.eastus2.kusto.windows.net",
    "privatelink.blob.core.windows.net",
    "privatelink.queue.core.windows.net",
    "privatelink.table.core.windows.net",
    "privatelink.eastus2.prometheus.monitor.azure.com",
    "privatelink.vaultcore.azure.net",
];

/// Whether to put the Elastic zone on a local BIND 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindChoice {
    /// Use BIND when `named` is installed, else Azure Private DNS (fake) for every zone.
    Auto,
    Off,
    /// Fail if `named` is missing.
    Required,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub zone: String,
    pub name: String,
    pub addresses: Vec<String>,
    /// Owning endpoints' names, or who else manages it.
    pub owner: String,
    pub backend: &'static str,
    /// `""` in the hub; where a replica elsewhere lives (`DR replica in dns-dr`).
    pub place: String,
}

/// What the demo ends with (also used by its test).
#[derive(Debug)]
pub struct DemoSummary {
    pub rows: Vec<Row>,
    pub used_bind: bool,
    pub arm_requests: usize,
    pub arm_writes: usize,
    pub throttled: usize,
    pub queue_depth: usize,
    pub audit_events: usize,
    /// Endpoint ids registered with each vendor at the end.
    pub vendor_registrations: usize,
    pub dead_letters: Vec<String>,
    /// Zones zone management created (names), and the VNets it linked them to (short names).
    pub zones_created: Vec<String>,
    pub links_created: Vec<String>,
    /// The managed endpoint's connection after the `CatchUp` run: status and description.
    pub managed_connection: (String, String),
    pub elapsed: Duration,
}

fn endpoints() -> Vec<(&'static str, EndpointSpec)> {
    let kusto = format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Kusto/clusters/adxtelemetry");
    let amw = format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Monitor/accounts/amw-metrics");
    let vault = format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/kv-secrets");
    vec![
        (
            "ClickHouse Cloud",
            EndpointSpec::alias(SUB, RG, "ch-analytics-1", "eastus2", super::vendors::CLICKHOUSE_ALIAS),
        ),
        (
            "ClickHouse Cloud, other VNet",
            EndpointSpec::alias(SUB, RG, "ch-analytics-2", "eastus2", super::vendors::CLICKHOUSE_ALIAS),
        ),
        ("Elastic Cloud", EndpointSpec::alias(SUB, RG, "es-logs", "eastus2", super::vendors::ELASTIC_ALIAS)),
        (
            "Zilliz Cloud",
            EndpointSpec::alias(SUB, RG, "zilliz-vectors", "eastus2", super::vendors::ZILLIZ_ALIAS)
                .with_tag("autopilot.zilliz.clusters", "in01-3f2a9c"),
        ),
        (
            "Zilliz Cloud, westus3 (no Private Link)",
            EndpointSpec::alias(SUB, RG, "zilliz-westus3", "westus3", ZILLIZ_WESTUS3_ALIAS)
                .with_tag("autopilot.zilliz.clusters", "in01-77aa01"),
        ),
        (
            "Azure Data Explorer",
            EndpointSpec::resource(
                SUB,
                RG,
                "adx-telemetry",
                "eastus2",
                &kusto,
                "cluster",
                vec![
                    MemberSpec::new("Engine", &["adxtelemetry.eastus2.kusto.windows.net"]),
                    MemberSpec::new("DataManagement", &["ingest-adxtelemetry.eastus2.kusto.windows.net"]),
                    MemberSpec::new("blob-kstrl", &["kstrladxtelemetry00.blob.core.windows.net"]),
                    MemberSpec::new("queue-kstrl", &["kstrladxtelemetry00.queue.core.windows.net"]),
                    MemberSpec::new("table-kstrl", &["kstrladxtelemetry00.table.core.windows.net"]),
                ],
            ),
        ),
        (
            "Azure Monitor workspace",
            EndpointSpec::resource(
                SUB,
                RG,
                "amw-metrics",
                "eastus2",
                &amw,
                "prometheusMetrics",
                vec![MemberSpec::new("prometheusMetrics", &["amw-metrics-a1b2.eastus2.prometheus.monitor.azure.com"])],
            ),
        ),
        (
            "Key Vault",
            EndpointSpec::resource(
                SUB,
                RG,
                "kv-secrets",
                "eastus2",
                &vault,
                "vault",
                vec![MemberSpec::new("default", &["kv-secrets.vault.azure.net"])],
            ),
        ),
    ]
}

fn owner_name(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

fn spoke_vnet() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks/spoke-vnet")
}

fn storage_account() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Storage/storageAccounts/lakeraw")
}

/// A zone as the demo shows it: where it is, whether we created it, its links.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ZoneRow {
    zone: String,
    resource_group: String,
    owned: bool,
    /// (link name, VNet short name, ours).
    links: Vec<(String, String, bool)>,
}

fn zone_rows(sb: &Sandbox, ids: &[String]) -> BTreeMap<String, ZoneRow> {
    let mut out = BTreeMap::new();
    for id in ids {
        let Some(zone) = sb.arm.resource(id) else { continue };
        let owned = |v: &serde_json::Value| v["tags"][OWNED_TAG].as_str() == Some("true");
        let links = sb
            .arm
            .links(id)
            .iter()
            .map(|l| {
                let vnet = l["properties"]["virtualNetwork"]["id"].as_str().unwrap_or_default();
                (l["name"].as_str().unwrap_or_default().to_owned(), owner_name(vnet).to_owned(), owned(l))
            })
            .collect();
        let rg = id.split('/').skip_while(|s| !s.eq_ignore_ascii_case("resourceGroups")).nth(1).unwrap_or_default();
        out.insert(
            id.to_ascii_lowercase(),
            ZoneRow {
                zone: zone["name"].as_str().unwrap_or_default().to_owned(),
                resource_group: rg.to_owned(),
                owned: owned(&zone),
                links,
            },
        );
    }
    out
}

/// Prints zones and links zone management created or removed; whether there were any.
fn print_zone_changes(before: &BTreeMap<String, ZoneRow>, after: &BTreeMap<String, ZoneRow>) -> bool {
    let mut any = false;
    for (id, z) in after {
        let old = before.get(id);
        if old.is_none() {
            let who = if z.owned { format!(", tagged {OWNED_TAG}=true") } else { String::new() };
            println!("      + zone {} created in {}{who}", z.zone, z.resource_group);
            any = true;
        }
        for (name, vnet, ours) in &z.links {
            if old.is_none_or(|o| !o.links.iter().any(|l| &l.0 == name)) {
                let who = if *ours { " (ours, registration off)" } else { "" };
                println!("      + link {name}: {} -> {vnet}{who}", z.zone);
                any = true;
            }
        }
    }
    for (id, z) in before {
        if !after.contains_key(id) {
            println!("      - zone {} removed from {} (ours and empty)", z.zone, z.resource_group);
            any = true;
        }
    }
    any
}

async fn snapshot(sb: &Sandbox, bind: Option<&Rfc2136Provider>) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let dr_zone = super::fake_arm::dns::zone_id(DR_SUBSCRIPTION, DR_RESOURCE_GROUP, CLICKHOUSE_ZONE);
    for r in sb.arm.all_records() {
        let place = if r.zone_id.eq_ignore_ascii_case(&dr_zone) {
            format!("DR replica in {DR_RESOURCE_GROUP}")
        } else {
            String::new()
        };
        let owner = if r.is_managed() {
            let mut owners: Vec<&str> = r
                .metadata
                .iter()
                .filter(|(k, _)| k.starts_with("plowner"))
                .filter_map(|(_, v)| v.as_str()?.rsplit_once('|').map(|(_, id)| owner_name(id)))
                .collect();
            owners.sort();
            owners.join(", ")
        } else {
            format!("not ours: {}", serde_json::Value::Object(r.metadata.clone()))
        };
        rows.push(Row {
            zone: r.zone.clone(),
            name: r.name.clone(),
            addresses: r.addresses.iter().map(ToString::to_string).collect(),
            owner,
            backend: "Azure Private DNS (fake ARM)",
            place,
        });
    }
    if let Some(p) = bind {
        for set in p.list(ELASTIC_ZONE).await.map_err(|e| e.to_string())? {
            // The TXT publishes owners only as hashes; the demo knows its endpoints' ids.
            let known: Vec<String> = endpoints().into_iter().map(|(_, spec)| spec.id()).collect();
            let name_of = |k: &str| {
                known
                    .iter()
                    .find(|id| private_link_autopilot::model::ownership::opaque_ref(id) == k)
                    .map_or_else(|| owner_name(k).to_owned(), |id| owner_name(id).to_owned())
            };
            let owner = match &set.ownership {
                Ownership::Managed(owners) => owners.keys().map(|k| name_of(k)).collect::<Vec<_>>().join(", "),
                Ownership::Foreign(why) => format!("not ours: {why}"),
            };
            if set.key.name == "ns" {
                continue; // the zone's own name server
            }
            rows.push(Row {
                zone: set.key.zone.clone(),
                name: set.key.name.clone(),
                addresses: set.addresses.iter().map(ToString::to_string).collect(),
                owner,
                backend: "BIND 9 (RFC 2136)",
                place: String::new(),
            });
        }
    }
    rows.sort_by(|a, b| (&a.zone, &a.name, &a.place).cmp(&(&b.zone, &b.name, &b.place)));
    Ok(rows)
}

/// Prints what changed in DNS between two snapshots, one line per record; whether
/// anything changed (the caller words the "nothing changed" case for its step).
fn print_changes(before: &[Row], after: &[Row]) -> bool {
    let key = |r: &Row| (r.zone.clone(), r.name.clone(), r.place.clone());
    let at = |r: &Row| if r.place.is_empty() { String::new() } else { format!("  ({})", r.place) };
    let b: BTreeMap<_, _> = before.iter().map(|r| (key(r), r)).collect();
    let a: BTreeMap<_, _> = after.iter().map(|r| (key(r), r)).collect();
    let mut any = false;
    for (k, r) in &a {
        match b.get(k) {
            None => println!("      + {}.{}  A {}  [{}]{}", r.name, r.zone, r.addresses.join(" "), r.owner, at(r)),
            Some(old) if old != r => println!(
                "      ~ {}.{}  A {} -> {}  [{}]{}",
                r.name,
                r.zone,
                old.addresses.join(" "),
                r.addresses.join(" "),
                r.owner,
                at(r)
            ),
            _ => {}
        }
        any |= b.get(k).is_none_or(|old| old != r);
    }
    for (k, r) in &b {
        if !a.contains_key(k) {
            println!("      - {}.{}  A {}{}", r.name, r.zone, r.addresses.join(" "), at(r));
            any = true;
        }
    }
    any
}

fn print_vendors(vendors: &SandboxVendors) {
    for (service, ids) in vendors.clickhouse.state().services {
        let names: Vec<&str> = ids.iter().map(|i| owner_name(i)).collect();
        println!("    ClickHouse service {service}: privateEndpointIds [{}]", names.join(", "));
    }
    let rulesets = vendors.elastic.state().rulesets;
    let rules: Vec<String> = rulesets.values().map(|r| format!("{} ({})", r.name, r.region)).collect();
    println!("    Elastic traffic filter rulesets: [{}]", rules.join(", "));
    let zz: Vec<String> = vendors.zilliz.state().endpoints.iter().map(|e| e.endpoint_id.clone()).collect();
    println!("    Zilliz private endpoints: [{}]", zz.join(", "));
}

/// Where the fake vendors list this endpoint, in their own words (empty: nowhere).
fn registered_with(vendors: &SandboxVendors, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (service, ids) in vendors.clickhouse.state().services {
        if ids.iter().any(|i| owner_name(i).eq_ignore_ascii_case(name)) {
            out.push(format!("ClickHouse service {service}"));
        }
    }
    let prefix = format!("pl-autopilot-{name}-");
    for r in vendors.elastic.state().rulesets.values().filter(|r| r.name.starts_with(&prefix)) {
        out.push(format!("Elastic ruleset {} ({})", r.name, r.region));
    }
    let dotted = format!("{name}.");
    for e in vendors.zilliz.state().endpoints.iter().filter(|e| e.endpoint_id.starts_with(&dotted)) {
        out.push(format!("Zilliz endpoint {} ({})", e.endpoint_id, e.region_id));
    }
    out
}

pub async fn run(choice: BindChoice) -> Result<DemoSummary, String> {
    let started = Instant::now();
    let bind = match (choice, find_named()) {
        (BindChoice::Off, _) | (BindChoice::Auto, None) => None,
        (BindChoice::Required, None) => {
            return Err("--bind: `named` not found (apt-get install bind9)".into());
        }
        (_, Some(named)) => {
            let b = tokio::task::spawn_blocking(move || LocalBind::start(&named, &[ELASTIC_ZONE], |_| String::new()))
                .await
                .map_err(|e| e.to_string())??;
            Some(b)
        }
    };
    let mut bind_provider = None;
    let mut extra_routes = Vec::new();
    let mut zones: Vec<String> = AZURE_ZONES.iter().map(|z| (*z).to_owned()).collect();
    if let Some(b) = &bind {
        let mut cfg = Rfc2136Config::new(b.addr(), KEY_NAME, Secret::new(b.secret.clone()));
        cfg.allow_axfr = true;
        let p = Arc::new(Rfc2136Provider::new(cfg).map_err(|e| e.to_string())?);
        extra_routes.push((ELASTIC_ZONE.to_owned(), p.clone() as Arc<dyn DnsProvider>));
        bind_provider = Some(p);
    } else {
        zones.push(ELASTIC_ZONE.to_owned());
    }
    let audit_file = std::env::temp_dir().join(format!("autopilot-demo-audit-{}.jsonl", std::process::id()));
    let audit_path = audit_file.display().to_string();
    let vendors = SandboxVendors::start().await.map_err(|e| format!("fake vendors: {e}"))?;
    let mut vendor_config = private_link_autopilot::config::Config::default();
    vendors.configure(&mut vendor_config);
    let options = SandboxOptions {
        // Zone and link writes are long-running operations: polled once, without the
        // fixtures' 60 s Retry-After, so the demo stays a few seconds long.
        arm: FakeArmOptions { lro_retry_after_secs: 0, ..FakeArmOptions::default() },
        zones,
        extra_routes,
        configure: Box::new(move |c| {
            c.audit.file = audit_path;
            // Zone management on: a missing zone is created in the hub and linked to the
            // endpoint's VNet. The ClickHouse zone is written in two places, the hub and
            // its DR copy (replicas: several [[dns.zones]] with one name).
            c.dns.zone_management = "create".into();
            for (subscription, resource_group) in
                [(HUB_SUBSCRIPTION, HUB_RESOURCE_GROUP), (DR_SUBSCRIPTION, DR_RESOURCE_GROUP)]
            {
                c.dns.zones.push(ZoneSettings {
                    name: CLICKHOUSE_ZONE.into(),
                    provider: "azure".into(),
                    subscription: subscription.into(),
                    resource_group: resource_group.into(),
                    server: String::new(),
                    link_to: None,
                });
            }
            // Target-side approvals: the team's storage accounts are scanned for Pending
            // connections; Data Factory's managed endpoints come from one Microsoft
            // subscription, which the operator named in a requester rule.
            c.approvals.target_scopes = vec![format!("/subscriptions/{SUB}/resourceGroups/{RG}")];
            c.approvals.target_types = vec!["Microsoft.Storage/storageAccounts".into()];
            c.approvals.requesters = vec![RequesterRule {
                name: MANAGED_RULE.into(),
                subscriptions: vec![MANAGED_SUBSCRIPTION.into()],
                tenants: Vec::new(),
                endpoint_name_pattern: String::new(),
                description_pattern: String::new(),
                approve: true,
                expires_after_secs: 0,
                warn_before_secs: 0,
            }];
            c.vendors = vendor_config.vendors;
            c.reconcile.retry_base_secs = 1;
            c.reconcile.retry_max_secs = 2;
            // The operator lists the project's westus3 endpoint service (Zilliz does not
            // publish one there yet): recognised as Zilliz's, then refused by Zilliz.
            c.catalog.vendor_aliases.entry("zilliz".into()).or_default().push(ZILLIZ_WESTUS3_ALIAS.into());
        }),
        env: vendors.env(),
        ..SandboxOptions::default()
    };
    let sb = Sandbox::start(options).await?;
    let bind_ref = bind_provider.as_deref();
    // The hub's existing zones are linked to the spoke already (the platform team did it);
    // the DR copy of the ClickHouse zone lives in another subscription.
    let mut zone_ids = Vec::new();
    for zone in AZURE_ZONES.iter().copied().chain(bind.is_none().then_some(ELASTIC_ZONE)) {
        let id = sb.zone_id(zone);
        sb.arm.add_link(&id, "hub-to-spoke", &spoke_vnet(), None, serde_json::json!({}));
        zone_ids.push(id);
    }
    zone_ids.push(sb.zone_id(ZILLIZ_ZONE));
    zone_ids.push(sb.arm.add_zone(DR_SUBSCRIPTION, DR_RESOURCE_GROUP, CLICKHOUSE_ZONE));
    sb.arm.add_link_target(&storage_account(), "eastus2");
    sb.arm.deny_subscription(MANAGED_SUBSCRIPTION);

    println!("Private Link Autopilot demo: the real handler against local fakes");
    println!("  ARM      fake at {} (endpoints, NICs, private DNS zones)", sb.arm.base_url());
    println!("  handler  http://{}, behind a Functions host emulator, embedded work queue", sb.handler_addr);
    match &bind {
        Some(b) => {
            println!("  DNS      Azure Private DNS (fake); {ELASTIC_ZONE} on BIND 9 at {} (RFC 2136, TSIG)", b.addr())
        }
        None => println!("  DNS      Azure Private DNS (fake) for every zone (install bind9 to see RFC 2136)"),
    }
    println!(
        "  zones    zone_management = \"create\": {ZILLIZ_ZONE} is missing from the hub; {CLICKHOUSE_ZONE} also has a DR \
         replica in subscription {DR_SUBSCRIPTION}, resource group {DR_RESOURCE_GROUP}"
    );
    println!(
        "  vendors  fake ClickHouse Cloud, Elastic Cloud, Zilliz Cloud; ClickHouse fails its first call (HTTP 500)"
    );
    vendors.clickhouse.inject(Fault::ServerError, 1);

    let mut before = snapshot(&sb, bind_ref).await?;
    let mut zones_before = zone_rows(&sb, &zone_ids);
    let initial_zones = zones_before.clone();
    let mut ids = BTreeMap::new();
    println!("\n1. create one private endpoint per catalog entry; Event Grid delivers each write to the handler");
    for (what, spec) in endpoints() {
        let (id, delivery) = sb.create(&spec).await;
        let after = snapshot(&sb, bind_ref).await?;
        let zones_after = zone_rows(&sb, &zone_ids);
        let head = format!("  {:<15} {what:<40} handler answered {}", spec.name, delivery.status);
        if after == before && spec.status == "Pending" {
            println!("{head}; Pending: no DNS until the vendor approves");
            print_zone_changes(&zones_before, &zones_after);
        } else {
            println!("{head}; Approved: records written");
            let zoned = print_zone_changes(&zones_before, &zones_after);
            if !print_changes(&before, &after) && !zoned {
                println!("      (no DNS change)");
            }
        }
        before = after;
        zones_before = zones_after;
        ids.insert(spec.name.clone(), id);
    }

    println!("\n2. vendor allowlists, through the work queue (each item re-reads the endpoint from ARM first)");
    // Registered endpoints stay Pending (and re-checked) until the vendor approves, so
    // wait for the registrations and the dead letter rather than for an empty queue.
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        let registered = vendors.clickhouse.state().services.values().map(Vec::len).sum::<usize>()
            + vendors.elastic.state().rulesets.len()
            + vendors.zilliz.state().endpoints.len();
        let dead = sb.app.queue.dead_letters().await.map(|d| d.len()).unwrap_or(0);
        if registered >= 4 && dead >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = sb.app.queue.dead_letters().await.map_err(|e| e.to_string())?;
    for name in ["ch-analytics-1", "ch-analytics-2", "es-logs", "zilliz-vectors", "zilliz-westus3"] {
        let id = ids.get(name).cloned().unwrap_or_default();
        let registered = registered_with(&vendors, name);
        if let Some(d) = dead.iter().find(|d| d.correlation_id.eq_ignore_ascii_case(&id)) {
            println!("  {name:<15} dead-lettered: {}", d.reason);
        } else if registered.is_empty() {
            println!("  {name:<15} not registered yet");
        } else {
            println!("  {name:<15} registered: {}", registered.join(", "));
        }
    }
    let stats = sb.app.stats.snapshot();
    let retried = stats["vendor_calls_failed"].as_u64().unwrap_or(0).saturating_sub(dead.len() as u64);
    println!("  ({retried} failed vendor call retried with backoff: ClickHouse's HTTP 500)");

    println!("\n3. the vendors approve the connections on their side (no event reaches our subscription)");
    for name in ["ch-analytics-1", "ch-analytics-2", "es-logs", "zilliz-vectors"] {
        if let Some(id) = ids.get(name) {
            sb.arm.set_connection_status(id, "Approved");
        }
    }
    sb.drain(Duration::from_secs(15)).await;
    println!(
        "  the approval re-checks see it and write the records (the Zilliz zone did not exist: created and \
         linked to the endpoint's VNet first; the ClickHouse wildcard goes to both copies of its zone):"
    );
    let after = snapshot(&sb, bind_ref).await?;
    let zones_after = zone_rows(&sb, &zone_ids);
    let zoned = print_zone_changes(&zones_before, &zones_after);
    if !print_changes(&before, &after) && !zoned {
        println!("      (no DNS change)");
    }
    before = after;
    zones_before = zones_after;
    for name in ["ch-analytics-1", "ch-analytics-2", "es-logs", "zilliz-vectors", "zilliz-westus3"] {
        let id = ids.get(name).cloned().unwrap_or_default();
        let tags = sb.arm.resource(&id).map(|r| r["tags"].clone()).unwrap_or_default();
        println!(
            "  {name:<15} tags plautopilot-state={} plautopilot-done={}",
            tags["plautopilot-state"].as_str().unwrap_or("-"),
            tags["plautopilot-done"].as_str().unwrap_or("-")
        );
    }

    let first = ids.get("ch-analytics-1").cloned().unwrap_or_default();
    println!("\n4. redeliver ch-analytics-1's write event (Event Grid delivers at least once)");
    let d = sb.deliver(vec![events::event_grid(ResourceEvent::WriteSuccess, &first)]).await;
    let after = snapshot(&sb, bind_ref).await?;
    println!("  ch-analytics-1  handler answered {}; no DNS change (already converged)", d.status);
    if print_changes(&before, &after) {
        println!("      (unexpected: the redelivery changed DNS)");
    }
    before = after;

    println!("\n5. delete three endpoints; Event Grid delivers each delete");
    for name in ["ch-analytics-1", "es-logs", "adx-telemetry"] {
        let id = ids.get(name).cloned().unwrap_or_default();
        let d = sb.delete(&id).await;
        println!("  {name:<15} handler answered {}; its addresses are removed:", d.status);
        let after = snapshot(&sb, bind_ref).await?;
        let zones_after = zone_rows(&sb, &zone_ids);
        let zoned = print_zone_changes(&zones_before, &zones_after);
        if !print_changes(&before, &after) && !zoned {
            println!("      (no DNS change)");
        }
        before = after;
        zones_before = zones_after;
    }
    sb.drain(Duration::from_secs(15)).await;

    println!(
        "\n6. a Data Factory managed private endpoint asks for storage account lakeraw (it lives in a Microsoft \
         subscription: no event reaches ours)"
    );
    let managed_pe = format!(
        "/subscriptions/{MANAGED_SUBSCRIPTION}/resourceGroups/vnet-adf-managed/providers/Microsoft.Network/\
         privateEndpoints/adf-ingest.lakeraw"
    );
    let connection = sb.arm.add_foreign_connection(&storage_account(), &managed_pe, "Requested by adf-ingest", None);
    let connection_id = format!("{}/privateEndpointConnections/{connection}", storage_account());
    let state_of = |sb: &Sandbox| {
        let v = sb.arm.resource(&connection_id).unwrap_or_default();
        let s = &v["properties"]["privateLinkServiceConnectionState"];
        (s["status"].as_str().unwrap_or("-").to_owned(), s["description"].as_str().unwrap_or_default().to_owned())
    };
    println!("  lakeraw         connection {}: {}", owner_name(&connection), state_of(&sb).0);
    let run = match sb.host.invoke_timer(private_link_autopilot::intake::server::CATCH_UP_FUNCTION, false).await? {
        InvokeOutcome::Succeeded(r) => r.return_value,
        InvokeOutcome::Failed(why) => return Err(format!("CatchUp failed: {why}")),
    };
    let managed_connection = state_of(&sb);
    println!(
        "  CatchUp timer   Resource Graph listed {} Pending connection(s) on owned storage accounts; approved {}",
        run["target_approvals"]["listed"], run["target_approvals"]["approved"]
    );
    println!("  lakeraw         connection {}: {}", owner_name(&connection), managed_connection.0);
    println!("      description: {}", managed_connection.1);
    println!(
        "      (its subscription is not readable: the rule {MANAGED_RULE} matched the endpoint's subscription, which \
         ARM sets; the request message only narrows)"
    );

    println!("\n7. where things stand");
    println!("  vendor allowlists (ch-analytics-1 and es-logs deregistered):");
    print_vendors(&vendors);
    let dead = sb.app.queue.dead_letters().await.map_err(|e| e.to_string())?;
    println!("  dead-lettered work ({}), as `autopilot dlq list` shows it:", dead.len());
    for d in &dead {
        println!("    {}  {}", d.message_id, d.reason);
    }
    let rows = snapshot(&sb, bind_ref).await?;
    println!("  records ({}):", rows.len());
    for r in &rows {
        let backend = if r.place.is_empty() { r.backend.to_owned() } else { format!("{}, {}", r.backend, r.place) };
        println!(
            "    {:<66} {:<10} {:<15} {}",
            format!("{}.{}", r.name, r.zone),
            r.addresses.join(" "),
            r.owner,
            backend
        );
    }
    let final_zones = zone_rows(&sb, &zone_ids);
    let zones_created: Vec<String> = final_zones
        .iter()
        .filter(|(id, z)| z.owned && !initial_zones.contains_key(*id))
        .map(|(_, z)| z.zone.clone())
        .collect();
    let links_created: Vec<String> = final_zones
        .values()
        .flat_map(|z| z.links.iter().filter(|l| l.2).map(|l| format!("{} -> {}", z.zone, l.1)))
        .collect();
    println!(
        "  zones created by zone management: [{}]; links: [{}]",
        zones_created.join(", "),
        links_created.join(", ")
    );
    let audit_lines = std::fs::read_to_string(&audit_file).unwrap_or_default();
    let _ = std::fs::remove_file(&audit_file);
    let mut audit_types: BTreeMap<String, usize> = BTreeMap::new();
    for line in audit_lines.lines() {
        let t =
            serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| v["type"].as_str().map(str::to_owned));
        *audit_types.entry(t.unwrap_or_else(|| "unreadable".into())).or_default() += 1;
    }
    let listed: Vec<String> = audit_types
        .iter()
        .map(|(t, n)| {
            format!("{n} {}", t.strip_prefix(private_link_autopilot::effects::audit::TYPE_PREFIX).unwrap_or(t))
        })
        .collect();
    println!(
        "  audit events ({}, CloudEvents com.privatelinkautopilot.*, docs/EVENTS.md): {}",
        audit_types.values().sum::<usize>(),
        listed.join(", ")
    );
    let requests = sb.arm.requests();
    let summary = DemoSummary {
        audit_events: audit_types.values().sum(),
        vendor_registrations: vendors.clickhouse.state().services.values().map(Vec::len).sum::<usize>()
            + vendors.elastic.state().rulesets.len()
            + vendors.zilliz.state().endpoints.len(),
        dead_letters: dead.iter().map(|d| d.reason.clone()).collect(),
        arm_requests: requests.len(),
        arm_writes: requests.iter().filter(|r| r.is_write() && r.status < 300).count(),
        throttled: requests.iter().filter(|r| r.status == 429).count(),
        queue_depth: sb.app.queue.depth().await.map_err(|e| e.to_string())?,
        used_bind: bind.is_some(),
        zones_created,
        links_created,
        managed_connection,
        rows,
        elapsed: started.elapsed(),
    };
    println!(
        "  ARM requests: {} ({} writes, {} throttled); work queue depth: {}; took {} ms",
        summary.arm_requests,
        summary.arm_writes,
        summary.throttled,
        summary.queue_depth,
        summary.elapsed.as_millis()
    );
    Ok(summary)
}
