//! Private endpoint connections on the resources a PE targets (`{target}/privateEndpointConnections`),
//! the approver's side of a private link, as `../shared/reference/arm.md` §5 describes it:
//! list/GET/PUT/DELETE; a Kusto PUT is long-running (201 + `Location` + `Retry-After`), a
//! Private Link Service PUT answers 200 only, others 200. The name is `<peName>.<guid>`
//! (clients must list and match `properties.privateEndpoint.id`, never build it), and
//! approving on the target updates the endpoint's own connection state, as Azure does.
//!
//! Strict where the client could go wrong without noticing: the sub-resource is served
//! only for the resource types whose spec has it ([`SPEC_VERSIONS`]) and only at the
//! api-versions the spec lists for that type. Anything else is answered as ARM answers it:
//! an unknown type 404 `InvalidResourceType`, a version the type does not have 400
//! `NoRegisteredProviderFound` with the supported versions in the message (the wording
//! ARM uses, as quoted in public issue reports, e.g. Azure/azure-cli#28496). A Kusto PUT
//! that carries the read-only `actionsRequired` is refused with 400: ARM's guidance is
//! that providers ignore read-only input, but the fake is stricter so a client that sends
//! it is caught. `Microsoft.Monitor/accounts` has no such sub-resource in any spec version,
//! so it is not served at all.

use axum::http::Method;
use serde_json::{Value, json};

use super::{Answer, Call, FakeArm, Shared, World, page};
use crate::host_emulator::new_guid;

const KIND: &str = "privateEndpointConnections";

/// Resource types whose spec has `{type}/privateEndpointConnections`, with every
/// api-version (stable and preview) that carries it, oldest first.
///
/// Provenance: `../shared/fixtures/arm/api-versions.json` (the `privateEndpointConnections`
/// map of `Azure/bicep-types-az` `generated/index.json` at commit
/// `1f896de2db966ad91e8f7d7d981e11d32e4f5d8d`, generated from `Azure/azure-rest-api-specs`
/// `b7170cade0`). `Microsoft.Monitor/accounts` is deliberately absent: its specs
/// (`specification/monitor/resource-manager/Microsoft.Monitor/Accounts/stable/2023-04-03/monitoringAccounts_API.json`,
/// `preview/2025-05-03-preview/azuremonitorworkspace.json`, `preview/2025-10-03-preview/azuremonitorworkspace.json`)
/// define no `privateEndpointConnections` path, only a read-only embedded array.
#[rustfmt::skip]
pub const SPEC_VERSIONS: &[(&str, &[&str])] = &[
    ("Microsoft.Kusto/clusters", &[
        "2021-08-27", "2022-02-01", "2022-07-07", "2022-11-11", "2022-12-29", "2023-05-02", "2023-08-15",
        "2024-04-13", "2025-02-14",
    ]),
    ("Microsoft.Storage/storageAccounts", &[
        "2019-06-01", "2020-08-01-preview", "2021-01-01", "2021-02-01", "2021-04-01", "2021-06-01",
        "2021-08-01", "2021-09-01", "2022-05-01", "2022-09-01", "2023-01-01", "2023-04-01", "2023-05-01",
        "2024-01-01", "2025-01-01", "2025-06-01", "2025-08-01", "2026-04-01",
    ]),
    ("Microsoft.KeyVault/vaults", &[
        "2018-02-14", "2019-09-01", "2020-04-01-preview", "2021-04-01-preview", "2021-06-01-preview",
        "2021-10-01", "2021-11-01-preview", "2022-02-01-preview", "2022-07-01", "2022-11-01", "2023-02-01",
        "2023-07-01", "2024-04-01-preview", "2024-11-01", "2024-12-01-preview", "2025-05-01", "2026-02-01",
        "2026-03-01-preview",
    ]),
    ("Microsoft.Network/privateLinkServices", &[
        "2018-10-01", "2019-04-01", "2019-06-01", "2019-07-01", "2019-08-01", "2019-09-01", "2019-11-01",
        "2019-12-01", "2020-03-01", "2020-04-01", "2020-05-01", "2020-06-01", "2020-07-01", "2020-08-01",
        "2020-11-01", "2021-02-01", "2021-03-01", "2021-05-01", "2021-08-01", "2022-01-01", "2022-05-01",
        "2022-07-01", "2022-09-01", "2022-11-01", "2023-02-01", "2023-04-01", "2023-05-01", "2023-06-01",
        "2023-09-01", "2023-11-01", "2024-01-01", "2024-03-01", "2024-05-01", "2024-07-01", "2024-10-01",
        "2025-01-01", "2025-03-01", "2025-05-01", "2025-07-01", "2025-09-01",
    ]),
    ("Microsoft.Sql/servers", &[
        "2018-06-01-preview", "2020-02-02-preview", "2020-08-01-preview", "2020-11-01-preview",
        "2021-02-01-preview", "2021-05-01-preview", "2021-08-01-preview", "2021-11-01", "2021-11-01-preview",
        "2022-02-01-preview", "2022-05-01-preview", "2022-08-01-preview", "2022-11-01-preview",
        "2023-02-01-preview", "2023-05-01-preview", "2023-08-01", "2023-08-01-preview", "2024-05-01-preview",
        "2024-11-01-preview", "2025-01-01", "2025-02-01-preview", "2025-08-01-preview",
    ]),
    ("Microsoft.DocumentDB/databaseAccounts", &[
        "2019-08-01-preview", "2021-01-15", "2021-03-01-preview", "2021-03-15", "2021-04-01-preview",
        "2021-04-15", "2021-05-15", "2021-06-15", "2021-07-01-preview", "2021-10-15", "2021-10-15-preview",
        "2021-11-15-preview", "2022-02-15-preview", "2022-05-15", "2022-05-15-preview", "2022-08-15",
        "2022-08-15-preview", "2022-11-15", "2022-11-15-preview", "2023-03-01-preview", "2023-03-15",
        "2023-03-15-preview", "2023-04-15", "2023-09-15", "2023-09-15-preview", "2023-11-15",
        "2023-11-15-preview", "2024-02-15-preview", "2024-05-15", "2024-05-15-preview", "2024-08-15",
        "2024-09-01-preview", "2024-11-15", "2024-12-01-preview", "2025-04-15", "2025-05-01-preview",
        "2025-10-15", "2025-11-01-preview", "2026-03-15", "2026-04-01-preview",
    ]),
    ("Microsoft.ServiceBus/namespaces", &[
        "2018-01-01-preview", "2021-01-01-preview", "2021-06-01-preview", "2021-11-01", "2022-01-01-preview",
        "2022-10-01-preview", "2023-01-01-preview", "2024-01-01", "2025-05-01-preview", "2026-01-01",
        "2026-07-01-preview",
    ]),
    ("Microsoft.EventHub/namespaces", &[
        "2018-01-01-preview", "2021-01-01-preview", "2021-06-01-preview", "2021-11-01", "2022-01-01-preview",
        "2022-10-01-preview", "2023-01-01-preview", "2024-01-01", "2024-05-01-preview", "2025-05-01-preview",
        "2026-01-01", "2026-07-01-preview",
    ]),
];

/// The spec's versions of `{parent_type}/privateEndpointConnections`, if it has the sub-resource.
pub fn spec_versions(parent_type: &str) -> Option<&'static [&'static str]> {
    SPEC_VERSIONS.iter().find(|(t, _)| t.eq_ignore_ascii_case(parent_type)).map(|(_, v)| *v)
}

impl FakeArm {
    /// Makes `resource_id` an approvable target (an ADX cluster, a Private Link Service,
    /// an Azure Monitor workspace...). Endpoints put afterwards get a connection on it.
    pub fn add_link_target(&self, resource_id: &str, location: &str) {
        let name = resource_id.rsplit('/').next().unwrap_or_default();
        let rtype = resource_type(resource_id);
        self.shared().world().put(json!({
            "id": resource_id, "name": name, "type": rtype, "location": location, "properties": {}
        }));
    }

    /// A Pending connection on `target` (registered with [`FakeArm::add_link_target`])
    /// from an endpoint the fake does not hold: another tenant's, or a managed private
    /// endpoint in a Microsoft subscription. Pair it with [`FakeArm::deny_subscription`]
    /// for the endpoint's subscription to model a tenant we may not read. `description` is
    /// the requester's message (shown as the description while Pending); `created_at`
    /// (RFC 3339) is sent as `systemData.createdAt` when given, as providers that
    /// implement ARM's `systemData` do. Returns the connection's name (`<pe name>.<guid>`).
    pub fn add_foreign_connection(
        &self,
        target: &str,
        pe_id: &str,
        description: &str,
        created_at: Option<&str>,
    ) -> String {
        let mut w = self.shared().world();
        let canonical = w.get(target).and_then(|t| t["id"].as_str().map(str::to_owned)).unwrap_or(target.to_owned());
        let name = format!("{}.{}", pe_id.rsplit('/').next().unwrap_or_default(), new_guid());
        let mut conn = json!({
            "id": format!("{canonical}/{KIND}/{name}"),
            "name": name,
            "type": format!("{}/{KIND}", resource_type(&canonical)),
            "properties": {
                "privateEndpoint": {"id": pe_id},
                "groupIds": ["blob"],
                "privateLinkServiceConnectionState": {
                    "status": "Pending", "description": description, "actionsRequired": "None"
                },
                "provisioningState": "Succeeded"
            }
        });
        if let Some(at) = created_at {
            conn["systemData"] = json!({"createdAt": at, "createdByType": "Application"});
        }
        w.put(conn);
        name
    }

    /// The target-side connection of an endpoint, if any.
    pub fn target_connection(&self, pe_id: &str) -> Option<Value> {
        let w = self.shared().world();
        find_for_endpoint(&w, pe_id).map(|(_, v)| v)
    }
}

/// `namespace/type` of a resource id, e.g. `Microsoft.Kusto/clusters`.
fn resource_type(id: &str) -> String {
    let parts: Vec<&str> = id.split('/').collect();
    let i = parts.iter().position(|p| p.eq_ignore_ascii_case("providers")).unwrap_or(0);
    format!("{}/{}", parts.get(i + 1).unwrap_or(&""), parts.get(i + 2).unwrap_or(&""))
}

fn find_for_endpoint(w: &World, pe_id: &str) -> Option<(String, Value)> {
    let pe = pe_id.to_ascii_lowercase();
    w.resources
        .iter()
        .filter(|(k, _)| k.contains("/privateendpointconnections/"))
        .find(|(_, s)| {
            s.body.pointer("/properties/privateEndpoint/id").and_then(Value::as_str).map(str::to_ascii_lowercase)
                == Some(pe.clone())
        })
        .map(|(k, s)| (k.clone(), s.body.clone()))
}

/// Called when an endpoint is put: a registered target gets (or keeps) its connection.
pub(super) fn on_endpoint_put(w: &mut World, pe: &Value) {
    let pe_id = pe["id"].as_str().unwrap_or_default().to_owned();
    let props = &pe["properties"];
    let conn = props
        .pointer("/privateLinkServiceConnections/0")
        .or_else(|| props.pointer("/manualPrivateLinkServiceConnections/0"))
        .cloned()
        .unwrap_or(Value::Null);
    let target = conn.pointer("/properties/privateLinkServiceId").and_then(Value::as_str).unwrap_or_default();
    let Some(target_body) = w.get(target).cloned() else { return };
    if find_for_endpoint(w, &pe_id).is_some() {
        return;
    }
    let canonical = target_body["id"].as_str().unwrap_or(target).to_owned();
    let name = format!("{}.{}", pe["name"].as_str().unwrap_or_default(), new_guid());
    let state = conn.pointer("/properties/privateLinkServiceConnectionState").cloned().unwrap_or(json!({}));
    let request = conn.pointer("/properties/requestMessage").and_then(Value::as_str).unwrap_or_default();
    let pending = state["status"] == "Pending";
    w.put(json!({
        "id": format!("{canonical}/{KIND}/{name}"),
        "name": name,
        "type": format!("{}/{KIND}", resource_type(&canonical)),
        "properties": {
            "privateEndpoint": {"id": pe_id},
            "groupIds": conn.pointer("/properties/groupIds").cloned().unwrap_or(json!([])),
            "privateLinkServiceConnectionState": {
                "status": state["status"],
                // While Pending the consumer's request message shows as the description.
                "description": if pending { json!(request) } else { state["description"].clone() },
                "actionsRequired": "None"
            },
            "provisioningState": "Succeeded"
        }
    }));
}

/// Called when an endpoint is deleted: the target's connection goes away, or (when the
/// world is set to keep them, the other answer Azure may give) stays `Disconnected`.
pub(super) fn on_endpoint_delete(w: &mut World, pe_id: &str) {
    if let Some((key, mut conn)) = find_for_endpoint(w, pe_id) {
        if w.keep_connections_on_delete {
            conn["properties"]["privateLinkServiceConnectionState"]["status"] = json!("Disconnected");
            w.put(conn);
        } else {
            w.resources.remove(&key);
        }
    }
}

impl FakeArm {
    /// Leave a deleted endpoint's connection on its target as `Disconnected`.
    pub fn keep_connections_on_delete(&self, keep: bool) {
        self.shared().world().keep_connections_on_delete = keep;
    }
}

/// Routes `{target}/privateEndpointConnections[/{name}]`.
pub(super) fn route(shared: &Shared, call: &Call<'_>, s: &[&str]) -> Answer {
    let Some(i) = s.iter().position(|x| *x == "privateendpointconnections") else {
        return Answer::not_found(call.path);
    };
    let target_path = call.path.split('/').take(i + 1).collect::<Vec<_>>().join("/");
    // ARM routes on type and api-version before the provider looks for the resource.
    let parent_type = resource_type(&target_path);
    let api = call.query.get("api-version").map(String::as_str).unwrap_or_default();
    let location = shared.world().get(&target_path).and_then(|t| t["location"].as_str().map(str::to_owned));
    let location = location.unwrap_or_else(|| "eastus2".into());
    let short = parent_type.split_once('/').map_or(parent_type.as_str(), |(_, t)| t);
    let Some(versions) = spec_versions(&parent_type) else {
        let ns = parent_type.split('/').next().unwrap_or_default();
        return Answer::error(
            404,
            "InvalidResourceType",
            format!(
                "The resource type '{short}/{KIND}' could not be found in the namespace '{ns}' for api version '{api}'."
            ),
        );
    };
    if !versions.contains(&api) {
        return super::versions::unsupported(&format!("{parent_type}/{KIND}"), api, &location, versions);
    }
    if shared.world().get(&target_path).is_none() {
        return Answer::not_found(&target_path);
    }
    match (&s[i + 1..], call.method.clone()) {
        ([], Method::GET) => {
            let items = shared.world().children(&target_path, KIND);
            page(shared, call, items)
        }
        ([_], Method::GET) => match shared.world().get(call.path) {
            Some(v) => Answer::json(200, v.clone()),
            None => Answer::not_found(call.path),
        },
        ([_], Method::PUT) => put(shared, call, s),
        ([_], Method::DELETE) => {
            if shared.world().remove(call.path).is_none() {
                return Answer::empty(204);
            }
            if s.contains(&"microsoft.kusto") {
                let provider = format!("/subscriptions/{}/providers/Microsoft.Kusto/locations/sandbox", s[1]);
                let mut a = Answer::empty(202);
                a.headers = shared
                    .operation_headers(&provider, ("operations", "operationResults"), "2025-02-14", None)
                    .into_iter()
                    .filter(|(k, _)| k != "Azure-AsyncOperation")
                    .collect();
                return a;
            }
            Answer::empty(200)
        }
        _ => Answer::error(405, "MethodNotAllowed", "The sandbox supports GET, PUT and DELETE on connections."),
    }
}

fn put(shared: &Shared, call: &Call<'_>, s: &[&str]) -> Answer {
    let body = match call.json_body() {
        Ok(b) => b,
        Err(a) => return a,
    };
    let Some(status) = body.pointer("/properties/privateLinkServiceConnectionState/status").and_then(Value::as_str)
    else {
        return Answer::error(
            400,
            "InvalidRequestContent",
            "properties.privateLinkServiceConnectionState.status is required.",
        );
    };
    let description =
        body.pointer("/properties/privateLinkServiceConnectionState/description").cloned().unwrap_or(json!(""));
    // Kusto's `PrivateLinkServiceConnectionStateProperty.actionsRequired` is ReadOnly
    // (Kusto `PrivateEndpointConnection.tsp`; bicep-types-az microsoft.kusto/2025-02-14).
    if s.contains(&"microsoft.kusto")
        && body.pointer("/properties/privateLinkServiceConnectionState/actionsRequired").is_some()
    {
        return Answer::error(
            400,
            "InvalidRequestContent",
            "The property 'properties.privateLinkServiceConnectionState.actionsRequired' is read-only and cannot be set.",
        );
    }
    let mut w = shared.world();
    let Some(mut conn) = w.get(call.path).cloned() else {
        return Answer::not_found(call.path);
    };
    let current = conn
        .pointer("/properties/privateLinkServiceConnectionState/status")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if current == "Rejected" && status != "Rejected" {
        return Answer::error(
            400,
            "PrivateEndpointConnectionStatusNotPending",
            "The private endpoint connection was rejected; it cannot be approved any more.",
        );
    }
    conn["properties"]["privateLinkServiceConnectionState"] =
        json!({"status": status, "description": description, "actionsRequired": "None"});
    w.put(conn.clone());
    // The consumer side follows: the endpoint's connection shows the new state.
    if let Some(pe_id) = conn.pointer("/properties/privateEndpoint/id").and_then(Value::as_str)
        && let Some(mut pe) = w.get(pe_id).cloned()
    {
        for kind in ["privateLinkServiceConnections", "manualPrivateLinkServiceConnections"] {
            if let Some(list) = pe.pointer_mut(&format!("/properties/{kind}")).and_then(Value::as_array_mut) {
                for c in list {
                    c["properties"]["privateLinkServiceConnectionState"] =
                        json!({"status": status, "description": description, "actionsRequired": "None"});
                }
            }
        }
        w.put(pe);
    }
    drop(w);
    if s.contains(&"microsoft.kusto") {
        // Kusto: a long-running operation polled through Location.
        let provider = format!("/subscriptions/{}/providers/Microsoft.Kusto/locations/sandbox", s[1]);
        let headers =
            shared.operation_headers(&provider, ("operations", "operationResults"), "2025-02-14", Some(conn.clone()));
        let mut a = Answer::json(201, conn);
        a.headers = headers.into_iter().filter(|(k, _)| k != "Azure-AsyncOperation").collect();
        return a;
    }
    Answer::json(200, conn)
}
