//! The [`WorkQueue`] on Azure Service Bus (REST), for deployments where the Functions host
//! consumes the queue with a `serviceBusTrigger` (see `crate::runtime::trigger`) and the
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
//! # Duplicate detection collapses duplicate work
//! The trait's `dedupe_key` collapses a second enqueue of the same work while the first
//! waits. Service Bus duplicate detection drops any message whose `MessageId` was seen
//! within the window (10 minutes by default), consumed or not. The `MessageId` is
//! therefore derived from *what the work is*, never from a body that carries timestamps
//! or reasons ([`message_id_for`]): the dedupe key (kind, vendor, endpoint), the attempt
//! number and a coarse time bucket (`dedupe_bucket_secs`, 60 s by default):
//! - two events for one endpoint queue the same item a few seconds apart (ARM emits
//!   several writes while a PE provisions; Event Grid redelivers whole batches): one
//!   `MessageId`, so the broker keeps one message, whatever their `first_failed_at` or
//!   reason say;
//! - a retry carries `attempt + 1`, so it is never swallowed by its predecessor, locked or
//!   consumed;
//! - the bucket ends the collapse: the same first-attempt work queued again a bucket
//!   later (the endpoint was deleted a minute after its registration ran) is a new
//!   message, so duplicate detection cannot drop a later legitimate item for the whole
//!   window. Inside one bucket a second item whose twin was already *consumed* is dropped;
//!   the worker re-reads ARM when it runs, and the sweep is the backstop for that case.
//!
//! A replay uses a fresh id (salted with the dead-letter entry) so it is never swallowed.
//!
//! # Dead letters
//! What the host can do decides the design. A custom handler cannot settle: the host
//! completes the message on 2xx and abandons it otherwise (`autoCompleteMessages` must
//! stay `true` for non-.NET workers, and `MessageActions` reaches us as `{}`), and REST
//! cannot dead-letter a message either (that is AMQP only; nobody can send into
//! `$DeadLetterQueue`). Abandoning until `MaxDeliveryCount` would reach the broker's DLQ
//! only by running the work, side effects included, ten times at once, and with the
//! reason lost. So a permanent failure is stored by us and the host completes the
//! original on our 2xx.
//!
//! Where: Service Bus REST has no browse (the data-plane spec 2021-05 covers entities
//! only; messages are read by peek-lock or destructive read), so a parked *queue* can only
//! be listed by locking every message, which counts a delivery each time and hides it
//! from a concurrent listing. In Azure the dead letters therefore live in an **Azure
//! Table** ([`index`], `dead_letter_table_endpoint` + `dead_letter_table`): parking is one
//! insert-or-replace keyed by `MessageId` (a redelivered park overwrites, never doubles),
//! listing and counting are reads that lock and consume nothing and survive every process
//! restart, replay is send-then-delete. infra/modules/servicebus.bicep creates the table
//! and grants the app Storage Table Data Contributor on it, and nothing else is needed
//! (no `-deadletter` queue, no Send on a second entity); `tests/queue_servicebus.rs`
//! reads the Bicep to keep the two in step.
//!
//! The broker's own dead letters (`{queue}/$DeadLetterQueue`: messages the host abandoned
//! `MaxDeliveryCount` times, expired ones) are listed too, by peek-lock and unlock: a
//! dead-letter subqueue has no `MaxDeliveryCount`, so locking there never moves or loses
//! a message. Without a table configured (local runs with a SAS key) the old layout
//! remains: a copy is sent to `{queue}-deadletter` (`dead_letter_queue`; its own DLQ is
//! listed too) and listing peek-locks it, which counts deliveries there; it is not what
//! infra deploys.
//!
//! # Counts without `Manage`
//! The entity description (`GET /{queue}?api-version=2021-05`) needs the `Manage` claim,
//! i.e. Azure Service Bus Data Owner, which could also delete or reconfigure the queue.
//! With a managed identity the counts are read from ARM instead (`arm_queue_id`,
//! `GET …/namespaces/{ns}/queues/{q}`, `properties.countDetails`), which needs only
//! `Microsoft.ServiceBus/namespaces/queues/read`: infra grants Reader on the one queue,
//! read-only control plane, no message access. The same read gives the broker's
//! dead-letter count, so the health view counts dead letters (table rows + that number)
//! without touching a message. With a SAS key (a `Manage` rule) the entity description is
//! used as before.
//!
//! # Locks
//! The lock duration is a property of the queue entity (`LockDuration`), not of a
//! receive: `receive`'s `lock_for` cannot be honoured and is ignored. Settling needs the
//! crate's peek-lock response (it keeps the lock `Location`), so locks taken by this
//! process are tracked in memory by lock token; a delivery from elsewhere (another
//! process, the Functions host) cannot be settled through this value, which is what the
//! trigger path relies on (the host settles its own deliveries).

pub mod index;
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
use super::api::{DeadLetter, Delivery, NewMessage, QueueError, WorkQueue};
use crate::arm::credential::TokenSource;
use crate::model::Secret;

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
/// ARM API version for the queue read (module docs, "Counts without `Manage`").
const ARM_API_VERSION: &str = "2021-11-01";
const ARM_SCOPE: &str = "https://management.azure.com/.default";
const ARM_DEFAULT_ENDPOINT: &str = "https://management.azure.com";

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
    /// Table service endpoint of the dead-letter store (module docs); empty = park on
    /// `dead_letter_queue` instead (local runs only).
    #[serde(default)]
    pub dead_letter_table_endpoint: String,
    /// Table holding the dead letters (with `dead_letter_table_endpoint`).
    #[serde(default)]
    pub dead_letter_table: String,
    /// ARM id of the work queue, for counts without `Manage` (module docs); empty = the
    /// entity description.
    #[serde(default)]
    pub arm_queue_id: String,
    /// ARM origin for `arm_queue_id`; empty = `https://management.azure.com`.
    #[serde(default)]
    pub management_endpoint: String,
    /// Width of the `MessageId` time bucket (module docs, "Duplicate detection").
    #[serde(default = "default_dedupe_bucket_secs")]
    pub dedupe_bucket_secs: u64,
}

fn default_lock_secs() -> u64 {
    60
}

fn default_dedupe_bucket_secs() -> u64 {
    60
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServiceBusAuth {
    /// Shared access key: `key_env` names the environment variable holding the key.
    Sas { key_name: String, key_env: String },
    /// Microsoft Entra token from the managed identity (roles: Azure Service Bus Data
    /// Sender + Receiver on the queue, Reader on it for the counts, Storage Table Data
    /// Contributor on the dead-letter table).
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
    /// Where we park messages without a table (module docs).
    parked: QueueClient,
    /// `{parked}/$DeadLetterQueue`: parked messages the broker moved (expiry, or locked
    /// `MaxDeliveryCount` times by listings of the parked layout).
    parked_dlq: QueueClient,
    /// For signing requests the crate has no method for (entity description).
    sas: Option<(String, Secret)>,
    /// The managed identity (ARM counts); `None` with a SAS key.
    tokens: Option<Arc<dyn TokenSource>>,
    /// The dead-letter store in Azure (module docs); `None` = the parked queue.
    index: Option<index::DeadLetterTable>,
    http: reqwest::Client,
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
/// SHA-256 over the dedupe key, the work's attempt number, the time bucket `now` falls
/// in and a salt. The body's other fields (reason, `first_failed_at`) take no part.
pub fn message_id_for(
    dedupe_key: &str,
    body: &serde_json::Value,
    now: SystemTime,
    bucket: Duration,
    salt: &str,
) -> String {
    let attempt = body.pointer("/work/attempt").and_then(serde_json::Value::as_u64).unwrap_or(0);
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let slot = secs / bucket.as_secs().max(1);
    let mut h = Sha256::new();
    h.update(b"autopilot-message-id-v2\n");
    h.update(dedupe_key.as_bytes());
    h.update(format!("\nattempt={attempt}\nbucket={slot}\n").as_bytes());
    h.update(salt.as_bytes());
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
        let (auth, key_name, key, sas, tokens) = match credentials {
            ServiceBusCredentials::SasKey { key_name, key } => {
                (WireAuth::Sas, key_name.clone(), key.clone(), Some((key_name, key)), None)
            }
            // The crate insists on signing; the transport replaces its header with the
            // bearer token, so this random key never leaves the process.
            ServiceBusCredentials::Tokens(t) => (
                WireAuth::Bearer(Arc::clone(&t)),
                "managed-identity".to_owned(),
                Secret::new(format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))),
                None,
                Some(t),
            ),
        };
        let index = match (settings.dead_letter_table_endpoint.trim(), &tokens) {
            ("", _) => None,
            (endpoint, Some(t)) => Some(
                index::DeadLetterTable::new(
                    endpoint,
                    settings.dead_letter_table.trim(),
                    &settings.queue,
                    Arc::clone(t),
                )
                .map_err(QueueError::Config)?,
            ),
            (_, None) => {
                return Err(QueueError::Config(
                    "service bus: the dead-letter table needs the managed identity (auth kind managed_identity)"
                        .to_owned(),
                ));
            }
        };
        let arm_http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| QueueError::Config(format!("service bus ARM client: {e}")))?;
        let transport = Arc::new(Transport::new(&namespace, target, auth).map_err(QueueError::Config)?);
        let http: Arc<dyn azure_core_legacy::HttpClient> = transport.clone();
        let client = |entity: String| {
            QueueClient::new(http.clone(), namespace.clone(), entity, key_name.clone(), key.expose().to_owned())
                .map_err(|e| QueueError::Config(format!("service bus client: {e}")))
        };
        let main = client(settings.queue.clone())?;
        let native_dlq = client(format!("{}/$DeadLetterQueue", settings.queue))?;
        let parked = client(settings.dead_letter_queue_name())?;
        let parked_dlq = client(format!("{}/$DeadLetterQueue", settings.dead_letter_queue_name()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                transport,
                main,
                native_dlq,
                parked,
                parked_dlq,
                sas,
                tokens,
                index,
                http: arm_http,
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

    /// Stores `delivery` as a dead letter with `reason` (module docs: the table in Azure,
    /// the parked queue otherwise), without touching the original (the trigger path: the
    /// host completes it on our 2xx).
    pub async fn park(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError> {
        let reason: String =
            reason.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_REASON_CHARS).collect();
        if let Some(index) = &self.inner.index {
            let dead = DeadLetter {
                message_id: delivery.message_id.clone(),
                dedupe_key: delivery.dedupe_key.clone(),
                correlation_id: delivery.correlation_id.clone(),
                body: delivery.body.clone(),
                reason,
                delivery_count: delivery.delivery_count,
                dead_lettered_at: SystemTime::now(),
            };
            return index.put(&dead).await;
        }
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

    /// Peek-locks everything in the locked dead-letter sources (module docs): the
    /// broker's DLQ always, the parked queue only when no table is configured.
    async fn lock_all_dead(&self) -> Result<Vec<(bool, Locked)>, QueueError> {
        let mut all = Vec::new();
        let sources: Vec<(bool, &QueueClient)> = if self.inner.index.is_some() {
            vec![(true, &self.inner.native_dlq)]
        } else {
            vec![(false, &self.inner.parked), (false, &self.inner.parked_dlq), (true, &self.inner.native_dlq)]
        };
        for (native, from) in sources {
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

    /// The work queue's counts (module docs, "Counts without `Manage`"): from ARM with a
    /// managed identity and `arm_queue_id`, else from the entity description.
    async fn counts(&self) -> Result<Counts, QueueError> {
        let arm_id = self.inner.settings.arm_queue_id.trim();
        match (&self.inner.tokens, arm_id) {
            (Some(tokens), id) if !id.is_empty() => self.arm_counts(tokens.as_ref(), id).await,
            _ => {
                let xml = self.entity_description(&self.inner.settings.queue).await?;
                Counts::from_xml(&xml)
            }
        }
    }

    /// `GET {management}{arm_queue_id}?api-version=…`: `properties.countDetails`.
    async fn arm_counts(&self, tokens: &dyn TokenSource, id: &str) -> Result<Counts, QueueError> {
        let what = "read queue counts from ARM";
        let origin = Some(self.inner.settings.management_endpoint.trim().trim_end_matches('/'))
            .filter(|o| !o.is_empty())
            .unwrap_or(ARM_DEFAULT_ENDPOINT);
        let url = format!("{origin}/{}?api-version={ARM_API_VERSION}", id.trim_start_matches('/'));
        let token =
            tokens.token(ARM_SCOPE).await.map_err(|e| QueueError::Unavailable(format!("{what}: token: {e}")))?;
        let mut auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| QueueError::Config(format!("{what}: the token is not a valid header value")))?;
        auth.set_sensitive(true);
        let resp = self
            .inner
            .http
            .get(&url)
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                QueueError::Unavailable(format!(
                    "{what}: {}",
                    if e.is_timeout() { "timed out" } else { "no connection" }
                ))
            })?;
        let code = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        if !(200..300).contains(&code) {
            let err = body.pointer("/error/code").and_then(serde_json::Value::as_str).unwrap_or("");
            let text = format!("{what}: HTTP {code} {err}");
            return Err(match code {
                401 | 403 => QueueError::Config(format!("{text}: the identity needs Reader on the queue")),
                400 | 404 => QueueError::Config(text),
                _ => QueueError::Unavailable(text),
            });
        }
        let n = |k: &str| body.pointer(&format!("/properties/countDetails/{k}")).and_then(serde_json::Value::as_u64);
        match (n("activeMessageCount"), n("scheduledMessageCount"), n("deadLetterMessageCount")) {
            (Some(active), Some(scheduled), Some(dead)) => Ok(Counts { active, scheduled, dead }),
            _ => Err(QueueError::Unavailable(format!("{what}: the answer has no properties.countDetails"))),
        }
    }

    /// `GET /{entity}?api-version=…` (entity description). The crate has no method for it,
    /// so the request is built and, for SAS, signed here in the crate's format.
    async fn entity_description(&self, entity: &str) -> Result<String, QueueError> {
        let what = "read queue description";
        let url = format!(
            "https://{}.servicebus.windows.net/{entity}?api-version={ENTITY_API_VERSION}",
            self.inner.settings.namespace_name(),
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

/// Message counts of one queue entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    active: u64,
    scheduled: u64,
    /// In its `$DeadLetterQueue`.
    dead: u64,
}

impl Counts {
    fn from_xml(xml: &str) -> Result<Self, QueueError> {
        let count = |name: &str| props::xml_count(xml, name);
        match (count("ActiveMessageCount"), count("ScheduledMessageCount")) {
            (Some(active), Some(scheduled)) => {
                Ok(Self { active, scheduled, dead: count("DeadLetterMessageCount").unwrap_or(0) })
            }
            _ => Err(QueueError::Unavailable(
                "service bus queue description has no CountDetails (ActiveMessageCount, ScheduledMessageCount)"
                    .to_owned(),
            )),
        }
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
            message_id: message_id_for(
                &msg.dedupe_key,
                &msg.body,
                SystemTime::now(),
                Duration::from_secs(self.inner.settings.dedupe_bucket_secs),
                "",
            ),
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
        let mut out: Vec<(DeadLetter, i64)> = match &self.inner.index {
            Some(index) => index.list().await?.into_iter().map(|d| (d.dead, 0)).collect(),
            None => Vec::new(),
        };
        let locked = self.lock_all_dead().await?;
        out.extend(locked.iter().map(|(native, l)| (Self::to_dead_letter(*native, l), l.props.sequence_number)));
        self.unlock_all(&locked).await;
        out.sort_by(|a, b| b.0.dead_lettered_at.cmp(&a.0.dead_lettered_at).then(b.1.cmp(&a.1)));
        Ok(out.into_iter().map(|(d, _)| d).collect())
    }

    async fn dead_letter_count(&self) -> Result<usize, QueueError> {
        let Some(index) = &self.inner.index else {
            // The parked layout (local runs): its entity description has both numbers.
            let parked =
                Counts::from_xml(&self.entity_description(&self.inner.settings.dead_letter_queue_name()).await?)?;
            let main = self.counts().await?;
            let n = parked.active + parked.scheduled + parked.dead + main.dead;
            return Ok(usize::try_from(n).unwrap_or(usize::MAX));
        };
        let stored = index.count().await?;
        let broker = self.counts().await?.dead;
        Ok(stored.saturating_add(usize::try_from(broker).unwrap_or(usize::MAX)))
    }

    async fn replay(&self, message_id: &str) -> Result<(), QueueError> {
        if let Some(index) = &self.inner.index {
            let stored = index.list().await?;
            if let Some(entry) = stored.into_iter().find(|d| d.dead.message_id == message_id) {
                let mut dead = entry.dead;
                dead.body = super::work::restart_window(&dead.body);
                let salt = format!("replay:table:{}", unix_ms(dead.dead_lettered_at));
                let out = Outgoing {
                    body: &dead.body,
                    message_id: message_id_for(
                        &dead.dedupe_key,
                        &dead.body,
                        SystemTime::now(),
                        Duration::from_secs(1),
                        &salt,
                    ),
                    correlation_id: &dead.correlation_id,
                    dedupe_key: &dead.dedupe_key,
                    delay: Duration::ZERO,
                    label: "work",
                    extra: Vec::new(),
                };
                self.send(&self.inner.main, "replay send", out).await?;
                // Removed only once sent: a failure here leaves it listed, and a second
                // replay would send it again (under a different id). Reported.
                // `false` = a concurrent replay removed it first: both sent, and the work
                // is idempotent.
                index.remove(&entry.row_key).await?;
                return Ok(());
            }
        }
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
            message_id: message_id_for(&dead.dedupe_key, &dead.body, SystemTime::now(), Duration::from_secs(1), &salt),
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
        let c = self.counts().await?;
        Ok(usize::try_from(c.active.saturating_add(c.scheduled)).unwrap_or(usize::MAX))
    }
}

/// The trigger path needs "schedule a copy" and "park" without holding the lock.
#[async_trait::async_trait]
impl super::TriggerQueue for ServiceBusQueue {
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
    fn message_ids_follow_the_work_not_its_timestamps() {
        let minute = Duration::from_secs(60);
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000 - 1_700_000_000 % 60);
        let body = |attempt: u32, first: u64, reason: &str| serde_json::json!({"v": 1, "work": {"kind": "vendor", "attempt": attempt, "first_failed_at": first, "reason": reason}});
        let a = message_id_for("k", &body(0, 1, "created"), t, minute, "");
        assert_eq!(a.len(), 32);
        // Same work queued twice, seconds apart, different timestamps and reasons: one id.
        assert_eq!(a, message_id_for("k", &body(0, 9, "written again"), t + Duration::from_secs(20), minute, ""));
        assert_ne!(a, message_id_for("k2", &body(0, 1, "created"), t, minute, ""));
        assert_ne!(a, message_id_for("k", &body(0, 1, "created"), t, minute, "replay:parked:3"));
        // The next attempt is never swallowed by its predecessor.
        assert_ne!(a, message_id_for("k", &body(1, 1, "created"), t, minute, ""));
        // A bucket later the same work is a new message.
        assert_ne!(a, message_id_for("k", &body(0, 1, "created"), t + minute, minute, ""));
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
