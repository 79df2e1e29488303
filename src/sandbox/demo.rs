//! `autopilot demo`: the product end to end on a laptop, no Azure needed.
//!
//! It starts the fake ARM (and, when `named` is installed, a real BIND 9 serving the
//! Elastic zone over RFC 2136), runs the real handler behind the host emulator with the
//! embedded queue, then plays a platform team's day: one private endpoint per catalog
//! entry is created and its Event Grid event delivered, the vendors approve, an event is
//! redelivered, three endpoints are deleted. At the end it prints the records with their
//! owners, the vendors' allowlists, the dead letter and the audit events.
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
use super::harness::{SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB, Sandbox, SandboxOptions};
use super::vendors::SandboxVendors;
use crate::arm::Secret;
use crate::effects::dns::rfc2136::{Rfc2136Config, Rfc2136Provider};
use crate::effects::dns::{DnsProvider, Ownership};

const ZILLIZ_WESTUS3_ALIAS: &str =
    "zilliz-prod-infra-privatelink.6a90fc24-16c3-40c1-a94c-648987ac7422.westus3.azure.privatelinkservice";
pub const CLICKHOUSE_ZONE: &str = "eastus2.privatelink.azure.clickhouse.cloud";
pub const ELASTIC_ZONE: &str = "privatelink.eastus2.azure.elastic-cloud.com";
const AZURE_ZONES: [&str; 9] = [
    CLICKHOUSE_ZONE,
    "az-eastus2.vectordb.zillizcloud.com",
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

async fn snapshot(sb: &Sandbox, bind: Option<&Rfc2136Provider>) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for r in sb.arm.all_records() {
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
        });
    }
    if let Some(p) = bind {
        for set in p.list(ELASTIC_ZONE).await.map_err(|e| e.to_string())? {
            // The TXT publishes owners only as hashes; the demo knows its endpoints' ids.
            let known: Vec<String> = endpoints().into_iter().map(|(_, spec)| spec.id()).collect();
            let name_of = |k: &str| {
                known
                    .iter()
                    .find(|id| crate::effects::dns::opaque_ref(id) == k)
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
            });
        }
    }
    rows.sort_by(|a, b| (&a.zone, &a.name).cmp(&(&b.zone, &b.name)));
    Ok(rows)
}

/// Prints what changed in DNS between two snapshots, one line per record; whether
/// anything changed (the caller words the "nothing changed" case for its step).
fn print_changes(before: &[Row], after: &[Row]) -> bool {
    let key = |r: &Row| (r.zone.clone(), r.name.clone());
    let b: BTreeMap<_, _> = before.iter().map(|r| (key(r), r)).collect();
    let a: BTreeMap<_, _> = after.iter().map(|r| (key(r), r)).collect();
    let mut any = false;
    for (k, r) in &a {
        match b.get(k) {
            None => println!("      + {}.{}  A {}  [{}]", r.name, r.zone, r.addresses.join(" "), r.owner),
            Some(old) if old != r => println!(
                "      ~ {}.{}  A {} -> {}  [{}]",
                r.name,
                r.zone,
                old.addresses.join(" "),
                r.addresses.join(" "),
                r.owner
            ),
            _ => {}
        }
        any |= b.get(k).is_none_or(|old| old != r);
    }
    for (k, r) in &b {
        if !a.contains_key(k) {
            println!("      - {}.{}  A {}", r.name, r.zone, r.addresses.join(" "));
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
    let mut vendor_config = crate::config::Config::default();
    vendors.configure(&mut vendor_config);
    let options = SandboxOptions {
        arm: FakeArmOptions::default(),
        zones,
        extra_routes,
        configure: Box::new(move |c| {
            c.audit.file = audit_path;
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
        "  vendors  fake ClickHouse Cloud, Elastic Cloud, Zilliz Cloud; ClickHouse fails its first call (HTTP 500)"
    );
    vendors.clickhouse.inject(Fault::ServerError, 1);

    let mut before = snapshot(&sb, bind_ref).await?;
    let mut ids = BTreeMap::new();
    println!("\n1. create one private endpoint per catalog entry; Event Grid delivers each write to the handler");
    for (what, spec) in endpoints() {
        let (id, delivery) = sb.create(&spec).await;
        let after = snapshot(&sb, bind_ref).await?;
        let head = format!("  {:<15} {what:<40} handler answered {}", spec.name, delivery.status);
        if after == before && spec.status == "Pending" {
            println!("{head}; Pending: no DNS until the vendor approves");
        } else {
            println!("{head}; Approved: records written");
            if !print_changes(&before, &after) {
                println!("      (no DNS change)");
            }
        }
        before = after;
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
    println!("  the approval re-checks see it and write the records:");
    let after = snapshot(&sb, bind_ref).await?;
    if !print_changes(&before, &after) {
        println!("      (no DNS change)");
    }
    before = after;
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
        if !print_changes(&before, &after) {
            println!("      (no DNS change)");
        }
        before = after;
    }

    sb.drain(Duration::from_secs(15)).await;
    println!("\n6. where things stand");
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
        println!(
            "    {:<66} {:<10} {:<15} {}",
            format!("{}.{}", r.name, r.zone),
            r.addresses.join(" "),
            r.owner,
            r.backend
        );
    }
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
        .map(|(t, n)| format!("{n} {}", t.strip_prefix(crate::effects::audit::TYPE_PREFIX).unwrap_or(t)))
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
