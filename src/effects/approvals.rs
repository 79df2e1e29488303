//! Approving connections to resources this deployment owns.
//!
//! A private endpoint to an Azure Data Explorer cluster, an Azure Monitor workspace or our
//! own Private Link Service stays Pending until the target's owner approves it. When the
//! target is in `approvals.owned_resources`, we are that owner: list the target's
//! connections, find ours by `properties.privateEndpoint.id` (never build the name), and
//! approve a Pending one that satisfies the policy with `PUT
//! {target}/privateEndpointConnections/{name}`, following a long-running answer (Kusto).
//!
//! **Fail closed.** Approving is the one control the target's owner has, so an empty
//! policy approves nothing: with no requester restriction (`allowed_tenants`,
//! `allowed_subscriptions`, `allowed_vnets` all empty) connections stay Pending with a
//! reason that says no policy is configured, unless `allow_any = true` says explicitly
//! that any requester in the subscriptions we hear from may be approved. The request
//! message is written by the requester, so `request_message_pattern` is only an extra
//! narrowing condition, never a reason to approve and never a policy on its own.
//!
//! A connection that violates the policy is left Pending by default: Rejected is one-way
//! in practice, and a person can still approve a Pending one. `on_violation = "reject"`
//! rejects instead (a missing policy is never a reason to reject). Every decision carries
//! its reason, for the report and the audit, and the description written into an
//! approved connection names the product and the rule that approved it.
//!
//! **api-versions.** Each provider serves `privateEndpointConnections` at its own
//! versions. Kusto (2025-02-14) and Network (2025-07-01) are pinned to the versions the
//! conformance audit checked; every other type asks the provider registration through
//! [`crate::arm::providers`], with a spec-derived fallback. The PUT body carries `status`
//! and `description` only: Kusto marks `actionsRequired` read-only and Storage spells it
//! `actionRequired`, so leaving it out is right for every provider.
//!
//! **Azure Monitor workspaces** (`Microsoft.Monitor/accounts`) have no
//! `privateEndpointConnections` sub-resource in any published spec version (stable
//! 2023-04-03 `monitoringAccounts_API.json`, previews 2025-05-03 and 2025-10-03
//! `azuremonitorworkspace.json` under `specification/monitor/resource-manager/Microsoft.Monitor/Accounts/`
//! define only the account and a read-only embedded `properties.privateEndpointConnections[]`).
//! No call is made for them: the decision is "approve it in the Azure portal", reported
//! and audited like any connection left Pending.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::arm::client::Method;
use crate::arm::endpoints::NETWORK_API;
use crate::arm::providers::{self, TypeOf};
use crate::arm::{ArmClient, ArmError, ArmRequest};
use crate::model::Mode;
use crate::model::endpoint::{ConnectionStatus, LinkConnection, LinkTarget, PrivateEndpoint};

/// `[approvals]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalSettings {
    /// Resource ids whose private endpoint connections we approve (ADX clusters, Azure
    /// Monitor workspaces, Private Link Services, any resource with connections).
    pub owned_resources: Vec<String>,
    /// Requester tenants allowed. The requester's tenant is the tenant of the subscription
    /// its endpoint lives in (`GET /subscriptions/{id}`); a subscription this identity
    /// cannot read (another tenant, typically) is an unknown tenant, which is a violation:
    /// approving it would trust what we cannot see.
    pub allowed_tenants: Vec<String>,
    /// Requester subscriptions allowed.
    pub allowed_subscriptions: Vec<String>,
    /// Virtual network id prefixes the endpoint's subnet must be in.
    pub allowed_vnets: Vec<String>,
    /// Approve any requester when none of the three lists above is set. Without it (the
    /// default) an empty policy approves nothing.
    pub allow_any: bool,
    /// `*`-glob the endpoint's request message must *also* match; empty = no condition.
    /// The requester writes the message: it narrows, it never approves by itself.
    pub request_message_pattern: String,
    /// `leave_pending` (default) or `reject`.
    pub on_violation: String,
    /// The start of the description written into an approved connection; the policy
    /// rule that approved it is appended.
    pub description: String,
    /// Target side (`effects::target_approvals`): where owned resources are found by a
    /// periodic Resource Graph query, as subscription ids or resource-group ids
    /// (`/subscriptions/{id}/resourceGroups/{rg}`); empty = the target-side scan is off.
    pub target_scopes: Vec<String>,
    /// Target side: the owned resource types scanned, e.g. `Microsoft.Storage/storageAccounts`.
    pub target_types: Vec<String>,
    /// Target side: named requester rules (`[[approvals.requesters]]`), tried before the
    /// requester lists above; the rule's name goes into the approval's description.
    pub requesters: Vec<RequesterRule>,
}

/// `[[approvals.requesters]]`: one requester (a service, a partner) the operator knows.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RequesterRule {
    /// Goes into the approval's description and the audit (e.g. `databricks-ncc`).
    pub name: String,
    /// Subscriptions the requester's endpoints live in (authoritative: ARM sets the id).
    #[serde(default)]
    pub subscriptions: Vec<String>,
    /// Tenants of those subscriptions (only usable when our identity may read them).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// `*`-glob the endpoint's *name* must also match: a hint, it only narrows.
    #[serde(default)]
    pub endpoint_name_pattern: String,
    /// `*`-glob the connection's description (the request message) must also match: a
    /// hint, it only narrows.
    #[serde(default)]
    pub description_pattern: String,
    /// `false`: recognise (for the expiry warning) but leave approval to a person.
    #[serde(default = "yes")]
    pub approve: bool,
    /// The requester gives up on a connection this long after creating it (Databricks
    /// NCC: 14 days = 1209600); 0 = never.
    #[serde(default)]
    pub expires_after_secs: u64,
    /// How long before that the warning goes out (default 3 days).
    #[serde(default = "default_warn_before")]
    pub warn_before_secs: u64,
}

fn yes() -> bool {
    true
}

fn default_warn_before() -> u64 {
    3 * 24 * 3600
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self {
            owned_resources: Vec::new(),
            allowed_tenants: Vec::new(),
            allowed_subscriptions: Vec::new(),
            allowed_vnets: Vec::new(),
            allow_any: false,
            request_message_pattern: String::new(),
            on_violation: "leave_pending".into(),
            description: PRODUCT_APPROVAL.into(),
            target_scopes: Vec::new(),
            target_types: Vec::new(),
            requesters: Vec::new(),
        }
    }
}

/// How an approval description starts when `description` is empty.
pub const PRODUCT_APPROVAL: &str = "Approved by Private Link Autopilot";

/// The longest description we write. No spec publishes one limit for every provider's
/// `privateLinkServiceConnectionState.description`; 140 characters is the limit Azure
/// puts on the other half of the same exchange (Network's `requestMessage`, maxLength
/// 140), short enough for every provider and the portal's column.
pub const DESCRIPTION_LIMIT: usize = 140;

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
    /// Not approved (policy, no policy, or a person must do it: the reason says which).
    LeftPending,
    /// Already in the state we would set (or decided by a person: Rejected/Disconnected).
    Unchanged,
    /// Dry run: what would have been written.
    WouldApprove,
    WouldReject,
    /// The endpoint is gone; its leftover connection on our target was removed.
    Removed,
    WouldRemove,
    /// This target could not be checked or cleaned (the reason says why). Reported per
    /// target; it never fails the work for other targets.
    Failed,
}

/// The policy's answer for one requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Approve; the rule that matched, e.g. `policy allowed_subscriptions matched <sub>`.
    Approve(String),
    /// The requester is outside the policy: left Pending, or rejected when configured.
    Violation(String),
    /// No policy is configured: always left Pending, never rejected.
    NoPolicy(String),
}

/// Who asks for a connection, as far as we can know it.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// `properties.privateEndpoint.id` (ARM sets it: the endpoint really is there).
    pub endpoint_id: &'a str,
    /// The endpoint's subscription (authoritative, from the id).
    pub subscription: &'a str,
    /// The endpoint's subnet, when we could read the endpoint.
    pub subnet: Option<&'a str>,
    /// What the requester wrote: it only ever narrows.
    pub request_message: &'a str,
    /// Found by the target-side scan rather than through an endpoint in our scope:
    /// `allow_any` does not reach it.
    pub found_on_target: bool,
}

pub use crate::catalog::glob_match_ci as glob_match;

/// Which API a target's connections are managed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetKind {
    Kusto,
    Network,
    /// `Microsoft.Monitor/accounts`: no API in any spec version; the Azure portal.
    MonitorWorkspace,
    Generic,
}

fn kind_of(target: &str) -> TargetKind {
    let t = target.to_ascii_lowercase();
    if t.contains("/providers/microsoft.kusto/") {
        TargetKind::Kusto
    } else if t.contains("/providers/microsoft.monitor/accounts/") {
        TargetKind::MonitorWorkspace
    } else if t.contains("/providers/microsoft.network/") {
        TargetKind::Network
    } else {
        TargetKind::Generic
    }
}

/// The api-version for a target's `privateEndpointConnections`.
pub async fn connections_api(arm: &ArmClient, target: &str) -> Result<String, ArmError> {
    match kind_of(target) {
        // Checked against the specs by the conformance audit (Kusto `PrivateEndpointConnection.tsp`
        // stable/2025-02-14; Network 2025-07-01 PLS connection examples).
        TargetKind::Kusto => Ok("2025-02-14".into()),
        TargetKind::Network => Ok(NETWORK_API.into()),
        TargetKind::MonitorWorkspace | TargetKind::Generic => {
            providers::child_api_version(arm, target, "privateEndpointConnections").await.map(|v| v.version)
        }
    }
}

/// Cuts `text` to [`DESCRIPTION_LIMIT`] characters (on a character boundary).
pub fn truncate_description(text: &str) -> String {
    if text.chars().count() <= DESCRIPTION_LIMIT {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(DESCRIPTION_LIMIT - 3).collect();
    out.push_str("...");
    out
}

const NO_POLICY: &str = "no approval policy is configured (approvals.allowed_tenants, allowed_subscriptions and \
                         allowed_vnets are empty): set one, or approvals.allow_any = true to approve any requester";

impl ApprovalSettings {
    pub fn owns(&self, target: &str) -> bool {
        self.owned_resources.iter().any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(target))
    }

    /// Whether any requester restriction (tenant, subscription, VNet) is set.
    pub fn restricts_requesters(&self) -> bool {
        !(self.allowed_tenants.is_empty() && self.allowed_subscriptions.is_empty() && self.allowed_vnets.is_empty())
    }

    /// Checks the section: `Err` for settings that cannot work, `Ok(warnings)` for ones
    /// that work but probably not as intended (config loading logs them).
    pub fn validate(&self) -> Result<Vec<String>, String> {
        if !matches!(self.on_violation.as_str(), "leave_pending" | "reject") {
            return Err("approvals.on_violation must be `leave_pending` or `reject`".into());
        }
        for id in &self.owned_resources {
            if TypeOf::parse(id).is_none() {
                return Err(format!(
                    "approvals.owned_resources: `{id}` is not a resource id \
                     (/subscriptions/{{id}}/resourceGroups/{{rg}}/providers/{{namespace}}/{{type}}/{{name}})"
                ));
            }
        }
        let mut warnings = Vec::new();
        if self.owned_resources.is_empty() {
            return Ok(warnings);
        }
        if !self.restricts_requesters() && !self.allow_any {
            warnings.push(format!("approvals.owned_resources is set but {NO_POLICY}; nothing will be approved"));
            if !self.request_message_pattern.is_empty() {
                warnings.push(
                    "approvals.request_message_pattern is written by the requester: it narrows a policy, it is not one"
                        .into(),
                );
            }
        }
        if self.allow_any && !self.restricts_requesters() {
            warnings.push(
                "approvals.allow_any = true: every requester in the subscriptions we receive events from is approved"
                    .into(),
            );
        }
        if self.owned_resources.iter().any(|o| kind_of(o) == TargetKind::MonitorWorkspace) {
            warnings.push(
                "approvals.owned_resources lists an Azure Monitor workspace: its connections have no API, \
                 they are reported for approval in the Azure portal"
                    .into(),
            );
        }
        Ok(warnings)
    }

    /// The policy's verdict. `tenant` is the requester's tenant as looked up (`Err` = why
    /// it could not be), when `allowed_tenants` is set.
    pub fn evaluate(
        &self,
        pe: &PrivateEndpoint,
        request_message: &str,
        tenant: Option<&Result<String, String>>,
    ) -> Verdict {
        let requester = Requester {
            endpoint_id: pe.id.as_str(),
            subscription: pe.id.subscription(),
            subnet: Some(pe.subnet_id.as_deref().unwrap_or_default()),
            request_message,
            found_on_target: false,
        };
        self.evaluate_requester(&requester, tenant)
    }

    /// The policy's verdict for any requester: an endpoint we read (events, sweep) or one
    /// only the target's connection names (another tenant's, a Microsoft-managed one).
    pub fn evaluate_requester(&self, r: &Requester<'_>, tenant: Option<&Result<String, String>>) -> Verdict {
        if !self.restricts_requesters() && (!self.allow_any || r.found_on_target) {
            if self.allow_any {
                return Verdict::NoPolicy(
                    "approvals.allow_any covers endpoints in the subscriptions we hear from, not connections found \
                     on the target side (any requester in any tenant): name them in [[approvals.requesters]] or \
                     approvals.allowed_tenants / allowed_subscriptions"
                        .into(),
                );
            }
            return Verdict::NoPolicy(NO_POLICY.into());
        }
        let sub = r.subscription;
        let mut matched = Vec::new();
        if !self.allowed_tenants.is_empty() {
            match tenant {
                Some(Ok(t)) if self.allowed_tenants.iter().any(|a| a.eq_ignore_ascii_case(t)) => {
                    matched.push(format!("allowed_tenants matched {t}"));
                }
                Some(Ok(t)) => {
                    return Verdict::Violation(format!(
                        "tenant {t} (of subscription {sub}) is not in approvals.allowed_tenants"
                    ));
                }
                Some(Err(why)) => return Verdict::Violation(format!("unknown tenant: {why}")),
                None => {
                    return Verdict::Violation(format!(
                        "unknown tenant: the tenant of subscription {sub} was not looked up"
                    ));
                }
            }
        }
        if !self.allowed_subscriptions.is_empty() {
            if !self.allowed_subscriptions.iter().any(|s| s.eq_ignore_ascii_case(sub)) {
                return Verdict::Violation(format!("subscription {sub} is not in approvals.allowed_subscriptions"));
            }
            matched.push(format!("allowed_subscriptions matched {sub}"));
        }
        if !self.allowed_vnets.is_empty() {
            let Some(subnet) = r.subnet else {
                return Verdict::Violation(format!(
                    "the subnet of endpoint {} cannot be read, so approvals.allowed_vnets cannot be checked",
                    r.endpoint_id
                ));
            };
            let subnet = subnet.to_ascii_lowercase();
            let vnet = self
                .allowed_vnets
                .iter()
                .find(|v| subnet.starts_with(&format!("{}/", v.to_ascii_lowercase().trim_end_matches('/'))));
            match vnet {
                Some(v) => matched.push(format!("allowed_vnets matched {}", v.trim_end_matches('/'))),
                None => return Verdict::Violation(format!("subnet {subnet} is not in approvals.allowed_vnets")),
            }
        }
        // Requester-controlled: it can only take an approval away.
        if !self.request_message_pattern.is_empty() && !glob_match(&self.request_message_pattern, r.request_message) {
            return Verdict::Violation(format!(
                "request message {:?} does not match approvals.request_message_pattern {:?}",
                r.request_message, self.request_message_pattern
            ));
        }
        if matched.is_empty() {
            matched.push("allow_any (any requester)".into());
        }
        Verdict::Approve(format!("policy {}", matched.join(", ")))
    }

    /// `None` when the endpoint may be approved, else why not (a missing policy included).
    pub fn violation(
        &self,
        pe: &PrivateEndpoint,
        request_message: &str,
        tenant: Option<&Result<String, String>>,
    ) -> Option<String> {
        match self.evaluate(pe, request_message, tenant) {
            Verdict::Approve(_) => None,
            Verdict::Violation(why) | Verdict::NoPolicy(why) => Some(why),
        }
    }

    /// The description written into a connection we approve: the product, then the rule.
    pub fn approval_description(&self, rule: &str) -> String {
        let start = if self.description.trim().is_empty() { PRODUCT_APPROVAL } else { self.description.trim() };
        truncate_description(&format!("{start}: {rule}"))
    }

    /// The policy's verdict for `pe`, looking the requester's tenant up when needed.
    async fn verdict(&self, arm: &ArmClient, pe: &PrivateEndpoint, link: &LinkConnection) -> Result<Verdict, ArmError> {
        let tenant =
            if self.allowed_tenants.is_empty() { None } else { Some(tenant_of(arm, pe.id.subscription()).await?) };
        Ok(self.evaluate(pe, &link.request_message, tenant.as_ref()))
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
        let decision = |connection: &str, action, reason: String| ApprovalDecision {
            target: target.to_string(),
            connection: connection.to_owned(),
            action,
            reason,
        };
        if kind_of(target.as_str()) == TargetKind::MonitorWorkspace {
            out.push(in_the_portal(arm, settings, pe, link, target.as_str()).await?);
            continue;
        }
        let api = match connections_api(arm, target.as_str()).await {
            Ok(api) => api,
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                out.push(decision("", ApprovalAction::LeftPending, format!("no api-version for this target: {e}")));
                continue;
            }
        };
        let list = arm.list_all(&format!("{}/privateEndpointConnections", target.as_str()), &api).await?;
        let ours = list.iter().find(|c| {
            c.pointer("/properties/privateEndpoint/id")
                .and_then(Value::as_str)
                .is_some_and(|id| id.eq_ignore_ascii_case(pe.id.as_str()))
        });
        let Some(conn) = ours else {
            // The target has not registered the connection yet (or it was removed).
            out.push(decision(
                "",
                ApprovalAction::Unchanged,
                "no connection for this endpoint on the target yet".into(),
            ));
            continue;
        };
        let name = conn["name"].as_str().unwrap_or_default().to_owned();
        let status = ConnectionStatus::parse(
            conn.pointer("/properties/privateLinkServiceConnectionState/status")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        if status != ConnectionStatus::Pending {
            out.push(decision(&name, ApprovalAction::Unchanged, format!("connection is {}", status.as_str())));
            continue;
        }
        let verdict = settings.verdict(arm, pe, link).await?;
        let done =
            decide(arm, settings, Decide { target: target.as_str(), api: &api, name: &name, verdict, mode }).await?;
        if matches!(done.action, ApprovalAction::Approved | ApprovalAction::Rejected) {
            tracing::info!(endpoint = %pe.id, target = %target, connection = %name, reason = %done.reason, "connection decided");
        }
        out.push(done);
    }
    Ok(out)
}

/// One Pending connection and the policy's verdict on it.
pub struct Decide<'a> {
    pub target: &'a str,
    /// The target type's `privateEndpointConnections` api-version ([`connections_api`]).
    pub api: &'a str,
    /// The connection's name, as the target lists it.
    pub name: &'a str,
    pub verdict: Verdict,
    pub mode: Mode,
}

/// Carries out a verdict on a connection the caller has just read as Pending: the one
/// place a connection is approved or rejected, for the endpoint-side reconcile and the
/// target-side scan alike. Writes `status` and `description` only (`actionsRequired` is
/// read-only for Kusto and misnamed for Storage: no provider needs it to approve).
pub async fn decide(arm: &ArmClient, settings: &ApprovalSettings, d: Decide<'_>) -> Result<ApprovalDecision, ArmError> {
    let decision = |action, reason: String| ApprovalDecision {
        target: d.target.to_owned(),
        connection: d.name.to_owned(),
        action,
        reason,
    };
    let (new_status, action, reason, description) = match d.verdict {
        Verdict::Approve(rule) => {
            let description = settings.approval_description(&rule);
            ("Approved", ApprovalAction::Approved, rule, description)
        }
        Verdict::Violation(why) if settings.on_violation == "reject" => {
            let description = truncate_description(&format!("Rejected by Private Link Autopilot: {why}"));
            ("Rejected", ApprovalAction::Rejected, why, description)
        }
        Verdict::Violation(why) | Verdict::NoPolicy(why) => return Ok(decision(ApprovalAction::LeftPending, why)),
    };
    if d.mode == Mode::DryRun {
        let would =
            if action == ApprovalAction::Approved { ApprovalAction::WouldApprove } else { ApprovalAction::WouldReject };
        return Ok(decision(would, reason));
    }
    let body = json!({"properties": {"privateLinkServiceConnectionState": {
        "status": new_status, "description": description
    }}});
    let path = format!("{}/privateEndpointConnections/{}", d.target, d.name);
    arm.send_and_wait(ArmRequest::new(Method::Put, path, d.api).body(body)).await?;
    Ok(decision(action, reason))
}

/// An Azure Monitor workspace connection: no API call, the endpoint's own view of the
/// connection decides whether a person has something to do in the portal.
async fn in_the_portal(
    arm: &ArmClient,
    settings: &ApprovalSettings,
    pe: &PrivateEndpoint,
    link: &LinkConnection,
    target: &str,
) -> Result<ApprovalDecision, ArmError> {
    let decision = |action, reason: String| ApprovalDecision {
        target: target.to_owned(),
        connection: String::new(),
        action,
        reason,
    };
    if link.status != ConnectionStatus::Pending {
        return Ok(decision(ApprovalAction::Unchanged, format!("connection is {}", link.status.as_str())));
    }
    const WHY: &str = "Azure Monitor workspaces have no privateEndpointConnections API in any published spec version";
    let reason = match settings.verdict(arm, pe, link).await? {
        Verdict::Approve(rule) => format!("approve it in the Azure portal ({WHY}); {rule}"),
        Verdict::Violation(why) | Verdict::NoPolicy(why) => {
            format!("left Pending: {why} (approvals for this target happen in the Azure portal: {WHY})")
        }
    };
    Ok(decision(ApprovalAction::LeftPending, reason))
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
///
/// **Only for an endpoint ARM answered 404 for.** Removing the connection of a live
/// endpoint disconnects it for good (it must be recreated), so the caller guarantees the
/// endpoint is gone (a `Failed` provisioning state is *not* gone). As a second line of
/// defence, before the first removal this re-reads the endpoint and removes nothing while
/// it still exists; and only connections whose `properties.privateEndpoint.id` is the
/// deleted endpoint's id are touched.
///
/// Each owned target is handled on its own: one that cannot be read (no api-version, 403,
/// 400, throttled past the retries) is reported as [`ApprovalAction::Failed`] and never
/// fails the clean-up of the others, so the result is always `Ok`. Azure Monitor
/// workspaces are skipped: they have no connection API.
pub async fn clear_for_deleted(
    arm: &ArmClient,
    settings: &ApprovalSettings,
    pe_id: &crate::model::ResourceId,
    mode: Mode,
) -> Result<Vec<ApprovalDecision>, ArmError> {
    let mut out = Vec::new();
    // Whether the endpoint is confirmed gone (read once, on the first leftover).
    let mut gone: Option<Result<bool, String>> = None;
    for target in &settings.owned_resources {
        let target = target.trim_end_matches('/');
        let failed = |reason: String| {
            tracing::warn!(endpoint = %pe_id, target, %reason, "owned target not cleaned");
            ApprovalDecision {
                target: target.to_owned(),
                connection: String::new(),
                action: ApprovalAction::Failed,
                reason,
            }
        };
        if kind_of(target) == TargetKind::MonitorWorkspace {
            continue;
        }
        let api = match connections_api(arm, target).await {
            Ok(api) => api,
            Err(e) => {
                out.push(failed(format!("could not choose an api-version to look for a leftover connection: {e}")));
                continue;
            }
        };
        let list = match arm.list_all(&format!("{target}/privateEndpointConnections"), &api).await {
            Ok(l) => l,
            // The owned resource itself is gone: nothing of ours can be left on it.
            Err(e) if e.status() == Some(404) => continue,
            Err(e) => {
                out.push(failed(format!("could not list its connections: {e}")));
                continue;
            }
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
            if gone.is_none() {
                gone = Some(endpoint_is_gone(arm, pe_id).await);
            }
            match gone.as_ref() {
                Some(Ok(true)) => {}
                Some(Ok(false)) => {
                    out.push(ApprovalDecision {
                        target: target.to_owned(),
                        connection: name,
                        action: ApprovalAction::Unchanged,
                        reason: format!(
                            "the endpoint still exists: its {status} connection is kept (removed only once ARM answers 404)"
                        ),
                    });
                    continue;
                }
                _ => {
                    let why = gone.as_ref().and_then(|g| g.as_ref().err()).cloned().unwrap_or_default();
                    out.push(failed(format!("could not confirm the endpoint is gone: {why}")));
                    continue;
                }
            }
            let reason = format!("the endpoint was deleted; its connection was left {status}");
            let action = if mode == Mode::DryRun {
                ApprovalAction::WouldRemove
            } else {
                let path = format!("{target}/privateEndpointConnections/{name}");
                match arm.send_and_wait(ArmRequest::new(Method::Delete, path, &api)).await {
                    Ok(_) => {}
                    Err(e) if e.status() == Some(404) => {}
                    Err(e) => {
                        out.push(failed(format!("could not remove connection {name}: {e}")));
                        continue;
                    }
                }
                tracing::info!(endpoint = %pe_id, target, connection = %name, "leftover connection removed");
                ApprovalAction::Removed
            };
            out.push(ApprovalDecision { target: target.to_owned(), connection: name, action, reason });
        }
    }
    Ok(out)
}

/// `Ok(true)` when ARM answers 404 for the endpoint, `Ok(false)` when it exists.
async fn endpoint_is_gone(arm: &ArmClient, pe_id: &crate::model::ResourceId) -> Result<bool, String> {
    match arm.send(ArmRequest::get(pe_id.as_str(), NETWORK_API)).await {
        Ok(_) => Ok(false),
        Err(e) if e.status() == Some(404) => Ok(true),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("ticket-*", "TICKET-123"));
        assert!(glob_match("*approved by*cab*", "change approved by the CAB"));
        assert!(!glob_match("ticket-*", "no ticket"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("a*b", "ac"));
    }

    fn owned() -> ApprovalSettings {
        ApprovalSettings {
            owned_resources: vec!["/subscriptions/s/resourceGroups/rg/providers/Microsoft.Kusto/clusters/c".into()],
            ..ApprovalSettings::default()
        }
    }

    #[test]
    fn validate_warns_when_owned_resources_have_no_policy() {
        let w = owned().validate().unwrap();
        assert!(w.iter().any(|w| w.contains("no approval policy") && w.contains("allow_any")), "{w:?}");
        let pattern_only = ApprovalSettings { request_message_pattern: "CHG-*".into(), ..owned() };
        let w = pattern_only.validate().unwrap();
        assert!(w.iter().any(|w| w.contains("not one")), "a pattern is not a policy: {w:?}");
        let any = ApprovalSettings { allow_any: true, ..owned() };
        assert!(any.validate().unwrap().iter().any(|w| w.contains("allow_any = true")));
        let subs = ApprovalSettings { allowed_subscriptions: vec!["s".into()], ..owned() };
        assert!(subs.validate().unwrap().is_empty());
        assert!(ApprovalSettings::default().validate().unwrap().is_empty(), "nothing owned, nothing to say");
    }

    #[test]
    fn validate_rejects_what_cannot_work() {
        let bad = ApprovalSettings { owned_resources: vec!["adx-cluster".into()], ..ApprovalSettings::default() };
        assert!(bad.validate().unwrap_err().contains("adx-cluster"));
        let bad = ApprovalSettings { on_violation: "delete".into(), ..ApprovalSettings::default() };
        assert!(bad.validate().unwrap_err().contains("on_violation"));
    }

    #[test]
    fn descriptions_name_the_product_and_fit_azure() {
        let s = owned();
        assert_eq!(
            s.approval_description("policy allowed_subscriptions matched s1"),
            "Approved by Private Link Autopilot: policy allowed_subscriptions matched s1"
        );
        let long = s.approval_description(&format!("policy allowed_vnets matched {}", "x".repeat(300)));
        assert_eq!(long.chars().count(), DESCRIPTION_LIMIT);
        assert!(long.starts_with("Approved by Private Link Autopilot: policy allowed_vnets") && long.ends_with("..."));
        assert_eq!(truncate_description(&"é".repeat(200)).chars().count(), DESCRIPTION_LIMIT);
    }

    #[test]
    fn monitor_workspaces_are_recognised() {
        assert_eq!(
            kind_of("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Monitor/accounts/amw"),
            TargetKind::MonitorWorkspace
        );
        assert_eq!(
            kind_of("/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"),
            TargetKind::Generic
        );
    }
}
