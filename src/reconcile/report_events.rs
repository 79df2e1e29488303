//! What a reconcile did, as audit events: the one place a [`Report`] becomes the
//! `dns.*`, `approval.*`, `vendor.*` and `endpoint.*` events of the catalog in
//! `effects::audit`. It lives here, above the effects, because it reads the reconcile's
//! report; the audit module below knows events and sinks only.

use serde_json::{Value, json};

use crate::effects::approvals::ApprovalAction;
use crate::effects::audit::{AuditEvent, EventType};
use crate::effects::vendors::sync::VendorIntent;

use super::plan::DnsAction;
use super::report::Report;

/// What a reconcile did, as audit events (nothing for a dry run or a no-op).
pub fn events_for(report: &Report) -> Vec<AuditEvent> {
    if report.dry_run {
        return Vec::new();
    }
    let mut out = Vec::new();
    let ev = |kind: EventType, data: Value| AuditEvent { kind: kind.into(), subject: report.endpoint.clone(), data };
    if report.exists == Some(true)
        && report.provisioning_state.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("failed"))
    {
        out.push(ev(
            EventType::EndpointProvisioningFailed,
            json!({"provisioning_state": report.provisioning_state, "left_in_place": ["dns", "approvals", "vendors"]}),
        ));
    }
    for a in &report.applied {
        let kind = match (&a.error, a.action.split(' ').next()) {
            (Some(_), _) => EventType::DnsWriteFailed,
            (None, Some("delete")) => EventType::DnsRecordRemoved,
            (None, _) => EventType::DnsRecordWritten,
        };
        out.push(ev(kind, json!({"action": a.action, "error": a.error, "target": report.target})));
    }
    for action in &report.plan.actions {
        if let DnsAction::Conflict { key, reason, .. } = action {
            out.push(ev(EventType::DnsConflict, json!({"record": key.label(), "reason": reason})));
        }
    }
    for z in &report.zones {
        use crate::effects::dns::zones::{LinkState, ZoneState};
        let data = |detail: String| json!({"zone": z.id, "replica": z.replica, "detail": detail});
        let kind = match z.state {
            ZoneState::Created => Some(EventType::DnsZoneCreated),
            ZoneState::NotCreated | ZoneState::Failed => Some(EventType::DnsZoneNotCreated),
            ZoneState::Removed => Some(EventType::DnsZoneRemoved),
            _ => None,
        };
        if let Some(kind) = kind {
            out.push(ev(kind, data(z.describe())));
        }
        for l in &z.links {
            let kind = match l.state {
                LinkState::Created => EventType::DnsLinkCreated,
                LinkState::Failed => EventType::DnsLinkFailed,
                _ => continue,
            };
            out.push(ev(kind, data(format!("link {} -> {}: {}", l.link, l.vnet, l.detail))));
        }
        for w in &z.warnings {
            out.push(ev(EventType::DnsLinkFallsBackToInternet, data(w.clone())));
        }
    }
    for d in &report.approvals {
        let kind = match d.action {
            ApprovalAction::Approved => EventType::ApprovalApproved,
            ApprovalAction::Rejected => EventType::ApprovalRejected,
            ApprovalAction::LeftPending => EventType::ApprovalLeftPending,
            ApprovalAction::Removed => EventType::ApprovalConnectionRemoved,
            ApprovalAction::Failed => EventType::ApprovalFailed,
            _ => continue,
        };
        out.push(ev(kind, json!({"target": d.target, "connection": d.connection, "reason": d.reason})));
    }
    for v in &report.vendors {
        match &v.intent {
            VendorIntent::Unmatched { reason } => {
                out.push(ev(EventType::VendorUnmatched, json!({"vendor": v.vendor, "reason": reason})));
            }
            VendorIntent::Disabled => out.push(ev(
                EventType::VendorDisabled,
                json!({"vendor": v.vendor, "reason": format!("[vendors.{}] is not enabled", v.vendor)}),
            )),
            _ => {}
        }
    }
    if let Some(m) = &report.marks {
        if m.written {
            out.push(ev(EventType::EndpointMarked, json!({"tags": m.tags})));
        }
        if let Some(why) = &m.skipped {
            out.push(ev(EventType::EndpointMarkSkipped, json!({"reason": why})));
        }
        if let Some(step) = m.overdue.as_ref().filter(|_| m.newly_overdue) {
            out.push(ev(EventType::EndpointPendingOverdue, json!({"missing_step": step, "tags": m.tags})));
        }
    }
    out
}
