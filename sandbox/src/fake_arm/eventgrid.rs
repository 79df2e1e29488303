//! Event Grid in the fake ARM: system topics and their event subscriptions (what the
//! sweep's coverage check and `autopilot doctor` read, and what coverage creation writes),
//! plus ARM reads of the other resources doctor looks at (the audit topic, Key Vault
//! secret metadata, the Service Bus queue, private DNS zone VNet links), seeded by tests.
//!
//! Shapes from the Event Grid spec (2025-02-15): `SystemTopics_ListBySubscription`
//! (`GET /subscriptions/{s}/providers/Microsoft.EventGrid/systemTopics`),
//! `SystemTopics_Get`/`CreateOrUpdate`, `SystemTopicEventSubscriptions_ListBySystemTopic`,
//! `_Get`, `_CreateOrUpdate`. Both PUTs are long-running: 201 with the resource
//! (`provisioningState` `Creating`) and `Azure-AsyncOperation` under
//! `/subscriptions/{s}/providers/Microsoft.EventGrid/locations/global/operationsStatus/{op}`
//! (the same shape as the file's other asynchronous PUTs, `final-state-via`
//! `azure-async-operation`); the fake stores the resource as `Succeeded` at once and the
//! operation answers `InProgress` before `Succeeded`. As in Azure, one system topic per
//! source: a second topic for the same subscription is refused (400).

use serde_json::{Value, json};

use super::{Answer, Call, FakeArm, Shared, page};

const TOPIC_TYPE: &str = "Microsoft.EventGrid/systemTopics";
const SUBSCRIPTION_TYPE: &str = "Microsoft.EventGrid/systemTopics/eventSubscriptions";

impl FakeArm {
    /// A system topic carrying `subscription`'s resource events, as infra creates it.
    pub fn add_system_topic(&self, subscription: &str, resource_group: &str, name: &str) -> String {
        let id = format!("/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/{TOPIC_TYPE}/{name}");
        let body = topic_body(
            &id,
            name,
            &json!({"properties": {
                "source": format!("/subscriptions/{subscription}"),
                "topicType": "Microsoft.Resources.Subscriptions",
            }}),
        );
        self.shared().world().put(body);
        id
    }

    /// An event subscription on `topic_id` with `properties` as given.
    pub fn add_event_subscription(&self, topic_id: &str, name: &str, properties: Value) -> String {
        let id = format!("{topic_id}/eventSubscriptions/{name}");
        self.shared().world().put(subscription_body(&id, name, topic_id, properties, "Succeeded"));
        id
    }

    /// Stores any resource ARM should return as it is (`body["id"]` is its id): the
    /// audit topic, Key Vault secret metadata, a Service Bus queue, a zone's VNet link.
    pub fn add_resource(&self, body: Value) {
        self.shared().world().put(body);
    }

    /// Removes a seeded resource (e.g. an event subscription deleted by hand).
    pub fn remove_resource(&self, id: &str) -> Option<Value> {
        self.shared().world().remove(id)
    }
}

fn topic_body(id: &str, name: &str, request: &Value) -> Value {
    json!({
        "id": id,
        "name": name,
        "type": TOPIC_TYPE,
        "location": "global",
        "identity": {
            "type": "SystemAssigned",
            "principalId": crate::host_emulator::new_guid(),
            "tenantId": "00000000-0000-0000-0000-00000000aaaa",
        },
        "properties": {
            "source": request.pointer("/properties/source").cloned().unwrap_or(Value::Null),
            "topicType": request.pointer("/properties/topicType").cloned().unwrap_or(Value::Null),
            "metricResourceId": crate::host_emulator::new_guid(),
            "provisioningState": "Succeeded",
        },
    })
}

fn subscription_body(id: &str, name: &str, topic_id: &str, mut properties: Value, state: &str) -> Value {
    properties["provisioningState"] = json!(state);
    properties["topic"] = json!(topic_id);
    json!({"id": id, "name": name, "type": SUBSCRIPTION_TYPE, "properties": properties})
}

/// The canonical id of the resource a path addresses (original spelling).
fn path_id(call: &Call<'_>) -> String {
    call.path.to_owned()
}

pub(super) fn route(shared: &Shared, call: &Call<'_>, s: &[&str]) -> Answer {
    use axum::http::Method;
    match (call.method, s) {
        (&Method::GET, ["subscriptions", sub, "providers", "microsoft.eventgrid", "systemtopics"]) => {
            let prefix = format!("/subscriptions/{sub}/");
            let items: Vec<Value> = shared
                .world()
                .resources
                .iter()
                .filter(|(k, v)| k.starts_with(&prefix) && v.body["type"] == TOPIC_TYPE)
                .map(|(_, v)| v.body.clone())
                .collect();
            page(shared, call, items)
        }
        (&Method::GET, [.., "microsoft.eventgrid", "systemtopics", _, "eventsubscriptions"]) => {
            let topic = call.path[..call.path.len() - "/eventSubscriptions".len()].to_owned();
            if shared.world().get(&topic).is_none() {
                return Answer::not_found(&topic);
            }
            let items = shared.world().children(&topic, "eventSubscriptions");
            page(shared, call, items)
        }
        (
            &Method::PUT,
            ["subscriptions", sub, "resourcegroups", _, "providers", "microsoft.eventgrid", "systemtopics", name],
        ) => put_topic(shared, call, sub, name),
        (&Method::PUT, [.., "microsoft.eventgrid", "systemtopics", _, "eventsubscriptions", name]) => {
            put_subscription(shared, call, s[1], name)
        }
        (&Method::GET, _) => match shared.world().get(call.path) {
            Some(v) => Answer::json(200, v.clone()),
            None => Answer::not_found(call.path),
        },
        _ => Answer::error(405, "MethodNotAllowed", format!("{} is not supported on {}", call.method, call.path)),
    }
}

fn lro(shared: &Shared, subscription: &str, body: Value) -> Answer {
    let provider = format!("/subscriptions/{subscription}/providers/Microsoft.EventGrid/locations/global");
    let headers = shared.operation_headers(&provider, ("operationsStatus", "operationResults"), "2025-02-15", None);
    let mut a = Answer::json(201, body);
    a.headers.extend(headers);
    a
}

fn put_topic(shared: &Shared, call: &Call<'_>, subscription: &str, name: &str) -> Answer {
    let body = match call.json_body() {
        Ok(b) => b,
        Err(a) => return a,
    };
    let source = body.pointer("/properties/source").and_then(Value::as_str).unwrap_or_default();
    let topic_type = body.pointer("/properties/topicType").and_then(Value::as_str).unwrap_or_default();
    if source.is_empty() || topic_type.is_empty() || body["location"].as_str().is_none() {
        return Answer::error(
            400,
            "InvalidRequest",
            "location, properties.source and properties.topicType are required.",
        );
    }
    if topic_type.eq_ignore_ascii_case("Microsoft.Resources.Subscriptions")
        && !source.eq_ignore_ascii_case(&format!("/subscriptions/{subscription}"))
    {
        return Answer::error(400, "InvalidRequest", "A subscription's system topic must be in that subscription.");
    }
    let id = path_id(call);
    {
        let w = shared.world();
        let clash = w.resources.iter().any(|(k, v)| {
            v.body["type"] == TOPIC_TYPE
                && *k != id.to_ascii_lowercase()
                && v.body
                    .pointer("/properties/source")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.eq_ignore_ascii_case(source))
        });
        if clash {
            return Answer::error(
                400,
                "InvalidRequest",
                format!("Only one system topic is allowed per source ({source})."),
            );
        }
    }
    let stored = topic_body(&id, name, &body);
    shared.world().put(stored.clone());
    let mut creating = stored;
    creating["properties"]["provisioningState"] = json!("Creating");
    lro(shared, subscription, creating)
}

fn put_subscription(shared: &Shared, call: &Call<'_>, subscription: &str, name: &str) -> Answer {
    let body = match call.json_body() {
        Ok(b) => b,
        Err(a) => return a,
    };
    let topic = call.path[..call.path.len() - name.len() - "/eventSubscriptions/".len()].to_owned();
    if shared.world().get(&topic).is_none() {
        return Answer::not_found(&topic);
    }
    let properties = body["properties"].clone();
    if properties.pointer("/destination/endpointType").and_then(Value::as_str).is_none() {
        return Answer::error(400, "InvalidRequest", "properties.destination.endpointType is required.");
    }
    let id = path_id(call);
    shared.world().put(subscription_body(&id, name, &topic, properties.clone(), "Succeeded"));
    lro(shared, subscription, subscription_body(&id, name, &topic, properties, "Creating"))
}
