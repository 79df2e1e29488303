//! Incremental catch-up from Resource Graph's `resourcechanges` table: missed events
//! repaired without a full sweep.
//!
//! Why: events are hints and can be lost (a subscription whose system topic is not set
//! up yet, a delivery that gave up, an outage of ours). The full sweep repairs all of it,
//! but it reads every endpoint. Resource Graph writes a change record for every create,
//! update and delete; "change records should be available in less than five minutes" and
//! are kept 14 days (MicrosoftDocs/azure-docs
//! `articles/governance/resource-graph/how-to/get-resource-changes.md`). So a timer asks
//! for the private endpoints changed since a watermark and queues exactly those for the
//! normal reconcile (the work queue, through the sweep's bounded enqueue): deletes become
//! clean-ups, creates and updates become reconciles, each re-reading ARM first.
//!
//! The row shape (same document): `properties.targetResourceId`,
//! `properties.targetResourceType`, `properties.changeType` (`Create`, `Update`,
//! `Delete`) and `properties.changeAttributes.timestamp`.
//!
//! **The watermark** is kept in [`crate::effects::small_state`] (the ledger's store). It
//! moves only after the queueing succeeded, never backwards, and never closer to now than
//! [`INDEX_DELAY_SECS`]: a change made a minute ago may not be indexed yet, so the next run
//! reads that stretch again (a change queued twice is reconciled twice, which is
//! harmless). A missing watermark, or one older than the 14 days Resource Graph keeps
//! (less [`RETENTION_MARGIN_SECS`]), cannot be caught up: [`window`] says so and the caller
//! runs a full sweep instead, then sets the watermark to the sweep's start.
//!
//! Owned targets' connections need nothing here: the target-side scan
//! ([`crate::effects::target_approvals`]) that runs in the same timer reads their current
//! Pending connections, which is what a change record would have pointed at.

use serde::Serialize;
use serde_json::{Value, json};

use crate::arm::graph::{MAX_SUBSCRIPTIONS_PER_QUERY, query_rows};
use crate::arm::{ArmClient, ArmError};
use crate::effects::small_state::SmallState;
use crate::model::ResourceId;

/// How long Resource Graph keeps change records.
pub const RETENTION_SECS: u64 = 14 * 24 * 3600;
/// A watermark this close to the retention edge is treated as too old: the query runs a
/// little after the decision, and an edge case must cost a sweep, never a lost change.
pub const RETENTION_MARGIN_SECS: u64 = 3600;
/// "Change records should be available in less than five minutes": the watermark stays
/// twice that behind now.
pub const INDEX_DELAY_SECS: u64 = 600;
/// The watermark's key in the small-state store.
pub const WATERMARK_KEY: &str = "catchup:watermark";

/// What the next run reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Changes after this (unix seconds).
    Since(u64),
    /// No usable watermark: run a full sweep (the reason says which case).
    FullSweep(&'static str),
}

/// Decides from the stored watermark.
pub fn window(watermark: Option<u64>, now: u64) -> Window {
    match watermark {
        None => Window::FullSweep("no watermark yet"),
        Some(w) if w.saturating_add(RETENTION_SECS).saturating_sub(RETENTION_MARGIN_SECS) <= now => Window::FullSweep(
            "the watermark is older than the 14 days Resource Graph keeps changes; changes may have been lost",
        ),
        Some(w) => Window::Since(w),
    }
}

pub async fn load_watermark(state: &dyn SmallState) -> Result<Option<u64>, String> {
    Ok(state.get(WATERMARK_KEY).await?.and_then(|v| v["unix"].as_u64()))
}

/// Stores `to` unless the stored watermark is already later (it never moves back).
pub async fn advance_watermark(state: &dyn SmallState, to: u64) -> Result<u64, String> {
    let current = load_watermark(state).await?;
    let to = current.map_or(to, |c| c.max(to));
    state.put(WATERMARK_KEY, &json!({"unix": to, "at": rfc3339(to)})).await?;
    Ok(to)
}

/// Where the watermark goes after a run that started at `now`.
pub fn next_watermark(now: u64) -> u64 {
    now.saturating_sub(INDEX_DELAY_SECS)
}

pub fn rfc3339(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(0))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Changes to private endpoints after `since`. The time literal is formatted here (RFC
/// 3339, digits and `-:TZ` only), never taken from input.
pub fn changes_query(since: u64) -> String {
    format!(
        "resourcechanges \
| extend changeTime = todatetime(properties.changeAttributes.timestamp), \
targetResourceType = tostring(properties.targetResourceType) \
| where changeTime > todatetime('{}') \
| where targetResourceType =~ 'microsoft.network/privateendpoints' \
| project id, targetResourceId = tostring(properties.targetResourceId), \
changeType = tostring(properties.changeType), changeTime, changes = properties.changes \
| order by id asc",
        rfc3339(since)
    )
}

/// One change record, as far as the catch-up uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub endpoint: String,
    pub change_type: String,
}

/// Whether a change only touched our own marks (`tags.<mark prefix>*`): the product's
/// own tag writes, which need no reconcile. Anything else, or a change without a readable
/// `changes` bag, counts.
pub fn only_our_marks(row: &Value, mark_prefix: &str) -> bool {
    if !row.get("changeType").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("Update")) {
        return false;
    }
    let Some(changes) = row.get("changes").and_then(Value::as_object).filter(|c| !c.is_empty()) else {
        return false;
    };
    let ours = format!("tags.{}", mark_prefix.to_ascii_lowercase());
    !mark_prefix.is_empty() && changes.keys().all(|k| k.to_ascii_lowercase().starts_with(&ours))
}

/// The changes after `since` in `subscriptions` (counted), and the distinct endpoints they
/// name, leaving out updates that only touched our own marks (`mark_prefix` tags): without
/// that, every mark written would queue its endpoint again on the next run.
pub async fn read_changes(
    arm: &ArmClient,
    subscriptions: &[String],
    since: u64,
    mark_prefix: &str,
) -> Result<(usize, Vec<ResourceId>), ArmError> {
    let mut subs: Vec<String> =
        subscriptions.iter().map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect();
    subs.sort();
    subs.dedup();
    let query = changes_query(since);
    let mut changes = 0;
    let mut ids = std::collections::BTreeMap::new();
    for chunk in subs.chunks(MAX_SUBSCRIPTIONS_PER_QUERY) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for row in query_rows(arm, &chunk, &query).await? {
            changes += 1;
            if only_our_marks(&row, mark_prefix) {
                continue;
            }
            let target = row.get("targetResourceId").and_then(Value::as_str).unwrap_or_default();
            match ResourceId::parse_private_endpoint(target) {
                Ok(id) => {
                    ids.entry(id.key().to_owned()).or_insert(id);
                }
                // A child of an endpoint (its zone group) points at the endpoint too.
                Err(_) => match endpoint_of_child(target) {
                    Some(id) => {
                        ids.entry(id.key().to_owned()).or_insert(id);
                    }
                    None => tracing::debug!(target, "catch-up: a change that names no private endpoint"),
                },
            }
        }
    }
    Ok((changes, super::sweep::interleave(ids.into_values().collect())))
}

/// `…/privateEndpoints/{name}/…` → the endpoint's id.
fn endpoint_of_child(id: &str) -> Option<ResourceId> {
    let lower = id.to_ascii_lowercase();
    let at = lower.find("/providers/microsoft.network/privateendpoints/")?;
    let rest = &id[at + "/providers/microsoft.network/privateendpoints/".len()..];
    let name = rest.split('/').next()?;
    ResourceId::parse_private_endpoint(&format!(
        "{}{name}",
        &id[..at + "/providers/microsoft.network/privateendpoints/".len()]
    ))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        let now = 100 * 24 * 3600;
        assert_eq!(window(None, now), Window::FullSweep("no watermark yet"));
        assert_eq!(window(Some(now - 3600), now), Window::Since(now - 3600));
        assert!(matches!(window(Some(now - RETENTION_SECS), now), Window::FullSweep(_)));
        assert!(matches!(window(Some(now - RETENTION_SECS + RETENTION_MARGIN_SECS), now), Window::FullSweep(_)));
        assert_eq!(
            window(Some(now - RETENTION_SECS + RETENTION_MARGIN_SECS + 1), now),
            Window::Since(now - RETENTION_SECS + RETENTION_MARGIN_SECS + 1)
        );
    }

    #[test]
    fn the_query_reads_the_documented_columns() {
        let q = changes_query(0);
        assert!(q.starts_with("resourcechanges"));
        assert!(q.contains("properties.changeAttributes.timestamp"));
        assert!(q.contains("properties.targetResourceId"));
        assert!(q.contains("todatetime('1970-01-01T00:00:00Z')"));
    }

    #[test]
    fn our_own_mark_writes_are_not_changes_to_reconcile() {
        let row = |t: &str, changes: Value| serde_json::json!({"changeType": t, "changes": changes});
        let marks = serde_json::json!({"tags.plautopilot-state": {"previousValue": null, "newValue": "Approved"}});
        assert!(only_our_marks(&row("Update", marks.clone()), "plautopilot-"));
        assert!(!only_our_marks(&row("Create", marks.clone()), "plautopilot-"));
        assert!(!only_our_marks(&row("Update", marks), ""));
        let mixed = serde_json::json!({"tags.plautopilot-state": {}, "properties.subnet": {}});
        assert!(!only_our_marks(&row("Update", mixed), "plautopilot-"));
        assert!(!only_our_marks(&row("Update", serde_json::json!({})), "plautopilot-"));
        assert!(!only_our_marks(&serde_json::json!({"changeType": "Update"}), "plautopilot-"));
    }

    #[test]
    fn children_name_their_endpoint() {
        let id = endpoint_of_child(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/privateEndpoints/pe/privateDnsZoneGroups/default",
        )
        .unwrap();
        assert!(id.as_str().ends_with("/privateEndpoints/pe"));
    }

    #[tokio::test]
    async fn the_watermark_never_moves_back() {
        let s = crate::effects::small_state::SqliteState::open_in_memory().unwrap();
        assert_eq!(load_watermark(&s).await.unwrap(), None);
        assert_eq!(advance_watermark(&s, 100).await.unwrap(), 100);
        assert_eq!(advance_watermark(&s, 50).await.unwrap(), 100);
        assert_eq!(load_watermark(&s).await.unwrap(), Some(100));
    }
}
