//! Fake Azure Resource Manager on loopback, for the demo and the integration tests.
//!
//! The point of a fake is that the real client cannot tell the difference, so this one
//! reproduces what `../shared/reference/arm.md` and the official examples in
//! `../shared/fixtures/arm` show, quirks included:
//!
//! * bearer token required (401 `InvalidAuthenticationToken` otherwise), `api-version`
//!   required (400 `MissingApiVersionParameter`), ids matched case-insensitively while
//!   the stored spelling is returned;
//! * ARM's per-subscription token buckets (reads 250 + 25/s, writes and deletes 200 +
//!   10/s) answering 429 with `Retry-After` and the `x-ms-ratelimit-remaining-*`
//!   headers, plus an optional Private DNS read limit answering 429 with
//!   `Retry-After: 10`;
//! * the resources of [`network`] (private endpoints, NICs, zone groups) and [`dns`]
//!   (private DNS zones and A record sets with ETags, 412, 200/201/204, lower-cased
//!   names, `nextLink` paging, long-running zone operations);
//! * fault injection ([`Fault`]) for 429/5xx/timeouts, a fixed answer latency for
//!   benchmarks, and a request log so tests can count writes;
//! * strict api-versions ([`versions`]): every route is served only at the versions the
//!   specs publish for its type, anything else is ARM's 400, so a client pinning a wrong
//!   version fails here as it would in Azure;
//! * opt-in role-based access control ([`rbac`], [`FakeArmOptions::rbac`]): with the grants
//!   `infra/` assigns, a request outside them is ARM's 403 `AuthorizationFailed`, which is
//!   how the tests prove the infra grants are enough and every one of them is needed.
//!
//! Tests and the demo seed state through [`FakeArm`]'s methods (the way a person would
//! create an endpoint in the portal) and then let the product read it over HTTP.

pub mod connections;
pub mod dns;
pub mod eventgrid;
mod graph;
pub mod network;
mod permissions;
mod providers;
pub mod rbac;
mod subscriptions;
pub mod tags;
mod throttle;
pub mod versions;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub use network::{EndpointSpec, LinkSpec, MemberSpec};
use throttle::{Buckets, OpKind};

/// The token the sandbox's credential presents (`StaticToken`).
pub const SANDBOX_TOKEN: &str = "sandbox-token";

/// How the fake behaves; defaults are the real service's numbers.
#[derive(Debug, Clone)]
pub struct FakeArmOptions {
    pub token: String,
    /// Added to every answer (benchmarks: "the sandbox answering at fixed latency").
    pub latency: Duration,
    /// Per subscription: (burst, refill per second), like ARM since 2024.
    pub reads: (u32, f64),
    pub writes: (u32, f64),
    pub deletes: (u32, f64),
    /// Private DNS's own read limit, if any: (reads, per window). Answers 429 with
    /// `Retry-After: 10` when exceeded. Off by default (whether it still applies is
    /// unconfirmed).
    pub private_dns_reads: Option<(u32, Duration)>,
    /// Page size of list operations (ARM's default for record sets is 100).
    pub page_size: usize,
    /// `Retry-After` on long-running operations (the fixtures say 60).
    pub lro_retry_after_secs: u64,
    /// Polls of an operation status that answer `InProgress` before `Succeeded`.
    pub lro_polls: u32,
    /// Resource Graph's per-principal quota: (queries, per window). Answers 429
    /// `RateLimiting` with `Retry-After` once spent (the fake's `graph` module).
    pub resource_graph_quota: (u32, Duration),
    /// Role-based access control: `None` (default) authorises everything; `Some` answers
    /// 403 `AuthorizationFailed` outside these grants (see [`rbac`]).
    pub rbac: Option<rbac::Grants>,
    /// Every n-th Tags API PATCH is accepted asynchronously (202 + `location`, applied
    /// when the operation completes), as the 2025-04-01 example allows; 0 = never.
    pub tags_accepted_every: u32,
}

impl Default for FakeArmOptions {
    fn default() -> Self {
        Self {
            token: SANDBOX_TOKEN.to_owned(),
            latency: Duration::ZERO,
            reads: (250, 25.0),
            writes: (200, 10.0),
            deletes: (200, 10.0),
            private_dns_reads: None,
            page_size: 100,
            lro_retry_after_secs: 60,
            lro_polls: 1,
            resource_graph_quota: (15, Duration::from_secs(5)),
            rbac: None,
            tags_accepted_every: 0,
        }
    }
}

/// What a [`Fault`] answers instead of the real thing.
#[derive(Debug, Clone)]
pub enum FaultKind {
    /// An ARM error body with this status and code; `retry_after` sets the header.
    Status { status: u16, code: String, retry_after: Option<u64> },
    /// Hold the request this long before answering normally (client timeouts).
    Delay(Duration),
}

/// A scripted failure for the next `times` requests that match.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: Option<Method>,
    /// Case-insensitive substring of the path.
    pub path_contains: String,
    pub kind: FaultKind,
    pub times: u32,
}

impl Fault {
    pub fn status(method: Option<Method>, path_contains: &str, status: u16, times: u32) -> Self {
        let code = match status {
            429 => "TooManyRequests",
            500 => "InternalServerError",
            503 => "ServiceUnavailable",
            _ => "Injected",
        };
        Self {
            method,
            path_contains: path_contains.to_ascii_lowercase(),
            kind: FaultKind::Status { status, code: code.to_owned(), retry_after: None },
            times,
        }
    }

    pub fn throttle(method: Option<Method>, path_contains: &str, retry_after_secs: u64, times: u32) -> Self {
        let mut f = Self::status(method, path_contains, 429, times);
        f.kind = FaultKind::Status { status: 429, code: "TooManyRequests".into(), retry_after: Some(retry_after_secs) };
        f
    }

    pub fn delay(method: Option<Method>, path_contains: &str, delay: Duration, times: u32) -> Self {
        Self { method, path_contains: path_contains.to_ascii_lowercase(), kind: FaultKind::Delay(delay), times }
    }
}

/// One request as the fake saw it (no headers beyond the conditional ones: the log
/// must be safe to print).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
}

impl LoggedRequest {
    /// Whether the request changes state (a Resource Graph query is a POST that reads).
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "PUT" | "PATCH" | "DELETE" | "POST")
            && !self.path.to_ascii_lowercase().starts_with("/providers/microsoft.resourcegraph/")
    }
}

/// A stored resource: its JSON as ARM returns it (canonical spelling of the id) and,
/// for record sets, its ETag.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub body: Value,
}

/// An asynchronous operation the client polls.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    pub polls_left: u32,
    /// What the `Location` URL answers at the end (`None` = 204/empty).
    pub result: Option<Value>,
    /// Tags to set on a resource (its id) when the operation completes: an accepted Tags
    /// API PATCH takes effect only then.
    pub set_tags: Option<(String, Value)>,
}

/// Everything the fake knows. Keys are lower-cased resource ids.
#[derive(Debug, Default)]
pub(crate) struct World {
    pub resources: BTreeMap<String, Stored>,
    pub operations: BTreeMap<String, Operation>,
    pub log: Vec<LoggedRequest>,
    pub faults: VecDeque<Fault>,
    pub next_ip: u32,
    /// Resource Graph's quota window and the deletions it lags behind.
    pub graph: graph::GraphState,
    /// A deleted endpoint's connection stays on its target as `Disconnected`.
    pub keep_connections_on_delete: bool,
    /// Subscription (lower case) -> its tenant, or `None` = we may not read it.
    pub subscription_tenants: BTreeMap<String, Option<String>>,
    /// What the principal may do (`None` = everything); see [`rbac`].
    pub grants: Option<rbac::Grants>,
    /// Requests refused by [`rbac`], in order.
    pub denials: Vec<rbac::Denial>,
    /// Tags API PATCHes seen (for [`FakeArmOptions::tags_accepted_every`]).
    pub tag_patches: u32,
}

impl World {
    pub fn get(&self, id: &str) -> Option<&Value> {
        self.resources.get(&id.to_ascii_lowercase()).map(|s| &s.body)
    }

    pub fn put(&mut self, body: Value) {
        let id = body.get("id").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
        // Resource Graph writes a change record for every create and update.
        self.graph.on_put(&id, &body, self.resources.get(&id).map(|s| &s.body));
        self.resources.insert(id, Stored { body });
    }

    pub fn remove(&mut self, id: &str) -> Option<Value> {
        let key = id.to_ascii_lowercase();
        let body = self.resources.remove(&key)?.body;
        // Resource Graph lags ARM: it keeps listing what was just removed.
        self.graph.on_remove(&key, &body);
        Some(body)
    }

    /// Direct children of `parent` whose type segment is `child_type` (both compared
    /// lower-case), in id order.
    pub fn children(&self, parent: &str, child_type: &str) -> Vec<Value> {
        let prefix = format!("{}/{}/", parent.to_ascii_lowercase(), child_type.to_ascii_lowercase());
        self.resources
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k[prefix.len()..].contains('/'))
            .map(|(_, s)| s.body.clone())
            .collect()
    }
}

pub(crate) struct Shared {
    pub options: FakeArmOptions,
    pub world: Mutex<World>,
    pub buckets: Buckets,
    pub base_url: String,
}

impl Shared {
    pub fn world(&self) -> MutexGuard<'_, World> {
        // A panicking test thread must not wedge every later request.
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an async operation and returns the headers ARM sends with 201/202:
    /// `Azure-AsyncOperation` = `{provider_url}/{status_kind}/{op}`, `Location` =
    /// `{provider_url}/{result_kind}/{op}`, `Retry-After`.
    pub fn operation_headers(
        &self,
        provider_url: &str,
        (status_kind, result_kind): (&str, &str),
        api_version: &str,
        result: Option<Value>,
    ) -> Vec<(String, String)> {
        let op = crate::host_emulator::new_guid();
        let url = |kind: &str| format!("{}{provider_url}/{kind}/{op}?api-version={api_version}", self.base_url);
        let headers = vec![
            ("Azure-AsyncOperation".into(), url(status_kind)),
            ("Location".into(), url(result_kind)),
            ("Retry-After".into(), self.options.lro_retry_after_secs.to_string()),
        ];
        self.world().operations.insert(op, Operation { polls_left: self.options.lro_polls, result, set_tags: None });
        headers
    }

    /// A `Microsoft.Network` operation (PE delete), status under `locations/{location}`.
    pub fn start_operation(&self, subscription: &str, location: &str, result: Option<Value>) -> Vec<(String, String)> {
        let provider = format!("/subscriptions/{subscription}/providers/Microsoft.Network/locations/{location}");
        self.operation_headers(&provider, ("operations", "operationResults"), network::NETWORK_API, result)
    }
}

/// An answer before headers common to all responses are added.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Option<Value>,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn json(status: u16, body: Value) -> Self {
        Self { status: code(status), body: Some(body), headers: Vec::new() }
    }
    pub fn empty(status: u16) -> Self {
        Self { status: code(status), body: None, headers: Vec::new() }
    }
    pub fn error(status: u16, code_str: &str, message: impl Into<String>) -> Self {
        Self::json(status, json!({"error": {"code": code_str, "message": message.into(), "details": []}}))
    }
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
    pub fn not_found(id: &str) -> Self {
        Self::error(404, "ResourceNotFound", format!("The Resource '{id}' was not found."))
    }
}

fn code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// What a route handler receives.
pub(crate) struct Call<'a> {
    pub method: &'a Method,
    /// The path as sent (original case), without the query.
    pub path: &'a str,
    /// Lower-cased path segments.
    pub segments: Vec<String>,
    pub query: BTreeMap<String, String>,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
}

impl Call<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json_body(&self) -> Result<Value, Answer> {
        serde_json::from_slice(self.body)
            .map_err(|e| Answer::error(400, "InvalidRequestContent", format!("The request content was invalid: {e}")))
    }
}

/// The running fake. Dropping it stops the server.
pub struct FakeArm {
    shared: Arc<Shared>,
    server: super::loopback::LoopbackServer,
}

impl std::fmt::Debug for FakeArm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeArm").field("addr", &self.server.addr).finish()
    }
}

impl FakeArm {
    /// Starts the fake on `127.0.0.1:0`.
    pub async fn start(options: FakeArmOptions) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let grants = options.rbac.clone();
        let shared = Arc::new(Shared {
            buckets: Buckets::new(&options),
            options,
            world: Mutex::new(World {
                next_ip: u32::from(std::net::Ipv4Addr::new(10, 1, 0, 4)),
                grants,
                ..World::default()
            }),
            base_url: format!("http://{addr}"),
        });
        // The base URL is part of the state (LRO and nextLink URLs), so bind first.
        let app = Router::new().fallback(serve).with_state(shared.clone());
        Ok(Self { shared, server: super::loopback::LoopbackServer::serve(listener, app)? })
    }

    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn token(&self) -> &str {
        &self.shared.options.token
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.world().log.clone()
    }

    /// Successful PUT/PATCH/DELETE/POST requests whose path contains `needle`
    /// (case-insensitive).
    pub fn writes_to(&self, needle: &str) -> usize {
        let needle = needle.to_ascii_lowercase();
        self.shared
            .world()
            .log
            .iter()
            .filter(|r| r.is_write() && r.status < 300 && r.path.to_ascii_lowercase().contains(&needle))
            .count()
    }

    pub fn clear_log(&self) {
        self.shared.world().log.clear();
    }

    /// Queues a scripted failure; faults apply in the order added.
    pub fn inject(&self, fault: Fault) {
        self.shared.world().faults.push_back(fault);
    }

    /// Drops every scripted fault (the service "recovers").
    pub fn clear_faults(&self) {
        self.shared.world().faults.clear();
    }

    /// Faults not yet used up.
    pub fn pending_faults(&self) -> usize {
        self.shared.world().faults.iter().filter(|f| f.times > 0).count()
    }

    /// The JSON ARM would return for `id`, if it exists.
    pub fn resource(&self, id: &str) -> Option<Value> {
        self.shared.world().get(id).cloned()
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Requests refused for lack of a role so far (see [`rbac`]).
    pub fn denials(&self) -> Vec<rbac::Denial> {
        self.shared.world().denials.clone()
    }

    /// Replaces the grants (`None` = authorise everything) from now on.
    pub fn set_grants(&self, grants: Option<rbac::Grants>) {
        self.shared.world().grants = grants;
    }
}

fn parse_query(q: Option<&str>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        out.insert(k.to_ascii_lowercase(), v.into_owned());
    }
    out
}

async fn serve(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !shared.options.latency.is_zero() {
        tokio::time::sleep(shared.options.latency).await;
    }
    let path = uri.path().trim_end_matches('/').to_owned();
    let call = Call {
        method: &method,
        path: &path,
        segments: path.split('/').filter(|s| !s.is_empty()).map(str::to_ascii_lowercase).collect(),
        query: parse_query(uri.query()),
        headers: &headers,
        body: &body,
    };
    let answer = answer(&shared, &call).await;
    {
        let mut w = shared.world();
        w.log.push(LoggedRequest {
            method: method.to_string(),
            path: path.clone(),
            status: answer.status.as_u16(),
            if_match: call.header("if-match").map(str::to_owned),
            if_none_match: call.header("if-none-match").map(str::to_owned),
        });
    }
    let mut response = match answer.body {
        Some(body) => (answer.status, axum::Json(body)).into_response(),
        None => answer.status.into_response(),
    };
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) =
            (axum::http::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value))
        {
            response.headers_mut().append(name, value);
        }
    }
    response.headers_mut().insert("x-ms-request-id", HeaderValue::from_static("00000000-0000-0000-0000-000000000000"));
    response
}

async fn answer(shared: &Shared, call: &Call<'_>) -> Answer {
    // Authentication comes first, as in ARM: an anonymous caller learns nothing.
    let expected = format!("Bearer {}", shared.options.token);
    match call.header("authorization") {
        Some(v) if v == expected => {}
        Some(_) => {
            return Answer::error(401, "InvalidAuthenticationToken", "The access token is invalid.")
                .with_header("WWW-Authenticate", "Bearer authorization_uri=\"https://login.windows.net/\"");
        }
        None => {
            return Answer::error(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            );
        }
    }
    if !call.query.contains_key("api-version") {
        return Answer::error(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        );
    }
    if let Some(a) = front_door(shared, call) {
        return a;
    }
    if let Some(a) = take_fault(shared, call).await {
        return a;
    }
    let kind = OpKind::of(call.method);
    let subscription = call.segments.get(1).cloned().unwrap_or_default();
    let is_private_dns = call.segments.iter().any(|s| s == "privatednszones");
    let remaining = match shared.buckets.take(&subscription, kind, is_private_dns && kind == OpKind::Read) {
        Ok(remaining) => remaining,
        Err(throttled) => return throttled,
    };
    let mut a = route(shared, call);
    a.headers.push((kind.remaining_header().into(), remaining.to_string()));
    a
}

/// What ARM checks before a provider sees the request: that the type is served at this
/// api-version ([`versions`]), then that the principal may do it ([`rbac`]).
fn front_door(shared: &Shared, call: &Call<'_>) -> Option<Answer> {
    let target = versions::classify(call.path)?;
    let lower_type = target.resource_type.to_ascii_lowercase();
    // `connections.rs` checks its own versions (per parent type) and answers unknown types.
    if !lower_type.contains("privateendpointconnections") {
        let location = {
            let w = shared.world();
            let id = if target.collection { target.scope.clone() } else { call.path.to_owned() };
            versions::location_of(w.get(&id), &target.resource_type)
        };
        if let Some(refused) = versions::check(call, &target, &location) {
            return Some(refused);
        }
    }
    // ARM's own operation results (the Tags API's 202 `location`) are readable by the
    // caller that started the operation: the built-in Tag Contributor role, made for that
    // API, holds no `operationresults` action.
    if lower_type == "microsoft.resources/subscriptions/operationresults" {
        return None;
    }
    // Every caller may ask ARM what it itself may do, at any scope: the answer is its own
    // permissions (empty where it holds nothing).
    if lower_type == "microsoft.authorization/permissions" {
        return None;
    }
    let mut w = shared.world();
    let grants = w.grants.as_ref()?;
    match rbac::authorize(grants, call, &target) {
        Ok(()) => None,
        Err(refused) => {
            let (answer, denial) = *refused;
            w.denials.push(denial);
            Some(answer)
        }
    }
}

async fn take_fault(shared: &Shared, call: &Call<'_>) -> Option<Answer> {
    let lower = call.path.to_ascii_lowercase();
    let hit = {
        let mut w = shared.world();
        let found = w.faults.iter_mut().find(|f| {
            f.times > 0 && f.method.as_ref().is_none_or(|m| m == call.method) && lower.contains(&f.path_contains)
        });
        found.map(|f| {
            f.times -= 1;
            f.kind.clone()
        })
    };
    match hit? {
        FaultKind::Status { status, code, retry_after } => {
            let mut a = Answer::error(status, &code, format!("Injected fault: {status} {code}."));
            if let Some(s) = retry_after {
                a = a.with_header("Retry-After", s.to_string());
            }
            Some(a)
        }
        FaultKind::Delay(d) => {
            tokio::time::sleep(d).await;
            None
        }
    }
}

/// Dispatches on the lower-cased path shape.
fn route(shared: &Shared, call: &Call<'_>) -> Answer {
    let s: Vec<&str> = call.segments.iter().map(String::as_str).collect();
    match s.as_slice() {
        // Operation status and result URLs of any provider (Network, Kusto...).
        ["subscriptions", _, "providers", _, "locations", _, "operations", op] => operation_status(shared, op),
        ["subscriptions", _, "providers", _, "locations", _, "operationresults", op] => operation_result(shared, op),
        // Event Grid's operation status URL.
        ["subscriptions", _, "providers", _, "locations", _, "operationsstatus", op] => operation_status(shared, op),
        [.., "providers", "microsoft.authorization", "permissions"] if *call.method == Method::GET => {
            permissions::answer(shared, call)
        }
        ["subscriptions", sub, "providers", ns] if *call.method == Method::GET => providers::get(sub, ns),
        // ARM's own operation results (the Tags API's accepted PATCH).
        ["subscriptions", _, "operationresults", op] => operation_result(shared, op),
        _ if s.contains(&"privateendpointconnections") => connections::route(shared, call, &s),
        ["providers", "microsoft.resourcegraph", "resources"] => graph::route(shared, call),
        [.., "providers", "microsoft.resources", "tags", "default"] => tags::route(shared, call),
        ["subscriptions", sub] if *call.method == Method::GET => subscriptions::get(shared, sub),
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            "microsoft.network",
            "privatednsoperationstatuses",
            op,
        ] => operation_status(shared, op),
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            "microsoft.network",
            "privatednsoperationresults",
            op,
        ] => operation_result(shared, op),
        // Event Grid system topics and their event subscriptions; the audit topic.
        _ if s.windows(2).any(|w| w == ["microsoft.eventgrid", "systemtopics"])
            || matches!(s.as_slice(), [.., "microsoft.eventgrid", "topics", _]) =>
        {
            eventgrid::route(shared, call, &s)
        }
        // Reads doctor makes of what tests seed (`FakeArm::add_resource`).
        [.., "microsoft.keyvault", "vaults", _, "secrets", _]
        | [.., "microsoft.servicebus", "namespaces", _, "queues", _] => eventgrid::route(shared, call, &s),
        // Zone links (doctor reads them, zone management writes them) are `dns`'s.
        _ if s.contains(&"privatednszones") => dns::route(shared, call, &s),
        _ if s.contains(&"microsoft.network") => network::route(shared, call, &s),
        _ => Answer::error(
            404,
            "InvalidResourceType",
            format!("The resource type could not be found for path '{}'.", call.path),
        ),
    }
}

fn operation_status(shared: &Shared, op: &str) -> Answer {
    let mut w = shared.world();
    let Some(o) = w.operations.get_mut(op) else {
        return Answer::error(404, "OperationNotFound", format!("Operation '{op}' was not found."));
    };
    if o.polls_left > 0 {
        o.polls_left -= 1;
        return Answer::json(200, json!({"status": "InProgress"})).with_header("Retry-After", "1");
    }
    Answer::json(200, json!({"status": "Succeeded"}))
}

fn operation_result(shared: &Shared, op: &str) -> Answer {
    let mut w = shared.world();
    let Some(o) = w.operations.get_mut(op) else {
        return Answer::error(404, "OperationNotFound", format!("Operation '{op}' was not found."));
    };
    // Polling the result URL advances the operation too (clients may poll only this one).
    if o.polls_left > 0 {
        o.polls_left -= 1;
        return Answer::empty(202).with_header("Retry-After", "1");
    }
    let result = o.result.clone();
    if let Some((id, tags)) = o.set_tags.take()
        && let Some(mut resource) = w.get(&id).cloned()
    {
        resource["tags"] = tags;
        w.put(resource);
    }
    match result {
        Some(v) => Answer::json(200, v),
        None => Answer::empty(204),
    }
}

/// `nextLink` paging over a full list, with `$skiptoken` = offset.
pub(crate) fn page(shared: &Shared, call: &Call<'_>, items: Vec<Value>) -> Answer {
    let top = call.query.get("$top").and_then(|t| t.parse::<usize>().ok()).unwrap_or(shared.options.page_size).max(1);
    let skip = call.query.get("$skiptoken").and_then(|t| t.parse::<usize>().ok()).unwrap_or(0);
    let page: Vec<Value> = items.iter().skip(skip).take(top).cloned().collect();
    let mut body = json!({"value": page});
    if skip + top < items.len() {
        let api = call.query.get("api-version").cloned().unwrap_or_default();
        let mut next = format!("{}{}?api-version={api}&$skiptoken={}", shared.base_url, call.path, skip + top);
        if let Some(t) = call.query.get("$top") {
            next.push_str(&format!("&$top={t}"));
        }
        body["nextLink"] = Value::String(next);
    }
    Answer::json(200, body)
}
