//! What the identity must hold, and where: `infra/permissions.json` expanded with the
//! deployment's settings.
//!
//! Why this file and not a list in `doctor`: `permissions.json` is generated from
//! `infra/main.bicep` (`tests/rbac.rs` keeps them in sync) and the fake ARM enforces
//! exactly it, so the grants `doctor` checks are the grants `azd up` assigns and the
//! tests prove sufficient. A feature the configuration turns on (a subscription in
//! `sweep.subscriptions`, a zone in `dns.zones`, an owned resource) brings the grants
//! infra assigns for the parameter that switches it on.

use serde_json::Value;

/// The checked-in grants of `infra/`.
pub const INFRA_PERMISSIONS_JSON: &str = include_str!("../../infra/permissions.json");

/// The deployment parameters that decide where `infra/` assigns its roles.
#[derive(Debug, Clone, Default)]
pub struct InfraParams {
    pub subscriptions_in_scope: Vec<String>,
    pub dns_zone_subscription: String,
    pub dns_zone_resource_group: String,
    pub dns_zone_names: Vec<String>,
    pub owned_resource_ids: Vec<String>,
    /// `createMissingEventSubscriptions` (`coverage.create_missing`).
    pub create_missing_event_subscriptions: bool,
    /// Subscriptions the target-side approval scan covers (`approvalTargetSubscriptions`).
    pub approval_target_subscriptions: Vec<String>,
    /// `dnsZoneManagement = 'create'` (`dns.zone_management`).
    pub dns_zone_management: bool,
}

/// One role infra assigns, at one scope, with its actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredGrant {
    /// The role's key in `permissions.json` (e.g. `dnsRecordWriter`).
    pub role: String,
    pub scope: String,
    pub actions: Vec<String>,
    /// The infra parameter whose items produce this assignment (`dnsZoneNames`...).
    pub parameter: String,
}

impl InfraParams {
    /// Items of a `for_each` collection named in `permissions.json`.
    fn collection(&self, name: &str) -> Result<Vec<String>, String> {
        Ok(match name {
            "subscriptionsInScope" => self.subscriptions_in_scope.clone(),
            // main.bicep: `createMissingEventSubscriptions ? subscriptionsInScope : []`.
            "eventSubscriptionWriterSubscriptions" if self.create_missing_event_subscriptions => {
                self.subscriptions_in_scope.clone()
            }
            "eventSubscriptionWriterSubscriptions" => Vec::new(),
            "dnsZoneNames" => self.dns_zone_names.clone(),
            "ownedResources" | "ownedResourceIds" => self.owned_resource_ids.clone(),
            "approvalTargetSubscriptions" => self.approval_target_subscriptions.clone(),
            // main.bicep: `dnsZoneManagement == 'create' ? [dnsZoneResourceGroup] : []`.
            "dnsZoneManagerResourceGroups" if self.dns_zone_management => vec![self.dns_zone_resource_group.clone()],
            "dnsZoneManagerResourceGroups" => Vec::new(),
            // main.bicep: `... ? union(subscriptionsInScope, [dnsZoneSubscriptionId]) : []`.
            "dnsZoneLinkerSubscriptions" if self.dns_zone_management => {
                let mut subs = self.subscriptions_in_scope.clone();
                if !subs.iter().any(|s| s.eq_ignore_ascii_case(&self.dns_zone_subscription)) {
                    subs.push(self.dns_zone_subscription.clone());
                }
                subs
            }
            "dnsZoneLinkerSubscriptions" => Vec::new(),
            // Subscriptions of the owned Kusto clusters, each once (main.bicep's `kustoSubscriptions`).
            "kustoSubscriptions" => {
                let mut subs: Vec<String> = self
                    .owned_resource_ids
                    .iter()
                    .filter(|id| id.to_ascii_lowercase().contains("/providers/microsoft.kusto/clusters/"))
                    .filter_map(|id| id.split('/').nth(2).map(str::to_ascii_lowercase))
                    .collect();
                subs.sort();
                subs.dedup();
                subs
            }
            other => return Err(format!("permissions.json: unknown collection `{other}`")),
        })
    }

    fn expand(&self, template: &str, item: &str) -> String {
        template
            .replace("{item}", item)
            .replace("{dnsZoneSubscriptionId}", &self.dns_zone_subscription)
            .replace("{dnsZoneResourceGroup}", &self.dns_zone_resource_group)
    }

    /// Every assignment a `permissions.json` document (`roles` + `assignments`) makes
    /// with these parameters.
    pub fn expand_permissions(&self, doc: &Value) -> Result<Vec<RequiredGrant>, String> {
        let roles = doc["roles"].as_object().ok_or("permissions.json: `roles` must be an object")?;
        let mut out = Vec::new();
        for a in doc["assignments"].as_array().ok_or("permissions.json: `assignments` must be an array")? {
            let template = a["scope"].as_str().ok_or("permissions.json: assignment without `scope`")?;
            let parameter = a["for_each"].as_str().unwrap_or_default();
            let items = self.collection(parameter)?;
            for role in a["roles"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                let actions: Vec<String> = roles
                    .get(role)
                    .and_then(|r| r["actions"].as_array())
                    .ok_or_else(|| format!("permissions.json: role `{role}` has no actions"))?
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                for item in &items {
                    out.push(RequiredGrant {
                        role: role.to_owned(),
                        scope: self.expand(template, item),
                        actions: actions.clone(),
                        parameter: parameter.to_owned(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// [`Self::expand_permissions`] on the checked-in `infra/permissions.json`.
    pub fn infra_grants(&self) -> Result<Vec<RequiredGrant>, String> {
        let doc: Value = serde_json::from_str(INFRA_PERMISSIONS_JSON).map_err(|e| format!("permissions.json: {e}"))?;
        self.expand_permissions(&doc)
    }
}

/// What infra would assign for this configuration: one [`InfraParams`] per place the
/// zones live (a zone may name its own subscription and resource group).
pub fn for_config(config: &crate::config::Config) -> Result<Vec<RequiredGrant>, String> {
    let mut by_location: std::collections::BTreeMap<(String, String), Vec<String>> = Default::default();
    for z in config.dns.zones.iter().filter(|z| z.provider == "azure") {
        let or = |a: &str, b: &str| if a.is_empty() { b.to_owned() } else { a.to_owned() };
        let loc = (
            or(&z.subscription, &config.dns.default_subscription),
            or(&z.resource_group, &config.dns.default_resource_group),
        );
        by_location.entry(loc).or_default().push(z.name.clone());
    }
    let base = InfraParams {
        subscriptions_in_scope: config.sweep.subscriptions.clone(),
        owned_resource_ids: config.approvals.owned_resources.clone(),
        create_missing_event_subscriptions: config.coverage.create_missing,
        // Zone management acts in the default place (the hub).
        dns_zone_management: config.dns.zone_management == "create",
        dns_zone_subscription: config.dns.default_subscription.clone(),
        dns_zone_resource_group: config.dns.default_resource_group.clone(),
        ..InfraParams::default()
    };
    let mut out: Vec<RequiredGrant> =
        base.infra_grants()?.into_iter().filter(|g| g.parameter != "dnsZoneNames").collect();
    for ((subscription, resource_group), zones) in by_location {
        let params = InfraParams {
            dns_zone_subscription: subscription,
            dns_zone_resource_group: resource_group,
            dns_zone_names: zones,
            ..InfraParams::default()
        };
        out.extend(params.infra_grants()?.into_iter().filter(|g| g.parameter == "dnsZoneNames"));
    }
    Ok(out)
}

/// The role's display name as `main.bicep` creates it.
pub fn role_display_name(role: &str) -> String {
    let what = match role {
        "endpointReader" => "endpoint reader",
        "endpointTagger" => "endpoint tagger",
        "dnsRecordWriter" => "DNS A record writer",
        "connectionApprover" => "connection approver",
        "kustoOperationReader" => "Kusto operation reader",
        "eventSubscriptionWriter" => "event subscription writer",
        "dnsZoneManager" => "DNS zone manager",
        "dnsZoneLinker" => "DNS zone linker",
        other => other,
    };
    format!("Private Link Autopilot {what} (<environment>)")
}
