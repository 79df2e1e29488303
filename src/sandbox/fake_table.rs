//! A fake Azure Table service for the ledger's tests: the REST calls `TableLedger` makes,
//! with the service's status codes and OData error shape, a bearer-token check, the
//! `x-ms-version`/`x-ms-date` headers required, query paging by continuation headers, and
//! injectable failures.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::loopback::LoopbackServer;

#[derive(Debug, Default)]
struct Inner {
    token: String,
    page_size: usize,
    /// table -> (PartitionKey, RowKey) -> entity
    tables: BTreeMap<String, BTreeMap<(String, String), Value>>,
    faults: VecDeque<u16>,
    requests: usize,
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
    pub fn requests(&self) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).requests
    }
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
    let Some((table, key)) = parse_path(path) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidUri",
            "The requested URI does not represent any resource on the server.",
        );
    };
    let page_size = st.page_size;
    let Some(entities) = st.tables.get_mut(&table) else {
        return error(StatusCode::NOT_FOUND, "TableNotFound", "The table specified does not exist.");
    };
    match (method, key) {
        (Method::PUT, Some(k)) => {
            let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
                return error(StatusCode::BAD_REQUEST, "InvalidInput", "The entity is not JSON.");
            };
            v["PartitionKey"] = json!(k.0);
            v["RowKey"] = json!(k.1);
            entities.insert(k, v);
            StatusCode::NO_CONTENT.into_response()
        }
        (Method::GET, Some(k)) => match entities.get(&k) {
            Some(v) => axum::Json(v.clone()).into_response(),
            None => error(StatusCode::NOT_FOUND, "ResourceNotFound", "The specified resource does not exist."),
        },
        (Method::DELETE, Some(k)) => {
            if header("if-match").is_empty() {
                return error(StatusCode::BAD_REQUEST, "MissingRequiredHeader", "If-Match is required.");
            }
            match entities.remove(&k) {
                Some(_) => StatusCode::NO_CONTENT.into_response(),
                None => error(StatusCode::NOT_FOUND, "ResourceNotFound", "The specified resource does not exist."),
            }
        }
        (Method::GET, None) => {
            let q: BTreeMap<String, String> = uri
                .query()
                .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default();
            let from = match (q.get("NextPartitionKey"), q.get("NextRowKey")) {
                (Some(pk), Some(rk)) => Some((pk.clone(), rk.clone())),
                _ => None,
            };
            let mut iter = entities.iter().filter(|(k, _)| from.as_ref().is_none_or(|f| *k >= f)).peekable();
            let page: Vec<Value> = iter.by_ref().take(page_size).map(|(_, v)| v.clone()).collect();
            let mut resp = axum::Json(json!({"value": page})).into_response();
            if let Some((k, _)) = iter.peek() {
                let h = resp.headers_mut();
                if let (Ok(pk), Ok(rk)) = (k.0.parse(), k.1.parse()) {
                    h.insert("x-ms-continuation-NextPartitionKey", pk);
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
