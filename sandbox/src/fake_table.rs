//! A fake Azure Table service for the ledger's tests: the REST calls `TableLedger` makes,
//! with the service's status codes and OData error shape, a bearer-token check, the
//! `x-ms-version`/`x-ms-date` headers required, ETags (Insert 409, Update and Delete with
//! `If-Match`: 412 on a changed entity, 404 on a missing one), query paging by
//! continuation headers, and injectable failures.
//!
//! The ledger's behaviour is also tested against Azurite, Microsoft's emulator; this fake
//! stays for what Azurite cannot be made to do: fail on demand (503, 403), and page the
//! way the real service may, with `x-ms-continuation-NextPartitionKey` and no
//! `NextRowKey` ([`FakeTableService::set_partition_only_continuation`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::loopback::LoopbackServer;

/// (PartitionKey, RowKey) -> (entity, ETag)
type Entities = BTreeMap<(String, String), (Value, String)>;

#[derive(Debug, Default)]
struct Inner {
    token: String,
    page_size: usize,
    /// table -> (PartitionKey, RowKey) -> (entity, ETag)
    tables: BTreeMap<String, Entities>,
    faults: VecDeque<u16>,
    requests: usize,
    etags: u64,
    partition_only_continuation: bool,
}

impl Inner {
    fn next_etag(&mut self) -> String {
        self.etags += 1;
        format!("W/\"datetime'2026-01-01T00%3A00%3A00.{:07}Z'\"", self.etags)
    }
}

#[derive(Debug)]
pub struct FakeTableService {
    inner: Arc<Mutex<Inner>>,
    server: LoopbackServer,
}

impl FakeTableService {
    pub async fn start(token: &str, page_size: usize) -> std::io::Result<Self> {
        let inner =
            Arc::new(Mutex::new(Inner { token: token.to_owned(), page_size: page_size.max(1), ..Inner::default() }));
        let router = Router::new().fallback(handle).with_state(inner.clone());
        Ok(Self { inner, server: LoopbackServer::start(router).await? })
    }
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }
    /// The next `count` requests answer `status` (with the service's error shape).
    pub fn fail_next(&self, status: u16, count: usize) {
        let mut i = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        i.faults.extend(std::iter::repeat_n(status, count));
    }
    pub fn entity_count(&self, table: &str) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).tables.get(table).map_or(0, BTreeMap::len)
    }
    /// Every entity of `table` (its properties as stored).
    pub fn entities(&self, table: &str) -> Vec<Value> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.tables.get(table).map(|t| t.values().map(|(v, _)| v.clone()).collect()).unwrap_or_default()
    }
    pub fn requests(&self) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).requests
    }
    /// Pages end at partition boundaries and carry only `x-ms-continuation-NextPartitionKey`
    /// (the service documents that `NextRowKey` may be absent); the next page starts at the
    /// beginning of that partition.
    pub fn set_partition_only_continuation(&self, on: bool) {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).partition_only_continuation = on;
    }
}

fn with_etag(mut resp: Response, etag: &str) -> Response {
    if let Ok(v) = etag.parse() {
        resp.headers_mut().insert("etag", v);
    }
    resp
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"odata.error": {"code": code, "message": {"lang": "en-US", "value": message}}});
    (status, [("content-type", "application/json;odata=nometadata")], body.to_string()).into_response()
}

fn decode(s: &str) -> String {
    let wrapped = format!("k={s}");
    url::form_urlencoded::parse(wrapped.as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// `Name(PartitionKey='a',RowKey='b')` -> (table, pk, rk); `Name()` -> (table, None).
fn parse_path(path: &str) -> Option<(String, Option<(String, String)>)> {
    let p = decode(path.trim_start_matches('/'));
    let open = p.find('(')?;
    let table = p[..open].to_owned();
    let inner = p[open + 1..].strip_suffix(')')?;
    if inner.is_empty() {
        return Some((table, None));
    }
    let rest = inner.strip_prefix("PartitionKey='")?;
    let (pk, rest) = rest.split_once("',RowKey='")?;
    let rk = rest.strip_suffix('\'')?;
    Some((table, Some((pk.replace("''", "'"), rk.replace("''", "'")))))
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = inner.lock().unwrap_or_else(PoisonError::into_inner);
    st.requests += 1;
    if let Some(status) = st.faults.pop_front() {
        let s = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = if status == 403 { "AuthorizationPermissionMismatch" } else { "ServerBusy" };
        return error(s, code, "injected failure");
    }
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    if header("authorization") != format!("Bearer {}", st.token) {
        return error(StatusCode::FORBIDDEN, "AuthenticationFailed", "Server failed to authenticate the request.");
    }
    if header("x-ms-version").as_str() < "2019-02-02" || header("x-ms-date").is_empty() {
        return error(
            StatusCode::FORBIDDEN,
            "AuthenticationFailed",
            "OAuth needs x-ms-version 2019-02-02 or later and x-ms-date.",
        );
    }
    let path = uri.path();
    if method == Method::POST && path == "/Tables" {
        let name = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["TableName"].as_str().map(str::to_owned));
        let Some(name) = name else { return error(StatusCode::BAD_REQUEST, "InvalidInput", "TableName is required.") };
        if st.tables.contains_key(&name) {
            return error(StatusCode::CONFLICT, "TableAlreadyExists", "The table specified already exists.");
        }
        st.tables.insert(name.clone(), BTreeMap::new());
        return (StatusCode::CREATED, axum::Json(json!({"TableName": name}))).into_response();
    }
    if method == Method::POST && !path.contains('(') {
        let table = decode(path.trim_start_matches('/'));
        let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
            return error(StatusCode::BAD_REQUEST, "InvalidInput", "The entity is not JSON.");
        };
        let (Some(pk), Some(rk)) =
            (v["PartitionKey"].as_str().map(str::to_owned), v["RowKey"].as_str().map(str::to_owned))
        else {
            return error(StatusCode::BAD_REQUEST, "PropertiesNeedValue", "PartitionKey and RowKey are required.");
        };
        let etag = st.next_etag();
        let Some(entities) = st.tables.get_mut(&table) else {
            return error(StatusCode::NOT_FOUND, "TableNotFound", "The table specified does not exist.");
        };
        if entities.contains_key(&(pk.clone(), rk.clone())) {
            return error(StatusCode::CONFLICT, "EntityAlreadyExists", "The specified entity already exists.");
        }
        v["PartitionKey"] = json!(pk);
        v["RowKey"] = json!(rk);
        entities.insert((pk, rk), (v.clone(), etag.clone()));
        let resp = if header("prefer") == "return-no-content" {
            StatusCode::NO_CONTENT.into_response()
        } else {
            (StatusCode::CREATED, axum::Json(v)).into_response()
        };
        return with_etag(resp, &etag);
    }
    let Some((table, key)) = parse_path(path) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidUri",
            "The requested URI does not represent any resource on the server.",
        );
    };
    let page_size = st.page_size;
    let partition_only = st.partition_only_continuation;
    let new_etag = st.next_etag();
    let Some(entities) = st.tables.get_mut(&table) else {
        return error(StatusCode::NOT_FOUND, "TableNotFound", "The table specified does not exist.");
    };
    let if_match = header("if-match");
    // None: the condition holds; Some(answer): it does not.
    let precondition = |current: Option<&(Value, String)>| -> Option<Response> {
        match current {
            None => Some(error(StatusCode::NOT_FOUND, "ResourceNotFound", "The specified resource does not exist.")),
            Some((_, etag)) if if_match != "*" && if_match != *etag => Some(error(
                StatusCode::PRECONDITION_FAILED,
                "UpdateConditionNotSatisfied",
                "The update condition specified in the request was not satisfied.",
            )),
            Some(_) => None,
        }
    };
    match (method, key) {
        (Method::PUT, Some(k)) => {
            let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
                return error(StatusCode::BAD_REQUEST, "InvalidInput", "The entity is not JSON.");
            };
            // With If-Match: Update Entity; without: Insert Or Replace.
            if !if_match.is_empty()
                && let Some(refused) = precondition(entities.get(&k))
            {
                return refused;
            }
            v["PartitionKey"] = json!(k.0);
            v["RowKey"] = json!(k.1);
            entities.insert(k, (v, new_etag.clone()));
            with_etag(StatusCode::NO_CONTENT.into_response(), &new_etag)
        }
        (Method::GET, Some(k)) => match entities.get(&k) {
            Some((v, etag)) => with_etag(axum::Json(v.clone()).into_response(), etag),
            None => error(StatusCode::NOT_FOUND, "ResourceNotFound", "The specified resource does not exist."),
        },
        (Method::DELETE, Some(k)) => {
            if if_match.is_empty() {
                return error(StatusCode::BAD_REQUEST, "MissingRequiredHeader", "If-Match is required.");
            }
            if let Some(refused) = precondition(entities.get(&k)) {
                return refused;
            }
            entities.remove(&k);
            StatusCode::NO_CONTENT.into_response()
        }
        (Method::GET, None) => {
            let q: BTreeMap<String, String> = uri
                .query()
                .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default();
            // NextRowKey absent: from the start of that partition.
            let from =
                q.get("NextPartitionKey").map(|pk| (pk.clone(), q.get("NextRowKey").cloned().unwrap_or_default()));
            let mut iter = entities.iter().filter(|(k, _)| from.as_ref().is_none_or(|f| *k >= f)).peekable();
            let mut page: Vec<Value> = Vec::new();
            let mut last_pk: Option<String> = None;
            while page.len() < page_size {
                let Some((k, _)) = iter.peek() else { break };
                if partition_only && last_pk.as_ref().is_some_and(|pk| *pk != k.0) {
                    break;
                }
                let Some((k, (v, _))) = iter.next() else { break };
                last_pk = Some(k.0.clone());
                page.push(v.clone());
            }
            let mut resp = axum::Json(json!({"value": page})).into_response();
            if let Some((k, _)) = iter.peek() {
                let h = resp.headers_mut();
                let starts_partition = last_pk.as_ref().is_none_or(|pk| *pk != k.0);
                if let Ok(pk) = k.0.parse() {
                    h.insert("x-ms-continuation-NextPartitionKey", pk);
                }
                if !(partition_only && starts_partition)
                    && let Ok(rk) = k.1.parse()
                {
                    h.insert("x-ms-continuation-NextRowKey", rk);
                }
            }
            resp
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UnsupportedHttpVerb",
            "The resource doesn't support the specified HTTP verb.",
        ),
    }
}
