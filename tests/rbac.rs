//! Least privilege, proven: the role grants `infra/` deploys, the settings it derives from
//! the same parameters, and the whole product running against a fake ARM that enforces
//! exactly those grants.
//!
//! * `infra/permissions.json` is generated from `infra/main.bicep` (custom roles' action
//!   lists, which module assigns which role, over which parameter, at which scope shape);
//!   [`permissions_json_matches_the_bicep`] fails when they drift. Regenerate with
//!   `AUTOPILOT_REGENERATE_PERMISSIONS=1 cargo test --test rbac permissions_json`.
//! * [`every_granting_parameter_switches_on_its_feature`] is review F4's check: a parameter
//!   that grants a permission must feed a setting that uses it, and a setting that switches
//!   a feature on must come from a parameter that grants what the feature needs.
//! * The end-to-end tests run the sandbox with RBAC enforced (create and delete events,
//!   approvals with Kusto's long-running PUT and a Private Link Service, leftover
//!   connections removed after deletes, tag marks through an accepted 202, the sweep)
//!   and expect zero refusals; then remove each granted action in turn and expect
//!   the refusal that names it (or, for the few actions with a documented fallback, a
//!   named denial and the product still converging).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use autopilot_sandbox::fake_arm::rbac::{Grants, InfraParams};
use autopilot_sandbox::fake_arm::{EndpointSpec, FakeArmOptions, MemberSpec};
use autopilot_sandbox::harness::{
    HUB_RESOURCE_GROUP, HUB_SUBSCRIPTION, SPOKE_RESOURCE_GROUP as RG, SPOKE_SUBSCRIPTION as SUB, Sandbox,
    SandboxOptions,
};
use private_link_autopilot::config::{Config, ZoneSettings};
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ------------------------------------------------------------------------------------------
// Reading main.bicep (line-based: the file's own layout, which `bicep format` keeps)

/// Blocks that start at column 0 with `module` / `var` / `param`, up to the next such line.
fn top_level_blocks(bicep: &str) -> Vec<Vec<&str>> {
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    for line in bicep.lines() {
        let starts =
            ["module ", "var ", "param ", "resource ", "output ", "//", "@"].iter().any(|p| line.starts_with(p));
        if starts || blocks.is_empty() {
            blocks.push(vec![line]);
        } else if let Some(b) = blocks.last_mut() {
            b.push(line);
        }
    }
    blocks
}

fn quoted(line: &str) -> Vec<String> {
    line.split('\'').skip(1).step_by(2).map(str::to_owned).collect()
}

/// `var <role>Actions = [ '...' ]` -> role -> actions.
fn action_lists(bicep: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for block in top_level_blocks(bicep) {
        let head = block[0];
        if let Some(name) = head.strip_prefix("var ").and_then(|r| r.split_once("Actions = [")).map(|(n, _)| n) {
            let actions = block[1..].iter().flat_map(|l| quoted(l)).collect();
            out.insert(name.to_owned(), actions);
        }
    }
    out
}

/// One `module` block: symbol, file, loop collection, and its `key: value` lines.
struct Module<'a> {
    symbol: String,
    file: String,
    for_each: Option<String>,
    lines: Vec<&'a str>,
}

fn modules(bicep: &str) -> Vec<Module<'_>> {
    top_level_blocks(bicep)
        .into_iter()
        .filter_map(|block| {
            let head = block[0].strip_prefix("module ")?;
            let (symbol, rest) = head.split_once(' ')?;
            let file = quoted(rest).first()?.clone();
            let for_each =
                rest.split_once(" in ").map(|(_, r)| r.split(':').next().unwrap_or_default().trim().to_owned());
            Some(Module { symbol: symbol.to_owned(), file, for_each, lines: block })
        })
        .collect()
}

fn value_of<'a>(m: &Module<'a>, key: &str) -> Option<&'a str> {
    m.lines.iter().find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

/// Role key behind a role reference (`endpointReaderRole.outputs.name` or `kustoOperationReaderName`).
fn role_key(reference: &str, defs: &BTreeMap<String, String>) -> Option<String> {
    let r = reference.trim();
    let symbol = r.strip_suffix(".outputs.name").map(|s| format!("module:{s}")).unwrap_or_else(|| format!("var:{r}"));
    defs.get(&symbol).cloned()
}

/// Where each assignment module assigns, as a template over its loop item.
fn scope_template(file: &str) -> Option<&'static str> {
    match file {
        "modules/roles/subscription-assignments.bicep" => Some("/subscriptions/{item}"),
        "modules/roles/dns-zone-assignments.bicep" => Some(
            "/subscriptions/{dnsZoneSubscriptionId}/resourceGroups/{dnsZoneResourceGroup}/providers/Microsoft.Network/privateDnsZones/{item}",
        ),
        "modules/roles/connection-approver-assignment.bicep" => Some("{item}"),
        "modules/roles/dns-resource-group-assignments.bicep" => {
            Some("/subscriptions/{dnsZoneSubscriptionId}/resourceGroups/{item}")
        }
        _ => None,
    }
}

/// `infra/permissions.json` as the Bicep says it should be.
fn generate_permissions(bicep: &str) -> Value {
    let actions = action_lists(bicep);
    let mods = modules(bicep);
    // Role definitions: module symbol and name variable -> role key (the actions variable).
    let mut defs = BTreeMap::new();
    for m in mods.iter().filter(|m| m.file == "modules/roles/role-definition.bicep") {
        let key = value_of(m, "actions").and_then(|a| a.strip_suffix("Actions")).expect("role module without actions");
        defs.insert(format!("module:{}", m.symbol), key.to_owned());
        if let Some(name) = value_of(m, "roleDefinitionName") {
            defs.insert(format!("var:{name}"), key.to_owned());
        }
    }
    let mut assignments = Vec::new();
    for m in &mods {
        let Some(scope) = scope_template(&m.file) else { continue };
        let mut roles: Vec<String> = Vec::new();
        if let Some(r) = value_of(m, "roleDefinitionName") {
            roles.extend(role_key(r, &defs));
        }
        let mut in_list = false;
        for l in &m.lines {
            let t = l.trim();
            if t.starts_with("roleDefinitionNames:") {
                in_list = true;
            } else if in_list && t == "]" {
                in_list = false;
            } else if in_list {
                roles.extend(role_key(t, &defs));
            }
        }
        let for_each = m.for_each.clone().or_else(|| value_of(m, "zoneNames").map(str::to_owned));
        assignments.push(json!({
            "module": m.symbol,
            "roles": roles,
            "for_each": for_each,
            "scope": scope,
        }));
    }
    let roles: serde_json::Map<String, Value> =
        actions.into_iter().map(|(k, v)| (k, json!({ "actions": v }))).collect();
    json!({
        "about": "Generated from infra/main.bicep by tests/rbac.rs (AUTOPILOT_REGENERATE_PERMISSIONS=1 cargo test --test rbac permissions_json). Custom roles (actions) and where main.bicep assigns them: for each item of `for_each` (a parameter, or a variable derived from one), at `scope`. The fake ARM loads this file to enforce exactly these grants (sandbox/src/fake_arm/rbac.rs).",
        "roles": roles,
        "assignments": assignments,
    })
}

#[test]
fn permissions_json_matches_the_bicep() {
    let generated = generate_permissions(&read("infra/main.bicep"));
    let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
    let path = root().join("infra/permissions.json");
    if std::env::var("AUTOPILOT_REGENERATE_PERMISSIONS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap();
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == text,
        "infra/permissions.json is out of date with infra/main.bicep; regenerate it with \
         AUTOPILOT_REGENERATE_PERMISSIONS=1 cargo test --test rbac permissions_json\n--- generated ---\n{text}"
    );
    // What the generator read must be what the modules do: each assignment module assigns
    // at the scope its template claims.
    let dns = read("infra/modules/roles/dns-zone-assignments.bicep");
    assert!(dns.contains("scope: zones[i]") && dns.contains("Microsoft.Network/privateDnsZones@"), "dns module scope");
    let subs = read("infra/modules/roles/subscription-assignments.bicep");
    assert!(
        subs.contains("targetScope = 'subscription'") && !subs.lines().any(|l| l.trim().starts_with("scope:")),
        "subscription module scope"
    );
    let hub_rg = read("infra/modules/roles/dns-resource-group-assignments.bicep");
    assert!(
        hub_rg.contains("targetScope = 'resourceGroup'") && !hub_rg.lines().any(|l| l.trim().starts_with("scope:")),
        "DNS resource group module scope"
    );
    assert!(
        read("infra/main.bicep").contains("scope: resourceGroup(dnsZoneSubscriptionId, rg)"),
        "the zone manager is assigned at a resource group of the hub subscription"
    );
    let approver = read("infra/modules/roles/connection-approver-assignment.bicep");
    for s in ["scope: kusto", "scope: privateLinkService", "scope: monitorWorkspace"] {
        assert!(approver.contains(s), "approver module: {s}");
    }
    // Every role is assigned somewhere, and every assignment names known roles.
    let roles: BTreeSet<&str> = generated["roles"].as_object().unwrap().keys().map(String::as_str).collect();
    let assigned: BTreeSet<&str> = generated["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["roles"].as_array().unwrap().iter().filter_map(Value::as_str))
        .collect();
    assert_eq!(roles, assigned, "a custom role that is never assigned, or an assignment of an unknown role");
}

// ------------------------------------------------------------------------------------------
// F4: every parameter that grants something switches on what uses it, and vice versa

/// `AUTOPILOT__…` settings in main.bicep: name -> (its expression, the parameter guarding
/// its block, if any: `var x = enableX ? { … } : {}`).
fn autopilot_settings(bicep: &str) -> BTreeMap<String, (String, Option<String>)> {
    let mut out = BTreeMap::new();
    for block in top_level_blocks(bicep) {
        let guard = block[0]
            .strip_prefix("var ")
            .and_then(|r| r.split_once(" = "))
            .and_then(|(_, rhs)| rhs.split_once(" ? {"))
            .map(|(cond, _)| cond.trim().to_owned());
        for line in &block {
            let t = line.trim();
            if let Some((k, v)) = t.split_once(':')
                && k.starts_with("AUTOPILOT__")
            {
                out.insert(k.to_owned(), (v.trim().to_owned(), guard.clone()));
            }
        }
    }
    out
}

/// Parameters that grant a permission: those the role assignments iterate (directly or
/// through a variable computed from them), and those that add Key Vault secret references.
fn granting_parameters(bicep: &str, permissions: &Value) -> BTreeSet<String> {
    let params: Vec<String> =
        bicep.lines().filter_map(|l| l.strip_prefix("param ")?.split_whitespace().next().map(str::to_owned)).collect();
    let mut out = BTreeSet::new();
    for a in permissions["assignments"].as_array().into_iter().flatten() {
        let collection = a["for_each"].as_str().unwrap_or_default();
        // Follow variables back to the parameters they are computed from.
        let mut frontier = vec![collection.to_owned()];
        let mut seen = BTreeSet::new();
        while let Some(name) = frontier.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if params.contains(&name) {
                out.insert(name);
                continue;
            }
            if let Some(block) = top_level_blocks(bicep).into_iter().find(|b| b[0].starts_with(&format!("var {name} ")))
            {
                let text = block.join("\n");
                for p in &params {
                    if mentions(&text, p) {
                        frontier.push(p.clone());
                    }
                }
                for v in bicep.lines().filter_map(|l| l.strip_prefix("var ")?.split_whitespace().next()) {
                    if v != name && mentions(&text, v) {
                        frontier.push(v.to_owned());
                    }
                }
            }
        }
    }
    for block in top_level_blocks(bicep) {
        let text = block.join("\n");
        if text.contains("@Microsoft.KeyVault(")
            && let Some((_, rhs)) = block[0].strip_prefix("var ").and_then(|r| r.split_once(" = "))
            && let Some((cond, _)) = rhs.split_once(" ? {")
        {
            out.insert(cond.trim().to_owned());
        }
    }
    out
}

fn mentions(text: &str, ident: &str) -> bool {
    text.match_indices(ident).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + ident.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Settings that switch a feature on, and must come from a granting parameter.
fn is_feature_setting(name: &str) -> bool {
    matches!(
        name,
        "AUTOPILOT__DNS__ZONES"
            | "AUTOPILOT__SWEEP__SUBSCRIPTIONS"
            | "AUTOPILOT__APPROVALS__OWNED_RESOURCES"
            | "AUTOPILOT__APPROVALS__TARGET_SCOPES"
            | "AUTOPILOT__COVERAGE__CREATE_MISSING"
            | "AUTOPILOT__DNS__ZONE_MANAGEMENT"
            | "AUTOPILOT__DNS__DEFAULT_SUBSCRIPTION"
            | "AUTOPILOT__DNS__DEFAULT_RESOURCE_GROUP"
    ) || (name.starts_with("AUTOPILOT__VENDORS__") && name.ends_with("__ENABLED"))
}

/// F4's check; the problems found, empty when infra is consistent.
fn feature_problems(bicep: &str, permissions: &Value) -> Vec<String> {
    let settings = autopilot_settings(bicep);
    let granting = granting_parameters(bicep, permissions);
    let mut problems = Vec::new();
    for p in &granting {
        let used = settings
            .iter()
            .any(|(k, (expr, guard))| is_feature_setting(k) && (mentions(expr, p) || guard.as_deref() == Some(p)));
        if !used {
            problems.push(format!("parameter `{p}` grants a permission but no AUTOPILOT__ feature setting uses it"));
        }
    }
    for (k, (expr, guard)) in settings.iter().filter(|(k, _)| is_feature_setting(k)) {
        let from_grant = granting.iter().any(|p| mentions(expr, p) || guard.as_deref() == Some(p.as_str()));
        if !from_grant {
            problems.push(format!("setting `{k}` switches a feature on but no granting parameter feeds it ({expr})"));
        }
    }
    problems
}

#[test]
fn every_granting_parameter_switches_on_its_feature() {
    let bicep = read("infra/main.bicep");
    let permissions: Value = serde_json::from_str(&read("infra/permissions.json")).unwrap();
    let granting = granting_parameters(&bicep, &permissions);
    for p in [
        "subscriptionsInScope",
        "dnsZoneNames",
        "dnsZoneManagement",
        "ownedResourceIds",
        "enableClickHouse",
        "enableElastic",
        "enableZilliz",
    ] {
        assert!(granting.contains(p), "{p} should count as granting: {granting:?}");
    }
    let problems = feature_problems(&bicep, &permissions);
    assert!(problems.is_empty(), "{problems:#?}");

    // The check catches both directions.
    let no_sweep = bicep.replace("AUTOPILOT__SWEEP__SUBSCRIPTIONS: string(subscriptionsInScope)", "");
    let p = feature_problems(&no_sweep, &permissions);
    assert!(p.iter().any(|m| m.contains("subscriptionsInScope")), "{p:?}");
    let orphan = bicep.replace(
        "AUTOPILOT__APPROVALS__OWNED_RESOURCES: string(ownedResourceIds)",
        "AUTOPILOT__APPROVALS__OWNED_RESOURCES: string(approvalAllowedSubscriptions)",
    );
    let p = feature_problems(&orphan, &permissions);
    assert!(p.iter().any(|m| m.contains("AUTOPILOT__APPROVALS__OWNED_RESOURCES")), "{p:?}");
    let zones = bicep.replace("  AUTOPILOT__DNS__ZONE_MANAGEMENT: dnsZoneManagement\n", "");
    let p = feature_problems(&zones, &permissions);
    assert!(p.iter().any(|m| m.contains("dnsZoneManagement")), "{p:?}");
    let vendor = bicep.replace("  AUTOPILOT__VENDORS__ZILLIZ__ENABLED: 'true'\n", "");
    let p = feature_problems(&vendor, &permissions);
    assert!(p.iter().any(|m| m.contains("enableZilliz")), "{p:?}");
}

/// The settings infra writes parse into the configuration that turns the features on.
#[test]
fn infra_settings_configure_the_features() {
    let bicep = read("infra/main.bicep");
    let settings = autopilot_settings(&bicep);
    let zones = &settings["AUTOPILOT__DNS__ZONES"].0;
    assert!(zones.contains("map(dnsZoneNames"), "{zones}");
    // What the Bicep expressions evaluate to for a sample deployment (string() of an array
    // is its JSON; the zone list is an inline TOML array of tables).
    let env = vec![
        ("AUTOPILOT__DNS__DEFAULT_SUBSCRIPTION".to_owned(), HUB_SUBSCRIPTION.to_owned()),
        ("AUTOPILOT__DNS__DEFAULT_RESOURCE_GROUP".to_owned(), HUB_RESOURCE_GROUP.to_owned()),
        (
            "AUTOPILOT__DNS__ZONES".to_owned(),
            r#"[{ name = "privatelink.a.example" }, { name = "privatelink.b.example" }]"#.to_owned(),
        ),
        ("AUTOPILOT__SWEEP__SUBSCRIPTIONS".to_owned(), r#"["s1","s2"]"#.to_owned()),
        ("AUTOPILOT__APPROVALS__OWNED_RESOURCES".to_owned(), format!(r#"["{}"]"#, kusto_id())),
        ("AUTOPILOT__APPROVALS__ALLOWED_SUBSCRIPTIONS".to_owned(), r#"["s1","s2"]"#.to_owned()),
        ("AUTOPILOT__VENDORS__ZILLIZ__ENABLED".to_owned(), "true".to_owned()),
        // `dnsZoneManagement`'s value as is.
        ("AUTOPILOT__DNS__ZONE_MANAGEMENT".to_owned(), "create".to_owned()),
        ("AUTOPILOT__VENDORS__ZILLIZ__PROJECT_ID".to_owned(), "proj-1".to_owned()),
        (
            "AUTOPILOT__VENDORS__CLICKHOUSE__SERVICE_IDS".to_owned(),
            r#"["9a1b2c3d-0000-4000-8000-000000000001"]"#.to_owned(),
        ),
    ];
    let c = Config::load(None, env).unwrap();
    assert_eq!(
        c.dns.zones.iter().map(|z| z.name.as_str()).collect::<Vec<_>>(),
        ["privatelink.a.example", "privatelink.b.example"]
    );
    assert_eq!(c.sweep.subscriptions, ["s1", "s2"]);
    assert_eq!(c.approvals.owned_resources, [kusto_id()]);
    assert_eq!(c.approvals.allowed_subscriptions, ["s1", "s2"]);
    assert!(c.vendors.zilliz.enabled);
    assert_eq!(c.vendors.zilliz.project_id, "proj-1");
    assert_eq!(c.dns.zone_management, "create");
    assert_eq!(settings["AUTOPILOT__DNS__ZONE_MANAGEMENT"].0, "dnsZoneManagement");
    assert!(bicep.contains("param dnsZoneManagement string = 'off'"), "zone management is off by default");
    // The policy defaults to the subscriptions in scope, so approvals are not closed by default.
    assert!(bicep.contains("param approvalAllowedSubscriptions array = subscriptionsInScope"));
    for name in [
        "AUTOPILOT__VENDORS__CLICKHOUSE__ENABLED",
        "AUTOPILOT__VENDORS__ELASTIC__ENABLED",
        "AUTOPILOT__VENDORS__ZILLIZ__ENABLED",
    ] {
        assert_eq!(settings[name].0, "'true'", "{name} must be a TOML boolean");
    }
}

// ------------------------------------------------------------------------------------------
// The product under enforced RBAC

const KUSTO_ZONE: &str = "privatelink.eastus2.kusto.windows.net";
const VAULT_ZONE: &str = "privatelink.vaultcore.azure.net";
/// In the hub resource group but not in `dnsZoneNames`: the identity holds nothing there.
const FOREIGN_ZONE: &str = "privatelink.blob.core.windows.net";

fn kusto_id() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Kusto/Clusters/adxowned")
}

fn pls_id() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/privateLinkServices/our-pls")
}

fn pls_pe(name: &str) -> EndpointSpec {
    EndpointSpec::resource(SUB, RG, name, "eastus2", &pls_id(), "", vec![MemberSpec::new("", &[])]).manual()
}

fn infra_params() -> InfraParams {
    InfraParams {
        subscriptions_in_scope: vec![SUB.into()],
        dns_zone_subscription: HUB_SUBSCRIPTION.into(),
        dns_zone_resource_group: HUB_RESOURCE_GROUP.into(),
        dns_zone_names: vec![KUSTO_ZONE.into(), VAULT_ZONE.into()],
        owned_resource_ids: vec![kusto_id(), pls_id()],
        ..InfraParams::default()
    }
}

/// The configuration infra's settings give (zones by name, sweep and approvals from the
/// same parameters as the grants).
fn configure_like_infra(c: &mut Config, params: &InfraParams) {
    c.dns.zones = params
        .dns_zone_names
        .iter()
        .map(|z| ZoneSettings {
            name: z.clone(),
            provider: "azure".into(),
            subscription: String::new(),
            resource_group: String::new(),
            server: String::new(),
            link_to: None,
        })
        .collect();
    c.sweep.subscriptions = params.subscriptions_in_scope.clone();
    c.approvals.owned_resources = params.owned_resource_ids.clone();
    c.approvals.allowed_subscriptions = params.subscriptions_in_scope.clone();
    c.approvals.target_scopes = params.approval_target_subscriptions.clone();
    c.approvals.target_types = TARGET_TYPES.iter().map(|t| (*t).to_owned()).collect();
}

/// `approvalTargetTypes`' default in main.bicep (checked below).
const TARGET_TYPES: &[&str] = &[
    "Microsoft.Storage/storageAccounts",
    "Microsoft.Sql/servers",
    "Microsoft.KeyVault/vaults",
    "Microsoft.DocumentDB/databaseAccounts",
    "Microsoft.Kusto/Clusters",
];

async fn sandbox(grants: Grants, params: InfraParams) -> Sandbox {
    let sb = Sandbox::start(SandboxOptions {
        arm: FakeArmOptions {
            lro_retry_after_secs: 1,
            rbac: Some(grants),
            // Every second tag write is accepted asynchronously (202 + location).
            tags_accepted_every: 2,
            ..FakeArmOptions::default()
        },
        zones: vec![KUSTO_ZONE.into(), VAULT_ZONE.into(), FOREIGN_ZONE.into()],
        configure: Box::new(move |c| {
            configure_like_infra(c, &params);
        }),
        workers: 0,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox");
    sb.arm.add_link_target(&kusto_id(), "eastus2");
    sb.arm.add_link_target(&pls_id(), "eastus2");
    sb
}

fn kusto_pe(name: &str) -> EndpointSpec {
    EndpointSpec::resource(
        SUB,
        RG,
        name,
        "eastus2",
        &kusto_id(),
        "cluster",
        vec![MemberSpec::new("Engine", &["adxowned.eastus2.kusto.windows.net"])],
    )
    .manual()
}

fn vault_pe(name: &str) -> EndpointSpec {
    let target = format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/kv-{name}");
    EndpointSpec::resource(
        SUB,
        RG,
        name,
        "eastus2",
        &target,
        "vault",
        vec![MemberSpec::new("default", &[&format!("kv-{name}.vault.azure.net")])],
    )
}

/// What one scenario left behind.
struct Run {
    sb: Sandbox,
    kusto: String,
    pls: String,
    vault: String,
}

/// Create (Kusto approval + Key Vault), delete one of each (a Kusto connection left
/// `Disconnected` is removed), sweep: the product's whole ARM surface.
async fn scenario(grants: Grants) -> Run {
    let sb = sandbox(grants, infra_params()).await;
    sb.arm.keep_connections_on_delete(true);
    let (kusto, d1) = sb.create(&kusto_pe("adx-pe")).await;
    let (vault, d2) = sb.create(&vault_pe("kv1")).await;
    let (gone, d3) = sb.create(&vault_pe("kv2")).await;
    let (kusto_gone, d4) = sb.create(&kusto_pe("adx-gone")).await;
    let (pls, d5) = sb.create(&pls_pe("pls-pe")).await;
    let (pls_gone, d6) = sb.create(&pls_pe("pls-gone")).await;
    for d in [&d1, &d2, &d3, &d4, &d5, &d6] {
        assert!(d.status < 500, "delivery failed: {d:?}");
    }
    sb.delete(&gone).await;
    sb.delete(&kusto_gone).await;
    sb.delete(&pls_gone).await;
    let swept = sb.host.invoke_timer("Sweep", false).await;
    assert!(swept.is_ok(), "sweep invocation: {swept:?}");
    Run { sb, kusto, pls, vault }
}

fn record_names(sb: &Sandbox, zone: &str) -> Vec<String> {
    sb.arm.all_records().into_iter().filter(|r| r.zone == zone).map(|r| r.name).collect()
}

#[tokio::test]
async fn the_product_runs_with_exactly_the_infra_grants() {
    let run = scenario(Grants::from_infra(&infra_params())).await;
    let sb = &run.sb;
    // Only the provider registration is refused: the product documents that fallback
    // (`arm/providers.rs`: the spec-derived table) and infra grants no provider reads.
    let denials: Vec<_> = sb
        .arm
        .denials()
        .into_iter()
        .filter(|d| d.action != "Microsoft.Resources/subscriptions/providers/read")
        .collect();
    assert!(denials.is_empty(), "refused under the infra grants: {denials:#?}");
    // Approved through the long-running PUT, records written, the deleted one cleaned up.
    for id in [&run.kusto, &run.pls] {
        let conn = sb.arm.target_connection(id).expect("connection");
        let status = conn.pointer("/properties/privateLinkServiceConnectionState/status").and_then(Value::as_str);
        assert_eq!(status, Some("Approved"), "{id}");
    }
    assert_eq!(record_names(sb, KUSTO_ZONE), ["adxowned"]);
    // The deleted endpoints' leftover (Disconnected) connections were removed from their targets.
    for leftover in ["adx-gone.", "pls-gone."] {
        let removed =
            sb.arm.requests().iter().any(|r| r.method == "DELETE" && r.path.contains(leftover) && r.status < 300);
        assert!(removed, "{leftover} connection left on its target");
    }
    assert_eq!(record_names(sb, VAULT_ZONE), ["kv-kv1"]);
    // Marks went through the Tags API, including an accepted (202) one.
    for id in [&run.kusto, &run.vault] {
        let tags = sb.arm.resource(id).unwrap()["tags"].clone();
        assert_eq!(tags["plautopilot-state"], "Approved", "{id}: {tags}");
    }
    let accepted =
        sb.arm.requests().iter().filter(|r| r.path.contains("/operationresults/") && r.status == 204).count();
    assert!(accepted > 0, "no accepted tag write was followed to its end");
    // Zones were read one by one, never listed at the hub resource group.
    assert!(!sb.arm.requests().iter().any(|r| {
        r.path.to_ascii_lowercase().ends_with(
            &format!("/resourcegroups/{HUB_RESOURCE_GROUP}/providers/microsoft.network/privatednszones")
                .to_ascii_lowercase(),
        )
    }));
}

/// F5 as it was: listing the hub resource group is refused under per-zone grants.
#[tokio::test]
async fn listing_the_hub_resource_group_is_refused_under_per_zone_grants() {
    let sb = sandbox(Grants::from_infra(&infra_params()), infra_params()).await;
    let path = format!(
        "/subscriptions/{HUB_SUBSCRIPTION}/resourceGroups/{HUB_RESOURCE_GROUP}/providers/Microsoft.Network/privateDnsZones"
    );
    let r = reqwest::Client::new()
        .get(format!("{}{path}?api-version=2024-06-01", sb.arm.base_url()))
        .bearer_auth(sb.arm.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "AuthorizationFailed");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("The client '")
            && msg.contains("' with object id '")
            && msg.contains(
                "does not have authorization to perform action 'Microsoft.Network/privateDnsZones/read' over scope '"
            )
            && msg.ends_with(
                "' or the scope is invalid. If access was recently granted, please refresh your credentials."
            ),
        "{msg}"
    );
}

/// A configured zone the identity cannot read is skipped and reported; deletes elsewhere
/// still clean up.
#[tokio::test]
async fn a_refused_zone_is_skipped_and_deletes_still_work() {
    let mut params = infra_params();
    let grants = Grants::from_infra(&params);
    // The app is configured for one more zone than infra granted.
    params.dns_zone_names.push(FOREIGN_ZONE.into());
    let sb = sandbox(grants, params).await;
    let (pe, _) = sb.create(&vault_pe("kv3")).await;
    assert_eq!(record_names(&sb, VAULT_ZONE), ["kv-kv3"]);
    let d = sb.delete(&pe).await;
    assert!(d.status < 500, "{d:?}");
    assert!(record_names(&sb, VAULT_ZONE).is_empty(), "the deleted endpoint's record stayed");
    let refused: Vec<_> = sb.arm.denials().into_iter().filter(|d| d.scope.contains(FOREIGN_ZONE)).collect();
    assert!(!refused.is_empty(), "the unreadable zone was never tried");
}

/// Each granted action is needed: without it something the product does is refused with
/// the 403 that names it. The few with a documented fallback are listed with it.
#[tokio::test]
async fn every_granted_action_is_needed() {
    let full = Grants::from_infra(&infra_params());
    // Actions whose absence the product survives by design, and why.
    let survivable: BTreeMap<&str, &str> = [
        (
            "Microsoft.Resources/subscriptions/read",
            "only read when approvals.allowed_tenants is set (this scenario's policy is by subscription)",
        ),
        // Read by the sweep's coverage check (with coverage.function_id, off in this
        // scenario) and `autopilot doctor`; tests/doctor.rs removes each and sees it named.
        ("Microsoft.EventGrid/systemTopics/read", "coverage check: tests/doctor.rs"),
        ("Microsoft.EventGrid/systemTopics/eventSubscriptions/read", "coverage check: tests/doctor.rs"),
        ("Microsoft.Network/privateDnsZones/virtualNetworkLinks/read", "doctor's zone link check: tests/doctor.rs"),
    ]
    .into_iter()
    .collect();
    let mut needed = Vec::new();
    let mut unexplained = Vec::new();
    // Azure Monitor workspaces have no connection API in any published spec, so the fake
    // does not serve one and these actions cannot be exercised here.
    let (unexercised, exercised): (Vec<String>, Vec<String>) = full.actions().into_iter().partition(|a| {
        let lower = a.to_ascii_lowercase();
        lower.starts_with("microsoft.monitor/")
    });
    // One sandbox per removed action, all at once (each spends most of its time waiting
    // on long-running operations).
    let runs = futures::future::join_all(exercised.iter().map(|a| scenario(full.without_action(a)))).await;
    for (action, run) in exercised.into_iter().zip(runs) {
        let denials = run.sb.arm.denials();
        let named = denials.iter().any(|d| d.action.eq_ignore_ascii_case(&action));
        if named {
            needed.push(action.clone());
        } else if !survivable.contains_key(action.as_str()) {
            unexplained.push(action.clone());
        }
    }
    assert!(
        unexplained.is_empty(),
        "removing these refused nothing: the scenario does not need them (exercise them, or drop them from infra): \
         {unexplained:#?}"
    );
    for must in [
        "Microsoft.Network/privateEndpoints/read",
        "Microsoft.Network/networkInterfaces/read",
        "Microsoft.ResourceGraph/resources/read",
        "Microsoft.Resources/tags/write",
        "Microsoft.Network/privateDnsZones/read",
        "Microsoft.Network/privateDnsZones/A/read",
        "Microsoft.Network/privateDnsZones/A/write",
        "Microsoft.Network/privateDnsZones/A/delete",
        "Microsoft.Kusto/Clusters/PrivateEndpointConnections/read",
        "Microsoft.Kusto/Clusters/PrivateEndpointConnections/write",
        "Microsoft.Kusto/Clusters/PrivateEndpointConnections/delete",
        "Microsoft.Kusto/locations/operationresults/read",
        "Microsoft.Network/privateLinkServices/privateEndpointConnections/read",
        "Microsoft.Network/privateLinkServices/privateEndpointConnections/write",
        "Microsoft.Network/privateLinkServices/privateEndpointConnections/delete",
        "Microsoft.Network/privateEndpoints/privateDnsZoneGroups/read",
        "Microsoft.Resources/tags/read",
    ] {
        assert!(needed.iter().any(|n| n.eq_ignore_ascii_case(must)), "{must} was not shown to be needed: {needed:?}");
    }
    eprintln!(
        "needed: {needed:#?}\nnot exercised (Monitor: no connection API in the specs, none in the fake): {unexercised:#?}"
    );
}

/// Removing one action shows a named failure in the product, not just in the fake: the
/// A-record writer without `A/write` leaves the endpoint without its record and the
/// denial names the action and the zone.
#[tokio::test]
async fn without_a_write_the_record_is_refused_by_name() {
    let grants = Grants::from_infra(&infra_params()).without_action("Microsoft.Network/privateDnsZones/A/write");
    let sb = sandbox(grants, infra_params()).await;
    let (_pe, _) = sb.create(&vault_pe("kv4")).await;
    assert!(record_names(&sb, VAULT_ZONE).is_empty());
    let d = sb.arm.denials();
    let hit = d.iter().find(|d| d.action == "Microsoft.Network/privateDnsZones/A/write").expect("named denial");
    assert!(hit.scope.contains(&format!("/privateDnsZones/{VAULT_ZONE}/A/")), "{hit:?}");
    // The product kept the work to retry it (not converged), instead of dropping it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(sb.app.queue.depth().await.unwrap() > 0, "the refused write was not queued for a retry");
}

// ------------------------------------------------------------------------------------------
// Target-side approvals under the target approver role

/// A Microsoft-managed subscription: its tenant is not ours to read.
const MANAGED_SUB: &str = "9f0e0d0c-0000-4000-8000-00000000d8b5";

fn target_params() -> InfraParams {
    InfraParams { approval_target_subscriptions: vec![SUB.into()], ..infra_params() }
}

/// One owned resource of each scanned type, each with a Pending connection from a managed
/// endpoint, then a `CatchUp` run. Returns the sandbox and the (resource, connection) pairs.
async fn target_scenario(grants: Grants) -> (Sandbox, Vec<(String, String)>) {
    let params = target_params();
    let sb = Sandbox::start(SandboxOptions {
        arm: FakeArmOptions { lro_retry_after_secs: 1, rbac: Some(grants), ..FakeArmOptions::default() },
        configure: Box::new(move |c| {
            configure_like_infra(c, &params);
            c.approvals.requesters = vec![private_link_autopilot::effects::target_approvals::RequesterRule {
                name: "managed".into(),
                subscriptions: vec![MANAGED_SUB.into()],
                tenants: vec![],
                endpoint_name_pattern: String::new(),
                description_pattern: String::new(),
                approve: true,
                expires_after_secs: 0,
                warn_before_secs: 0,
            }];
        }),
        workers: 0,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox");
    sb.arm.deny_subscription(MANAGED_SUB);
    let mut out = Vec::new();
    for (i, t) in TARGET_TYPES.iter().enumerate() {
        let id = format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/{t}/owned{i}");
        sb.arm.add_link_target(&id, "eastus2");
        let pe = format!(
            "/subscriptions/{MANAGED_SUB}/resourceGroups/managed/providers/Microsoft.Network/privateEndpoints/mpe{i}"
        );
        let name = sb.arm.add_foreign_connection(&id, &pe, "", None);
        out.push((id, name));
    }
    let run = sb.host.invoke_timer("CatchUp", false).await;
    assert!(run.is_ok(), "CatchUp invocation: {run:?}");
    (sb, out)
}

fn approved(sb: &Sandbox, (target, name): &(String, String)) -> bool {
    sb.arm
        .resource(&format!("{target}/privateEndpointConnections/{name}"))
        .and_then(|c| c.pointer("/properties/privateLinkServiceConnectionState/status").cloned())
        == Some(Value::from("Approved"))
}

#[tokio::test]
async fn target_side_approvals_run_with_exactly_the_infra_grants_and_need_each_action() {
    let bicep = read("infra/main.bicep");
    for t in TARGET_TYPES {
        assert!(bicep.contains(&format!("  '{t}'\n")), "approvalTargetTypes' default lists {t}");
    }
    let full = Grants::from_infra(&target_params());
    let (sb, connections) = target_scenario(full.clone()).await;
    let denials: Vec<_> = sb
        .arm
        .denials()
        .into_iter()
        .filter(|d| d.action != "Microsoft.Resources/subscriptions/providers/read")
        .collect();
    assert!(denials.is_empty(), "refused under the infra grants: {denials:#?}");
    for c in &connections {
        assert!(approved(&sb, c), "{c:?} not approved");
    }
    // Each action of the target approver is needed: without it a request is refused by
    // name, or (a resource type's read) Resource Graph no longer lists the resource.
    let permissions: Value = serde_json::from_str(&read("infra/permissions.json")).unwrap();
    let actions: Vec<String> = permissions["roles"]["targetApprover"]["actions"]
        .as_array()
        .expect("targetApprover role")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let runs = futures::future::join_all(actions.iter().map(|a| target_scenario(full.without_action(a)))).await;
    let mut unexplained = Vec::new();
    for (action, (sb, connections)) in actions.iter().zip(runs) {
        let named = sb.arm.denials().iter().any(|d| d.action.eq_ignore_ascii_case(action));
        let missed = connections.iter().any(|c| !approved(&sb, c));
        if !named && !missed {
            unexplained.push(action.clone());
        }
    }
    assert!(unexplained.is_empty(), "removing these changed nothing: {unexplained:#?}");
}

// ------------------------------------------------------------------------------------------
// Zone management (`dnsZoneManagement = 'create'`) under the zone manager and zone linker roles

const CH_ZONE: &str = "eastus2.privatelink.azure.clickhouse.cloud";
const ELASTIC_ZONE: &str = "privatelink.eastus2.azure.elastic-cloud.com";

fn zone_params() -> InfraParams {
    InfraParams { dns_zone_management: true, ..infra_params() }
}

/// What one zone management run showed.
struct ZoneRun {
    sb: Sandbox,
    /// The missing ClickHouse zone was created in the hub, linked to the spoke VNet and
    /// given the record.
    created_linked_written: bool,
    /// A same-named Elastic zone in the spoke subscription was found: none was created in the hub.
    shadow_avoided: bool,
    /// After the endpoint's deletion: record, link and our empty zone gone.
    removed: bool,
}

/// `grants` minus `action` in `role` only (the same action may be granted by another role
/// at another scope: this shows which grant is needed).
fn without_in_role(grants: &Grants, role: &str, action: &str) -> Grants {
    let mut g = grants.clone();
    for a in g.assignments.iter_mut().filter(|a| a.role == role) {
        a.actions.retain(|x| !x.eq_ignore_ascii_case(action));
    }
    g
}

/// A missing zone is created, linked and written; a same-named zone elsewhere is found
/// first (no shadow); the endpoint's deletion removes the record, our link and our zone.
async fn zone_scenario(grants: Grants) -> ZoneRun {
    use autopilot_sandbox::vendors::{CLICKHOUSE_ALIAS, ELASTIC_ALIAS};
    use private_link_autopilot::model::resource_id::ResourceId;
    use private_link_autopilot::reconcile::Mode;
    let params = zone_params();
    let sb = Sandbox::start(SandboxOptions {
        arm: FakeArmOptions { lro_retry_after_secs: 0, rbac: Some(grants), ..FakeArmOptions::default() },
        zones: vec![KUSTO_ZONE.into(), VAULT_ZONE.into()],
        configure: Box::new(move |c| {
            configure_like_infra(c, &params);
            c.dns.zone_management = "create".into();
        }),
        workers: 0,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox");
    // Someone's Elastic zone in the spoke subscription: creating one in the hub would shadow it.
    sb.arm.add_zone(SUB, "team-dns", ELASTIC_ZONE);
    let reconcile = |id: String| {
        let app = sb.app.clone();
        async move {
            app.reconciler.invalidate_caches();
            app.reconciler.reconcile(&ResourceId::parse(&id).unwrap(), Mode::Apply).await
        }
    };
    let spec = EndpointSpec::alias(SUB, RG, "ch-zone", "eastus2", CLICKHOUSE_ALIAS)
        .approved()
        .with_ip("10.1.0.60".parse().unwrap());
    let ch = sb.arm.put_endpoint(&spec);
    let _ = reconcile(ch.clone()).await;
    let hub_ch = sb.zone_id(CH_ZONE);
    let spoke_vnet =
        format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks/spoke-vnet");
    let created_linked_written = sb.arm.resource(&hub_ch).is_some()
        && sb.arm.links(&hub_ch).iter().any(|l| {
            l["properties"]["virtualNetwork"]["id"].as_str().is_some_and(|v| v.eq_ignore_ascii_case(&spoke_vnet))
        })
        && sb.arm.record(&hub_ch, "*").is_some();

    let spec = EndpointSpec::alias(SUB, RG, "es-zone", "eastus2", ELASTIC_ALIAS)
        .approved()
        .with_ip("10.1.0.61".parse().unwrap());
    let es = sb.arm.put_endpoint(&spec);
    let _ = reconcile(es).await;
    let shadow_avoided = sb.arm.resource(&sb.zone_id(ELASTIC_ZONE)).is_none();

    sb.arm.delete_endpoint(&ch);
    let _ = reconcile(ch).await;
    let removed = sb.arm.resource(&hub_ch).is_none();
    ZoneRun { sb, created_linked_written, shadow_avoided, removed }
}

#[tokio::test]
async fn zone_management_runs_with_exactly_the_infra_grants_and_needs_each_action() {
    let full = Grants::from_infra(&zone_params());
    // Where infra assigns them: the manager at the hub resource group, the linker in the
    // subscription in scope and in the hub subscription (not in scope here).
    let at = |role: &str| -> Vec<String> {
        full.assignments.iter().filter(|a| a.role == role).map(|a| a.scope.clone()).collect()
    };
    assert_eq!(
        at("dnsZoneManager"),
        [format!("/subscriptions/{HUB_SUBSCRIPTION}/resourceGroups/{HUB_RESOURCE_GROUP}")]
    );
    assert_eq!(at("dnsZoneLinker"), [format!("/subscriptions/{SUB}"), format!("/subscriptions/{HUB_SUBSCRIPTION}")]);
    // Off (the default): neither role is assigned.
    let off = Grants::from_infra(&infra_params());
    assert!(off.assignments.iter().all(|a| a.role != "dnsZoneManager" && a.role != "dnsZoneLinker"));

    let run = zone_scenario(full.clone()).await;
    let denials: Vec<_> = run
        .sb
        .arm
        .denials()
        .into_iter()
        .filter(|d| d.action != "Microsoft.Resources/subscriptions/providers/read")
        .collect();
    assert!(denials.is_empty(), "refused under the infra grants: {denials:#?}");
    assert!(run.created_linked_written, "zone created, linked and written");
    assert!(run.shadow_avoided, "the same-named zone in the spoke subscription was found");
    assert!(run.removed, "our empty zone removed with its link");

    // Each action of both roles is needed: without it (in that role only) a request is
    // refused by name, or (the linker's zone read) Resource Graph no longer lists the
    // same-named zone and a shadow zone is created.
    let permissions: Value = serde_json::from_str(&read("infra/permissions.json")).unwrap();
    let mut cases = Vec::new();
    for role in ["dnsZoneManager", "dnsZoneLinker"] {
        for a in permissions["roles"][role]["actions"].as_array().expect(role) {
            cases.push((role, a.as_str().unwrap().to_owned()));
        }
    }
    let runs =
        futures::future::join_all(cases.iter().map(|(role, a)| zone_scenario(without_in_role(&full, role, a)))).await;
    let mut unexplained = Vec::new();
    for ((role, action), run) in cases.iter().zip(runs) {
        let named = run.sb.arm.denials().iter().any(|d| d.action.eq_ignore_ascii_case(action));
        let missed = !(run.created_linked_written && run.shadow_avoided && run.removed);
        if !named && !missed {
            unexplained.push(format!("{role}: {action}"));
        }
    }
    assert!(unexplained.is_empty(), "removing these changed nothing: {unexplained:#?}");

    // The linker's zone read in a spoke subscription is what lets the search see a zone
    // there: without it (only there), nothing is refused and a shadow zone is created.
    let mut blind = full.clone();
    for a in
        blind.assignments.iter_mut().filter(|a| a.role == "dnsZoneLinker" && a.scope == format!("/subscriptions/{SUB}"))
    {
        a.actions.retain(|x| x != "Microsoft.Network/privateDnsZones/read");
    }
    let run = zone_scenario(blind).await;
    assert!(!run.shadow_avoided, "a zone the identity cannot read is invisible to the search");
}
