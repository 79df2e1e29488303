//! Audit events: every action, published as CloudEvents 1.0 so anyone can subscribe.
//!
//! Types live in one stable namespace, `com.privatelinkautopilot.<area>.<what>`; the
//! subject is the private endpoint id (`sweep` for the sweep's summary); `data` holds what
//! was done and why, never a secret. In Azure they go to an Event Grid custom topic (REST,
//! managed identity); locally to a JSON-lines file. Publishing is best effort with retries:
//! a failing audit sink is logged loudly but never undoes or blocks the DNS or approval it
//! describes.
//!
//! Why a catalog: subscribers filter on these types, so a type is an interface. Every type
//! is declared once, in [`EventType`]'s table below (name, when it is emitted, subject, data
//! fields); emitters name the variant, never a string; `docs/EVENTS.md` is rendered from
//! the table, and the tests here fail when a source emits a type by a literal, when a
//! declared type is never emitted, or when `docs/EVENTS.md` is out of date
//! (`UPDATE_EVENTS=1 cargo test --lib events_md` rewrites it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::arm::TokenSource;
use crate::backoff::{Backoff, parse_retry_after};

pub const TYPE_PREFIX: &str = "com.privatelinkautopilot.";
pub const EVENT_GRID_SCOPE: &str = "https://eventgrid.azure.net/.default";
/// The longest server-requested wait between two tries of one batch.
const MAX_AUDIT_WAIT: Duration = Duration::from_secs(5);

/// One data field of an event type: its name (dotted for a nested field) and meaning.
pub type DataField = (&'static str, &'static str);

/// What the catalog says about one event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSpec {
    /// Without the namespace, e.g. `dns.record.written`.
    pub name: &'static str,
    /// When it is emitted.
    pub when: &'static str,
    /// What `subject` holds.
    pub subject: &'static str,
    pub data: &'static [DataField],
}

/// Declares [`EventType`] and its catalog entries in one place.
macro_rules! event_catalog {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $name:literal {
            when: $when:literal,
            subject: $subject:expr,
            data: $data:expr $(,)?
        }
    ),* $(,)?) => {
        /// Every audit event type the product emits (see the module docs).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType { $($(#[$doc])* $variant),* }

        impl EventType {
            /// Every type, in catalog order.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),*];

            pub fn spec(self) -> EventSpec {
                match self {
                    $(EventType::$variant => EventSpec {
                        name: $name,
                        when: $when,
                        subject: $subject,
                        data: $data,
                    }),*
                }
            }
        }
    };
}

const ENDPOINT: &str = "the private endpoint's ARM id";
const DNS_DATA: [DataField; 3] = [
    ("action", "the applied plan step, e.g. `create <fqdn> A [10.1.0.4] ttl 300`"),
    ("error", "why it failed (`null` unless `dns.write_failed`)"),
    ("target", "the resource or Private Link Service alias the endpoint points at"),
];
const ZONE_DATA: [DataField; 3] = [
    ("zone", "the zone's ARM id"),
    ("replica", "the replica (`subscription/resource-group`) of a zone configured in several places, else empty"),
    ("detail", "the zone's line in the plan: its state and each link's (or the warning)"),
];
const APPROVAL_DATA: [DataField; 3] = [
    ("target", "the owned resource the connection is to"),
    ("connection", "the private endpoint connection's name"),
    ("reason", "the policy rule that decided, or why nothing was decided"),
];

event_catalog! {
    DnsRecordWritten = "dns.record.written" {
        when: "a record the endpoint owns was created or its addresses updated",
        subject: ENDPOINT,
        data: &DNS_DATA,
    },
    DnsRecordRemoved = "dns.record.removed" {
        when: "an address of the endpoint was removed (the record deleted when it was the last owner)",
        subject: ENDPOINT,
        data: &DNS_DATA,
    },
    DnsWriteFailed = "dns.write_failed" {
        when: "a planned DNS change failed (it is retried through the queue)",
        subject: ENDPOINT,
        data: &DNS_DATA,
    },
    DnsConflict = "dns.conflict" {
        when: "a name the endpoint needs is held by someone else (not ours, another owner, a zone group, a full set); left untouched",
        subject: ENDPOINT,
        data: &[("record", "the FQDN"), ("reason", "who holds it and the way out")],
    },
    DnsZoneCreated = "dns.zone.created" {
        when: "`dns.zone_management = \"create\"` created a missing private DNS zone (tagged `plautopilot-owned`)",
        subject: ENDPOINT,
        data: &ZONE_DATA,
    },
    DnsZoneNotCreated = "dns.zone.not_created" {
        when: "a missing zone was not created because a zone of that name exists elsewhere in the estate (it would shadow it), or creating it failed",
        subject: ENDPOINT,
        data: &ZONE_DATA,
    },
    DnsLinkCreated = "dns.link.created" {
        when: "a virtual network link (`registrationEnabled: false`, tagged `plautopilot-owned`) was created",
        subject: ENDPOINT,
        data: &ZONE_DATA,
    },
    DnsLinkFailed = "dns.link.failed" {
        when: "a link could not be created (e.g. the VNet is linked to another zone of that name: overlapping namespaces)",
        subject: ENDPOINT,
        data: &ZONE_DATA,
    },
    DnsZoneRemoved = "dns.zone.removed" {
        when: "a zone this product created was removed with its links after its last record went (never a zone that is not ours, not empty, or linked by someone else)",
        subject: ENDPOINT,
        data: &ZONE_DATA,
    },
    DnsLinkFallsBackToInternet = "dns.link.fallback_to_internet" {
        when: "a link of a zone we write to has `resolutionPolicy = NxDomainRedirect`: a missing record resolves publicly instead of failing",
        subject: ENDPOINT,
        data: &ZONE_DATA,
    },
    ApprovalApproved = "approval.approved" {
        when: "a Pending connection to an owned resource met the approval policy and was approved",
        subject: ENDPOINT,
        data: &APPROVAL_DATA,
    },
    ApprovalRejected = "approval.rejected" {
        when: "a connection to an owned resource violated the policy and `approvals.on_violation = \"reject\"`",
        subject: ENDPOINT,
        data: &APPROVAL_DATA,
    },
    ApprovalLeftPending = "approval.left_pending" {
        when: "a Pending connection was left for a person (no policy, a policy miss, or a resource without a connection API)",
        subject: ENDPOINT,
        data: &APPROVAL_DATA,
    },
    ApprovalConnectionRemoved = "approval.connection_removed" {
        when: "a deleted endpoint's leftover connection on an owned resource was removed",
        subject: ENDPOINT,
        data: &APPROVAL_DATA,
    },
    ApprovalExpiryWarning = "approval.expiry_warning" {
        when: "a Pending connection found on the target side nears the expiry its requester rule declares (`expires_after_secs`, e.g. Databricks NCC's 14 days); once per connection",
        subject: ENDPOINT,
        data: &[
            APPROVAL_DATA[0],
            APPROVAL_DATA[1],
            ("rule", "the `[[approvals.requesters]]` rule that recognised the requester"),
            ("expires_at", "when the requester gives up (RFC 3339)"),
            ("clock", "where the clock started: `systemData.createdAt` or `first seen`"),
            ("reason", "why it is still Pending"),
        ],
    },
    ApprovalFailed = "approval.failed" {
        when: "reading or updating a connection failed (retried)",
        subject: ENDPOINT,
        data: &[APPROVAL_DATA[0], APPROVAL_DATA[1], ("reason", "the error")],
    },
    VendorRegistered = "vendor.registered" {
        when: "the vendor's allowlist was changed to accept the endpoint (not when it already did)",
        subject: ENDPOINT,
        data: &[("vendor", "`clickhouse`, `elastic` or `zilliz`"), ("detail.targets", "the services, deployments or project it was registered with")],
    },
    VendorWithdrawn = "vendor.withdrawn" {
        when: "the endpoint's routing moved away from some targets and it was removed from them",
        subject: ENDPOINT,
        data: &[("vendor", "the vendor"), ("detail.targets", "the targets it was removed from")],
    },
    VendorDeregistered = "vendor.deregistered" {
        when: "a deleted endpoint (or one that no longer routes to the vendor) was removed from the vendor's allowlist",
        subject: ENDPOINT,
        data: &[("vendor", "the vendor"), ("detail", "`{}`")],
    },
    VendorDeadLettered = "vendor.dead_lettered" {
        when: "vendor work failed permanently or kept failing past the retry window, and was dead-lettered",
        subject: ENDPOINT,
        data: &[
            ("work", "`vendor`"),
            ("vendor", "the vendor"),
            ("reason", "the dead-letter reason (`resource-group/name: vendor <v>: <kind> error: <operation>: <vendor's message>`)"),
        ],
    },
    VendorUnmatched = "vendor.unmatched" {
        when: "a vendor endpoint matched no routing rule and no default: reported, never registered by guess",
        subject: ENDPOINT,
        data: &[("vendor", "the vendor"), ("reason", "what did not match")],
    },
    VendorDisabled = "vendor.disabled" {
        when: "the endpoint targets a vendor whose `[vendors.<name>]` section is not enabled",
        subject: ENDPOINT,
        data: &[("vendor", "the vendor"), ("reason", "which section to enable")],
    },
    EndpointMarked = "endpoint.marked" {
        when: "the endpoint's `plautopilot-*` tags were changed",
        subject: ENDPOINT,
        data: &[("tags", "the `plautopilot-*` tags as written")],
    },
    EndpointMarkSkipped = "endpoint.mark_skipped" {
        when: "the tags could not be written (e.g. the endpoint would pass 50 tags)",
        subject: ENDPOINT,
        data: &[("reason", "why")],
    },
    EndpointPendingOverdue = "endpoint.pending_overdue" {
        when: "the endpoint has been Pending longer than `marks.pending_warning_after_secs` (once per overdue spell)",
        subject: ENDPOINT,
        data: &[("missing_step", "who has to act (the vendor, the owner)"), ("tags", "the tags as written")],
    },
    EndpointProvisioningFailed = "endpoint.provisioning_failed" {
        when: "a reconcile found the endpoint in `provisioningState = Failed`; nothing is torn down",
        subject: ENDPOINT,
        data: &[("provisioning_state", "`Failed`"), ("left_in_place", "`[\"dns\", \"approvals\", \"vendors\"]`")],
    },
    WorkDeadLettered = "work.dead_lettered" {
        when: "a reconcile or re-check work item failed permanently or past the retry window, and was dead-lettered",
        subject: "the private endpoint's ARM id (the message's correlation id for an unreadable message)",
        data: &[("work", "`reconcile` or `recheck` (`null` if unreadable)"), ("vendor", "`null`"), ("reason", "the dead-letter reason")],
    },
    CatchUpCompleted = "sweep.catch_up_completed" {
        when: "a `CatchUp` run finished (target-side approvals, then the `resourcechanges` catch-up)",
        subject: "`catchup`",
        data: &[
            ("target_approvals", "`{listed, approved, rejected, left_pending, failed, expiry_warnings}`"),
            ("from", "the watermark the changes were read from (RFC 3339; `null` on a first run)"),
            ("to", "the new watermark"),
            ("changes", "change records read"),
            ("endpoints_queued", "endpoints queued for a reconcile"),
            ("full_sweep", "`true` when the watermark was missing or older than the 14 days Resource Graph keeps changes, so a full sweep ran instead"),
            ("error", "why it stopped (`null` when it did not)"),
            ("elapsed_ms", "duration"),
        ],
    },
    SweepCompleted = "sweep.completed" {
        when: "a sweep run finished",
        subject: "`sweep`",
        data: &[
            ("subscriptions", "how many subscriptions were listed"),
            ("listed", "endpoints listed"),
            ("dns_owners_not_listed", "record owners re-checked because the listing missed them"),
            ("vendor_registrations_not_listed", "vendor registrations re-checked likewise"),
            ("dns_owners_unresolved", "owners that could not be read"),
            ("reconciled", "endpoints reconciled"),
            ("changed", "endpoints where something changed"),
            ("cleaned_up_after_deleted", "deleted endpoints cleaned up"),
            ("vendor_work_queued", "vendor work items queued"),
            ("not_converged_queued", "endpoints queued as retries"),
            ("coverage_gaps", "subscriptions without their system topic or event subscription (with `coverage.function_id`)"),
            ("coverage_created", "subscriptions whose topic or event subscription this run created (`coverage.create_missing`)"),
            ("elapsed_ms", "duration"),
        ],
    },
    CoverageGap = "sweep.coverage_gap" {
        when: "the sweep found a subscription in scope without its Event Grid system topic or without an event subscription of the right shape to `PrivateEndpointEvents` (its endpoints then converge only at the next sweep)",
        subject: "the subscription (`/subscriptions/<id>`)",
        data: &[
            ("subscription", "the subscription id"),
            ("problems", "what is missing or wrong, one line each"),
            ("fix", "how to fix it (the infra parameter, or `coverage.create_missing`)"),
        ],
    },
    CoverageCreated = "sweep.coverage_created" {
        when: "the sweep created a missing system topic or event subscription (`coverage.create_missing = true`)",
        subject: "the subscription (`/subscriptions/<id>`)",
        data: &[
            ("subscription", "the subscription id"),
            ("created", "the ids created"),
            ("follow_up", "what an operator still has to run (a created topic's dead-letter grant)"),
        ],
    },
}

impl EventType {
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The CloudEvents `type`.
    pub fn cloud_event_type(self) -> String {
        format!("{TYPE_PREFIX}{}", self.name())
    }

    pub fn from_name(name: &str) -> Option<EventType> {
        Self::ALL.iter().copied().find(|t| t.name() == name)
    }
}

impl From<EventType> for String {
    fn from(t: EventType) -> String {
        t.name().to_owned()
    }
}

/// The catalog as Markdown: `docs/EVENTS.md`.
pub fn render_catalog() -> String {
    let mut out = String::from(
        "# Audit events\n\n\
         <!-- Generated from `EventType` in src/effects/audit.rs; do not edit by hand. \
         Regenerate: UPDATE_EVENTS=1 cargo test --lib events_md -->\n\n\
         Every action is published as a CloudEvent 1.0 (`specversion`, `id`, `source`, `type`, \
         `subject`, `time`, `datacontenttype: application/json`, `data`): to the Event Grid \
         topic `audit.topic_endpoint` in Azure, to the JSON-lines file `audit.file` locally. \
         `type` is `com.privatelinkautopilot.` followed by the name below. No event carries a \
         secret.\n\n",
    );
    out.push_str("| type | emitted when | subject | data |\n|---|---|---|---|\n");
    for t in EventType::ALL {
        let s = t.spec();
        let data: Vec<String> = s.data.iter().map(|(f, m)| format!("`{f}`: {m}")).collect();
        out.push_str(&format!("| `{}` | {} | {} | {} |\n", s.name, s.when, s.subject, data.join("; ")));
    }
    out
}

/// One audit event before it is wrapped as a CloudEvent.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Without the namespace, e.g. `dns.record.written`.
    pub kind: String,
    /// The private endpoint id.
    pub subject: String,
    pub data: Value,
}

impl AuditEvent {
    pub fn to_cloud_event(&self, source: &str) -> Value {
        json!({
            "specversion": "1.0",
            "id": crate::model::new_guid(),
            "source": source,
            "type": format!("{TYPE_PREFIX}{}", self.kind),
            "subject": self.subject,
            "time": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "datacontenttype": "application/json",
            "data": self.data,
        })
    }
}

#[async_trait::async_trait]
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    async fn publish(&self, events: &[AuditEvent]) -> Result<(), String>;
}

/// Appends one CloudEvent per line to a local file.
#[derive(Debug)]
pub struct JsonLinesSink {
    path: PathBuf,
    source: String,
}

impl JsonLinesSink {
    pub fn new(path: impl Into<PathBuf>, source: &str) -> Self {
        Self { path: path.into(), source: source.into() }
    }
}

#[async_trait::async_trait]
impl AuditSink for JsonLinesSink {
    async fn publish(&self, events: &[AuditEvent]) -> Result<(), String> {
        if events.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for e in events {
            text.push_str(&e.to_cloud_event(&self.source).to_string());
            text.push('\n');
        }
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
            f.write_all(text.as_bytes())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("audit file {}: {e}", self.path.display()))
    }
}

/// Publishes to an Event Grid custom topic (CloudEvents input schema) with a bearer token.
pub struct EventGridSink {
    http: reqwest::Client,
    endpoint: String,
    tokens: Arc<dyn TokenSource>,
    source: String,
    backoff: Backoff,
    attempts: u32,
}

impl std::fmt::Debug for EventGridSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventGridSink").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl EventGridSink {
    /// `endpoint` is the topic endpoint (`https://<topic>.<region>-1.eventgrid.azure.net/api/events`).
    pub fn new(endpoint: &str, tokens: Arc<dyn TokenSource>, source: &str) -> Result<Self, String> {
        // The topic receives a bearer token: https, or http to loopback (tests).
        crate::model::endpoint_url::credential_url(endpoint).map_err(|why| format!("audit.topic_endpoint: {why}"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("audit HTTP client: {e}"))?;
        Ok(Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            tokens,
            source: source.into(),
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(10)),
            attempts: 4,
        })
    }
}

#[async_trait::async_trait]
impl AuditSink for EventGridSink {
    async fn publish(&self, events: &[AuditEvent]) -> Result<(), String> {
        if events.is_empty() {
            return Ok(());
        }
        let batch: Vec<Value> = events.iter().map(|e| e.to_cloud_event(&self.source)).collect();
        let body = serde_json::to_vec(&batch).map_err(|e| e.to_string())?;
        let mut last = String::new();
        for attempt in 1..=self.attempts {
            let token = self.tokens.token(EVENT_GRID_SCOPE).await.map_err(|e| format!("audit token: {e}"))?;
            let sent = self
                .http
                .post(format!("{}?api-version=2018-01-01", self.endpoint))
                .header("content-type", "application/cloudevents-batch+json; charset=utf-8")
                .bearer_auth(token.expose())
                .body(body.clone())
                .send()
                .await;
            let retry_after = match sent {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    let status = r.status().as_u16();
                    let after = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
                    last = format!("audit topic answered {status}");
                    if !(status == 429 || status >= 500) {
                        return Err(last);
                    }
                    after
                }
                Err(e) => {
                    last = format!("audit topic unreachable: {e}");
                    None
                }
            };
            if attempt < self.attempts {
                // A topic asking for an hour is not waited on: a few short tries, then the
                // events are reported lost (the spool keeps the rest moving).
                let retry_after = retry_after.map(|d| d.min(MAX_AUDIT_WAIT));
                tokio::time::sleep(self.backoff.delay_honouring(attempt, retry_after)).await;
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod catalog_tests {
    //! The catalog against the sources: every event type is declared, emitted through
    //! [`EventType`] and documented in `docs/EVENTS.md`.

    use std::path::{Path, PathBuf};

    use super::{EventType, TYPE_PREFIX, render_catalog};

    const AREAS: [&str; 6] = ["dns", "approval", "vendor", "endpoint", "work", "sweep"];

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..") // product/ -> the repository
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable source dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The double-quoted literals on a line (good enough for event names: no escapes).
    fn literals(line: &str) -> Vec<&str> {
        line.split('"').skip(1).step_by(2).collect()
    }

    /// `area.what` or `area.what.more`, lower case: the shape of an event name.
    fn looks_like_event(s: &str) -> bool {
        let mut parts = s.split('.');
        let area = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        AREAS.contains(&area)
            && (1..=2).contains(&rest.len())
            && rest.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    }

    /// A line that builds an audit event.
    fn emits(line: &str) -> bool {
        ["kind", "AuditEvent", "event(", "ev("].iter().any(|k| line.contains(k))
    }

    #[test]
    fn every_emitted_event_type_is_in_the_catalog() {
        let this = root().join("src/effects/audit.rs");
        let mut files = Vec::new();
        rust_files(&root().join("src"), &mut files);
        let mut problems = Vec::new();
        for file in files.iter().filter(|f| **f != this) {
            let text = std::fs::read_to_string(file).expect("readable source");
            let shown = file.strip_prefix(root()).unwrap_or(file).display().to_string();
            for (n, line) in text.lines().enumerate() {
                for lit in literals(line) {
                    let name = lit.strip_prefix(TYPE_PREFIX).unwrap_or(lit);
                    if lit.starts_with(TYPE_PREFIX) && !lit.is_empty() && name.is_empty() {
                        continue;
                    }
                    let known = EventType::from_name(name);
                    if let Some(t) = known.filter(|_| looks_like_event(name)) {
                        problems.push(format!("{shown}:{}: \"{lit}\" by literal: use EventType::{t:?}", n + 1));
                    } else if lit.starts_with(TYPE_PREFIX) || (looks_like_event(name) && emits(line)) {
                        problems.push(format!(
                            "{shown}:{}: \"{lit}\" is not in the catalog: add it to EventType in src/effects/audit.rs",
                            n + 1
                        ));
                    }
                }
                if line.contains("kind: \"") && text.contains("AuditEvent") {
                    problems.push(format!("{shown}:{}: an audit event kind by literal: use EventType", n + 1));
                }
            }
        }
        assert!(problems.is_empty(), "audit event types outside the catalog:\n{}", problems.join("\n"));
    }

    #[test]
    fn every_catalog_entry_is_emitted_somewhere() {
        let mut files = Vec::new();
        rust_files(&root().join("src"), &mut files);
        let sources: String = files.iter().map(|f| std::fs::read_to_string(f).unwrap_or_default()).collect();
        for t in EventType::ALL {
            // The declaration itself is `Variant = "name"`; a use is `EventType::Variant`.
            let used = format!("EventType::{t:?}");
            assert!(sources.contains(&used), "{} is in the catalog but never emitted ({used})", t.name());
        }
    }

    #[test]
    fn catalog_entries_are_complete_and_unique() {
        let mut names = std::collections::BTreeSet::new();
        for t in EventType::ALL {
            let s = t.spec();
            assert!(looks_like_event(s.name), "{}: not an `area.what` name", s.name);
            assert!(names.insert(s.name), "{} declared twice", s.name);
            assert!(!s.when.is_empty() && !s.subject.is_empty() && !s.data.is_empty(), "{} is incomplete", s.name);
            assert_eq!(EventType::from_name(s.name), Some(*t));
        }
    }

    /// `docs/EVENTS.md` is what the catalog renders. `UPDATE_EVENTS=1` rewrites it.
    #[test]
    fn events_md_is_up_to_date() {
        let path = root().join("docs/EVENTS.md");
        let rendered = render_catalog();
        if std::env::var("UPDATE_EVENTS").is_ok_and(|v| v == "1") {
            std::fs::create_dir_all(path.parent().expect("docs dir")).expect("create docs/");
            std::fs::write(&path, &rendered).expect("write docs/EVENTS.md");
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == rendered,
            "docs/EVENTS.md is out of date with EventType: run `UPDATE_EVENTS=1 cargo test --lib events_md`"
        );
    }
}
