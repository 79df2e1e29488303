//! The individual checks of `autopilot doctor` (see the module docs of `doctor`).

use serde_json::Value;

use super::{Check, required};
use crate::app::App;
use crate::arm::permissions::{self, Permissions};
use crate::arm::{ArmError, ArmRequest};
use crate::reconcile::coverage;

/// Private DNS (zones and their VNet links).
const PRIVATE_DNS_API: &str = "2024-06-01";
/// `Microsoft.KeyVault/vaults/secrets` (ARM: metadata only, never the value).
const KEY_VAULT_API: &str = "2023-07-01";
/// `Microsoft.ServiceBus/namespaces/queues`, as the queue's own count read uses it.
const SERVICE_BUS_API: &str = "2021-11-01";

fn brief(e: &ArmError) -> String {
    match e {
        ArmError::Api { status, code, .. } => format!("{status} {code}"),
        other => other.to_string(),
    }
}

/// Who `az role assignment create --assignee` should name.
fn assignee(app: &App) -> String {
    let id = &app.config.arm.managed_identity_client_id;
    if id.is_empty() { "<the app identity's client id>".into() } else { id.clone() }
}

/// Where the permissions API is asked for a scope: a subscription's grants are read at a
/// resource group in it (the API is served at resource groups and resources; grants are
/// inherited downwards): an owned resource's group when one is in that subscription (the
/// Kusto operation reader's case), else the events resource group infra creates in each
/// subscription in scope.
fn ask_at(app: &App, scope: &str) -> String {
    let segs: Vec<&str> = scope.trim_matches('/').split('/').collect();
    if segs.len() == 2 && segs[0].eq_ignore_ascii_case("subscriptions") {
        let owned = app.config.approvals.owned_resources.iter().find_map(|id| {
            let parts: Vec<&str> = id.trim_matches('/').split('/').collect();
            (parts.len() > 3 && parts[1].eq_ignore_ascii_case(segs[1]))
                .then(|| format!("/subscriptions/{}/resourceGroups/{}", parts[1], parts[3]))
        });
        let in_scope = app.config.sweep.subscriptions.iter().any(|s| s.trim().eq_ignore_ascii_case(segs[1]));
        return match owned {
            Some(group) if !in_scope => group,
            _ => format!("{}/resourceGroups/{}", scope.trim_end_matches('/'), app.config.coverage.resource_group),
        };
    }
    scope.to_owned()
}

pub(super) async fn permissions(app: &App) -> Vec<Check> {
    let grants = match required::for_config(&app.config) {
        Ok(g) => g,
        Err(e) => return vec![Check::fail("permissions", "infra/permissions.json", e, "rebuild autopilot")],
    };
    let mut cache: std::collections::HashMap<String, Result<Permissions, ArmError>> = Default::default();
    let mut out = Vec::new();
    for g in grants {
        let at = ask_at(app, &g.scope);
        if !cache.contains_key(&at) {
            let read = permissions::read(&app.arm, &at).await;
            cache.insert(at.clone(), read);
        }
        let subject = format!("{} at {}", g.role, g.scope);
        match &cache[&at] {
            Err(e) => out.push(Check::skipped(
                "permissions",
                subject,
                format!("ARM's permissions API did not answer at {at}: {}", brief(e)),
            )),
            Ok(p) => {
                let missing: Vec<&String> = g.actions.iter().filter(|a| !p.allows(a)).collect();
                if missing.is_empty() {
                    out.push(Check::ok("permissions", subject, format!("{} actions held", g.actions.len())));
                } else {
                    let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
                    let role = required::role_display_name(&g.role);
                    out.push(Check::fail(
                        "permissions",
                        subject,
                        format!("missing {}", names.join(", ")),
                        format!(
                            "az role assignment create --assignee {} --role \"{role}\" --scope {} \
                             (or `azd provision`: infra assigns it from {})",
                            assignee(app),
                            g.scope,
                            g.parameter
                        ),
                    ));
                }
            }
        }
    }
    if out.is_empty() {
        out.push(Check::skipped("permissions", "scopes", "nothing configured that needs a grant"));
    }
    out
}

pub(super) async fn coverage(app: &App) -> Vec<Check> {
    let settings = &app.config.coverage;
    let subs = &app.config.sweep.subscriptions;
    if subs.is_empty() {
        return vec![Check::skipped("coverage", "sweep.subscriptions", "no subscription in scope")];
    }
    let found = futures::future::join_all(subs.iter().map(|s| coverage::check(&app.arm, settings, s))).await;
    found
        .into_iter()
        .map(|c| {
            let subject = format!("subscription {}", c.subscription);
            if c.covered() {
                Check::ok(
                    "coverage",
                    subject,
                    format!("events reach the function ({})", c.event_subscription.unwrap_or_default()),
                )
            } else {
                Check::fail("coverage", subject, c.problems.join("; "), c.fix.unwrap_or_default())
            }
        })
        .collect()
}

fn zone_id(app: &App, z: &crate::config::ZoneSettings) -> String {
    let or = |a: &str, b: &str| if a.is_empty() { b.to_owned() } else { a.to_owned() };
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/privateDnsZones/{}",
        or(&z.subscription, &app.config.dns.default_subscription),
        or(&z.resource_group, &app.config.dns.default_resource_group),
        z.name
    )
}

pub(super) async fn zones(app: &App) -> Vec<Check> {
    let mut out = Vec::new();
    for z in app.config.dns.zones.iter().filter(|z| z.provider == "azure") {
        let id = zone_id(app, z);
        let rg = id.split('/').nth(4).unwrap_or_default().to_owned();
        let subject = format!("zone {}", z.name);
        match app.arm.send(ArmRequest::get(&id, PRIVATE_DNS_API)).await {
            Ok(_) => {}
            Err(e) if e.status() == Some(404) => {
                out.push(Check::fail(
                    "zones",
                    subject,
                    format!("does not exist ({id})"),
                    format!("az network private-dns zone create --resource-group {rg} --name {}", z.name),
                ));
                continue;
            }
            Err(e) => {
                out.push(Check::skipped("zones", subject, format!("cannot be read: {}", brief(&e))));
                continue;
            }
        }
        let links = match app.arm.list_all(&format!("{id}/virtualNetworkLinks"), PRIVATE_DNS_API).await {
            Ok(l) => l,
            Err(e) => {
                out.push(Check::skipped(
                    "zones",
                    subject,
                    format!("exists; its VNet links cannot be read: {}", brief(&e)),
                ));
                continue;
            }
        };
        let linked: Vec<String> = links
            .iter()
            .filter_map(|l| l.pointer("/properties/virtualNetwork/id").and_then(Value::as_str))
            .map(str::to_ascii_lowercase)
            .collect();
        let expected = &app.config.doctor.zone_links;
        let missing: Vec<&String> =
            expected.iter().filter(|v| !linked.contains(&v.trim().to_ascii_lowercase())).collect();
        if expected.is_empty() && linked.is_empty() {
            out.push(Check::fail(
                "zones",
                subject,
                "exists but is linked to no VNet: nothing resolves its records",
                format!(
                    "az network private-dns link vnet create --resource-group {rg} --zone-name {} --name <link> \
                     --virtual-network <vnet id> --registration-enabled false",
                    z.name
                ),
            ));
        } else if let Some(first) = missing.first() {
            let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            out.push(Check::fail(
                "zones",
                subject,
                format!("not linked to {}", names.join(", ")),
                format!(
                    "az network private-dns link vnet create --resource-group {rg} --zone-name {} --name {} \
                     --virtual-network {first} --registration-enabled false",
                    z.name,
                    first.rsplit('/').next().unwrap_or("link")
                ),
            ));
        } else {
            out.push(Check::ok("zones", subject, format!("exists, linked to {} VNet(s)", linked.len())));
        }
    }
    if out.is_empty() {
        out.push(Check::skipped("zones", "dns.zones", "no Azure Private DNS zone configured"));
    }
    out
}

/// Each enabled vendor's key variables and the Key Vault secret infra's Key Vault
/// reference names for each (main.bicep's `clickHouseSettings` and siblings).
fn vendor_secrets(app: &App) -> Vec<(&'static str, String, &'static str)> {
    let v = &app.config.vendors;
    let mut out = Vec::new();
    if v.clickhouse.enabled {
        out.push(("clickhouse", v.clickhouse.key_id_env.clone(), "clickhouse-key-id"));
        out.push(("clickhouse", v.clickhouse.key_secret_env.clone(), "clickhouse-key-secret"));
    }
    if v.elastic.enabled {
        out.push(("elastic", v.elastic.api_key_env.clone(), "elastic-api-key"));
    }
    if v.zilliz.enabled {
        out.push(("zilliz", v.zilliz.api_key_env.clone(), "zilliz-api-key"));
    }
    out
}

pub(super) async fn secrets(app: &App, env: &(dyn Fn(&str) -> Option<String> + Sync)) -> Vec<Check> {
    let vault = app.config.doctor.key_vault_id.trim().to_owned();
    let vault_name = vault.rsplit('/').next().filter(|s| !s.is_empty()).unwrap_or("<vault>").to_owned();
    let set_fix =
        |secret: &str| format!("az keyvault secret set --vault-name {vault_name} --name {secret} --value <the key>");
    let mut out = Vec::new();
    for (vendor, var, secret) in vendor_secrets(app) {
        let subject = format!("{vendor} {var}");
        match env(&var) {
            Some(v) if v.trim_start().starts_with("@Microsoft.KeyVault(") => out.push(Check::fail(
                "secrets",
                subject,
                "is an unresolved Key Vault reference (the secret is missing or the identity cannot read it)",
                format!("{}; the identity needs Key Vault Secrets User on the vault", set_fix(secret)),
            )),
            Some(v) if !v.trim().is_empty() => {
                out.push(Check::ok("secrets", subject, "set (resolved), value not shown"));
            }
            _ if vault.is_empty() => out.push(Check::fail(
                "secrets",
                subject,
                "is not set here, and doctor.key_vault_id is empty so the vault cannot be asked",
                format!("set {var}, or AUTOPILOT__DOCTOR__KEY_VAULT_ID to the vault's id"),
            )),
            _ => {
                let id = format!("{vault}/secrets/{secret}");
                match app.arm.send(ArmRequest::get(&id, KEY_VAULT_API)).await {
                    Ok(_) => out.push(Check::ok("secrets", subject, format!("secret {secret} exists in {vault_name}"))),
                    Err(e) if e.status() == Some(404) => out.push(Check::fail(
                        "secrets",
                        subject,
                        format!("secret {secret} does not exist in {vault_name}"),
                        set_fix(secret),
                    )),
                    Err(e) => out.push(Check::skipped(
                        "secrets",
                        subject,
                        format!("not set here; the vault cannot be read with this credential: {}", brief(&e)),
                    )),
                }
            }
        }
    }
    if out.is_empty() {
        out.push(Check::skipped("secrets", "vendors", "no vendor enabled"));
    }
    out
}

pub(super) async fn vendors(app: &App, env: &(dyn Fn(&str) -> Option<String> + Sync)) -> Vec<Check> {
    use crate::effects::vendors::{VendorsConfig, build_vendors, routing};
    let all = &app.config.vendors;
    let mut out = Vec::new();
    for name in ["clickhouse", "elastic", "zilliz"] {
        // One vendor at a time, so a missing key of one does not hide the others.
        let mut only = VendorsConfig::default();
        match name {
            "clickhouse" if all.clickhouse.enabled => only.clickhouse = all.clickhouse.clone(),
            "elastic" if all.elastic.enabled => only.elastic = all.elastic.clone(),
            "zilliz" if all.zilliz.enabled => only.zilliz = all.zilliz.clone(),
            _ => continue,
        }
        only.rules = all.rules.iter().filter(|r| r.vendor.eq_ignore_ascii_case(name)).cloned().collect();
        let subject = format!("{name} key");
        let client = match build_vendors(&only, env) {
            Ok(mut v) if !v.is_empty() => v.remove(0),
            Ok(_) => continue,
            Err(e) => {
                out.push(Check::fail("vendors", subject, e, "set the variable (in Azure: the Key Vault secret above)"));
                continue;
            }
        };
        let targets = routing::configured_targets(&only, name);
        match client.check_credentials(&targets).await {
            Ok(()) => out.push(Check::ok("vendors", subject, "a read-only call with it succeeded")),
            Err(e) => out.push(Check::fail(
                "vendors",
                subject,
                format!("a read-only call failed: {e}"),
                match e.status {
                    Some(401 | 403) => "the vendor refuses the key: create a new one and update the Key Vault secret",
                    _ => "check the vendor's status and the configured organization/project",
                },
            )),
        }
    }
    out
}

pub(super) async fn service_bus(app: &App) -> Vec<Check> {
    let q = &app.config.queue;
    if q.kind != "servicebus" {
        return vec![Check::skipped("servicebus", "queue", "embedded queue (queue.kind = \"embedded\")")];
    }
    let id = q.arm_queue_id.trim();
    if id.is_empty() {
        return vec![Check::fail(
            "servicebus",
            format!("queue {}", q.name),
            "queue.arm_queue_id is empty: its existence and depth cannot be read without Manage",
            "set AUTOPILOT__QUEUE__ARM_QUEUE_ID to the queue's ARM id (infra sets it)",
        )];
    }
    let create = "azd provision (infra/modules/servicebus.bicep creates it)";
    vec![arm_exists(app, "servicebus", format!("queue {}", q.name), id, SERVICE_BUS_API, create).await.0]
}

pub(super) async fn audit_topic(app: &App) -> Vec<Check> {
    let endpoint = app.config.audit.topic_endpoint.trim();
    if endpoint.is_empty() {
        return vec![Check::skipped("audit", "topic", "audit.topic_endpoint is empty (events go to a file)")];
    }
    let id = app.config.doctor.audit_topic_id.trim();
    if id.is_empty() {
        return vec![Check::skipped("audit", endpoint.to_owned(), "set doctor.audit_topic_id to check the topic")];
    }
    let create = "azd provision (infra/modules/audit-topic.bicep creates it)";
    let (check, body) =
        arm_exists(app, "audit", format!("topic {endpoint}"), id, coverage::EVENT_GRID_API, create).await;
    let actual = body.as_ref().and_then(|b| b.pointer("/properties/endpoint")).and_then(Value::as_str).unwrap_or("");
    if !actual.is_empty() && !actual.trim_end_matches('/').eq_ignore_ascii_case(endpoint.trim_end_matches('/')) {
        return vec![Check::fail(
            "audit",
            format!("topic {endpoint}"),
            format!("{id} publishes at {actual}, not at audit.topic_endpoint"),
            format!("set AUTOPILOT__AUDIT__TOPIC_ENDPOINT={actual}"),
        )];
    }
    vec![check]
}

/// GETs `id`: ✔ with its body, ✗ on 404, – when the credential cannot read it.
async fn arm_exists(
    app: &App,
    area: &'static str,
    subject: String,
    id: &str,
    api: &str,
    create: &str,
) -> (Check, Option<Value>) {
    match app.arm.send(ArmRequest::get(id, api)).await {
        Ok(r) => (Check::ok(area, subject, "exists"), Some(r.body)),
        Err(e) if e.status() == Some(404) => (Check::fail(area, subject, format!("{id} does not exist"), create), None),
        Err(e) => (Check::skipped(area, subject, format!("cannot be read with this credential: {}", brief(&e))), None),
    }
}
