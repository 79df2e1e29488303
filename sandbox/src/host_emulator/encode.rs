//! How the Functions host writes a value into an invocation: strings JSON-encoded twice,
//! integers as strings, bytes as base64, `DateTime` without `Z`.
//!
//! These quirks are the wire format the handler must decode (`intake::protocol`), so they
//! are kept in one place, apart from the driving of invocations that uses them.

use base64::Engine as _;
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::format_description;

/// A .NET value as the host holds it before `GetHttpScriptInvocationContextValue` encodes it.
#[derive(Debug, Clone, PartialEq)]
pub enum HostValue {
    /// `string` → a JSON string holding the JSON-quoted string: `"\"abc\""`.
    String(String),
    /// `int`/`long` → a string: `"1"`.
    Int(i64),
    /// `bool` → a string: `"true"`.
    Bool(bool),
    /// A JSON value: objects stay objects, arrays become a string holding the array text,
    /// strings are quoted once more, numbers and booleans become strings (see [`encode_json`]).
    Object(Value),
    /// `byte[]` → standard base64.
    Bytes(Vec<u8>),
    /// `DateTime` → seconds precision, no offset, no `Z`: `"2023-10-12T20:13:49"` (UTC clock).
    DateTime(OffsetDateTime),
    /// `DateTimeOffset` → seconds precision with offset: `"2023-10-12T20:13:49+00:00"`.
    DateTimeOffset(OffsetDateTime),
}

/// Encodes a value the way the host puts it into `Data`/`Metadata` (reference §1.2 table).
pub fn encode_value(value: HostValue) -> Value {
    match value {
        HostValue::String(s) => Value::String(Value::String(s).to_string()),
        HostValue::Int(i) => Value::String(i.to_string()),
        HostValue::Bool(b) => Value::String(b.to_string()),
        HostValue::Object(v) => encode_json(v),
        HostValue::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        HostValue::DateTime(t) => Value::String(format_datetime(t)),
        HostValue::DateTimeOffset(t) => Value::String(format_datetime_offset(t)),
    }
}

/// The host's treatment of an arbitrary JSON value: `JObject.FromObject` succeeds only for
/// objects; everything else goes through `JsonConvert.SerializeObject` and becomes a string.
pub fn encode_json(value: Value) -> Value {
    match value {
        Value::Object(_) | Value::Null => value,
        Value::Array(_) => Value::String(value.to_string()),
        Value::String(s) => Value::String(Value::String(s).to_string()),
        Value::Number(n) => Value::String(n.to_string()),
        Value::Bool(b) => Value::String(b.to_string()),
    }
}

fn format_datetime(t: OffsetDateTime) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    t.to_offset(time::UtcOffset::UTC).format(&fmt).unwrap_or_default()
}

pub(super) fn format_datetime_offset(t: OffsetDateTime) -> String {
    let fmt = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory]:[offset_minute]"
    );
    t.format(&fmt).unwrap_or_default()
}

/// `sys.UtcNow` form: `2023-09-07T11:40:45.004275Z`.
pub(super) fn format_utc_now(t: OffsetDateTime) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    t.to_offset(time::UtcOffset::UTC).format(&fmt).unwrap_or_default()
}

/// A random version-4-shaped GUID (the host uses `Guid.NewGuid()`); not for security.
pub fn new_guid() -> String {
    private_link_autopilot::model::new_guid()
}
