//! The Azure Functions custom-handler wire format.
//!
//! For every non-HTTP-forwarded trigger the Functions host POSTs
//! `{"Data": {...}, "Metadata": {...}}` to `http://127.0.0.1:{port}/{FunctionName}` and expects
//! `{"Outputs": {...}, "Logs": [...], "ReturnValue": ...}` back with a 2xx status and
//! `Content-Type: application/json` (reference `functions-eventgrid.md` §1.2–§1.5).
//!
//! The host does not send values the way the public docs show them. Each value goes through
//! `GetHttpScriptInvocationContextValue`, which means:
//! - a .NET `string` is JSON-serialized once more: `"MessageId": "\"abc\""`, and a Service Bus
//!   body `{"a":1}` arrives as `"\"{\\\"a\\\":1}\""`;
//! - `int`/`long`/`bool` arrive as strings: `"DeliveryCount": "1"`;
//! - objects arrive as objects, arrays as a string holding the array text;
//! - `byte[]` (binding `dataType: binary`) arrives as base64.
//!
//! Older hosts and third-party test fixtures single-encode some of these, so every accessor here
//! accepts both forms instead of betting on one. [`decode_value`] is the one place that knows how.
//!
//! Limits: the body is capped at [`MAX_BODY_BYTES`] before any parsing, and serde_json's default
//! recursion limit (128 levels) stays enabled, so a hostile body can cost neither unbounded
//! memory nor unbounded stack.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest invocation body we parse. Event Grid events are at most 1 MB each and the host sends
/// one event per invocation; Service Bus messages are at most 256 KB (standard) or 100 MB
/// (premium, which we do not use for work items). 4 MiB leaves room for the host's re-encoding
/// (double-encoded strings grow by the escaping) without letting a caller make us buffer more.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// How many times [`decode_value`] unwraps a string that itself holds a JSON string. Two covers
/// the host's extra encoding on top of a producer that already sent JSON text; more than that is
/// not something any real sender does, and a bound keeps the work per value constant.
const MAX_STRING_UNWRAPS: usize = 2;

/// Why an invocation body could not be understood. Each message says what was expected, so the
/// person reading the handler's stderr can tell a host/handler mismatch from a bad test payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error(
        "invocation body is {size} bytes, over the {MAX_BODY_BYTES}-byte limit; the Functions host never sends this much for our triggers"
    )]
    TooLarge { size: usize },
    #[error("invocation body is empty; the Functions host always sends a JSON object {{\"Data\":…,\"Metadata\":…}}")]
    Empty,
    #[error("invocation body nests JSON deeper than serde_json's 128-level limit; refusing to parse it")]
    TooDeep,
    #[error(
        "invocation body is not valid JSON ({0}); expected {{\"Data\":…,\"Metadata\":…}} as sent by the Functions host"
    )]
    InvalidJson(String),
    #[error("invocation body must be a JSON object {{\"Data\":…,\"Metadata\":…}}, got {0}")]
    NotAnObject(&'static str),
    #[error(
        "invocation body has no \"Data\" key; is this request really from the Functions host (custom handler, non-forwarded trigger)?"
    )]
    MissingData,
    #[error(
        "invocation body has more than one key spelled like \"{0}\" (keys differ only in case); refusing to guess which one the host meant"
    )]
    AmbiguousKey(&'static str),
    #[error("\"{key}\" must be a JSON object (or a string holding one), got {found}")]
    WrongType { key: &'static str, found: &'static str },
}

/// One invocation as sent by the Functions host.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InvocationRequest {
    /// Trigger and input-binding values, keyed by binding name (`event`, `msg`, `timer`, `req`).
    pub data: Map<String, Value>,
    /// Trigger metadata (`DeliveryCount`, `MessageId`, `data`, `sys`, ...). Empty when absent.
    pub metadata: Map<String, Value>,
}

impl InvocationRequest {
    /// Parses a raw request body. The size check runs before any parsing.
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(ProtocolError::TooLarge { size: body.len() });
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ProtocolError::Empty);
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            // serde_json reports its recursion guard as a syntax error; name it so the log
            // line says "too deep" rather than pointing at a column.
            if e.to_string().contains("recursion limit exceeded") {
                ProtocolError::TooDeep
            } else {
                ProtocolError::InvalidJson(e.to_string())
            }
        })?;
        Self::from_value(value)
    }

    /// Builds a request from an already-parsed JSON value (used by tests and the emulator).
    pub fn from_value(value: Value) -> Result<Self, ProtocolError> {
        let Value::Object(mut top) = value else {
            return Err(ProtocolError::NotAnObject(json_type_name(&value)));
        };
        // The host serializes with Newtonsoft and PascalCase (`Data`, `Metadata`), and reads our
        // answer case-insensitively; accept any casing on the way in for the same reason.
        let data = match take_key_ci(&mut top, "Data")? {
            None => return Err(ProtocolError::MissingData),
            Some(v) => object_or_encoded_object(v, "Data")?,
        };
        let metadata = match take_key_ci(&mut top, "Metadata")? {
            None | Some(Value::Null) => Map::new(),
            Some(v) => object_or_encoded_object(v, "Metadata")?,
        };
        Ok(Self { data, metadata })
    }

    /// A `Data` value (binding name matched case-insensitively), decoded with [`decode_value`].
    pub fn data_value(&self, binding: &str) -> Option<Value> {
        get_ci(&self.data, binding).map(decode_value)
    }

    /// A `Metadata` value (key matched case-insensitively), decoded with [`decode_value`].
    pub fn metadata_value(&self, key: &str) -> Option<Value> {
        get_ci(&self.metadata, key).map(decode_value)
    }

    /// A numeric metadata value such as `DeliveryCount`. Accepts `1`, `"1"` and `"\"1\""`.
    pub fn metadata_u64(&self, key: &str) -> Option<u64> {
        match self.metadata_value(key)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// A string metadata value such as `MessageId`. Accepts `"abc"` and `"\"abc\""`; numbers and
    /// booleans are returned as their text. Objects, arrays and null give `None`.
    pub fn metadata_str(&self, key: &str) -> Option<String> {
        match self.metadata_value(key)? {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// Undoes the host's value encoding (module docs):
/// - a string whose content is itself a JSON string is unwrapped, at most twice;
/// - a string (after unwrapping) holding a JSON object or array is parsed into it;
/// - everything else is returned unchanged. In particular numbers-as-strings (`"1"`) stay strings:
///   whether `"1"` is a count or an id is the caller's knowledge, not ours.
///
/// A sender that really meant the literal text `"abc"` (with quotes) cannot be told apart from
/// the host's encoding of `abc`; no binding we use carries such values.
pub fn decode_value(value: &Value) -> Value {
    let Value::String(s) = value else {
        return value.clone();
    };
    let mut current: std::borrow::Cow<'_, str> = std::borrow::Cow::Borrowed(s.as_str());
    for _ in 0..MAX_STRING_UNWRAPS {
        if !current.trim_start().starts_with('"') {
            break;
        }
        match serde_json::from_str::<Value>(&current) {
            Ok(Value::String(inner)) => current = std::borrow::Cow::Owned(inner),
            _ => break,
        }
    }
    let trimmed = current.trim_start();
    if (trimmed.starts_with('{') || trimmed.starts_with('['))
        && let Ok(parsed @ (Value::Object(_) | Value::Array(_))) = serde_json::from_str::<Value>(&current)
    {
        return parsed;
    }
    Value::String(current.into_owned())
}

/// Decodes a `dataType: binary` value: the host sends `byte[]` as standard base64. A quoted
/// base64 string (one extra JSON encoding) is accepted too. `None` if it is not base64.
pub fn decode_binary(value: &Value) -> Option<Vec<u8>> {
    let Value::String(s) = value else {
        return None;
    };
    let text = match serde_json::from_str::<Value>(s) {
        Ok(Value::String(inner)) if s.trim_start().starts_with('"') => inner,
        _ => s.clone(),
    };
    base64::engine::general_purpose::STANDARD.decode(text.trim()).ok()
}

/// What the handler answers. Serializes as `{"Outputs":{..},"Logs":[..],"ReturnValue":..}`.
///
/// The HTTP status of *this* response tells the host whether the invocation succeeded (2xx) or
/// failed (anything else: the host then discards the body, including `Logs`). The status inside
/// [`InvocationResponse::http`] is what an HTTP-trigger client sees; it is unrelated.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InvocationResponse {
    #[serde(rename = "Outputs", default)]
    pub outputs: Map<String, Value>,
    #[serde(rename = "Logs", default)]
    pub logs: Vec<String>,
    #[serde(rename = "ReturnValue", default)]
    pub return_value: Value,
}

/// The HTTP output binding name used by our `function.json` files (`"name": "res"`).
pub const HTTP_OUTPUT_BINDING: &str = "res";

impl InvocationResponse {
    /// An empty successful answer: no outputs, no logs, `ReturnValue: null`.
    pub fn new() -> Self {
        Self::default()
    }

    /// The answer for an HTTP-triggered function: `Outputs.res = {"statusCode", "body", "headers"}`.
    ///
    /// `body` is sent as JSON *text*. The host tries `Convert.FromBase64String` on string output
    /// values and sends the decoded bytes if that succeeds. JSON text of an object, array or
    /// string starts with `{`, `[` or `"`, none of which is in the base64 alphabet, so such a body
    /// can never be mistaken for base64. Bare scalars are not safe (`null`, `true` and `1234` are
    /// all valid base64), so they are wrapped as `{"value": <scalar>}`.
    pub fn http(status: u16, body: &Value) -> Self {
        let body_text = match body {
            Value::Object(_) | Value::Array(_) | Value::String(_) => body.to_string(),
            scalar => serde_json::json!({ "value": scalar }).to_string(),
        };
        let mut res = Map::new();
        res.insert("statusCode".into(), Value::from(status));
        res.insert("body".into(), Value::String(body_text));
        res.insert("headers".into(), serde_json::json!({ "Content-Type": "application/json" }));
        let mut outputs = Map::new();
        outputs.insert(HTTP_OUTPUT_BINDING.into(), Value::Object(res));
        Self { outputs, logs: Vec::new(), return_value: Value::Null }
    }

    /// Sets an output binding value. Prefer JSON objects/arrays: a string that happens to be
    /// valid base64 is decoded to bytes by the host (see [`InvocationResponse::http`]).
    pub fn with_output(mut self, binding: &str, value: Value) -> Self {
        self.outputs.insert(binding.to_string(), value);
        self
    }

    /// Adds a line the host logs at Information (only when we answer 2xx).
    pub fn with_log(mut self, line: impl Into<String>) -> Self {
        self.logs.push(line.into());
        self
    }

    /// The response body. Never empty: a 2xx with an empty body makes the real host wait until
    /// `functionTimeout` and then restart the handler process.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Serializing string-keyed maps and plain values cannot fail; the fallback only exists
        // so that no code path can ever produce an empty body.
        serde_json::to_vec(self).unwrap_or_else(|_| br#"{"Outputs":{},"Logs":[],"ReturnValue":null}"#.to_vec())
    }
}

/// JSON type name for error messages (never the value itself: it may be large or hostile).
pub fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Looks a key up exactly, then case-insensitively (host binding data is case-insensitive).
pub fn get_ci<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

/// Removes a key matched case-insensitively; two spellings of the same key are an error.
fn take_key_ci(map: &mut Map<String, Value>, key: &'static str) -> Result<Option<Value>, ProtocolError> {
    let matches: Vec<String> = map.keys().filter(|k| k.eq_ignore_ascii_case(key)).cloned().collect();
    match matches.as_slice() {
        [] => Ok(None),
        [only] => Ok(map.remove(only)),
        _ => Err(ProtocolError::AmbiguousKey(key)),
    }
}

/// `Data`/`Metadata` must be objects; a string holding an object (an old host that serialized
/// everything) is accepted.
fn object_or_encoded_object(v: Value, key: &'static str) -> Result<Map<String, Value>, ProtocolError> {
    match v {
        Value::Object(m) => Ok(m),
        Value::String(_) => match decode_value(&v) {
            Value::Object(m) => Ok(m),
            _ => Err(ProtocolError::WrongType { key, found: "a string that does not hold a JSON object" }),
        },
        other => Err(ProtocolError::WrongType { key, found: json_type_name(&other) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_host_encodings() {
        assert_eq!(decode_value(&json!("\"abc\"")), json!("abc"));
        assert_eq!(decode_value(&json!("abc")), json!("abc"));
        assert_eq!(decode_value(&json!("1")), json!("1"));
        assert_eq!(decode_value(&json!("\"{\\\"a\\\":1}\"")), json!({"a": 1}));
        assert_eq!(decode_value(&json!("[\"a\",\"b\"]")), json!(["a", "b"]));
        // Three levels: only two are unwrapped, the rest stays a string.
        let triple = Value::String(json!(json!("x").to_string()).to_string()).to_string();
        assert_eq!(decode_value(&Value::String(triple)), json!("\"x\""));
        assert_eq!(decode_value(&json!({"k": "v"})), json!({"k": "v"}));
        assert_eq!(decode_value(&json!("{not json")), json!("{not json"));
    }

    #[test]
    fn parses_request_and_metadata_forms() {
        let body = br#"{"data":{"msg":"\"hi\""},"METADATA":{"DeliveryCount":"2","SequenceNumber":7,"MessageId":"\"m-1\"","Plain":"p"}}"#;
        let req = InvocationRequest::parse(body).unwrap();
        assert_eq!(req.data_value("msg"), Some(json!("hi")));
        assert_eq!(req.metadata_u64("deliverycount"), Some(2));
        assert_eq!(req.metadata_u64("SequenceNumber"), Some(7));
        assert_eq!(req.metadata_str("MessageId").as_deref(), Some("m-1"));
        assert_eq!(req.metadata_str("Plain").as_deref(), Some("p"));
        assert_eq!(req.metadata_str("missing"), None);
    }

    #[test]
    fn rejects_bad_bodies() {
        assert_eq!(InvocationRequest::parse(b"  "), Err(ProtocolError::Empty));
        assert_eq!(InvocationRequest::parse(b"[]"), Err(ProtocolError::NotAnObject("an array")));
        assert_eq!(InvocationRequest::parse(br#"{"Metadata":{}}"#), Err(ProtocolError::MissingData));
        assert_eq!(InvocationRequest::parse(br#"{"Data":{},"data":{}}"#), Err(ProtocolError::AmbiguousKey("Data")));
        let deep = format!("{{\"Data\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(InvocationRequest::parse(deep.as_bytes()), Err(ProtocolError::TooDeep));
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(InvocationRequest::parse(&big), Err(ProtocolError::TooLarge { size: MAX_BODY_BYTES + 1 }));
    }

    #[test]
    fn http_response_shape() {
        let r = InvocationResponse::http(404, &json!({"error": "nope"}));
        let v: Value = serde_json::from_slice(&r.to_json_bytes()).unwrap();
        assert_eq!(v["Outputs"]["res"]["statusCode"], json!(404));
        assert_eq!(v["Outputs"]["res"]["body"], json!("{\"error\":\"nope\"}"));
        assert_eq!(v["Logs"], json!([]));
        assert_eq!(v["ReturnValue"], Value::Null);
        let scalar = InvocationResponse::http(200, &json!(true));
        assert_eq!(scalar.outputs["res"]["body"], json!("{\"value\":true}"));
    }
}
