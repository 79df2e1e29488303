//! Role-based access control in the fake ARM: least privilege, proven by running it.
//!
//! Why: the product's identity holds only the custom roles `infra/` grants, each at a
//! narrow scope (endpoint reads and tags per subscription, A records per DNS zone,
//! connections per owned resource). A code path that needs one more action, or the same
//! action at a wider scope (listing a resource group's zones while the role sits on each
//! zone: review F5), works against a fake that authorises everything and fails in Azure
//! with 403 `AuthorizationFailed`. With [`Grants`] set in
//! [`super::FakeArmOptions::rbac`], the fake authorises every request the way ARM's front
//! door does, before the resource provider sees it:
//!
//! * each route maps to one ARM action ([`required_action`]): `GET` = `<type>/read`,
//!   `PUT`/`PATCH` = `<type>/write`, `DELETE` = `<type>/delete`, where `<type>` is the
//!   full type path of the URL (`Microsoft.Network/privateDnsZones/A/write` for a record
//!   PUT; `Microsoft.Resources/tags/write` for a Tags API PATCH at any scope;
//!   `Microsoft.Resources/subscriptions/providers/read` for a provider registration);
//! * a collection GET is authorised against the scope in its URL (the parent), an
//!   instance against its own id; an assignment covers its scope and everything below it;
//! * a Resource Graph query needs `Microsoft.ResourceGraph/resources/read` in every
//!   subscription its body names (the fake's model: the service answers only for
//!   subscriptions the caller can read, and a query for none of them is useless);
//! * actions match case-insensitively, `*` in a granted action matches any run of
//!   characters (built-in roles use `Microsoft.Network/*` and `*/read`);
//! * a refusal is 403 `AuthorizationFailed` with ARM's message ("The client '…' with object
//!   id '…' does not have authorization to perform action '…' over scope '…' or the scope is
//!   invalid. If access was recently granted, please refresh your credentials."), and is
//!   recorded ([`super::FakeArm::denials`]) so a test can name the missing action.
//!
//! The grants come from `infra/permissions.json`, which `tests/rbac.rs` regenerates from
//! the Bicep and keeps in sync with it; [`Grants::from_infra`] expands its scope templates
//! with the deployment's parameters, so the fake holds exactly what `azd up` would assign.

use serde_json::Value;

use super::versions::Target;
use super::{Answer, Call};

/// The checked-in grants of `infra/` (see `tests/rbac.rs` for how it is kept in sync).
pub use private_link_autopilot::doctor::required::{INFRA_PERMISSIONS_JSON, InfraParams};

/// The sandbox identity's object (principal) id, named in 403 messages.
pub const SANDBOX_OBJECT_ID: &str = "5a4d3c2b-1e0f-4a9b-8c7d-6e5f4a3b2c1d";

/// One role assignment: the role's actions at one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The role's key in `permissions.json` (e.g. `dnsRecordWriter`).
    pub role: String,
    pub scope: String,
    pub actions: Vec<String>,
}

/// Everything the fake's one principal may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    pub object_id: String,
    pub client_id: String,
    pub assignments: Vec<Assignment>,
}

impl Grants {
    /// Exactly what `infra/` assigns for these parameters.
    pub fn from_infra(params: &InfraParams) -> Self {
        let doc: Value = serde_json::from_str(INFRA_PERMISSIONS_JSON).expect("infra/permissions.json is JSON");
        Self::from_permissions(&doc, params).expect("infra/permissions.json is well-formed")
    }

    /// Expands a `permissions.json` document (`roles` + `assignments`) with `params`.
    pub fn from_permissions(doc: &Value, params: &InfraParams) -> Result<Self, String> {
        let assignments = params
            .expand_permissions(doc)?
            .into_iter()
            .map(|g| Assignment { role: g.role, scope: g.scope, actions: g.actions })
            .collect();
        Ok(Self { object_id: SANDBOX_OBJECT_ID.into(), client_id: SANDBOX_OBJECT_ID.into(), assignments })
    }

    /// The same grants with `action` removed from every role (a test's "what if infra
    /// forgot this one").
    pub fn without_action(&self, action: &str) -> Self {
        let mut g = self.clone();
        for a in &mut g.assignments {
            a.actions.retain(|x| !x.eq_ignore_ascii_case(action));
        }
        g
    }

    /// Whether some assignment at or above `scope` grants `action`.
    pub fn allows(&self, action: &str, scope: &str) -> bool {
        self.assignments.iter().any(|a| covers(&a.scope, scope) && a.actions.iter().any(|p| action_matches(p, action)))
    }

    /// Every distinct granted action, in first-seen order.
    pub fn actions(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for a in self.assignments.iter().flat_map(|a| a.actions.iter()) {
            if !out.iter().any(|x| x.eq_ignore_ascii_case(a)) {
                out.push(a.clone());
            }
        }
        out
    }

    fn refuse(&self, action: &str, scope: &str) -> Answer {
        authorization_failed(&self.client_id, &self.object_id, action, scope)
    }
}

/// ARM's 403 for a principal without `action` at `scope`.
pub(crate) fn authorization_failed(client_id: &str, object_id: &str, action: &str, scope: &str) -> Answer {
    Answer::error(
        403,
        "AuthorizationFailed",
        format!(
            "The client '{client_id}' with object id '{object_id}' does not have authorization to perform action \
             '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh \
             your credentials."
        ),
    )
}

/// A request the fake refused for lack of a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub method: String,
    pub path: String,
    pub action: String,
    pub scope: String,
}

/// Whether an assignment at `assigned` covers `scope` (itself or anything below it).
pub(crate) fn covers(assigned: &str, scope: &str) -> bool {
    let a = assigned.trim_end_matches('/').to_ascii_lowercase();
    let s = scope.to_ascii_lowercase();
    a.is_empty() || s == a || s.starts_with(&format!("{a}/"))
}

use private_link_autopilot::arm::permissions::action_matches;

/// The ARM action a request needs, and the scope it is checked at.
pub fn required_action(method: &axum::http::Method, target: &Target, path: &str) -> (String, String) {
    use axum::http::Method;
    let rt = &target.resource_type;
    if rt.eq_ignore_ascii_case("Microsoft.Resources/tags") {
        // The Tags API at any scope: authorised at the tagged resource.
        let lower = path.to_ascii_lowercase();
        let scope = lower.find("/providers/microsoft.resources/tags").map_or(path, |i| &path[..i]);
        let verb = match *method {
            Method::GET => "read",
            Method::DELETE => "delete",
            _ => "write",
        };
        return (format!("Microsoft.Resources/tags/{verb}"), scope.to_owned());
    }
    if rt.eq_ignore_ascii_case("Microsoft.ResourceGraph/resources") {
        return ("Microsoft.ResourceGraph/resources/read".into(), target.scope.clone());
    }
    let verb = match *method {
        Method::GET | Method::HEAD => "read",
        Method::DELETE => "delete",
        Method::POST => "action",
        _ => "write",
    };
    (format!("{rt}/{verb}"), target.scope.clone())
}

/// Authorises `call`; `Err` is the 403 (and the denial to record).
pub(crate) fn authorize(grants: &Grants, call: &Call<'_>, target: &Target) -> Result<(), Box<(Answer, Denial)>> {
    let (action, scope) = required_action(call.method, target, call.path);
    let scopes: Vec<String> = if target.resource_type.eq_ignore_ascii_case("Microsoft.ResourceGraph/resources") {
        // One check per subscription the query names (a malformed body is the graph
        // route's 400, not ours).
        serde_json::from_slice::<Value>(call.body)
            .ok()
            .and_then(|b| b["subscriptions"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|s| s.as_str().map(|s| format!("/subscriptions/{}", s.trim())))
            .collect()
    } else {
        vec![scope]
    };
    for scope in scopes {
        if !grants.allows(&action, &scope) {
            let denial = Denial {
                method: call.method.to_string(),
                path: call.path.to_owned(),
                action: action.clone(),
                scope: scope.clone(),
            };
            return Err(Box::new((grants.refuse(&action, &scope), denial)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> InfraParams {
        InfraParams {
            subscriptions_in_scope: vec!["s1".into()],
            dns_zone_subscription: "hub".into(),
            dns_zone_resource_group: "dns".into(),
            dns_zone_names: vec!["z1".into()],
            owned_resource_ids: vec!["/subscriptions/k/resourceGroups/rg/providers/Microsoft.Kusto/clusters/c".into()],
            ..InfraParams::default()
        }
    }

    #[test]
    fn globs_and_scopes() {
        assert!(action_matches("Microsoft.Network/*", "microsoft.network/privateendpoints/read"));
        assert!(action_matches("*/read", "Microsoft.Network/privateEndpoints/read"));
        assert!(!action_matches("Microsoft.Network/privateEndpoints/read", "Microsoft.Network/privateEndpoints/write"));
        assert!(covers("/subscriptions/s1", "/subscriptions/S1/resourceGroups/x"));
        assert!(!covers("/subscriptions/s1", "/subscriptions/s10"));
        assert!(!covers("/subscriptions/s/resourceGroups/rg/providers/x/y/z", "/subscriptions/s/resourceGroups/rg"));
    }

    #[test]
    fn infra_grants_expand_per_scope() {
        let g = Grants::from_infra(&params());
        let zone = "/subscriptions/hub/resourceGroups/dns/providers/Microsoft.Network/privateDnsZones/z1";
        assert!(g.allows("Microsoft.Network/privateDnsZones/A/write", &format!("{zone}/A/x")));
        assert!(!g.allows("Microsoft.Network/privateDnsZones/read", "/subscriptions/hub/resourceGroups/dns"));
        assert!(g.allows("Microsoft.Network/privateEndpoints/read", "/subscriptions/s1/resourceGroups/a/providers/p"));
        assert!(g.allows("Microsoft.Kusto/locations/operationresults/read", "/subscriptions/k/providers/x"));
        assert!(
            !g.without_action("Microsoft.Network/privateDnsZones/A/write")
                .allows("Microsoft.Network/privateDnsZones/A/write", &format!("{zone}/A/x"))
        );
    }
}
