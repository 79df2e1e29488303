//! ClickHouse Cloud: put the endpoint id on every configured service's `privateEndpointIds`.
//!
//! Facts (shared/reference/vendors.md §2): HTTP Basic `KEY_ID:KEY_SECRET`, envelope
//! `{status, requestId, result}` / `{status, error, requestId}`, 10 requests per 10 s per key.
//!
//! - Register: for each service, GET it and PATCH `{"privateEndpointIds":{"add":[id]}}`
//!   only if the id is absent (compared case-insensitively): a duplicate add probably
//!   fails. Another instance may add it between our GET and PATCH (vendor work is not
//!   serialised across instances), so an HTTP 400 on the add is checked by reading the
//!   service again: if the id is there now, the loser of that race is done too
//!   (`AlreadyInPlace`), not dead-lettered. The reread decides, not the error text
//!   (ClickHouse's wording for a duplicate is unconfirmed; the fake says "already added"). The deprecated organization-level add is never used; the service PATCH is
//!   the supported path (and registers the id with the organization as a side effect).
//! - Deregister: PATCH `remove` on every service that lists the id, then PATCH the
//!   organization's `privateEndpoints.remove` with the entry as the organization reports
//!   it (the `region` must be one of ClickHouse's enum values, so we echo theirs).
//!   Both id forms (ARM id and legacy `resourceGuid`) are removed, so switching
//!   `endpoint_id` mode does not leave the old form behind.
//! - The id is the PE's ARM resource id (preferred since 2025-08-29) or, with
//!   `endpoint_id = "resource_guid"`, the legacy `properties.resourceGuid`.

use std::fmt;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::{Change, Vendor, VendorEndpoint, VendorError};
use super::settings::{self, HttpSettings};
use super::transport::{Transport, clip};
use crate::model::Secret;

/// Which identifier ClickHouse gets for a private endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointIdKind {
    /// The ARM resource id (ClickHouse's preferred form).
    #[default]
    ResourceId,
    /// `properties.resourceGuid` (legacy, still accepted).
    ResourceGuid,
}

/// `[vendors.clickhouse]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    pub enabled: bool,
    pub base_url: String,
    /// Name of the environment variable holding the API key id.
    pub key_id_env: String,
    /// Name of the environment variable holding the API key secret.
    pub key_secret_env: String,
    pub organization_id: String,
    /// Services whose allow list receives the endpoint.
    pub service_ids: Vec<String>,
    pub endpoint_id: EndpointIdKind,
    pub request_timeout_ms: u64,
    /// ClickHouse allows 10 requests per 10-second window per key.
    pub rate_limit_requests: u32,
    pub rate_limit_window_ms: u64,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: "https://api.clickhouse.cloud".into(),
            key_id_env: "CLICKHOUSE_KEY_ID".into(),
            key_secret_env: "CLICKHOUSE_KEY_SECRET".into(),
            organization_id: String::new(),
            service_ids: Vec::new(),
            endpoint_id: EndpointIdKind::ResourceId,
            request_timeout_ms: 30_000,
            rate_limit_requests: 10,
            rate_limit_window_ms: 10_000,
        }
    }
}

/// The success envelope `{status, requestId, result}` (and, on errors, `error`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Envelope<T> {
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(rename = "requestId", default)]
    pub request_id: Option<String>,
    #[serde(default = "Option::default")]
    pub result: Option<T>,
    #[serde(default)]
    pub error: Option<String>,
}

/// The part of a `Service` we use.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub private_endpoint_ids: Option<Vec<String>>,
}

/// The part of an `Organization` we use.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub private_endpoints: Option<Vec<OrganizationPrivateEndpoint>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationPrivateEndpoint {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Parses a success body's `result`.
pub fn parse_result<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let env: Envelope<T> = serde_json::from_slice(body).map_err(|e| format!("not a ClickHouse envelope: {e}"))?;
    env.result.ok_or_else(|| "ClickHouse envelope has no `result`".to_string())
}

/// The `error` text of an error body (or the raw text when it is not an envelope).
pub fn error_text(body: &[u8]) -> String {
    match serde_json::from_slice::<Envelope<Value>>(body) {
        Ok(Envelope { error: Some(e), request_id, .. }) => match request_id {
            Some(id) => format!("{} (requestId {id})", clip(&e)),
            None => clip(&e),
        },
        _ => clip(&String::from_utf8_lossy(body)),
    }
}

/// The ClickHouse Cloud client.
pub struct ClickHouse {
    organization_id: String,
    service_ids: Vec<String>,
    endpoint_id: EndpointIdKind,
    key_id: Secret,
    key_secret: Secret,
    transport: Transport,
}

impl fmt::Debug for ClickHouse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key id and secret are deliberately left out.
        f.debug_struct("ClickHouse")
            .field("organization_id", &self.organization_id)
            .field("service_ids", &self.service_ids)
            .field("endpoint_id", &self.endpoint_id)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl ClickHouse {
    pub fn from_config(cfg: &ClickHouseConfig, env: &impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        const S: &str = "clickhouse";
        settings::require_setting(S, "organization_id", &cfg.organization_id)?;
        let base_url = settings::normalize_base_url(S, &cfg.base_url)?;
        let key_id = settings::secret_from_env(env, S, "key_id_env", &cfg.key_id_env)?;
        let key_secret = settings::secret_from_env(env, S, "key_secret_env", &cfg.key_secret_env)?;
        let settings = HttpSettings::new(cfg.request_timeout_ms, cfg.rate_limit_requests, cfg.rate_limit_window_ms);
        Ok(Self {
            organization_id: cfg.organization_id.trim().to_string(),
            service_ids: cfg.service_ids.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            endpoint_id: cfg.endpoint_id,
            key_id,
            key_secret,
            transport: Transport::new(S, base_url, &settings)?,
        })
    }

    /// The id ClickHouse gets for this endpoint in the configured mode.
    pub fn endpoint_id(&self, ep: &VendorEndpoint) -> Result<String, VendorError> {
        match self.endpoint_id {
            EndpointIdKind::ResourceId => Ok(ep.pe_id.clone()),
            EndpointIdKind::ResourceGuid => {
                Ok(ep.require_guid("endpoint_id = \"resource_guid\" needs as the vendor's endpoint id")?.to_string())
            }
        }
    }

    /// The services this endpoint goes to: the routing rules' choice, else the defaults.
    fn services_for<'a>(&'a self, ep: &'a VendorEndpoint) -> Result<&'a [String], VendorError> {
        let services = if ep.targets.is_empty() { &self.service_ids } else { &ep.targets };
        if services.is_empty() {
            return Err(VendorError::config(
                "no service chosen: set [vendors.clickhouse] service_ids or a [[vendors.rules]] entry",
            ));
        }
        Ok(services)
    }

    /// Every id form this endpoint may have been registered under.
    fn known_ids(ep: &VendorEndpoint) -> Vec<String> {
        let mut ids = vec![ep.pe_id.clone()];
        ids.extend(ep.resource_guid.clone());
        ids
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        context: &str,
    ) -> Result<T, VendorError> {
        let mut req =
            self.transport.request(method, path).basic_auth(self.key_id.expose(), Some(self.key_secret.expose()));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let raw = self.transport.send(req, context).await?;
        if !raw.status.is_success() {
            return Err(VendorError::from_status(raw.status, context, &error_text(&raw.body), raw.retry_after));
        }
        parse_result(&raw.body).map_err(|e| VendorError::transient(format!("{context}: unexpected reply: {e}")))
    }

    fn service_path(&self, service: &str) -> String {
        format!("/v1/organizations/{}/services/{}", self.organization_id, service)
    }

    async fn get_service(&self, service: &str, _ep: &VendorEndpoint) -> Result<Service, VendorError> {
        let ctx = format!("GET service {service}");
        self.call(Method::GET, &self.service_path(service), None, &ctx).await
    }

    /// Removes every id form of the endpoint from these services' `privateEndpointIds`.
    /// With `gone_is_done`, a service that no longer exists (404) has nothing to remove
    /// (withdrawing from a retired service); otherwise a 404 is the configuration's error.
    async fn remove_from_services(
        &self,
        ep: &VendorEndpoint,
        services: &[String],
        gone_is_done: bool,
    ) -> Result<Change, VendorError> {
        let ids = Self::known_ids(ep);
        let mut change = Change::AlreadyInPlace;
        for service in services {
            let current = match self.get_service(service, ep).await {
                Ok(s) => s,
                Err(e) if gone_is_done && e.status == Some(404) => continue,
                Err(e) => return Err(e),
            };
            // Send the ids back exactly as ClickHouse stores them.
            let present: Vec<String> = current
                .private_endpoint_ids
                .unwrap_or_default()
                .into_iter()
                .filter(|x| ids.iter().any(|id| id.eq_ignore_ascii_case(x)))
                .collect();
            if present.is_empty() {
                continue;
            }
            let ctx = format!("PATCH service {service} (remove the endpoint)");
            let body = json!({ "privateEndpointIds": { "remove": present } });
            let _: Service = self.call(Method::PATCH, &self.service_path(service), Some(body), &ctx).await?;
            change = Change::Applied;
        }
        Ok(change)
    }
}

fn contains(list: &[String], id: &str) -> bool {
    list.iter().any(|x| x.eq_ignore_ascii_case(id))
}

#[async_trait::async_trait]
impl Vendor for ClickHouse {
    /// `GET …/services/{id}/privateEndpointConfig` → `endpointServiceId`, per service.
    async fn published_aliases(&self, targets: &[String]) -> Result<Vec<String>, VendorError> {
        let mut out = Vec::new();
        let services: Vec<&String> = self.service_ids.iter().chain(targets).collect();
        for service in services {
            let ctx = format!("GET privateEndpointConfig of service {service}");
            let path = format!("{}/privateEndpointConfig", self.service_path(service));
            let config: Option<serde_json::Value> = self.call(Method::GET, &path, None, &ctx).await?;
            if let Some(alias) = config.as_ref().and_then(|c| c.get("endpointServiceId")).and_then(|v| v.as_str()) {
                out.push(alias.to_owned());
            }
        }
        Ok(out)
    }

    fn name(&self) -> &'static str {
        self.transport.vendor()
    }

    async fn register(&self, ep: &VendorEndpoint) -> Result<Change, VendorError> {
        let id = self.endpoint_id(ep)?;
        let mut change = Change::AlreadyInPlace;
        for service in self.services_for(ep)? {
            let current = self.get_service(service, ep).await?;
            if contains(current.private_endpoint_ids.as_deref().unwrap_or_default(), &id) {
                continue;
            }
            let ctx = format!("PATCH service {service} (add the endpoint)");
            let body = json!({ "privateEndpointIds": { "add": [id] } });
            match self.call::<Service>(Method::PATCH, &self.service_path(service), Some(body), &ctx).await {
                Ok(_) => change = Change::Applied,
                // Lost a race with another instance adding the same id: done if it is there.
                Err(e) if e.status == Some(400) => {
                    let now = self.get_service(service, ep).await?;
                    if !contains(now.private_endpoint_ids.as_deref().unwrap_or_default(), &id) {
                        return Err(e);
                    }
                    tracing::debug!(service, endpoint = %ep.pe_id, "already added by a concurrent registration");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(change)
    }

    async fn deregister(&self, ep: &VendorEndpoint) -> Result<Change, VendorError> {
        let ids = Self::known_ids(ep);
        let mut change = self.remove_from_services(ep, self.services_for(ep)?, false).await?;

        let org_path = format!("/v1/organizations/{}", self.organization_id);
        let ctx = format!("GET organization {}", self.organization_id);
        let org: Organization = self.call(Method::GET, &org_path, None, &ctx).await?;
        let remove: Vec<Value> = org
            .private_endpoints
            .unwrap_or_default()
            .into_iter()
            .filter(|e| ids.iter().any(|id| id.eq_ignore_ascii_case(&e.id)))
            .map(|e| {
                json!({
                    "cloudProvider": e.cloud_provider.unwrap_or_else(|| "azure".into()),
                    "id": e.id,
                    "region": e.region.unwrap_or_else(|| ep.location.clone()),
                })
            })
            .collect();
        if !remove.is_empty() {
            let ctx = format!("PATCH organization {} (remove the endpoint)", self.organization_id);
            let body = json!({ "privateEndpoints": { "remove": remove } });
            let _: Organization = self.call(Method::PATCH, &org_path, Some(body), &ctx).await?;
            change = Change::Applied;
        }
        Ok(change)
    }

    async fn is_registered(&self, ep: &VendorEndpoint) -> Result<bool, VendorError> {
        let id = self.endpoint_id(ep)?;
        for service in self.services_for(ep)? {
            let current = self.get_service(service, ep).await?;
            if !contains(current.private_endpoint_ids.as_deref().unwrap_or_default(), &id) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Only the services' lists: the organization-level entry (deprecated) belongs to
    /// the endpoint, not to a service, and is removed on deregistration.
    async fn withdraw(&self, ep: &VendorEndpoint, targets: &[String]) -> Result<Change, VendorError> {
        self.remove_from_services(ep, targets, true).await
    }
}
