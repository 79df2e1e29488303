//! Service Bus REST message properties: the `BrokerProperties` JSON header, custom
//! properties as their own headers, and the few bits of wire format the crate does not
//! cover (SAS for requests it cannot build, counts from the entity description).
//!
//! Custom property header values are typed by their spelling (reference §4): a quoted
//! value is a string, bare `true`/`false` a bool, digits an Int64, anything else makes
//! Service Bus reject the message. We write strings as JSON string literals with every
//! non-ASCII or control character escaped, so any text (a reason quoting a vendor's
//! error) survives an HTTP header. That Service Bus unescapes `\uXXXX` the way JSON does
//! is UNCONFIRMED; readers here accept both forms.

use std::collections::HashMap;
use std::time::SystemTime;

use azure_core_legacy::headers::Headers;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use url::form_urlencoded;

use crate::model::Secret;

/// Headers that are protocol, not custom properties.
const NOT_PROPERTIES: &[&str] = &[
    "brokerproperties",
    "content-type",
    "content-length",
    "location",
    "date",
    "server",
    "transfer-encoding",
    "connection",
    "strict-transport-security",
];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawBroker {
    delivery_count: u32,
    lock_token: String,
    locked_until_utc: Option<String>,
    message_id: String,
    #[serde(default)]
    sequence_number: i64,
    enqueued_time_utc: Option<String>,
    correlation_id: Option<String>,
}

/// What one peek-lock response told us about its message.
#[derive(Debug, Clone)]
pub struct ReceivedProps {
    pub message_id: String,
    pub lock_token: String,
    pub delivery_count: u32,
    pub sequence_number: i64,
    pub correlation_id: Option<String>,
    pub enqueued_at: Option<SystemTime>,
    pub locked_until: Option<SystemTime>,
    /// Custom properties, by lower-cased name, raw header text.
    custom: HashMap<String, String>,
}

impl ReceivedProps {
    pub fn from_headers(headers: &Headers) -> Result<Self, String> {
        let mut broker = None;
        let mut custom = HashMap::new();
        for (name, value) in headers.iter() {
            let name = name.as_str().to_ascii_lowercase();
            if name == "brokerproperties" {
                broker = Some(value.as_str().to_owned());
            } else if !NOT_PROPERTIES.contains(&name.as_str()) {
                custom.insert(name, value.as_str().to_owned());
            }
        }
        let raw = broker.ok_or("peek-lock response has no BrokerProperties header")?;
        let b: RawBroker = serde_json::from_str(&raw)
            .map_err(|e| format!("BrokerProperties header is not what Service Bus sends: {e}"))?;
        let date = |s: &Option<String>| s.as_deref().and_then(|d| httpdate::parse_http_date(d).ok());
        Ok(Self {
            enqueued_at: date(&b.enqueued_time_utc),
            locked_until: date(&b.locked_until_utc),
            message_id: b.message_id,
            lock_token: b.lock_token,
            delivery_count: b.delivery_count,
            sequence_number: b.sequence_number,
            correlation_id: b.correlation_id,
            custom,
        })
    }

    /// A string custom property (quoted on the wire; an unquoted value is taken as is).
    pub fn string(&self, name: &str) -> Option<String> {
        let raw = self.custom.get(&name.to_ascii_lowercase())?;
        Some(unquote_property(raw))
    }

    /// An Int64 custom property.
    pub fn integer(&self, name: &str) -> Option<i64> {
        self.custom.get(&name.to_ascii_lowercase())?.trim().parse().ok()
    }
}

/// A string custom-property value: a JSON string literal, ASCII only (module docs).
pub fn quote_property(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// Reverses [`quote_property`]; a value that is not a JSON string literal is returned
/// without its surrounding quotes (if any).
pub fn unquote_property(raw: &str) -> String {
    let t = raw.trim();
    match serde_json::from_str::<String>(t) {
        Ok(s) => s,
        Err(_) => t.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or(t).to_owned(),
    }
}

/// A SAS `Authorization` value in the format `azure_messaging_servicebus` uses:
/// `sr` = the form-urlencoded resource URL, signature = base64 HMAC-SHA256 keyed with the
/// key's UTF-8 bytes over `"{sr}\n{se}"`.
pub fn sas_token(resource_url: &str, key_name: &str, key: &Secret, expires: SystemTime) -> Result<String, String> {
    let sr: String = form_urlencoded::byte_serialize(resource_url.as_bytes()).collect();
    let se = expires.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()).map_err(|_| "SAS key cannot key an HMAC".to_owned())?;
    mac.update(format!("{sr}\n{se}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let sig: String = form_urlencoded::byte_serialize(sig.as_bytes()).collect();
    let skn: String = form_urlencoded::byte_serialize(key_name.as_bytes()).collect();
    Ok(format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn={skn}"))
}

/// Reads `<…:Name>digits</…:Name>` from an entity-description Atom document. A full XML
/// parser for five integers is not worth a dependency; element names in `CountDetails`
/// are unique within the document.
pub fn xml_count(xml: &str, name: &str) -> Option<u64> {
    let mut rest = xml;
    while let Some(pos) = rest.find(name) {
        let before = &rest[..pos];
        let after = &rest[pos + name.len()..];
        rest = after;
        // An opening tag: `<Name>` or `<prefix:Name>`.
        let opens = before.ends_with('<')
            || before.rsplit('<').next().is_some_and(|p| p.ends_with(':') && !p.contains('>') && !p.starts_with('/'));
        if opens && let Some(value) = after.strip_prefix('>') {
            let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = digits.parse() {
                return Some(n);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip_any_text() {
        for s in ["plain", "with \"quotes\" and \\", "ünïcødé ✓ 🚀", "line\nbreak", ""] {
            let q = quote_property(s);
            assert!(q.is_ascii() && !q.contains('\n'), "{q}");
            assert_eq!(unquote_property(&q), s);
        }
        assert_eq!(unquote_property("bare"), "bare");
    }

    #[test]
    fn parses_the_documented_broker_properties() {
        let fixture = r#"{"DeliveryCount":1,"EnqueuedSequenceNumber":0,"EnqueuedTimeUtc":"Wed, 02 Jul 2014 01:32:27 GMT","Label":"M1","LockToken":"7da9cfd5-40d5-4bb1-8d64-ec5a52e1c547","LockedUntilUtc":"Wed, 02 Jul 2014 01:33:27 GMT","MessageId":"31907572164743c38741631acd554d6f","SequenceNumber":2,"State":"Active","TimeToLive":10}"#;
        let mut h = Headers::new();
        h.insert("brokerproperties", fixture.to_owned());
        h.insert("dedupekey", "\"reconcile:x\"".to_owned());
        h.insert("originaldeliverycount", "3".to_owned());
        let p = ReceivedProps::from_headers(&h).expect("props");
        assert_eq!(p.delivery_count, 1);
        assert_eq!(p.sequence_number, 2);
        assert_eq!(p.message_id, "31907572164743c38741631acd554d6f");
        assert_eq!(p.enqueued_at, Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_404_264_747)));
        assert_eq!(p.string("DedupeKey").as_deref(), Some("reconcile:x"));
        assert_eq!(p.integer("OriginalDeliveryCount"), Some(3));
        assert!(ReceivedProps::from_headers(&Headers::new()).is_err());
    }

    #[test]
    fn reads_counts_from_a_queue_description() {
        let xml = "<entry><content><QueueDescription><MessageCount>7</MessageCount><CountDetails \
                   xmlns:d2p1=\"x\"><d2p1:ActiveMessageCount>4</d2p1:ActiveMessageCount>\
                   <d2p1:ScheduledMessageCount>2</d2p1:ScheduledMessageCount></CountDetails></QueueDescription></content></entry>";
        assert_eq!(xml_count(xml, "ActiveMessageCount"), Some(4));
        assert_eq!(xml_count(xml, "ScheduledMessageCount"), Some(2));
        assert_eq!(xml_count(xml, "MessageCount"), Some(7));
        assert_eq!(xml_count(xml, "DeadLetterMessageCount"), None);
    }

    #[test]
    fn sas_token_has_the_crate_shape() {
        let t = sas_token("https://ns.servicebus.windows.net/q", "pol", &Secret::new("k"), SystemTime::UNIX_EPOCH)
            .expect("token");
        assert!(t.starts_with("SharedAccessSignature sr=https%3A%2F%2Fns.servicebus.windows.net%2Fq&sig="), "{t}");
        assert!(t.ends_with("&se=0&skn=pol"), "{t}");
    }
}
