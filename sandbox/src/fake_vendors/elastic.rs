//! Fake Elastic Cloud Hosted traffic-filter API (`/api/v1/deployments/traffic-filter/...`).
//!
//! Rulesets (list with `region` / `include_associations`, create 201 `{id}`, get, delete
//! with `ignore_associations`), associations (create 201 / 200 when it already exists,
//! list, delete; 404 `traffic_filter.not_found`). Errors are `BasicFailedReply`
//! `{"errors":[{code,message,fields}]}`, auth is `Authorization: ApiKey <key>`.
//!
//! Choices where the reference says "unconfirmed" or is silent:
//! - `traffic_filter.azure_private_link_connection_not_found` is answered with HTTP 400
//!   while connections are hidden ([`ElasticFake::hide_connections`]).
//! - Ruleset names are not unique: the same POST twice makes two rulesets.
//! - Deleting a ruleset that still has associations with `ignore_associations=false`
//!   answers 400 `traffic_filter.request_execution_failed`.
//! - A wrong key answers 401 `root.unauthorized`.
//! - The rate limit (unpublished) defaults to 10 requests per second per key; every
//!   answer carries `x-ratelimit-limit` and `x-ratelimit-interval`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Gate, LoggedRequest, ServerTask, lock, query_pairs, segments, whole_seconds};

/// How to start the fake.
#[derive(Debug, Clone)]
pub struct ElasticFakeOptions {
    pub api_key: String,
    /// Deployments that exist (associations with others answer 404).
    pub deployment_ids: Vec<String>,
    /// Requests per window per key; `None` disables the limit.
    pub rate_limit: Option<(u32, Duration)>,
}

impl Default for ElasticFakeOptions {
    fn default() -> Self {
        Self {
            api_key: "fake-elastic-api-key".into(),
            deployment_ids: vec!["a8c854b1ff854d46a4e0ad5cb82ab9a9".into()],
            rate_limit: Some((10, Duration::from_secs(1))),
        }
    }
}

/// One ruleset as the fake holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRuleset {
    pub id: String,
    pub name: String,
    pub description: String,
    pub region: String,
    pub ruleset_type: String,
    pub include_by_default: bool,
    /// `(azure_endpoint_name, azure_endpoint_guid)` per rule.
    pub rules: Vec<(String, String)>,
    /// Associated deployment ids.
    pub deployments: Vec<String>,
}

/// What the fake Elastic holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElasticState {
    pub rulesets: BTreeMap<String, FakeRuleset>,
}

/// How long ruleset creation answers `connection_not_found`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hide {
    /// The next `n` create requests.
    Requests(u32),
    /// Every create request for this long from now.
    For(Duration),
}

#[derive(Debug)]
struct Inner {
    opts: ElasticFakeOptions,
    gate: Arc<Gate>,
    state: Mutex<ElasticState>,
    hidden: Mutex<Option<HiddenUntil>>,
}

#[derive(Debug, Clone, Copy)]
enum HiddenUntil {
    Requests(u32),
    Instant(Instant),
}

/// A running fake; stops when dropped.
#[derive(Debug)]
pub struct ElasticFake {
    inner: Arc<Inner>,
    server: ServerTask,
}

impl ElasticFake {
    pub async fn start(opts: ElasticFakeOptions) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            gate: Arc::new(Gate::new(opts.rate_limit)),
            opts,
            state: Mutex::new(ElasticState::default()),
            hidden: Mutex::new(None),
        });
        let router = Router::new().fallback(handle).with_state(inner.clone());
        Ok(Self { inner, server: ServerTask::start(router).await? })
    }

    common_fake_api!(ElasticState);
    /// Simulates a freshly created endpoint that Elastic's Private Link Service cannot
    /// see yet: ruleset creation answers `connection_not_found`.
    pub fn hide_connections(&self, hide: Hide) {
        *lock(&self.inner.hidden) = Some(match hide {
            Hide::Requests(n) => HiddenUntil::Requests(n),
            Hide::For(d) => HiddenUntil::Instant(Instant::now() + d),
        });
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "errors": [{ "code": code, "message": message, "fields": [] }] }))).into_response()
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut response = gated(&inner, &method, &uri, &headers, &body).await;
    if let Some((limit, window)) = inner.opts.rate_limit {
        let h = response.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from(limit));
        h.insert("x-ratelimit-interval", HeaderValue::from(whole_seconds(window)));
    }
    response
}

/// An injected fault in Elastic's `BasicFailedReply`, with the codes Elastic uses for
/// these statuses.
fn injected(status: StatusCode, message: &str) -> Response {
    let code = match status {
        StatusCode::INTERNAL_SERVER_ERROR => "traffic_filter.request_execution_failed",
        StatusCode::TOO_MANY_REQUESTS => "root.too_many_requests",
        StatusCode::SERVICE_UNAVAILABLE => "root.unavailable",
        StatusCode::GATEWAY_TIMEOUT => "root.gateway_timeout",
        _ => "root.injected_failure",
    };
    error(status, code, message)
}

async fn gated(inner: &Inner, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Some(answer) = inner.gate.admit(method, uri, injected).await {
        return answer;
    }
    let key = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("ApiKey "));
    if key != Some(inner.opts.api_key.as_str()) {
        return error(StatusCode::UNAUTHORIZED, "root.unauthorized", "The supplied authentication is invalid");
    }
    if let Err(wait) = inner.gate.check_rate(&inner.opts.api_key) {
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "root.too_many_requests", "rate limit exceeded");
        r.headers_mut().insert("x-ratelimit-remaining", HeaderValue::from(0));
        r.headers_mut().insert("retry-after", HeaderValue::from(whole_seconds(wait)));
        return r;
    }
    route(inner, method, uri, body)
}

fn route(inner: &Inner, method: &Method, uri: &Uri, body: &[u8]) -> Response {
    let segs = segments(uri);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let query = query_pairs(uri);
    let flag = |k: &str| query.get(k).is_some_and(|v| v == "true");
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["api", "v1", "deployments", "traffic-filter", "rulesets"]) => {
            let st = lock(&inner.state);
            let region = query.get("region");
            let list: Vec<Value> = st
                .rulesets
                .values()
                .filter(|r| region.is_none_or(|reg| *reg == r.region))
                .map(|r| ruleset_json(r, flag("include_associations")))
                .collect();
            (StatusCode::OK, Json(json!({ "rulesets": list }))).into_response()
        }
        ("POST", ["api", "v1", "deployments", "traffic-filter", "rulesets"]) => create(inner, body),
        (_, ["api", "v1", "deployments", "traffic-filter", "rulesets", id, rest @ ..]) => {
            let mut st = lock(&inner.state);
            let Some(ruleset) = st.rulesets.get_mut(*id) else {
                return error(
                    StatusCode::NOT_FOUND,
                    "traffic_filter.not_found",
                    &format!("The traffic filter ruleset specified by {{{id}}} cannot be found."),
                );
            };
            match (method.as_str(), rest) {
                ("GET", []) => {
                    (StatusCode::OK, Json(ruleset_json(ruleset, flag("include_associations")))).into_response()
                }
                ("DELETE", []) => {
                    if !ruleset.deployments.is_empty() && !flag("ignore_associations") {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "traffic_filter.request_execution_failed",
                            "The ruleset is still associated with deployments; remove the associations first.",
                        );
                    }
                    st.rulesets.remove(*id);
                    (StatusCode::OK, Json(json!({}))).into_response()
                }
                ("GET", ["associations"]) => (StatusCode::OK, Json(associations_json(ruleset))).into_response(),
                ("POST", ["associations"]) => {
                    #[derive(Deserialize)]
                    struct Assoc {
                        entity_type: String,
                        id: String,
                    }
                    let Ok(a) = serde_json::from_slice::<Assoc>(body) else {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "root.invalid_json_request",
                            "entity_type and id are required",
                        );
                    };
                    if a.entity_type != "deployment" {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "traffic_filter.invalid_association_type",
                            "unsupported type",
                        );
                    }
                    if !inner.opts.deployment_ids.contains(&a.id) {
                        return error(StatusCode::NOT_FOUND, "deployments.deployment_not_found", "no such deployment");
                    }
                    if ruleset.deployments.contains(&a.id) {
                        return (StatusCode::OK, Json(json!({}))).into_response();
                    }
                    ruleset.deployments.push(a.id);
                    (StatusCode::CREATED, Json(json!({}))).into_response()
                }
                ("DELETE", ["associations", "deployment", dep]) => {
                    if let Some(pos) = ruleset.deployments.iter().position(|d| d == dep) {
                        ruleset.deployments.remove(pos);
                        (StatusCode::OK, Json(json!({}))).into_response()
                    } else {
                        error(
                            StatusCode::NOT_FOUND,
                            "traffic_filter.not_found",
                            "The traffic filter ruleset association cannot be found.",
                        )
                    }
                }
                _ => error(StatusCode::NOT_FOUND, "root.resource_not_found", "no such route"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "root.resource_not_found", "no such route"),
    }
}

fn ruleset_json(r: &FakeRuleset, with_associations: bool) -> Value {
    let rules: Vec<Value> = r
        .rules
        .iter()
        .enumerate()
        .map(|(i, (name, guid))| {
            json!({ "id": format!("{}-rule-{i}", r.id), "azure_endpoint_name": name, "azure_endpoint_guid": guid })
        })
        .collect();
    let mut v = json!({
        "id": r.id,
        "name": r.name,
        "description": r.description,
        "type": r.ruleset_type,
        "include_by_default": r.include_by_default,
        "region": r.region,
        "rules": rules,
        "total_associations": r.deployments.len(),
    });
    if with_associations {
        v["associations"] = associations_json(r)["associations"].clone();
    }
    v
}

fn associations_json(r: &FakeRuleset) -> Value {
    let list: Vec<Value> = r.deployments.iter().map(|d| json!({ "entity_type": "deployment", "id": d })).collect();
    json!({ "associations": list, "total_associations": r.deployments.len() })
}

fn connections_hidden(inner: &Inner) -> bool {
    let mut hidden = lock(&inner.hidden);
    match *hidden {
        Some(HiddenUntil::Requests(n)) if n > 0 => {
            *hidden = if n > 1 { Some(HiddenUntil::Requests(n - 1)) } else { None };
            true
        }
        Some(HiddenUntil::Instant(until)) if Instant::now() < until => true,
        _ => {
            *hidden = None;
            false
        }
    }
}

fn create(inner: &Inner, body: &[u8]) -> Response {
    #[derive(Deserialize)]
    struct Req {
        name: String,
        #[serde(default)]
        description: String,
        region: String,
        #[serde(rename = "type")]
        ruleset_type: String,
        include_by_default: bool,
        rules: Vec<ReqRule>,
    }
    #[derive(Deserialize)]
    struct ReqRule {
        #[serde(default)]
        azure_endpoint_name: Option<String>,
        #[serde(default)]
        azure_endpoint_guid: Option<String>,
    }
    let req: Req = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "root.invalid_json_request",
                &format!("name, region, type, include_by_default and rules are required: {e}"),
            );
        }
    };
    let mut rules = Vec::new();
    if req.ruleset_type == "azure_private_endpoint" {
        if !req.region.starts_with("azure-") {
            return error(StatusCode::BAD_REQUEST, "traffic_filter.region_not_found", "unknown region");
        }
        for r in req.rules {
            match (r.azure_endpoint_name, r.azure_endpoint_guid) {
                (Some(n), Some(g)) if !n.is_empty() && !g.is_empty() => rules.push((n, g)),
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "traffic_filter.invalid_rule",
                        "azure_endpoint_name and azure_endpoint_guid are required",
                    );
                }
            }
        }
        if connections_hidden(inner) {
            return error(
                StatusCode::BAD_REQUEST,
                "traffic_filter.azure_private_link_connection_not_found",
                "The Azure Private Link connection could not be found.",
            );
        }
    }
    let id: String = (0..32).map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0')).collect();
    lock(&inner.state).rulesets.insert(
        id.clone(),
        FakeRuleset {
            id: id.clone(),
            name: req.name,
            description: req.description,
            region: req.region,
            ruleset_type: req.ruleset_type,
            include_by_default: req.include_by_default,
            rules,
            deployments: Vec::new(),
        },
    );
    (StatusCode::CREATED, Json(json!({ "id": id }))).into_response()
}
