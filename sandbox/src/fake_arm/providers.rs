//! Provider registrations: `GET /subscriptions/{s}/providers/{namespace}` (Providers_Get,
//! `specification/resources/resource-manager/Microsoft.Resources/stable/2021-04-01/resources.json`).
//!
//! Generic ARM clients learn which api-versions a type is served at from this answer
//! (`resourceTypes[].resourceType` relative to the namespace, `apiVersions` newest first,
//! previews included), so the fake derives it from the same spec table that decides what
//! its `privateEndpointConnections` route accepts ([`super::connections::SPEC_VERSIONS`]):
//! a client that trusts the registration can never pick a version the route refuses.
//! Namespaces the fake knows nothing about answer 404 `InvalidResourceNamespace`.

use serde_json::{Value, json};

use super::Answer;
use super::connections::SPEC_VERSIONS;

/// Types registered without a `privateEndpointConnections` sub-resource, with their
/// versions. `Microsoft.Monitor/accounts`: stable 2023-04-03 and 2025-10-03, previews
/// 2025-05-03-preview and 2025-10-03-preview (bicep-types-az `generated/monitoringservice_0/microsoft.monitor/*`).
const OTHER_TYPES: &[(&str, &[&str])] =
    &[("Microsoft.Monitor/accounts", &["2023-04-03", "2025-05-03-preview", "2025-10-03", "2025-10-03-preview"])];

/// Answers the registration of `namespace` for `subscription`.
pub(super) fn get(subscription: &str, namespace: &str) -> Answer {
    let mut canonical = None;
    let mut types: Vec<Value> = Vec::new();
    for (full, versions) in SPEC_VERSIONS.iter().chain(OTHER_TYPES) {
        let Some((ns, rtype)) = full.split_once('/') else { continue };
        if !ns.eq_ignore_ascii_case(namespace) {
            continue;
        }
        canonical.get_or_insert(ns);
        let newest_first: Vec<&str> = versions.iter().rev().copied().collect();
        types.push(json!({
            "resourceType": rtype,
            "locations": ["East US 2", "West US 3"],
            "apiVersions": newest_first,
            "capabilities": "SupportsTags, SupportsLocation"
        }));
    }
    let Some(ns) = canonical else {
        return Answer::error(
            404,
            "InvalidResourceNamespace",
            format!("The resource namespace '{namespace}' is invalid."),
        );
    };
    Answer::json(
        200,
        json!({
            "id": format!("/subscriptions/{subscription}/providers/{ns}"),
            "namespace": ns,
            "registrationState": "Registered",
            "resourceTypes": types
        }),
    )
}
