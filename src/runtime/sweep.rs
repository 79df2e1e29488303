//! The sweep: every private endpoint in `sweep.subscriptions`, plus every endpoint that
//! still owns a record or a vendor registration but was not listed (re-read before
//! anything is removed: a listing can lag), reconciled like an event would; and its dry
//! run, what the next sweep would do (`autopilot plan --subscription`).
//!
//! Both start from the same scope (`reconcile::sweep::scope`) and the same reconciler, so
//! the preview is exactly the run. The timer function (`intake/server.rs`) and the
//! catch-up's full-sweep fallback call [`sweep`]; the CLI calls [`plan_subscriptions`].

use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use super::Runtime;
use super::fan_out::{enqueue_all, reconcile_and_queue};
use crate::effects::audit::{AuditEvent, EventType};
use crate::effects::dns::zones::ZoneReport;
use crate::effects::vendors::sync::VendorIntent;
use crate::queue::work;
use crate::reconcile::plan::DnsAction;
use crate::reconcile::snapshot::DnsSnapshot;
use crate::reconcile::{Mode, Outcome, Report};

/// Per-endpoint lines a sweep returns to the host at most.
const SWEEP_LOG_LINES: usize = 50;

/// What one sweep run leaves for its caller to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepAnswer {
    /// The summary line first, then at most [`SWEEP_LOG_LINES`] per-endpoint lines.
    pub logs: Vec<String>,
    /// The run's counts (`Value::Null` when it did not run: skipped, or nothing to do).
    pub counts: Value,
}

impl SweepAnswer {
    fn line(line: &str) -> Self {
        Self { logs: vec![line.to_owned()], counts: Value::Null }
    }
}

/// Runs one sweep (never two at once: a second run while one is going is skipped).
/// `Err` = the listing or the queueing failed; the caller must fail so the timer's next
/// tick (or the host) tries again.
pub async fn sweep(app: &Arc<Runtime>) -> Result<SweepAnswer, String> {
    let Ok(_running) = app.sweep_running.try_lock() else {
        return Ok(SweepAnswer::line("sweep already running; this run is skipped"));
    };
    let started = std::time::Instant::now();
    let subscriptions = &app.sweep.subscriptions;
    if subscriptions.is_empty() {
        return Ok(SweepAnswer::line("sweep: no subscriptions configured (sweep.subscriptions); nothing to do"));
    }
    // One budget for the whole run (listing, reconciles, queueing the rest), well inside
    // the host's functionTimeout; whatever does not fit is queued, never killed.
    let budget = Duration::from_secs(app.sweep.deadline_secs.max(1));
    let (coverage_gaps, coverage_created) = check_coverage(app, subscriptions).await;
    let mut scope =
        match crate::reconcile::sweep::scope(&app.arm, &app.reconciler, subscriptions, &app.sweep.source).await {
            Ok(s) => s,
            Err(e) => {
                let reason = format!("listing: {e}");
                let data = json!({"subscriptions": subscriptions.len(), "error": reason,
                "elapsed_ms": started.elapsed().as_millis() as u64});
                app.reconciler.publish(&[sweep_completed(data)]).await;
                return Err(reason);
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
    enqueue_all(app, confirmed_follow_ups).await?;
    // A rotating (random) start: when a run cannot finish, no prefix of the estate is
    // always the part that gets done.
    if !ids.is_empty() {
        let start = fastrand::usize(..ids.len());
        ids.rotate_left(start);
    }
    let spread = Duration::from_secs(app.sweep.deadline_secs.clamp(1, 300));
    let (logs, summary) = match reconcile_and_queue(app, ids, deadline, scope.dns.clone(), spread).await {
        Ok(r) => r,
        Err(why) => {
            let data = json!({"subscriptions": subscriptions.len(), "error": why,
                "elapsed_ms": started.elapsed().as_millis() as u64});
            app.reconciler.publish(&[sweep_completed(data)]).await;
            return Err(why);
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
    Ok(SweepAnswer { logs: answer_logs, counts })
}

/// Every subscription in scope covered by its Event Grid topic and event subscription
/// (`reconcile/coverage.rs`, the check `autopilot doctor` runs too), when
/// `coverage.function_id` says where events must go. Gaps are logged and audited
/// (`sweep.coverage_gap`); with `coverage.create_missing` they are created first. Returns the
/// subscriptions still uncovered and those this run created for.
async fn check_coverage(app: &Arc<Runtime>, subscriptions: &[String]) -> (usize, usize) {
    let settings = &app.coverage;
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

fn sweep_completed(data: Value) -> AuditEvent {
    AuditEvent { kind: EventType::SweepCompleted.into(), subject: "sweep".into(), data }
}

/// The sweep's plan over `subscriptions`, computed without writing anything.
#[derive(Debug, Serialize)]
pub struct SweepPlan {
    pub listed: usize,
    pub dns_owners_not_listed: usize,
    pub vendor_registrations_not_listed: usize,
    /// Endpoints whose dry run would change something, with what.
    pub changes: Vec<Report>,
    pub unchanged: usize,
}

/// What the next sweep would do. `progress(done, total)` is called as endpoints are
/// planned (long runs show it on stderr).
pub async fn plan_subscriptions(
    app: &Runtime,
    subscriptions: &[String],
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<SweepPlan, String> {
    let scope = crate::reconcile::sweep::scope(&app.arm, &app.reconciler, subscriptions, &app.sweep.source)
        .await
        .map_err(|e| e.to_string())?;
    let total = scope.ids.len();
    let mut plan = SweepPlan {
        listed: scope.listed,
        dns_owners_not_listed: scope.dns_owners_not_listed,
        vendor_registrations_not_listed: scope.vendor_registrations_not_listed,
        changes: Vec::new(),
        unchanged: 0,
    };
    let parallel = app.max_parallel.max(1);
    let mut done = 0usize;
    for chunk in scope.ids.chunks(parallel) {
        let dry_runs = futures::future::join_all(chunk.iter().map(|id| app.reconciler.reconcile(id, Mode::DryRun)));
        let reports = DnsSnapshot::scope(scope.dns.clone(), dry_runs).await;
        for r in reports {
            done += 1;
            let mut vendor_change = false;
            for v in &r.vendors {
                vendor_change |= match &v.intent {
                    // The sweep re-sends registrations (look before write at the vendor);
                    // asking every vendor here would spend their rate limits, so a plan
                    // trusts the ledger: recorded = in place.
                    VendorIntent::Register { .. } => match app.reconciler.vendor_sync() {
                        Some(sync) => !matches!(sync.ledger().get(&v.vendor, &r.endpoint).await, Ok(Some(_))),
                        None => false,
                    },
                    VendorIntent::Deregister => true,
                    _ => false,
                };
            }
            let changes = r.plan.actions.iter().any(|a| !matches!(a, DnsAction::Unchanged { .. }))
                || vendor_change
                || r.outcome != Outcome::Done
                || r.marks.as_ref().is_some_and(|m| m.changed)
                || r.zones.iter().any(ZoneReport::changes);
            if changes {
                plan.changes.push(r);
            } else {
                plan.unchanged += 1;
            }
        }
        progress(done, total);
    }
    Ok(plan)
}
