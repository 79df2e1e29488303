//! The `CatchUp` timer function: what no event in our subscriptions will ever tell us.
//!
//! One run does two things, in this order:
//!
//! 1. **Target-side approvals** ([`crate::effects::target_approvals`]): Pending connections
//!    on the owned resources in `approvals.target_scopes`, including managed and other
//!    tenants' endpoints, decided by policy, audited, warned about before their
//!    requester's expiry.
//! 2. **The `resourcechanges` catch-up** ([`crate::reconcile::catch_up`]) over
//!    `sweep.subscriptions`: the private endpoints changed since the watermark are queued
//!    for the normal reconcile through the sweep's bounded enqueue, and the watermark
//!    advances only once they are all queued. Without a usable watermark (first run,
//!    or older than the 14 days Resource Graph keeps) the run says so and runs the full
//!    sweep instead; the watermark is then set from the sweep's start.
//!
//! It runs every few minutes (`%AUTOPILOT_CATCHUP_SCHEDULE%`), much more often than the
//! full sweep, because each run reads only what changed. A failure answers 503 so the
//! host logs it; the next tick starts from the same watermark, so nothing is skipped.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::invocation::{CATCH_UP_FUNCTION, invocation_failed, invocation_ok, parse_invocation};
use super::protocol::InvocationResponse;
use crate::app::App;
use crate::effects::audit::{AuditEvent, EventType};
use crate::effects::target_approvals;
use crate::queue::work;
use crate::reconcile::Mode;
use crate::reconcile::catch_up::{self, Window};
use crate::runtime::fan_out::enqueue_all;

/// The last run's summary, for `Status` (this instance's view).
static LAST_RUN: OnceLock<Mutex<Value>> = OnceLock::new();

/// What `Status` shows about the catch-up and the target-side approvals (expiry warnings
/// included): the last run this instance made, `null` before the first.
pub fn last_run() -> Value {
    LAST_RUN.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

fn remember(data: &Value) {
    *LAST_RUN.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner) = data.clone();
}

fn completed(data: Value) -> AuditEvent {
    AuditEvent { kind: EventType::CatchUpCompleted.into(), subject: "catchup".into(), data }
}

pub async fn catch_up(State(app): State<Arc<App>>, body: Bytes) -> Response {
    if let Err(resp) = parse_invocation(&app.stats, &body, CATCH_UP_FUNCTION) {
        return *resp;
    }
    let started = Instant::now();
    let now = work::now_unix();
    let mut logs = Vec::new();
    let mut data = json!({"target_approvals": null, "from": null, "to": null, "changes": 0,
                          "endpoints_queued": 0, "full_sweep": false, "error": null});
    let state = app.small_state.clone();

    // 1. Target side.
    match target_approvals::scan(&app.arm, &app.config.approvals, state.as_ref(), Mode::Apply, now).await {
        Ok(scan) => {
            app.reconciler.publish(&scan.events).await;
            for (endpoint, d) in &scan.decisions {
                logs.push(format!("{} {}: {:?}: {} ({endpoint})", d.target, d.connection, d.action, d.reason));
            }
            for w in &scan.warnings {
                logs.push(format!(
                    "WARNING {} {}: requester rule {} gives up at {} ({}); it is still Pending",
                    w.target, w.connection, w.rule, w.expires_at, w.endpoint_id
                ));
            }
            data["target_approvals"] = scan.summary();
        }
        // The catch-up below does not depend on it: report and go on.
        Err(e) => {
            logs.push(format!("target approvals: listing failed: {e}"));
            data["target_approvals"] = json!({"error": e.to_string()});
        }
    }

    // 2. The catch-up.
    let subscriptions = &app.config.sweep.subscriptions;
    let fail = |data: &mut Value, why: String| {
        data["error"] = json!(why);
        why
    };
    let outcome: Result<(), String> = async {
        if subscriptions.is_empty() {
            logs.push("catch-up: no subscriptions configured (sweep.subscriptions); nothing to catch up".into());
            return Ok(());
        }
        let watermark = catch_up::load_watermark(state.as_ref())
            .await
            .map_err(|e| fail(&mut data, format!("reading the watermark: {e}")))?;
        data["from"] = json!(watermark.map(catch_up::rfc3339));
        match catch_up::window(watermark, now) {
            Window::Since(since) => {
                let (changes, ids) = catch_up::read_changes(&app.arm, subscriptions, since, &app.config.marks.prefix)
                    .await
                    .map_err(|e| fail(&mut data, format!("reading resourcechanges: {e}")))?;
                let messages: Vec<_> = ids
                    .iter()
                    .map(|id| {
                        work::reconcile_retry(id, 0, now, "changed per Resource Graph resourcechanges", Duration::ZERO)
                    })
                    .collect();
                let queued = messages.len();
                // All queued, or the watermark stays where it was.
                enqueue_all(&app, messages).await.map_err(|e| fail(&mut data, e))?;
                let to = catch_up::advance_watermark(state.as_ref(), catch_up::next_watermark(now))
                    .await
                    .map_err(|e| fail(&mut data, format!("writing the watermark: {e}")))?;
                data["changes"] = json!(changes);
                data["endpoints_queued"] = json!(queued);
                data["to"] = json!(catch_up::rfc3339(to));
                logs.push(format!(
                    "catch-up: {changes} changes since {}, {queued} endpoints queued",
                    catch_up::rfc3339(since)
                ));
            }
            Window::FullSweep(why) => {
                tracing::warn!(reason = why, "catch-up: running a full sweep instead");
                logs.push(format!("catch-up: {why}: running a full sweep instead"));
                data["full_sweep"] = json!(true);
                let swept = crate::runtime::sweep::sweep(&app.runtime).await;
                let ok = swept.is_ok();
                let answer = swept
                    .unwrap_or_else(|_| crate::runtime::sweep::SweepAnswer { logs: Vec::new(), counts: Value::Null });
                logs.extend(answer.logs);
                // Only a sweep that ran (not one skipped because another was running)
                // covers the gap.
                if !ok || answer.counts.get("listed").is_none() {
                    return Err(fail(&mut data, "the full sweep did not run to the end; the watermark stays".into()));
                }
                let to = catch_up::advance_watermark(state.as_ref(), catch_up::next_watermark(now))
                    .await
                    .map_err(|e| fail(&mut data, format!("writing the watermark: {e}")))?;
                data["to"] = json!(catch_up::rfc3339(to));
            }
        }
        Ok(())
    }
    .await;
    data["elapsed_ms"] = json!(started.elapsed().as_millis() as u64);
    remember(&data);
    app.reconciler.publish(&[completed(data.clone())]).await;
    match outcome {
        Ok(()) => invocation_ok(InvocationResponse { logs, return_value: data, ..Default::default() }),
        Err(why) => invocation_failed(StatusCode::SERVICE_UNAVAILABLE, CATCH_UP_FUNCTION, &why),
    }
}
