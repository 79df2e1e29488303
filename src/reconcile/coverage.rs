//! Every subscription in scope covered: its Event Grid system topic and the event
//! subscription from it to the `PrivateEndpointEvents` function.
//!
//! Why: events are how an endpoint converges in seconds; a subscription added to
//! `sweep.subscriptions` without its topic (a new landing zone, a topic deleted by hand)
//! is converged only by the sweep, every 15 minutes, and nothing says so. This one check
//! is shared by `autopilot doctor` (a ✗ with its fix) and the sweep (a `sweep.coverage_gap`
//! audit event and a count in its result), so both look for exactly the shape
//! `infra/modules/eventgrid-subscription.bicep` deploys:
//!
//! * a system topic whose `source` is `/subscriptions/{id}` and whose `topicType` is
//!   `Microsoft.Resources.Subscriptions` (Azure allows one per source, wherever it lives,
//!   so it is found by listing the subscription's system topics, not by name);
//! * on it, an event subscription with an `AzureFunction` destination whose `resourceId`
//!   is the configured function (`coverage.function_id`; without one, any function named
//!   `PrivateEndpointEvents`), `includedEventTypes` holding `ResourceWriteSuccess` and
//!   `ResourceDeleteSuccess`, and a `StringIn` advanced filter on `data.operationName`
//!   holding the private endpoint write and delete operations.
//!
//! With `coverage.create_missing` (off by default) the sweep creates what is missing,
//! with infra's shape and names, so a new subscription is covered without a redeploy.
//! That needs `Microsoft.EventGrid/systemTopics/write` and
//! `.../eventSubscriptions/write` in the subscription (infra/README.md, "Event Grid");
//! `doctor` shows whether the identity holds them. Only an event subscription under our
//! own name is ever written: one someone else made is reported, never changed. Azure allows
//! one system topic per source, so when another team's topic already carries the
//! subscription's events, ours is added to it (the only way to receive them) and the topic
//! itself is left as it is.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::arm::{ArmClient, ArmError, ArmRequest, client::Method};

/// Microsoft.EventGrid stable version (systemTopics and their eventSubscriptions).
pub const EVENT_GRID_API: &str = "2025-02-15";
/// The system topic type that carries a subscription's resource events.
pub const TOPIC_TYPE: &str = "Microsoft.Resources.Subscriptions";
/// What the event subscription must include (infra's `includedEventTypes`).
pub const EVENT_TYPES: [&str; 2] =
    ["Microsoft.Resources.ResourceWriteSuccess", "Microsoft.Resources.ResourceDeleteSuccess"];
/// The advanced filter: `StringIn` on this key with these values.
pub const FILTER_KEY: &str = "data.operationName";
pub const FILTER_OPERATIONS: [&str; 2] =
    ["Microsoft.Network/privateEndpoints/write", "Microsoft.Network/privateEndpoints/delete"];
/// The function the events go to (handlers/PrivateEndpointEvents).
pub const FUNCTION_NAME: &str = "PrivateEndpointEvents";

/// `[coverage]`: where the events of each subscription in scope must go, and whether the
/// sweep may create what is missing.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CoverageSettings {
    /// `<function app id>/functions/PrivateEndpointEvents`. Empty: the sweep does not check
    /// coverage, and `doctor` accepts any function named `PrivateEndpointEvents`.
    pub function_id: String,
    /// Let the sweep create a missing topic or event subscription (needs the writes above).
    pub create_missing: bool,
    /// Where a created topic goes in each subscription (infra's `eventsResourceGroupName`;
    /// it must exist).
    pub resource_group: String,
    /// Name of a created topic (infra: `evgst-autopilot-<environment>`).
    pub topic_name: String,
    /// Name of our event subscription (infra's).
    pub event_subscription_name: String,
    /// Dead-letter destination of a created event subscription (storage account id and
    /// container); empty = none (Event Grid then drops an event after its last attempt).
    pub dead_letter_storage_account_id: String,
    pub dead_letter_container: String,
    pub max_delivery_attempts: u32,
    pub event_ttl_minutes: u32,
}

impl Default for CoverageSettings {
    fn default() -> Self {
        Self {
            function_id: String::new(),
            create_missing: false,
            resource_group: "rg-autopilot-events".into(),
            topic_name: "evgst-autopilot".into(),
            event_subscription_name: "private-endpoints-to-autopilot".into(),
            dead_letter_storage_account_id: String::new(),
            dead_letter_container: "eventgrid-deadletter".into(),
            max_delivery_attempts: 30,
            event_ttl_minutes: 1440,
        }
    }
}

/// One subscription's coverage, as found.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Coverage {
    pub subscription: String,
    /// The system topic's id, if there is one.
    pub topic: Option<String>,
    /// Our event subscription's id, if there is one with the right shape.
    pub event_subscription: Option<String>,
    /// What is missing or wrong, one line each (empty = covered).
    pub problems: Vec<String>,
    /// The fix for the first problem (an `az` line, or the setting to turn on).
    pub fix: Option<String>,
    /// What this run created (with `create_missing`).
    pub created: Vec<String>,
    /// What an operator still has to do after a creation (the new topic's dead-letter grant).
    pub follow_up: Vec<String>,
}

impl Coverage {
    pub fn covered(&self) -> bool {
        self.problems.is_empty()
    }
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// Whether `sub` delivers to the function, and if so what is wrong with its filter.
fn judge(sub: &Value, settings: &CoverageSettings) -> Option<Vec<String>> {
    let dest = &sub["properties"]["destination"];
    if !eq(str_at(dest, "/endpointType"), "AzureFunction") {
        return None;
    }
    let target = str_at(dest, "/properties/resourceId");
    let ours = if settings.function_id.trim().is_empty() {
        target.to_ascii_lowercase().ends_with(&format!("/functions/{}", FUNCTION_NAME.to_ascii_lowercase()))
    } else {
        eq(target, settings.function_id.trim())
    };
    if !ours {
        return None;
    }
    let mut wrong = Vec::new();
    let filter = &sub["properties"]["filter"];
    let types: Vec<&str> =
        filter["includedEventTypes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    for t in EVENT_TYPES {
        // No list at all means "every type", which includes ours.
        if !types.is_empty() && !types.iter().any(|x| eq(x, t)) {
            wrong.push(format!("its filter does not include {t}"));
        }
    }
    let string_in = filter["advancedFilters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| eq(str_at(f, "/operatorType"), "StringIn") && eq(str_at(f, "/key"), FILTER_KEY));
    match string_in {
        None => wrong.push(format!("it has no StringIn filter on {FILTER_KEY} (every ARM write would invoke the app)")),
        Some(f) => {
            let values: Vec<&str> = f["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            for op in FILTER_OPERATIONS {
                if !values.iter().any(|v| eq(v, op)) {
                    wrong.push(format!("its {FILTER_KEY} filter leaves out {op}"));
                }
            }
        }
    }
    let state = str_at(sub, "/properties/provisioningState");
    if !state.is_empty() && !eq(state, "Succeeded") {
        wrong.push(format!("its provisioningState is {state}"));
    }
    Some(wrong)
}

/// Checks one subscription (reads only).
pub async fn check(arm: &ArmClient, settings: &CoverageSettings, subscription: &str) -> Coverage {
    let subscription = subscription.trim();
    let mut c = Coverage { subscription: subscription.to_owned(), ..Coverage::default() };
    let source = format!("/subscriptions/{subscription}");
    let topics =
        match arm.list_all(&format!("{source}/providers/Microsoft.EventGrid/systemTopics"), EVENT_GRID_API).await {
            Ok(t) => t,
            Err(e) => {
                c.problems.push(format!("its system topics cannot be read: {}", brief(&e)));
                c.fix = Some(read_fix(subscription, "Microsoft.EventGrid/systemTopics/read"));
                return c;
            }
        };
    let topic = topics
        .iter()
        .find(|t| eq(str_at(t, "/properties/source"), &source) && eq(str_at(t, "/properties/topicType"), TOPIC_TYPE));
    let Some(topic) = topic else {
        c.problems.push(format!("no Event Grid system topic ({TOPIC_TYPE}) for this subscription"));
        c.fix = Some(create_fix(settings, subscription));
        return c;
    };
    let topic_id = str_at(topic, "/id").to_owned();
    c.topic = Some(topic_id.clone());
    let subs = match arm.list_all(&format!("{topic_id}/eventSubscriptions"), EVENT_GRID_API).await {
        Ok(s) => s,
        Err(e) => {
            c.problems.push(format!("the event subscriptions of {topic_id} cannot be read: {}", brief(&e)));
            c.fix = Some(read_fix(subscription, "Microsoft.EventGrid/systemTopics/eventSubscriptions/read"));
            return c;
        }
    };
    let mut best: Option<(String, Vec<String>)> = None;
    for s in &subs {
        if let Some(wrong) = judge(s, settings) {
            let id = str_at(s, "/id").to_owned();
            if wrong.is_empty() {
                c.event_subscription = Some(id);
                return c;
            }
            best.get_or_insert((id, wrong));
        }
    }
    match best {
        Some((id, wrong)) => {
            c.problems.extend(wrong.into_iter().map(|w| format!("event subscription {id}: {w}")));
        }
        None => {
            c.problems.push(format!("no event subscription on {topic_id} delivers to {}", function_label(settings)))
        }
    }
    c.fix = Some(create_fix(settings, subscription));
    c
}

fn function_label(settings: &CoverageSettings) -> String {
    if settings.function_id.trim().is_empty() {
        format!("a {FUNCTION_NAME} function")
    } else {
        settings.function_id.trim().to_owned()
    }
}

fn brief(e: &ArmError) -> String {
    match e {
        ArmError::Api { status, code, .. } => format!("{status} {code}"),
        other => other.to_string(),
    }
}

fn read_fix(subscription: &str, action: &str) -> String {
    format!(
        "grant the identity {action} in /subscriptions/{subscription} (infra's endpoint reader role holds it: \
         `azd provision` with this subscription in subscriptionsInScope)"
    )
}

fn create_fix(settings: &CoverageSettings, subscription: &str) -> String {
    if settings.create_missing {
        return "the next sweep creates it (coverage.create_missing = true); if it does not, run `autopilot doctor` \
                for the missing write permission"
            .into();
    }
    format!(
        "add {subscription} to subscriptionsInScope and run `azd provision` (with wireEventSubscriptions=true), \
         or set AUTOPILOT__COVERAGE__CREATE_MISSING=true (createMissingEventSubscriptions) so the sweep creates it"
    )
}

/// The event subscription infra deploys, for `function_id`.
pub fn event_subscription_body(settings: &CoverageSettings) -> Value {
    let mut properties = json!({
        "eventDeliverySchema": "EventGridSchema",
        "destination": {
            "endpointType": "AzureFunction",
            "properties": {
                "resourceId": settings.function_id.trim(),
                "maxEventsPerBatch": 1,
                "preferredBatchSizeInKilobytes": 64,
            },
        },
        "filter": {
            "includedEventTypes": EVENT_TYPES,
            "advancedFilters": [{"operatorType": "StringIn", "key": FILTER_KEY, "values": FILTER_OPERATIONS}],
        },
        "retryPolicy": {
            "maxDeliveryAttempts": settings.max_delivery_attempts.clamp(1, 30),
            "eventTimeToLiveInMinutes": settings.event_ttl_minutes.clamp(1, 1440),
        },
    });
    if !settings.dead_letter_storage_account_id.trim().is_empty() {
        properties["deadLetterWithResourceIdentity"] = json!({
            "identity": {"type": "SystemAssigned"},
            "deadLetterDestination": {
                "endpointType": "StorageBlob",
                "properties": {
                    "resourceId": settings.dead_letter_storage_account_id.trim(),
                    "blobContainerName": settings.dead_letter_container,
                },
            },
        });
    }
    json!({ "properties": properties })
}

/// Creates what `found` lacks (a topic, our event subscription), then checks again.
/// Needs `create_missing` and a `function_id`; otherwise returns `found` unchanged.
pub async fn create_missing(arm: &ArmClient, settings: &CoverageSettings, found: Coverage) -> Coverage {
    if found.covered() || !settings.create_missing || settings.function_id.trim().is_empty() {
        return found;
    }
    let sub = found.subscription.clone();
    let mut created = Vec::new();
    let mut follow_up = Vec::new();
    let topic_id = match &found.topic {
        Some(t) => t.clone(),
        None => {
            let id = format!(
                "/subscriptions/{sub}/resourceGroups/{}/providers/Microsoft.EventGrid/systemTopics/{}",
                settings.resource_group, settings.topic_name
            );
            let body = json!({
                "location": "global",
                "identity": {"type": "SystemAssigned"},
                "properties": {"source": format!("/subscriptions/{sub}"), "topicType": TOPIC_TYPE},
            });
            let topic = match arm.send_and_wait(ArmRequest::new(Method::Put, &id, EVENT_GRID_API).body(body)).await {
                Ok(t) => t,
                Err(e) => return failed(found, &id, &e),
            };
            let storage = settings.dead_letter_storage_account_id.trim();
            if !storage.is_empty() {
                // Infra grants each deployed topic's identity the dead-letter container; a
                // topic made here needs the same grant, which needs a role-assignment right
                // the app does not have.
                let principal = str_at(&topic.body, "/identity/principalId");
                follow_up.push(format!(
                    "az role assignment create --assignee {principal} --role \"Storage Blob Data Contributor\" \
                     --scope {storage}/blobServices/default/containers/{} (the new topic's identity writes dead \
                     letters there)",
                    settings.dead_letter_container
                ));
            }
            created.push(id.clone());
            id
        }
    };
    let sub_id = format!("{topic_id}/eventSubscriptions/{}", settings.event_subscription_name);
    // Only our own name is written: an event subscription someone else made (even a wrong
    // one to our function) stays as it is, and ours is added beside it.
    let req = ArmRequest::new(Method::Put, &sub_id, EVENT_GRID_API).body(event_subscription_body(settings));
    if let Err(e) = arm.send_and_wait(req).await {
        let mut c = failed(found, &sub_id, &e);
        c.created = created;
        c.follow_up = follow_up;
        return c;
    }
    created.push(sub_id);
    let mut again = check(arm, settings, &sub).await;
    again.created = created;
    again.follow_up = follow_up;
    again
}

fn failed(mut found: Coverage, id: &str, e: &ArmError) -> Coverage {
    found.problems.push(format!("could not create {id}: {}", brief(e)));
    found.fix = Some(match e.status() {
        Some(403) => format!(
            "grant the identity Microsoft.EventGrid/systemTopics/write and \
             Microsoft.EventGrid/systemTopics/eventSubscriptions/write in /subscriptions/{} \
             (createMissingEventSubscriptions=true in infra)",
            found.subscription
        ),
        Some(404) => format!(
            "create the resource group: az group create --subscription {} --name <coverage.resource_group> \
             --location <region>",
            found.subscription
        ),
        _ => "see the error; the next sweep tries again".into(),
    });
    found
}

/// The audit event for a subscription the sweep found uncovered (or covered by creating).
pub fn audit_events(c: &Coverage) -> Vec<crate::effects::audit::AuditEvent> {
    use crate::effects::audit::{AuditEvent, EventType};
    let subject = format!("/subscriptions/{}", c.subscription);
    let mut out = Vec::new();
    if !c.created.is_empty() {
        out.push(AuditEvent {
            kind: EventType::CoverageCreated.into(),
            subject: subject.clone(),
            data: json!({"subscription": c.subscription, "created": c.created, "follow_up": c.follow_up}),
        });
    }
    if !c.covered() {
        out.push(AuditEvent {
            kind: EventType::CoverageGap.into(),
            subject,
            data: json!({"subscription": c.subscription, "problems": c.problems, "fix": c.fix}),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CoverageSettings {
        CoverageSettings {
            function_id:
                "/subscriptions/a/resourceGroups/r/providers/Microsoft.Web/sites/f/functions/PrivateEndpointEvents"
                    .into(),
            ..CoverageSettings::default()
        }
    }

    #[test]
    fn infras_shape_is_accepted_and_a_narrower_filter_is_named() {
        let s = settings();
        let mut body = event_subscription_body(&s);
        assert_eq!(judge(&body, &s), Some(vec![]));
        body["properties"]["filter"]["advancedFilters"][0]["values"] =
            json!(["Microsoft.Network/privateEndpoints/write"]);
        let wrong = judge(&body, &s).unwrap();
        assert_eq!(wrong.len(), 1, "{wrong:?}");
        assert!(wrong[0].contains("privateEndpoints/delete"));
        body["properties"]["destination"]["properties"]["resourceId"] = json!("/other/functions/X");
        assert_eq!(judge(&body, &s), None);
    }
}
