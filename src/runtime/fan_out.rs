//! Reconciling many endpoints at once, and queueing what did not converge.
//!
//! Events and the sweep both hand the runtime a set of endpoints and a deadline (well
//! inside what their trigger allows). Every endpoint is reconciled concurrently within
//! the process's parallelism bound; whatever did not converge in time (or failed) is put
//! on the work queue as a scheduled retry, per `error_policy.rs`, *before* the caller
//! answers, so correctness never rests on the trigger's own retries. If even the queue is
//! unavailable the caller gets `Err` and must fail, so its trigger redelivers.

use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::Runtime;
use super::error_policy::retry_after_reconcile;
use super::worker;
use crate::model::ResourceId;
use crate::queue::{NewMessage, work};
use crate::reconcile::snapshot::DnsSnapshot;
use crate::reconcile::{Mode, Outcome, Report};

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
    app: &Arc<Runtime>,
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
            Ok(report) => (format_report(report), retry_after_reconcile(&report.outcome)),
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
pub async fn enqueue_all(app: &Runtime, messages: Vec<NewMessage>) -> Result<(), String> {
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

/// One line per reconcile: the endpoint, its outcome, the actions and the planner's notes.
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
    app: &Arc<Runtime>,
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
