//! Audit events: every action, published as CloudEvents 1.0 so anyone can subscribe.
//!
//! Types live in one stable namespace, `com.privatelinkautopilot.<area>.<what>`
//! (`dns.record.written`, `dns.record.removed`, `dns.conflict`, `dns.write_failed`,
//! `approval.approved`, `approval.rejected`, `approval.left_pending`, ...); the subject
//! is the private endpoint id; `data` holds what was done and why, never a secret.
//! In Azure they go to an Event Grid custom topic (REST, managed identity); locally to a
//! JSON-lines file. Publishing is best effort with retries: a failing audit sink is
//! logged loudly but never undoes or blocks the DNS or approval it describes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::arm::TokenSource;
use crate::backoff::{Backoff, parse_retry_after};
use crate::effects::approvals::ApprovalAction;
use crate::effects::vendors::sync::VendorIntent;
use crate::reconcile::plan::DnsAction;
use crate::reconcile::reconciler::Report;

pub const TYPE_PREFIX: &str = "com.privatelinkautopilot.";
pub const EVENT_GRID_SCOPE: &str = "https://eventgrid.azure.net/.default";
/// The longest server-requested wait between two tries of one batch.
const MAX_AUDIT_WAIT: Duration = Duration::from_secs(5);

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
            "id": crate::sandbox::host_emulator::new_guid(),
            "source": source,
            "type": format!("{TYPE_PREFIX}{}", self.kind),
            "subject": self.subject,
            "time": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "datacontenttype": "application/json",
            "data": self.data,
        })
    }
}

/// What a reconcile did, as audit events (nothing for a dry run or a no-op).
pub fn events_for(report: &Report) -> Vec<AuditEvent> {
    if report.dry_run {
        return Vec::new();
    }
    let mut out = Vec::new();
    let ev = |kind: &str, data: Value| AuditEvent { kind: kind.into(), subject: report.endpoint.clone(), data };
    if report.exists == Some(true)
        && report.provisioning_state.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("failed"))
    {
        out.push(ev(
            "endpoint.provisioning_failed",
            json!({"provisioning_state": report.provisioning_state, "left_in_place": ["dns", "approvals", "vendors"]}),
        ));
    }
    for a in &report.applied {
        let kind = match (&a.error, a.action.split(' ').next()) {
            (Some(_), _) => "dns.write_failed",
            (None, Some("delete")) => "dns.record.removed",
            (None, _) => "dns.record.written",
        };
        out.push(ev(kind, json!({"action": a.action, "error": a.error, "target": report.target})));
    }
    for action in &report.plan.actions {
        if let DnsAction::Conflict { key, reason, .. } = action {
            out.push(ev("dns.conflict", json!({"record": key.fqdn(), "reason": reason})));
        }
    }
    for d in &report.approvals {
        let kind = match d.action {
            ApprovalAction::Approved => "approval.approved",
            ApprovalAction::Rejected => "approval.rejected",
            ApprovalAction::LeftPending => "approval.left_pending",
            ApprovalAction::Removed => "approval.connection_removed",
            ApprovalAction::Failed => "approval.failed",
            _ => continue,
        };
        out.push(ev(kind, json!({"target": d.target, "connection": d.connection, "reason": d.reason})));
    }
    for v in &report.vendors {
        match &v.intent {
            VendorIntent::Unmatched { reason } => {
                out.push(ev("vendor.unmatched", json!({"vendor": v.vendor, "reason": reason})));
            }
            VendorIntent::Disabled => out.push(ev(
                "vendor.disabled",
                json!({"vendor": v.vendor, "reason": format!("[vendors.{}] is not enabled", v.vendor)}),
            )),
            _ => {}
        }
    }
    if let Some(m) = &report.marks {
        if m.written {
            out.push(ev("endpoint.marked", json!({"tags": m.tags})));
        }
        if let Some(why) = &m.skipped {
            out.push(ev("endpoint.mark_skipped", json!({"reason": why})));
        }
        if let Some(step) = m.overdue.as_ref().filter(|_| m.newly_overdue) {
            out.push(ev("endpoint.pending_overdue", json!({"missing_step": step, "tags": m.tags})));
        }
    }
    out
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
