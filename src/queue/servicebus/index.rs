//! The dead-letter store for Service Bus deployments: one Azure Table entity per parked
//! work item (module docs of [`super`], "Dead letters", say why a table and not a queue).
//!
//! Entities: PartitionKey = the work queue's name (one table can serve several
//! deployments), RowKey = the message id (the characters Table keys forbid, `/ \ # ?` and
//! control characters, written as `_`), properties `MessageId`, `DedupeKey`,
//! `CorrelationId`, `Body` (the JSON text), `Reason`, `DeliveryCount` and
//! `DeadLetteredAtMs` (numbers as strings: a JSON number would come back as a 32-bit
//! `Edm.Int32`). Parking the same message twice (a redelivery after a crash) replaces the
//! entity: one dead letter per message, never two.
//!
//! Calls: insert-or-replace `PUT`, `GET` of one entity, `DELETE` with `If-Match: *`, and a
//! query filtered on the partition, paged until `x-ms-continuation-NextPartitionKey` is
//! absent (only that header marks the end; `NextRowKey` may be missing on a page that is
//! not the last). Listing and counting are reads: nothing is locked, nothing is consumed.
//! Auth: the managed identity's bearer token for `https://storage.azure.com/.default`,
//! role Storage Table Data Contributor scoped to this table (infra/modules/servicebus.bicep).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::super::{DeadLetter, QueueError};
use crate::arm::credential::TokenSource;

const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// The first Table service version that accepts OAuth bearer tokens.
const TABLE_API_VERSION: &str = "2019-02-02";
const ACCEPT: &str = "application/json;odata=nometadata";
const ATTEMPTS: u32 = 3;
/// Pages read per listing at most (1,000 entities each on the real service).
const MAX_PAGES: usize = 1000;
/// A Table string property holds 64 KiB (32k UTF-16 units); bodies are far smaller.
const MAX_TEXT_CHARS: usize = 30_000;

/// A parked work item as stored, with the row key it lives under.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedDeadLetter {
    pub row_key: String,
    pub dead: DeadLetter,
}

#[derive(Debug)]
pub struct DeadLetterTable {
    http: reqwest::Client,
    endpoint: String,
    table: String,
    partition: String,
    tokens: Arc<dyn TokenSource>,
    created: OnceCell<()>,
}

/// RowKey for a message id (module docs).
pub fn row_key(message_id: &str) -> String {
    let k: String = message_id
        .chars()
        .map(|c| if matches!(c, '/' | '\\' | '#' | '?') || c.is_control() { '_' } else { c })
        .take(512)
        .collect();
    if k.is_empty() { "_".to_owned() } else { k }
}

fn quote(key: &str) -> String {
    url::form_urlencoded::byte_serialize(key.replace('\'', "''").as_bytes()).collect()
}

fn odata_error(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match v["odata.error"]["code"].as_str() {
        Some(c) => c.to_owned(),
        None => String::from_utf8_lossy(body).chars().take(200).collect(),
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

fn entity_to_dead_letter(v: &Value) -> Option<IndexedDeadLetter> {
    let s = |k: &str| v[k].as_str().map(str::to_owned);
    let text = s("Body").unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    let message_id = s("MessageId")?;
    Some(IndexedDeadLetter {
        row_key: s("RowKey")?,
        dead: DeadLetter {
            dedupe_key: s("DedupeKey").unwrap_or_else(|| message_id.clone()),
            message_id,
            correlation_id: s("CorrelationId").unwrap_or_default(),
            body,
            reason: s("Reason").unwrap_or_default(),
            delivery_count: s("DeliveryCount").and_then(|n| n.parse().ok()).unwrap_or(0),
            dead_lettered_at: UNIX_EPOCH
                + Duration::from_millis(s("DeadLetteredAtMs").and_then(|n| n.parse().ok()).unwrap_or(0)),
        },
    })
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl DeadLetterTable {
    /// `endpoint`: `https://<account>.table.core.windows.net` (http only on loopback).
    pub fn new(endpoint: &str, table: &str, partition: &str, tokens: Arc<dyn TokenSource>) -> Result<Self, String> {
        let endpoint = endpoint.trim().trim_end_matches('/').to_owned();
        match url::Url::parse(&endpoint) {
            Ok(u) if u.scheme() == "https" => {}
            Ok(u) if u.scheme() == "http" && u.host_str().is_some_and(|h| h == "127.0.0.1" || h == "localhost") => {}
            _ => return Err(format!("queue.dead_letter_table_endpoint {endpoint:?} must be an https:// URL")),
        }
        if table.len() < 3 || table.len() > 63 || !table.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("queue.dead_letter_table {table:?} must be 3-63 letters and digits"));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("dead-letter table HTTP client: {e}"))?;
        Ok(Self {
            http,
            endpoint,
            table: table.to_owned(),
            partition: partition.to_owned(),
            tokens,
            created: OnceCell::new(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        if_match: bool,
    ) -> Result<Answer, QueueError> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            let token = self
                .tokens
                .token(STORAGE_SCOPE)
                .await
                .map_err(|e| QueueError::Unavailable(format!("dead-letter table token: {e}")))?;
            let mut auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| QueueError::Config("the storage token is not a valid header value".into()))?;
            auth.set_sensitive(true);
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.endpoint))
                .header(reqwest::header::AUTHORIZATION, auth)
                .header("x-ms-version", TABLE_API_VERSION)
                .header("x-ms-date", httpdate::fmt_http_date(SystemTime::now()))
                .header(reqwest::header::ACCEPT, ACCEPT)
                .header("DataServiceVersion", "3.0");
            if if_match {
                req = req.header(reqwest::header::IF_MATCH, "*");
            }
            if let Some(b) = &body {
                req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(b.to_string());
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                        last = format!("HTTP {}: {}", status.as_u16(), odata_error(&body));
                        continue;
                    }
                    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                        return Err(QueueError::Config(format!(
                            "dead-letter table {} refused the app's identity (HTTP {}: {}); it needs Storage Table Data Contributor on the table",
                            self.table,
                            status.as_u16(),
                            odata_error(&body)
                        )));
                    }
                    return Ok(Answer { status, headers, body });
                }
                Err(e) => {
                    last = format!("request failed: {}", if e.is_timeout() { "timed out" } else { "no connection" })
                }
            }
        }
        Err(QueueError::Unavailable(format!("dead-letter table {}: {last}", self.table)))
    }

    /// Creates the table on first use; a table-scoped role may not, and infra made it.
    async fn ensure_table(&self) -> Result<(), QueueError> {
        self.created
            .get_or_try_init(|| async {
                match self.call(Method::POST, "/Tables", Some(json!({"TableName": self.table})), false).await {
                    Ok(a) if a.status.is_success() || a.status == StatusCode::CONFLICT => Ok(()),
                    Ok(a) => Err(QueueError::Config(format!(
                        "creating table {}: HTTP {}: {}",
                        self.table,
                        a.status.as_u16(),
                        odata_error(&a.body)
                    ))),
                    Err(QueueError::Config(why)) => {
                        tracing::debug!(%why, "cannot create the dead-letter table; assuming infra did");
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            })
            .await
            .map(|_| ())
    }

    fn entity_path(&self, row: &str) -> String {
        format!("/{}(PartitionKey='{}',RowKey='{}')", self.table, quote(&self.partition), quote(row))
    }

    fn unexpected(&self, what: &str, a: &Answer) -> QueueError {
        QueueError::Unavailable(format!(
            "dead-letter table {} {what}: HTTP {}: {}",
            self.table,
            a.status.as_u16(),
            odata_error(&a.body)
        ))
    }

    /// Stores (or replaces) the dead letter for `dead.message_id`.
    pub async fn put(&self, dead: &DeadLetter) -> Result<(), QueueError> {
        self.ensure_table().await?;
        let clip = |s: &str| s.chars().take(MAX_TEXT_CHARS).collect::<String>();
        let row = row_key(&dead.message_id);
        let entity = json!({
            "PartitionKey": self.partition,
            "RowKey": row,
            "MessageId": clip(&dead.message_id),
            "DedupeKey": clip(&dead.dedupe_key),
            "CorrelationId": clip(&dead.correlation_id),
            "Body": clip(&dead.body.to_string()),
            "Reason": clip(&dead.reason),
            "DeliveryCount": dead.delivery_count.to_string(),
            "DeadLetteredAtMs": unix_ms(dead.dead_lettered_at).to_string(),
        });
        let a = self.call(Method::PUT, &self.entity_path(&row), Some(entity), false).await?;
        if a.status.is_success() { Ok(()) } else { Err(self.unexpected("insert-or-replace", &a)) }
    }

    /// Every dead letter of this partition (reads only).
    pub async fn list(&self) -> Result<Vec<IndexedDeadLetter>, QueueError> {
        let rows = self.query("").await?;
        Ok(rows.iter().filter_map(entity_to_dead_letter).collect())
    }

    /// How many dead letters this partition holds: the same query with only the keys
    /// selected, so a count moves no bodies.
    pub async fn count(&self) -> Result<usize, QueueError> {
        Ok(self.query("PartitionKey,RowKey").await?.len())
    }

    /// The partition's entities (`select`: `$select` columns, empty = all), every page.
    async fn query(&self, select: &str) -> Result<Vec<Value>, QueueError> {
        self.ensure_table().await?;
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let filter = enc(&format!("PartitionKey eq '{}'", self.partition.replace('\'', "''")));
        let select = if select.is_empty() { String::new() } else { format!("&$select={}", enc(select)) };
        let mut out = Vec::new();
        let mut next: Option<(String, Option<String>)> = None;
        for _ in 0..MAX_PAGES {
            let mut path = format!("/{}()?$filter={filter}{select}", self.table);
            if let Some((pk, rk)) = &next {
                path.push_str(&format!("&NextPartitionKey={}", enc(pk)));
                if let Some(rk) = rk {
                    path.push_str(&format!("&NextRowKey={}", enc(rk)));
                }
            }
            let a = self.call(Method::GET, &path, None, false).await?;
            if !a.status.is_success() {
                return Err(self.unexpected("query", &a));
            }
            let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
            out.extend(
                v["value"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| e["PartitionKey"].as_str() == Some(self.partition.as_str()))
                    .cloned(),
            );
            let header = |n: &str| a.headers.get(n).and_then(|h| h.to_str().ok()).map(str::to_owned);
            next = header("x-ms-continuation-NextPartitionKey").map(|pk| (pk, header("x-ms-continuation-NextRowKey")));
            if next.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// Removes one dead letter; `false` when it was not there.
    pub async fn remove(&self, row: &str) -> Result<bool, QueueError> {
        self.ensure_table().await?;
        let a = self.call(Method::DELETE, &self.entity_path(row), None, true).await?;
        match a.status {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            _ => Err(self.unexpected("delete", &a)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_keys_avoid_forbidden_characters() {
        assert_eq!(row_key("ab/c\\d#e?f\u{1}"), "ab_c_d_e_f_");
        assert_eq!(row_key(""), "_");
        assert_eq!(row_key("0123abcd"), "0123abcd");
    }

    #[test]
    fn entities_round_trip() {
        let v = json!({"PartitionKey": "work", "RowKey": "m1", "MessageId": "m1", "DedupeKey": "vendor:x",
            "CorrelationId": "c", "Body": "{\"v\":1}", "Reason": "why", "DeliveryCount": "3", "DeadLetteredAtMs": "5000"});
        let d = entity_to_dead_letter(&v).expect("entity");
        assert_eq!(d.dead.body, json!({"v": 1}));
        assert_eq!(d.dead.delivery_count, 3);
        assert_eq!(d.dead.dead_lettered_at, UNIX_EPOCH + Duration::from_secs(5));
    }
}
