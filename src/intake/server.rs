//! The HTTP server the Functions host talks to (custom-handler protocol).
//!
//! Routes are the function folder names under `handlers/`: the host POSTs
//! `/<FunctionName>` with `{"Data","Metadata"}` and reads `{"Outputs","Logs","ReturnValue"}`
//! back. `GET /` answers the host's readiness polls.
//!
//! The Event Grid function reconciles under a deadline well inside Event Grid's 30 s
//! answer window; whatever did not converge in time (or failed) is put on the work
//! queue as a scheduled retry *before* we answer 2xx, so correctness never rests on
//! Event Grid's own retries. If even the queue is unavailable we answer 500 (and say why
//! on stderr, because the host discards the body of a non-2xx answer): Event Grid then
//! redelivers the batch and nothing is lost.

use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::events::{self, Classified};
use super::protocol::{self, InvocationRequest, InvocationResponse};
use crate::app::App;
use crate::model::ResourceId;
use crate::queue::worker::{self, Settlement};
use crate::queue::{trigger, work};
use crate::reconcile::snapshot::DnsSnapshot;
use crate::reconcile::{Mode, Outcome, Report};
use crate::telemetry::Stats;

/// Function names = folder names in `handlers/`. A test keeps the two in sync.
pub const FUNCTIONS: &[&str] = &[EVENTS_FUNCTION, STATUS_FUNCTION, WORK_FUNCTION, SWEEP_FUNCTION, CATCH_UP_FUNCTION];
pub const EVENTS_FUNCTION: &str = "PrivateEndpointEvents";
pub const STATUS_FUNCTION: &str = "Status";
/// `serviceBusTrigger` on the work queue (Azure; locally the embedded workers drain it).
pub const WORK_FUNCTION: &str = "WorkQueue";
/// `timerTrigger`: the periodic sweep.
pub const SWEEP_FUNCTION: &str = "Sweep";

/// `timerTrigger`: target-side approvals and the `resourcechanges` catch-up (`catch_up.rs`).
pub const CATCH_UP_FUNCTION: &str = "CatchUp";

/// Largest invocation body we accept (an Event Grid event is at most 1 MB).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(ready))
        .route(&format!("/{EVENTS_FUNCTION}"), post(private_endpoint_events))
        .route(&format!("/{STATUS_FUNCTION}"), post(status))
        .route(&format!("/{WORK_FUNCTION}"), post(work_queue))
        .route(&format!("/{SWEEP_FUNCTION}"), post(sweep))
        .route(&format!("/{CATCH_UP_FUNCTION}"), post(super::catch_up::catch_up))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

async fn ready() -> &'static str {
    "ok"
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(crate) fn invocation_ok(resp: InvocationResponse) -> Response {
    json_response(StatusCode::OK, resp.to_json_bytes())
}

/// A failed invocation: the host only sees the status, so the reason goes to stderr.
pub(crate) fn invocation_failed(status: StatusCode, function: &str, reason: &str) -> Response {
    eprintln!("autopilot: {function} invocation failed: {reason}");
    tracing::error!(function, %reason, "invocation failed");
    json_response(status, serde_json::to_vec(&json!({"error": reason})).unwrap_or_default())
}

/// Parses the host's invocation body; a malformed one is counted and answered 400.
pub(crate) fn parse_invocation(app: &App, body: &[u8], function: &str) -> Result<InvocationRequest, Box<Response>> {
    InvocationRequest::parse(body).map_err(|e| {
        Stats::inc(&app.stats.invocations_rejected);
        Box::new(invocation_failed(StatusCode::BAD_REQUEST, function, &format!("malformed invocation: {e}")))
    })
}

/// Finds a Data entry by binding name, ignoring case (the host keeps function.json's casing).
fn data_entry<'a>(req: &'a InvocationRequest, name: &str) -> Option<&'a Value> {
    req.data.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

async fn private_endpoint_events(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let req = match parse_invocation(&app, &body, EVENTS_FUNCTION) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let Some(raw_event) = data_entry(&req, "event") else {
        Stats::inc(&app.stats.invocations_rejected);
        return invocation_failed(StatusCode::BAD_REQUEST, EVENTS_FUNCTION, "invocation has no `event` in Data");
    };
    let event = protocol::decode_value(raw_event);
    let mut logs = Vec::new();
    let outcomes = match events::parse_delivery(&event) {
        Ok(o) => o,
        Err(rejection) => {
            // Retrying garbage helps nobody: acknowledge, count and say why.
            Stats::inc(&app.stats.events_rejected);
            tracing::error!(reason = %rejection.reason, "rejected event delivery");
            logs.push(format!("rejected delivery: {}", rejection.reason));
            return invocation_ok(InvocationResponse { logs, ..Default::default() });
        }
    };
    let mut endpoints: BTreeMap<String, ResourceId> = BTreeMap::new();
    for outcome in outcomes {
        Stats::inc(&app.stats.events_received);
        match outcome {
            Ok(Classified::PrivateEndpoint(ev)) => {
                tracing::debug!(event_id = %ev.event_id, endpoint = %ev.endpoint, kind = ?ev.kind, "private endpoint event");
                endpoints.insert(ev.endpoint.key().to_string(), ev.endpoint);
            }
            Ok(Classified::Ignored { event_type, reason, .. }) => {
                Stats::inc(&app.stats.events_ignored);
                tracing::debug!(%event_type, reason, "ignored event");
            }
            Err(rejection) => {
                Stats::inc(&app.stats.events_rejected);
                tracing::error!(event_id = ?rejection.event_id, reason = %rejection.reason, "rejected event");
                logs.push(format!(
                    "rejected event {}: {}",
                    rejection.event_id.as_deref().unwrap_or("?"),
                    rejection.reason
                ));
            }
        }
    }
    let deadline = app.deadline();
    match reconcile_and_queue(&app, endpoints.into_values().collect(), deadline, None, Duration::ZERO).await {
        Ok((mut lines, summary)) => {
            logs.append(&mut lines);
            invocation_ok(InvocationResponse { logs, return_value: Value::Array(summary), ..Default::default() })
        }
        Err(why) => invocation_failed(StatusCode::SERVICE_UNAVAILABLE, EVENTS_FUNCTION, &why),
    }
}

/// Sends queue messages at most this many at a time: a sweep's follow-ups for thousands
/// of endpoints go out in a fraction of the time one-by-one sends would take, without
/// opening thousands of connections at once.
const ENQUEUE_CONCURRENCY: usize = 16;

/// Reconciles `ids` within `deadline` and queues a retry for each one that did not
/// converge. Returns log lines and one summary value per endpoint; `Err` when a retry
/// could not be queued (the caller must then fail so its trigger redelivers). An endpoint
/// cut off by the deadline is retried after 1 s plus a random part of `spread`, so a
/// large sweep's leftovers do not all come back at the same second.
pub async fn reconcile_and_queue(
    app: &Arc<App>,
    ids: Vec<ResourceId>,
    deadline: Duration,
    dns: Option<Arc<DnsSnapshot>>,
    spread: Duration,
) -> Result<(Vec<String>, Vec<Value>), String> {
    let results = reconcile_all(app, ids, deadline, dns).await;
    let mut logs = Vec::new();
    let mut summary = Vec::new();
    let mut messages = Vec::new();
    for (id, result) in results {
        let cut_off = || Duration::from_secs(1) + Duration::from_millis(fastrand::u64(..=spread.as_millis() as u64));
        let (line, retry) = match &result {
            Ok(report) => (format_report(report), retry_reason(report)),
            Err(why) => (format!("{id}: {why}"), Some((why.clone(), cut_off()))),
        };
        logs.push(line);
        if let Ok(report) = &result {
            for msg in worker::follow_ups(report, &id) {
                logs.push(format!("{id}: queued {}", msg.dedupe_key));
                messages.push(msg);
            }
        }
        if let Some((reason, after)) = retry {
            logs.push(format!("{id}: retry queued in {:.1}s ({reason})", after.as_secs_f64()));
            messages.push(work::reconcile_retry(&id, 1, work::now_unix(), &reason, after));
        }
        summary.push(match result {
            Ok(r) => serde_json::to_value(&r).unwrap_or(Value::Null),
            Err(why) => json!({"endpoint": id.to_string(), "outcome": "deadline", "reason": why}),
        });
    }
    enqueue_all(app, messages).await?;
    Ok((logs, summary))
}

/// Sends `messages`, [`ENQUEUE_CONCURRENCY`] at a time; the first failure is the answer.
pub(crate) async fn enqueue_all(app: &App, messages: Vec<crate::queue::NewMessage>) -> Result<(), String> {
    let sent: Vec<Result<(), String>> = futures::stream::iter(messages)
        .map(|msg| async move {
            let what = msg.dedupe_key.clone();
            app.queue.enqueue(msg).await.map_err(|e| format!("could not queue {what}: {e}"))
        })
        .buffer_unordered(ENQUEUE_CONCURRENCY)
        .collect()
        .await;
    sent.into_iter().find(Result::is_err).unwrap_or(Ok(()))
}

/// The Service Bus trigger: one work item per invocation, settled by our answer (see
/// `queue::trigger`). Only meaningful with `queue.kind = "servicebus"`.
async fn work_queue(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let Some(queue) = app.trigger_queue.clone() else {
        return invocation_failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            WORK_FUNCTION,
            "queue.kind is not \"servicebus\": this instance drains its embedded queue itself",
        );
    };
    let reconciler = app.reconciler.clone();
    let answer = trigger::handle_trigger(&body, queue.as_ref(), &app.retry, |delivery, id| async move {
        match work::parse(&delivery.body) {
            Ok((item, _)) => worker::execute(&reconciler, &item, &id).await,
            Err(e) => Outcome::Failed { reason: format!("unreadable message: {e}") }.into(),
        }
    })
    .await;
    if let Settlement::DeadLettered { reason } = &answer.settlement {
        let parsed =
            InvocationRequest::parse(&body).ok().map(|req| trigger::parse_message(&req, trigger::MESSAGE_BINDING));
        let item = parsed.as_ref().and_then(|m| work::parse(&m.delivery.body).ok());
        let subject = item.as_ref().map(|(_, id)| id.to_string()).unwrap_or_default();
        let event = worker::dead_letter_event(item.as_ref().map(|(w, _)| w), &subject, reason);
        app.reconciler.publish(&[event]).await;
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if !status.is_success() {
        // The host drops the body of a non-2xx answer: say why where it is kept.
        eprintln!("autopilot: {WORK_FUNCTION} failed ({}): {:?}", answer.status, answer.settlement);
    }
    json_response(status, answer.response.to_json_bytes())
}

/// The timer sweep: every private endpoint in `sweep.subscriptions`, plus every
/// endpoint that still owns a record but was not listed (re-read before anything is
/// removed: a listing can lag), reconciled like an event would. Runs never overlap.
pub(crate) async fn sweep(State(app): State<Arc<App>>, body: Bytes) -> Response {
    if let Err(resp) = parse_invocation(&app, &body, SWEEP_FUNCTION) {
        return *resp;
    }
    let Ok(_running) = app.sweep_running.try_lock() else {
        let logs = vec!["sweep already running; this run is skipped".to_owned()];
        return invocation_ok(InvocationResponse { logs, ..Default::default() });
    };
    let started = std::time::Instant::now();
    let subscriptions = &app.config.sweep.subscriptions;
    if subscriptions.is_empty() {
        let logs = vec!["sweep: no subscriptions configured (sweep.subscriptions); nothing to do".to_owned()];
        return invocation_ok(InvocationResponse { logs, ..Default::default() });
    }
    // One budget for the whole run (listing, reconciles, queueing the rest), well inside
    // the host's functionTimeout; whatever does not fit is queued, never killed.
    let budget = Duration::from_secs(app.config.sweep.deadline_secs.max(1));
    let (coverage_gaps, coverage_created) = check_coverage(&app, subscriptions).await;
    let mut scope = match crate::reconcile::sweep::scope(
        &app.arm,
        &app.reconciler,
        subscriptions,
        &app.config.sweep.source,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            let reason = format!("listing: {e}");
            let data = json!({"subscriptions": subscriptions.len(), "error": reason,
                "elapsed_ms": started.elapsed().as_millis() as u64});
            app.reconciler.publish(&[sweep_completed(data)]).await;
            return invocation_failed(StatusCode::SERVICE_UNAVAILABLE, SWEEP_FUNCTION, &reason);
        }
    };
    // Keep a tenth of the budget (at least 5 s) for queueing what the reconciles leave.
    let reserve = (budget / 10).max(Duration::from_secs(5));
    let deadline = budget.saturating_sub(started.elapsed()).saturating_sub(reserve).max(Duration::from_secs(1));
    let total = scope.ids.len();
    // Resource Graph first: an endpoint whose indexed view agrees with the zone listing
    // needs no ARM read at all; only the others are reconciled (from ARM, which decides
    // every write). Its vendor work is queued as a reconcile would queue it.
    let views = std::mem::take(&mut scope.views);
    let checks = futures::stream::iter(scope.ids.into_iter().map(|id| {
        let (app, dns, view) = (app.clone(), scope.dns.clone(), views.get(id.key()).cloned());
        async move {
            let confirmed = match view {
                Some(pe) => DnsSnapshot::scope(dns, app.reconciler.converged_per_listing(&pe)).await,
                None => None,
            };
            (id, confirmed)
        }
    }))
    .buffer_unordered(64)
    .collect::<Vec<_>>()
    .await;
    let mut ids = Vec::new();
    let mut confirmed = 0usize;
    let mut confirmed_follow_ups = Vec::new();
    for (id, report) in checks {
        match report {
            Some(report) => {
                confirmed += 1;
                for v in report.vendors.iter().filter(|v| v.needs_work()) {
                    confirmed_follow_ups.push(work::vendor_work(
                        &id,
                        &v.vendor,
                        v.generation(),
                        "planned by the sweep",
                    ));
                }
            }
            None => ids.push(id),
        }
    }
    if let Err(why) = enqueue_all(&app, confirmed_follow_ups).await {
        return invocation_failed(StatusCode::SERVICE_UNAVAILABLE, SWEEP_FUNCTION, &why);
    }
    // A rotating (random) start: when a run cannot finish, no prefix of the estate is
    // always the part that gets done.
    if !ids.is_empty() {
        let start = fastrand::usize(..ids.len());
        ids.rotate_left(start);
    }
    let spread = Duration::from_secs(app.config.sweep.deadline_secs.clamp(1, 300));
    let (logs, summary) = match reconcile_and_queue(&app, ids, deadline, scope.dns.clone(), spread).await {
        Ok(r) => r,
        Err(why) => {
            let data = json!({"subscriptions": subscriptions.len(), "error": why,
                "elapsed_ms": started.elapsed().as_millis() as u64});
            app.reconciler.publish(&[sweep_completed(data)]).await;
            return invocation_failed(StatusCode::SERVICE_UNAVAILABLE, SWEEP_FUNCTION, &why);
        }
    };
    let count = |f: &dyn Fn(&Value) -> bool| summary.iter().filter(|r| f(r)).count();
    let changed = count(&|r| r["applied"].as_array().is_some_and(|a| !a.is_empty()));
    let removed_gone = count(&|r| r["exists"] == false && r["applied"].as_array().is_some_and(|a| !a.is_empty()));
    let vendor_work = summary.iter().map(|r| r["vendors"].as_array().map_or(0, Vec::len)).sum::<usize>();
    let not_done = count(&|r| r["outcome"]["outcome"] != "done");
    let counts = json!({
        "subscriptions": subscriptions.len(),
        "listed": scope.listed,
        "dns_owners_not_listed": scope.dns_owners_not_listed,
        "vendor_registrations_not_listed": scope.vendor_registrations_not_listed,
        "dns_owners_unresolved": scope.dns_owners_unresolved,
        "reconciled": total,
        "confirmed_from_listing": confirmed,
        "changed": changed,
        "cleaned_up_after_deleted": removed_gone,
        "vendor_work_queued": vendor_work,
        "not_converged_queued": not_done,
        "coverage_gaps": coverage_gaps,
        "coverage_created": coverage_created,
        "elapsed_ms": started.elapsed().as_millis() as u64,
    });
    let line = format!(
        "sweep: {} listed, {} owners not listed re-checked, {} vendor registrations not listed re-checked, \
         {confirmed} confirmed from the listings without reading ARM, \
         {changed} changed, {vendor_work} vendor work queued, {not_done} not converged (queued), {} ms",
        scope.listed,
        scope.dns_owners_not_listed,
        scope.vendor_registrations_not_listed,
        started.elapsed().as_millis()
    );
    tracing::info!("{line}");
    // The answer stays small whatever the estate's size: the counts, the summary line and
    // at most SWEEP_LOG_LINES per-endpoint lines (the rest are at debug level).
    for l in &logs {
        tracing::debug!("{l}");
    }
    let mut answer_logs = vec![line];
    answer_logs.extend(logs.iter().take(SWEEP_LOG_LINES).cloned());
    if logs.len() > SWEEP_LOG_LINES {
        answer_logs.push(format!("... and {} more lines (debug level)", logs.len() - SWEEP_LOG_LINES));
    }
    app.reconciler.publish(&[sweep_completed(counts.clone())]).await;
    invocation_ok(InvocationResponse { logs: answer_logs, return_value: counts, ..Default::default() })
}

/// Every subscription in scope covered by its Event Grid topic and event subscription
/// (`reconcile/coverage.rs`, the check `autopilot doctor` runs too), when
/// `coverage.function_id` says where events must go. Gaps are logged and audited
/// (`sweep.coverage_gap`); with `coverage.create_missing` they are created first. Returns the
/// subscriptions still uncovered and those this run created for.
async fn check_coverage(app: &Arc<App>, subscriptions: &[String]) -> (usize, usize) {
    let settings = &app.config.coverage;
    if settings.function_id.trim().is_empty() {
        return (0, 0);
    }
    let found = futures::future::join_all(subscriptions.iter().map(|s| async move {
        let c = crate::reconcile::coverage::check(&app.arm, settings, s).await;
        crate::reconcile::coverage::create_missing(&app.arm, settings, c).await
    }))
    .await;
    let mut events = Vec::new();
    for c in &found {
        if !c.covered() {
            tracing::warn!(subscription = %c.subscription, problems = ?c.problems, fix = ?c.fix,
                "sweep: subscription not covered by Event Grid; its endpoints converge only at each sweep");
        }
        events.extend(crate::reconcile::coverage::audit_events(c));
    }
    app.reconciler.publish(&events).await;
    let gaps = found.iter().filter(|c| !c.covered()).count();
    app.stats.subscriptions_uncovered.store(gaps as u64, std::sync::atomic::Ordering::Relaxed);
    (gaps, found.iter().filter(|c| !c.created.is_empty()).count())
}

/// Per-endpoint lines a sweep returns to the host at most.
const SWEEP_LOG_LINES: usize = 50;

fn sweep_completed(data: Value) -> crate::effects::audit::AuditEvent {
    use crate::effects::audit::{AuditEvent, EventType};
    AuditEvent { kind: EventType::SweepCompleted.into(), subject: "sweep".into(), data }
}

/// Whether a report needs a queued retry, and after how long.
fn retry_reason(report: &Report) -> Option<(String, Duration)> {
    match &report.outcome {
        Outcome::Done => None,
        Outcome::Requeue { after, reason } => Some((reason.clone(), *after)),
        // The worker re-reads and dead-letters with the reason if it still fails.
        Outcome::Failed { reason } => Some((reason.clone(), Duration::from_secs(5))),
    }
}

pub fn format_report(r: &Report) -> String {
    let actions: Vec<String> = r.plan.actions.iter().map(|a| a.describe()).collect();
    let outcome = match &r.outcome {
        Outcome::Done => "done".to_string(),
        Outcome::Requeue { after, reason } => format!("requeue in {:.1}s: {reason}", after.as_secs_f64()),
        Outcome::Failed { reason } => format!("FAILED: {reason}"),
    };
    let mut line = format!("{}: {outcome}", r.endpoint);
    if !actions.is_empty() {
        line.push_str(&format!(" [{}]", actions.join("; ")));
    }
    if !r.plan.notes.is_empty() {
        line.push_str(&format!(" (notes: {})", r.plan.notes.join("; ")));
    }
    line
}

/// Reconciles endpoints concurrently within the invocation deadline and the process's
/// parallelism bound. `Err` = did not finish in time. `dns` = the sweep's zone listing
/// (events pass `None`: they read each record).
pub async fn reconcile_all(
    app: &Arc<App>,
    ids: Vec<ResourceId>,
    deadline: Duration,
    dns: Option<Arc<DnsSnapshot>>,
) -> Vec<(ResourceId, Result<Report, String>)> {
    let limit = deadline;
    let deadline = tokio::time::Instant::now() + deadline;
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids {
        let (app, dns) = (app.clone(), dns.clone());
        tasks.spawn(async move {
            let work = async {
                let _permit = app.parallel.clone().acquire_owned().await.map_err(|e| e.to_string())?;
                let reconcile = app.reconciler.reconcile(&id, Mode::Apply);
                Ok::<Report, String>(DnsSnapshot::scope(dns, reconcile).await)
            };
            let result = match tokio::time::timeout_at(deadline, work).await {
                Ok(r) => r,
                Err(_) => Err(format!("not finished within the {} ms deadline", limit.as_millis())),
            };
            (id, result)
        });
    }
    let mut out = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(r) => out.push(r),
            Err(e) => tracing::error!(error = %e, "reconcile task panicked"),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

async fn status(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let req = match parse_invocation(&app, &body, STATUS_FUNCTION) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let http_req = data_entry(&req, "req").map(protocol::decode_value).unwrap_or(Value::Null);
    let id = http_req.pointer("/Query/id").and_then(Value::as_str).map(str::to_string);
    let (code, body) = match id {
        None => (200, health(&app).await),
        Some(raw) => match ResourceId::parse_private_endpoint(&raw) {
            Ok(id) => {
                let report = app.reconciler.reconcile(&id, Mode::DryRun).await;
                (200, serde_json::to_value(report).unwrap_or(Value::Null))
            }
            Err(e) => (400, json!({"error": format!("query parameter id: {e}")})),
        },
    };
    invocation_ok(InvocationResponse::http(code, &body))
}

pub async fn health(app: &App) -> Value {
    let depth = app.queue.depth().await.map_err(|e| e.to_string());
    let dead = app.queue.dead_letter_count().await.map_err(|e| e.to_string());
    json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": app.started.elapsed().as_secs(),
        "counters": app.stats.snapshot(),
        "queue": {"depth": depth.ok(), "dead_letters": dead.ok()},
        "catch_up": super::catch_up::last_run(),
    })
}
