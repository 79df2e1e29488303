//! The HTTP server the Functions host talks to (custom-handler protocol).
//!
//! Routes are the function folder names under `handlers/`: the host POSTs
//! `/<FunctionName>` with `{"Data","Metadata"}` and reads `{"Outputs","Logs","ReturnValue"}`
//! back. `GET /` answers the host's readiness polls.
//!
//! This file decodes and answers; what runs is `crate::runtime`. The Event Grid function
//! reconciles under a deadline well inside Event Grid's 30 s answer window
//! (`runtime::fan_out`); whatever did not converge in time (or failed) is put on the work
//! queue as a scheduled retry *before* we answer 2xx, so correctness never rests on
//! Event Grid's own retries. If even the queue is unavailable we answer 500 (and say why
//! on stderr, because the host discards the body of a non-2xx answer): Event Grid then
//! redelivers the batch and nothing is lost.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::events::{self, Classified};
use super::protocol::{self, InvocationRequest, InvocationResponse};
use super::queue_trigger as trigger;
use crate::app::App;
use crate::model::ResourceId;
use crate::queue::work;
use crate::reconcile::{Mode, Outcome};
use crate::runtime::fan_out::reconcile_and_queue;
use crate::runtime::worker::{self, Settlement};
use crate::telemetry::Stats;

pub use super::invocation::{
    CATCH_UP_FUNCTION, EVENTS_FUNCTION, FUNCTIONS, STATUS_FUNCTION, SWEEP_FUNCTION, WORK_FUNCTION,
};
use super::invocation::{invocation_failed, invocation_ok, json_response, parse_invocation};

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

/// Finds a Data entry by binding name, ignoring case (the host keeps function.json's casing).
fn data_entry<'a>(req: &'a InvocationRequest, name: &str) -> Option<&'a Value> {
    req.data.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

async fn private_endpoint_events(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let req = match parse_invocation(&app.stats, &body, EVENTS_FUNCTION) {
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
    let deadline = app.deadline;
    match reconcile_and_queue(
        &app.runtime,
        endpoints.into_values().collect(),
        deadline,
        None,
        std::time::Duration::ZERO,
    )
    .await
    {
        Ok((mut lines, summary)) => {
            logs.append(&mut lines);
            invocation_ok(InvocationResponse { logs, return_value: Value::Array(summary), ..Default::default() })
        }
        Err(why) => invocation_failed(StatusCode::SERVICE_UNAVAILABLE, EVENTS_FUNCTION, &why),
    }
}

/// The Service Bus trigger: one work item per invocation, settled by our answer (see
/// `runtime::trigger`, decoded in `queue_trigger.rs`). Only meaningful with `queue.kind = "servicebus"`.
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

/// The timer sweep (`runtime::sweep`): every private endpoint in `sweep.subscriptions`,
/// plus every endpoint that still owns a record but was not listed, reconciled like an
/// event would. Runs never overlap.
pub(crate) async fn sweep(State(app): State<Arc<App>>, body: Bytes) -> Response {
    if let Err(resp) = parse_invocation(&app.stats, &body, SWEEP_FUNCTION) {
        return *resp;
    }
    match crate::runtime::sweep::sweep(&app.runtime).await {
        Ok(answer) => {
            invocation_ok(InvocationResponse { logs: answer.logs, return_value: answer.counts, ..Default::default() })
        }
        Err(why) => invocation_failed(StatusCode::SERVICE_UNAVAILABLE, SWEEP_FUNCTION, &why),
    }
}

async fn status(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let req = match parse_invocation(&app.stats, &body, STATUS_FUNCTION) {
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
