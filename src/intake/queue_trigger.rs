//! Decoding the Functions host's `serviceBusTrigger` invocation (`handlers/WorkQueue`,
//! binding `message`) into a [`Delivery`], and turning what the runtime decided into the
//! host's answer. What the outcome of a delivery is, and why every outcome of ours ends
//! in a 2xx, is the runtime's (`runtime/trigger.rs`).
//!
//! Decoding follows reference §1.2/§1.6: `Data.message` is the body as a JSON string
//! encoded once more (older hosts and test fixtures: once), or base64 with
//! `dataType: binary`; `Metadata` values are encoded per the host's rules (`"1"`,
//! `"\"id\""`). The host also copies the body's top-level properties into `Metadata`,
//! which is why our body is a single-key envelope and why no metadata key we read could
//! be one of its properties (`v`, `work`).

use std::future::Future;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::protocol::{InvocationRequest, InvocationResponse, decode_binary, decode_value, json_type_name};
use crate::model::ResourceId;
use crate::queue::servicebus::PROP_DEDUPE_KEY;
use crate::queue::{Delivery, TriggerQueue};
use crate::runtime::error_policy::RetryPolicy;
use crate::runtime::trigger::{Settled, settle_delivery};
use crate::runtime::worker::{Executed, Settlement};

/// The trigger's binding name in `handlers/WorkQueue/function.json`.
pub const MESSAGE_BINDING: &str = "message";

/// A decoded invocation: the delivery, plus why it cannot be processed (if so).
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerMessage {
    pub delivery: Delivery,
    /// `Some(reason)`: the body could not be decoded; `delivery.body` then holds the raw
    /// text so the parked copy shows what arrived.
    pub unreadable: Option<String>,
}

/// The answer for the host: HTTP status, body, and what happened.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerAnswer {
    pub status: u16,
    pub response: InvocationResponse,
    pub settlement: Settlement,
}

/// Decodes the Service Bus trigger's `Data`/`Metadata` into a [`Delivery`]. Never fails:
/// anything wrong with the message is reported in [`TriggerMessage::unreadable`].
pub fn parse_message(req: &InvocationRequest, binding: &str) -> TriggerMessage {
    let meta_str = |k: &str| req.metadata_str(k).filter(|s| !s.is_empty());
    let message_id = meta_str("MessageId").unwrap_or_else(|| "unknown-message-id".to_owned());
    let delivery_count =
        req.metadata_u64("DeliveryCount").and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0).unwrap_or(1);
    let enqueued_at = meta_str("EnqueuedTimeUtc").and_then(|s| parse_host_time(&s)).unwrap_or_else(SystemTime::now);
    let dedupe_key = application_property(req, PROP_DEDUPE_KEY).unwrap_or_else(|| message_id.clone());
    let (body, unreadable) = match req.data.iter().find(|(k, _)| k.eq_ignore_ascii_case(binding)).map(|(_, v)| v) {
        None => {
            (Value::Null, Some(format!("invocation has no Data.{binding}; is the trigger binding named {binding}?")))
        }
        Some(raw) => decode_body(raw),
    };
    TriggerMessage {
        delivery: Delivery {
            message_id,
            lock_token: meta_str("LockToken").unwrap_or_default(),
            dedupe_key,
            correlation_id: meta_str("CorrelationId").unwrap_or_default(),
            body,
            delivery_count,
            enqueued_at,
        },
        unreadable,
    }
}

/// The body: a string holding JSON (encoded once or twice), or base64 of JSON bytes.
fn decode_body(raw: &Value) -> (Value, Option<String>) {
    match raw {
        Value::Object(_) => (raw.clone(), None),
        Value::String(s) => {
            let decoded = decode_value(raw);
            if decoded.is_object() || decoded.is_array() {
                return (decoded, None);
            }
            // Not JSON text: maybe `dataType: binary` (base64 of the JSON bytes).
            let trimmed = s.trim();
            if let Some(bytes) = decode_binary(raw).filter(|_| !trimmed.is_empty()) {
                return match serde_json::from_slice::<Value>(&bytes) {
                    Ok(v @ (Value::Object(_) | Value::Array(_))) => (v, None),
                    _ => (
                        Value::String(String::from_utf8_lossy(&bytes).chars().take(4096).collect()),
                        Some("message body (base64) does not hold a JSON object".to_owned()),
                    ),
                };
            }
            let text = match &decoded {
                Value::String(t) => t.clone(),
                other => other.to_string(),
            };
            (
                Value::String(text.chars().take(4096).collect()),
                Some("message body is not JSON (nor base64 of JSON)".to_owned()),
            )
        }
        other => (other.clone(), Some(format!("message body is {}, expected a JSON object", json_type_name(other)))),
    }
}

/// `UserProperties`/`ApplicationProperties.{name}` (the same dictionary).
fn application_property(req: &InvocationRequest, name: &str) -> Option<String> {
    ["ApplicationProperties", "UserProperties"].iter().find_map(|k| match req.metadata_value(k)? {
        Value::Object(m) => {
            m.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| match decode_value(v) {
                Value::String(s) if !s.is_empty() => Some(s),
                _ => None,
            })
        }
        _ => None,
    })
}

/// `2023-10-12T20:13:49` (UTC, no zone) or with an offset.
fn parse_host_time(s: &str) -> Option<SystemTime> {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(s, &Rfc3339)
        .or_else(|_| time::OffsetDateTime::parse(&format!("{s}Z"), &Rfc3339))
        .ok()?;
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Handles one `POST /WorkQueue` invocation: decode, let the runtime run `handle` on a
/// readable work item and settle it (`runtime::trigger`), and build the host's answer.
pub async fn handle_trigger<F, Fut, R>(
    body: &[u8],
    queue: &dyn TriggerQueue,
    policy: &RetryPolicy,
    handle: F,
) -> TriggerAnswer
where
    F: FnOnce(Delivery, ResourceId) -> Fut,
    Fut: Future<Output = R>,
    R: Into<Executed>,
{
    let req = match InvocationRequest::parse(body) {
        Ok(r) => r,
        Err(e) => {
            // Not a host invocation we understand: nothing to park. Non-2xx = abandon;
            // the broker dead-letters it after MaxDeliveryCount.
            tracing::error!(error = %e, "WorkQueue invocation rejected");
            return answer(400, Settlement::Abandoned { reason: e.to_string() });
        }
    };
    let TriggerMessage { delivery, unreadable } = parse_message(&req, MESSAGE_BINDING);
    let Settled { settlement, redeliver } = settle_delivery(delivery, unreadable, queue, policy, handle).await;
    answer(if redeliver { 500 } else { 200 }, settlement)
}

fn answer(status: u16, settlement: Settlement) -> TriggerAnswer {
    let line = match &settlement {
        Settlement::Completed => "work item completed".to_owned(),
        Settlement::Rescheduled { attempt, after } => format!("retry {attempt} scheduled in {}s", after.as_secs()),
        Settlement::DeadLettered { reason } => format!("dead-lettered: {reason}"),
        Settlement::Abandoned { reason } => format!("abandoned: {reason}"),
    };
    TriggerAnswer { status, response: InvocationResponse::new().with_log(line), settlement }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_times_parse_with_and_without_zone() {
        let want = SystemTime::UNIX_EPOCH + Duration::from_secs(1_697_141_629);
        assert_eq!(parse_host_time("2023-10-12T20:13:49"), Some(want));
        assert_eq!(parse_host_time("2023-10-12T20:13:49+00:00"), Some(want));
        assert_eq!(parse_host_time("yesterday"), None);
    }
}
