//! The consuming side on Azure: a `serviceBusTrigger` function (`handlers/WorkQueue`,
//! binding `message`) whose invocations the Functions host POSTs to us.
//!
//! The host settles the message itself (`host.json` `extensions.serviceBus`:
//! `autoCompleteMessages` is `true`, as it must be for a non-.NET worker, and
//! `maxAutoLockRenewalDuration` covers `functionTimeout`): it *completes* it when we
//! answer 2xx and *abandons* it otherwise, which makes it redeliverable at once with no delay, up to the
//! queue's `MaxDeliveryCount` (then the broker dead-letters it). Abandon is therefore
//! useless as a retry mechanism, so every outcome that is *ours* ends in a 2xx:
//! - done → 2xx (completed);
//! - transient failure → send a delayed copy (next attempt, backoff from the envelope's
//!   attempt, Retry-After honoured) → 2xx;
//! - permanent failure, unreadable message, retry window exhausted → park a copy with
//!   its reason on the dead-letter destination → 2xx.
//!
//! When a follow-up *send* fails (a retry or follow-up work could not be queued) we answer
//! 500: the host abandons, the message comes straight back, nothing is lost (and after
//! ten such failures the broker's own dead-letter queue holds it).
//!
//! A failed *park* is different and answers **2xx**: the work already ran and failed for
//! good, so a redelivery would only repeat its side effects (vendor and ARM writes) up to
//! `MaxDeliveryCount` times in a row, at once, and end in the broker's DLQ with the
//! reason lost. The work item is dropped instead, after an error log naming the message,
//! the endpoint's body and both reasons (stderr and the host's `Logs`), and the
//! settlement says so. At most one execution of the side effects per delivery; the sweep
//! re-plans the endpoint anyway.
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

use super::work;
use super::worker::{Decision, Executed, RetryPolicy, Settlement, decide};
use super::{Delivery, NewMessage, QueueError};
use crate::intake::protocol::{InvocationRequest, InvocationResponse, decode_binary, decode_value, json_type_name};
use crate::model::ResourceId;

/// The trigger's binding name in `handlers/WorkQueue/function.json`.
pub const MESSAGE_BINDING: &str = "message";

/// What the trigger path needs from a queue: sends only, never settling (the host settles).
#[async_trait::async_trait]
pub trait TriggerQueue: Send + Sync + std::fmt::Debug {
    /// Sends a new (possibly delayed) message.
    async fn schedule(&self, msg: NewMessage) -> Result<(), QueueError>;
    /// Sends a copy of `delivery` to the dead-letter destination with `reason`.
    async fn park(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError>;
}

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
    let dedupe_key =
        application_property(req, super::servicebus::PROP_DEDUPE_KEY).unwrap_or_else(|| message_id.clone());
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

/// Handles one `POST /WorkQueue` invocation: decode, run `handle` on a readable work
/// item, then schedule / park as the module docs say, and build the host's answer.
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
    if let Some(reason) = unreadable {
        return park(queue, &delivery, format!("unreadable message: {reason}")).await;
    }
    let (work, id) = match work::parse(&delivery.body) {
        Ok(w) => w,
        Err(e) => return park(queue, &delivery, format!("unreadable message: {e}")).await,
    };
    let executed: Executed = handle(delivery.clone(), id.clone()).await.into();
    for msg in executed.follow_ups {
        if let Err(e) = queue.schedule(msg).await {
            tracing::error!(endpoint = %id, error = %e, "could not queue follow-up work; letting the host redeliver");
            return answer(500, Settlement::Abandoned { reason: format!("could not queue follow-up work: {e}") });
        }
    }
    match decide(&work, &id, executed.outcome, policy) {
        Decision::Complete => answer(200, Settlement::Completed),
        Decision::DeadLetter(reason) => park(queue, &delivery, reason).await,
        Decision::Retry { msg, attempt, after } => match queue.schedule(msg).await {
            Ok(()) => answer(200, Settlement::Rescheduled { attempt, after }),
            Err(e) => {
                tracing::error!(endpoint = %id, error = %e, "could not schedule retry; letting the host redeliver");
                answer(500, Settlement::Abandoned { reason: format!("could not schedule retry: {e}") })
            }
        },
    }
}

async fn park(queue: &dyn TriggerQueue, delivery: &Delivery, reason: String) -> TriggerAnswer {
    tracing::error!(message_id = %delivery.message_id, %reason, "dead-lettering work item");
    match queue.park(delivery, &reason).await {
        Ok(()) => answer(200, Settlement::DeadLettered { reason }),
        Err(e) => {
            // Module docs: never 500 into a redelivery that repeats the side effects.
            let body = delivery.body.to_string();
            tracing::error!(
                message_id = %delivery.message_id,
                correlation_id = %delivery.correlation_id,
                %reason,
                error = %e,
                body = %body.chars().take(2000).collect::<String>(),
                "DEAD LETTER LOST: could not store the dead letter; completing the message anyway so its side effects do not run again"
            );
            eprintln!(
                "autopilot: DEAD LETTER LOST: message {} ({}): {reason}; storing it failed: {e}",
                delivery.message_id, delivery.correlation_id
            );
            answer(200, Settlement::DeadLettered { reason: format!("NOT STORED ({e}): {reason}") })
        }
    }
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
