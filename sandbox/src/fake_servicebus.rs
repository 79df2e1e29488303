//! A local fake of the Service Bus REST API (reference §4), so the Service Bus queue and
//! the trigger path are tested against the wire protocol instead of a mock of our code.
//!
//! It behaves like the service where our code could tell the difference: SAS tokens are
//! verified by recomputing the HMAC over the literal `sr` as sent (plus expiry and key
//! name), bearer tokens against a configured value; `BrokerProperties` is parsed on send
//! (`MessageId`, `CorrelationId`, `Label`, `TimeToLive`, `ScheduledEnqueueTimeUtc` as an
//! RFC 2616 date) and returned on receive with every field `azure_messaging_servicebus`
//! requires; custom properties travel as headers and are validated like the service does
//! (quoted string, bool, integer, float, else 400). Peek-lock long-polls up to
//! `timeout` seconds (204 when nothing came), locks expire into redelivery with
//! `DeliveryCount + 1`, a message that used up `MaxDeliveryCount` deliveries moves to
//! `$DeadLetterQueue` with `DeadLetterReason: MaxDeliveryCountExceeded`, duplicate
//! detection drops a `MessageId` seen within the window (still 201). Faults can be
//! injected (next N requests answer 500/503/429), and every request is logged without its
//! `Authorization` value.
//!
//! It is strict where the real service is, so a deployment shape the code does not fit
//! fails here rather than in Azure:
//! - an entity the test did not create answers **404** with the service's error body
//!   (`<Error><Code>404</Code><Detail>…could not be found…</Detail></Error>`, the
//!   `ServiceBusManagementError` shape of the data-plane spec 2021-05), for sends,
//!   receives, settlements and descriptions alike;
//! - rights are per entity: the SAS key is a namespace `Manage` rule (everything), while
//!   the bearer identity holds exactly the [`FakeGrant`]s a test configures (`None` = a
//!   namespace-wide Data Owner, the lenient default). Send needs `Send` (Data Sender),
//!   peek-lock and settling need `Listen` (Data Receiver), the entity description needs
//!   `Manage` (Data Owner); a grant on a queue covers its `$DeadLetterQueue`. A missing
//!   right answers **401** with the claim named in the detail, as Service Bus does;
//! - the ARM read of a queue (`GET /subscriptions/…/providers/Microsoft.ServiceBus/
//!   namespaces/{ns}/queues/{q}`, whose `properties.countDetails` carries the counts) is
//!   served too, for the ARM base URL a test points at this fake; it needs the
//!   [`FakeRight::ArmRead`] grant (Reader on the queue) and answers ARM's 403
//!   `AuthorizationFailed` / 404 `ResourceNotFound` shapes otherwise.
//!
//! Not modelled: sessions, topics, TTL expiry (parsed, not enforced), partitioning.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;
use url::form_urlencoded;

use private_link_autopilot::model::Secret;

const DLQ: &str = "$DeadLetterQueue";
/// Headers that are protocol, not custom properties.
const NOT_PROPERTIES: &[&str] = &[
    "authorization",
    "brokerproperties",
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "accept",
    "accept-encoding",
    "connection",
    "transfer-encoding",
];

/// One queue entity.
#[derive(Debug, Clone)]
pub struct FakeQueueOptions {
    pub name: String,
    pub lock_duration: Duration,
    pub max_delivery_count: u32,
    pub duplicate_window: Duration,
}

impl FakeQueueOptions {
    /// Service Bus defaults: 1 min lock, 10 deliveries, 10 min duplicate detection.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            lock_duration: Duration::from_secs(60),
            max_delivery_count: 10,
            duplicate_window: Duration::from_secs(600),
        }
    }
}

/// A right the bearer identity may hold on one entity (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeRight {
    /// Azure Service Bus Data Sender.
    Send,
    /// Azure Service Bus Data Receiver.
    Listen,
    /// Azure Service Bus Data Owner (entity description over the data plane).
    Manage,
    /// ARM `Microsoft.ServiceBus/namespaces/queues/read` (Reader on the queue).
    ArmRead,
}

impl FakeRight {
    fn claim(self) -> &'static str {
        match self {
            Self::Send => "Send",
            Self::Listen => "Listen",
            Self::Manage => "Manage",
            Self::ArmRead => "Microsoft.ServiceBus/namespaces/queues/read",
        }
    }
}

/// Rights of the bearer identity on one entity (a role assignment scoped to a queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeGrant {
    pub entity: String,
    pub rights: Vec<FakeRight>,
}

impl FakeGrant {
    pub fn new(entity: &str, rights: &[FakeRight]) -> Self {
        Self { entity: entity.to_owned(), rights: rights.to_vec() }
    }
}

#[derive(Debug, Clone)]
pub struct FakeServiceBusOptions {
    pub namespace: String,
    pub key_name: String,
    pub key: Secret,
    /// Accepted bearer token; `None` = Entra auth disabled.
    pub bearer_token: Option<Secret>,
    pub queues: Vec<FakeQueueOptions>,
    /// What the bearer identity may do, per entity; `None` = everything everywhere.
    pub bearer_grants: Option<Vec<FakeGrant>>,
}

impl Default for FakeServiceBusOptions {
    fn default() -> Self {
        Self {
            namespace: "fakebus".to_owned(),
            key_name: "RootManageSharedAccessKey".to_owned(),
            key: Secret::new(format!("fake-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))),
            bearer_token: Some(Secret::new(format!("bearer-{:016x}", fastrand::u64(..)))),
            queues: vec![FakeQueueOptions::new("work"), FakeQueueOptions::new("work-deadletter")],
            bearer_grants: None,
        }
    }
}

/// A request as the fake saw it (no `Authorization` value, only how it authenticated).
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRequest {
    pub method: String,
    pub path_and_query: String,
    pub status: u16,
    /// `"sas:{keyName}"`, `"bearer"`, `"none"` or `"invalid"`.
    pub auth: String,
    pub broker_properties: Option<String>,
    /// Custom property headers (lower-cased names, raw values).
    pub custom_properties: Vec<(String, String)>,
    pub content_type: Option<String>,
}

/// A stored message, as the tests may inspect it.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeMessage {
    pub sequence_number: i64,
    pub message_id: String,
    pub correlation_id: Option<String>,
    pub label: Option<String>,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    pub custom_properties: Vec<(String, String)>,
    pub enqueued_at: SystemTime,
    pub visible_at: SystemTime,
    pub delivery_count: u32,
    pub lock: Option<(String, SystemTime)>,
    pub time_to_live: Option<f64>,
}

/// Contents of one entity and its dead-letter subqueue.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueSnapshot {
    pub active: Vec<FakeMessage>,
    pub dead_letter: Vec<FakeMessage>,
}

#[derive(Debug)]
struct Entity {
    options: FakeQueueOptions,
    messages: Vec<FakeMessage>,
    dead: Vec<FakeMessage>,
    seen_ids: HashMap<String, SystemTime>,
    next_sequence: i64,
}

#[derive(Debug)]
struct FakeState {
    options: FakeServiceBusOptions,
    entities: HashMap<String, Entity>,
    log: Vec<LoggedRequest>,
    faults: VecDeque<u16>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<FakeState>,
    /// Rung on every change that can make a message receivable.
    wake: Notify,
}

/// Handle to a running fake; the server stops when this is dropped.
#[derive(Debug)]
pub struct FakeServiceBus {
    shared: Arc<Shared>,
    base_url: String,
    namespace: String,
    key_name: String,
    key: Secret,
    bearer: Option<Secret>,
    _server: super::loopback::LoopbackServer,
}

impl FakeServiceBus {
    /// Binds 127.0.0.1:0 and serves until dropped.
    pub async fn start(options: FakeServiceBusOptions) -> std::io::Result<Self> {
        let entities = options
            .queues
            .iter()
            .map(|q| {
                let e = Entity {
                    options: q.clone(),
                    messages: Vec::new(),
                    dead: Vec::new(),
                    seen_ids: HashMap::new(),
                    next_sequence: 1,
                };
                (q.name.to_ascii_lowercase(), e)
            })
            .collect();
        let (namespace, key_name, key, bearer) =
            (options.namespace.clone(), options.key_name.clone(), options.key.clone(), options.bearer_token.clone());
        let shared = Arc::new(Shared {
            state: Mutex::new(FakeState { options, entities, log: Vec::new(), faults: VecDeque::new() }),
            wake: Notify::new(),
        });
        let app = axum::Router::new().fallback(handle).with_state(Arc::clone(&shared));
        let server = super::loopback::LoopbackServer::start(app).await?;
        Ok(Self { shared, base_url: server.base_url(), namespace, key_name, key, bearer, _server: server })
    }

    /// `http://127.0.0.1:{port}`: the `endpoint_override`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    pub fn key_name(&self) -> &str {
        &self.key_name
    }
    pub fn key(&self) -> &Secret {
        &self.key
    }
    pub fn bearer_token(&self) -> Option<&Secret> {
        self.bearer.as_ref()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Messages of `name` (active incl. scheduled and locked) and of its DLQ.
    pub fn queue_snapshot(&self, name: &str) -> Option<QueueSnapshot> {
        let st = self.state();
        let e = st.entities.get(&name.to_ascii_lowercase())?;
        Some(QueueSnapshot { active: e.messages.clone(), dead_letter: e.dead.clone() })
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state().log.clone()
    }

    /// The next `n` requests answer `status` (500, 503, 429 …) before anything else.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.state().faults.extend(std::iter::repeat_n(status, n));
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn guid() -> String {
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

fn status(code: u16, text: &str) -> Response {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, text.to_owned()).into_response()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The service's error body (`ServiceBusManagementError`: `Code`, `Detail`).
fn sb_error(code: u16, detail: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = format!(
        "<Error><Code>{code}</Code><Detail>{}. TrackingId:{}, SystemTracker:fake, Timestamp:{}</Detail></Error>",
        xml_escape(detail),
        guid(),
        httpdate::fmt_http_date(now())
    );
    let mut r = (status, body).into_response();
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/xml; charset=utf-8"));
    r
}

fn not_found(namespace: &str, entity: &str) -> Response {
    sb_error(
        404,
        &format!(
            "The messaging entity 'sb://{namespace}.servicebus.windows.net/{entity}' could not be found. To know more visit https://aka.ms/sbResourceMgrExceptions"
        ),
    )
}

fn arm_error(code: u16, err: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({"error": {"code": err, "message": message}});
    (status, [("content-type", "application/json; charset=utf-8")], body.to_string()).into_response()
}

/// Does the authenticated caller hold `right` on `entity`? SAS (a namespace Manage
/// rule) always does; the bearer identity per its grants.
fn allowed(st: &FakeState, how: &str, entity: &str, right: FakeRight) -> bool {
    if how != "bearer" {
        return right != FakeRight::ArmRead;
    }
    match &st.options.bearer_grants {
        None => true,
        Some(grants) => grants.iter().any(|g| g.entity.eq_ignore_ascii_case(entity) && g.rights.contains(&right)),
    }
}

/// Outcome of checking `Authorization`.
enum Auth {
    Ok(String),
    Denied(String, &'static str),
}

fn check_auth(st: &FakeState, headers: &HeaderMap, resource: &str) -> Auth {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Auth::Denied("none".into(), "missing Authorization");
    };
    if let Some(token) = value.strip_prefix("Bearer ") {
        return match &st.options.bearer_token {
            Some(t) if t.expose() == token.trim() => Auth::Ok("bearer".into()),
            _ => Auth::Denied("invalid".into(), "bearer token rejected"),
        };
    }
    let Some(fields) = value.strip_prefix("SharedAccessSignature ") else {
        return Auth::Denied("invalid".into(), "unknown authorization scheme");
    };
    let mut sr_raw = None;
    let (mut sig, mut se, mut skn) = (None, None, None);
    for part in fields.split('&') {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k {
            "sr" => sr_raw = Some(v.to_owned()),
            "sig" => sig = form_urlencoded::parse(format!("x={v}").as_bytes()).next().map(|(_, s)| s.into_owned()),
            "se" => se = Some(v.to_owned()),
            "skn" => skn = Some(v.to_owned()),
            _ => {}
        }
    }
    let (Some(sr_raw), Some(sig), Some(se), Some(skn)) = (sr_raw, sig, se, skn) else {
        return Auth::Denied("invalid".into(), "SAS token lacks sr, sig, se or skn");
    };
    if skn != st.options.key_name {
        return Auth::Denied("invalid".into(), "SAS key name unknown");
    }
    let Ok(expiry) = se.parse::<u64>() else {
        return Auth::Denied("invalid".into(), "SAS se is not a number");
    };
    if UNIX_EPOCH + Duration::from_secs(expiry) <= now() {
        return Auth::Denied("invalid".into(), "SAS token expired");
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(st.options.key.expose().as_bytes()) else {
        return Auth::Denied("invalid".into(), "key unusable");
    };
    // Over the literal `sr` as sent: encodings differ between SDKs.
    mac.update(format!("{sr_raw}\n{se}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if expected != sig {
        return Auth::Denied("invalid".into(), "SAS signature mismatch");
    }
    // The token covers everything under its resource URI.
    let sr: String = form_urlencoded::parse(format!("x={sr_raw}").as_bytes())
        .next()
        .map(|(_, s)| s.into_owned())
        .unwrap_or_default();
    let sr_base = sr.split('?').next().unwrap_or("").trim_end_matches('/').to_ascii_lowercase();
    if !resource.to_ascii_lowercase().starts_with(&sr_base) || sr_base.is_empty() {
        return Auth::Denied("invalid".into(), "SAS token is for another resource");
    }
    Auth::Ok(format!("sas:{skn}"))
}

/// A custom property value must be a quoted string, a bool, an integer or a float.
fn valid_property(v: &str) -> bool {
    let v = v.trim();
    (v.len() >= 2 && v.starts_with('"') && v.ends_with('"'))
        || v == "true"
        || v == "false"
        || v.parse::<i64>().is_ok()
        || v.parse::<f64>().is_ok_and(f64::is_finite)
}

fn parse_date(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s).ok().or_else(|| {
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc2822).ok()?;
        Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(t.unix_timestamp()).ok()?))
    })
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let custom: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| !NOT_PROPERTIES.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut entry = LoggedRequest {
        method: method.to_string(),
        path_and_query: path_and_query.clone(),
        status: 0,
        auth: "none".into(),
        broker_properties: header("brokerproperties"),
        custom_properties: custom.clone(),
        content_type: header("content-type"),
    };
    let response = route(&shared, &method, &uri, &headers, custom, body, &mut entry).await;
    entry.status = response.status().as_u16();
    shared.state.lock().unwrap_or_else(PoisonError::into_inner).log.push(entry);
    response
}

async fn route(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    custom: Vec<(String, String)>,
    body: Bytes,
    entry: &mut LoggedRequest,
) -> Response {
    let segments: Vec<String> = uri
        .path()
        .trim_matches('/')
        .split('/')
        .map(|s| {
            form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
        })
        .collect();
    {
        let mut st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(code) = st.faults.pop_front() {
            let mut r = status(code, "injected fault");
            if code == 429 || code == 503 {
                r.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
            }
            return r;
        }
        if segments.first().is_some_and(|s| s.eq_ignore_ascii_case("subscriptions")) {
            return arm_queue(&mut st, method, headers, &segments, entry);
        }
        let resource = format!("https://{}.servicebus.windows.net{}", st.options.namespace, uri.path());
        let how = match check_auth(&st, headers, &resource) {
            Auth::Ok(how) => how,
            Auth::Denied(how, why) => {
                entry.auth = how;
                return sb_error(401, why);
            }
        };
        entry.auth.clone_from(&how);
        let Some(queue) = segments.first().filter(|q| !q.is_empty()) else { return status(400, "no entity") };
        if !st.entities.contains_key(&queue.to_ascii_lowercase()) {
            return not_found(&st.options.namespace, queue);
        }
        let rest: Vec<&str> = segments[1..].iter().map(String::as_str).collect();
        let tail = if rest.first() == Some(&DLQ) { &rest[1..] } else { &rest[..] };
        let right = match (method.as_str(), tail) {
            ("GET", []) => FakeRight::Manage,
            ("POST", ["messages"]) => FakeRight::Send,
            _ => FakeRight::Listen,
        };
        if !allowed(&st, &how, queue, right) {
            let ns = st.options.namespace.clone();
            return sb_error(
                401,
                &format!(
                    "Unauthorized access. '{}' claim(s) are required to perform this operation. Resource: 'sb://{ns}.servicebus.windows.net/{queue}'",
                    right.claim()
                ),
            );
        }
    }
    let queue = segments[0].to_ascii_lowercase();
    let rest: Vec<&str> = segments[1..].iter().map(String::as_str).collect();
    let (dlq, rest) = match rest.split_first() {
        Some((&DLQ, tail)) => (true, tail.to_vec()),
        _ => (false, rest),
    };
    let timeout = uri
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "timeout").map(|(_, v)| v.into_owned()))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(60);
    match (method.as_str(), rest.as_slice()) {
        ("GET", []) if !dlq => describe(shared, &queue),
        ("POST", ["messages"]) if !dlq => send(shared, &queue, headers, custom, body),
        ("POST", ["messages", "head"]) => peek_lock(shared, &queue, dlq, Duration::from_secs(timeout.min(230))).await,
        (m @ ("DELETE" | "PUT" | "POST"), ["messages", id, token]) => settle(shared, &queue, dlq, m, id, token),
        _ => status(400, "unsupported operation"),
    }
}

fn send(shared: &Shared, queue: &str, headers: &HeaderMap, custom: Vec<(String, String)>, body: Bytes) -> Response {
    if let Some((name, _)) = custom.iter().find(|(_, v)| !valid_property(v)) {
        return status(400, &format!("custom property {name} has an invalid value"));
    }
    let broker: serde_json::Map<String, serde_json::Value> = match headers.get("brokerproperties") {
        None => serde_json::Map::new(),
        Some(v) => match serde_json::from_slice(v.as_bytes()) {
            Ok(m) => m,
            Err(_) => return status(400, "BrokerProperties is not a JSON object"),
        },
    };
    let s = |k: &str| broker.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let visible_at = match s("ScheduledEnqueueTimeUtc") {
        None => now(),
        Some(d) => match parse_date(&d) {
            Some(t) => t,
            None => return status(400, "ScheduledEnqueueTimeUtc is not an RFC 2616 date"),
        },
    };
    let mut st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(e) = st.entities.get_mut(queue) else { return status(404, "MessagingEntityNotFound") };
    let message_id = s("MessageId").unwrap_or_else(|| guid().replace('-', ""));
    let t = now();
    let window = e.options.duplicate_window;
    e.seen_ids.retain(|_, at| *at + window > t);
    if e.seen_ids.contains_key(&message_id) {
        // Duplicate detection: accepted and dropped.
        return StatusCode::CREATED.into_response();
    }
    e.seen_ids.insert(message_id.clone(), t);
    let sequence_number = e.next_sequence;
    e.next_sequence += 1;
    e.messages.push(FakeMessage {
        sequence_number,
        message_id,
        correlation_id: s("CorrelationId"),
        label: s("Label"),
        body: body.to_vec(),
        content_type: headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned),
        custom_properties: custom,
        enqueued_at: t,
        visible_at,
        delivery_count: 0,
        lock: None,
        time_to_live: broker.get("TimeToLive").and_then(serde_json::Value::as_f64),
    });
    drop(st);
    shared.wake.notify_waiters();
    StatusCode::CREATED.into_response()
}

/// Moves messages whose last lock expired after their final delivery to the DLQ.
fn sweep(e: &mut Entity, t: SystemTime) {
    let max = e.options.max_delivery_count;
    let mut i = 0;
    while i < e.messages.len() {
        let m = &e.messages[i];
        let expired = m.lock.as_ref().is_some_and(|(_, until)| *until <= t);
        if expired && m.delivery_count >= max {
            let mut m = e.messages.remove(i);
            m.lock = None;
            dead_letter_max(&mut m, max);
            e.dead.push(m);
        } else {
            i += 1;
        }
    }
}

fn dead_letter_max(m: &mut FakeMessage, max: u32) {
    m.custom_properties.push(("deadletterreason".into(), "\"MaxDeliveryCountExceeded\"".into()));
    m.custom_properties.push((
        "deadlettererrordescription".into(),
        format!("\"Message could not be consumed after {max} delivery attempts.\""),
    ));
}

async fn peek_lock(shared: &Shared, queue: &str, dlq: bool, timeout: Duration) -> Response {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = shared.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let next_wake = {
            let mut st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            let namespace = st.options.namespace.clone();
            let Some(e) = st.entities.get_mut(queue) else { return status(404, "MessagingEntityNotFound") };
            let t = now();
            sweep(e, t);
            let lock_for = e.options.lock_duration;
            let name = e.options.name.clone();
            let list = if dlq { &mut e.dead } else { &mut e.messages };
            let available = |m: &FakeMessage| m.visible_at <= t && m.lock.as_ref().is_none_or(|(_, until)| *until <= t);
            if let Some(m) = list.iter_mut().filter(|m| available(m)).min_by_key(|m| (m.visible_at, m.sequence_number))
            {
                let token = guid();
                let until = t + lock_for;
                m.delivery_count += 1;
                m.lock = Some((token.clone(), until));
                return delivered(&namespace, &name, dlq, m, &token, until);
            }
            // Wake for the next scheduled message or lock expiry.
            list.iter()
                .map(|m| match &m.lock {
                    Some((_, until)) if *until > t => *until,
                    _ => m.visible_at,
                })
                .filter(|at| *at > t)
                .min()
                .map(|at| at.duration_since(t).unwrap_or_default())
        };
        let now_i = tokio::time::Instant::now();
        if now_i >= deadline {
            return StatusCode::NO_CONTENT.into_response();
        }
        let wake_at = next_wake.map_or(deadline, |d| deadline.min(now_i + d));
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(wake_at) => {}
        }
    }
}

fn delivered(namespace: &str, entity: &str, dlq: bool, m: &FakeMessage, token: &str, until: SystemTime) -> Response {
    let mut broker = serde_json::json!({
        "DeliveryCount": m.delivery_count,
        "EnqueuedSequenceNumber": 0,
        "EnqueuedTimeUtc": httpdate::fmt_http_date(m.enqueued_at),
        "LockToken": token,
        "LockedUntilUtc": httpdate::fmt_http_date(until),
        "MessageId": m.message_id,
        "SequenceNumber": m.sequence_number,
        "State": if dlq { "Deadlettered" } else { "Active" },
        "TimeToLive": m.time_to_live.unwrap_or(922_337_203_685.0),
    });
    if let Some(obj) = broker.as_object_mut() {
        if let Some(c) = &m.correlation_id {
            obj.insert("CorrelationId".into(), c.clone().into());
        }
        if let Some(l) = &m.label {
            obj.insert("Label".into(), l.clone().into());
        }
    }
    let path = if dlq { format!("{entity}/{DLQ}") } else { entity.to_owned() };
    let location = format!("https://{namespace}.servicebus.windows.net/{path}/messages/{}/{token}", m.sequence_number);
    let mut r = (StatusCode::CREATED, m.body.clone()).into_response();
    let h = r.headers_mut();
    let mut set = |k: &str, v: &str| {
        if let (Ok(k), Ok(v)) = (axum::http::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            h.insert(k, v);
        }
    };
    set("brokerproperties", &broker.to_string());
    set("location", &location);
    set("content-type", m.content_type.as_deref().unwrap_or("application/octet-stream"));
    for (k, v) in &m.custom_properties {
        set(k, v);
    }
    r
}

fn settle(shared: &Shared, queue: &str, dlq: bool, method: &str, id: &str, token: &str) -> Response {
    let mut st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(e) = st.entities.get_mut(queue) else { return status(404, "MessagingEntityNotFound") };
    let t = now();
    sweep(e, t);
    let max = e.options.max_delivery_count;
    let lock_for = e.options.lock_duration;
    let list = if dlq { &mut e.dead } else { &mut e.messages };
    let Some(pos) = list.iter().position(|m| {
        m.sequence_number.to_string() == id && m.lock.as_ref().is_some_and(|(tok, until)| tok == token && *until > t)
    }) else {
        return status(404, "MessageLockLost");
    };
    match method {
        "DELETE" => {
            list.remove(pos);
        }
        "PUT" => {
            list[pos].lock = None;
            if !dlq && list[pos].delivery_count >= max {
                let mut m = list.remove(pos);
                dead_letter_max(&mut m, max);
                e.dead.push(m);
            }
            drop(st);
            shared.wake.notify_waiters();
        }
        _ => {
            list[pos].lock = Some((token.to_owned(), t + lock_for));
        }
    }
    StatusCode::OK.into_response()
}

fn describe(shared: &Shared, queue: &str) -> Response {
    let mut st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(e) = st.entities.get_mut(queue) else { return status(404, "MessagingEntityNotFound") };
    let t = now();
    sweep(e, t);
    let scheduled = e.messages.iter().filter(|m| m.visible_at > t).count();
    let active = e.messages.len() - scheduled;
    let xml = format!(
        "<entry xmlns=\"http://www.w3.org/2005/Atom\"><title type=\"text\">{name}</title><content type=\"application/xml\">\
         <QueueDescription xmlns=\"http://schemas.microsoft.com/netservices/2010/10/servicebus/connect\">\
         <LockDuration>PT{lock}S</LockDuration><MaxDeliveryCount>{max}</MaxDeliveryCount><MessageCount>{total}</MessageCount>\
         <CountDetails xmlns:d2p1=\"http://schemas.microsoft.com/netservices/2011/06/servicebus/connect\">\
         <d2p1:ActiveMessageCount>{active}</d2p1:ActiveMessageCount><d2p1:DeadLetterMessageCount>{dead}</d2p1:DeadLetterMessageCount>\
         <d2p1:ScheduledMessageCount>{scheduled}</d2p1:ScheduledMessageCount><d2p1:TransferMessageCount>0</d2p1:TransferMessageCount>\
         <d2p1:TransferDeadLetterMessageCount>0</d2p1:TransferDeadLetterMessageCount></CountDetails></QueueDescription></content></entry>",
        name = e.options.name,
        lock = e.options.lock_duration.as_secs(),
        max = e.options.max_delivery_count,
        total = e.messages.len() + e.dead.len(),
        dead = e.dead.len(),
    );
    let mut r = (StatusCode::OK, xml).into_response();
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/atom+xml;type=entry;charset=utf-8"));
    r
}

/// `GET /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.ServiceBus/namespaces/{ns}/queues/{q}`
/// (module docs): the ARM view of a queue with its `countDetails`.
fn arm_queue(
    st: &mut FakeState,
    method: &Method,
    headers: &HeaderMap,
    segments: &[String],
    entry: &mut LoggedRequest,
) -> Response {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match (&st.options.bearer_token, bearer) {
        (Some(t), Some(b)) if t.expose() == b.trim() => entry.auth = "bearer".into(),
        _ => {
            entry.auth = "invalid".into();
            return arm_error(401, "InvalidAuthenticationToken", "The access token is invalid.");
        }
    }
    let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
    let shape = lower.len() == 10
        && lower[2] == "resourcegroups"
        && lower[4] == "providers"
        && lower[5] == "microsoft.servicebus"
        && lower[6] == "namespaces"
        && lower[8] == "queues";
    if method != Method::GET || !shape {
        return arm_error(400, "InvalidRequest", "the fake serves only GET of a Service Bus queue");
    }
    let (ns, queue) = (&lower[7], &lower[9]);
    let id = format!("/{}", segments.join("/"));
    if !allowed(st, "bearer", queue, FakeRight::ArmRead) {
        return arm_error(
            403,
            "AuthorizationFailed",
            &format!(
                "The client does not have authorization to perform action 'Microsoft.ServiceBus/namespaces/queues/read' over scope '{id}' or the scope is invalid."
            ),
        );
    }
    let namespace = st.options.namespace.to_ascii_lowercase();
    let Some(e) = st.entities.get_mut(queue.as_str()).filter(|_| *ns == namespace) else {
        return arm_error(404, "ResourceNotFound", &format!("The Resource '{id}' was not found."));
    };
    let t = now();
    sweep(e, t);
    let scheduled = e.messages.iter().filter(|m| m.visible_at > t).count();
    let active = e.messages.len() - scheduled;
    let body = serde_json::json!({
        "id": id,
        "name": e.options.name,
        "type": "Microsoft.ServiceBus/namespaces/queues",
        "properties": {
            "maxDeliveryCount": e.options.max_delivery_count,
            "messageCount": e.messages.len() + e.dead.len(),
            "countDetails": {
                "activeMessageCount": active,
                "deadLetterMessageCount": e.dead.len(),
                "scheduledMessageCount": scheduled,
                "transferMessageCount": 0,
                "transferDeadLetterMessageCount": 0
            },
            "status": "Active"
        }
    });
    (StatusCode::OK, [("content-type", "application/json; charset=utf-8")], body.to_string()).into_response()
}
