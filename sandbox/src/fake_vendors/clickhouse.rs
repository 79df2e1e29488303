//! Fake ClickHouse Cloud API (`/v1/organizations/...`).
//!
//! Implements what the allowlist client and the demo touch: GET/PATCH organization,
//! GET services, GET/PATCH service, GET service `privateEndpointConfig` and POST service
//! `privateEndpoint`. Envelopes as in the OpenAPI excerpt: `{status, requestId, result}`,
//! errors `{status, error: "CODE: text", requestId}`.
//!
//! Choices where the reference says "unconfirmed":
//! - Adding an id a service already lists answers 400 (the Terraform provider avoids
//!   this case "in order to not fail"), so a client that does not read first fails here.
//! - A service add also registers the id with the organization (Terraform ≥ 3.2.0 relies
//!   on it); removing it from a service does not remove it from the organization.
//! - Removing an absent id is a no-op (200), on a service and on the organization.
//! - Id comparison is case-insensitive.
//! - Over the limit (10 per 10 s per key by default): 429 with `X-RateLimit-Reset`
//!   (seconds, as the Terraform provider reads it); ClickHouse documents no Retry-After.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Gate, LoggedRequest, ServerTask, lock, request_id, segments, whole_seconds};

/// How to start the fake.
#[derive(Debug, Clone)]
pub struct ClickHouseFakeOptions {
    pub organization_id: String,
    pub key_id: String,
    pub key_secret: String,
    /// Services that exist, all in `region`.
    pub service_ids: Vec<String>,
    /// Azure region of the services (ClickHouse's enum value, e.g. `westus3`).
    pub region: String,
    /// Requests per window per key; `None` disables the limit.
    pub rate_limit: Option<(u32, Duration)>,
}

impl Default for ClickHouseFakeOptions {
    fn default() -> Self {
        Self {
            organization_id: "3f9d5c3e-0000-4000-8000-00000000c0de".into(),
            key_id: "fake-key-id".into(),
            key_secret: "fake-key-secret".into(),
            service_ids: vec!["9a1b2c3d-0000-4000-8000-000000000001".into()],
            region: "westus3".into(),
            rate_limit: Some((10, Duration::from_secs(10))),
        }
    }
}

/// One organization-level private endpoint entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgEndpoint {
    pub id: String,
    pub description: String,
    pub cloud_provider: String,
    pub region: String,
}

/// What the fake ClickHouse holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClickHouseState {
    /// Service id -> its `privateEndpointIds`.
    pub services: BTreeMap<String, Vec<String>>,
    /// The organization's `privateEndpoints`.
    pub org_private_endpoints: Vec<OrgEndpoint>,
}

#[derive(Debug)]
struct Inner {
    opts: ClickHouseFakeOptions,
    gate: Arc<Gate>,
    state: Mutex<ClickHouseState>,
}

/// A running fake; stops when dropped.
#[derive(Debug)]
pub struct ClickHouseFake {
    inner: Arc<Inner>,
    server: ServerTask,
}

impl ClickHouseFake {
    pub async fn start(opts: ClickHouseFakeOptions) -> std::io::Result<Self> {
        let state = ClickHouseState {
            services: opts.service_ids.iter().map(|s| (s.clone(), Vec::new())).collect(),
            org_private_endpoints: Vec::new(),
        };
        let inner = Arc::new(Inner { gate: Arc::new(Gate::new(opts.rate_limit)), opts, state: Mutex::new(state) });
        let router = Router::new().fallback(handle).with_state(inner.clone());
        Ok(Self { inner, server: ServerTask::start(router).await? })
    }

    common_fake_api!(ClickHouseState);
    /// The alias ClickHouse publishes for the fake's services.
    pub fn endpoint_service_id(&self) -> String {
        let r = &self.inner.opts.region;
        format!("production-{r}-0-0.00000000-0000-4000-8000-00000000c0de.{r}.azure.privatelinkservice")
    }
}

fn error(status: StatusCode, code: &str, text: &str) -> Response {
    let body = json!({ "status": status.as_u16(), "error": format!("{code}: {text}"), "requestId": request_id() });
    (status, Json(body)).into_response()
}

fn ok(result: Value) -> Response {
    (StatusCode::OK, Json(json!({ "status": 200, "requestId": request_id(), "result": result }))).into_response()
}

/// The Basic credentials' key id if they match, else `None`.
fn authenticate(opts: &ClickHouseFakeOptions, headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    (id == opts.key_id && secret == opts.key_secret).then(|| id.to_string())
}

/// An injected fault in ClickHouse's envelope; the code is the status's name, as in
/// ClickHouse's own `BAD_REQUEST`, `NOT_FOUND`, `TOO_MANY_REQUESTS`.
fn injected(status: StatusCode, message: &str) -> Response {
    let code = status.canonical_reason().unwrap_or("ERROR").to_ascii_uppercase().replace(' ', "_");
    error(status, &code, message)
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(answer) = inner.gate.admit(&method, &uri, injected).await {
        return answer;
    }
    let Some(key) = authenticate(&inner.opts, &headers) else {
        return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "invalid API key id or secret");
    };
    if let Err(wait) = inner.gate.check_rate(&key) {
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS", "rate limit exceeded");
        r.headers_mut().insert("x-ratelimit-reset", HeaderValue::from(whole_seconds(wait)));
        return r;
    }
    route(&inner, &method, &uri, &body)
}

fn route(inner: &Inner, method: &Method, uri: &Uri, body: &[u8]) -> Response {
    let segs = segments(uri);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let opts = &inner.opts;
    match segs.as_slice() {
        ["v1", "organizations", org, rest @ ..] => {
            if !org.eq_ignore_ascii_case(&opts.organization_id) {
                return error(StatusCode::NOT_FOUND, "NOT_FOUND", "organization not found");
            }
            match (method.as_str(), rest) {
                ("GET", []) => ok(org_json(inner)),
                ("PATCH", []) => patch_org(inner, body),
                ("GET", ["services"]) => {
                    let st = lock(&inner.state);
                    ok(Value::Array(st.services.iter().map(|(id, ids)| service_json(opts, id, ids)).collect()))
                }
                (_, ["services", svc, tail @ ..]) => {
                    if !lock(&inner.state).services.contains_key(*svc) {
                        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "service not found");
                    }
                    match (method.as_str(), tail) {
                        ("GET", []) => {
                            let st = lock(&inner.state);
                            ok(service_json(opts, svc, st.services.get(*svc).map(Vec::as_slice).unwrap_or_default()))
                        }
                        ("PATCH", []) => patch_service(inner, svc, body),
                        ("GET", ["privateEndpointConfig"]) => ok(json!({
                            "endpointServiceId": format!(
                                "production-{r}-0-0.00000000-0000-4000-8000-00000000c0de.{r}.azure.privatelinkservice",
                                r = opts.region
                            ),
                            "privateDnsHostname": format!("abcd1234ef.{}.privatelink.azure.clickhouse.cloud", opts.region),
                        })),
                        ("POST", ["privateEndpoint"]) => post_private_endpoint(inner, svc, body),
                        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route"),
                    }
                }
                _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route"),
    }
}

fn service_json(opts: &ClickHouseFakeOptions, id: &str, ids: &[String]) -> Value {
    json!({
        "id": id,
        "name": format!("service-{}", id.chars().take(8).collect::<String>()),
        "provider": "azure",
        "region": opts.region,
        "state": "running",
        "tier": "production",
        "privateEndpointIds": ids,
        "availablePrivateEndpointIds": [],
        "currentScaling": {},
        "autoscalingMode": "default",
    })
}

fn org_json(inner: &Inner) -> Value {
    let st = lock(&inner.state);
    let pes: Vec<Value> = st
        .org_private_endpoints
        .iter()
        .map(|e| json!({ "id": e.id, "description": e.description, "cloudProvider": e.cloud_provider, "region": e.region }))
        .collect();
    json!({
        "id": inner.opts.organization_id,
        "createdAt": "2025-01-01T00:00:00Z",
        "name": "Fake organization",
        "privateEndpoints": pes,
        "enableCoreDumps": false,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServicePatch {
    #[serde(default)]
    private_endpoint_ids: Option<IdsPatch>,
}

#[derive(Deserialize, Default)]
struct IdsPatch {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

fn register_with_org(st: &mut ClickHouseState, id: &str, region: &str) {
    if !st.org_private_endpoints.iter().any(|e| e.id.eq_ignore_ascii_case(id)) {
        st.org_private_endpoints.push(OrgEndpoint {
            id: id.to_string(),
            description: String::new(),
            cloud_provider: "azure".into(),
            region: region.to_string(),
        });
    }
}

fn patch_service(inner: &Inner, svc: &str, body: &[u8]) -> Response {
    let patch: ServicePatch = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BAD_REQUEST", &format!("request body is invalid: {e}")),
    };
    let mut st = lock(&inner.state);
    let Some(mut ids) = st.services.get(svc).cloned() else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "service not found");
    };
    if let Some(p) = patch.private_endpoint_ids {
        // "remove" runs before "add" (OpenAPI InstancePrivateEndpointsPatch).
        ids.retain(|x| !p.remove.iter().any(|r| r.eq_ignore_ascii_case(x)));
        for id in &p.add {
            if id.trim().is_empty() {
                return error(StatusCode::BAD_REQUEST, "BAD_REQUEST", "private endpoint id must not be empty");
            }
            if ids.iter().any(|x| x.eq_ignore_ascii_case(id)) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "BAD_REQUEST",
                    &format!("private endpoint {id} is already added to the service"),
                );
            }
            ids.push(id.clone());
        }
        for id in &p.add {
            register_with_org(&mut st, id, &inner.opts.region);
        }
    }
    st.services.insert(svc.to_string(), ids.clone());
    drop(st);
    ok(service_json(&inner.opts, svc, &ids))
}

fn post_private_endpoint(inner: &Inner, svc: &str, body: &[u8]) -> Response {
    #[derive(Deserialize)]
    struct Post {
        id: String,
        #[serde(default)]
        description: String,
    }
    let post: Post = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BAD_REQUEST", &format!("request body is invalid: {e}")),
    };
    let mut st = lock(&inner.state);
    if let Some(ids) = st.services.get_mut(svc)
        && !ids.iter().any(|x| x.eq_ignore_ascii_case(&post.id))
    {
        ids.push(post.id.clone());
    }
    register_with_org(&mut st, &post.id, &inner.opts.region);
    ok(json!({ "id": post.id, "description": post.description, "cloudProvider": "azure", "region": inner.opts.region }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrgPatch {
    #[serde(default)]
    private_endpoints: Option<OrgEndpointsPatch>,
}

#[derive(Deserialize, Default)]
struct OrgEndpointsPatch {
    #[serde(default)]
    add: Vec<OrgPatchEntry>,
    #[serde(default)]
    remove: Vec<OrgPatchEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrgPatchEntry {
    id: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    cloud_provider: Option<String>,
    #[serde(default)]
    region: Option<String>,
}

const AZURE_REGIONS: [&str; 5] = ["eastus", "eastus2", "westus3", "germanywestcentral", "centralus"];

fn patch_org(inner: &Inner, body: &[u8]) -> Response {
    let patch: OrgPatch = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BAD_REQUEST", &format!("request body is invalid: {e}")),
    };
    if let Some(p) = patch.private_endpoints {
        for e in p.add.iter().chain(p.remove.iter()) {
            // The spec's enums: an Azure region outside them is a 400.
            let region_ok = e.region.as_deref().is_some_and(|r| AZURE_REGIONS.contains(&r));
            let provider_ok = e.cloud_provider.as_deref() == Some("azure");
            if !region_ok || !provider_ok {
                return error(
                    StatusCode::BAD_REQUEST,
                    "BAD_REQUEST",
                    "request body.privateEndpoints entries need cloudProvider \"azure\" and a supported region",
                );
            }
        }
        let mut st = lock(&inner.state);
        st.org_private_endpoints.retain(|x| !p.remove.iter().any(|r| r.id.eq_ignore_ascii_case(&x.id)));
        for e in p.add {
            if st.org_private_endpoints.iter().any(|x| x.id.eq_ignore_ascii_case(&e.id)) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "BAD_REQUEST",
                    &format!("private endpoint {} already exists", e.id),
                );
            }
            st.org_private_endpoints.push(OrgEndpoint {
                id: e.id,
                description: e.description.unwrap_or_default(),
                cloud_provider: "azure".into(),
                region: e.region.unwrap_or_default(),
            });
        }
    }
    ok(org_json(inner))
}
