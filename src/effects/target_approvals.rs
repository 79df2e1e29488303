//! Approvals from the target side: Pending connections on resources we own, found by a
//! periodic Resource Graph query, whoever asked for them.
//!
//! Why a second way in: the endpoint-side approval ([`super::approvals::approve_owned`])
//! runs when *an endpoint in our subscriptions* changes. The connections users most need
//! approved come from endpoints that are not: the managed private endpoints of Data
//! Factory and Synapse managed VNets, Stream Analytics, Managed Grafana, Databricks
//! serverless (NCC) and Fabric live in a Microsoft tenant, "are always created in a
//! pending state" (Azure/data-landing-zone#160) and raise no event in ours; a partner's
//! endpoint from another tenant likewise. So the timer asks Resource Graph for every
//! owned resource of the configured types in the configured scopes and expands its
//! embedded `properties.privateEndpointConnections[]` to the Pending ones
//! ([`pending_connections_query`]).
//!
//! **Who is asking.** A target-side connection tells us one authoritative fact about its
//! requester: `properties.privateEndpoint.id`, which ARM sets, so its *subscription* is
//! where the endpoint really is. Its tenant is known only when our identity may read that
//! subscription (`GET /subscriptions/{id}`); for another tenant's or a Microsoft-managed
//! subscription that is a 403 and the tenant stays unknown. Azure publishes no "requesting
//! service" field on a connection (the common `PrivateEndpointConnection` carries the
//! endpoint id, `groupIds`, the state and `provisioningState`), so a service is
//! recognised by what the operator knows about it: the subscriptions (or tenants) its
//! endpoints live in, configured as a named rule ([`RequesterRule`]). Which subscriptions
//! a given Microsoft service uses is **not published**: the operator copies them from the
//! first Pending connection (the `approval.left_pending` audit event names it). The
//! endpoint's *name* and the connection's *description* (the request message) are chosen
//! by the requester: a rule may use them to narrow (`endpoint_name_pattern`,
//! `description_pattern`, e.g. Data Factory's `<factory>.<managed endpoint>` naming,
//! whose exact form is unconfirmed), never to grant.
//!
//! **Policy.** The first rule whose subscriptions or tenants match decides; a connection
//! no rule recognises goes to the `[approvals]` requester lists (`allowed_tenants`,
//! `allowed_subscriptions`; `allowed_vnets` fails, as a foreign endpoint's subnet cannot
//! be read). `allow_any` does not reach connections found here: it means "anyone in the
//! subscriptions we hear from", and a target-side scan hears from the whole world.
//!
//! **One approval implementation.** Resource Graph lags ARM, so each row is re-read from
//! ARM (`GET` the connection) and only a connection ARM still shows Pending is decided,
//! through [`super::approvals::decide`], the same code the endpoint side uses; the
//! description names the product, the rule and the time.
//!
//! **Expiry.** Some requesters give up: a Databricks NCC private endpoint rule becomes
//! "EXPIRED: If the endpoint was created but not approved in 14 days"
//! (docs.databricks.com/api/networking/v1/list-ncc-private-endpoint-rules). A rule with
//! `expires_after_secs` gets an `approval.expiry_warning` audit event (once) when a
//! connection it recognises is still Pending within `warn_before_secs` of that. The
//! clock starts at the connection's `systemData.createdAt` when its provider sends it,
//! else when this scan first saw it Pending (kept in [`super::small_state`]).
//!
//! **Never rejected.** `approvals.on_violation = "reject"` applies to the endpoint side
//! only: what this scan does not approve is left Pending (Rejected is one-way, and the
//! requester may be a managed service nobody has written a rule for yet).
//!
//! **Quiet re-runs.** An approved connection is no longer Pending, so it is not listed
//! again. A connection left Pending is audited when first seen and again only when the
//! reason changes; the warning goes out once.

use std::collections::HashSet;

use serde::Serialize;
use serde_json::{Value, json};

use super::approvals::{self, ApprovalAction, ApprovalDecision, ApprovalSettings, Decide, Requester, Verdict};
use super::audit::{AuditEvent, EventType};
use super::small_state::SmallState;
use crate::arm::graph::{MAX_SUBSCRIPTIONS_PER_QUERY, query_rows};
use crate::arm::{ArmClient, ArmError, ArmRequest};
use crate::model::Mode;

// The rule is part of the `[approvals]` section (plain data, in `approvals.rs`); how it
// recognises a requester is here. Re-exported for `target_approvals::RequesterRule`.
pub use super::approvals::RequesterRule;

impl RequesterRule {
    /// Whether the requester is this rule's (by its authoritative facts), and how.
    fn recognises(&self, subscription: &str, tenant: Option<&Result<String, String>>) -> Option<String> {
        if self.subscriptions.iter().any(|s| s.eq_ignore_ascii_case(subscription)) {
            return Some(format!("subscription {subscription}"));
        }
        match tenant {
            Some(Ok(t)) if self.tenants.iter().any(|a| a.eq_ignore_ascii_case(t)) => Some(format!("tenant {t}")),
            _ => None,
        }
    }

    fn verdict(&self, how: &str, endpoint_name: &str, description: &str) -> Verdict {
        let name = &self.name;
        if !self.endpoint_name_pattern.is_empty() && !approvals::glob_match(&self.endpoint_name_pattern, endpoint_name)
        {
            return Verdict::Violation(format!(
                "requester rule {name} matched {how}, but endpoint name {endpoint_name:?} does not match its \
                 endpoint_name_pattern {:?}",
                self.endpoint_name_pattern
            ));
        }
        if !self.description_pattern.is_empty() && !approvals::glob_match(&self.description_pattern, description) {
            return Verdict::Violation(format!(
                "requester rule {name} matched {how}, but the description {description:?} does not match its \
                 description_pattern {:?}",
                self.description_pattern
            ));
        }
        if !self.approve {
            return Verdict::Violation(format!(
                "requester rule {name} matched {how}; it approves nothing (approve = false): approve it in the portal"
            ));
        }
        Verdict::Approve(format!("rule {name} ({how})"))
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("approvals.requesters: every rule needs a name".into());
        }
        if self.subscriptions.is_empty() && self.tenants.is_empty() {
            return Err(format!(
                "approvals.requesters {}: set subscriptions or tenants (patterns only narrow, they never grant)",
                self.name
            ));
        }
        Ok(())
    }
}

/// Checks the target-side settings (called from [`ApprovalSettings::validate`]'s caller).
pub fn validate(s: &ApprovalSettings) -> Result<(), String> {
    for t in &s.target_types {
        let ok = t.split('/').count() >= 2 && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '/');
        if !ok {
            return Err(format!("approvals.target_types: `{t}` is not a resource type (Namespace/type)"));
        }
    }
    for scope in &s.target_scopes {
        if scope_subscription(scope).is_none() {
            return Err(format!(
                "approvals.target_scopes: `{scope}` is neither a subscription id nor /subscriptions/{{id}}[/resourceGroups/{{rg}}]"
            ));
        }
    }
    for r in &s.requesters {
        r.validate()?;
    }
    Ok(())
}

/// The subscription of a scope (`<id>`, `/subscriptions/<id>`, `/subscriptions/<id>/resourceGroups/<rg>`).
fn scope_subscription(scope: &str) -> Option<String> {
    let s = scope.trim().trim_end_matches('/');
    let ok = |id: &str| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !s.starts_with('/') {
        return ok(s).then(|| s.to_ascii_lowercase());
    }
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        ["", subs, id] if subs.eq_ignore_ascii_case("subscriptions") && ok(id) => Some(id.to_ascii_lowercase()),
        ["", subs, id, rgs, rg]
            if subs.eq_ignore_ascii_case("subscriptions")
                && rgs.eq_ignore_ascii_case("resourcegroups")
                && ok(id)
                && !rg.is_empty() =>
        {
            Some(id.to_ascii_lowercase())
        }
        _ => None,
    }
}

/// Whether resource `id` is inside `scope`.
fn in_scope(id: &str, scope: &str) -> bool {
    let Some(sub) = scope_subscription(scope) else { return false };
    let id = id.to_ascii_lowercase();
    let scope = scope.trim().trim_end_matches('/').to_ascii_lowercase();
    if scope.starts_with('/') && scope.contains("/resourcegroups/") {
        id.starts_with(&format!("{scope}/"))
    } else {
        id.starts_with(&format!("/subscriptions/{sub}/"))
    }
}

/// The query: owned resources of `types`, one row per Pending connection.
///
/// `mv-expand` turns each embedded connection into a row. Resource Graph expands at most
/// 128 elements per row unless told otherwise, and at most 400 ("RowLimit max of 400. The
/// default is 128", learn.microsoft.com Resource Graph "Understand the query language"),
/// so the query asks for 400: a resource with more connections than that has its later
/// ones missed by this scan (the endpoint side still approves ours). Every row projects the owning
/// resource's `id` (Resource Graph pages only queries that project it) and the order is
/// total (`id`, then the connection's id), so `$skipToken` paging stays stable. The types
/// are validated (letters, digits, `.`, `/`) before they are put in the literal.
pub fn pending_connections_query(types: &[String]) -> String {
    let list: Vec<String> = types.iter().map(|t| format!("'{}'", t.to_ascii_lowercase())).collect();
    format!(
        "Resources \
| where type in~ ({}) \
| mv-expand connection = properties.privateEndpointConnections limit 400 \
| where tostring(connection.properties.privateLinkServiceConnectionState.status) =~ 'Pending' \
| project id, connectionId = tostring(connection.id), connectionName = tostring(connection.name), \
endpointId = tostring(connection.properties.privateEndpoint.id), \
description = tostring(connection.properties.privateLinkServiceConnectionState.description) \
| order by id asc, connectionId asc",
        list.join(", ")
    )
}

/// One Pending connection as Resource Graph lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingRow {
    pub target: String,
    pub connection: String,
    pub endpoint_id: String,
}

/// An expiry warning raised by a scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpiryWarning {
    pub endpoint_id: String,
    pub target: String,
    pub connection: String,
    pub rule: String,
    /// RFC 3339.
    pub expires_at: String,
    /// Where the clock started: `systemData.createdAt` or `first seen`.
    pub clock: String,
}

/// What one scan found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanReport {
    /// Pending connections listed (before ARM re-reads them).
    pub listed: usize,
    pub decisions: Vec<(String, ApprovalDecision)>,
    pub warnings: Vec<ExpiryWarning>,
    /// Audit events to publish (the caller publishes them).
    #[serde(skip)]
    pub events: Vec<AuditEvent>,
}

impl ScanReport {
    pub fn count(&self, action: ApprovalAction) -> usize {
        self.decisions.iter().filter(|(_, d)| d.action == action).count()
    }

    pub fn summary(&self) -> Value {
        json!({
            "listed": self.listed,
            "approved": self.count(ApprovalAction::Approved),
            "rejected": self.count(ApprovalAction::Rejected),
            "left_pending": self.count(ApprovalAction::LeftPending),
            "failed": self.count(ApprovalAction::Failed),
            "expiry_warnings": self.warnings,
        })
    }
}

/// Lists the Pending connections on owned resources in scope.
pub async fn list_pending(arm: &ArmClient, settings: &ApprovalSettings) -> Result<Vec<PendingRow>, ArmError> {
    if settings.target_scopes.is_empty() || settings.target_types.is_empty() {
        return Ok(Vec::new());
    }
    let mut subs: Vec<String> = settings.target_scopes.iter().filter_map(|s| scope_subscription(s)).collect();
    subs.sort();
    subs.dedup();
    let query = pending_connections_query(&settings.target_types);
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for chunk in subs.chunks(MAX_SUBSCRIPTIONS_PER_QUERY) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for row in query_rows(arm, &chunk, &query).await? {
            let field = |k: &str| row.get(k).and_then(Value::as_str).unwrap_or_default().trim().to_owned();
            let (target, name, endpoint) = (field("id"), field("connectionName"), field("endpointId"));
            if target.is_empty() || name.is_empty() || endpoint.is_empty() {
                tracing::warn!(%target, "target approvals: skipping a Pending connection row without a name or endpoint");
                continue;
            }
            if !settings.target_scopes.iter().any(|s| in_scope(&target, s)) {
                continue;
            }
            if seen.insert(format!("{}/{}", target.to_ascii_lowercase(), name.to_ascii_lowercase())) {
                out.push(PendingRow { target, connection: name, endpoint_id: endpoint });
            }
        }
    }
    Ok(out)
}

/// The small-state key for a connection.
fn state_key(row: &PendingRow) -> String {
    format!("pending:{}/privateEndpointConnections/{}", row.target, row.connection)
}

/// Segment `i` of an id (`/subscriptions/{2}/resourceGroups/{4}/…`), and its last one.
fn segment(id: &str, i: usize) -> &str {
    id.split('/').nth(i).unwrap_or_default()
}

/// One scan: list, re-read, decide, warn. Per-connection failures are reported, never
/// fatal; only the listing failing is an `Err`.
pub async fn scan(
    arm: &ArmClient,
    settings: &ApprovalSettings,
    state: &dyn SmallState,
    mode: Mode,
    now_unix: u64,
) -> Result<ScanReport, ArmError> {
    let rows = list_pending(arm, settings).await?;
    let mut report = ScanReport { listed: rows.len(), ..ScanReport::default() };
    // Tenants looked up in this scan, refusals included: many managed endpoints share one
    // unreadable subscription, and a 403 is not worth asking again within a run.
    let mut tenants = std::collections::HashMap::new();
    for row in rows {
        let ctx = Ctx { arm, settings, state, mode, now: now_unix };
        match one(&ctx, &row, &mut report, &mut tenants).await {
            Ok(Some(d)) => report.decisions.push((row.endpoint_id.clone(), d)),
            Ok(None) => {}
            Err(e) => {
                let d = ApprovalDecision {
                    target: row.target.clone(),
                    connection: row.connection.clone(),
                    action: ApprovalAction::Failed,
                    reason: e.to_string(),
                };
                if mode == Mode::Apply {
                    report.events.push(audit(EventType::ApprovalFailed, &row.endpoint_id, &d));
                }
                report.decisions.push((row.endpoint_id.clone(), d));
            }
        }
    }
    Ok(report)
}

fn audit(kind: EventType, endpoint: &str, d: &ApprovalDecision) -> AuditEvent {
    AuditEvent {
        kind: kind.into(),
        subject: endpoint.to_owned(),
        data: json!({"target": d.target, "connection": d.connection, "reason": d.reason}),
    }
}

fn rfc3339(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(0))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

fn parse_rfc3339(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp()).ok()
}

/// What every connection of one scan shares.
struct Ctx<'a> {
    arm: &'a ArmClient,
    settings: &'a ApprovalSettings,
    state: &'a dyn SmallState,
    mode: Mode,
    now: u64,
}

async fn one(
    ctx: &Ctx<'_>,
    row: &PendingRow,
    report: &mut ScanReport,
    tenants: &mut std::collections::HashMap<String, Result<String, String>>,
) -> Result<Option<ApprovalDecision>, ArmError> {
    let Ctx { arm, settings, state, mode, now } = *ctx;
    let api = approvals::connections_api(arm, &row.target).await?;
    // Resource Graph lags: ARM decides whether it is still Pending.
    let path = format!("{}/privateEndpointConnections/{}", row.target, row.connection);
    let conn = match arm.send(ArmRequest::get(path, &api)).await {
        Ok(r) => r.body,
        Err(e) if e.status() == Some(404) => return Ok(None),
        Err(e) => return Err(e),
    };
    let status = conn.pointer("/properties/privateLinkServiceConnectionState/status").and_then(Value::as_str);
    if !status.is_some_and(|s| s.eq_ignore_ascii_case("Pending")) {
        let _ = state.delete(&state_key(row)).await;
        return Ok(None);
    }
    // ARM's copy of the endpoint id wins over the index's.
    let endpoint_id =
        conn.pointer("/properties/privateEndpoint/id").and_then(Value::as_str).unwrap_or(&row.endpoint_id).to_owned();
    let description = conn
        .pointer("/properties/privateLinkServiceConnectionState/description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let subscription = segment(&endpoint_id, 2).to_owned();
    let endpoint_name = endpoint_id.rsplit('/').next().unwrap_or_default().to_owned();
    let needs_tenant =
        !settings.allowed_tenants.is_empty() || settings.requesters.iter().any(|r| !r.tenants.is_empty());
    let tenant = if needs_tenant {
        let key = subscription.to_ascii_lowercase();
        if !tenants.contains_key(&key) {
            let t = approvals::tenant_of(arm, &subscription).await?;
            tenants.insert(key.clone(), t);
        }
        tenants.get(&key).cloned()
    } else {
        None
    };
    let rule =
        settings.requesters.iter().find_map(|r| r.recognises(&subscription, tenant.as_ref()).map(|how| (r, how)));
    let verdict = match &rule {
        Some((r, how)) => r.verdict(how, &endpoint_name, &description),
        // Say what we know about a requester nobody configured: it is what an operator
        // copies into a rule.
        None if !settings.restricts_requesters() => {
            let tenant = match &tenant {
                Some(Ok(t)) => format!("tenant {t}"),
                Some(Err(why)) => format!("tenant unknown: {why}"),
                None => "tenant not looked up".into(),
            };
            let any = if settings.allow_any {
                "; approvals.allow_any does not reach connections found on the target side (any tenant can ask)"
            } else {
                ""
            };
            Verdict::NoPolicy(format!(
                "no [[approvals.requesters]] rule recognises endpoint {endpoint_id} (subscription {subscription}, \
                 {tenant}) and approvals.allowed_tenants / allowed_subscriptions are empty{any}"
            ))
        }
        None => settings.evaluate_requester(
            &Requester {
                endpoint_id: &endpoint_id,
                subscription: &subscription,
                subnet: None,
                request_message: &description,
                found_on_target: true,
            },
            tenant.as_ref(),
        ),
    };
    let verdict = match verdict {
        // The description says when, as well as who and why.
        Verdict::Approve(why) => Verdict::Approve(format!("{why} at {}", rfc3339(now))),
        // Never rejected from here, whatever `on_violation` says: Rejected is one-way, and
        // a requester this scan does not recognise may just be one nobody configured yet.
        Verdict::Violation(why) => Verdict::NoPolicy(why),
        other => other,
    };
    let decision = approvals::decide(
        arm,
        settings,
        Decide { target: &row.target, api: &api, name: &row.connection, verdict, mode },
    )
    .await?;
    if mode == Mode::DryRun {
        return Ok(Some(decision));
    }
    let key = state_key(row);
    let mut remembered = state.get(&key).await.ok().flatten().unwrap_or(Value::Null);
    match decision.action {
        ApprovalAction::Approved => {
            report.events.push(audit(EventType::ApprovalApproved, &endpoint_id, &decision));
            let _ = state.delete(&key).await;
            return Ok(Some(decision));
        }
        ApprovalAction::Rejected => {
            report.events.push(audit(EventType::ApprovalRejected, &endpoint_id, &decision));
            let _ = state.delete(&key).await;
            return Ok(Some(decision));
        }
        _ => {}
    }
    // Left Pending: audited when first seen or when the reason changes.
    let first_seen = remembered["first_seen"].as_u64().unwrap_or(now);
    let mut changed = remembered["reason"].as_str() != Some(decision.reason.as_str()) || remembered.is_null();
    if changed {
        report.events.push(audit(EventType::ApprovalLeftPending, &endpoint_id, &decision));
    }
    if let Some((r, _)) = rule.filter(|(r, _)| r.expires_after_secs > 0) {
        let created = conn.pointer("/systemData/createdAt").and_then(Value::as_str).and_then(parse_rfc3339);
        let (start, clock) = match created {
            Some(c) => (c, "systemData.createdAt"),
            None => (first_seen, "first seen"),
        };
        let expires = start.saturating_add(r.expires_after_secs);
        if now.saturating_add(r.warn_before_secs) >= expires && remembered["warned"] != json!(true) {
            let w = ExpiryWarning {
                endpoint_id: endpoint_id.clone(),
                target: row.target.clone(),
                connection: row.connection.clone(),
                rule: r.name.clone(),
                expires_at: rfc3339(expires),
                clock: clock.into(),
            };
            tracing::warn!(endpoint = %endpoint_id, target = %row.target, rule = %r.name, expires_at = %w.expires_at, "a Pending connection nears its requester's expiry");
            report.events.push(AuditEvent {
                kind: EventType::ApprovalExpiryWarning.into(),
                subject: endpoint_id.clone(),
                data: json!({"target": w.target, "connection": w.connection, "rule": w.rule,
                             "expires_at": w.expires_at, "clock": w.clock, "reason": decision.reason}),
            });
            report.warnings.push(w);
            remembered["warned"] = json!(true);
            changed = true;
        }
    }
    if changed {
        if !remembered.is_object() {
            remembered = json!({});
        }
        remembered["first_seen"] = json!(first_seen);
        remembered["reason"] = json!(decision.reason);
        if let Err(e) = state.put(&key, &remembered).await {
            tracing::warn!(error = %e, "target approvals: could not remember a Pending connection");
        }
    }
    Ok(Some(decision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(scope_subscription("AbC-1").as_deref(), Some("abc-1"));
        assert_eq!(scope_subscription("/subscriptions/s1/resourceGroups/rg").as_deref(), Some("s1"));
        assert_eq!(scope_subscription("/subscriptions/s1/").as_deref(), Some("s1"));
        assert!(scope_subscription("/subscriptions/s1/resourceGroups").is_none());
        assert!(scope_subscription("s1' or 1==1").is_none());
        let id = "/subscriptions/S1/resourceGroups/RG/providers/Microsoft.Storage/storageAccounts/a";
        assert!(in_scope(id, "s1"));
        assert!(in_scope(id, "/subscriptions/s1/resourceGroups/rg"));
        assert!(!in_scope(id, "/subscriptions/s1/resourceGroups/rg2"));
        assert!(!in_scope(id, "s2"));
    }

    #[test]
    fn the_query_uses_known_tables_and_projects_id() {
        let q = pending_connections_query(&["Microsoft.Storage/storageAccounts".into()]);
        assert!(q.contains("'microsoft.storage/storageaccounts'"));
        assert!(q.contains("| project id, connectionId"));
        assert!(q.contains("order by id asc, connectionId asc"));
    }

    #[test]
    fn rules_grant_by_authority_and_narrow_by_hints() {
        let rule = RequesterRule {
            name: "databricks-ncc".into(),
            subscriptions: vec!["ms-sub".into()],
            tenants: vec![],
            endpoint_name_pattern: "databricks-*".into(),
            description_pattern: String::new(),
            approve: true,
            expires_after_secs: 0,
            warn_before_secs: 0,
        };
        assert!(rule.recognises("other", None).is_none());
        let how = rule.recognises("MS-SUB", None).unwrap();
        assert!(matches!(rule.verdict(&how, "databricks-abc", ""), Verdict::Approve(_)));
        assert!(matches!(rule.verdict(&how, "evil", ""), Verdict::Violation(_)));
        let hint_only = RequesterRule { subscriptions: vec![], ..rule.clone() };
        assert!(hint_only.validate().unwrap_err().contains("never grant"));
        let off = RequesterRule { approve: false, ..rule };
        assert!(matches!(off.verdict(&how, "databricks-abc", ""), Verdict::Violation(_)));
    }

    #[test]
    fn types_are_validated() {
        let bad = ApprovalSettings { target_types: vec!["x') | union (y".into()], ..ApprovalSettings::default() };
        assert!(validate(&bad).is_err());
        let good = ApprovalSettings {
            target_types: vec!["Microsoft.Storage/storageAccounts".into()],
            target_scopes: vec!["/subscriptions/s/resourceGroups/rg".into()],
            ..ApprovalSettings::default()
        };
        assert!(validate(&good).is_ok());
    }
}
