//! Private endpoint connections on the resources a PE targets (`{target}/privateEndpointConnections`),
//! the approver's side of a private link, as `../shared/reference/arm.md` §5 describes it:
//! list/GET/PUT on any resource type; a Kusto PUT is long-running (201 + `Location` +
//! `Retry-After`), a Private Link Service PUT answers 200 only, others 200. The name is
//! `<peName>.<guid>` (clients must list and match `properties.privateEndpoint.id`, never
//! build it), and approving on the target updates the endpoint's own connection state,
//! as Azure does.

use axum::http::Method;
use serde_json::{Value, json};

use super::{Answer, Call, FakeArm, Shared, World, page};
use crate::sandbox::host_emulator::new_guid;

const KIND: &str = "privateEndpointConnections";

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
