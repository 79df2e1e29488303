//! Which vendor account, services or deployments an endpoint belongs to.
//!
//! Never guessed: the answer comes from configuration, in this order.
//! 1. The endpoint's tag `autopilot.vendor.targets` (comma-separated ids), so the team
//!    that creates an endpoint can say which services it is for. A tag can be written by
//!    anyone who can create an endpoint, so every id in it must be one the platform team
//!    allowed (the vendor section's default ids or some rule's targets); otherwise the
//!    endpoint is reported, not registered.
//! 2. The first `[[vendors.rules]]` entry for the vendor whose `alias` glob, `region` and
//!    `subscriptions` all match.
//! 3. The vendor section's own default ids (`service_ids`, `deployment_ids`; Zilliz: its
//!    `project_id`), when it has any.
//!
//! An endpoint that matches none of these is reported (plan note, audit event), not
//! registered.

use std::collections::BTreeMap;

use super::api::VendorEndpoint;
// The rule is part of the `[vendors]` section; re-exported for `routing::VendorRule`.
pub use super::config::VendorRule;
use super::config::VendorsConfig;

/// The tag an endpoint may carry to choose its vendor targets.
pub const TARGETS_TAG: &str = "autopilot.vendor.targets";

impl VendorRule {
    fn matches(&self, vendor: &str, ep: &VendorEndpoint) -> bool {
        self.vendor.eq_ignore_ascii_case(vendor)
            && (self.alias.is_empty()
                || ep.alias.as_deref().is_some_and(|a| crate::catalog::glob_match_ci(&self.alias, a)))
            && (self.region.is_empty() || self.region.eq_ignore_ascii_case(&ep.location))
            && (self.subscriptions.is_empty()
                || self.subscriptions.iter().any(|s| s.eq_ignore_ascii_case(&ep.subscription_id)))
    }
}

/// Where an endpoint goes, or why nowhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Register with these targets (always spelled out; empty only for Zilliz, whose
    /// endpoints go to its one configured project), chosen by `by`.
    Register { targets: Vec<String>, by: String },
    /// Not registered; a person must add a rule or fix the tag.
    Unmatched(String),
}

/// The vendor section's default ids (empty when it has none).
pub(crate) fn defaults(cfg: &VendorsConfig, vendor: &str) -> Vec<String> {
    let ids = match vendor {
        "clickhouse" => cfg.clickhouse.service_ids.clone(),
        "elastic" => cfg.elastic.deployment_ids.clone(),
        "zilliz" => vec![cfg.zilliz.project_id.clone()],
        _ => vec![],
    };
    ids.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// Decides where `ep` goes with `vendor` (see the module docs for the order).
///
/// The configuration decides what an endpoint may reach: the first `[[vendors.rules]]`
/// entry that matches it (alias, region, subscriptions), else the vendor's defaults. The
/// tag `autopilot.vendor.targets` is the requester's say: it may only narrow that set,
/// never reach a target of a rule that does not match the endpoint (a dev spoke naming
/// the prod service).
pub fn route(cfg: &VendorsConfig, vendor: &str, ep: &VendorEndpoint, tags: &BTreeMap<String, String>) -> Route {
    let defaults = defaults(cfg, vendor);
    let (allowed, by) = match cfg.rules.iter().enumerate().find(|(_, r)| r.matches(vendor, ep)) {
        Some((i, rule)) => {
            let targets = match vendor {
                "zilliz" => vec![],
                _ if rule.targets.is_empty() => defaults.clone(),
                _ => rule.targets.iter().map(|t| t.trim().to_string()).collect(),
            };
            if vendor != "zilliz" && targets.is_empty() {
                return Route::Unmatched(format!("[[vendors.rules]] entry {} for {vendor} lists no targets", i + 1));
            }
            (targets, format!("[[vendors.rules]] entry {}", i + 1))
        }
        None if !defaults.is_empty() => {
            // Spelled out (not "empty = defaults"), so the ledger records exactly where the
            // endpoint went and a later change of defaults can be withdrawn from.
            let targets = if vendor == "zilliz" { vec![] } else { defaults.clone() };
            (targets, format!("[vendors.{vendor}] defaults"))
        }
        None => {
            return Route::Unmatched(format!(
                "no [[vendors.rules]] entry for {vendor} matches (alias {}, region {}, subscription {}) and [vendors.{vendor}] has no defaults",
                ep.alias.as_deref().unwrap_or("none"),
                ep.location,
                ep.subscription_id
            ));
        }
    };
    let tag = tags.iter().find(|(k, _)| k.eq_ignore_ascii_case(TARGETS_TAG)).map(|(_, v)| v.as_str());
    let Some(value) = tag.filter(|_| vendor != "zilliz") else {
        return Route::Register { targets: allowed, by };
    };
    let wanted: Vec<String> = value.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if wanted.is_empty() {
        return Route::Unmatched(format!("tag {TARGETS_TAG} is present but names no {vendor} target"));
    }
    let mut targets = Vec::new();
    for id in &wanted {
        // In the configuration's spelling (ids compare case-insensitively, and the ledger
        // must name a target exactly as it was registered).
        match allowed.iter().find(|t| t.eq_ignore_ascii_case(id)) {
            Some(t) if !targets.contains(t) => targets.push(t.clone()),
            Some(_) => {}
            None => {
                return Route::Unmatched(format!(
                    "tag {TARGETS_TAG} names {id:?}, which {by} does not allow for this endpoint (a tag can only narrow it)"
                ));
            }
        }
    }
    Route::Register { targets, by: format!("tag {TARGETS_TAG} within {by}") }
}

/// Configuration errors found before any endpoint arrives.
pub fn validate(cfg: &VendorsConfig) -> Result<(), String> {
    for (i, r) in cfg.rules.iter().enumerate() {
        if !matches!(r.vendor.to_ascii_lowercase().as_str(), "clickhouse" | "elastic" | "zilliz") {
            return Err(format!(
                "[[vendors.rules]] entry {}: vendor {:?} is not one of clickhouse, elastic, zilliz",
                i + 1,
                r.vendor
            ));
        }
    }
    for (vendor, enabled) in
        [("clickhouse", cfg.clickhouse.enabled), ("elastic", cfg.elastic.enabled), ("zilliz", cfg.zilliz.enabled)]
    {
        let has_rule = cfg.rules.iter().any(|r| r.vendor.eq_ignore_ascii_case(vendor) && !r.targets.is_empty());
        if enabled && vendor != "zilliz" && defaults(cfg, vendor).is_empty() && !has_rule {
            let key = if vendor == "clickhouse" { "service_ids" } else { "deployment_ids" };
            return Err(format!(
                "[vendors.{vendor}] {key} is empty and no [[vendors.rules]] entry gives {vendor} targets: \
                 nothing could ever be registered"
            ));
        }
    }
    Ok(())
}

/// Every target the configuration can route `vendor` endpoints to (defaults and rules).
pub fn configured_targets(config: &VendorsConfig, vendor: &str) -> Vec<String> {
    let mut out = defaults(config, vendor);
    for rule in config.rules.iter().filter(|r| r.vendor.eq_ignore_ascii_case(vendor)) {
        out.extend(rule.targets.iter().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()));
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(alias: Option<&str>, location: &str) -> VendorEndpoint {
        VendorEndpoint {
            pe_id: "/subscriptions/sub-a/resourceGroups/rg/providers/Microsoft.Network/privateEndpoints/pe".into(),
            pe_name: "pe".into(),
            resource_guid: Some("g".into()),
            subscription_id: "sub-a".into(),
            location: location.into(),
            alias: alias.map(str::to_string),
            targets: vec![],
        }
    }

    fn cfg() -> VendorsConfig {
        let mut c = VendorsConfig::default();
        c.clickhouse.service_ids = vec!["svc-default".into()];
        c.rules = vec![VendorRule {
            vendor: "clickhouse".into(),
            alias: "production-westus3-*".into(),
            targets: vec!["svc-west".into()],
            ..Default::default()
        }];
        c
    }

    #[test]
    fn tag_then_rule_then_default() {
        let c = cfg();
        let west = ep(Some("production-westus3-0-0.abc.westus3.azure.privatelinkservice"), "westus3");
        let none = BTreeMap::new();
        assert_eq!(
            route(&c, "clickhouse", &west, &none),
            Route::Register { targets: vec!["svc-west".into()], by: "[[vendors.rules]] entry 1".into() }
        );
        let east = ep(Some("production-eastus2-0-0.abc.eastus2.azure.privatelinkservice"), "eastus2");
        assert_eq!(
            route(&c, "clickhouse", &east, &none),
            Route::Register { targets: vec!["svc-default".into()], by: "[vendors.clickhouse] defaults".into() },
            "defaults are spelled out, so the ledger knows where the endpoint went"
        );
        // The tag narrows what applies to the endpoint; it cannot add the west rule's service.
        let tags = BTreeMap::from([(TARGETS_TAG.to_string(), "svc-default".to_string())]);
        assert!(
            matches!(route(&c, "clickhouse", &east, &tags), Route::Register { targets, .. } if targets == ["svc-default"])
        );
        let tags = BTreeMap::from([(TARGETS_TAG.to_string(), "svc-default, svc-west".to_string())]);
        assert!(matches!(route(&c, "clickhouse", &east, &tags), Route::Unmatched(why) if why.contains("svc-west")));
    }

    /// F9: a rule scoped to the prod subscription keeps its service away from a dev
    /// spoke, whatever the dev endpoint's tag says.
    #[test]
    fn a_tag_cannot_reach_a_rule_that_does_not_match_the_endpoint() {
        let mut c = cfg();
        c.rules = vec![VendorRule {
            vendor: "clickhouse".into(),
            subscriptions: vec!["prod-sub".into()],
            targets: vec!["svc-prod".into()],
            ..Default::default()
        }];
        let dev = ep(Some("production-eastus2-0-0.abc.eastus2.azure.privatelinkservice"), "eastus2");
        assert_ne!(dev.subscription_id, "prod-sub");
        let tags = BTreeMap::from([(TARGETS_TAG.to_string(), "svc-prod".to_string())]);
        let r = route(&c, "clickhouse", &dev, &tags);
        assert!(matches!(&r, Route::Unmatched(why) if why.contains("svc-prod") && why.contains("narrow")), "{r:?}");
        assert_eq!(
            route(&c, "clickhouse", &dev, &BTreeMap::new()),
            Route::Register { targets: vec!["svc-default".into()], by: "[vendors.clickhouse] defaults".into() }
        );
    }

    #[test]
    fn a_tag_cannot_name_a_service_nobody_allowed() {
        let tags = BTreeMap::from([(TARGETS_TAG.to_string(), "svc-of-someone-else".to_string())]);
        let r = route(&cfg(), "clickhouse", &ep(None, "eastus2"), &tags);
        assert!(matches!(&r, Route::Unmatched(why) if why.contains("svc-of-someone-else")), "{r:?}");
    }

    #[test]
    fn no_rule_and_no_default_is_reported() {
        let mut c = cfg();
        c.clickhouse.service_ids.clear();
        let r = route(&c, "clickhouse", &ep(None, "eastus2"), &BTreeMap::new());
        assert!(matches!(&r, Route::Unmatched(why) if why.contains("no [[vendors.rules]] entry")), "{r:?}");
        c.clickhouse.enabled = true;
        assert!(validate(&c).is_ok(), "a rule with targets is enough");
        c.rules.clear();
        assert!(validate(&c).unwrap_err().contains("service_ids"));
    }
}
