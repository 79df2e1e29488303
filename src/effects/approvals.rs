//! Approving connections to resources this deployment owns.
//!
//! A private endpoint to an Azure Data Explorer cluster, an Azure Monitor workspace or our
//! own Private Link Service stays Pending until the target's owner approves it. When the
//! target is in `approvals.owned_resources`, we are that owner: list the target's
//! connections, find ours by `properties.privateEndpoint.id` (never build the name), and
//! approve a Pending one that satisfies the policy with `PUT
//! {target}/privateEndpointConnections/{name}`, following a long-running answer (Kusto).
//!
//! A connection that violates the policy is left Pending by default: Rejected is one-way
//! in practice, and a person can still approve a Pending one. `on_violation = "reject"`
//! rejects instead. Every decision carries its reason, for the report and the audit.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::arm::client::Method;
use crate::arm::{ArmClient, ArmError, ArmRequest};
use crate::model::endpoint::{ConnectionStatus, LinkTarget, PrivateEndpoint};
use crate::reconcile::Mode;

/// `[approvals]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalSettings {
    /// Resource ids whose private endpoint connections we approve (ADX clusters, Azure
    /// Monitor workspaces, Private Link Services, any resource with connections).
    pub owned_resources: Vec<String>,
    /// Requester tenants allowed; empty = any. The requester's tenant is the tenant of
    /// the subscription its endpoint lives in (`GET /subscriptions/{id}`); a subscription
    /// this identity cannot read (another tenant, typically) is an unknown tenant, which
    /// is a violation: approving it would trust what we cannot see.
    pub allowed_tenants: Vec<String>,
    /// Requester subscriptions allowed; empty = any.
    pub allowed_subscriptions: Vec<String>,
    /// Virtual network id prefixes the endpoint's subnet must be in; empty = any.
    pub allowed_vnets: Vec<String>,
    /// `*`-glob the endpoint's request message must match; empty = any.
    pub request_message_pattern: String,
    /// `leave_pending` (default) or `reject`.
    pub on_violation: String,
    /// Written into the connection state's description.
    pub description: String,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self {
            owned_resources: Vec::new(),
            allowed_tenants: Vec::new(),
            allowed_subscriptions: Vec::new(),
            allowed_vnets: Vec::new(),
            request_message_pattern: String::new(),
            on_violation: "leave_pending".into(),
            description: "Approved by Private Link Autopilot".into(),
        }
    }
}

/// What was decided for one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalDecision {
    pub target: String,
    pub connection: String,
    pub action: ApprovalAction,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalAction {
    Approved,
    Rejected,
    LeftPending,
    /// Already in the state we would set (or decided by a person: Rejected/Disconnected).
    Unchanged,
    /// Dry run: what would have been written.
    WouldApprove,
    WouldReject,
    /// The endpoint is gone; its leftover connection on our target was removed.
    Removed,
    WouldRemove,
}

/// The API version to use for a target's connections (they differ per provider).
fn api_version(target: &str) -> &'static str {
    let t = target.to_ascii_lowercase();
    if t.contains("/providers/microsoft.kusto/") {
        "2025-02-14"
    } else if t.contains("/providers/microsoft.monitor/") {
        "2023-04-03"
    } else if t.contains("/providers/microsoft.network/") {
        "2025-07-01"
    } else {
        // Most RPs accept a recent version for this subresource; unknown types are rare.
        "2024-04-01"
    }
}

pub use crate::catalog::glob_match_ci as glob_match;

impl ApprovalSettings {
    pub fn owns(&self, target: &str) -> bool {
        self.owned_resources.iter().any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(target))
    }

    /// `None` when the endpoint may be approved, else why not. `tenant` is the requester's
    /// tenant as looked up (`Err` = why it could not be), when `allowed_tenants` is set.
    pub fn violation(
        &self,
        pe: &PrivateEndpoint,
        request_message: &str,
        tenant: Option<&Result<String, String>>,
    ) -> Option<String> {
        let sub = pe.id.subscription();
        if !self.allowed_tenants.is_empty() {
            match tenant {
                Some(Ok(t)) if self.allowed_tenants.iter().any(|a| a.eq_ignore_ascii_case(t)) => {}
                Some(Ok(t)) => {
                    return Some(format!("tenant {t} (of subscription {sub}) is not in approvals.allowed_tenants"));
                }
                Some(Err(why)) => return Some(format!("unknown tenant: {why}")),
                None => return Some(format!("unknown tenant: the tenant of subscription {sub} was not looked up")),
            }
        }
        if !self.allowed_subscriptions.is_empty()
            && !self.allowed_subscriptions.iter().any(|s| s.eq_ignore_ascii_case(sub))
        {
            return Some(format!("subscription {sub} is not in approvals.allowed_subscriptions"));
        }
        if !self.allowed_vnets.is_empty() {
            let subnet = pe.subnet_id.as_deref().unwrap_or_default().to_ascii_lowercase();
            if !self
                .allowed_vnets
                .iter()
                .any(|v| subnet.starts_with(&format!("{}/", v.to_ascii_lowercase().trim_end_matches('/'))))
            {
                return Some(format!("subnet {subnet} is not in approvals.allowed_vnets"));
            }
        }
        if !self.request_message_pattern.is_empty() && !glob_match(&self.request_message_pattern, request_message) {
            return Some(format!(
                "request message {request_message:?} does not match approvals.request_message_pattern {:?}",
                self.request_message_pattern
            ));
        }
        None
    }
}

/// Approves (or leaves, or rejects) the endpoint's connections to owned targets.
pub async fn approve_owned(
    arm: &ArmClient,
    settings: &ApprovalSettings,
    pe: &PrivateEndpoint,
    mode: Mode,
) -> Result<Vec<ApprovalDecision>, ArmError> {
    let mut out = Vec::new();
    for link in &pe.connections {
        let LinkTarget::Resource(target) = &link.target else { continue };
        if !settings.owns(target.as_str()) {
            continue;
        }
        let api = api_version(target.as_str());
        let list = arm.list_all(&format!("{}/privateEndpointConnections", target.as_str()), api).await?;
        let ours = list.iter().find(|c| {
            c.pointer("/properties/privateEndpoint/id")
                .and_then(Value::as_str)
                .is_some_and(|id| id.eq_ignore_ascii_case(pe.id.as_str()))
        });
        let Some(conn) = ours else {
            // The target has not registered the connection yet (or it was removed).
            out.push(ApprovalDecision {
                target: target.to_string(),
                connection: String::new(),
                action: ApprovalAction::Unchanged,
                reason: "no connection for this endpoint on the target yet".into(),
            });
            continue;
        };
        let name = conn["name"].as_str().unwrap_or_default().to_owned();
        let status = ConnectionStatus::parse(
            conn.pointer("/properties/privateLinkServiceConnectionState/status")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        let decision = |action, reason: String| ApprovalDecision {
            target: target.to_string(),
            connection: name.clone(),
            action,
            reason,
        };
        if status != ConnectionStatus::Pending {
            out.push(decision(ApprovalAction::Unchanged, format!("connection is {}", status.as_str())));
            continue;
        }
        let tenant =
            if settings.allowed_tenants.is_empty() { None } else { Some(tenant_of(arm, pe.id.subscription()).await?) };
        let (new_status, action, reason) = match settings.violation(pe, &link.request_message, tenant.as_ref()) {
            None => ("Approved", ApprovalAction::Approved, "policy satisfied".to_owned()),
            Some(why) if settings.on_violation == "reject" => ("Rejected", ApprovalAction::Rejected, why),
            Some(why) => {
                out.push(decision(ApprovalAction::LeftPending, why));
                continue;
            }
        };
        if mode == Mode::DryRun {
            let would = if action == ApprovalAction::Approved {
                ApprovalAction::WouldApprove
            } else {
                ApprovalAction::WouldReject
            };
            out.push(decision(would, reason));
            continue;
        }
        let description =
            if new_status == "Approved" { settings.description.clone() } else { format!("Rejected: {reason}") };
        let body = json!({"properties": {"privateLinkServiceConnectionState": {
            "status": new_status, "description": description, "actionsRequired": "None"
        }}});
        let path = format!("{}/privateEndpointConnections/{name}", target.as_str());
        arm.send_and_wait(ArmRequest::new(Method::Put, path, api).body(body)).await?;
        tracing::info!(endpoint = %pe.id, target = %target, connection = %name, status = new_status, %reason, "connection decided");
        out.push(decision(action, reason));
    }
    Ok(out)
}

pub const SUBSCRIPTIONS_API: &str = "2022-12-01";

/// Subscription -> tenant, per ARM endpoint (a tenant never changes for a subscription,
/// so a burst of approvals reads each subscription once per process).
static TENANTS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, String>>> =
    std::sync::OnceLock::new();

/// The tenant of `subscription`: `Ok(Ok(tenant))`, `Ok(Err(why))` when this identity may
/// not read it (403/404: another tenant's subscription), `Err` for transient trouble.
pub async fn tenant_of(arm: &ArmClient, subscription: &str) -> Result<Result<String, String>, ArmError> {
    let key = format!("{}|{}", arm.base_url(), subscription.to_ascii_lowercase());
    let cache = TENANTS.get_or_init(Default::default);
    if let Some(t) = cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key) {
        return Ok(Ok(t.clone()));
    }
    match arm.send(ArmRequest::get(format!("/subscriptions/{subscription}"), SUBSCRIPTIONS_API)).await {
        Ok(r) => match r.body["tenantId"].as_str() {
            Some(t) => {
                cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, t.to_owned());
                Ok(Ok(t.to_owned()))
            }
            None => Ok(Err(format!("subscription {subscription} has no tenantId in ARM's answer"))),
        },
        Err(e) if matches!(e.status(), Some(401 | 403 | 404)) => {
            Ok(Err(format!("the tenant of subscription {subscription} could not be read ({e})")))
        }
        Err(e) => Err(e),
    }
}

/// After an endpoint is deleted: removes its leftover connection from every owned
/// target. Whether Azure drops the target-side connection itself or leaves it
/// `Disconnected` differs by provider and is unconfirmed, so we look: nothing left is
/// success, anything left that names the deleted endpoint is removed (the portal's
/// "Remove" action, a DELETE; Kusto answers it as a long-running operation).
pub async fn clear_for_deleted(
    arm: &ArmClient,
    settings: &ApprovalSettings,
    pe_id: &crate::model::ResourceId,
    mode: Mode,
) -> Result<Vec<ApprovalDecision>, ArmError> {
    let mut out = Vec::new();
    for target in &settings.owned_resources {
        let target = target.trim_end_matches('/');
        let api = api_version(target);
        let list = match arm.list_all(&format!("{target}/privateEndpointConnections"), api).await {
            Ok(l) => l,
            // The owned resource itself is gone: nothing of ours can be left on it.
            Err(e) if e.status() == Some(404) => continue,
            Err(e) => return Err(e),
        };
        for conn in list.iter().filter(|c| {
            c.pointer("/properties/privateEndpoint/id")
                .and_then(Value::as_str)
                .is_some_and(|id| id.eq_ignore_ascii_case(pe_id.as_str()))
        }) {
            let name = conn["name"].as_str().unwrap_or_default().to_owned();
            let status = conn
                .pointer("/properties/privateLinkServiceConnectionState/status")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let reason = format!("the endpoint was deleted; its connection was left {status}");
            let action = if mode == Mode::DryRun {
                ApprovalAction::WouldRemove
            } else {
                let path = format!("{target}/privateEndpointConnections/{name}");
                match arm.send_and_wait(ArmRequest::new(Method::Delete, path, api)).await {
                    Ok(_) => {}
                    Err(e) if e.status() == Some(404) => {}
                    Err(e) => return Err(e),
                }
                tracing::info!(endpoint = %pe_id, target, connection = %name, "leftover connection removed");
                ApprovalAction::Removed
            };
            out.push(ApprovalDecision { target: target.to_owned(), connection: name, action, reason });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("ticket-*", "TICKET-123"));
        assert!(glob_match("*approved by*cab*", "change approved by the CAB"));
        assert!(!glob_match("ticket-*", "no ticket"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("a*b", "ac"));
    }
}
