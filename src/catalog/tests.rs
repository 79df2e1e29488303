use serde_json::json;

use super::*;
use crate::model::PrivateEndpoint;

const SUB: &str = "00000000-0000-0000-0000-000000000001";

fn pe(
    target: &str,
    groups: &[&str],
    location: &str,
    nic: serde_json::Value,
    tags: serde_json::Value,
) -> PrivateEndpoint {
    let body = json!({
        "id": format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/privateEndpoints/pe1"),
        "name": "pe1", "location": location, "tags": tags,
        "properties": {
            "provisioningState": "Succeeded", "resourceGuid": "11111111-2222-3333-4444-555555555555",
            "manualPrivateLinkServiceConnections": [{"name": "c", "properties": {
                "privateLinkServiceId": target, "groupIds": groups,
                "privateLinkServiceConnectionState": {"status": "Pending"}}}]
        }
    });
    let mut p = PrivateEndpoint::from_arm_json(&body).unwrap();
    p.add_nic(&nic);
    p
}

fn nic_one(ip: &str) -> serde_json::Value {
    json!({"properties": {"ipConfigurations": [{"properties": {"privateIPAddress": ip,
        "privateLinkConnectionProperties": {"groupId": "", "requiredMemberName": "", "fqdns": []}}}]}})
}

fn keys(d: &Desired) -> Vec<String> {
    d.records.iter().map(|r| r.key.fqdn()).collect()
}

#[test]
fn builtin_parses() {
    assert!(Catalog::builtin().targets().len() >= 6);
}

#[test]
fn clickhouse_wildcard_in_alias_region() {
    let alias = "production-westus3-0-0.0a1b2c3d-1111-2222-3333-444455556666.westus3.azure.privatelinkservice";
    let catalog = Catalog::builtin();
    // Not known yet: a ClickHouse-looking alias is not ClickHouse's until its API (or the
    // configuration) says so.
    assert_eq!(catalog.desired(&pe(alias, &[], "eastus", nic_one("10.0.0.4"), json!({}))).target_id, None);
    catalog.learn(|k| k.add_aliases("clickhouse", [alias.to_uppercase()].iter()));
    let d = catalog.desired(&pe(alias, &[], "eastus", nic_one("10.0.0.4"), json!({})));
    assert_eq!(d.target_id.as_deref(), Some("clickhouse"));
    assert!(d.after_approval && d.records[0].sharing == Sharing::SameVnet);
    let look_alike = "production-westus3-0-1.0a1b2c3d-1111-2222-3333-444455556666.westus3.azure.privatelinkservice";
    assert_eq!(catalog.desired(&pe(look_alike, &[], "eastus", nic_one("10.0.0.4"), json!({}))).target_id, None);
    assert_eq!(keys(&d), vec!["*.westus3.privatelink.azure.clickhouse.cloud"]);
    assert_eq!(d.records[0].ttl, 300);
}

#[test]
fn elastic_wildcard_by_alias_table_case_insensitive() {
    let alias =
        "EastUS2-prod-002-privatelink-service.64359fdd-7893-4215-9929-ece3287e1371.eastus2.azure.privatelinkservice";
    let d = Catalog::builtin().desired(&pe(alias, &[], "eastus2", nic_one("10.0.0.5"), json!({})));
    assert_eq!(d.target_id.as_deref(), Some("elastic"));
    assert_eq!(keys(&d), vec!["*.privatelink.eastus2.azure.elastic-cloud.com"]);
}

#[test]
fn zilliz_names_from_tag_ttl_600() {
    let alias = "zilliz-prod-infra-privatelink.6a90fc24-0000-0000-0000-000000000000.eastus.azure.privatelinkservice";
    let catalog = Catalog::builtin();
    catalog.learn(|k| {
        k.add_aliases("zilliz", [alias.to_owned()].iter());
        k.add_items("zilliz", ["in01-abc".to_owned(), "IN01-DEF".to_owned()].iter());
    });
    let d = catalog.desired(&pe(
        alias,
        &[],
        "eastus",
        nic_one("10.0.0.6"),
        json!({"autopilot.zilliz.clusters": "in01-abc, in01-def,bad label"}),
    ));
    assert_eq!(
        keys(&d),
        vec![
            "in01-abc-privatelink.az-eastus.vectordb.zillizcloud.com",
            "in01-def-privatelink.az-eastus.vectordb.zillizcloud.com"
        ]
    );
    assert_eq!(d.records[0].ttl, 600);
    assert_eq!(d.records[0].sharing, Sharing::Exclusive);
    assert!(d.notes.iter().any(|n| n.contains("bad label")));
    let none = catalog.desired(&pe(alias, &[], "eastus", nic_one("10.0.0.6"), json!({})));
    assert!(none.records.is_empty() && none.notes[0].contains("autopilot.zilliz.clusters"));
    // A tag asks; it cannot grant a cluster the project does not have.
    let claim = catalog.desired(&pe(
        alias,
        &[],
        "eastus",
        nic_one("10.0.0.6"),
        json!({"autopilot.zilliz.clusters": "in01-victim,in01-abc"}),
    ));
    assert_eq!(keys(&claim), vec!["in01-abc-privatelink.az-eastus.vectordb.zillizcloud.com"]);
    assert!(claim.notes.iter().any(|n| n.contains("in01-victim") && n.contains("cannot grant")), "{:?}", claim.notes);
}

#[test]
fn names_are_capped_per_endpoint() {
    let alias = "zilliz-prod-infra-privatelink.6a90fc24-0000-0000-0000-000000000000.eastus.azure.privatelinkservice";
    let catalog = Catalog::builtin();
    let many: Vec<String> = (0..20).map(|i| format!("in01-c{i}")).collect();
    catalog.learn(|k| {
        k.add_aliases("zilliz", [alias.to_owned()].iter());
        k.add_items("zilliz", many.iter());
    });
    let d = catalog.desired(&pe(
        alias,
        &[],
        "eastus",
        nic_one("10.0.0.6"),
        json!({"autopilot.zilliz.clusters": many.join(",")}),
    ));
    assert_eq!(d.records.len(), 8);
    assert!(d.notes.iter().any(|n| n.contains("at most 8")));
}

#[test]
fn adx_fqdns_go_to_longest_matching_zone_with_their_own_ip() {
    let target =
        format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Kusto/Clusters/kustoclusterrptest4");
    let nic = json!({"properties": {"ipConfigurations": [
        {"properties": {"privateIPAddress": "10.1.0.4", "privateLinkConnectionProperties": {"groupId": "cluster", "requiredMemberName": "Engine", "fqdns": ["kustoclusterrptest4.westus2.kusto.windows.net"]}}},
        {"properties": {"privateIPAddress": "10.1.0.5", "privateLinkConnectionProperties": {"groupId": "cluster", "requiredMemberName": "DataManagement", "fqdns": ["ingest-kustoclusterrptest4.westus2.kusto.windows.net"]}}},
        {"properties": {"privateIPAddress": "10.1.0.6", "privateLinkConnectionProperties": {"groupId": "cluster", "requiredMemberName": "blob-x", "fqdns": ["abcstorage.blob.core.windows.net"]}}},
        {"properties": {"privateIPAddress": "10.1.0.7", "privateLinkConnectionProperties": {"groupId": "cluster", "requiredMemberName": "queue-x", "fqdns": ["abcstorage.privatelink.queue.core.windows.net"]}}}
    ]}});
    let d = Catalog::builtin().desired(&pe(&target, &["cluster"], "westus2", nic, json!({})));
    assert_eq!(d.target_id.as_deref(), Some("azure-data-explorer"));
    let got: Vec<(String, String, Vec<Ipv4Addr>)> = d
        .records
        .iter()
        .map(|r| (r.key.zone.clone(), r.key.name.clone(), r.addresses.iter().copied().collect()))
        .collect();
    assert!(got.contains(&(
        "privatelink.westus2.kusto.windows.net".into(),
        "kustoclusterrptest4".into(),
        vec!["10.1.0.4".parse().unwrap()]
    )));
    assert!(got.contains(&(
        "privatelink.westus2.kusto.windows.net".into(),
        "ingest-kustoclusterrptest4".into(),
        vec!["10.1.0.5".parse().unwrap()]
    )));
    assert!(got.contains(&(
        "privatelink.blob.core.windows.net".into(),
        "abcstorage".into(),
        vec!["10.1.0.6".parse().unwrap()]
    )));
    assert!(got.contains(&(
        "privatelink.queue.core.windows.net".into(),
        "abcstorage".into(),
        vec!["10.1.0.7".parse().unwrap()]
    )));
}

#[test]
fn monitor_workspace_zone() {
    let target = format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Monitor/accounts/ws1");
    let nic = json!({"properties": {"ipConfigurations": [{"properties": {"privateIPAddress": "10.2.0.4",
        "privateLinkConnectionProperties": {"groupId": "prometheusMetrics", "requiredMemberName": "prometheusMetrics",
        "fqdns": ["ws1-abcd.eastus.prometheus.monitor.azure.com"]}}}]}});
    let d = Catalog::builtin().desired(&pe(&target, &["prometheusMetrics"], "eastus", nic, json!({})));
    assert_eq!(keys(&d), vec!["ws1-abcd.privatelink.eastus.prometheus.monitor.azure.com"]);
}

#[test]
fn generic_first_party_uses_suffix_map_or_privatelink_prefix() {
    let target = format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1");
    let nic = json!({"properties": {"ipConfigurations": [{"properties": {"privateIPAddress": "10.3.0.4",
        "privateLinkConnectionProperties": {"groupId": "vault", "requiredMemberName": "default", "fqdns": ["kv1.vault.azure.net"]}}}]}});
    let d = Catalog::builtin().desired(&pe(&target, &["vault"], "eastus", nic, json!({})));
    assert_eq!(d.target_id.as_deref(), Some("first-party"));
    assert_eq!(keys(&d), vec!["kv1.privatelink.vaultcore.azure.net"]);
    let target = format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st1");
    let nic = json!({"properties": {"ipConfigurations": [{"properties": {"privateIPAddress": "10.3.0.5",
        "privateLinkConnectionProperties": {"groupId": "file", "requiredMemberName": "file", "fqdns": ["st1.file.core.windows.net"]}}}]}});
    let d = Catalog::builtin().desired(&pe(&target, &["file"], "eastus", nic, json!({})));
    assert_eq!(keys(&d), vec!["st1.privatelink.file.core.windows.net"]);
}

#[test]
fn unknown_alias_is_reported_not_guessed() {
    let d = Catalog::builtin().desired(&pe(
        "someone-else.1234.eastus.azure.privatelinkservice",
        &[],
        "eastus",
        nic_one("10.0.0.9"),
        json!({}),
    ));
    assert!(d.target_id.is_none() && d.records.is_empty());
    assert!(d.notes[0].contains("no catalog target matches alias"));
}

#[test]
fn zone_group_zones_are_left_to_the_platform() {
    let target = format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Monitor/accounts/ws1");
    let nic = json!({"properties": {"ipConfigurations": [{"properties": {"privateIPAddress": "10.2.0.4",
        "privateLinkConnectionProperties": {"groupId": "prometheusMetrics", "requiredMemberName": "x",
        "fqdns": ["ws1-abcd.eastus.prometheus.monitor.azure.com"]}}}]}});
    let mut p = pe(&target, &["prometheusMetrics"], "eastus", nic, json!({}));
    p.dns_zone_group_zones.push(format!("/subscriptions/{SUB}/resourcegroups/hub/providers/microsoft.network/privatednszones/privatelink.eastus.prometheus.monitor.azure.com"));
    let d = Catalog::builtin().desired(&p);
    assert!(d.records.is_empty());
    assert!(d.notes[0].contains("zone group"));
}

#[test]
fn user_catalog_overrides_and_validates() {
    let user = r#"
[[target]]
id = "my-pls"
[target.match]
aliases = ["mypls.0000.eastus.azure.privatelinkservice"]
[target.dns]
mode = "wildcard"
zone = "svc.internal"
"#;
    let c = Catalog::from_toml(user, "user").unwrap();
    let d = c.desired(&pe("mypls.0000.eastus.azure.privatelinkservice", &[], "eastus", nic_one("10.9.0.1"), json!({})));
    assert_eq!(keys(&d), vec!["*.svc.internal"]);
    let globbed =
        user.replace("aliases = [\"mypls.0000.eastus.azure.privatelinkservice\"]", "alias_globs = [\"mypls.*\"]");
    assert!(Catalog::from_toml(&globbed, "user").unwrap_err().to_string().contains("alias_globs are not accepted"));
    let bad = "[[target]]\nid = \"x\"\n[target.match]\n[target.dns]\nmode = \"names\"\nzone = \"z\"\n";
    assert!(Catalog::from_toml(bad, "user").unwrap_err().to_string().contains("name_template"));
    assert!(Catalog::from_toml("[[target]]\nid=1", "user").is_err());
}

#[test]
fn glob() {
    assert!(glob_match(
        "production-*.azure.privatelinkservice",
        "production-westus3-0-0.x.westus3.azure.privatelinkservice"
    ));
    assert!(!glob_match("production-*.azure.privatelinkservice", "staging-1.azure.privatelinkservice"));
    assert!(glob_match("a*b*c", "axxbyyc"));
    assert!(!glob_match("a*b*c", "axxbyy"));
}

/// The generic first-party rule against Microsoft's published private endpoint DNS zone
/// table ("Azure Private Endpoint private DNS zone values", MicrosoftDocs/azure-docs
/// `articles/private-link/private-endpoint-dns.md`, commit 0095ac36d2562dea0378c60e0440a1de5424ce73,
/// and the current page for ADX, Monitor workspaces and App Service's scm names): an
/// endpoint's NIC FQDN must land in the zone Azure's own zone groups would use, or the
/// record is written where nothing resolves it.
#[test]
fn first_party_names_land_in_microsofts_zones() {
    let rows: &[(&str, &str, &str)] = &[
        ("sqlsrv.database.windows.net", "privatelink.database.windows.net", "sqlsrv"),
        ("ws.sql.azuresynapse.net", "privatelink.sql.azuresynapse.net", "ws"),
        ("ws-ondemand.sql.azuresynapse.net", "privatelink.sql.azuresynapse.net", "ws-ondemand"),
        ("ws.dev.azuresynapse.net", "privatelink.dev.azuresynapse.net", "ws"),
        ("acct.blob.core.windows.net", "privatelink.blob.core.windows.net", "acct"),
        ("acct.table.core.windows.net", "privatelink.table.core.windows.net", "acct"),
        ("acct.queue.core.windows.net", "privatelink.queue.core.windows.net", "acct"),
        ("acct.file.core.windows.net", "privatelink.file.core.windows.net", "acct"),
        ("acct.web.core.windows.net", "privatelink.web.core.windows.net", "acct"),
        ("acct.dfs.core.windows.net", "privatelink.dfs.core.windows.net", "acct"),
        ("acct.documents.azure.com", "privatelink.documents.azure.com", "acct"),
        ("acct.mongo.cosmos.azure.com", "privatelink.mongo.cosmos.azure.com", "acct"),
        ("acct.cassandra.cosmos.azure.com", "privatelink.cassandra.cosmos.azure.com", "acct"),
        ("acct.gremlin.cosmos.azure.com", "privatelink.gremlin.cosmos.azure.com", "acct"),
        ("acct.table.cosmos.azure.com", "privatelink.table.cosmos.azure.com", "acct"),
        ("acct.eastus2.batch.azure.com", "privatelink.eastus2.batch.azure.com", "acct"),
        ("srv.postgres.database.azure.com", "privatelink.postgres.database.azure.com", "srv"),
        ("srv.mysql.database.azure.com", "privatelink.mysql.database.azure.com", "srv"),
        ("srv.mariadb.database.azure.com", "privatelink.mariadb.database.azure.com", "srv"),
        ("kv.vault.azure.net", "privatelink.vaultcore.azure.net", "kv"),
        ("aks-dns-1a2b.eastus2.azmk8s.io", "privatelink.eastus2.azmk8s.io", "aks-dns-1a2b"),
        ("srch.search.windows.net", "privatelink.search.windows.net", "srch"),
        ("reg.azurecr.io", "privatelink.azurecr.io", "reg"),
        ("cfg.azconfig.io", "privatelink.azconfig.io", "cfg"),
        ("ns.servicebus.windows.net", "privatelink.servicebus.windows.net", "ns"),
        ("hub.azure-devices.net", "privatelink.azure-devices.net", "hub"),
        ("topic.eastus2-1.eventgrid.azure.net", "privatelink.eventgrid.azure.net", "topic.eastus2-1"),
        ("site.azurewebsites.net", "privatelink.azurewebsites.net", "site"),
        ("site.scm.azurewebsites.net", "privatelink.azurewebsites.net", "site.scm"),
        ("sig.service.signalr.net", "privatelink.service.signalr.net", "sig"),
        ("cog.cognitiveservices.azure.com", "privatelink.cognitiveservices.azure.com", "cog"),
        ("sync.afs.azure.net", "privatelink.afs.azure.net", "sync"),
        ("adf.eastus2.datafactory.azure.net", "privatelink.datafactory.azure.net", "adf.eastus2"),
        ("adf.adf.azure.com", "privatelink.adf.azure.com", "adf"),
        ("cache.redis.cache.windows.net", "privatelink.redis.cache.windows.net", "cache"),
        ("re.eastus2.redisenterprise.cache.azure.net", "privatelink.redisenterprise.cache.azure.net", "re.eastus2"),
        ("pv.purview.azure.com", "privatelink.purview.azure.com", "pv"),
        ("dt.api.eus2.digitaltwins.azure.net", "privatelink.digitaltwins.azure.net", "dt.api.eus2"),
        ("api.monitor.azure.com", "privatelink.monitor.azure.com", "api"),
        ("ws1.oms.opinsights.azure.com", "privatelink.oms.opinsights.azure.com", "ws1"),
        ("ws1.ods.opinsights.azure.com", "privatelink.ods.opinsights.azure.com", "ws1"),
        ("ws1.agentsvc.azure-automation.net", "privatelink.agentsvc.azure-automation.net", "ws1"),
        ("guid.webhook.eus2.azure-automation.net", "privatelink.azure-automation.net", "guid.webhook.eus2"),
        ("guid.workspace.eastus2.api.azureml.ms", "privatelink.api.azureml.ms", "guid.workspace.eastus2"),
        (
            "ml-ws-eastus2-guid.eastus2.notebooks.azure.net",
            "privatelink.notebooks.azure.net",
            "ml-ws-eastus2-guid.eastus2",
        ),
    ];
    let target = format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Example/things/t1");
    let mut wrong = Vec::new();
    for (fqdn, zone, name) in rows {
        let nic = json!({"properties": {"ipConfigurations": [{"properties": {"privateIPAddress": "10.0.0.8",
            "privateLinkConnectionProperties": {"groupId": "g", "requiredMemberName": "m", "fqdns": [fqdn]}}}]}});
        let mut p = pe(&target, &["g"], "eastus2", nic, json!({}));
        p.connections[0].status = crate::model::ConnectionStatus::Approved;
        let d = Catalog::builtin().desired(&p);
        let got = d.records.first().map(|r| (r.key.zone.clone(), r.key.name.clone()));
        if got.as_ref() != Some(&(zone.to_string(), name.to_string())) {
            wrong.push(format!("{fqdn}: got {got:?}, Microsoft's zone is {zone} (record {name})"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
