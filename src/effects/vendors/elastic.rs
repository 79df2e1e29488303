//! Elastic Cloud Hosted: one `azure_private_endpoint` traffic-filter ruleset per endpoint.
//!
//! Facts (shared/reference/vendors.md §3): `Authorization: ApiKey <key>`, paths under
//! `/api/v1/deployments/traffic-filter/`, errors `{"errors":[{code,message,fields}]}`.
//! Creating the ruleset is what approves the connection on Elastic's side; associating it
//! with deployments makes it filter their traffic.
//!
//! Why one ruleset per endpoint: a PUT replaces the whole `rules` array and has no ETag,
//! so sharing a ruleset would be a read-modify-write race. Rulesets are found by their
//! rule's `azure_endpoint_guid` (not by name: name uniqueness is unconfirmed, and a POST
//! of the same body probably creates a duplicate), and named deterministically,
//! `pl-autopilot-<pe name>-<first 8 of guid>`, so people can tell them apart.
//!
//! `traffic_filter.azure_private_link_connection_not_found` is expected right after the
//! endpoint is created: Elastic's Private Link Service does not see the pending
//! connection yet. It is Transient with a retry hint, bounded by
//! `connection_not_found_retry_secs` (carried in [`VendorError::give_up_after`]); its HTTP
//! status is unconfirmed, so it is recognised by code whatever the status. A 404 on an
//! association right after create (read-after-create lag, provider issue #857) is
//! Transient too.
//!
//! Removal disassociates every deployment, then deletes the ruleset with
//! `ignore_associations=false` (so a racing association makes the delete fail loudly
//! instead of silently cutting traffic); 404 at either step means already gone. Such a
//! refusal is transient when a re-list shows the association: a concurrent register made
//! it, and the queue's retry reads ARM and the ledger again before deciding.
//!
//! Two instances registering the same endpoint at once both find nothing and both
//! create a ruleset (vendor work is not serialised across instances). So after a create
//! the rulesets for the guid are listed again, and every instance keeps the same one, the
//! lowest id (Elastic reports no creation time; ids compare the same everywhere), deletes
//! the others and associates only the kept one. Those extras carry the same rule for the
//! same endpoint, so they are deleted with `ignore_associations=true`: an association
//! the other instance made to one is replaced by ours on the kept ruleset. A 404 while
//! associating right after that is transient (the other instance kept a ruleset we did
//! not see yet and deleted ours); the retry finds the survivor.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::api::{Change, Vendor, VendorEndpoint, VendorError};
use super::settings::{self, HttpSettings};
use super::transport::{Transport, clip};
use crate::model::Secret;

/// The error code Elastic answers while it cannot see the pending connection.
pub const CONNECTION_NOT_FOUND: &str = "traffic_filter.azure_private_link_connection_not_found";
/// Ruleset type for Azure private endpoints (Elastic Cloud Hosted).
pub const RULESET_TYPE: &str = "azure_private_endpoint";
/// Our ruleset names stay within this many characters (Elastic's limit is unpublished).
pub const MAX_RULESET_NAME: usize = 64;
/// How soon to retry while Elastic cannot see the connection yet.
const NOT_VISIBLE_RETRY: Duration = Duration::from_secs(30);

/// `[vendors.elastic]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElasticConfig {
    pub enabled: bool,
    /// Without `/api/v1` (added per request).
    pub base_url: String,
    /// Name of the environment variable holding the API key.
    pub api_key_env: String,
    /// The deployments' region, e.g. `azure-eastus2`. Empty: `azure-<region>` from the
    /// target alias, else from the endpoint's location. Set it when the endpoint sits in
    /// another region than the deployments (inter-region Private Link).
    pub region: String,
    /// Deployments the ruleset is associated with.
    pub deployment_ids: Vec<String>,
    /// How long `connection_not_found` stays a transient error (then the queue gives up).
    pub connection_not_found_retry_secs: u64,
    pub request_timeout_ms: u64,
    /// Elastic publishes no numbers; 10 per second is a conservative default.
    pub rate_limit_requests: u32,
    pub rate_limit_window_ms: u64,
}

impl Default for ElasticConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: "https://api.elastic-cloud.com".into(),
            api_key_env: "ELASTIC_API_KEY".into(),
            region: String::new(),
            deployment_ids: Vec::new(),
            connection_not_found_retry_secs: 1800,
            request_timeout_ms: 30_000,
            rate_limit_requests: 10,
            rate_limit_window_ms: 1000,
        }
    }
}

/// `TrafficFilterRulesets`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RulesetList {
    pub rulesets: Vec<Ruleset>,
}

/// `TrafficFilterRulesetInfo` (the fields we use).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Ruleset {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub ruleset_type: String,
    #[serde(default)]
    pub include_by_default: bool,
    pub region: String,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub associations: Option<Vec<Association>>,
    #[serde(default)]
    pub total_associations: Option<i64>,
}

/// `TrafficFilterRule` (Azure fields).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_endpoint_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_endpoint_guid: Option<String>,
}

/// `FilterAssociation`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Association {
    pub entity_type: String,
    pub id: String,
}

/// `TrafficFilterRulesetResponse`: the 201 reply to a create.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CreatedRuleset {
    pub id: String,
}

/// `BasicFailedReply`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ErrorReply {
    pub errors: Vec<ErrorElement>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ErrorElement {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
}

/// Codes and messages of an error body; empty when it is not a `BasicFailedReply`.
pub fn parse_errors(body: &[u8]) -> Vec<ErrorElement> {
    serde_json::from_slice::<ErrorReply>(body).map(|r| r.errors).unwrap_or_default()
}

fn error_text(body: &[u8]) -> String {
    let errors = parse_errors(body);
    if errors.is_empty() {
        return clip(&String::from_utf8_lossy(body));
    }
    clip(&errors.iter().map(|e| format!("{}: {}", e.code, e.message)).collect::<Vec<_>>().join("; "))
}

/// The deterministic ruleset name for an endpoint, at most [`MAX_RULESET_NAME`] characters.
pub fn ruleset_name(pe_name: &str, guid: &str) -> String {
    let guid8: String = guid.chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
    let fixed = "pl-autopilot-".len() + 1 + guid8.len();
    let name: String = pe_name.chars().take(MAX_RULESET_NAME.saturating_sub(fixed)).collect();
    format!("pl-autopilot-{name}-{guid8}")
}

/// The Elastic Cloud Hosted client.
pub struct Elastic {
    region: String,
    deployment_ids: Vec<String>,
    not_found_bound: Duration,
    api_key: Secret,
    transport: Transport,
}

impl fmt::Debug for Elastic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Elastic")
            .field("region", &self.region)
            .field("deployment_ids", &self.deployment_ids)
            .field("not_found_bound", &self.not_found_bound)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

const RULESETS: &str = "/api/v1/deployments/traffic-filter/rulesets";

impl Elastic {
    pub fn from_config(cfg: &ElasticConfig, env: &impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        const S: &str = "elastic";
        let region = cfg.region.trim().to_ascii_lowercase();
        if !region.is_empty() && !region.starts_with("azure-") {
            return Err(format!(
                "[vendors.elastic] region {region:?} must look like azure-<region>, e.g. azure-eastus2"
            ));
        }
        let base_url = settings::normalize_base_url(S, &cfg.base_url)?;
        let api_key = settings::secret_from_env(env, S, "api_key_env", &cfg.api_key_env)?;
        super::transport::sensitive_header(&format!("ApiKey {}", api_key.expose()))
            .map_err(|e| format!("[vendors.elastic] {}: {e}", cfg.api_key_env))?;
        let settings = HttpSettings::new(cfg.request_timeout_ms, cfg.rate_limit_requests, cfg.rate_limit_window_ms);
        Ok(Self {
            region,
            deployment_ids: cfg.deployment_ids.iter().map(|d| d.trim().to_string()).filter(|d| !d.is_empty()).collect(),
            not_found_bound: Duration::from_secs(cfg.connection_not_found_retry_secs),
            api_key,
            transport: Transport::new(S, base_url, &settings)?,
        })
    }

    /// The deployments this endpoint goes to: the routing rules' choice, else the defaults.
    fn deployments_for<'a>(&'a self, ep: &'a VendorEndpoint) -> Result<&'a [String], VendorError> {
        let deployments = if ep.targets.is_empty() { &self.deployment_ids } else { &ep.targets };
        if deployments.is_empty() {
            return Err(VendorError::config(
                "no deployment chosen: set [vendors.elastic] deployment_ids or a [[vendors.rules]] entry",
            ));
        }
        Ok(deployments)
    }

    /// The Elastic region for this endpoint's ruleset.
    pub fn region_for(&self, ep: &VendorEndpoint) -> String {
        if !self.region.is_empty() {
            return self.region.clone();
        }
        format!("azure-{}", ep.alias_region().unwrap_or(&ep.location))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        context: &str,
    ) -> Result<super::transport::RawResponse, VendorError> {
        // Checked in from_config, so this cannot fail; mapped anyway rather than unwrapped.
        let auth = super::transport::sensitive_header(&format!("ApiKey {}", self.api_key.expose()))
            .map_err(|e| VendorError::config(format!("{context}: {e}")))?;
        let mut req = self.transport.request(method, path).header(reqwest::header::AUTHORIZATION, auth);
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.transport.send(req, context).await
    }

    fn fail(&self, raw: &super::transport::RawResponse, context: &str) -> VendorError {
        let errors = parse_errors(&raw.body);
        if errors.iter().any(|e| e.code == CONNECTION_NOT_FOUND) {
            let mut err = VendorError::transient(format!(
                "{context}: the vendor cannot see the endpoint's pending connection yet ({})",
                error_text(&raw.body)
            ));
            // A short bound (a test, the sandbox) also shortens the wait between tries.
            let hint = NOT_VISIBLE_RETRY.min(self.not_found_bound / 4).max(Duration::from_secs(1));
            err.retry_after = Some(raw.retry_after.unwrap_or(hint));
            err.give_up_after = Some(self.not_found_bound);
            return err;
        }
        VendorError::from_status(raw.status, context, &error_text(&raw.body), raw.retry_after)
    }

    /// Our rulesets for this endpoint in `region` (normally zero or one).
    async fn find(&self, _ep: &VendorEndpoint, guid: &str, region: &str) -> Result<Vec<Ruleset>, VendorError> {
        let ctx = format!("list traffic filter rulesets in {region}");
        let path = format!("{RULESETS}?region={region}&include_associations=true");
        let raw = self.send(Method::GET, &path, None, &ctx).await?;
        if !raw.status.is_success() {
            return Err(self.fail(&raw, &ctx));
        }
        let list: RulesetList = serde_json::from_slice(&raw.body)
            .map_err(|e| VendorError::transient(format!("{ctx}: unexpected reply: {e}")))?;
        Ok(list
            .rulesets
            .into_iter()
            .filter(|r| {
                r.ruleset_type == RULESET_TYPE
                    && r.rules
                        .iter()
                        .any(|rule| rule.azure_endpoint_guid.as_deref().is_some_and(|g| g.eq_ignore_ascii_case(guid)))
            })
            .collect())
    }

    /// Removes one association of our ruleset; already gone is success.
    async fn disassociate(
        &self,
        ruleset: &Ruleset,
        assoc: &Association,
        _ep: &VendorEndpoint,
    ) -> Result<Change, VendorError> {
        let ctx = format!("disassociate ruleset {} from {} {}", ruleset.id, assoc.entity_type, assoc.id);
        let path = format!("{RULESETS}/{}/associations/{}/{}", ruleset.id, assoc.entity_type, assoc.id);
        self.delete(&path, &ctx).await
    }

    /// A DELETE where 404 means "already gone".
    async fn delete(&self, path: &str, ctx: &str) -> Result<Change, VendorError> {
        let raw = self.send(Method::DELETE, path, None, ctx).await?;
        match raw.status {
            s if s.is_success() => Ok(Change::Applied),
            StatusCode::NOT_FOUND => Ok(Change::AlreadyInPlace),
            _ => Err(self.fail(&raw, ctx)),
        }
    }

    /// Whether this ruleset has associations now (a delete without
    /// `ignore_associations` was refused, and we want to know if a race is why).
    async fn newly_associated(&self, ep: &VendorEndpoint, guid: &str, region: &str, id: &str) -> bool {
        let Ok(now) = self.find(ep, guid, region).await else { return false };
        now.iter().any(|r| r.id.eq_ignore_ascii_case(id) && !r.associations.as_deref().unwrap_or_default().is_empty())
    }

    fn associated(r: &Ruleset, deployment: &str) -> bool {
        r.associations
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|a| a.entity_type == "deployment" && a.id.eq_ignore_ascii_case(deployment))
    }
}

#[async_trait::async_trait]
impl Vendor for Elastic {
    /// Lists the traffic filter rulesets (a read): a refused key answers 401/403.
    async fn check_credentials(&self, _targets: &[String]) -> Result<(), VendorError> {
        let ctx = "list traffic filter rulesets";
        let raw = self.send(Method::GET, RULESETS, None, ctx).await?;
        if !raw.status.is_success() {
            return Err(self.fail(&raw, ctx));
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        self.transport.vendor()
    }

    async fn register(&self, ep: &VendorEndpoint) -> Result<Change, VendorError> {
        let guid = ep.require_guid("the vendor needs as azure_endpoint_guid")?;
        let region = self.region_for(ep);
        let mut change = Change::AlreadyInPlace;
        let mut found = self.find(ep, guid, &region).await?;
        let mut created = None;
        if found.is_empty() {
            let ctx = "create traffic filter ruleset".to_owned();
            let body = json!({
                "name": ruleset_name(&ep.pe_name, guid),
                "description": format!("Managed by private-link-autopilot for {}", ep.pe_id),
                "region": region,
                "type": RULESET_TYPE,
                "include_by_default": false,
                "rules": [{ "azure_endpoint_name": ep.pe_name, "azure_endpoint_guid": guid }],
            });
            let raw = self.send(Method::POST, RULESETS, Some(body), &ctx).await?;
            if !raw.status.is_success() {
                return Err(self.fail(&raw, &ctx));
            }
            let made: CreatedRuleset = serde_json::from_slice(&raw.body)
                .map_err(|e| VendorError::transient(format!("{ctx}: unexpected reply: {e}")))?;
            change = Change::Applied;
            // Another instance may have created one too: look again.
            found = self.find(ep, guid, &region).await?;
            created = Some(made.id);
        }
        // Every candidate id (ours may not be listed yet), the lowest kept, the rest deleted.
        let mut ids: Vec<String> = found.iter().map(|r| r.id.clone()).collect();
        ids.extend(created.iter().filter(|c| !found.iter().any(|r| r.id.eq_ignore_ascii_case(c))).cloned());
        ids.sort_by_key(|id| id.to_ascii_lowercase());
        let Some((ruleset_id, extras)) = ids.split_first() else {
            return Err(VendorError::transient("no traffic filter ruleset for the endpoint after creating one"));
        };
        for extra in extras {
            let ctx = format!("delete duplicate ruleset {extra}");
            if self.delete(&format!("{RULESETS}/{extra}?ignore_associations=true"), &ctx).await? == Change::Applied {
                tracing::info!(endpoint = %ep.pe_id, kept = %ruleset_id, deleted = %extra, "deleted a duplicate Elastic ruleset");
                change = Change::Applied;
            }
        }
        let existing = found.into_iter().find(|r| r.id.eq_ignore_ascii_case(ruleset_id));
        for deployment in self.deployments_for(ep)? {
            if existing.as_ref().is_some_and(|r| Self::associated(r, deployment)) {
                continue;
            }
            let ctx = format!("associate ruleset {ruleset_id} with deployment {deployment}");
            let path = format!("{RULESETS}/{ruleset_id}/associations");
            let body = json!({ "entity_type": "deployment", "id": deployment });
            let raw = self.send(Method::POST, &path, Some(body), &ctx).await?;
            match raw.status {
                StatusCode::CREATED => change = Change::Applied,
                StatusCode::OK => {}
                // Read-after-create lag (the ruleset exists, Elastic cannot find it yet), or
                // a racing instance kept another ruleset and deleted this one.
                StatusCode::NOT_FOUND if created.is_some() => {
                    let mut err = VendorError::transient(format!(
                        "{ctx}: ruleset not visible right after creation ({})",
                        error_text(&raw.body)
                    ));
                    err.retry_after = Some(Duration::from_secs(5));
                    return Err(err);
                }
                _ => return Err(self.fail(&raw, &ctx)),
            }
        }
        Ok(change)
    }

    async fn deregister(&self, ep: &VendorEndpoint) -> Result<Change, VendorError> {
        let guid = ep.require_guid("is needed to find the endpoint's ruleset")?;
        let region = self.region_for(ep);
        let mut change = Change::AlreadyInPlace;
        for ruleset in self.find(ep, guid, &region).await? {
            for assoc in ruleset.associations.as_deref().unwrap_or_default() {
                change = change.merge(self.disassociate(&ruleset, assoc, ep).await?);
            }
            let ctx = format!("delete ruleset {}", ruleset.id);
            let path = format!("{RULESETS}/{}?ignore_associations=false", ruleset.id);
            match self.delete(&path, &ctx).await {
                Ok(c) => change = change.merge(c),
                // Refused because a concurrent register associated it after our listing:
                // not a dead letter, the retry (which re-reads ARM and the ledger) decides.
                Err(e) if !e.is_transient() && self.newly_associated(ep, guid, &region, &ruleset.id).await => {
                    let mut err = VendorError::transient(format!("{} (associated concurrently; retried)", e.message));
                    err.status = e.status;
                    return Err(err);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(change)
    }

    async fn is_registered(&self, ep: &VendorEndpoint) -> Result<bool, VendorError> {
        let guid = ep.require_guid("the vendor needs as azure_endpoint_guid")?;
        let found = self.find(ep, guid, &self.region_for(ep)).await?;
        let deployments = self.deployments_for(ep)?;
        Ok(found.first().is_some_and(|r| deployments.iter().all(|d| Self::associated(r, d))))
    }

    /// Disassociates the endpoint's ruleset from these deployments; the ruleset stays
    /// for the deployments it still serves.
    async fn withdraw(&self, ep: &VendorEndpoint, targets: &[String]) -> Result<Change, VendorError> {
        let guid = ep.require_guid("is needed to find the endpoint's ruleset")?;
        let mut change = Change::AlreadyInPlace;
        for ruleset in self.find(ep, guid, &self.region_for(ep)).await? {
            let dropped = ruleset
                .associations
                .as_deref()
                .unwrap_or_default()
                .iter()
                .filter(|a| a.entity_type == "deployment" && targets.iter().any(|t| t.eq_ignore_ascii_case(&a.id)));
            // Disassociated by the id as Elastic stores it, whatever spelling the ledger has.
            for assoc in dropped {
                change = change.merge(self.disassociate(&ruleset, assoc, ep).await?);
            }
        }
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_names_are_deterministic_and_bounded() {
        assert_eq!(ruleset_name("pe-a", "7c0f05e4-e32b-4b10"), "pl-autopilot-pe-a-7c0f05e4");
        let long = ruleset_name(&"x".repeat(200), "7c0f05e4-e32b");
        assert_eq!(long.chars().count(), MAX_RULESET_NAME);
        assert!(long.ends_with("-7c0f05e4"));
    }
}
