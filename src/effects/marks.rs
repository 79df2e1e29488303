//! Marks on the endpoint itself: what state it is in and what we did, as tags.
//!
//! A person looking at a private endpoint in the portal should see at a glance whether
//! autopilot handled it. Tags go through the Tags API (`PATCH
//! {pe}/providers/Microsoft.Resources/tags/default`, operation Merge): a private endpoint
//! has no PATCH, and a full PUT would be a long-running operation that re-emits a write
//! event. Merge leaves every other tag alone; we write only when our tags would change
//! (so a redelivered event writes nothing), and never push a resource past Azure's 50
//! tags (skipped and reported instead).
//!
//! `<prefix>state` is the connection state, `<prefix>done` what we did (`dns`,
//! `approval`), `<prefix>since` when the state last changed: a Pending endpoint older than
//! `pending_warning_after_secs` is reported as overdue with the step that is missing, and
//! `<prefix>overdue` holds that step. The tag is what makes the warning fire once per
//! overdue spell rather than on every reconcile (events, re-checks, sweeps): the warning
//! is raised when the tag is first written. Merge cannot remove a tag, so when the
//! endpoint leaves Pending the tag is emptied.
//!
//! `<prefix>conflict` names what stands in the way of the endpoint's records (a name held
//! by another endpoint, a full record set, a record that is not ours) and the way out; it
//! is emptied once nothing does.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::arm::client::Method;
use crate::arm::{ArmClient, ArmError, ArmRequest};
use crate::model::Mode;
use crate::model::endpoint::{LinkTarget, PrivateEndpoint};

pub const TAGS_API: &str = "2025-04-01";
pub const MAX_TAGS: usize = 50;

/// `[marks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarkSettings {
    pub enabled: bool,
    pub prefix: String,
    /// A Pending endpoint older than this is reported as overdue.
    pub pending_warning_after_secs: u64,
    /// After a vendor registration, re-read the connection state (backing off) for this
    /// long; the sweep catches anything approved later.
    pub recheck_window_secs: u64,
}

impl Default for MarkSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            prefix: "plautopilot-".into(),
            pending_warning_after_secs: 3600,
            recheck_window_secs: 6 * 3600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MarkReport {
    /// The tags we wanted on the endpoint.
    pub tags: BTreeMap<String, String>,
    pub written: bool,
    /// Our tags differ from the endpoint's (a write is, or in a dry run would be, due).
    pub changed: bool,
    /// Why we did not write (tag limit), if so.
    pub skipped: Option<String>,
    /// Pending for too long: the step that is missing.
    pub overdue: Option<String>,
    /// `overdue` is new (not yet on the endpoint): raise the warning now.
    pub newly_overdue: bool,
}

/// Azure's limit on a tag value.
const MAX_TAG_VALUE: usize = 256;

/// Whether `wanted` is what a tag holding `current` already says (values are cut to
/// Azure's limit when written).
pub fn same_tag_value(wanted: &str, current: &str) -> bool {
    wanted.chars().take(MAX_TAG_VALUE).eq(current.chars())
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn age(since: &str) -> Option<Duration> {
    let t = time::OffsetDateTime::parse(since, &time::format_description::well_known::Rfc3339).ok()?;
    let secs = (time::OffsetDateTime::now_utc() - t).whole_seconds();
    u64::try_from(secs).ok().map(Duration::from_secs)
}

/// What the marks should say about one endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// The connection state after this reconcile (an approval we just made counts).
    pub state: &'a str,
    /// What we did (`dns`, `approval`, `vendor:<name>`).
    pub done: &'a [&'a str],
    /// What is missing while Pending (for the overdue warning).
    pub missing_step: &'a str,
    /// What stands in the way of the records (empty = nothing); `None` leaves the
    /// conflict note as it is (the records are being written at the same time).
    pub conflict: Option<&'a str>,
}

/// Computes and (in apply mode) writes the endpoint's marks.
pub async fn mark(
    arm: &ArmClient,
    settings: &MarkSettings,
    pe: &PrivateEndpoint,
    wanted: Wanted<'_>,
    mode: Mode,
) -> Result<MarkReport, ArmError> {
    let Wanted { state, done, missing_step, conflict } = wanted;
    let p = &settings.prefix;
    let (k_state, k_done, k_since) = (format!("{p}state"), format!("{p}done"), format!("{p}since"));
    let k_overdue = format!("{p}overdue");
    let k_conflict = format!("{p}conflict");
    let current_state = pe.tags.get(&k_state).cloned().unwrap_or_default();
    let since = match pe.tags.get(&k_since) {
        Some(s) if current_state.eq_ignore_ascii_case(state) => s.clone(),
        _ => now_rfc3339(),
    };
    let mut tags = BTreeMap::new();
    tags.insert(k_state.clone(), state.to_owned());
    tags.insert(k_done.clone(), done.join(","));
    tags.insert(k_since.clone(), since.clone());
    let overdue = (state.eq_ignore_ascii_case("pending")
        && age(&since).is_some_and(|a| a.as_secs() >= settings.pending_warning_after_secs))
    .then(|| missing_step.chars().take(MAX_TAG_VALUE).collect::<String>());
    let marked_overdue = pe.tags.get(&k_overdue).filter(|v| !v.is_empty());
    match &overdue {
        Some(step) => {
            tags.insert(k_overdue.clone(), step.clone());
        }
        None if marked_overdue.is_some() => {
            tags.insert(k_overdue.clone(), String::new());
        }
        None => {}
    }
    match conflict {
        Some(c) if !c.is_empty() => {
            tags.insert(k_conflict.clone(), c.chars().take(MAX_TAG_VALUE).collect());
        }
        Some(_) if pe.tags.get(&k_conflict).is_some_and(|v| !v.is_empty()) => {
            tags.insert(k_conflict.clone(), String::new());
        }
        _ => {}
    }
    let newly_overdue = overdue.is_some() && marked_overdue != overdue.as_ref();
    let new_key_count = |tags: &BTreeMap<String, String>| tags.keys().filter(|k| !pe.tags.contains_key(*k)).count();
    if pe.tags.len() + new_key_count(&tags) > MAX_TAGS && !pe.tags.contains_key(&k_overdue) {
        // The overdue tag matters least: at the limit, keep the state marks and lose only
        // the once-per-spell de-duplication of the warning.
        tags.remove(&k_overdue);
    }
    if pe.tags.len() + new_key_count(&tags) > MAX_TAGS && !pe.tags.contains_key(&k_conflict) {
        // Then the conflict note (the audit event and `autopilot status` still say it).
        tags.remove(&k_conflict);
    }
    let changed = !tags.iter().all(|(k, v)| pe.tags.get(k) == Some(v));
    let mut report = MarkReport { tags: tags.clone(), written: false, changed, skipped: None, overdue, newly_overdue };
    if !changed {
        return Ok(report);
    }
    let new_keys = new_key_count(&tags);
    if pe.tags.len() + new_keys > MAX_TAGS {
        report.skipped = Some(format!(
            "the endpoint has {} tags; adding {new_keys} would pass Azure's limit of {MAX_TAGS}",
            pe.tags.len()
        ));
        return Ok(report);
    }
    if mode == Mode::Apply {
        let body = json!({"operation": "Merge", "properties": {"tags": tags}});
        let path = format!("{}/providers/Microsoft.Resources/tags/default", pe.id.as_str());
        arm.send_and_wait(ArmRequest::new(Method::Patch, path, TAGS_API).body(body)).await?;
        report.written = true;
    }
    Ok(report)
}

/// What a person should look at when an endpoint stays Pending.
pub fn missing_step(pe: &PrivateEndpoint, vendor: Option<&str>, approval_note: Option<&str>) -> String {
    if let Some(note) = approval_note {
        return format!("owned target: {note}");
    }
    match (pe.target(), vendor) {
        (_, Some(v)) => format!("vendor {v} has not approved the connection yet"),
        (Some(LinkTarget::Resource(t)), None) => format!("the owner of {t} has not approved the connection"),
        (Some(LinkTarget::Alias(a)), None) => format!("the service behind alias {a} has not approved the connection"),
        _ => "the target's owner has not approved the connection".into(),
    }
}

/// Current connection state of the endpoint's first connection.
pub fn connection_state(pe: &PrivateEndpoint) -> String {
    pe.connections.first().map(|c| c.status.as_str().to_owned()).unwrap_or_else(|| "Unknown".into())
}

impl MarkReport {
    pub fn as_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}
