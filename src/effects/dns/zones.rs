//! Private DNS zones and their virtual network links, when `dns.zone_management = "create"`.
//!
//! Why: every vendor runbook (ClickHouse, Elastic, Zilliz) has a person create the private
//! DNS zone and link it to the VNet before the records mean anything. With zone management
//! on, a record whose zone does not exist gets one, linked where clients resolve it.
//!
//! Rules, each from a way this goes wrong in Azure:
//! * **Never shadow a zone.** A VNet can be linked to only one zone of a name (Azure
//!   refuses the second link: "A virtual network cannot be linked to multiple zones with
//!   overlapping namespaces"), and a second same-named zone splits the records between
//!   two copies. So before creating, the estate is searched (Resource Graph, every
//!   subscription configured) for a zone of that name; if one exists anywhere, nothing is
//!   created and the plan says where it is (add it to `[[dns.zones]]` to use it).
//! * **Create conditionally.** `PUT` with `If-None-Match: *` (a zone someone created a
//!   moment ago is used, not overwritten), `location: global`, tagged
//!   [`OWNED_TAG`]` = true`; zone and link writes are long-running (201/202 +
//!   `Azure-AsyncOperation`), so they are awaited.
//! * **Links**: each zone we write to is linked to the endpoint's VNet (`dns.link_to =
//!   "endpoint_vnet"`) or to fixed hub VNets (`dns.link_to = [..]`, or a replica's own
//!   `link_to`), with `registrationEnabled: false` (VM auto-registration would put
//!   foreign records in our zone). A VNet that already has a link in the zone, ours or
//!   not, is left as it is: foreign links are never modified or removed.
//! * **`resolutionPolicy`** is sent only for `privatelink.*` zones (Azure applies it only
//!   to links to privatelink zones) and only when configured; it exists from api-version
//!   2024-06-01, the one this module uses.
//! * **Fallback to internet.** A link with `resolutionPolicy = NxDomainRedirect` makes the
//!   Azure resolver retry a name over public DNS when the private zone answers NXDOMAIN.
//!   For a zone whose records we manage, a record not written yet (waiting for approval),
//!   withdrawn or deleted then resolves to the public endpoint instead of failing:
//!   traffic silently leaves the private path. Every such link is a warning.
//! * **Removal**: a zone (and its links) is removed only when it carries our tag, holds
//!   no record set but SOA/NS, and has no link that is not ours; otherwise it is kept
//!   and the plan says why.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::azure::{PRIVATE_DNS_API, ZoneDirectory, ZoneLocation, map_err};
use super::provider::DnsError;
use crate::arm::client::Method;
use crate::arm::{ArmClient, ArmError, ArmRequest};
use crate::model::RecordKey;

/// The tag on zones and links this product created (the `plautopilot-` prefix of marks).
pub const OWNED_TAG: &str = "plautopilot-owned";

/// How long a zone seen present and linked is not read again (a sweep over a thousand
/// endpoints in one zone reads it once).
const MEMO_TTL: Duration = Duration::from_secs(300);

/// What zone management does besides creating: links and the search scope.
#[derive(Debug, Clone, Default)]
pub struct ZonePolicy {
    /// `None` = link the endpoint's own VNet; `Some` = these VNets (lower case).
    pub link_to: Option<Vec<String>>,
    /// `""` (not sent), `Default` or `NxDomainRedirect`.
    pub resolution_policy: String,
    /// Subscriptions searched for same-named zones.
    pub search_subscriptions: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneState {
    /// There, usable.
    Present,
    Created,
    /// A dry run would create it.
    WouldCreate,
    /// Missing and not created (a same-named zone exists elsewhere); records wait.
    NotCreated,
    /// Reading or writing it failed.
    Failed,
    Removed,
    WouldRemove,
    /// Ours, but kept (not empty, or linked by someone else).
    Kept,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// A link of ours for this VNet is there.
    Present,
    /// Someone else's link: left as it is.
    Foreign,
    Created,
    WouldCreate,
    Failed,
    Removed,
    WouldRemove,
}

/// One link of a zone, as the plan shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LinkLine {
    pub vnet: String,
    pub link: String,
    pub state: LinkState,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One zone (one replica of it), as zone management found and left it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ZoneReport {
    pub zone: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub replica: String,
    /// The zone's ARM id where it is (or would be) managed.
    pub id: String,
    pub state: ZoneState,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    pub links: Vec<LinkLine>,
    /// Links that fall back to internet resolution (see the module docs).
    pub warnings: Vec<String>,
    /// What went wrong (for the reconcile's outcome; the detail says it too).
    #[serde(skip)]
    pub error: Option<DnsError>,
}

impl ZoneReport {
    fn new(key: &RecordKey, id: String, state: ZoneState) -> Self {
        Self {
            zone: key.zone.clone(),
            replica: key.replica.clone(),
            id,
            state,
            detail: String::new(),
            links: Vec::new(),
            warnings: Vec::new(),
            error: None,
        }
    }
    /// Whether records can be planned into this zone.
    pub fn usable(&self) -> bool {
        matches!(self.state, ZoneState::Present | ZoneState::Created | ZoneState::WouldCreate)
    }
    /// Whether zone management would change something here (create, link, remove).
    pub fn changes(&self) -> bool {
        !matches!(self.state, ZoneState::Present | ZoneState::Kept)
            || self.links.iter().any(|l| !matches!(l.state, LinkState::Present | LinkState::Foreign))
    }
    /// One line for the plan and status.
    pub fn describe(&self) -> String {
        let place = if self.replica.is_empty() { String::new() } else { format!(" [{}]", self.replica) };
        let state = serde_json::to_value(self.state).ok().and_then(|v| v.as_str().map(str::to_owned));
        let mut line = format!("zone {}{place}: {}", self.zone, state.unwrap_or_default());
        if !self.detail.is_empty() {
            line.push_str(&format!(" ({})", self.detail));
        }
        for l in &self.links {
            let state = serde_json::to_value(l.state).ok().and_then(|v| v.as_str().map(str::to_owned));
            line.push_str(&format!("; link {} -> {}: {}", l.link, l.vnet, state.unwrap_or_default()));
            if !l.detail.is_empty() {
                line.push_str(&format!(" ({})", l.detail));
            }
        }
        line
    }
}

/// Creates, links and removes zones (see the module docs).
#[derive(Debug)]
pub struct ZoneManager {
    arm: ArmClient,
    directory: ZoneDirectory,
    policy: ZonePolicy,
    /// Zone id + VNets -> when they were last seen present and linked.
    memo: Mutex<HashMap<String, Instant>>,
}

fn is_owned(resource: &Value) -> bool {
    resource
        .pointer(&format!("/tags/{OWNED_TAG}"))
        .and_then(Value::as_str)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn link_vnet(link: &Value) -> String {
    link.pointer("/properties/virtualNetwork/id").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase()
}

/// The name of our link to `vnet`: stable, so a retried create finds its own link.
pub fn link_name(vnet: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in vnet.to_ascii_lowercase().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    let short = vnet.rsplit('/').next().unwrap_or_default();
    let short: String = short.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(40).collect();
    format!("plautopilot-{short}-{:08x}", h as u32)
}

/// Whether Azure accepts `resolutionPolicy` on links to this zone.
pub fn accepts_resolution_policy(zone: &str) -> bool {
    zone.to_ascii_lowercase().starts_with("privatelink.")
}

fn fallback_warning(zone: &str, link: &Value) -> Option<String> {
    let policy = link.pointer("/properties/resolutionPolicy").and_then(Value::as_str)?;
    policy.eq_ignore_ascii_case("NxDomainRedirect").then(|| {
        format!(
            "link {} (VNet {}) falls back to internet (resolutionPolicy NxDomainRedirect): a name in {zone} \
             that has no record here (not written yet, withheld until approval, or removed) is resolved through \
             public DNS instead of failing, so clients in that VNet silently reach the public endpoint",
            link["name"].as_str().unwrap_or("?"),
            link_vnet(link)
        )
    })
}

impl ZoneManager {
    pub fn new(arm: ArmClient, directory: ZoneDirectory, policy: ZonePolicy) -> Self {
        Self { arm, directory, policy, memo: Mutex::new(HashMap::new()) }
    }

    fn place(&self, key: &RecordKey) -> Result<&ZoneLocation, DnsError> {
        self.directory.locate_key(key)
    }

    /// The VNets a zone at `key` is linked to for an endpoint in `endpoint_vnet`.
    /// A replica (one of several same-named zones) is linked only to its own `link_to`:
    /// one VNet can be linked to one zone of a name, so the shared settings would link
    /// the same VNets to every copy, which Azure refuses.
    pub fn vnets_for(&self, key: &RecordKey, endpoint_vnet: &str) -> Vec<String> {
        let own = self.place(key).ok().and_then(|p| p.link_to.clone());
        if !key.replica.is_empty() {
            return own.unwrap_or_default();
        }
        let configured = own.or_else(|| self.policy.link_to.clone());
        match configured {
            Some(v) => v,
            None if endpoint_vnet.is_empty() => Vec::new(),
            None => vec![endpoint_vnet.to_ascii_lowercase()],
        }
    }

    /// Makes sure the zone at `key` (its replica) exists and is linked to `vnets`; a dry
    /// run only says what it would do. `fresh` skips the memo and reports every link of
    /// the zone (status).
    pub async fn prepare(&self, key: &RecordKey, vnets: &[String], write: bool, fresh: bool) -> ZoneReport {
        let id = match self.place(key) {
            Ok(p) => p.zone_id(&key.zone),
            Err(e) => {
                let mut r = ZoneReport::new(key, String::new(), ZoneState::Failed);
                r.detail = e.message.clone();
                r.error = Some(e);
                return r;
            }
        };
        let memo_key = format!("{}|{}", id.to_ascii_lowercase(), vnets.join(","));
        if !fresh {
            let memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
            if memo.get(&memo_key).is_some_and(|at| at.elapsed() < MEMO_TTL) {
                return ZoneReport::new(key, id, ZoneState::Present);
            }
        }
        let mut report = ZoneReport::new(key, id.clone(), ZoneState::Present);
        match self.arm.send(ArmRequest::get(&id, PRIVATE_DNS_API)).await {
            Ok(_) => {}
            Err(e) if e.status() == Some(404) => {
                if let Some(done) = self.create_zone(key, &mut report, vnets, write).await {
                    return done;
                }
            }
            Err(e) => return failed(report, map_err(e, &format!("reading zone {}", key.zone))),
        }
        if !key.replica.is_empty() && vnets.is_empty() && report.detail.is_empty() {
            report.detail = "a replica is linked only to its own [[dns.zones]] link_to (a VNet can be linked to one \
                             zone of a name); none is set, so no link is managed"
                .into();
        }
        if report.state == ZoneState::WouldCreate {
            return report;
        }
        let links = match self.arm.list_all(&format!("{id}/virtualNetworkLinks"), PRIVATE_DNS_API).await {
            Ok(l) => l,
            Err(e) => return failed(report, map_err(e, &format!("listing the links of zone {}", key.zone))),
        };
        report.warnings.extend(links.iter().filter_map(|l| fallback_warning(&key.zone, l)));
        let mut all_linked = true;
        for vnet in vnets {
            let line = match links.iter().find(|l| link_vnet(l) == *vnet) {
                Some(l) => LinkLine {
                    vnet: vnet.clone(),
                    link: l["name"].as_str().unwrap_or_default().to_owned(),
                    state: if is_owned(l) { LinkState::Present } else { LinkState::Foreign },
                    detail: String::new(),
                },
                None => {
                    let line = self.create_link(key, &id, vnet, write).await;
                    all_linked &= line.state == LinkState::Created;
                    line
                }
            };
            report.links.push(line);
        }
        if fresh {
            // Status: every link of the zone, not only the ones this endpoint needs.
            for l in links.iter().filter(|l| !vnets.contains(&link_vnet(l))) {
                report.links.push(LinkLine {
                    vnet: link_vnet(l),
                    link: l["name"].as_str().unwrap_or_default().to_owned(),
                    state: if is_owned(l) { LinkState::Present } else { LinkState::Foreign },
                    detail: String::new(),
                });
            }
        }
        // Present and linked (a dry run that found nothing to do counts too).
        if all_linked && report.state != ZoneState::WouldCreate {
            self.memo.lock().unwrap_or_else(|p| p.into_inner()).insert(memo_key, Instant::now());
        }
        report
    }

    /// The zone is missing: search, then create (or say why not). `Some` ends `prepare`.
    async fn create_zone(
        &self,
        key: &RecordKey,
        report: &mut ZoneReport,
        vnets: &[String],
        write: bool,
    ) -> Option<ZoneReport> {
        let mut subs = self.policy.search_subscriptions.clone();
        if let Ok(p) = self.place(key) {
            subs.push(p.subscription.clone());
        }
        let found = match crate::arm::graph::find_private_dns_zones(&self.arm, &subs, &key.zone).await {
            Ok(ids) => ids,
            Err(e) => {
                return Some(failed(
                    report.clone(),
                    map_err(e, &format!("searching the estate for zone {}", key.zone)),
                ));
            }
        };
        // The index may still list a zone deleted here a moment ago, and the configured
        // replicas of this name are copies on purpose; only others count.
        let ours: Vec<String> = match self.directory.replicas.get(&key.zone) {
            Some(all) => all.iter().map(|l| l.zone_id(&key.zone).to_ascii_lowercase()).collect(),
            None => vec![report.id.to_ascii_lowercase()],
        };
        let elsewhere: Vec<String> = found.into_iter().filter(|f| !ours.contains(&f.to_ascii_lowercase())).collect();
        if !elsewhere.is_empty() {
            let mut r = report.clone();
            r.state = ZoneState::NotCreated;
            r.detail = format!(
                "not created: a zone of this name already exists at {}; a second one would shadow it (a VNet can be \
                 linked to one zone of a name only). Add that zone to [[dns.zones]] to write into it",
                elsewhere.join(", ")
            );
            return Some(r);
        }
        if !write {
            report.state = ZoneState::WouldCreate;
            report.links = vnets
                .iter()
                .map(|v| LinkLine {
                    vnet: v.clone(),
                    link: link_name(v),
                    state: LinkState::WouldCreate,
                    detail: String::new(),
                })
                .collect();
            return None;
        }
        let body = json!({"location": "global", "tags": {OWNED_TAG: "true"}});
        let req = ArmRequest::new(Method::Put, &report.id, PRIVATE_DNS_API).header("If-None-Match", "*").body(body);
        match self.arm.send_and_wait(req).await {
            Ok(_) => {
                report.state = ZoneState::Created;
                tracing::info!(zone = %key.zone, id = %report.id, "private DNS zone created");
                None
            }
            // Someone created it a moment ago: use it (it is not ours).
            Err(e) if e.status() == Some(412) => None,
            Err(e) => Some(failed(report.clone(), map_err(e, &format!("creating zone {}", key.zone)))),
        }
    }

    async fn create_link(&self, key: &RecordKey, zone_id: &str, vnet: &str, write: bool) -> LinkLine {
        let name = link_name(vnet);
        let mut line = LinkLine {
            vnet: vnet.to_owned(),
            link: name.clone(),
            state: LinkState::WouldCreate,
            detail: String::new(),
        };
        if !write {
            return line;
        }
        let mut props = json!({"virtualNetwork": {"id": vnet}, "registrationEnabled": false});
        if !self.policy.resolution_policy.is_empty() && accepts_resolution_policy(&key.zone) {
            props["resolutionPolicy"] = Value::String(self.policy.resolution_policy.clone());
        }
        let body = json!({"location": "global", "tags": {OWNED_TAG: "true"}, "properties": props});
        let req = ArmRequest::new(Method::Put, format!("{zone_id}/virtualNetworkLinks/{name}"), PRIVATE_DNS_API)
            .header("If-None-Match", "*")
            .body(body);
        match self.arm.send_and_wait(req).await {
            Ok(_) | Err(ArmError::Api { status: 412, .. }) => {
                line.state = LinkState::Created;
                tracing::info!(zone = %key.zone, %vnet, link = %name, "virtual network link created");
            }
            Err(e) => {
                line.state = LinkState::Failed;
                line.detail = link_failure(&key.zone, &e);
                tracing::warn!(zone = %key.zone, %vnet, error = %e, "virtual network link not created");
            }
        }
        line
    }

    /// After a deleted endpoint's records are gone: removes the zone at `key` (and our
    /// links) when it is ours, empty and linked by nobody else. `None` = not ours or gone.
    /// `deleting`: names whose records the same plan deletes (a dry run still sees them).
    pub async fn cleanup(&self, key: &RecordKey, write: bool, deleting: &[String]) -> Option<ZoneReport> {
        let id = self.place(key).ok()?.zone_id(&key.zone);
        let zone = match self.arm.send(ArmRequest::get(&id, PRIVATE_DNS_API)).await {
            Ok(r) => r.body,
            Err(e) if e.status() == Some(404) => return None,
            Err(e) => return Some(failed(ZoneReport::new(key, id, ZoneState::Failed), map_err(e, "reading the zone"))),
        };
        if !is_owned(&zone) {
            return None;
        }
        let mut report = ZoneReport::new(key, id.clone(), ZoneState::Kept);
        let sets = match self.arm.list_all(&format!("{id}/ALL"), PRIVATE_DNS_API).await {
            Ok(s) => s,
            Err(e) => return Some(failed(report, map_err(e, "listing the zone's record sets"))),
        };
        let held: Vec<String> = sets
            .iter()
            .filter(|s| {
                let t = s["type"].as_str().unwrap_or_default().to_ascii_lowercase();
                let name = s["name"].as_str().unwrap_or_default().to_ascii_lowercase();
                !(t.ends_with("/soa") || t.ends_with("/ns") || (t.ends_with("/a") && deleting.contains(&name)))
            })
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .collect();
        if !held.is_empty() {
            report.detail = format!("ours but not empty: it still holds {} record set(s)", held.len());
            return Some(report);
        }
        let links = match self.arm.list_all(&format!("{id}/virtualNetworkLinks"), PRIVATE_DNS_API).await {
            Ok(l) => l,
            Err(e) => return Some(failed(report, map_err(e, "listing the zone's links"))),
        };
        let foreign: Vec<&str> = links.iter().filter(|l| !is_owned(l)).filter_map(|l| l["name"].as_str()).collect();
        if !foreign.is_empty() {
            report.detail = format!("ours and empty, but linked by someone else ({}); kept", foreign.join(", "));
            return Some(report);
        }
        for l in &links {
            let name = l["name"].as_str().unwrap_or_default().to_owned();
            let mut line = LinkLine {
                vnet: link_vnet(l),
                link: name.clone(),
                state: LinkState::WouldRemove,
                detail: String::new(),
            };
            if write {
                let mut req =
                    ArmRequest::new(Method::Delete, format!("{id}/virtualNetworkLinks/{name}"), PRIVATE_DNS_API);
                if let Some(etag) = l["etag"].as_str() {
                    req = req.header("If-Match", etag);
                }
                match self.arm.send_and_wait(req).await {
                    Ok(_) => line.state = LinkState::Removed,
                    Err(e) if e.status() == Some(404) => line.state = LinkState::Removed,
                    Err(e) => {
                        line.state = LinkState::Failed;
                        line.detail = e.to_string();
                        report.links.push(line);
                        return Some(failed(report, map_err(e, "removing our link")));
                    }
                }
            }
            report.links.push(line);
        }
        if !write {
            report.state = ZoneState::WouldRemove;
            return Some(report);
        }
        let mut req = ArmRequest::new(Method::Delete, &id, PRIVATE_DNS_API);
        if let Some(etag) = zone["etag"].as_str() {
            req = req.header("If-Match", etag);
        }
        match self.arm.send_and_wait(req).await {
            Ok(_) => {
                report.state = ZoneState::Removed;
                self.memo
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|k, _| !k.starts_with(&id.to_ascii_lowercase()));
                tracing::info!(zone = %key.zone, %id, "our empty private DNS zone removed");
                Some(report)
            }
            // Changed since we read it (a record or link added): kept, looked at again later.
            Err(e) if e.status() == Some(412) => {
                report.detail = "changed while we removed it; kept".into();
                Some(report)
            }
            Err(e) => Some(failed(report, map_err(e, "removing the zone"))),
        }
    }
}

fn failed(mut report: ZoneReport, e: DnsError) -> ZoneReport {
    report.state = ZoneState::Failed;
    report.detail = e.message.clone();
    report.error = Some(e);
    report
}

/// A link Azure refused, in words: the overlapping-namespace refusal names the way out.
fn link_failure(zone: &str, e: &ArmError) -> String {
    let text = e.to_string();
    if text.to_ascii_lowercase().contains("overlapping namespaces") {
        format!(
            "the VNet is already linked to another zone named {zone} (Azure allows one per VNet); records written \
             here do not resolve from it. Use that zone ([[dns.zones]]) or unlink it: {text}"
        )
    } else {
        text
    }
}

/// Whether a zone report's failure is worth a retry (transient or a lost race: its
/// [`crate::model::Retry`] class says so).
pub fn is_transient(report: &ZoneReport) -> bool {
    use crate::model::Classify;
    report.error.as_ref().is_some_and(|e| e.retry().worth_retrying())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_are_stable_and_valid() {
        let v = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/spoke-1";
        assert_eq!(link_name(v), link_name(&v.to_ascii_lowercase()));
        assert!(link_name(v).starts_with("plautopilot-spoke-1-"));
        assert!(link_name(v).len() <= 80);
    }

    #[test]
    fn resolution_policy_only_for_privatelink_zones() {
        assert!(accepts_resolution_policy("privatelink.eastus2.azure.elastic-cloud.com"));
        assert!(!accepts_resolution_policy("corp.example.com"));
    }

    #[test]
    fn fallback_links_are_warned_about() {
        let l = json!({"name": "l1", "properties": {"virtualNetwork": {"id": "/V"}, "resolutionPolicy": "NxDomainRedirect"}});
        let w = fallback_warning("privatelink.x", &l).unwrap();
        assert!(w.contains("NxDomainRedirect") && w.contains("public"), "{w}");
        let d = json!({"name": "l2", "properties": {"resolutionPolicy": "Default"}});
        assert!(fallback_warning("privatelink.x", &d).is_none());
    }
}
