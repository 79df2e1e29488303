//! The ledger in Azure Table storage: the function app's own storage account, reached
//! with the managed identity (bearer token for `https://storage.azure.com/.default`, role
//! Storage Table Data Contributor), no account keys. An instance of a Flex Consumption
//! app has no durable disk, so this is where the ledger lives in Azure.
//!
//! Entities: PartitionKey = vendor, RowKey = the endpoint key with `/` written as `|`
//! (RowKey forbids `/`, `\`, `#`, `?`; ARM ids contain only `/` of those), properties
//! `Endpoint` (the `VendorEndpoint` as JSON text) and `RecordedAt` (unix seconds, as a
//! string: a plain JSON number would be read back as a 32-bit `Edm.Int32`).
//! Calls, all conditional (see the module doc of `ledger` for why):
//! - create: Insert Entity (`POST /{table}`, `Prefer: return-no-content`): 409
//!   `EntityAlreadyExists` means someone else created it first (`Conflict`);
//! - replace: Update Entity (`PUT` with `If-Match: <ETag read>`): 412 (changed) or 404
//!   (forgotten) is a `Conflict`;
//! - read: `GET` of the entity; its `ETag` header is the [`Version`];
//! - forget: Delete Entity with `If-Match: <ETag read>`: 404 is success (already gone),
//!   412 a `Conflict` (a newer registration, never erased);
//! - list: Query Entities, paged while `x-ms-continuation-NextPartitionKey` is present;
//!   `x-ms-continuation-NextRowKey` may be absent ("Query Timeout and Pagination"), and is
//!   sent back only when given.
//!
//! infra/ creates the table and scopes the role to it; the client also tries to create it
//! on first use (409 `TableAlreadyExists` and a 403 from a table-scoped role are both fine).
//!
//! Tests run this client against Azurite (Microsoft's emulator, over HTTPS with
//! `--oauth basic`, so the bearer-token path is the one exercised) and against
//! `autopilot_sandbox::fake_table` for what Azurite cannot inject (503s, 403, paging with only
//! `NextPartitionKey`). [`TableLedger::with_client`] lets a test trust Azurite's
//! self-signed certificate; production uses [`TableLedger::new`].

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::api::{Ledger, LedgerError, Registration, Version, endpoint_key};
use crate::arm::TokenSource;
use crate::arm::table::{TableAnswer as Answer, TableError, TableRest, quote};
use crate::effects::vendors::api::VendorEndpoint;
use crate::model::now_unix;

#[derive(Debug)]
pub struct TableLedger {
    rest: TableRest,
    table: String,
}

fn ledger_error(e: TableError) -> LedgerError {
    match e {
        TableError::Config(m) => LedgerError::Config(m),
        TableError::Unavailable(m) => LedgerError::Unavailable(m),
    }
}

fn row_key(pe_id: &str) -> String {
    endpoint_key(pe_id).replace('/', "|")
}

impl TableLedger {
    /// `endpoint` is `https://<account>.table.core.windows.net` (loopback in tests).
    pub fn new(endpoint: &str, table: &str, tokens: Arc<dyn TokenSource>) -> Result<Self, String> {
        let http = Self::client_builder().build().map_err(|e| format!("ledger HTTP client: {e}"))?;
        Self::with_client(endpoint, table, tokens, http)
    }

    /// The HTTP settings [`TableLedger::new`] uses; a test adds a root certificate to
    /// them and passes the client to [`TableLedger::with_client`].
    pub fn client_builder() -> reqwest::ClientBuilder {
        crate::arm::table::client_builder()
    }

    /// Like [`TableLedger::new`] with a given HTTP client (tests: trust an emulator's
    /// self-signed certificate).
    pub fn with_client(
        endpoint: &str,
        table: &str,
        tokens: Arc<dyn TokenSource>,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        let rest = TableRest::new("ledger.table_endpoint", "ledger table", endpoint, table, tokens, http)?;
        Ok(Self { rest, table: table.to_owned() })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> Result<Answer, LedgerError> {
        self.rest.call(method, path, body, if_match).await.map_err(ledger_error)
    }

    async fn ensure_table(&self) -> Result<(), LedgerError> {
        self.rest.ensure_table().await.map_err(ledger_error)
    }

    fn entity_path(&self, vendor: &str, pe_id: &str) -> String {
        format!("/{}(PartitionKey='{}',RowKey='{}')", self.table, quote(vendor), quote(&row_key(pe_id)))
    }

    fn unexpected(&self, what: &str, a: &Answer) -> LedgerError {
        LedgerError::Unavailable(self.rest.unexpected(what, a))
    }
}

/// An entity as a registration; `etag` from the answer's `ETag` header (a single entity)
/// or the entity's `odata.etag` (present in query results with minimal metadata).
fn entity_to_registration(v: &Value, etag: Option<String>) -> Option<Registration> {
    let endpoint: VendorEndpoint = serde_json::from_str(v["Endpoint"].as_str()?).ok()?;
    let etag = etag.or_else(|| v["odata.etag"].as_str().map(str::to_owned)).unwrap_or_default();
    Some(Registration {
        vendor: v["PartitionKey"].as_str()?.to_owned(),
        endpoint,
        recorded_at: v["RecordedAt"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0),
        version: Version(etag),
    })
}

fn etag_of(a: &Answer) -> Option<String> {
    a.headers.get(reqwest::header::ETAG).and_then(|h| h.to_str().ok()).map(str::to_owned)
}

#[async_trait::async_trait]
impl Ledger for TableLedger {
    async fn record(
        &self,
        vendor: &str,
        ep: &VendorEndpoint,
        expected: Option<&Version>,
    ) -> Result<Version, LedgerError> {
        self.ensure_table().await?;
        let body = json!({
            "PartitionKey": vendor,
            "RowKey": row_key(&ep.pe_id),
            "Endpoint": serde_json::to_string(ep).map_err(|e| LedgerError::Config(e.to_string()))?,
            "RecordedAt": now_unix().to_string(),
        });
        let key = endpoint_key(&ep.pe_id);
        let a = match expected {
            None => self.call(Method::POST, &format!("/{}", self.table), Some(body), None).await?,
            // An empty version was never handed out by this store: nothing can match it.
            Some(v) if v.0.is_empty() => {
                return Err(LedgerError::Conflict(format!("{vendor} entry for {key}: no version to replace")));
            }
            Some(v) => self.call(Method::PUT, &self.entity_path(vendor, &ep.pe_id), Some(body), Some(&v.0)).await?,
        };
        match a.status {
            s if s.is_success() => match etag_of(&a) {
                Some(etag) => Ok(Version(etag)),
                None => Err(self.unexpected("write (no ETag in the answer)", &a)),
            },
            StatusCode::CONFLICT if expected.is_none() => {
                Err(LedgerError::Conflict(format!("{vendor} entry for {key}: created by someone else first")))
            }
            StatusCode::PRECONDITION_FAILED | StatusCode::NOT_FOUND if expected.is_some() => {
                Err(LedgerError::Conflict(format!("{vendor} entry for {key}: changed or forgotten since it was read")))
            }
            _ => Err(self.unexpected(if expected.is_some() { "update" } else { "insert" }, &a)),
        }
    }

    async fn get(&self, vendor: &str, pe_id: &str) -> Result<Option<Registration>, LedgerError> {
        self.ensure_table().await?;
        let a = self.call(Method::GET, &self.entity_path(vendor, pe_id), None, None).await?;
        match a.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
                Ok(entity_to_registration(&v, etag_of(&a)))
            }
            _ => Err(self.unexpected("get", &a)),
        }
    }

    async fn forget(&self, vendor: &str, pe_id: &str, version: &Version) -> Result<(), LedgerError> {
        self.ensure_table().await?;
        let key = endpoint_key(pe_id);
        if version.0.is_empty() {
            return Err(LedgerError::Conflict(format!("{vendor} entry for {key}: no version to delete")));
        }
        let a = self.call(Method::DELETE, &self.entity_path(vendor, pe_id), None, Some(&version.0)).await?;
        match a.status {
            StatusCode::NOT_FOUND => Ok(()),
            StatusCode::PRECONDITION_FAILED => {
                Err(LedgerError::Conflict(format!("{vendor} entry for {key}: written again since it was read")))
            }
            s if s.is_success() => Ok(()),
            _ => Err(self.unexpected("delete", &a)),
        }
    }

    async fn list(&self) -> Result<Vec<Registration>, LedgerError> {
        self.ensure_table().await?;
        let mut out = Vec::new();
        let mut next: Option<(String, Option<String>)> = None;
        for _ in 0..10_000 {
            let mut path = format!("/{}()", self.table);
            if let Some((pk, rk)) = &next {
                let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                path.push_str(&format!("?NextPartitionKey={}", enc(pk)));
                if let Some(rk) = rk {
                    path.push_str(&format!("&NextRowKey={}", enc(rk)));
                }
            }
            let a = self.call(Method::GET, &path, None, None).await?;
            if !a.status.is_success() {
                return Err(self.unexpected("query", &a));
            }
            let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
            out.extend(v["value"].as_array().into_iter().flatten().filter_map(|e| entity_to_registration(e, None)));
            let header =
                |n: &str| a.headers.get(n).and_then(|h| h.to_str().ok()).filter(|s| !s.is_empty()).map(str::to_owned);
            // Only a missing NextPartitionKey ends the query; NextRowKey may be absent.
            next = header("x-ms-continuation-NextPartitionKey").map(|pk| (pk, header("x-ms-continuation-NextRowKey")));
            if next.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| {
            (&a.vendor, endpoint_key(&a.endpoint.pe_id)).cmp(&(&b.vendor, endpoint_key(&b.endpoint.pe_id)))
        });
        Ok(out)
    }
}
