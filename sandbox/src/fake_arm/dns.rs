//! Azure Private DNS (api-version 2024-06-01): zones and A record sets.
//!
//! What the client relies on and this fake therefore reproduces:
//! * record-set writes are synchronous: PUT 201 (created) / 200 (updated), DELETE 200
//!   (deleted) / 204 (absent); zone PUT/DELETE are long-running (202 +
//!   `Azure-AsyncOperation` + `Location` + `Retry-After`);
//! * optimistic concurrency: every write gets a fresh GUID ETag; `If-None-Match: *`
//!   fails with 412 when the set exists, `If-Match` fails with 412 on a different ETag
//!   or a missing set;
//! * names are case-insensitive and come back lower-cased, `fqdn` ends with a dot,
//!   `metadata` is omitted when empty, a set holds at most 20 records;
//! * a record PUT into a missing zone is 404 `ParentResourceNotFound`;
//! * a record-set body that sets a read-only property (`properties.fqdn`,
//!   `properties.isAutoRegistered`: `RecordSetProperties` in `privatedns.json` 2024-06-01
//!   marks both `readOnly`) is refused with 400 `InvalidRequestContent`. ARM's guidance
//!   lets a provider ignore read-only input; the fake is stricter on purpose, so a client
//!   that echoes a GET back as its PUT (and so would also send a stale view) is caught.
//! * zones keep the `tags` of their PUT; `If-None-Match: *` / `If-Match` apply to zone
//!   and link writes as to record sets;
//! * virtual network links (`…/virtualNetworkLinks/{name}`, long-running like zones):
//!   `properties.virtualNetwork.id` is required; linking a VNet that is already linked to
//!   another zone *of the same name* is refused with 400 `BadRequest` "A virtual network
//!   cannot be linked to multiple zones with overlapping namespaces. …" (the wording public
//!   deployment reports quote); a second link between one zone and one VNet is refused too
//!   (the docs: "You can create only one link between a private DNS zone and a virtual
//!   network"; the fake's code and wording). `resolutionPolicy` (`Default` |
//!   `NxDomainRedirect`) exists from 2024-06-01 and applies to privatelink zones only, so
//!   it is refused at older versions and on other zones (the fake's wording). With RBAC on,
//!   a link also needs `Microsoft.Network/virtualNetworks/join/action` on the VNet, as in
//!   Azure;
//! * a zone that still holds record sets other than SOA/NS, or virtual network links, is
//!   not deleted: 409 `Conflict` (the fake's wording; stricter than a portal delete).

use std::net::Ipv4Addr;

use axum::http::Method;
use serde_json::{Map, Value, json};

use super::{Answer, Call, FakeArm, Shared, World, page};
use crate::host_emulator::new_guid;

pub const PRIVATE_DNS_API: &str = "2024-06-01";
const MAX_RECORDS: usize = 20;
/// `RecordSetProperties` members the spec marks `readOnly`.
const READ_ONLY_RECORD_PROPERTIES: &[&str] = &["fqdn", "isAutoRegistered"];

/// One A record set, flattened for tests and the demo's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView {
    pub zone: String,
    /// The zone's ARM id (tells same-named replicas apart).
    pub zone_id: String,
    pub name: String,
    pub ttl: u64,
    pub addresses: Vec<Ipv4Addr>,
    pub metadata: Map<String, Value>,
    pub etag: String,
}

impl RecordView {
    fn from_body(v: &Value) -> Option<Self> {
        let id = v["id"].as_str()?;
        let zone = id.split('/').skip_while(|s| !s.eq_ignore_ascii_case("privateDnsZones")).nth(1)?.to_owned();
        let props = &v["properties"];
        let zone_id = id.rsplit_once("/A/").or_else(|| id.rsplit_once("/a/")).map_or("", |(z, _)| z).to_owned();
        Some(Self {
            zone,
            zone_id,
            name: v["name"].as_str()?.to_owned(),
            ttl: props["ttl"].as_u64().unwrap_or_default(),
            addresses: props["aRecords"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["ipv4Address"].as_str()?.parse().ok())
                .collect(),
            metadata: props["metadata"].as_object().cloned().unwrap_or_default(),
            etag: v["etag"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// Whether this product wrote it.
    pub fn is_managed(&self) -> bool {
        self.metadata.get("managedby").and_then(Value::as_str)
            == Some(private_link_autopilot::model::ownership::MANAGED_BY)
    }
}

pub fn zone_id(subscription: &str, resource_group: &str, zone: &str) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Network/privateDnsZones/{zone}"
    )
}

fn zone_body(id: &str, name: &str) -> Value {
    zone_body_tagged(id, name, json!({}))
}

fn zone_body_tagged(id: &str, name: &str, tags: Value) -> Value {
    json!({
        "id": id,
        "name": name,
        "type": "Microsoft.Network/privateDnsZones",
        "etag": new_guid(),
        "location": "global",
        "tags": tags,
        "properties": {
            "maxNumberOfRecordSets": 25000,
            "numberOfRecordSets": 1,
            "maxNumberOfVirtualNetworkLinks": 1000,
            "numberOfVirtualNetworkLinks": 0,
            "maxNumberOfVirtualNetworkLinksWithRegistration": 100,
            "numberOfVirtualNetworkLinksWithRegistration": 0,
            "provisioningState": "Succeeded",
            "internalId": new_guid()
        }
    })
}

/// Writes a record set directly (seeding, and the zone-group integration).
pub(super) fn store_record(
    w: &mut World,
    zone_id: &str,
    name: &str,
    ttl: u64,
    ips: &[String],
    metadata: Value,
) -> Value {
    let zone = w.get(zone_id).cloned();
    let canonical_zone = zone.as_ref().and_then(|z| z["id"].as_str()).unwrap_or(zone_id).to_owned();
    let zone_name = canonical_zone.rsplit('/').next().unwrap_or_default().to_owned();
    let name = name.to_ascii_lowercase();
    let mut props = json!({
        "ttl": ttl,
        "fqdn": format!("{name}.{zone_name}."),
        "isAutoRegistered": false,
        "aRecords": ips.iter().map(|ip| json!({"ipv4Address": ip})).collect::<Vec<_>>()
    });
    if metadata.as_object().is_some_and(|m| !m.is_empty()) {
        props["metadata"] = metadata;
    }
    let body = json!({
        "id": format!("{canonical_zone}/A/{name}"),
        "name": name,
        "type": "Microsoft.Network/privateDnsZones/A",
        "etag": new_guid(),
        "properties": props
    });
    w.put(body.clone());
    body
}

impl FakeArm {
    /// Creates a private DNS zone (as if its PUT had completed). Returns its id.
    pub fn add_zone(&self, subscription: &str, resource_group: &str, zone: &str) -> String {
        let id = zone_id(subscription, resource_group, &zone.to_ascii_lowercase());
        let mut w = self.shared().world();
        if w.get(&id).is_none() {
            w.put(zone_body(&id, &zone.to_ascii_lowercase()));
        }
        id
    }

    /// Writes a record set as someone else would (portal, Terraform): no ownership
    /// unless `metadata` says so.
    pub fn put_record(&self, zone_id: &str, name: &str, ips: &[Ipv4Addr], metadata: Value) {
        let ips: Vec<String> = ips.iter().map(Ipv4Addr::to_string).collect();
        store_record(&mut self.shared().world(), zone_id, name, 3600, &ips, metadata);
    }

    /// Writes a record set with this TTL (benchmarks seed an estate as the product left it).
    pub fn put_record_with_ttl(&self, zone_id: &str, name: &str, ttl: u32, ips: &[Ipv4Addr], metadata: Value) {
        let ips: Vec<String> = ips.iter().map(Ipv4Addr::to_string).collect();
        store_record(&mut self.shared().world(), zone_id, name, ttl.into(), &ips, metadata);
    }

    /// Adds a virtual network link as someone else would (no ownership tag unless `tags`
    /// says so). Returns its id.
    pub fn add_link(
        &self,
        zone_id: &str,
        name: &str,
        vnet: &str,
        resolution_policy: Option<&str>,
        tags: Value,
    ) -> String {
        let mut w = self.shared().world();
        let zone = w.get(zone_id).and_then(|z| z["id"].as_str()).unwrap_or(zone_id).to_owned();
        let id = format!("{zone}/virtualNetworkLinks/{name}");
        let mut props = json!({"virtualNetwork": {"id": vnet}, "registrationEnabled": false});
        if let Some(p) = resolution_policy {
            props["resolutionPolicy"] = json!(p);
        }
        w.put(link_body(&id, name, tags, props));
        id
    }

    /// The virtual network links of a zone, in id order.
    pub fn links(&self, zone_id: &str) -> Vec<Value> {
        self.shared().world().children(zone_id, "virtualNetworkLinks")
    }

    /// One record set, if present.
    pub fn record(&self, zone_id: &str, name: &str) -> Option<RecordView> {
        let w = self.shared().world();
        w.get(&format!("{zone_id}/A/{name}")).and_then(RecordView::from_body)
    }

    /// Every A record set in every zone, in id order.
    pub fn all_records(&self) -> Vec<RecordView> {
        let w = self.shared().world();
        w.resources
            .iter()
            .filter(|(k, _)| k.contains("/privatednszones/") && k.contains("/a/"))
            .filter_map(|(_, s)| RecordView::from_body(&s.body))
            .collect()
    }
}

/// Routes under `…/privateDnsZones`.
pub(super) fn route(shared: &Shared, call: &Call<'_>, s: &[&str]) -> Answer {
    let Some(i) = s.iter().position(|x| *x == "privatednszones") else {
        return Answer::not_found(call.path);
    };
    let get = *call.method == Method::GET;
    match &s[i + 1..] {
        [] if get => {
            let prefix = call.path.to_ascii_lowercase() + "/";
            let items: Vec<Value> = shared
                .world()
                .resources
                .iter()
                .filter(|(k, _)| {
                    let under_rg = k.starts_with(&prefix);
                    let under_sub = s.len() == 5 && k.starts_with(&format!("/subscriptions/{}/", s[1]));
                    (under_rg || under_sub)
                        && k.contains("/privatednszones/")
                        && k.split("/privatednszones/").nth(1).is_some_and(|r| !r.contains('/'))
                })
                .map(|(_, v)| v.body.clone())
                .collect();
            // Counting takes the lock again: only after the listing's guard is gone.
            let items = items.iter().map(|z| zone_with_counts(shared, z)).collect();
            page(shared, call, items)
        }
        [_zone] => zone_op(shared, call, s),
        [_zone, kind] if get && (*kind == "a" || *kind == "all") => list_records(shared, call),
        [_zone, "a", _name] => record_op(shared, call),
        [_zone, "virtualnetworklinks"] if get => {
            let zone_path = call.path.rsplit_once('/').map(|(z, _)| z).unwrap_or_default();
            if shared.world().get(zone_path).is_none() {
                return parent_missing(zone_path);
            }
            let items = shared.world().children(zone_path, "virtualNetworkLinks");
            page(shared, call, items)
        }
        [_zone, "virtualnetworklinks", _name] => link_op(shared, call, s),
        [_zone, _kind, _name] => Answer::error(400, "UnsupportedBySandbox", "The sandbox models A record sets only."),
        _ => Answer::error(
            404,
            "InvalidResourceType",
            format!("The resource type could not be found for path '{}'.", call.path),
        ),
    }
}

fn zone_with_counts(shared: &Shared, zone: &Value) -> Value {
    let mut z = zone.clone();
    let id = zone["id"].as_str().unwrap_or_default();
    let n = shared.world().children(id, "A").len() + 1; // + the SOA every zone has
    z["properties"]["numberOfRecordSets"] = json!(n);
    z["properties"]["numberOfVirtualNetworkLinks"] = json!(shared.world().children(id, "virtualNetworkLinks").len());
    z
}

fn zone_op(shared: &Shared, call: &Call<'_>, s: &[&str]) -> Answer {
    let existing = shared.world().get(call.path).cloned();
    match *call.method {
        Method::GET => match existing {
            Some(z) => Answer::json(200, zone_with_counts(shared, &z)),
            None => Answer::not_found(call.path),
        },
        Method::PUT => {
            if existing.is_some() && call.header("if-none-match") == Some("*") {
                return precondition("*", "If-None-Match", "an existing zone");
            }
            if let Some(a) = if_match(call, existing.as_ref()) {
                return a;
            }
            let body = if call.body.is_empty() {
                json!({})
            } else {
                match call.json_body() {
                    Ok(b) => b,
                    Err(a) => return a,
                }
            };
            if let Some(l) = body["location"].as_str().filter(|l| !l.eq_ignore_ascii_case("global")) {
                return Answer::error(
                    400,
                    "BadRequest",
                    format!("The location '{l}' is not valid for a private DNS zone; use 'global'."),
                );
            }
            let name = call.path.rsplit('/').next().unwrap_or_default().to_ascii_lowercase();
            let tags = body.get("tags").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
            let body = zone_body_tagged(call.path, &name, tags);
            shared.world().put(body.clone());
            let mut a = Answer::empty(202);
            a.headers = dns_operation(shared, s[1], s[3], Some(body));
            a
        }
        Method::DELETE => {
            if existing.is_none() {
                return Answer::empty(204);
            }
            if let Some(a) = if_match(call, existing.as_ref()) {
                return a;
            }
            let mut w = shared.world();
            let records = w.children(call.path, "A").len();
            let links = w.children(call.path, "virtualNetworkLinks").len();
            if records > 0 || links > 0 {
                return Answer::error(
                    409,
                    "Conflict",
                    format!(
                        "The private DNS zone cannot be deleted: it holds {records} record set(s) besides SOA/NS and \
                         {links} virtual network link(s). Delete them first."
                    ),
                );
            }
            w.remove(call.path);
            drop(w);
            let mut a = Answer::empty(202);
            a.headers = dns_operation(shared, s[1], s[3], None);
            a
        }
        _ => Answer::error(405, "MethodNotAllowed", "The requested method is not allowed on a zone in the sandbox."),
    }
}

/// A zone operation's headers, shaped like the fixture `PrivateZonePut.json`.
fn dns_operation(shared: &Shared, sub: &str, rg: &str, result: Option<Value>) -> Vec<(String, String)> {
    let provider = format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network");
    shared.operation_headers(
        &provider,
        ("privateDnsOperationStatuses", "privateDnsOperationResults"),
        PRIVATE_DNS_API,
        result,
    )
}

fn list_records(shared: &Shared, call: &Call<'_>) -> Answer {
    let zone_path = call.path.rsplit_once('/').map(|(z, _)| z).unwrap_or_default();
    if shared.world().get(zone_path).is_none() {
        return parent_missing(zone_path);
    }
    let suffix = call.query.get("$recordsetnamesuffix").map(|s| s.to_ascii_lowercase());
    let items: Vec<Value> = shared
        .world()
        .children(zone_path, "A")
        .into_iter()
        .filter(|r| suffix.as_ref().is_none_or(|sfx| r["name"].as_str().is_some_and(|n| n.ends_with(sfx.as_str()))))
        .collect();
    page(shared, call, items)
}

/// `If-Match` against a zone's or link's current ETag (`None` = satisfied or absent).
fn if_match(call: &Call<'_>, existing: Option<&Value>) -> Option<Answer> {
    let m = call.header("if-match")?;
    let current = existing.and_then(|e| e["etag"].as_str());
    match current {
        Some(cur) if m == "*" || m.trim_matches('"') == cur => None,
        _ => Some(precondition(m, "If-Match", current.unwrap_or("(none)"))),
    }
}

fn link_body(id: &str, name: &str, tags: Value, mut props: Value) -> Value {
    props["virtualNetworkLinkState"] = json!("Completed");
    props["provisioningState"] = json!("Succeeded");
    json!({
        "id": id,
        "name": name,
        "type": "Microsoft.Network/privateDnsZones/virtualNetworkLinks",
        "etag": new_guid(),
        "location": "global",
        "tags": tags,
        "properties": props
    })
}

/// `…/privateDnsZones/{zone}/virtualNetworkLinks/{name}`.
fn link_op(shared: &Shared, call: &Call<'_>, s: &[&str]) -> Answer {
    let zone_path = call.path.rsplitn(3, '/').nth(2).unwrap_or_default().to_owned();
    let zone_name = zone_path.rsplit('/').next().unwrap_or_default().to_ascii_lowercase();
    let name = call.path.rsplit('/').next().unwrap_or_default().to_owned();
    let existing = shared.world().get(call.path).cloned();
    match *call.method {
        Method::GET => match existing {
            Some(l) => Answer::json(200, l),
            None => Answer::not_found(call.path),
        },
        Method::DELETE => {
            if existing.is_none() {
                return Answer::empty(204);
            }
            if let Some(a) = if_match(call, existing.as_ref()) {
                return a;
            }
            shared.world().remove(call.path);
            let mut a = Answer::empty(202);
            a.headers = dns_operation(shared, s[1], s[3], None);
            a
        }
        Method::PUT => {
            if shared.world().get(&zone_path).is_none() {
                return parent_missing(&zone_path);
            }
            if existing.is_some() && call.header("if-none-match") == Some("*") {
                return precondition("*", "If-None-Match", "an existing link");
            }
            if let Some(a) = if_match(call, existing.as_ref()) {
                return a;
            }
            let body = match call.json_body() {
                Ok(b) => b,
                Err(a) => return a,
            };
            let props = &body["properties"];
            let Some(vnet) = props.pointer("/virtualNetwork/id").and_then(Value::as_str).map(str::to_owned) else {
                return Answer::error(
                    400,
                    "BadRequest",
                    "The virtual network link needs properties.virtualNetwork.id.",
                );
            };
            if let Some(policy) = props.get("resolutionPolicy") {
                let api = call.query.get("api-version").map(String::as_str).unwrap_or_default();
                if api < "2024-06-01" {
                    return Answer::error(
                        400,
                        "InvalidRequestContent",
                        format!("The property 'properties.resolutionPolicy' is not supported at api-version '{api}'."),
                    );
                }
                if !matches!(policy.as_str(), Some("Default" | "NxDomainRedirect")) {
                    return Answer::error(400, "BadRequest", format!("The resolution policy {policy} is not valid."));
                }
                if !zone_name.starts_with("privatelink.") {
                    return Answer::error(
                        400,
                        "BadRequest",
                        format!(
                            "A resolution policy can only be set on links to privatelink zones, not '{zone_name}'."
                        ),
                    );
                }
            }
            let mut w = shared.world();
            if let Some(grants) = w.grants.clone()
                && !grants.allows("Microsoft.Network/virtualNetworks/join/action", &vnet)
            {
                let action = "Microsoft.Network/virtualNetworks/join/action";
                w.denials.push(super::rbac::Denial {
                    method: call.method.to_string(),
                    path: call.path.to_owned(),
                    action: action.into(),
                    scope: vnet.clone(),
                });
                return super::rbac::authorization_failed(&grants.client_id, &grants.object_id, action, &vnet);
            }
            let vnet_lower = vnet.to_ascii_lowercase();
            let own_id = call.path.to_ascii_lowercase();
            let clash = w.resources.iter().find_map(|(k, st)| {
                let (zone_key, _) = k.split_once("/virtualnetworklinks/")?;
                let same_vnet = st
                    .body
                    .pointer("/properties/virtualNetwork/id")
                    .and_then(Value::as_str)?
                    .eq_ignore_ascii_case(&vnet_lower);
                (same_vnet && *k != own_id && zone_key.rsplit('/').next() == Some(zone_name.as_str()))
                    .then(|| zone_key.to_owned())
            });
            if let Some(other_zone) = clash {
                if other_zone == zone_path.to_ascii_lowercase() {
                    return Answer::error(
                        400,
                        "BadRequest",
                        format!(
                            "The virtual network '{vnet}' is already linked to the private DNS zone '{zone_name}'; only one link between a zone and a virtual network is allowed."
                        ),
                    );
                }
                return Answer::error(
                    400,
                    "BadRequest",
                    format!(
                        "A virtual network cannot be linked to multiple zones with overlapping namespaces. You tried to \
                         link virtual network with '{zone_name}' and '{zone_name}' zones."
                    ),
                );
            }
            let zone_canonical = w.get(&zone_path).and_then(|z| z["id"].as_str()).unwrap_or(&zone_path).to_owned();
            let id = format!("{zone_canonical}/virtualNetworkLinks/{name}");
            let tags = body.get("tags").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
            let mut stored_props = json!({
                "virtualNetwork": {"id": vnet},
                "registrationEnabled": props["registrationEnabled"].as_bool().unwrap_or(false),
            });
            if let Some(p) = props.get("resolutionPolicy") {
                stored_props["resolutionPolicy"] = p.clone();
            }
            let stored = link_body(&id, &name, tags, stored_props);
            w.put(stored.clone());
            drop(w);
            let mut a = Answer::empty(202);
            a.headers = dns_operation(shared, s[1], s[3], Some(stored));
            a
        }
        _ => Answer::error(405, "MethodNotAllowed", "The requested method is not allowed on a virtual network link."),
    }
}

fn precondition(expected: &str, header: &str, current: &str) -> Answer {
    Answer::error(
        412,
        "PreconditionFailed",
        format!("The condition '{expected}' in the {header} header was not satisfied. The current was '{current}'."),
    )
}

fn parent_missing(zone_path: &str) -> Answer {
    let zone = zone_path.rsplit('/').next().unwrap_or_default();
    Answer::error(
        404,
        "ParentResourceNotFound",
        format!("Can not perform requested operation on nested resource. Parent resource '{zone}' not found."),
    )
}

fn record_op(shared: &Shared, call: &Call<'_>) -> Answer {
    let (zone_path, _) = call.path.rsplit_once("/").unwrap_or_default();
    let zone_path = zone_path.rsplit_once('/').map(|(z, _)| z).unwrap_or_default(); // strip "/A"
    let name = call.path.rsplit('/').next().unwrap_or_default().to_ascii_lowercase();
    let record_id = format!("{zone_path}/A/{name}");
    let mut w = shared.world();
    let zone_exists = w.get(zone_path).is_some();
    let existing = w.get(&record_id).cloned();
    let current_etag = existing.as_ref().and_then(|r| r["etag"].as_str()).map(str::to_owned);
    // Preconditions, in the order ARM documents them.
    if let Some(m) = call.header("if-match") {
        let ok = match &current_etag {
            None => false,
            Some(cur) => m == "*" || m.trim_matches('"') == cur,
        };
        if !ok {
            if *call.method == Method::DELETE && existing.is_none() {
                return Answer::empty(204);
            }
            return precondition(m, "If-Match", current_etag.as_deref().unwrap_or("(none)"));
        }
    }
    if call.header("if-none-match") == Some("*") && existing.is_some() {
        return precondition("*", "If-None-Match", current_etag.as_deref().unwrap_or_default());
    }
    match *call.method {
        Method::GET => match existing {
            Some(r) => with_etag(Answer::json(200, r)),
            None => Answer::not_found(&record_id),
        },
        Method::DELETE => {
            if !zone_exists {
                return parent_missing(zone_path);
            }
            match w.remove(&record_id) {
                Some(_) => Answer::empty(200),
                None => Answer::empty(204),
            }
        }
        Method::PUT | Method::PATCH => {
            if !zone_exists {
                return parent_missing(zone_path);
            }
            let body = match call.json_body() {
                Ok(b) => b,
                Err(a) => return a,
            };
            if let Some(ro) = READ_ONLY_RECORD_PROPERTIES.iter().find(|p| body["properties"].get(**p).is_some()) {
                return Answer::error(
                    400,
                    "InvalidRequestContent",
                    format!("The property 'properties.{ro}' is read-only and cannot be set."),
                );
            }
            let patch = *call.method == Method::PATCH;
            if patch && existing.is_none() {
                return Answer::not_found(&record_id);
            }
            let base = if patch { existing.clone().unwrap_or(Value::Null) } else { Value::Null };
            let props = &body["properties"];
            let pick = |key: &str| {
                if props.get(key).is_some() { props[key].clone() } else { base["properties"][key].clone() }
            };
            let records = pick("aRecords");
            let mut ips = Vec::new();
            for r in records.as_array().into_iter().flatten() {
                match r["ipv4Address"].as_str().and_then(|s| s.parse::<Ipv4Addr>().ok()) {
                    Some(ip) => ips.push(ip.to_string()),
                    None => {
                        return Answer::error(
                            400,
                            "BadRequest",
                            format!("The IPv4 address '{}' is invalid.", r["ipv4Address"]),
                        );
                    }
                }
            }
            if ips.len() > MAX_RECORDS {
                return Answer::error(
                    400,
                    "BadRequest",
                    format!(
                        "The record set has {} records; a record set can contain at most {MAX_RECORDS}.",
                        ips.len()
                    ),
                );
            }
            let ttl = pick("ttl").as_u64().unwrap_or(3600);
            let metadata = pick("metadata");
            let stored = store_record(&mut w, zone_path, &name, ttl, &ips, metadata);
            let status = if existing.is_some() { 200 } else { 201 };
            with_etag(Answer::json(status, stored))
        }
        _ => Answer::error(405, "MethodNotAllowed", "The requested method is not allowed on a record set."),
    }
}

fn with_etag(a: Answer) -> Answer {
    let etag = a.body.as_ref().and_then(|b| b["etag"].as_str()).map(str::to_owned);
    match etag {
        Some(e) => a.with_header("ETag", e),
        None => a,
    }
}
