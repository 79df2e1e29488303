//! Fake Zilliz Cloud control plane (v2): private endpoint services, whitelist, endpoints.
//!
//! Replies are `{"code":0,"data":...}`; failures `{"code":<n>,"message":"..."}`, and
//! like the real service a failure may come with HTTP 200. Auth is `Bearer <key>`.
//!
//! Choices where the reference says "unconfirmed" or is silent:
//! - A wrong key answers HTTP 401 with code 80001.
//! - An unknown `regionId` answers HTTP 200 with code 96001, an unknown project 96005
//!   (both documented codes).
//! - Creating an endpoint id that exists answers HTTP 200 with code 96021, deleting an
//!   absent one 96022 (invented codes: the real behaviour is unconfirmed, and a client
//!   that lists first never triggers them).
//! - Over the limit (20 requests per second per key by default): HTTP 429 with code 429.
//! - Whitelisting is add-only and idempotent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Gate, LoggedRequest, ServerTask, lock, query_pairs, request_id, segments};

/// How to start the fake.
#[derive(Debug, Clone)]
pub struct ZillizFakeOptions {
    pub api_key: String,
    pub project_id: String,
    /// Known Azure region ids.
    pub region_ids: Vec<String>,
    /// Requests per window per key; `None` disables the limit.
    pub rate_limit: Option<(u32, Duration)>,
}

impl Default for ZillizFakeOptions {
    fn default() -> Self {
        Self {
            api_key: "fake-zilliz-api-key".into(),
            project_id: "proj-4487580fcfe2c8a4391686".into(),
            region_ids: vec!["az-eastus".into(), "az-centralus".into(), "az-germanywestcentral".into()],
            rate_limit: Some((20, Duration::from_secs(1))),
        }
    }
}

/// One registered endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeZillizEndpoint {
    pub region_id: String,
    pub endpoint_id: String,
}

/// What the fake Zilliz holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZillizState {
    /// `(regionId, outerUserId)` whitelist entries, in the order added.
    pub whitelist: Vec<(String, String)>,
    pub endpoints: Vec<FakeZillizEndpoint>,
}

#[derive(Debug)]
struct Inner {
    opts: ZillizFakeOptions,
    gate: Arc<Gate>,
    state: Mutex<ZillizState>,
    /// Next requests answer HTTP 200 with this code and message.
    code_faults: Mutex<Vec<(i64, String)>>,
}

/// A running fake; stops when dropped.
#[derive(Debug)]
pub struct ZillizFake {
    inner: Arc<Inner>,
    server: ServerTask,
}

impl ZillizFake {
    pub async fn start(opts: ZillizFakeOptions) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            gate: Arc::new(Gate::new(opts.rate_limit)),
            opts,
            state: Mutex::new(ZillizState::default()),
            code_faults: Mutex::new(Vec::new()),
        });
        let router = Router::new().fallback(handle).with_state(inner.clone());
        Ok(Self { inner, server: ServerTask::start(router).await? })
    }

    common_fake_api!(ZillizState);
    /// The next `count` authenticated requests answer HTTP 200 with `{code, message}`.
    pub fn fail_with_code(&self, code: i64, message: &str, count: usize) {
        lock(&self.inner.code_faults).extend(std::iter::repeat_n((code, message.to_string()), count));
    }
    /// The alias the fake publishes for a region.
    pub fn endpoint_service(region_id: &str) -> String {
        let region = region_id.trim_start_matches("az-");
        format!("zilliz-prod-infra-privatelink.6a90fc24-16c3-40c1-a94c-648987ac7422.{region}.azure.privatelinkservice")
    }
}

fn fail(status: StatusCode, code: i64, message: &str) -> Response {
    let mut r = (status, Json(json!({ "code": code, "message": message }))).into_response();
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        r.headers_mut().insert("requestid", v);
    }
    r
}

fn ok(data: Value) -> Response {
    let mut r = (StatusCode::OK, Json(json!({ "code": 0, "data": data }))).into_response();
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        r.headers_mut().insert("requestid", v);
    }
    r
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(answer) =
        inner.gate.admit(&method, &uri, |status, message| fail(status, i64::from(status.as_u16()), message)).await
    {
        return answer;
    }
    let token = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if token != Some(inner.opts.api_key.as_str()) {
        return fail(
            StatusCode::UNAUTHORIZED,
            80001,
            "Invalid token: Your token is not valid. Please double-check the request parameters and ensure that the token is valid.",
        );
    }
    if inner.gate.check_rate(&inner.opts.api_key).is_err() {
        return fail(StatusCode::TOO_MANY_REQUESTS, 429, "Too many requests, please try again later.");
    }
    let injected = {
        let mut q = lock(&inner.code_faults);
        if q.is_empty() { None } else { Some(q.remove(0)) }
    };
    if let Some((code, message)) = injected {
        return fail(StatusCode::OK, code, &message);
    }
    route(&inner, &method, &uri, &body)
}

fn route(inner: &Inner, method: &Method, uri: &Uri, body: &[u8]) -> Response {
    let segs = segments(uri);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let query = query_pairs(uri);
    let opts = &inner.opts;
    let known_region = |r: &str| opts.region_ids.iter().any(|k| k == r);
    let invalid_region = |r: &str| fail(StatusCode::OK, 96001, &format!("Invalid RegionId: {r}"));
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["v2", "privateEndpointServices"]) => {
            let wanted = query.get("regionId");
            if let Some(r) = wanted
                && !known_region(r)
            {
                return invalid_region(r);
            }
            let services: Vec<Value> = opts
                .region_ids
                .iter()
                .filter(|r| wanted.is_none_or(|w| w == *r))
                .map(|r| {
                    json!({
                        "regionId": r,
                        "cloudId": "azure",
                        "endpointService": ZillizFake::endpoint_service(r),
                        "whitelistRequired": true,
                    })
                })
                .collect();
            let count = services.len();
            ok(json!({ "endpointServices": services, "currentPage": 1, "pageSize": 10, "count": count }))
        }
        (_, ["v2", "projects", project, rest @ ..]) => {
            if *project != opts.project_id {
                return fail(StatusCode::OK, 96005, &format!("Invalid projectId: {project}"));
            }
            match (method.as_str(), rest) {
                ("POST", ["privateEndpointWhitelist"]) => {
                    #[derive(Deserialize)]
                    #[serde(rename_all = "camelCase")]
                    struct Req {
                        region_id: String,
                        outer_user_id: String,
                    }
                    let Ok(req) = serde_json::from_slice::<Req>(body) else {
                        return fail(StatusCode::OK, 90002, "regionId and outerUserId are required");
                    };
                    if !known_region(&req.region_id) {
                        return invalid_region(&req.region_id);
                    }
                    let mut st = lock(&inner.state);
                    let entry = (req.region_id, req.outer_user_id);
                    if !st.whitelist.contains(&entry) {
                        st.whitelist.push(entry);
                    }
                    ok(json!("success"))
                }
                ("POST", ["privateEndpoints"]) => {
                    #[derive(Deserialize)]
                    #[serde(rename_all = "camelCase")]
                    struct Req {
                        region_id: String,
                        endpoint_id: String,
                    }
                    let Ok(req) = serde_json::from_slice::<Req>(body) else {
                        return fail(StatusCode::OK, 90002, "regionId and endpointId are required");
                    };
                    if !known_region(&req.region_id) {
                        return invalid_region(&req.region_id);
                    }
                    let mut st = lock(&inner.state);
                    if st.endpoints.iter().any(|e| e.endpoint_id == req.endpoint_id && e.region_id == req.region_id) {
                        return fail(StatusCode::OK, 96021, "Private endpoint already exists.");
                    }
                    st.endpoints.push(FakeZillizEndpoint {
                        region_id: req.region_id.clone(),
                        endpoint_id: req.endpoint_id.clone(),
                    });
                    ok(json!({ "endpointId": req.endpoint_id, "regionId": req.region_id }))
                }
                ("GET", ["privateEndpoints"]) => {
                    let page: usize =
                        query.get("currentPage").and_then(|p| p.parse().ok()).filter(|p| *p >= 1).unwrap_or(1);
                    let size: usize = query
                        .get("pageSize")
                        .and_then(|p| p.parse().ok())
                        .filter(|s| (1..=100).contains(s))
                        .unwrap_or(10);
                    let st = lock(&inner.state);
                    let items: Vec<Value> = st
                        .endpoints
                        .iter()
                        .skip((page - 1).saturating_mul(size))
                        .take(size)
                        .map(|e| {
                            json!({
                                "regionId": e.region_id,
                                "cloudId": "azure",
                                "endpointService": ZillizFake::endpoint_service(&e.region_id),
                                "endpointServiceStatus": "Available",
                                "endpointId": e.endpoint_id,
                                "endpointStatus": "accepted",
                                "gcpProjectId": null,
                            })
                        })
                        .collect();
                    ok(
                        json!({ "endpoints": items, "currentPage": page, "pageSize": size, "count": st.endpoints.len() }),
                    )
                }
                ("DELETE", ["privateEndpoints", endpoint_id]) => {
                    let Some(region) = query.get("regionId") else {
                        return fail(StatusCode::OK, 90002, "regionId is required");
                    };
                    let mut st = lock(&inner.state);
                    let before = st.endpoints.len();
                    st.endpoints.retain(|e| !(e.endpoint_id == *endpoint_id && e.region_id == *region));
                    if st.endpoints.len() == before {
                        return fail(StatusCode::OK, 96022, "Private endpoint not found.");
                    }
                    ok(json!({ "endpointId": endpoint_id }))
                }
                _ => fail(StatusCode::NOT_FOUND, 404, "Not found"),
            }
        }
        _ => fail(StatusCode::NOT_FOUND, 404, "Not found"),
    }
}
