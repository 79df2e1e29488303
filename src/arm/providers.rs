//! Which api-version to send for a resource type, chosen the way generic ARM clients do.
//!
//! Every resource provider versions its types on its own calendar: an api-version that one
//! namespace serves (say `2024-04-01`) is answered by most others with HTTP 400
//! `NoRegisteredProviderFound`. A client that talks to *any* resource with
//! `privateEndpointConnections` therefore cannot pin one version. ARM publishes what each
//! provider serves: `GET /subscriptions/{s}/providers/{namespace}?api-version=2021-04-01`
//! (Providers_Get, `specification/resources/resource-manager/Microsoft.Resources/stable/2021-04-01/resources.json`)
//! answers `resourceTypes[]`, each with its `resourceType` (relative to the namespace, e.g.
//! `clusters` or `clusters/privateEndpointConnections`) and `apiVersions`. We take the
//! newest stable (no `-preview`/`-beta`/... suffix) version of the child type when the
//! provider lists it, else of its parent type, and cache the answer per namespace (and
//! ARM endpoint) in the process: a provider's versions change a few times a year.
//!
//! When the provider cannot be read (403: the identity lacks
//! `Microsoft.Resources/subscriptions/providers/read` on that subscription, or a transient
//! failure) the [`FALLBACK`] table, derived from the published specs, is used instead, and
//! the failure is remembered for a short while so a burst of calls does not re-read it.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{ArmClient, ArmError, ArmRequest};

/// The api-version of Providers_Get itself (a stable version every ARM endpoint serves).
pub const PROVIDERS_API: &str = "2021-04-01";

/// How long a provider's version list is trusted.
const FRESH_FOR: Duration = Duration::from_secs(6 * 3600);
/// How long a failed provider read is remembered (the fallback is used meanwhile).
const FAILED_FOR: Duration = Duration::from_secs(300);

/// Where a chosen version came from (for reports and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSource {
    /// The provider's registration (`resourceTypes[].apiVersions`).
    Provider,
    /// The spec-derived [`FALLBACK`] table, because the provider could not be read.
    Fallback,
}

/// A chosen api-version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersion {
    pub version: String,
    pub source: VersionSource,
}

/// A resource id split into what version selection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeOf {
    pub subscription: String,
    /// e.g. `Microsoft.Kusto`.
    pub namespace: String,
    /// The type path below the namespace, e.g. `clusters` or `sites/slots`.
    pub resource_type: String,
}

impl TypeOf {
    /// Parses `/subscriptions/{s}/resourceGroups/{rg}/providers/{ns}/{type}/{name}[/{type}/{name}...]`.
    pub fn parse(resource_id: &str) -> Option<Self> {
        let parts: Vec<&str> = resource_id.trim_matches('/').split('/').collect();
        if parts.len() < 2 || !parts[0].eq_ignore_ascii_case("subscriptions") || parts[1].is_empty() {
            return None;
        }
        // The last `providers` segment: extension resources nest one provider in another.
        let p = parts.iter().rposition(|s| s.eq_ignore_ascii_case("providers"))?;
        let namespace = parts.get(p + 1).filter(|s| !s.is_empty())?;
        let rest = &parts[p + 2..];
        if rest.len() < 2 || !rest.len().is_multiple_of(2) || rest.iter().any(|s| s.is_empty()) {
            return None;
        }
        let resource_type = rest.iter().step_by(2).copied().collect::<Vec<_>>().join("/");
        Some(Self { subscription: parts[1].to_owned(), namespace: (*namespace).to_owned(), resource_type })
    }

    /// `namespace/type`, e.g. `Microsoft.Kusto/clusters`.
    pub fn full(&self) -> String {
        format!("{}/{}", self.namespace, self.resource_type)
    }
}

/// `true` for `YYYY-MM-DD` (a stable version); previews and other suffixes are not.
pub fn is_stable(version: &str) -> bool {
    let b = version.as_bytes();
    b.len() == 10 && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() })
}

/// The newest stable version in `versions` (date strings sort as dates).
pub fn newest_stable<'a>(versions: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    versions.into_iter().filter(|v| is_stable(v)).max()
}

/// Picks the version for `{parent}/{child}` from a provider registration body: the child
/// type's own entry when the provider lists it, else the parent type's.
pub fn choose_from_registration(body: &Value, parent_type: &str, child: &str) -> Option<String> {
    let types = body["resourceTypes"].as_array()?;
    let versions_of = |t: &str| {
        types
            .iter()
            .find(|rt| rt["resourceType"].as_str().is_some_and(|r| r.eq_ignore_ascii_case(t)))
            .and_then(|rt| rt["apiVersions"].as_array())
            .and_then(|vs| newest_stable(vs.iter().filter_map(Value::as_str)).map(str::to_owned))
    };
    versions_of(&format!("{parent_type}/{child}")).or_else(|| versions_of(parent_type))
}

/// The spec-derived fallback: `namespace/type` (parent of `privateEndpointConnections`) ->
/// the newest stable api-version whose spec has `{type}/privateEndpointConnections`.
///
/// Provenance: `../shared/fixtures/arm/api-versions.json`, i.e. the resource-type index of
/// `Azure/bicep-types-az` (`generated/index.json` rebuilt from `generated/**/types.json`)
/// at commit `1f896de2db966ad91e8f7d7d981e11d32e4f5d8d`, itself generated from
/// `Azure/azure-rest-api-specs` `b7170cade0`: every `…/privateEndpointConnections` type,
/// its newest version without a suffix. Types with only preview versions are left out, as
/// are `Microsoft.Monitor/accounts` (no version of its spec has the sub-resource, see
/// `effects::approvals`). Keys compare case-insensitively.
pub const FALLBACK: &[(&str, &str)] = &[
    ("microsoft.aadiam/privateLinkForAzureAd", "2020-03-01"),
    ("Microsoft.ApiManagement/service", "2024-05-01"),
    ("Microsoft.App/managedEnvironments", "2026-01-01"),
    ("Microsoft.AppConfiguration/configurationStores", "2024-06-01"),
    ("Microsoft.Attestation/attestationProviders", "2021-06-01"),
    ("Microsoft.Automation/automationAccounts", "2024-10-23"),
    ("Microsoft.Batch/batchAccounts", "2025-06-01"),
    ("Microsoft.BotService/botServices", "2022-09-15"),
    ("Microsoft.Cache/redis", "2024-11-01"),
    ("Microsoft.Cache/redisEnterprise", "2025-07-01"),
    ("Microsoft.CognitiveServices/accounts", "2026-07-01"),
    ("Microsoft.Compute/diskAccesses", "2026-03-02"),
    ("Microsoft.ContainerRegistry/registries", "2025-11-01"),
    ("Microsoft.ContainerService/managedClusters", "2026-05-01"),
    ("Microsoft.Dashboard/grafana", "2025-08-01"),
    ("Microsoft.Databricks/workspaces", "2026-01-01"),
    ("Microsoft.DataFactory/factories", "2018-06-01"),
    ("Microsoft.DataReplication/replicationVaults", "2026-05-01"),
    ("Microsoft.DBforMariaDB/servers", "2018-06-01"),
    ("Microsoft.DBforMySQL/flexibleServers", "2024-12-30"),
    ("Microsoft.DBforMySQL/servers", "2018-06-01"),
    ("Microsoft.DBforPostgreSQL/flexibleServers", "2025-08-01"),
    ("Microsoft.DBforPostgreSQL/serverGroupsv2", "2022-11-08"),
    ("Microsoft.DBforPostgreSQL/servers", "2018-06-01"),
    ("Microsoft.DesktopVirtualization/hostPools", "2025-10-10"),
    ("Microsoft.DesktopVirtualization/workspaces", "2025-10-10"),
    ("Microsoft.Devices/iotHubs", "2023-06-30"),
    ("Microsoft.Devices/provisioningServices", "2022-12-12"),
    ("Microsoft.DeviceUpdate/accounts", "2023-07-01"),
    ("Microsoft.DigitalTwins/digitalTwinsInstances", "2023-01-31"),
    ("Microsoft.Discovery/bookshelves", "2026-06-01"),
    ("Microsoft.Discovery/workspaces", "2026-06-01"),
    ("Microsoft.DocumentDB/databaseAccounts", "2026-03-15"),
    ("Microsoft.DocumentDB/mongoClusters", "2026-06-01"),
    ("Microsoft.DurableTask/schedulers", "2026-02-01"),
    ("Microsoft.ElasticSan/elasticSans", "2025-09-01"),
    ("Microsoft.EventGrid/domains", "2025-02-15"),
    ("Microsoft.EventGrid/namespaces", "2025-02-15"),
    ("Microsoft.EventGrid/partnerNamespaces", "2025-02-15"),
    ("Microsoft.EventGrid/topics", "2025-02-15"),
    ("Microsoft.EventHub/namespaces", "2026-01-01"),
    ("Microsoft.FileShares/fileShares", "2026-06-01"),
    ("Microsoft.HardwareSecurityModules/cloudHsmClusters", "2025-03-31"),
    ("Microsoft.HDInsight/clusters", "2021-06-01"),
    ("Microsoft.HealthcareApis/services", "2024-03-31"),
    ("Microsoft.HealthcareApis/workspaces", "2024-03-31"),
    ("Microsoft.HealthDataAIServices/deidServices", "2024-09-20"),
    ("Microsoft.HybridCompute/privateLinkScopes", "2026-07-15"),
    ("Microsoft.Insights/privateLinkScopes", "2021-09-01"),
    ("Microsoft.KeyVault/managedHSMs", "2026-02-01"),
    ("Microsoft.KeyVault/vaults", "2026-02-01"),
    ("Microsoft.Kusto/clusters", "2025-02-14"),
    ("Microsoft.MachineLearningServices/workspaces", "2026-05-01"),
    ("Microsoft.Migrate/assessmentProjects", "2024-01-15"),
    ("Microsoft.Migrate/migrateProjects", "2023-01-01"),
    ("Microsoft.Network/applicationGateways", "2025-09-01"),
    ("Microsoft.Network/privateLinkServices", "2025-09-01"),
    ("Microsoft.NotificationHubs/namespaces", "2023-09-01"),
    ("Microsoft.OffAzure/masterSites", "2023-06-06"),
    ("Microsoft.PowerBI/privateLinkServicesForPowerBI", "2020-06-01"),
    ("Microsoft.Purview/accounts", "2021-12-01"),
    ("Microsoft.RecoveryServices/vaults", "2026-07-01"),
    ("Microsoft.Relay/namespaces", "2026-01-01"),
    ("Microsoft.Search/searchServices", "2025-05-01"),
    ("Microsoft.Security/privateLinks", "2026-01-01"),
    ("Microsoft.SecurityAndCompliance/privateLinkServicesForEDMUpload", "2021-03-08"),
    ("Microsoft.SecurityAndCompliance/privateLinkServicesForM365ComplianceCenter", "2021-03-08"),
    ("Microsoft.SecurityAndCompliance/privateLinkServicesForM365SecurityCenter", "2021-03-08"),
    ("Microsoft.SecurityAndCompliance/privateLinkServicesForMIPPolicySync", "2021-03-08"),
    ("Microsoft.SecurityAndCompliance/privateLinkServicesForO365ManagementActivityAPI", "2021-03-08"),
    ("Microsoft.SecurityAndCompliance/privateLinkServicesForSCCPowershell", "2021-03-08"),
    ("Microsoft.ServiceBus/namespaces", "2026-01-01"),
    ("Microsoft.SignalRService/signalR", "2024-03-01"),
    ("Microsoft.SignalRService/webPubSub", "2024-03-01"),
    ("Microsoft.Sql/managedInstances", "2025-01-01"),
    ("Microsoft.Sql/servers", "2025-01-01"),
    ("Microsoft.Storage/storageAccounts", "2026-04-01"),
    ("Microsoft.StorageSync/storageSyncServices", "2025-12-01"),
    ("Microsoft.Synapse/workspaces", "2021-06-01"),
    ("Microsoft.VideoIndexer/accounts", "2025-04-01"),
    ("Microsoft.Web/hostingEnvironments", "2025-03-01"),
    ("Microsoft.Web/sites", "2025-03-01"),
    ("Microsoft.Web/sites/slots", "2025-03-01"),
    ("Microsoft.Web/staticSites", "2025-03-01"),
];

/// The spec-derived version for `namespace/type`, if the table has it.
pub fn fallback(full_type: &str) -> Option<&'static str> {
    FALLBACK.iter().find(|(t, _)| t.eq_ignore_ascii_case(full_type)).map(|(_, v)| *v)
}

#[derive(Clone)]
enum Cached {
    Registration { body: Value, at: Instant },
    Failed { at: Instant },
}

/// `{base_url}|{namespace}` (lower case) -> what the provider read gave.
static CACHE: OnceLock<Mutex<HashMap<String, Cached>>> = OnceLock::new();

fn cache() -> std::sync::MutexGuard<'static, HashMap<String, Cached>> {
    CACHE.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner)
}

/// The api-version to use for `{resource_id}/{child}` (e.g. `privateEndpointConnections`).
///
/// The provider registration decides; the [`FALLBACK`] table answers when it cannot be
/// read. `Err` carries the provider read's error when neither gives a version (an
/// unknown type whose provider we may not read): the caller reports it for that target.
pub async fn child_api_version(arm: &ArmClient, resource_id: &str, child: &str) -> Result<ApiVersion, ArmError> {
    let Some(t) = TypeOf::parse(resource_id) else {
        return Err(no_version(resource_id, "it is not a resource id under /subscriptions/{id}/.../providers/"));
    };
    let key = format!("{}|{}", arm.base_url(), t.namespace.to_ascii_lowercase());
    let cached = cache().get(&key).cloned();
    let registration = match cached {
        Some(Cached::Registration { body, at }) if at.elapsed() < FRESH_FOR => Ok(body),
        Some(Cached::Failed { at }) if at.elapsed() < FAILED_FOR => Err(None),
        _ => {
            let path = format!("/subscriptions/{}/providers/{}", t.subscription, t.namespace);
            match arm.send(ArmRequest::get(path, PROVIDERS_API)).await {
                Ok(r) => {
                    cache().insert(key, Cached::Registration { body: r.body.clone(), at: Instant::now() });
                    Ok(r.body)
                }
                Err(e) => {
                    tracing::warn!(namespace = %t.namespace, error = %e, "could not read the provider's api-versions; using the spec-derived table");
                    cache().insert(key, Cached::Failed { at: Instant::now() });
                    Err(Some(e))
                }
            }
        }
    };
    let from_provider = registration.as_ref().ok().and_then(|b| choose_from_registration(b, &t.resource_type, child));
    if let Some(version) = from_provider {
        return Ok(ApiVersion { version, source: VersionSource::Provider });
    }
    if let Some(v) = fallback(&t.full()) {
        return Ok(ApiVersion { version: v.to_owned(), source: VersionSource::Fallback });
    }
    Err(match registration {
        Err(Some(e)) => e,
        Err(None) => {
            no_version(resource_id, "the provider could not be read recently and the type is not in the spec table")
        }
        Ok(_) => no_version(resource_id, &format!("the provider lists no stable api-version for {}/{child}", t.full())),
    })
}

/// The error for "no api-version could be chosen" (permanent: a retry gives the same).
fn no_version(resource_id: &str, why: &str) -> ArmError {
    ArmError::Api {
        method: super::client::Method::Get,
        path: resource_id.to_owned(),
        status: 400,
        code: CODE_NO_API_VERSION.into(),
        message: format!("no api-version known for this resource type: {why}"),
        retry_after: None,
    }
}

/// The code of [`child_api_version`]'s own error.
pub const CODE_NO_API_VERSION: &str = "NoApiVersionKnown";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_types() {
        let t =
            TypeOf::parse("/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Web/sites/app/slots/blue").unwrap();
        assert_eq!((t.subscription.as_str(), t.full().as_str()), ("s1", "Microsoft.Web/sites/slots"));
        assert!(TypeOf::parse("/subscriptions/s1/resourceGroups/rg").is_none());
        assert!(TypeOf::parse("/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Kusto/clusters").is_none());
    }

    #[test]
    fn newest_stable_skips_previews() {
        let vs = ["2024-11-01", "2026-03-01-preview", "2026-02-01", "2025-05-01", "2026-04-01-beta"];
        assert_eq!(newest_stable(vs), Some("2026-02-01"));
        assert_eq!(newest_stable(["2021-03-31-preview"]), None);
    }

    #[test]
    fn registration_prefers_the_child_type() {
        let body = json!({"resourceTypes": [
            {"resourceType": "clusters", "apiVersions": ["2025-02-14", "2024-04-13"]},
            {"resourceType": "clusters/privateEndpointConnections", "apiVersions": ["2024-04-13", "2025-06-01-preview"]},
            {"resourceType": "vaults", "apiVersions": ["2026-03-01-preview", "2026-02-01"]}
        ]});
        assert_eq!(
            choose_from_registration(&body, "Clusters", "privateEndpointConnections").as_deref(),
            Some("2024-04-13")
        );
        assert_eq!(
            choose_from_registration(&body, "vaults", "privateEndpointConnections").as_deref(),
            Some("2026-02-01")
        );
        assert_eq!(choose_from_registration(&body, "servers", "privateEndpointConnections"), None);
    }

    #[test]
    fn fallback_is_case_insensitive_and_stable_only() {
        assert_eq!(fallback("microsoft.storage/STORAGEACCOUNTS"), Some("2026-04-01"));
        assert_eq!(fallback("Microsoft.Monitor/accounts"), None);
        assert!(FALLBACK.iter().all(|(_, v)| is_stable(v)));
    }
}
