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
//! `sandbox::fake_table` for what Azurite cannot inject (503s, 403, paging with only
//! `NextPartitionKey`). [`TableLedger::with_client`] lets a test trust Azurite's
//! self-signed certificate; production uses [`TableLedger::new`].

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::{Ledger, LedgerError, Registration, Version, endpoint_key};
use crate::arm::TokenSource;
use crate::effects::vendors::VendorEndpoint;
use crate::queue::work::now_unix;

pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// The first version that accepts OAuth bearer tokens for the Table service.
pub const TABLE_API_VERSION: &str = "2019-02-02";
const ACCEPT: &str = "application/json;odata=nometadata";
/// Quick retries of transient failures inside one call (the queue retries the rest).
const ATTEMPTS: u32 = 3;

#[derive(Debug)]
pub struct TableLedger {
    http: reqwest::Client,
    endpoint: String,
    table: String,
    tokens: Arc<dyn TokenSource>,
    created: OnceCell<()>,
}

fn row_key(pe_id: &str) -> String {
    endpoint_key(pe_id).replace('/', "|")
}

fn quote(key: &str) -> String {
    let doubled = key.replace('\'', "''");
    url::form_urlencoded::byte_serialize(doubled.as_bytes()).collect()
}

/// The OData error code and message of a failed answer, for error text.
fn odata_error(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = &v["odata.error"];
    match (e["code"].as_str(), e["message"]["value"].as_str()) {
        (Some(c), Some(m)) => format!("{c}: {}", m.lines().next().unwrap_or(m)),
        (Some(c), None) => c.to_owned(),
        _ => String::from_utf8_lossy(body).chars().take(200).collect(),
    }
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
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
        reqwest::Client::builder().timeout(Duration::from_secs(30)).redirect(reqwest::redirect::Policy::none())
    }

    /// Like [`TableLedger::new`] with a given HTTP client (tests: trust an emulator's
    /// self-signed certificate).
    pub fn with_client(
        endpoint: &str,
        table: &str,
        tokens: Arc<dyn TokenSource>,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        let endpoint = endpoint.trim().trim_end_matches('/').to_owned();
        match url::Url::parse(&endpoint) {
            Ok(u) if u.scheme() == "https" || u.host_str().is_some_and(|h| h == "127.0.0.1" || h == "localhost") => {}
            _ => return Err(format!("ledger.table_endpoint {endpoint:?} must be an https:// URL")),
        }
        if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric()) || table.len() > 63 {
            return Err(format!("ledger.table {table:?} must be 3-63 letters and digits"));
        }
        Ok(Self { http, endpoint, table: table.to_owned(), tokens, created: OnceCell::new() })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> Result<Answer, LedgerError> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            let token =
                self.tokens.token(STORAGE_SCOPE).await.map_err(|e| LedgerError::Unavailable(format!("token: {e}")))?;
            let mut auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| LedgerError::Config("the storage token is not a valid header value".into()))?;
            auth.set_sensitive(true);
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.endpoint))
                .header(reqwest::header::AUTHORIZATION, auth)
                .header("x-ms-version", TABLE_API_VERSION)
                .header("x-ms-date", httpdate::fmt_http_date(std::time::SystemTime::now()))
                .header(reqwest::header::ACCEPT, ACCEPT)
                .header("DataServiceVersion", "3.0");
            if let Some(etag) = if_match {
                req = req.header(reqwest::header::IF_MATCH, etag);
            }
            if let Some(b) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header("Prefer", "return-no-content")
                    .body(b.to_string());
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
                        return Err(LedgerError::Config(format!(
                            "table {} refused the app's identity (HTTP {}: {}); grant it Storage Table Data Contributor on the storage account",
                            self.table,
                            status.as_u16(),
                            odata_error(&body)
                        )));
                    }
                    return Ok(Answer { status, headers, body });
                }
                Err(e) => {
                    last = format!("request failed: {}", if e.is_timeout() { "timed out" } else { "connection failed" })
                }
            }
        }
        Err(LedgerError::Unavailable(format!("table {}: {last}", self.table)))
    }

    async fn ensure_table(&self) -> Result<(), LedgerError> {
        self.created
            .get_or_try_init(|| async {
                let a = match self.call(Method::POST, "/Tables", Some(json!({"TableName": self.table})), None).await {
                    Ok(a) => a,
                    // A role scoped to the table itself (what infra/ grants) may not create
                    // tables: infra created it; the entity calls report real trouble.
                    Err(LedgerError::Config(why)) => {
                        tracing::debug!(%why, "cannot create the ledger table; assuming it exists");
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                match a.status.as_u16() {
                    200..=299 | 409 => Ok(()),
                    s => Err(LedgerError::Config(format!(
                        "creating table {}: HTTP {s}: {}",
                        self.table,
                        odata_error(&a.body)
                    ))),
                }
            })
            .await
            .map(|_| ())
    }

    fn entity_path(&self, vendor: &str, pe_id: &str) -> String {
        format!("/{}(PartitionKey='{}',RowKey='{}')", self.table, quote(vendor), quote(&row_key(pe_id)))
    }

    fn unexpected(&self, what: &str, a: &Answer) -> LedgerError {
        LedgerError::Unavailable(format!(
            "table {} {what}: HTTP {}: {}",
            self.table,
            a.status.as_u16(),
            odata_error(&a.body)
        ))
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
