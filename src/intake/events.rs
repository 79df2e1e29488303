//! Event Grid and CloudEvents 1.0 deliveries, reduced to "private endpoint X was written,
//! deleted or acted on".
//!
//! Events are hints, ARM is the truth: this module decides only *which* private endpoint to
//! look at again, never what its state is. The reconciler re-reads the PE from ARM. That is why
//! the classification trusts the event type and the operation name and nothing in `data` that
//! describes an outcome (`data.status` says `Succeeded` even in the official Failure examples).
//!
//! What arrives (reference `functions-eventgrid.md` §1.6 and §3, fixtures under
//! `fixtures/eventgrid/` and `fixtures/functions/eg-*.json`):
//! - one event object (the Functions host runs one invocation per event), Event Grid schema
//!   (`eventType`, `eventTime`) or CloudEvents 1.0 (`type`, `time`, `specversion` — one
//!   official example spells it `specVersion`, so any casing is accepted);
//! - an array of events (a webhook batch, at most 5,000);
//! - either of those as a string, possibly JSON-encoded twice (older hosts).
//!
//! Each event of a batch gets its own outcome, so one malformed event does not hide the others.
//! Every input is bounded (batch size, nesting depth, string lengths) and rejections carry only
//! sanitized, truncated excerpts of the input, because these strings end up in logs.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::intake::protocol::{MAX_BODY_BYTES, decode_value, json_type_name};
use crate::model::ResourceId;

/// Event Grid's own limit for one incoming batch.
pub const MAX_BATCH: usize = 5_000;
/// Longest `id`, `type`, `subject`, `time`, `operationName`, `resourceUri` or `correlationId`
/// we accept. Real values are far shorter (ARM ids stay under 1 KiB).
pub const MAX_FIELD_LEN: usize = 4 * 1024;
/// Deepest nesting accepted inside one event. Resource events nest about 4 levels
/// (`data.authorization.evidence.role`).
pub const MAX_EVENT_DEPTH: usize = 32;
/// Longest excerpt of hostile input quoted in a rejection reason.
const MAX_EXCERPT: usize = 120;

const WRITE_SUCCESS: &str = "Microsoft.Resources.ResourceWriteSuccess";
const DELETE_SUCCESS: &str = "Microsoft.Resources.ResourceDeleteSuccess";
const ACTION_SUCCESS: &str = "Microsoft.Resources.ResourceActionSuccess";
const PE_OPERATION_PREFIX: &str = "microsoft.network/privateendpoints/";

/// Which envelope an event used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Schema {
    EventGrid,
    CloudEvents,
}

/// What happened to the private endpoint, from the event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeEventKind {
    Write,
    Delete,
    Action,
}

/// A resource event about one private endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeEvent {
    /// The event id (Event Grid `id` / CloudEvents `id`); redeliveries repeat it.
    pub event_id: String,
    pub kind: PeEventKind,
    /// The private endpoint itself, also when the operation was on one of its children.
    pub endpoint: ResourceId,
    /// `data.operationName` as sent, e.g. `Microsoft.Network/privateEndpoints/write`.
    pub operation_name: String,
    /// `eventTime` / `time` as sent. Hosts may re-format it; compare semantically.
    pub event_time: Option<String>,
    pub schema: Schema,
    /// `data.correlationId`: links the duplicate events ARM emits for one request.
    pub correlation_id: Option<String>,
}

/// The verdict on a well-formed event.
#[derive(Debug, Clone, PartialEq)]
pub enum Classified {
    PrivateEndpoint(PeEvent),
    /// Valid but not ours. `event_type` and `subject` are sanitized excerpts, for logs.
    Ignored {
        event_type: String,
        subject: String,
        reason: &'static str,
    },
}

/// Why an event (or a whole delivery) could not be used. `reason` is safe to log: quoted input
/// is truncated and stripped of control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub event_id: Option<String>,
    pub reason: String,
}

impl Rejection {
    fn new(event_id: Option<&str>, reason: impl Into<String>) -> Self {
        Self { event_id: event_id.map(excerpt), reason: reason.into() }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.event_id {
            Some(id) => write!(f, "event {id}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for Rejection {}

pub type EventOutcome = Result<Classified, Rejection>;

/// Parses a delivery: one event, a batch, or a string holding either.
///
/// `Err` only when the delivery as a whole is unusable (not JSON, wrong top-level type, batch
/// too large); otherwise one outcome per event, in order.
pub fn parse_delivery(value: &Value) -> Result<Vec<EventOutcome>, Rejection> {
    match value {
        Value::String(s) => {
            if s.len() > MAX_BODY_BYTES {
                return Err(Rejection::new(
                    None,
                    format!("delivery string is {} bytes, over the {MAX_BODY_BYTES}-byte limit", s.len()),
                ));
            }
            match decode_value(value) {
                decoded @ (Value::Object(_) | Value::Array(_)) => parse_delivery(&decoded),
                _ => Err(Rejection::new(
                    None,
                    format!(
                        "delivery is a string that does not hold a JSON event or array of events: \"{}\"",
                        excerpt(s)
                    ),
                )),
            }
        }
        Value::Object(_) => Ok(vec![parse_event(value)]),
        Value::Array(items) => {
            if items.len() > MAX_BATCH {
                return Err(Rejection::new(
                    None,
                    format!("batch has {} events; Event Grid sends at most {MAX_BATCH}", items.len()),
                ));
            }
            Ok(items.iter().map(parse_batch_element).collect())
        }
        other => Err(Rejection::new(
            None,
            format!(
                "delivery must be an event object, an array of events, or a string holding one; got {}",
                json_type_name(other)
            ),
        )),
    }
}

/// A batch element may itself be an encoded string, but never another batch.
fn parse_batch_element(item: &Value) -> EventOutcome {
    match item {
        Value::String(s) if s.len() <= MAX_BODY_BYTES => match decode_value(item) {
            decoded @ Value::Object(_) => parse_event(&decoded),
            _ => Err(Rejection::new(None, "batch element is a string that does not hold a JSON event object")),
        },
        _ => parse_event(item),
    }
}

/// Parses and classifies one event object.
pub fn parse_event(value: &Value) -> EventOutcome {
    let Value::Object(event) = value else {
        return Err(Rejection::new(None, format!("event must be a JSON object, got {}", json_type_name(value))));
    };
    // Read the id first so that every later rejection can name the event.
    let raw_id = event_field(event, "id");
    let id_hint = raw_id.and_then(Value::as_str);
    if nesting_exceeds(value, MAX_EVENT_DEPTH) {
        return Err(Rejection::new(id_hint, format!("event nests deeper than {MAX_EVENT_DEPTH} levels")));
    }
    let id = match raw_id {
        None | Some(Value::Null) => return Err(Rejection::new(None, "event has no \"id\"")),
        Some(Value::String(s)) if s.trim().is_empty() => return Err(Rejection::new(None, "event \"id\" is empty")),
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(Rejection::new(None, format!("event \"id\" must be a string, got {}", json_type_name(other))));
        }
    };
    let rej = |reason: String| Rejection::new(Some(id), reason);
    if id.len() > MAX_FIELD_LEN {
        return Err(rej(format!("event \"id\" is longer than {MAX_FIELD_LEN} bytes")));
    }
    if id.chars().any(char::is_control) {
        return Err(rej("event \"id\" contains control characters".into()));
    }

    // CloudEvents carries `specversion` (one official example: `specVersion`); Event Grid never does.
    let schema = match event_field(event, "specversion") {
        None => Schema::EventGrid,
        Some(Value::String(v)) if v == "1.0" => Schema::CloudEvents,
        Some(Value::String(v)) => {
            return Err(rej(format!("unsupported CloudEvents specversion \"{}\"; expected \"1.0\"", excerpt(v))));
        }
        Some(other) => {
            return Err(rej(format!("\"specversion\" must be the string \"1.0\", got {}", json_type_name(other))));
        }
    };
    let (type_key, time_key) = match schema {
        Schema::EventGrid => ("eventType", "eventTime"),
        Schema::CloudEvents => ("type", "time"),
    };
    let event_type = match string_field(event, type_key).map_err(&rej)? {
        Some(t) if !t.trim().is_empty() => t,
        Some(_) => return Err(rej(format!("event \"{type_key}\" is empty"))),
        None if schema == Schema::EventGrid && event_field(event, "type").is_some() => {
            return Err(rej(
                "event has \"type\" but no \"eventType\" and no \"specversion\": neither Event Grid nor CloudEvents 1.0"
                    .into(),
            ));
        }
        None => return Err(rej(format!("event has no \"{type_key}\""))),
    };
    let subject = string_field(event, "subject").map_err(&rej)?;
    let event_time = string_field(event, time_key).map_err(&rej)?;

    let kind = if event_type.eq_ignore_ascii_case(WRITE_SUCCESS) {
        PeEventKind::Write
    } else if event_type.eq_ignore_ascii_case(DELETE_SUCCESS) {
        PeEventKind::Delete
    } else if event_type.eq_ignore_ascii_case(ACTION_SUCCESS) {
        PeEventKind::Action
    } else {
        return Ok(ignored(event_type, subject, reason_for_other_type(event_type)));
    };

    // From here on this is a resource event: its `data` is what tells us the resource.
    let data = match event_field(event, "data") {
        None | Some(Value::Null) => return Err(rej(format!("resource event {} has no \"data\"", excerpt(event_type)))),
        Some(Value::Object(m)) => std::borrow::Cow::Borrowed(m),
        // Some senders (and older hosts) encode `data` as JSON text.
        Some(v @ Value::String(_)) => match decode_value(v) {
            decoded @ Value::Object(_) if nesting_exceeds(&decoded, MAX_EVENT_DEPTH) => {
                return Err(rej(format!("event \"data\" nests deeper than {MAX_EVENT_DEPTH} levels")));
            }
            Value::Object(m) => std::borrow::Cow::Owned(m),
            _ => return Err(rej("event \"data\" must be a JSON object, got a string that does not hold one".into())),
        },
        Some(other) => {
            return Err(rej(format!("event \"data\" must be a JSON object, got {}", json_type_name(other))));
        }
    };
    let operation_name = match string_field(&data, "operationName").map_err(&rej)? {
        Some(op) if !op.trim().is_empty() => op,
        _ => return Err(rej("resource event has no \"data.operationName\"".into())),
    };
    let correlation_id = string_field(&data, "correlationId").map_err(&rej)?;
    let resource_uri = string_field(&data, "resourceUri").map_err(&rej)?;

    if !operation_name.to_ascii_lowercase().starts_with(PE_OPERATION_PREFIX) {
        return Ok(ignored(event_type, subject, "not a private endpoint operation"));
    }

    let Some(target) = resource_uri.filter(|u| !u.is_empty()).or(subject.filter(|s| !s.is_empty())) else {
        return Err(rej(format!(
            "private endpoint operation {} has neither \"data.resourceUri\" nor \"subject\"",
            excerpt(operation_name)
        )));
    };
    let target_id = ResourceId::parse(target)
        .map_err(|e| rej(format!("\"data.resourceUri\" is not an ARM resource id: {}", excerpt(&e.to_string()))))?;

    let (endpoint, kind) = if target_id.is_private_endpoint() {
        (target_id, kind)
    } else if let Some(parent) = private_endpoint_parent(&target_id) {
        // A child such as privateDnsZoneGroups changes which DNS records belong to the PE,
        // whatever happened to the child itself: re-reconcile the parent.
        (parent, PeEventKind::Write)
    } else {
        return Err(rej(format!(
            "operation {} is a private endpoint operation but the resource {} is not a private endpoint",
            excerpt(operation_name),
            excerpt(target_id.as_str())
        )));
    };

    Ok(Classified::PrivateEndpoint(PeEvent {
        event_id: id.to_string(),
        kind,
        endpoint,
        operation_name: operation_name.to_string(),
        event_time: event_time.map(str::to_string),
        schema,
        correlation_id: correlation_id.map(str::to_string),
    }))
}

/// `/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/privateEndpoints/pe/x/y` ->
/// the PE id. `None` for anything that is not below a private endpoint.
fn private_endpoint_parent(id: &ResourceId) -> Option<ResourceId> {
    let segs: Vec<&str> = id.as_str().split('/').collect();
    let below_pe = segs.len() > 9
        && segs[6].eq_ignore_ascii_case("Microsoft.Network")
        && segs[7].eq_ignore_ascii_case("privateEndpoints");
    if !below_pe {
        return None;
    }
    ResourceId::parse_private_endpoint(&segs[..9].join("/")).ok()
}

fn reason_for_other_type(event_type: &str) -> &'static str {
    let lower = event_type.to_ascii_lowercase();
    if lower == "microsoft.eventgrid.subscriptionvalidationevent" {
        "subscription validation is answered by the Functions host, not the handler"
    } else if lower.starts_with("microsoft.resources.resource")
        && (lower.ends_with("failure") || lower.ends_with("cancel"))
    {
        "failed or cancelled operation: the resource did not change"
    } else {
        "not a resource write/delete/action success event"
    }
}

fn ignored(event_type: &str, subject: Option<&str>, reason: &'static str) -> Classified {
    Classified::Ignored { event_type: excerpt(event_type), subject: excerpt(subject.unwrap_or_default()), reason }
}

/// Envelope and `data` keys are looked up exactly first, then case-insensitively: CloudEvents
/// attribute names are lower-case by spec, yet the official delete example says `specVersion`.
fn event_field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    crate::intake::protocol::get_ci(map, key)
}

/// An optional string field: absent or null is `None`; any other type, or an over-long value,
/// is a rejection reason.
fn string_field<'a>(map: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match event_field(map, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_FIELD_LEN => {
            Err(format!("\"{key}\" is {} bytes, longer than the {MAX_FIELD_LEN}-byte limit", s.len()))
        }
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(format!("\"{key}\" must be a string, got {}", json_type_name(other))),
    }
}

/// True when `value` nests more than `max` arrays/objects deep. Iterative, so hostile input
/// cannot exhaust the stack; visits each node at most once.
fn nesting_exceeds(value: &Value, max: usize) -> bool {
    let mut stack: Vec<(&Value, usize)> = vec![(value, 1)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        if depth > max {
            return true;
        }
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    false
}

/// A log-safe excerpt: control characters removed, at most [`MAX_EXCERPT`] characters.
pub fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(MAX_EXCERPT).collect();
    if s.chars().filter(|c| !c.is_control()).nth(MAX_EXCERPT).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PE: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Network/privateEndpoints/pe1";

    fn event(op: &str, uri: &str, ty: &str) -> Value {
        json!({"id": "e1", "subject": uri, "eventType": ty, "eventTime": "2026-01-01T00:00:00Z",
               "data": {"operationName": op, "resourceUri": uri, "correlationId": "c1"}})
    }

    #[test]
    fn pe_write_and_child() {
        let out = parse_event(&event("Microsoft.Network/privateEndpoints/write", PE, WRITE_SUCCESS)).unwrap();
        let Classified::PrivateEndpoint(pe) = out else { panic!("expected PE") };
        assert_eq!(pe.kind, PeEventKind::Write);
        assert_eq!(pe.endpoint.name(), "pe1");
        assert_eq!(pe.correlation_id.as_deref(), Some("c1"));

        let child = format!("{PE}/privateDnsZoneGroups/default");
        let out = parse_event(&event(
            "Microsoft.Network/privateEndpoints/privateDnsZoneGroups/delete",
            &child,
            DELETE_SUCCESS,
        ))
        .unwrap();
        let Classified::PrivateEndpoint(pe) = out else { panic!("expected PE") };
        assert_eq!(pe.kind, PeEventKind::Write);
        assert_eq!(pe.endpoint.as_str(), PE);
    }

    #[test]
    fn depth_and_excerpt() {
        let mut v = json!(1);
        for _ in 0..40 {
            v = json!([v]);
        }
        assert!(nesting_exceeds(&v, MAX_EVENT_DEPTH));
        assert!(!nesting_exceeds(&json!({"a": {"b": [1]}}), 3));
        assert!(nesting_exceeds(&json!({"a": {"b": [1]}}), 2));
        assert_eq!(excerpt("a\nb\u{7}c"), "abc");
        assert_eq!(excerpt(&"x".repeat(500)).chars().count(), MAX_EXCERPT + 1);
    }
}
