//! Which api-versions each route of the fake serves, and how ARM refuses the others.
//!
//! Why: ARM routes a request by resource type *and* api-version before any provider sees
//! it, and a version the type was never published at is answered with HTTP 400. A fake
//! that serves any version hides a client that pins a wrong one (the audit's generic
//! `2024-04-01` approvals were exactly that). So every route the fake serves is checked
//! here against the versions the specs publish for its type, and the refusal has ARM's
//! shape:
//!
//! * provider types (`Microsoft.Network`, `Microsoft.ResourceGraph`): 400
//!   `NoRegisteredProviderFound`, "No registered resource provider found for location
//!   '…' and API version '…' for type '…'. The supported api-versions are '…'. …" (the
//!   wording quoted in public issue reports, e.g. Azure/azure-cli#27010; the same shape
//!   `connections.rs` answers for `privateEndpointConnections`);
//! * ARM's own types (`Microsoft.Resources`: subscriptions, providers, tags): 400
//!   `InvalidApiVersionParameter`, "The api-version '…' is invalid. The supported versions
//!   are '…'." (ARM serves these itself, there is no provider registration to miss).
//!
//! The table is checked in so the shipped fake (the demo) works without the shared
//! fixtures. Provenance of [`SPEC_VERSIONS`]:
//!
//! * Network and Private DNS types and `Microsoft.Resources/tags`: the `types` map of
//!   `../shared/fixtures/arm/api-versions.json`, i.e. `Azure/bicep-types-az`
//!   `generated/index.json` at commit `1f896de2db966ad91e8f7d7d981e11d32e4f5d8d`
//!   (generated from `Azure/azure-rest-api-specs` `b7170cade0`); `tests/fake_arm_strict.rs`
//!   compares these rows with the fixture whenever it is present;
//! * `privateDnsZones/ALL` (the all-types record-set list): the Private DNS spec serves it
//!   in the same `privatedns.json` as the A record sets, so it carries their versions;
//! * `Microsoft.Resources/subscriptions` (not a deployable type, so not in Bicep's
//!   index): the `stable/` folders of `specification/resources/resource-manager/Microsoft.Resources/subscriptions`;
//! * `Microsoft.Resources/subscriptions/providers` (Providers_Get) lives in the same
//!   `resources.json` as the Tags API, so it is given the tags row; older versions also
//!   have Providers_Get, so this is stricter than ARM, never more lenient;
//! * `Microsoft.ResourceGraph/resources`: the stable versions with examples under
//!   `specification/resourcegraph/resource-manager/Microsoft.ResourceGraph/ResourceGraph`
//!   (`2019-04-01`, `2021-03-01`, `2022-10-01`, `2024-04-01`; previews left out).
//!
//! Operation-status URLs are not checked: the fake writes their version itself, and a
//! client must follow them verbatim.

use serde_json::Value;

use super::{Answer, Call};

/// Resource type (namespace/type[/child]) -> every api-version it is published at,
/// oldest first. Compared case-insensitively.
#[rustfmt::skip]
pub const SPEC_VERSIONS: &[(&str, &[&str])] = &[
    ("Microsoft.Network/privateEndpoints", &[
        "2018-10-01", "2019-04-01", "2019-06-01", "2019-07-01", "2019-08-01", "2019-09-01", "2019-11-01",
        "2019-12-01", "2020-03-01", "2020-04-01", "2020-05-01", "2020-06-01", "2020-07-01", "2020-08-01",
        "2020-11-01", "2021-02-01", "2021-03-01", "2021-05-01", "2021-08-01", "2022-01-01", "2022-05-01",
        "2022-07-01", "2022-09-01", "2022-11-01", "2023-02-01", "2023-04-01", "2023-05-01", "2023-06-01",
        "2023-09-01", "2023-11-01", "2024-01-01", "2024-03-01", "2024-05-01", "2024-07-01", "2024-10-01",
        "2025-01-01", "2025-03-01", "2025-05-01", "2025-07-01", "2025-09-01",
    ]),
    ("Microsoft.Network/privateEndpoints/privateDnsZoneGroups", &[
        "2020-03-01", "2020-04-01", "2020-05-01", "2020-06-01", "2020-07-01", "2020-08-01", "2020-11-01",
        "2021-02-01", "2021-03-01", "2021-05-01", "2021-08-01", "2022-01-01", "2022-05-01", "2022-07-01",
        "2022-09-01", "2022-11-01", "2023-02-01", "2023-04-01", "2023-05-01", "2023-06-01", "2023-09-01",
        "2023-11-01", "2024-01-01", "2024-03-01", "2024-05-01", "2024-07-01", "2024-10-01", "2025-01-01",
        "2025-03-01", "2025-05-01", "2025-07-01", "2025-09-01",
    ]),
    ("Microsoft.Network/networkInterfaces", &[
        "2015-05-01-preview", "2015-06-15", "2016-03-30", "2016-06-01", "2016-09-01", "2016-12-01",
        "2017-03-01", "2017-03-30", "2017-06-01", "2017-08-01", "2017-09-01", "2017-10-01", "2017-11-01",
        "2018-01-01", "2018-02-01", "2018-04-01", "2018-06-01", "2018-07-01", "2018-08-01", "2018-10-01",
        "2018-11-01", "2018-12-01", "2019-02-01", "2019-04-01", "2019-06-01", "2019-07-01", "2019-08-01",
        "2019-09-01", "2019-11-01", "2019-12-01", "2020-03-01", "2020-04-01", "2020-05-01", "2020-06-01",
        "2020-07-01", "2020-08-01", "2020-11-01", "2021-02-01", "2021-03-01", "2021-05-01", "2021-08-01",
        "2022-01-01", "2022-05-01", "2022-07-01", "2022-09-01", "2022-11-01", "2023-02-01", "2023-04-01",
        "2023-05-01", "2023-06-01", "2023-09-01", "2023-11-01", "2024-01-01", "2024-03-01", "2024-05-01",
        "2024-07-01", "2024-10-01", "2025-01-01", "2025-03-01", "2025-05-01", "2025-07-01", "2025-09-01",
    ]),
    ("Microsoft.Network/privateDnsZones", &["2018-09-01", "2020-01-01", "2020-06-01", "2024-06-01"]),
    ("Microsoft.Network/privateDnsZones/A", &["2018-09-01", "2020-01-01", "2020-06-01", "2024-06-01"]),
    ("Microsoft.Network/privateDnsZones/ALL", &["2018-09-01", "2020-01-01", "2020-06-01", "2024-06-01"]),
    ("Microsoft.Network/privateDnsZones/virtualNetworkLinks", &["2018-09-01", "2020-01-01", "2020-06-01", "2024-06-01"]),
    ("Microsoft.Resources/tags", &[
        "2019-10-01", "2020-06-01", "2020-08-01", "2020-10-01", "2021-01-01", "2021-04-01", "2022-09-01",
        "2023-07-01", "2024-03-01", "2024-07-01", "2024-11-01", "2025-03-01", "2025-04-01",
    ]),
    ("Microsoft.Resources/subscriptions", &[
        "2015-11-01", "2016-06-01", "2018-06-01", "2019-06-01", "2019-11-01", "2020-01-01", "2021-01-01",
        "2022-12-01",
    ]),
    ("Microsoft.Resources/subscriptions/providers", &[
        "2019-10-01", "2020-06-01", "2020-08-01", "2020-10-01", "2021-01-01", "2021-04-01", "2022-09-01",
        "2023-07-01", "2024-03-01", "2024-07-01", "2024-11-01", "2025-03-01", "2025-04-01",
    ]),
    ("Microsoft.ResourceGraph/resources", &["2019-04-01", "2021-03-01", "2022-10-01", "2024-04-01"]),
    // Doctor and coverage (`eventgrid.rs`): the Event Grid, Service Bus and VNet link rows
    // from the same fixture; the permissions API and Key Vault secrets only at the stable
    // versions confirmed in the specs (stricter than ARM, never more lenient).
    ("Microsoft.EventGrid/systemTopics", &[
        "2020-04-01-preview", "2020-10-15-preview", "2021-06-01-preview", "2021-10-15-preview", "2021-12-01",
        "2022-06-15", "2023-06-01-preview", "2023-12-15-preview", "2024-06-01-preview", "2024-12-15-preview",
        "2025-02-15", "2025-04-01-preview", "2025-07-15-preview",
    ]),
    ("Microsoft.EventGrid/systemTopics/eventSubscriptions", &[
        "2020-04-01-preview", "2020-10-15-preview", "2021-06-01-preview", "2021-10-15-preview", "2021-12-01",
        "2022-06-15", "2023-06-01-preview", "2023-12-15-preview", "2024-06-01-preview", "2024-12-15-preview",
        "2025-02-15", "2025-04-01-preview", "2025-07-15-preview",
    ]),
    ("Microsoft.EventGrid/topics", &[
        "2017-06-15-preview", "2017-09-15-preview", "2018-01-01", "2018-05-01-preview", "2018-09-15-preview",
        "2019-01-01", "2019-02-01-preview", "2019-06-01", "2020-01-01-preview", "2020-04-01-preview", "2020-06-01",
        "2020-10-15-preview", "2021-06-01-preview", "2021-10-15-preview", "2021-12-01", "2022-06-15",
        "2023-06-01-preview", "2023-12-15-preview", "2024-06-01-preview", "2024-12-15-preview", "2025-02-15",
        "2025-04-01-preview", "2025-07-15-preview",
    ]),
    ("Microsoft.ServiceBus/namespaces/queues", &[
        "2015-08-01", "2017-04-01", "2018-01-01-preview", "2021-01-01-preview", "2021-06-01-preview", "2021-11-01",
        "2022-01-01-preview", "2022-10-01-preview", "2023-01-01-preview", "2024-01-01", "2025-05-01-preview",
        "2026-01-01", "2026-07-01-preview",
    ]),
    ("Microsoft.Network/privateDnsZones/virtualNetworkLinks", &["2018-09-01", "2020-01-01", "2020-06-01", "2024-06-01"]),
    ("Microsoft.Authorization/permissions", &["2022-04-01"]),
    ("Microsoft.KeyVault/vaults/secrets", &["2023-07-01"]),
];

/// The published versions of `resource_type`, if the fake checks it.
pub fn spec_versions(resource_type: &str) -> Option<&'static [&'static str]> {
    SPEC_VERSIONS.iter().find(|(t, _)| t.eq_ignore_ascii_case(resource_type)).map(|(_, v)| *v)
}

/// What a request addresses, as ARM's front door sees it: the resource type, the scope
/// it is authorised against and whether it is a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `Namespace/type[/child…]` in the spelling of the URL, e.g. `Microsoft.Network/privateDnsZones/A`.
    pub resource_type: String,
    /// For an instance its own id; for a collection the scope in the URL (its parent),
    /// which is what ARM authorises a list against.
    pub scope: String,
    pub collection: bool,
}

/// Classifies a path (original spelling, no query). `None` for paths that are not ARM
/// resource paths (the fake answers those 404 anyway).
pub fn classify(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let join = |n: usize| format!("/{}", segs[..n].join("/"));
    match segs.iter().rposition(|s| s.eq_ignore_ascii_case("providers")) {
        // `/providers/Microsoft.ResourceGraph/resources`: a tenant-level POST.
        Some(0) => {
            let ns = segs.get(1)?;
            let rest = &segs[2..];
            if rest.is_empty() {
                return None;
            }
            let types: Vec<&str> = rest.iter().step_by(2).copied().collect();
            Some(Target {
                resource_type: format!("{ns}/{}", types.join("/")),
                scope: "/".into(),
                collection: rest.len() % 2 == 1,
            })
        }
        Some(p) => {
            let ns = segs.get(p + 1)?;
            let rest = &segs[p + 2..];
            if rest.is_empty() {
                // `/subscriptions/{s}/providers/{namespace}`: the provider registration.
                return Some(Target {
                    resource_type: "Microsoft.Resources/subscriptions/providers".into(),
                    scope: join(p),
                    collection: false,
                });
            }
            let types: Vec<&str> = rest.iter().step_by(2).copied().collect();
            let collection = rest.len() % 2 == 1;
            // A top-level collection (`…/providers/{ns}/{type}`) is authorised at the scope
            // before `providers`; a child collection at its parent resource.
            let scope = match (collection, rest.len()) {
                (false, _) => join(segs.len()),
                (true, 1) => join(p),
                (true, _) => join(segs.len() - 1),
            };
            Some(Target { resource_type: format!("{ns}/{}", types.join("/")), scope, collection })
        }
        None => {
            // ARM's own hierarchy: /subscriptions/{s}[/resourceGroups/{rg}][/{type}/{name}].
            if !segs.first()?.eq_ignore_ascii_case("subscriptions") {
                return None;
            }
            let types: Vec<&str> = segs.iter().step_by(2).copied().collect();
            let collection = segs.len() % 2 == 1;
            let scope = if collection { join(segs.len() - 1) } else { join(segs.len()) };
            Some(Target { resource_type: format!("Microsoft.Resources/{}", types.join("/")), scope, collection })
        }
    }
}

/// 400 for an api-version `resource_type` is not published at, or `None` when the fake
/// serves it (or does not check the type). `location` goes into the provider message.
pub(crate) fn check(call: &Call<'_>, target: &Target, location: &str) -> Option<Answer> {
    let versions = spec_versions(&target.resource_type)?;
    let api = call.query.get("api-version").map(String::as_str).unwrap_or_default();
    if versions.contains(&api) {
        return None;
    }
    Some(unsupported(&target.resource_type, api, location, versions))
}

/// ARM's refusal of `api` for `resource_type` (see the module docs for the two shapes).
pub(crate) fn unsupported(resource_type: &str, api: &str, location: &str, versions: &[&str]) -> Answer {
    let newest_first: Vec<&str> = versions.iter().rev().copied().collect();
    let (ns, short) = resource_type.split_once('/').unwrap_or(("", resource_type));
    if ns.eq_ignore_ascii_case("Microsoft.Resources") {
        return Answer::error(
            400,
            "InvalidApiVersionParameter",
            format!("The api-version '{api}' is invalid. The supported versions are '{}'.", newest_first.join(",")),
        );
    }
    Answer::error(
        400,
        "NoRegisteredProviderFound",
        format!(
            "No registered resource provider found for location '{location}' and API version '{api}' for type \
             '{short}'. The supported api-versions are '{}'. The supported locations are '{location}'.",
            newest_first.join(", ")
        ),
    )
}

/// The location ARM would name in a refusal: the addressed resource's, else `global`
/// for the global types (Private DNS), else the sandbox's region.
pub fn location_of(resource: Option<&Value>, resource_type: &str) -> String {
    if let Some(l) = resource.and_then(|r| r["location"].as_str()) {
        return l.to_owned();
    }
    if resource_type.to_ascii_lowercase().starts_with("microsoft.network/privatednszones") {
        return "global".into();
    }
    "eastus2".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(path: &str) -> (String, String, bool) {
        let t = classify(path).unwrap();
        (t.resource_type, t.scope, t.collection)
    }

    #[test]
    fn classifies_the_routes_the_fake_serves() {
        let rg = "/subscriptions/s/resourceGroups/rg";
        let pe = format!("{rg}/providers/Microsoft.Network/privateEndpoints/pe");
        assert_eq!(t(&pe), ("Microsoft.Network/privateEndpoints".into(), pe.clone(), false));
        assert_eq!(
            t(&format!("{pe}/privateDnsZoneGroups")),
            ("Microsoft.Network/privateEndpoints/privateDnsZoneGroups".into(), pe.clone(), true)
        );
        let zones = format!("{rg}/providers/Microsoft.Network/privateDnsZones");
        assert_eq!(t(&zones), ("Microsoft.Network/privateDnsZones".into(), rg.into(), true));
        let zone = format!("{zones}/z.example");
        assert_eq!(t(&format!("{zone}/A")), ("Microsoft.Network/privateDnsZones/A".into(), zone.clone(), true));
        assert_eq!(t(&format!("{zone}/A/*")).1, format!("{zone}/A/*"));
        assert_eq!(
            t(&format!("{pe}/providers/Microsoft.Resources/tags/default")),
            ("Microsoft.Resources/tags".into(), format!("{pe}/providers/Microsoft.Resources/tags/default"), false)
        );
        assert_eq!(
            t("/subscriptions/s"),
            ("Microsoft.Resources/subscriptions".into(), "/subscriptions/s".into(), false)
        );
        assert_eq!(
            t("/subscriptions/s/providers/Microsoft.Kusto"),
            ("Microsoft.Resources/subscriptions/providers".into(), "/subscriptions/s".into(), false)
        );
        assert_eq!(
            t("/subscriptions/s/providers/Microsoft.Network/privateEndpoints"),
            ("Microsoft.Network/privateEndpoints".into(), "/subscriptions/s".into(), true)
        );
        assert_eq!(
            t("/providers/Microsoft.ResourceGraph/resources"),
            ("Microsoft.ResourceGraph/resources".into(), "/".into(), true)
        );
        assert_eq!(
            t("/subscriptions/s/operationresults/op"),
            (
                "Microsoft.Resources/subscriptions/operationresults".into(),
                "/subscriptions/s/operationresults/op".into(),
                false
            )
        );
        assert_eq!(
            t("/subscriptions/s/providers/Microsoft.Kusto/locations/l/operationresults/op").0,
            "Microsoft.Kusto/locations/operationresults"
        );
    }

    #[test]
    fn refusals_have_arms_shapes() {
        let a = unsupported("Microsoft.Network/privateEndpoints", "2024-04-02", "eastus2", &["2025-07-01"]);
        let body = a.body.unwrap();
        assert_eq!(a.status.as_u16(), 400);
        assert_eq!(body["error"]["code"], "NoRegisteredProviderFound");
        let a = unsupported("Microsoft.Resources/tags", "2018-01-01", "eastus2", &["2025-03-01", "2025-04-01"]);
        let body = a.body.unwrap();
        assert_eq!(body["error"]["code"], "InvalidApiVersionParameter");
        assert!(body["error"]["message"].as_str().unwrap().contains("'2025-04-01,2025-03-01'"), "{body}");
    }
}
