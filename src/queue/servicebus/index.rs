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

use super::super::{DeadLetter, QueueError};
use crate::arm::credential::TokenSource;
use crate::arm::table::{TableAnswer as Answer, TableError, TableRest, quote};

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
    rest: TableRest,
    table: String,
    partition: String,
}

fn queue_error(e: TableError) -> QueueError {
    match e {
        TableError::Config(m) => QueueError::Config(m),
        TableError::Unavailable(m) => QueueError::Unavailable(m),
    }
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

impl DeadLetterTable {
    /// `endpoint`: `https://<account>.table.core.windows.net` (http only on loopback).
    pub fn new(endpoint: &str, table: &str, partition: &str, tokens: Arc<dyn TokenSource>) -> Result<Self, String> {
        let http =
            crate::arm::table::client_builder().build().map_err(|e| format!("dead-letter table HTTP client: {e}"))?;
        let rest =
            TableRest::new("queue.dead_letter_table_endpoint", "dead-letter table", endpoint, table, tokens, http)?;
        Ok(Self { rest, table: table.to_owned(), partition: partition.to_owned() })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        if_match: bool,
    ) -> Result<Answer, QueueError> {
        self.rest.call(method, path, body, if_match.then_some("*")).await.map_err(queue_error)
    }

    async fn ensure_table(&self) -> Result<(), QueueError> {
        self.rest.ensure_table().await.map_err(queue_error)
    }

    fn entity_path(&self, row: &str) -> String {
        format!("/{}(PartitionKey='{}',RowKey='{}')", self.table, quote(&self.partition), quote(row))
    }

    fn unexpected(&self, what: &str, a: &Answer) -> QueueError {
        QueueError::Unavailable(self.rest.unexpected(what, a))
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
