//! Azure Table storage over REST with the app's identity: the transport the vendor
//! ledger and the dead-letter table share.
//!
//! Why one module: both stores speak the same protocol (bearer token for
//! `https://storage.azure.com`, `x-ms-version` 2019-02-02, the first that accepts OAuth;
//! JSON without metadata; `If-Match` for conditional writes), retry the same answers
//! (429, 5xx, a broken connection; three tries) and must say the same thing when the
//! identity lacks its role. Each store keeps its own entities, keys and error type and
//! maps [`TableError`] onto it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::credential::TokenSource;

const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// The first Table service version that accepts OAuth bearer tokens.
pub const TABLE_API_VERSION: &str = "2019-02-02";
const ACCEPT: &str = "application/json;odata=nometadata";
const ATTEMPTS: u32 = 3;

/// What went wrong, in the two kinds every store distinguishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableError {
    /// A person must act (a missing role, a bad setting).
    Config(String),
    /// Worth retrying later.
    Unavailable(String),
}

/// An answer of any status; the caller decides what it means.
pub struct TableAnswer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

/// One table on one account.
#[derive(Debug)]
pub struct TableRest {
    http: reqwest::Client,
    endpoint: String,
    table: String,
    /// How errors name the table (`dead-letter table workdeadletters`).
    label: String,
    tokens: Arc<dyn TokenSource>,
    created: OnceCell<()>,
}

/// The HTTP settings the stores use (a test adds a root certificate for an emulator).
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).redirect(reqwest::redirect::Policy::none())
}

/// `'` doubled and the key percent-encoded, for `(PartitionKey='…',RowKey='…')`.
pub fn quote(key: &str) -> String {
    url::form_urlencoded::byte_serialize(key.replace('\'', "''").as_bytes()).collect()
}

/// The OData error code and first message line of a failed answer, for error text.
pub fn odata_error(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = &v["odata.error"];
    match (e["code"].as_str(), e["message"]["value"].as_str()) {
        (Some(c), Some(m)) => format!("{c}: {}", m.lines().next().unwrap_or(m)),
        (Some(c), None) => c.to_owned(),
        _ => String::from_utf8_lossy(body).chars().take(200).collect(),
    }
}

impl TableRest {
    /// `endpoint`: `https://<account>.table.core.windows.net` (http only on loopback);
    /// `setting` names the configuration keys in errors (`ledger.table_endpoint`).
    pub fn new(
        setting: &str,
        label: &str,
        endpoint: &str,
        table: &str,
        tokens: Arc<dyn TokenSource>,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        let endpoint = endpoint.trim().trim_end_matches('/').to_owned();
        if crate::model::endpoint_url::credential_url(&endpoint).is_err() {
            return Err(format!("{setting} {endpoint:?} must be an https:// URL"));
        }
        if table.len() < 3 || table.len() > 63 || !table.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("table name {table:?} must be 3-63 letters and digits"));
        }
        Ok(Self {
            http,
            endpoint,
            table: table.to_owned(),
            label: format!("{label} {table}"),
            tokens,
            created: OnceCell::new(),
        })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// `<label> <table> <what>: HTTP <status>: <odata error>`, for answers a store did not expect.
    pub fn unexpected(&self, what: &str, a: &TableAnswer) -> String {
        format!("{} {what}: HTTP {}: {}", self.label, a.status.as_u16(), odata_error(&a.body))
    }

    /// One request, retried on 429, 5xx and broken connections. 401/403 are the missing
    /// role, said once; any other status is returned for the caller to judge.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> Result<TableAnswer, TableError> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            let token = self
                .tokens
                .token(STORAGE_SCOPE)
                .await
                .map_err(|e| TableError::Unavailable(format!("{} token: {e}", self.label)))?;
            let mut auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| TableError::Config("the storage token is not a valid header value".into()))?;
            auth.set_sensitive(true);
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.endpoint))
                .header(reqwest::header::AUTHORIZATION, auth)
                .header("x-ms-version", TABLE_API_VERSION)
                .header("x-ms-date", httpdate::fmt_http_date(SystemTime::now()))
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
                        return Err(TableError::Config(format!(
                            "{} refused the app's identity (HTTP {}: {}); it needs Storage Table Data Contributor on the table",
                            self.label,
                            status.as_u16(),
                            odata_error(&body)
                        )));
                    }
                    return Ok(TableAnswer { status, headers, body });
                }
                Err(e) => {
                    last = format!("request failed: {}", if e.is_timeout() { "timed out" } else { "connection failed" })
                }
            }
        }
        Err(TableError::Unavailable(format!("{}: {last}", self.label)))
    }

    /// Creates the table on first use. A role scoped to the table itself (what infra
    /// grants) may not create tables: infra did, so a refusal here is not an error, and
    /// the entity calls report real trouble.
    pub async fn ensure_table(&self) -> Result<(), TableError> {
        self.created
            .get_or_try_init(|| async {
                match self.call(Method::POST, "/Tables", Some(json!({"TableName": self.table})), None).await {
                    Ok(a) if a.status.is_success() || a.status == StatusCode::CONFLICT => Ok(()),
                    Ok(a) => Err(TableError::Config(format!(
                        "creating table {}: HTTP {}: {}",
                        self.table,
                        a.status.as_u16(),
                        odata_error(&a.body)
                    ))),
                    Err(TableError::Config(why)) => {
                        tracing::debug!(%why, "cannot create the table; assuming infra did");
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            })
            .await
            .map(|_| ())
    }
}
