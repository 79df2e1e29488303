//! An Azure Functions host emulator for the custom handler.
//!
//! No Functions host runs here, so the demo and the tests drive the handler through this
//! emulator instead. It reproduces what the real host does on the wire, quirks included
//! (reference `functions-eventgrid.md` §1 and the checklist in §5), because those quirks are
//! exactly what a handler gets wrong:
//! - `POST /{FunctionName}` with `{"Data":…,"Metadata":…}`, string values JSON-encoded twice,
//!   integers as strings, `DateTime` without `Z`, `Metadata.sys` always present;
//! - a non-2xx answer is a failure and its body (and `Logs`) is discarded; a 2xx answer must be
//!   JSON with a JSON content type; a 2xx with an empty body makes the real host hang until
//!   `functionTimeout`, which we report as a failure instead of hanging;
//! - Event Grid: one invocation per event, concurrently; 202 only if all succeeded, else 500
//!   (and Event Grid redelivers the whole batch);
//! - Service Bus: the body double-encoded (or base64 with `dataType: binary`), broker properties
//!   as metadata, and the JSON body's top-level properties merged into `Metadata`, overwriting
//!   same-named keys; success completes the message, anything else abandons it;
//! - process start: a free port in `FUNCTIONS_CUSTOMHANDLER_PORT` (and the legacy names),
//!   readiness = any HTTP answer to `GET /`, polled every 25 ms for up to 30 s.
//!
//! Differences from the real host (documented, not hidden): output bindings are returned to the
//! caller rather than bound, and a timeout does not restart the handler process. Like the real
//! host, invocation bodies are sent with `Transfer-Encoding: chunked` and no `Content-Length`, so
//! a handler that insists on a length is caught here rather than in Azure.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use private_link_autopilot::intake::protocol::{decode_value, get_ci};

mod encode;
mod process;

// Value encoding and process spawning live in their own files; these re-exports keep
// `crate::host_emulator::{HostValue, new_guid, spawn_handler, ...}` working.
pub use encode::{HostValue, encode_json, encode_value, new_guid};
use encode::{format_datetime_offset, format_utc_now};
pub use process::{
    READINESS_BUDGET, READINESS_POLL_INTERVAL, SpawnedHandler, spawn_handler, spawn_handler_with_budget,
};

/// Host version we claim in headers (release 4.1037.0 is the source the reference was read from).
pub const HOST_VERSION: &str = "4.1037.0.0";
/// Consumption-plan default `functionTimeout`.
pub const DEFAULT_FUNCTION_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// What the handler answered for one invocation, as the host understood it.
#[derive(Debug, Clone, PartialEq)]
pub enum InvokeOutcome {
    Succeeded(InvocationResult),
    /// The reason, worded like the host's exception where there is one.
    Failed(String),
}

impl InvokeOutcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Succeeded(_))
    }
    pub fn result(&self) -> Option<&InvocationResult> {
        match self {
            Self::Succeeded(r) => Some(r),
            Self::Failed(_) => None,
        }
    }
}

/// A successful answer (`HttpScriptInvocationResult`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InvocationResult {
    pub outputs: Map<String, Value>,
    pub logs: Vec<String>,
    pub return_value: Value,
}

/// Binding names of the trigger in each function.json (`name`). Defaults match the reference's
/// function.json files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bindings {
    pub event_grid: String,
    pub service_bus: String,
    pub timer: String,
    pub http: String,
}

impl Default for Bindings {
    fn default() -> Self {
        Self { event_grid: "event".into(), service_bus: "msg".into(), timer: "timer".into(), http: "req".into() }
    }
}

/// Result of delivering one Event Grid batch to the `eventGridTrigger` extension.
#[derive(Debug, Clone, PartialEq)]
pub struct EventGridDelivery {
    /// 202 when every invocation succeeded, else 500 (Event Grid then retries the whole batch).
    pub status: u16,
    /// One outcome per event, in the order given.
    pub outcomes: Vec<InvokeOutcome>,
}

/// Broker properties of a Service Bus message, as the trigger sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceBusProps {
    pub message_id: String,
    /// Starts at 1 for the first delivery.
    pub delivery_count: u32,
    pub correlation_id: Option<String>,
    pub enqueued_time: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub sequence_number: i64,
    pub lock_token: String,
    pub content_type: Option<String>,
    pub subject: Option<String>,
    pub session_id: Option<String>,
    pub application_properties: Map<String, Value>,
    /// Used for the `Client` metadata object.
    pub namespace: String,
}

impl Default for ServiceBusProps {
    fn default() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            message_id: new_guid().replace('-', ""),
            delivery_count: 1,
            correlation_id: None,
            enqueued_time: now,
            // Service Bus default message TTL is 14 days.
            expires_at: now + time::Duration::days(14),
            sequence_number: 1,
            lock_token: new_guid(),
            content_type: None,
            subject: None,
            session_id: None,
            application_properties: Map::new(),
            namespace: "sandbox.servicebus.windows.net".into(),
        }
    }
}

/// What the Service Bus trigger does with the message after the invocation (`autoComplete`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SbSettlement {
    Complete,
    /// Abandoned: immediately redeliverable with `DeliveryCount + 1`, no backoff.
    Abandon(String),
}

/// What an HTTP-trigger client would receive.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResult {
    pub status: u16,
    /// `Outputs.res.body`, parsed as JSON when it is JSON text.
    pub body: Value,
    pub headers: Map<String, Value>,
    /// Set when the invocation failed (the client then sees 500 and no body).
    pub failure: Option<String>,
}

/// The emulated host, bound to one running handler.
#[derive(Debug, Clone)]
pub struct HostEmulator {
    base_url: String,
    client: Result<reqwest::Client, String>,
    function_timeout: Duration,
    bindings: Bindings,
}

impl HostEmulator {
    /// `base_url` is the handler's `http://127.0.0.1:PORT`.
    pub fn new(base_url: &str) -> Self {
        let client = reqwest::Client::builder()
            // The handler is on loopback; a proxy from the environment must never see this traffic.
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"));
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            client,
            function_timeout: DEFAULT_FUNCTION_TIMEOUT,
            bindings: Bindings::default(),
        }
    }

    /// Sets `functionTimeout`: an invocation still running after it fails.
    pub fn with_function_timeout(mut self, timeout: Duration) -> Self {
        self.function_timeout = timeout;
        self
    }

    pub fn with_bindings(mut self, bindings: Bindings) -> Self {
        self.bindings = bindings;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// One invocation. `data`/`metadata` must already be host-encoded (see [`encode_value`]);
    /// `Metadata.sys` is always set here, and keys ending in `trigger` are dropped like the host
    /// does. `Err` only for misuse (bad function name, no HTTP client); everything the handler
    /// does wrong is an `Ok(InvokeOutcome::Failed)`.
    pub async fn invoke(
        &self,
        function: &str,
        data: Map<String, Value>,
        mut metadata: Map<String, Value>,
    ) -> Result<InvokeOutcome, String> {
        validate_function_name(function)?;
        let client = self.client.as_ref().map_err(Clone::clone)?;
        metadata.retain(|k, v| !v.is_null() && !k.to_ascii_lowercase().ends_with("trigger"));
        metadata.insert("sys".into(), sys_metadata(function));
        let body = json!({ "Data": data, "Metadata": metadata });
        let bytes = serde_json::to_vec(&body).map_err(|e| format!("cannot serialize the invocation: {e}"))?;
        let response = client
            .post(format!("{}/{function}", self.base_url))
            .header("X-Azure-Functions-HostVersion", HOST_VERSION)
            .header("X-Azure-Functions-InvocationId", new_guid())
            .header("User-Agent", format!("Azure-Functions-Host/{HOST_VERSION}"))
            .header("Content-Type", "application/json; charset=utf-8")
            .header("traceparent", format!("00-{:032x}-{:016x}-00", fastrand::u128(1..), fastrand::u64(1..)))
            .body(reqwest::Body::wrap(ChunkedBody(Some(bytes.into()))))
            .timeout(self.function_timeout)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return Ok(InvokeOutcome::Failed(self.transport_failure(&e))),
        };
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            // Like `EnsureSuccessStatusCode()`: the body (and its Logs) is never read.
            return Ok(InvokeOutcome::Failed(format!("Response status code does not indicate success: {status}")));
        }
        let content_type =
            response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Ok(InvokeOutcome::Failed(self.transport_failure(&e))),
        };
        Ok(interpret_response(status, content_type.as_deref(), &body))
    }

    fn transport_failure(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            format!(
                "no answer within functionTimeout ({:?}); the real host would now restart the handler process",
                self.function_timeout
            )
        } else {
            format!("request to the handler failed: {e}")
        }
    }

    /// Delivers a batch the way the `eventGridTrigger` extension does: one invocation per event,
    /// all at once; `Data.<binding>` = the event object, `Metadata.data` = its `data`.
    pub async fn deliver_event_grid(&self, function: &str, events: Vec<Value>) -> EventGridDelivery {
        let handles: Vec<_> = events
            .into_iter()
            .map(|event| {
                let host = self.clone();
                let function = function.to_string();
                tokio::spawn(async move {
                    let mut metadata = Map::new();
                    if let Some(d) = event.get("data").filter(|d| !d.is_null()) {
                        metadata.insert("data".into(), encode_json(d.clone()));
                    }
                    let mut data = Map::new();
                    data.insert(host.bindings.event_grid.clone(), encode_json(event));
                    host.invoke(&function, data, metadata).await.unwrap_or_else(InvokeOutcome::Failed)
                })
            })
            .collect();
        let mut outcomes = Vec::with_capacity(handles.len());
        for handle in handles {
            outcomes
                .push(handle.await.unwrap_or_else(|e| InvokeOutcome::Failed(format!("invocation task failed: {e}"))));
        }
        let status = if outcomes.iter().all(InvokeOutcome::is_success) { 202 } else { 500 };
        EventGridDelivery { status, outcomes }
    }

    /// The `/runtime/webhooks/eventgrid?functionName=X` endpoint of the host, for a fake Event
    /// Grid: validation handshake, notifications, unsubscribe. Returns status and JSON body.
    pub async fn eventgrid_webhook(&self, function: &str, aeg_event_type: Option<&str>, body: &[u8]) -> (u16, Value) {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        match aeg_event_type.map(str::to_ascii_lowercase).as_deref() {
            Some("subscriptionvalidation") => {
                let first = match parsed {
                    Some(Value::Array(mut a)) if !a.is_empty() => a.swap_remove(0),
                    Some(v @ Value::Object(_)) => v,
                    _ => return (400, json!({"error": "validation body must hold one event"})),
                };
                let data = first.get("data").map(decode_value).unwrap_or(Value::Null);
                match data.get("validationCode").and_then(Value::as_str) {
                    Some(code) => (200, json!({ "validationResponse": code })),
                    None => (400, json!({"error": "validation event has no data.validationCode"})),
                }
            }
            Some("notification") => {
                let events = match parsed {
                    Some(Value::Array(a)) => a,
                    Some(v @ Value::Object(_)) => vec![v],
                    _ => return (400, json!({"error": "notification body must be an event or an array of events"})),
                };
                let delivery = self.deliver_event_grid(function, events).await;
                let first_error = delivery.outcomes.iter().find_map(|o| match o {
                    InvokeOutcome::Failed(e) => Some(e.clone()),
                    InvokeOutcome::Succeeded(_) => None,
                });
                (delivery.status, first_error.map_or(Value::Null, |e| json!({ "error": e })))
            }
            Some("unsubscribe") => (202, Value::Null),
            _ => (400, json!({"error": "missing or unknown aeg-event-type header"})),
        }
    }

    /// Delivers one Service Bus message (single dispatch, `autoComplete`).
    pub async fn deliver_service_bus(
        &self,
        function: &str,
        body: &str,
        props: ServiceBusProps,
        binary: bool,
    ) -> SbSettlement {
        let mut data = Map::new();
        let msg = if binary {
            encode_value(HostValue::Bytes(body.as_bytes().to_vec()))
        } else {
            encode_value(HostValue::String(body.to_string()))
        };
        data.insert(self.bindings.service_bus.clone(), msg);
        let mut metadata = service_bus_metadata(&props);
        if !binary {
            merge_body_properties(body, &mut metadata);
        }
        match self.invoke(function, data, metadata).await {
            Ok(InvokeOutcome::Succeeded(_)) => SbSettlement::Complete,
            Ok(InvokeOutcome::Failed(reason)) | Err(reason) => SbSettlement::Abandon(reason),
        }
    }

    /// One timer tick with the monitor's schedule status (`useMonitor: true`).
    pub async fn invoke_timer(&self, function: &str, is_past_due: bool) -> Result<InvokeOutcome, String> {
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| OffsetDateTime::now_utc());
        let timer = json!({
            "Schedule": { "AdjustForDST": true },
            "ScheduleStatus": {
                "Last": format_datetime_offset(now - time::Duration::minutes(15)),
                "Next": format_datetime_offset(now + time::Duration::minutes(15)),
                "LastUpdated": format_datetime_offset(now),
            },
            "IsPastDue": is_past_due,
        });
        let mut data = Map::new();
        data.insert(self.bindings.timer.clone(), timer);
        self.invoke(function, data, Map::new()).await
    }

    /// An HTTP-trigger call without request forwarding: `Data.req` shaped like the captured
    /// host request; the answer is read from `Outputs.res`.
    pub async fn invoke_http(
        &self,
        function: &str,
        method: &str,
        path_and_query: &str,
        body: Option<Value>,
    ) -> Result<HttpResult, String> {
        let path =
            if path_and_query.starts_with('/') { path_and_query.to_string() } else { format!("/{path_and_query}") };
        let url_text = format!("http://localhost:7071{path}");
        let url = url::Url::parse(&url_text).map_err(|e| format!("invalid path and query {path_and_query:?}: {e}"))?;
        let mut query = Map::new();
        for (k, v) in url.query_pairs() {
            // ASP.NET joins repeated parameters with commas.
            match query.get_mut(k.as_ref()) {
                Some(Value::String(existing)) => {
                    existing.push(',');
                    existing.push_str(&v);
                }
                _ => {
                    query.insert(k.into_owned(), Value::String(v.into_owned()));
                }
            }
        }
        let mut headers: Vec<(&str, String)> = vec![
            ("Accept", "application/json".into()),
            ("Host", "localhost:7071".into()),
            ("User-Agent", "host-emulator".into()),
        ];
        if body.is_some() {
            headers.push(("Content-Type", "application/json".into()));
        }
        let mut req = Map::new();
        req.insert("Url".into(), Value::String(url_text));
        req.insert("Method".into(), Value::String(method.to_ascii_uppercase()));
        req.insert("Query".into(), Value::Object(query.clone()));
        req.insert("Headers".into(), headers.iter().map(|(k, v)| ((*k).to_string(), json!([v]))).collect());
        req.insert("Params".into(), json!({}));
        req.insert(
            "Identities".into(),
            json!([{
                "AuthenticationType": null, "IsAuthenticated": false, "Actor": null, "BootstrapContext": null,
                "Claims": [], "Label": null, "Name": null,
                "NameClaimType": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
                "RoleClaimType": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
            }]),
        );
        if let Some(b) = body {
            // The body is the raw request text; the key is absent when there is no body.
            let text = match b {
                Value::String(s) => s,
                other => other.to_string(),
            };
            req.insert("Body".into(), Value::String(text));
        }
        let mut data = Map::new();
        data.insert(self.bindings.http.clone(), Value::Object(req));
        let mut metadata = Map::new();
        metadata.insert("Query".into(), Value::Object(query));
        metadata.insert("Headers".into(), headers.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect());
        Ok(http_result(self.invoke(function, data, metadata).await?))
    }
}

/// A one-chunk body with no size hint: hyper then sends it with `Transfer-Encoding: chunked`,
/// as the host's `ObjectContent` does.
struct ChunkedBody(Option<axum::body::Bytes>);

impl http_body::Body for ChunkedBody {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// Turns a 2xx answer into an outcome with the host's rules (content type, empty body, shape).
pub fn interpret_response(status: u16, content_type: Option<&str>, body: &[u8]) -> InvokeOutcome {
    if !(200..300).contains(&status) {
        return InvokeOutcome::Failed(format!("Response status code does not indicate success: {status}"));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return InvokeOutcome::Failed(
            "2xx with an empty body: the real host would hang until functionTimeout, then restart the handler".into(),
        );
    }
    let media_type = content_type.unwrap_or_default().split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if media_type != "application/json" && media_type != "text/json" {
        return InvokeOutcome::Failed(format!(
            "Invalid HttpResponseMessage: content type {:?} has no JSON formatter (send application/json)",
            content_type.unwrap_or("<none>")
        ));
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return InvokeOutcome::Failed(format!("Invalid HttpResponseMessage: body is not JSON ({e})")),
    };
    let Value::Object(top) = value else {
        return InvokeOutcome::Failed(if value.is_null() {
            "2xx with a null body: the real host would hang until functionTimeout, then restart the handler".into()
        } else {
            "Invalid HttpResponseMessage: body is not a JSON object".into()
        });
    };
    let outputs = match get_ci(&top, "Outputs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return InvokeOutcome::Failed("Invalid HttpResponseMessage: Outputs is not an object".into()),
    };
    let logs = match get_ci(&top, "Logs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut logs = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => logs.push(s.clone()),
                    Value::Null => {}
                    Value::Number(_) | Value::Bool(_) => logs.push(item.to_string()),
                    _ => {
                        return InvokeOutcome::Failed(
                            "Invalid HttpResponseMessage: Logs must be an array of strings".into(),
                        );
                    }
                }
            }
            logs
        }
        Some(_) => return InvokeOutcome::Failed("Invalid HttpResponseMessage: Logs is not an array".into()),
    };
    let return_value = get_ci(&top, "ReturnValue").cloned().unwrap_or(Value::Null);
    InvokeOutcome::Succeeded(InvocationResult { outputs, logs, return_value })
}

fn http_result(outcome: InvokeOutcome) -> HttpResult {
    let failed =
        |reason: String| HttpResult { status: 500, body: Value::Null, headers: Map::new(), failure: Some(reason) };
    let result = match outcome {
        InvokeOutcome::Failed(reason) => return failed(reason),
        InvokeOutcome::Succeeded(r) => r,
    };
    // What the host does without a `res` output is not documented; a client-visible 500 is the
    // conservative reading.
    let Some(Value::Object(res)) = get_ci(&result.outputs, "res").map(decode_value) else {
        return failed("the handler returned no Outputs.res object".into());
    };
    let status = match get_ci(&res, "statusCode") {
        None | Some(Value::Null) => Some(200),
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    let Some(status) = status else {
        return failed("Outputs.res.statusCode is not a status code".into());
    };
    let body = match get_ci(&res, "body") {
        None => Value::Null,
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())),
        Some(other) => other.clone(),
    };
    let headers = match get_ci(&res, "headers") {
        Some(Value::Object(h)) => h.clone(),
        _ => Map::new(),
    };
    HttpResult { status, body, headers, failure: None }
}

fn validate_function_name(function: &str) -> Result<(), String> {
    let ok = !function.is_empty()
        && function.len() <= 128
        && function.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok { Ok(()) } else { Err(format!("invalid function name {function:?}: use the function folder name")) }
}

fn sys_metadata(function: &str) -> Value {
    json!({
        "MethodName": function,
        "UtcNow": format_utc_now(OffsetDateTime::now_utc()),
        "RandGuid": new_guid(),
    })
}

/// Service Bus trigger metadata (reference §1.6 table); unset optional properties are absent.
fn service_bus_metadata(p: &ServiceBusProps) -> Map<String, Value> {
    let mut m = Map::new();
    for action in ["MessageReceiver", "MessageSession", "MessageActions", "SessionActions", "ReceiveActions"] {
        m.insert(action.into(), json!({}));
    }
    m.insert(
        "Client".into(),
        json!({
            "FullyQualifiedNamespace": p.namespace,
            "IsClosed": false,
            "TransportType": 0,
            "Identifier": format!("{}-{}", p.namespace, new_guid()),
        }),
    );
    m.insert("DeliveryCount".into(), encode_value(HostValue::Int(i64::from(p.delivery_count))));
    m.insert("LockToken".into(), encode_value(HostValue::String(p.lock_token.clone())));
    m.insert("ExpiresAtUtc".into(), encode_value(HostValue::DateTime(p.expires_at)));
    m.insert("ExpiresAt".into(), encode_value(HostValue::DateTimeOffset(p.expires_at)));
    m.insert("EnqueuedTimeUtc".into(), encode_value(HostValue::DateTime(p.enqueued_time)));
    m.insert("EnqueuedTime".into(), encode_value(HostValue::DateTimeOffset(p.enqueued_time)));
    m.insert("MessageId".into(), encode_value(HostValue::String(p.message_id.clone())));
    let optional = [
        ("ContentType", &p.content_type),
        ("CorrelationId", &p.correlation_id),
        ("Subject", &p.subject),
        ("Label", &p.subject),
        ("SessionId", &p.session_id),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            m.insert(key.into(), encode_value(HostValue::String(v.clone())));
        }
    }
    m.insert("SequenceNumber".into(), encode_value(HostValue::Int(p.sequence_number)));
    m.insert("ApplicationProperties".into(), Value::Object(p.application_properties.clone()));
    m.insert("UserProperties".into(), Value::Object(p.application_properties.clone()));
    m
}

/// `Utility.ApplyBindingData`: a JSON-object string body has its top-level non-array properties
/// copied into binding data (objects as objects, scalars as their string form, which is then
/// encoded like any string), replacing same-named keys. Case-insensitive replacement is
/// UNCONFIRMED; we replace case-insensitively because that is the harsher case for the handler.
fn merge_body_properties(body: &str, metadata: &mut Map<String, Value>) {
    let trimmed = body.trim();
    if !(trimmed.starts_with('{') && trimmed.ends_with('}')) {
        return;
    }
    let Ok(Value::Object(parsed)) = serde_json::from_str::<Value>(trimmed) else {
        return;
    };
    for (key, value) in parsed {
        let converted = match value {
            Value::Array(_) | Value::Null => continue,
            Value::Object(_) => value,
            // `(string)JToken`: .NET prints booleans as True/False.
            Value::Bool(b) => encode_value(HostValue::String(if b { "True" } else { "False" }.into())),
            Value::Number(n) => encode_value(HostValue::String(n.to_string())),
            Value::String(s) => encode_value(HostValue::String(s)),
        };
        metadata.retain(|k, _| !k.eq_ignore_ascii_case(&key));
        metadata.insert(key, converted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_host() {
        assert_eq!(encode_value(HostValue::String("abc".into())), json!("\"abc\""));
        assert_eq!(encode_value(HostValue::Int(1)), json!("1"));
        assert_eq!(encode_value(HostValue::Bool(true)), json!("true"));
        assert_eq!(encode_value(HostValue::Bytes(b"{\"pe\":1}".to_vec())), json!("eyJwZSI6MX0="));
        assert_eq!(encode_value(HostValue::Object(json!(["a", "b"]))), json!("[\"a\",\"b\"]"));
        assert_eq!(encode_value(HostValue::Object(json!({"a": 1}))), json!({"a": 1}));
        let t = time::macros::datetime!(2023-10-12 20:13:49.640002 UTC);
        assert_eq!(encode_value(HostValue::DateTime(t)), json!("2023-10-12T20:13:49"));
        assert_eq!(encode_value(HostValue::DateTimeOffset(t)), json!("2023-10-12T20:13:49+00:00"));
        assert_eq!(format_utc_now(t), "2023-10-12T20:13:49.640002Z");
    }

    #[test]
    fn response_rules() {
        assert!(interpret_response(200, Some("application/json"), br#"{"Outputs":{},"Logs":["x"]}"#).is_success());
        assert!(!interpret_response(200, Some("application/json"), b"").is_success());
        assert!(!interpret_response(200, Some("application/json"), b"null").is_success());
        assert!(!interpret_response(200, Some("text/plain"), b"{}").is_success());
        assert!(!interpret_response(200, None, b"{}").is_success());
        assert!(!interpret_response(500, Some("application/json"), b"{}").is_success());
        assert!(interpret_response(204, Some("text/json; charset=utf-8"), b"{}").is_success());
    }

    #[test]
    fn guid_shape() {
        let g = new_guid();
        assert_eq!(g.len(), 36);
        assert_eq!(g.as_bytes()[14], b'4');
    }
}
