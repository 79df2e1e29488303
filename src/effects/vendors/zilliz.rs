//! Zilliz Cloud: whitelist the endpoint's subscription, then register `<pe-name>.<guid>`.
//!
//! Facts (shared/reference/vendors.md §4): public control-plane API v2,
//! `Authorization: Bearer <key>`, replies `{"code":0,"data":...}`. A failure can arrive
//! with HTTP 200 and a non-zero `code` (the official client treats HTTP ≥ 400 or a code
//! other than 0/200 as failure), so every reply is checked twice. 20 requests per second
//! per user per endpoint.
//!
//! - Register: list the project's endpoints (paged); if `<pe-name>.<resourceGuid>` is
//!   there, nothing to do. Otherwise whitelist the PE's subscription for the project and
//!   region (add-only API with no list: we remember per process what we whitelisted, and
//!   re-adding is assumed harmless), then create the endpoint. A create that fails with
//!   a non-transient error is checked by listing again: another instance may have
//!   created the same endpoint between our list and our POST (the duplicate's code is
//!   unconfirmed; the fake answers code 96021 "already exists"), and if it is listed now
//!   the registration is done (`AlreadyInPlace`), never a duplicate or a dead letter.
//! - Deregister: delete it if listed; absent is success (delete of an absent endpoint is
//!   unconfirmed, so we never send one on purpose; if a concurrent deregistration wins the
//!   race and ours fails, a second list that no longer shows it makes ours a success). The whitelist entry stays: there is no delete
//!   API, and other endpoints of the subscription may need it.
//! - Codes: 96012–96016 (no permission), 96001 (invalid RegionId), 96005 (invalid
//!   projectId) and 80001 (invalid token; assumed) are configuration errors; 429/5xx-like
//!   codes and any listed in `transient_codes` are transient; the rest permanent.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::{Change, Vendor, VendorEndpoint, VendorError};
use super::settings::{self, HttpSettings};
use super::transport::{Transport, clip};
use crate::model::Secret;

/// `[vendors.zilliz]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZillizConfig {
    pub enabled: bool,
    /// `https://api.cloud.zilliz.com` (global) or `https://api.cloud.zilliz.com.cn` (China).
    pub base_url: String,
    /// Name of the environment variable holding the API key.
    pub api_key_env: String,
    pub project_id: String,
    /// Zilliz region id, e.g. `az-eastus`. Empty: `az-<region>` from the target alias,
    /// else from the endpoint's location (whether `az-` or `azure-` applies is unconfirmed:
    /// set it explicitly when in doubt).
    pub region_id: String,
    /// Extra body codes to treat as transient (the published code list is incomplete).
    pub transient_codes: Vec<i64>,
    pub request_timeout_ms: u64,
    /// Zilliz allows 20 requests per second per user per endpoint; we apply it per key.
    pub rate_limit_requests: u32,
    pub rate_limit_window_ms: u64,
}

impl Default for ZillizConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: "https://api.cloud.zilliz.com".into(),
            api_key_env: "ZILLIZ_API_KEY".into(),
            project_id: String::new(),
            region_id: String::new(),
            transient_codes: Vec::new(),
            request_timeout_ms: 30_000,
            rate_limit_requests: 20,
            rate_limit_window_ms: 1000,
        }
    }
}

/// Every reply: `{code, data}` or `{code, message}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Reply<T> {
    pub code: i64,
    #[serde(default = "Option::default")]
    pub data: Option<T>,
    #[serde(default)]
    pub message: Option<String>,
}

/// `data` of the endpoint list.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPage {
    #[serde(default)]
    pub endpoints: Vec<PrivateEndpointEntry>,
    #[serde(default)]
    pub current_page: Option<u64>,
    #[serde(default)]
    pub page_size: Option<u64>,
    #[serde(default)]
    pub count: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrivateEndpointEntry {
    pub region_id: String,
    pub endpoint_id: String,
    #[serde(default)]
    pub cloud_id: Option<String>,
    #[serde(default)]
    pub endpoint_service: Option<String>,
    #[serde(default)]
    pub endpoint_service_status: Option<String>,
    #[serde(default)]
    pub endpoint_status: Option<String>,
}

/// `data` of the endpoint-service list.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointServicePage {
    #[serde(default)]
    pub endpoint_services: Vec<EndpointService>,
    #[serde(default)]
    pub count: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointService {
    pub region_id: String,
    #[serde(default)]
    pub cloud_id: Option<String>,
    pub endpoint_service: String,
    #[serde(default)]
    pub whitelist_required: Option<bool>,
}

/// The endpoint id Zilliz expects for an Azure private endpoint.
/// How long a listing of the project's endpoints is reused by the reads that only look.
const LISTING_TTL: std::time::Duration = std::time::Duration::from_secs(20);

pub fn endpoint_id(pe_name: &str, resource_guid: &str) -> String {
    format!("{pe_name}.{resource_guid}")
}

/// The body's code, if it is a failure by the official client's rule (not 0 or 200).
pub fn failure_code(code: i64) -> Option<i64> {
    (code != 0 && code != 200).then_some(code)
}

/// The Zilliz Cloud client.
pub struct Zilliz {
    project_id: String,
    region_id: String,
    transient_codes: Vec<i64>,
    api_key: Secret,
    transport: Transport,
    /// (region, subscription) pairs whitelisted by this process (no list API exists).
    whitelisted: Mutex<HashSet<(String, String)>>,
    /// The project's endpoint list, reused for [`LISTING_TTL`] by the reads that only
    /// look (see [`Zilliz::listing`]).
    listing_cache: tokio::sync::Mutex<Option<(std::time::Instant, Vec<PrivateEndpointEntry>)>>,
}

impl fmt::Debug for Zilliz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Zilliz")
            .field("project_id", &self.project_id)
            .field("region_id", &self.region_id)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

const PAGE_SIZE: u64 = 100;
/// A project with more than this many pages of endpoints is not something we page through.
const MAX_PAGES: u64 = 100;

impl Zilliz {
    pub fn from_config(cfg: &ZillizConfig, env: &impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        const S: &str = "zilliz";
        settings::require_setting(S, "project_id", &cfg.project_id)?;
        let base_url = settings::normalize_base_url(S, &cfg.base_url)?;
        let api_key = settings::secret_from_env(env, S, "api_key_env", &cfg.api_key_env)?;
        let settings = HttpSettings::new(cfg.request_timeout_ms, cfg.rate_limit_requests, cfg.rate_limit_window_ms);
        Ok(Self {
            project_id: cfg.project_id.trim().to_string(),
            region_id: cfg.region_id.trim().to_string(),
            transient_codes: cfg.transient_codes.clone(),
            api_key,
            transport: Transport::new(S, base_url, &settings)?,
            whitelisted: Mutex::new(HashSet::new()),
            listing_cache: tokio::sync::Mutex::new(None),
        })
    }

    /// The Zilliz region id for this endpoint.
    pub fn region_for(&self, ep: &VendorEndpoint) -> String {
        if !self.region_id.is_empty() {
            return self.region_id.clone();
        }
        format!("az-{}", ep.alias_region().unwrap_or(&ep.location))
    }

    fn classify_code(&self, code: i64, context: &str, message: &str) -> VendorError {
        let text = format!("{context}: error code {code}: {}", clip(message));
        match code {
            80001 | 96001 | 96005 | 96012..=96016 => VendorError::config(text),
            429 | 500..=599 => VendorError::transient(text),
            c if self.transient_codes.contains(&c) => VendorError::transient(text),
            _ => VendorError::permanent(text),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        context: &str,
    ) -> Result<Option<T>, VendorError> {
        let mut req = self.transport.request(method, path).bearer_auth(self.api_key.expose());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let raw = self.transport.send(req, context).await?;
        let reply = serde_json::from_slice::<Reply<Value>>(&raw.body);
        if !raw.status.is_success() {
            let (code_err, detail) = match &reply {
                Ok(r) => (failure_code(r.code), r.message.clone().unwrap_or_default()),
                Err(_) => (None, String::from_utf8_lossy(&raw.body).into_owned()),
            };
            let mut err = VendorError::from_status(raw.status, context, &clip(&detail), raw.retry_after);
            // A body code that names a configuration problem is more precise than the status.
            if let Some(code) = code_err
                && !err.is_transient()
            {
                let by_code = self.classify_code(code, context, &detail);
                if by_code.kind == super::api::VendorErrorKind::Config {
                    err.kind = by_code.kind;
                }
            }
            return Err(err);
        }
        let reply = reply.map_err(|e| VendorError::transient(format!("{context}: unexpected reply: {e}")))?;
        if let Some(code) = failure_code(reply.code) {
            let mut err = self.classify_code(code, context, reply.message.as_deref().unwrap_or("(no message)"));
            err.retry_after = raw.retry_after;
            return Err(err);
        }
        match reply.data {
            None | Some(Value::Null) => Ok(None),
            Some(data) => serde_json::from_value(data)
                .map(Some)
                .map_err(|e| VendorError::transient(format!("{context}: unexpected reply data: {e}"))),
        }
    }

    async fn list_endpoints(&self, _ep: &VendorEndpoint) -> Result<Vec<PrivateEndpointEntry>, VendorError> {
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let ctx = format!("list private endpoints of project {} (page {page})", self.project_id);
            let path =
                format!("/v2/projects/{}/privateEndpoints?currentPage={page}&pageSize={PAGE_SIZE}", self.project_id);
            let data: EndpointPage = self.call(Method::GET, &path, None, &ctx).await?.unwrap_or_default();
            let got = data.endpoints.len() as u64;
            all.extend(data.endpoints);
            let total = data.count.unwrap_or(0);
            if got == 0 || all.len() as u64 >= total {
                break;
            }
        }
        Ok(all)
    }

    /// The project's endpoints, from a listing at most [`LISTING_TTL`] old. Zilliz can only
    /// list the whole project (100 per page), so asking once per work item made a sweep
    /// O(N²) in requests; reused, a sweep's N items page the project about once per TTL.
    /// Only the "is it there already?" reads use it: a stale "missing" costs one create
    /// that the race check turns into "already in place", and deregistration always reads
    /// afresh (a stale "already gone" would leave an endpoint allowlisted).
    async fn listing(&self, ep: &VendorEndpoint) -> Result<Vec<PrivateEndpointEntry>, VendorError> {
        let mut cache = self.listing_cache.lock().await;
        if let Some((at, list)) = cache.as_ref()
            && at.elapsed() < LISTING_TTL
        {
            return Ok(list.clone());
        }
        let list = self.list_endpoints(ep).await?;
        *cache = Some((std::time::Instant::now(), list.clone()));
        Ok(list)
    }

    /// Our own write changed the list.
    async fn forget_listing(&self) {
        *self.listing_cache.lock().await = None;
    }

    fn find<'a>(list: &'a [PrivateEndpointEntry], id: &str, region: &str) -> Option<&'a PrivateEndpointEntry> {
        list.iter().find(|e| e.endpoint_id.eq_ignore_ascii_case(id) && e.region_id.eq_ignore_ascii_case(region))
    }

    fn id_for(ep: &VendorEndpoint) -> Result<String, VendorError> {
        let guid = ep.require_guid("the vendor's endpoint id <pe-name>.<resourceGuid> needs")?;
        Ok(endpoint_id(&ep.pe_name, guid))
    }

    async fn ensure_whitelisted(&self, ep: &VendorEndpoint, region: &str) -> Result<(), VendorError> {
        let key = (region.to_string(), ep.subscription_id.to_ascii_lowercase());
        if self.whitelisted.lock().unwrap_or_else(PoisonError::into_inner).contains(&key) {
            return Ok(());
        }
        // The subscription is the endpoint's (named by the caller) and the project is the
        // one configured: the region is what tells this call apart.
        let ctx = format!("whitelist the subscription in {region}");
        let path = format!("/v2/projects/{}/privateEndpointWhitelist", self.project_id);
        let body = json!({ "regionId": region, "outerUserId": ep.subscription_id });
        let _: Option<Value> = self.call(Method::POST, &path, Some(body), &ctx).await?;
        self.whitelisted.lock().unwrap_or_else(PoisonError::into_inner).insert(key);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Vendor for Zilliz {
    /// `GET /v2/privateEndpointServices?projectId=…` → `endpointServices[].endpointService`.
    async fn published_aliases(&self, _targets: &[String]) -> Result<Vec<String>, VendorError> {
        let ctx = format!("list private endpoint services of project {}", self.project_id);
        let path = format!("/v2/privateEndpointServices?projectId={}&currentPage=1&pageSize=100", self.project_id);
        let data: Option<serde_json::Value> = self.call(Method::GET, &path, None, &ctx).await?;
        let services = data.as_ref().and_then(|d| d.get("endpointServices")).and_then(|v| v.as_array());
        Ok(services
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("endpointService").and_then(|v| v.as_str()).map(str::to_owned))
            .collect())
    }

    fn name(&self) -> &'static str {
        self.transport.vendor()
    }

    async fn register(&self, ep: &VendorEndpoint) -> Result<Change, VendorError> {
        let id = Self::id_for(ep)?;
        let region = self.region_for(ep);
        if Self::find(&self.listing(ep).await?, &id, &region).is_some() {
            return Ok(Change::AlreadyInPlace);
        }
        self.forget_listing().await;
        self.ensure_whitelisted(ep, &region).await?;
        let ctx = format!("add the endpoint in {region}");
        let path = format!("/v2/projects/{}/privateEndpoints", self.project_id);
        let body = json!({ "regionId": region, "endpointId": id });
        match self.call::<Value>(Method::POST, &path, Some(body), &ctx).await {
            Ok(_) => Ok(Change::Applied),
            // Lost a race with another instance creating the same endpoint: done if listed.
            Err(e) if !e.is_transient() && e.kind != super::api::VendorErrorKind::Config => {
                if Self::find(&self.list_endpoints(ep).await?, &id, &region).is_some() {
                    tracing::debug!(endpoint = %ep.pe_id, "created by a concurrent registration");
                    Ok(Change::AlreadyInPlace)
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn deregister(&self, ep: &VendorEndpoint) -> Result<Change, VendorError> {
        let id = Self::id_for(ep)?;
        let region = self.region_for(ep);
        self.forget_listing().await;
        let list = self.list_endpoints(ep).await?;
        let Some(found) = Self::find(&list, &id, &region) else {
            return Ok(Change::AlreadyInPlace);
        };
        let ctx = format!("delete the endpoint in {region}");
        let path = format!(
            "/v2/projects/{}/privateEndpoints/{}?regionId={}",
            self.project_id, found.endpoint_id, found.region_id
        );
        match self.call::<Value>(Method::DELETE, &path, None, &ctx).await {
            Ok(_) => Ok(Change::Applied),
            // Another instance deleted it between our list and our DELETE: gone is done.
            Err(e) if !e.is_transient() && e.kind != super::api::VendorErrorKind::Config => {
                if Self::find(&self.list_endpoints(ep).await?, &id, &region).is_none() {
                    Ok(Change::AlreadyInPlace)
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn is_registered(&self, ep: &VendorEndpoint) -> Result<bool, VendorError> {
        let id = Self::id_for(ep)?;
        Ok(Self::find(&self.listing(ep).await?, &id, &self.region_for(ep)).is_some())
    }

    /// Zilliz endpoints belong to the one configured project: routing never gives Zilliz
    /// targets, so there is nothing to withdraw from.
    async fn withdraw(&self, _ep: &VendorEndpoint, _targets: &[String]) -> Result<Change, VendorError> {
        Ok(Change::AlreadyInPlace)
    }
}
