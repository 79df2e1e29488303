//! The [`WorkQueue`] on Azure Service Bus (REST), for deployments where the Functions host
//! consumes the queue with a `serviceBusTrigger` (see [`crate::queue::trigger`]) and the
//! embedded SQLite file is not an option (several instances, no durable local disk).
//!
//! # Crate and build weight
//! Requests are built by `azure_messaging_servicebus` 0.21 (the only Service Bus crate on
//! crates.io that speaks the REST protocol). It sits on the old `azure_core` 0.21 (renamed
//! `azure_core_legacy` in `Cargo.toml`) next to our `azure_core` 1.x; with default
//! features off it brings no second HTTP/TLS stack, only `http-types`, `hmac`/`sha2` and a
//! few small crates. Measured on the project machine: ~28 s more for a cold debug build,
//! no measurable change to an incremental one. The crate hard-codes
//! `https://{namespace}.servicebus.windows.net` and only knows SAS keys, so we inject our
//! own `azure_core` 0.21 `HttpClient` ([`transport::Transport`]): it routes the requests
//! (to the local fake in tests) and, for managed identity, swaps the crate's SAS header
//! for a bearer token (`https://servicebus.azure.net/.default`). Both auth modes thus
//! share every request shape; only the `Authorization` header differs.
//!
//! `BrokerProperties` are written by us (as a raw header) rather than through the
//! crate's `SettableBrokerProperties`, because the crate formats `ScheduledEnqueueTimeUtc`
//! as RFC 2822 with `+0000`, while the documented format is RFC 2616 (`… GMT`).
//!
//! # Duplicate detection is not our dedupe
//! The trait's `dedupe_key` collapses a second enqueue only while the first is *waiting*.
//! Service Bus duplicate detection drops any message whose `MessageId` was seen within
//! the window (10 minutes by default), consumed or not. Using the dedupe key as
//! `MessageId` would swallow the worker's next retry of the same endpoint, so the
//! `MessageId` is a hash of (dedupe key, body) ([`message_id_for`]). What holds here:
//! - the *same* message enqueued twice (a handler re-run after a redelivery schedules the
//!   identical retry: same endpoint, attempt, first failure, reason) collapses, whatever
//!   the jittered delays were; the first copy keeps its due time;
//! - a retry with a different body (the next attempt) is always accepted, locked
//!   predecessor or not;
//! - an identical body enqueued while its twin is locked is dropped (the SQLite queue
//!   would keep it). Bodies name *what* to converge, never a state snapshot, and the
//!   handlers are idempotent; at-least-once delivery plus idempotency is the safety net,
//!   duplicate detection only saves work.
//!
//! A replay uses a fresh id (salted with the dead-letter entry) so it is never swallowed.
//!
//! # Dead letters
//! REST cannot dead-letter a peek-locked message (that is AMQP only), and nobody can send
//! into `$DeadLetterQueue`. [`WorkQueue::dead_letter`] therefore sends a copy to a second
//! queue (`{queue}-deadletter` by default) with the reason in the custom property
//! `DeadLetterReason` (the name Service Bus itself uses), then completes the original.
//! The lock is renewed first so a stale delivery cannot park a copy. Messages the broker
//! dead-letters itself (`MaxDeliveryCount` exceeded after the host abandoned them ten
//! times) stay in `{queue}/$DeadLetterQueue`; [`WorkQueue::dead_letters`] and
//! [`WorkQueue::replay`] read both. REST has no browse, so listing peek-locks every dead
//! letter and unlocks it again: each listing costs two requests per dead letter and
//! counts as a delivery on the dead-letter queue (give it a high `MaxDeliveryCount`).
//!
//! # Locks
//! The lock duration is a property of the queue entity (`LockDuration`), not of a
//! receive: `receive`'s `lock_for` cannot be honoured and is ignored. Settling needs the
//! crate's peek-lock response (it keeps the lock `Location`), so locks taken by this
//! process are tracked in memory by lock token; a delivery from elsewhere (another
//! process, the Functions host) cannot be settled through this value, which is what the
//! trigger path relies on (the host settles its own deliveries).

mod props;
pub mod transport;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_core_legacy::error::ErrorKind as LegacyErrorKind;
use azure_core_legacy::headers::Headers;
use azure_core_legacy::{HttpClient as _, Method, Request};
use azure_messaging_servicebus::service_bus::{PeekLockResponse, QueueClient, SendMessageOptions};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use self::props::{ReceivedProps, quote_property};
use self::transport::{Transport, WireAuth};
use super::{DeadLetter, Delivery, NewMessage, QueueError, WorkQueue};
use crate::arm::credential::{Secret, TokenSource};

/// Longest server-side long poll per request; longer waits loop.
const MAX_POLL_SECS: u64 = 55;
/// At most this many dead letters are read per listing (each costs two requests).
const MAX_DEAD_LETTERS_LISTED: usize = 1000;
/// Lock bookkeeping is dropped this long after the lock's expiry (settling fails anyway).
const LOCK_MAP_GRACE: Duration = Duration::from_secs(300);
/// Longest reason kept on a dead letter (it travels in an HTTP header).
const MAX_REASON_CHARS: usize = 1000;
/// Entity-description API version for [`WorkQueue::depth`].
const ENTITY_API_VERSION: &str = "2021-05";

/// Custom property names (application properties) on our messages.
pub const PROP_DEDUPE_KEY: &str = "DedupeKey";
pub const PROP_DEAD_LETTER_REASON: &str = "DeadLetterReason";
pub const PROP_DEAD_LETTER_DESCRIPTION: &str = "DeadLetterErrorDescription";
pub const PROP_ORIGINAL_DELIVERY_COUNT: &str = "OriginalDeliveryCount";
pub const PROP_DEAD_LETTERED_AT_MS: &str = "DeadLetteredAtUnixMs";

/// `[queue]` settings when `kind = "servicebus"`. Holds no secret: a SAS key is read from
/// the environment variable *named* by `key_env`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceBusSettings {
    /// Namespace name (`mybus`) or host (`mybus.servicebus.windows.net`).
    pub namespace: String,
    /// The work queue (also the `serviceBusTrigger`'s `queueName`).
    pub queue: String,
    /// Where `dead_letter` parks messages; empty = `{queue}-deadletter`.
    #[serde(default)]
    pub dead_letter_queue: String,
    pub auth: ServiceBusAuth,
    /// Origin to send requests to instead of the namespace (the local fake); empty = none.
    #[serde(default)]
    pub endpoint_override: String,
    /// The queue entity's `LockDuration`, for local lock bookkeeping (seconds).
    #[serde(default = "default_lock_secs")]
    pub lock_secs: u64,
}

fn default_lock_secs() -> u64 {
    60
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServiceBusAuth {
    /// Shared access key: `key_env` names the environment variable holding the key.
    Sas { key_name: String, key_env: String },
    /// Microsoft Entra token from the managed identity (roles: Azure Service Bus Data
    /// Sender + Receiver; `depth` needs Owner).
    ManagedIdentity {
        #[serde(default)]
        client_id: String,
    },
}

impl ServiceBusSettings {
    /// The namespace name without the `.servicebus.windows.net` suffix.
    pub fn namespace_name(&self) -> &str {
        let ns = self.namespace.trim();
        ns.strip_suffix(".servicebus.windows.net").unwrap_or(ns)
    }

    pub fn dead_letter_queue_name(&self) -> String {
        if self.dead_letter_queue.trim().is_empty() {
            format!("{}-deadletter", self.queue)
        } else {
            self.dead_letter_queue.trim().to_owned()
        }
    }
}

/// Resolved credentials for [`ServiceBusQueue::connect`].
#[derive(Clone)]
pub enum ServiceBusCredentials {
    SasKey { key_name: String, key: Secret },
    Tokens(Arc<dyn TokenSource>),
}

impl fmt::Debug for ServiceBusCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SasKey { key_name, .. } => {
                f.debug_struct("SasKey").field("key_name", key_name).finish_non_exhaustive()
            }
            Self::Tokens(t) => f.debug_tuple("Tokens").field(t).finish(),
        }
    }
}

impl ServiceBusCredentials {
    /// Reads the SAS key from the environment, or builds the managed-identity token source.
    pub fn from_settings(settings: &ServiceBusSettings) -> Result<Self, QueueError> {
        match &settings.auth {
            ServiceBusAuth::Sas { key_name, key_env } => {
                let key = std::env::var(key_env).ok().filter(|k| !k.trim().is_empty()).ok_or_else(|| {
                    QueueError::Config(format!("service bus SAS key: environment variable {key_env} is not set"))
                })?;
                Ok(Self::SasKey { key_name: key_name.clone(), key: Secret::new(key.trim()) })
            }
            ServiceBusAuth::ManagedIdentity { client_id } => {
                let id = Some(client_id.clone()).filter(|c| !c.trim().is_empty());
                let source = crate::arm::credential::AzureTokenSource::from_env(id)
                    .map_err(|e| QueueError::Config(format!("service bus managed identity: {e}")))?;
                Ok(Self::Tokens(Arc::new(source)))
            }
        }
    }
}

/// Service Bus work queue (module docs). Cheap to clone.
#[derive(Clone)]
pub struct ServiceBusQueue {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ServiceBusSettings,
    transport: Arc<Transport>,
    main: QueueClient,
    /// `{queue}/$DeadLetterQueue`: the broker's own dead letters.
    native_dlq: QueueClient,
    /// Where we park messages (module docs).
    parked: QueueClient,
    /// For signing requests the crate has no method for (entity description).
    sas: Option<(String, Secret)>,
    locks: Mutex<HashMap<String, Held>>,
}

struct Held {
    lock: Arc<PeekLockResponse>,
    locked_until: SystemTime,
}

impl fmt::Debug for ServiceBusQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBusQueue")
            .field("namespace", &self.inner.settings.namespace_name())
            .field("queue", &self.inner.settings.queue)
            .field("transport", &self.inner.transport)
            .finish()
    }
}

/// A deterministic `MessageId` (module docs, "Duplicate detection"): 32 hex digits of
/// SHA-256 over the dedupe key, a salt and the body's JSON text.
pub fn message_id_for(dedupe_key: &str, body: &serde_json::Value, salt: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"autopilot-message-id-v1\n");
    h.update(dedupe_key.as_bytes());
    h.update(b"\n");
    h.update(salt.as_bytes());
    h.update(b"\n");
    h.update(body.to_string().as_bytes());
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// `ScheduledEnqueueTimeUtc` has whole seconds; round *up* so a message is never early.
fn scheduled_time(now: SystemTime, delay: Duration) -> SystemTime {
    let due = now.checked_add(delay).unwrap_or(now);
    let since = due.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() + u64::from(since.subsec_nanos() > 0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// Maps a crate error to the queue's error classes.
fn classify(e: &azure_core_legacy::Error, what: &str, settle: bool) -> QueueError {
    match e.kind() {
        LegacyErrorKind::HttpResponse { status, error_code } => {
            let code = u16::from(*status);
            let detail = error_code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default();
            let text = format!("service bus {what}: HTTP {code}{detail}");
            match code {
                404 | 410 if settle => QueueError::LockLost(text),
                401 => QueueError::Config(format!("{text}: the SAS key or token was rejected")),
                403 => QueueError::Config(format!("{text}: not authorized (role, quota or message size)")),
                400 | 404 | 410 | 413 => QueueError::Config(text),
                _ => QueueError::Unavailable(text),
            }
        }
        _ => QueueError::Unavailable(format!("service bus {what}: {e}")),
    }
}

fn status_error(code: u16, what: &str) -> QueueError {
    let text = format!("service bus {what}: HTTP {code}");
    match code {
        401 | 403 | 400 | 404 | 410 => QueueError::Config(text),
        _ => QueueError::Unavailable(text),
    }
}

/// What to send: body plus the properties we set.
struct Outgoing<'a> {
    body: &'a serde_json::Value,
    message_id: String,
    correlation_id: &'a str,
    dedupe_key: &'a str,
    delay: Duration,
    label: &'static str,
    extra: Vec<(&'static str, String)>,
}

/// One message peek-locked from some entity.
struct Locked {
    lock: Arc<PeekLockResponse>,
    props: ReceivedProps,
    body: String,
}

impl ServiceBusQueue {
    /// Builds the clients; no request is made until the first operation.
    pub fn connect(settings: ServiceBusSettings, credentials: ServiceBusCredentials) -> Result<Self, QueueError> {
        let namespace = settings.namespace_name().to_owned();
        if namespace.is_empty() || settings.queue.trim().is_empty() {
            return Err(QueueError::Config("service bus: namespace and queue must be set".to_owned()));
        }
        let target = Some(settings.endpoint_override.trim()).filter(|t| !t.is_empty());
        let (auth, key_name, key, sas) = match credentials {
            ServiceBusCredentials::SasKey { key_name, key } => {
                (WireAuth::Sas, key_name.clone(), key.clone(), Some((key_name, key)))
            }
            // The crate insists on signing; the transport replaces its header with the
            // bearer token, so this random key never leaves the process.
            ServiceBusCredentials::Tokens(t) => (
                WireAuth::Bearer(t),
                "managed-identity".to_owned(),
                Secret::new(format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))),
                None,
            ),
        };
        let transport = Arc::new(Transport::new(&namespace, target, auth).map_err(QueueError::Config)?);
        let http: Arc<dyn azure_core_legacy::HttpClient> = transport.clone();
        let client = |entity: String| {
            QueueClient::new(http.clone(), namespace.clone(), entity, key_name.clone(), key.expose().to_owned())
                .map_err(|e| QueueError::Config(format!("service bus client: {e}")))
        };
        let main = client(settings.queue.clone())?;
        let native_dlq = client(format!("{}/$DeadLetterQueue", settings.queue))?;
        let parked = client(settings.dead_letter_queue_name())?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                transport,
                main,
                native_dlq,
                parked,
                sas,
                locks: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn settings(&self) -> &ServiceBusSettings {
        &self.inner.settings
    }

    async fn send(&self, to: &QueueClient, what: &str, out: Outgoing<'_>) -> Result<(), QueueError> {
        let mut broker = serde_json::Map::new();
        broker.insert("MessageId".into(), out.message_id.into());
        if !out.correlation_id.is_empty() {
            broker.insert("CorrelationId".into(), out.correlation_id.into());
        }
        broker.insert("Label".into(), out.label.into());
        if !out.delay.is_zero() {
            let at = scheduled_time(SystemTime::now(), out.delay);
            broker.insert("ScheduledEnqueueTimeUtc".into(), httpdate::fmt_http_date(at).into());
        }
        let mut custom = HashMap::new();
        // Written as a raw header (module docs: the crate's date format).
        custom.insert("BrokerProperties".to_owned(), serde_json::Value::Object(broker).to_string());
        custom.insert(PROP_DEDUPE_KEY.to_owned(), quote_property(out.dedupe_key));
        for (k, v) in out.extra {
            custom.insert(k.to_owned(), v);
        }
        let options = SendMessageOptions {
            content_type: Some("application/json".to_owned()),
            broker_properties: None,
            custom_properties: Some(custom),
        };
        to.send_message(&out.body.to_string(), Some(options)).await.map_err(|e| classify(&e, what, false))
    }

    /// One peek-lock; `None` on 204 (nothing within `wait_secs`).
    async fn peek(&self, from: &QueueClient, wait_secs: u64, what: &str) -> Result<Option<Locked>, QueueError> {
        let resp = from
            .peek_lock_message2(Some(Duration::from_secs(wait_secs)))
            .await
            .map_err(|e| classify(&e, what, false))?;
        let code = u16::from(*resp.status());
        match code {
            204 => return Ok(None),
            200 | 201 => {}
            _ => return Err(status_error(code, what)),
        }
        let headers: Headers =
            resp.custom_properties().unwrap_or_else(|never: std::convert::Infallible| match never {});
        let props =
            ReceivedProps::from_headers(&headers).map_err(|e| QueueError::Unavailable(format!("{what}: {e}")))?;
        let body = resp.body();
        Ok(Some(Locked { lock: Arc::new(resp), props, body }))
    }

    fn hold(&self, locked: &Locked) {
        let now = SystemTime::now();
        let mut map = self.inner.locks.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, h| h.locked_until + LOCK_MAP_GRACE > now);
        let locked_until = locked
            .props
            .locked_until
            .unwrap_or_else(|| now + Duration::from_secs(self.inner.settings.lock_secs.max(1)));
        map.insert(locked.props.lock_token.clone(), Held { lock: Arc::clone(&locked.lock), locked_until });
    }

    fn held(&self, delivery: &Delivery) -> Result<Arc<PeekLockResponse>, QueueError> {
        let map = self.inner.locks.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&delivery.lock_token).map(|h| Arc::clone(&h.lock)).ok_or_else(|| lock_lost(delivery))
    }

    fn release(&self, delivery: &Delivery) {
        self.inner.locks.lock().unwrap_or_else(PoisonError::into_inner).remove(&delivery.lock_token);
    }

    /// Sends a copy of `delivery` to the dead-letter destination with `reason`, without
    /// touching the original (the trigger path: the host completes it on our 2xx).
    pub async fn park(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError> {
        let reason: String =
            reason.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_REASON_CHARS).collect();
        let out = Outgoing {
            body: &delivery.body,
            message_id: delivery.message_id.clone(),
            correlation_id: &delivery.correlation_id,
            dedupe_key: &delivery.dedupe_key,
            delay: Duration::ZERO,
            label: "dead-letter",
            extra: vec![
                (PROP_DEAD_LETTER_REASON, quote_property(&reason)),
                (PROP_ORIGINAL_DELIVERY_COUNT, delivery.delivery_count.to_string()),
                (PROP_DEAD_LETTERED_AT_MS, unix_ms(SystemTime::now()).to_string()),
            ],
        };
        self.send(&self.inner.parked, "dead-letter send", out).await
    }

    fn to_delivery(locked: &Locked, body: serde_json::Value) -> Delivery {
        let p = &locked.props;
        Delivery {
            message_id: p.message_id.clone(),
            lock_token: p.lock_token.clone(),
            dedupe_key: p.string(PROP_DEDUPE_KEY).unwrap_or_else(|| p.message_id.clone()),
            correlation_id: p.correlation_id.clone().unwrap_or_default(),
            body,
            delivery_count: p.delivery_count,
            enqueued_at: p.enqueued_at.unwrap_or_else(SystemTime::now),
        }
    }

    /// Peek-locks everything in the two dead-letter sources (module docs: cost).
    async fn lock_all_dead(&self) -> Result<Vec<(bool, Locked)>, QueueError> {
        let mut all = Vec::new();
        for (native, from) in [(false, &self.inner.parked), (true, &self.inner.native_dlq)] {
            while all.len() < MAX_DEAD_LETTERS_LISTED {
                match self.peek(from, 0, "list dead letters").await {
                    Ok(Some(l)) => all.push((native, l)),
                    Ok(None) => break,
                    Err(e) => {
                        self.unlock_all(&all).await;
                        return Err(e);
                    }
                }
            }
        }
        Ok(all)
    }

    async fn unlock_all(&self, locked: &[(bool, Locked)]) {
        for (_, l) in locked {
            if let Err(e) = l.lock.unlock_message().await {
                // The lock expires by itself; the entry is only hidden until then.
                tracing::warn!(message_id = %l.props.message_id, error = %e, "could not unlock a dead letter after listing");
            }
        }
    }

    fn to_dead_letter(native: bool, l: &Locked) -> DeadLetter {
        let p = &l.props;
        let body = serde_json::from_str(&l.body).unwrap_or_else(|_| serde_json::Value::String(l.body.clone()));
        let mut reason = p.string(PROP_DEAD_LETTER_REASON).unwrap_or_default();
        if let Some(d) = p.string(PROP_DEAD_LETTER_DESCRIPTION).filter(|d| !d.is_empty()) {
            reason = if reason.is_empty() { d } else { format!("{reason}: {d}") };
        }
        // Our listing's own peek-lock counted as a delivery on the broker's DLQ.
        let delivery_count = p
            .integer(PROP_ORIGINAL_DELIVERY_COUNT)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(if native { p.delivery_count.saturating_sub(1) } else { p.delivery_count });
        let dead_lettered_at = p
            .integer(PROP_DEAD_LETTERED_AT_MS)
            .and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
            .or(p.enqueued_at)
            .unwrap_or(UNIX_EPOCH);
        DeadLetter {
            message_id: p.message_id.clone(),
            dedupe_key: p.string(PROP_DEDUPE_KEY).unwrap_or_else(|| p.message_id.clone()),
            correlation_id: p.correlation_id.clone().unwrap_or_default(),
            body,
            reason,
            delivery_count,
            dead_lettered_at,
        }
    }

    /// `GET /{queue}?api-version=…` (entity description). The crate has no method for it,
    /// so the request is built and, for SAS, signed here in the crate's format.
    async fn entity_description(&self) -> Result<String, QueueError> {
        let what = "read queue description";
        let url = format!(
            "https://{}.servicebus.windows.net/{}?api-version={ENTITY_API_VERSION}",
            self.inner.settings.namespace_name(),
            self.inner.settings.queue
        );
        let parsed = url::Url::parse(&url).map_err(|e| QueueError::Config(format!("{what}: {e}")))?;
        let mut req = Request::new(parsed, Method::Get);
        let auth = match &self.inner.sas {
            Some((name, key)) => props::sas_token(&url, name, key, SystemTime::now() + Duration::from_secs(3600))
                .map_err(|e| QueueError::Config(format!("{what}: {e}")))?,
            None => "replaced-by-transport".to_owned(),
        };
        req.insert_header(azure_core_legacy::headers::AUTHORIZATION, auth);
        req.set_body(azure_core_legacy::EMPTY_BODY);
        let resp =
            self.inner.transport.execute_request_check_status(&req).await.map_err(|e| classify(&e, what, false))?;
        Ok(String::from_utf8_lossy(resp.body()).into_owned())
    }
}

fn lock_lost(d: &Delivery) -> QueueError {
    QueueError::LockLost(format!(
        "message {}: this process holds no lock with that token (expired, settled, or taken elsewhere)",
        d.message_id
    ))
}

#[async_trait::async_trait]
impl WorkQueue for ServiceBusQueue {
    async fn enqueue(&self, msg: NewMessage) -> Result<(), QueueError> {
        let out = Outgoing {
            body: &msg.body,
            message_id: message_id_for(&msg.dedupe_key, &msg.body, ""),
            correlation_id: &msg.correlation_id,
            dedupe_key: &msg.dedupe_key,
            delay: msg.delay,
            label: "work",
            extra: Vec::new(),
        };
        self.send(&self.inner.main, "send", out).await
    }

    async fn receive(&self, wait: Duration, _lock_for: Duration) -> Result<Option<Delivery>, QueueError> {
        let started = Instant::now();
        let deadline = started.checked_add(wait).unwrap_or_else(|| started + Duration::from_secs(86_400 * 365));
        let mut first = true;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if !first && remaining.is_zero() {
                return Ok(None);
            }
            let secs = remaining.as_secs().min(MAX_POLL_SECS);
            // The server waits in whole seconds; a sub-second tail is slept here and
            // finished with one immediate poll, so `receive` never returns early.
            if secs == 0 && !first {
                tokio::time::sleep(remaining).await;
            }
            first = false;
            let Some(locked) = self.peek(&self.inner.main, secs, "receive").await? else {
                continue;
            };
            match serde_json::from_str::<serde_json::Value>(&locked.body) {
                Ok(body) => {
                    self.hold(&locked);
                    return Ok(Some(Self::to_delivery(&locked, body)));
                }
                Err(e) => {
                    // Someone else's garbage must not wedge the queue: park and go on.
                    let d = Self::to_delivery(&locked, serde_json::Value::String(locked.body.clone()));
                    tracing::warn!(message_id = %d.message_id, error = %e, "dead-lettering message with a non-JSON body");
                    self.park(&d, &format!("message body is not JSON: {e}")).await?;
                    locked.lock.delete_message().await.map_err(|e| classify(&e, "complete", true))?;
                }
            }
        }
    }

    async fn complete(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let lock = self.held(delivery)?;
        match lock.delete_message().await {
            Ok(_) => {
                self.release(delivery);
                Ok(())
            }
            Err(e) => {
                let err = classify(&e, "complete", true);
                if matches!(err, QueueError::LockLost(_)) {
                    self.release(delivery);
                }
                Err(err)
            }
        }
    }

    async fn abandon(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let lock = self.held(delivery)?;
        let result = lock.unlock_message().await.map_err(|e| classify(&e, "abandon", true));
        if !matches!(result, Err(QueueError::Unavailable(_))) {
            self.release(delivery);
        }
        result
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError> {
        let lock = self.held(delivery)?;
        // Proves the lock is still ours before a copy exists anywhere.
        if let Err(e) = lock.renew_message_lock().await {
            let err = classify(&e, "renew lock", true);
            if matches!(err, QueueError::LockLost(_)) {
                self.release(delivery);
            }
            return Err(err);
        }
        self.park(delivery, reason).await?;
        // If this fails the original comes back and may be parked twice: at least once.
        self.complete(delivery).await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        let locked = self.lock_all_dead().await?;
        let mut out: Vec<(DeadLetter, i64)> =
            locked.iter().map(|(native, l)| (Self::to_dead_letter(*native, l), l.props.sequence_number)).collect();
        self.unlock_all(&locked).await;
        out.sort_by(|a, b| b.0.dead_lettered_at.cmp(&a.0.dead_lettered_at).then(b.1.cmp(&a.1)));
        Ok(out.into_iter().map(|(d, _)| d).collect())
    }

    async fn replay(&self, message_id: &str) -> Result<(), QueueError> {
        let locked = self.lock_all_dead().await?;
        let Some(pos) = locked.iter().position(|(_, l)| l.props.message_id == message_id) else {
            self.unlock_all(&locked).await;
            return Err(QueueError::NotFound(message_id.to_owned()));
        };
        let (native, target) = &locked[pos];
        let mut dead = Self::to_dead_letter(*native, target);
        dead.body = super::work::restart_window(&dead.body);
        let salt = format!("replay:{}:{}", if *native { "broker" } else { "parked" }, target.props.sequence_number);
        let out = Outgoing {
            body: &dead.body,
            message_id: message_id_for(&dead.dedupe_key, &dead.body, &salt),
            correlation_id: &dead.correlation_id,
            dedupe_key: &dead.dedupe_key,
            delay: Duration::ZERO,
            label: "work",
            extra: Vec::new(),
        };
        let sent = self.send(&self.inner.main, "replay send", out).await;
        let settled = match &sent {
            Ok(()) => target.lock.delete_message().await.map(|_| ()).map_err(|e| classify(&e, "replay complete", true)),
            Err(_) => Ok(()),
        };
        let others: Vec<(bool, Locked)> =
            locked.into_iter().enumerate().filter(|(i, _)| *i != pos).map(|(_, l)| l).collect();
        self.unlock_all(&others).await;
        sent?;
        // Sent but not removed: the dead letter reappears after its lock expires and a
        // second replay would re-send (under a different id). Report it.
        settled
    }

    async fn depth(&self) -> Result<usize, QueueError> {
        let xml = self.entity_description().await?;
        let count = |name: &str| props::xml_count(&xml, name);
        match (count("ActiveMessageCount"), count("ScheduledMessageCount")) {
            (Some(a), Some(s)) => Ok(usize::try_from(a.saturating_add(s)).unwrap_or(usize::MAX)),
            _ => Err(QueueError::Unavailable(
                "service bus queue description has no CountDetails (ActiveMessageCount, ScheduledMessageCount)"
                    .to_owned(),
            )),
        }
    }
}

/// The trigger path needs "schedule a copy" and "park" without holding the lock.
#[async_trait::async_trait]
impl super::trigger::TriggerQueue for ServiceBusQueue {
    async fn schedule(&self, msg: NewMessage) -> Result<(), QueueError> {
        self.enqueue(msg).await
    }

    async fn park(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError> {
        ServiceBusQueue::park(self, delivery, reason).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_and_distinct() {
        let body = serde_json::json!({"v": 1, "work": {"attempt": 1}});
        let a = message_id_for("k", &body, "");
        assert_eq!(a.len(), 32);
        assert_eq!(a, message_id_for("k", &body, ""));
        assert_ne!(a, message_id_for("k2", &body, ""));
        assert_ne!(a, message_id_for("k", &body, "replay:parked:3"));
        assert_ne!(a, message_id_for("k", &serde_json::json!({"v": 1, "work": {"attempt": 2}}), ""));
    }

    #[test]
    fn scheduled_time_rounds_up_to_whole_seconds() {
        let now = UNIX_EPOCH + Duration::from_millis(10_100);
        assert_eq!(scheduled_time(now, Duration::from_millis(600)), UNIX_EPOCH + Duration::from_secs(11));
        assert_eq!(scheduled_time(now, Duration::from_millis(900)), UNIX_EPOCH + Duration::from_secs(11));
        assert_eq!(
            scheduled_time(UNIX_EPOCH + Duration::from_secs(5), Duration::from_secs(2)),
            UNIX_EPOCH + Duration::from_secs(7)
        );
    }

    #[test]
    fn settings_parse_and_debug_holds_no_secret() {
        let s: ServiceBusSettings = toml::from_str(
            r#"namespace = "mybus.servicebus.windows.net"
               queue = "work"
               auth = { kind = "sas", key_name = "send-listen", key_env = "AUTOPILOT_SB_KEY" }"#,
        )
        .expect("settings");
        assert_eq!(s.namespace_name(), "mybus");
        assert_eq!(s.dead_letter_queue_name(), "work-deadletter");
        assert_eq!(s.lock_secs, 60);
        let mi: ServiceBusSettings =
            toml::from_str("namespace = \"b\"\nqueue = \"q\"\nauth = { kind = \"managed_identity\" }").expect("mi");
        assert_eq!(mi.auth, ServiceBusAuth::ManagedIdentity { client_id: String::new() });
        let creds = ServiceBusCredentials::SasKey { key_name: "n".into(), key: Secret::new("very-secret") };
        assert!(!format!("{creds:?}").contains("very-secret"));
        assert!(
            toml::from_str::<ServiceBusSettings>("namespace = \"b\"\nqueue = \"q\"\nauth = { kind = \"x\" }").is_err()
        );
    }
}
