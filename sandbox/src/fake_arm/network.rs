//! Private endpoints, their NICs and zone groups, as `Microsoft.Network` returns them.
//!
//! The JSON follows the 2025-07-01 shape plus what real responses carry beyond the
//! spec: `properties.resourceGuid` (absent from the spec, present in ARM's answers), a
//! NIC named `<pe>.nic.<guid>` whose IP configurations carry
//! `privateLinkConnectionProperties`, an alias kept verbatim in `privateLinkServiceId`
//! with `groupIds: []`, and `customDnsConfigs` emptied while a zone group exists.
//!
//! Endpoints are created either by tests through [`FakeArm::put_endpoint`] or over HTTP
//! with ARM's own `PUT …/privateEndpoints/{name}` body (so official SDKs and scripts can
//! drive the sandbox, see `put_from_request`), deleted with `DELETE` (202 + operation
//! headers, then 404), and both go through the same code. A connection to a vendor's
//! alias has no owner in the fake, so the sandbox adds one admin route for its approval:
//! `PUT {pe}/x-sandbox/connectionState` (`set_state_from_request`).
//!
//! The platform's zone-group integration is modelled too: adding a zone group writes
//! the endpoint's A records into those zones with the metadata the Network RP leaves
//! (`creator`), so tests can check that we treat them as someone else's.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::{Answer, Call, FakeArm, Shared, World, dns, page};
use crate::host_emulator::new_guid;

pub const NETWORK_API: &str = "2025-07-01";

/// What a private endpoint connects to.
#[derive(Debug, Clone)]
pub enum LinkSpec {
    /// A Private Link Service alias (SaaS vendors); one IP.
    Alias { alias: String, ip: Option<Ipv4Addr> },
    /// An Azure resource and sub-resource (`groupId`), with one IP per required member.
    Resource { id: String, group_id: String, members: Vec<MemberSpec> },
}

#[derive(Debug, Clone)]
pub struct MemberSpec {
    pub required_member_name: String,
    pub fqdns: Vec<String>,
    pub ip: Option<Ipv4Addr>,
}

impl MemberSpec {
    pub fn new(member: &str, fqdns: &[&str]) -> Self {
        Self { required_member_name: member.into(), fqdns: fqdns.iter().map(|f| (*f).to_owned()).collect(), ip: None }
    }
}

/// A private endpoint as a person would create it.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
    pub link: LinkSpec,
    /// Requested as a manual connection (no RBAC on the target): Pending until approved.
    pub manual: bool,
    pub status: String,
    pub provisioning_state: String,
    pub tags: BTreeMap<String, String>,
    /// The subnet the request named; `None` = the spoke's `spoke-vnet/endpoints`.
    pub subnet: Option<String>,
    /// The connection's name as requested; `None` = the endpoint's name.
    pub connection_name: Option<String>,
    /// The consumer's request message; `None` = a fixed text for manual requests.
    pub request_message: Option<String>,
}

impl EndpointSpec {
    pub fn alias(subscription: &str, resource_group: &str, name: &str, location: &str, alias: &str) -> Self {
        Self::new(subscription, resource_group, name, location, LinkSpec::Alias { alias: alias.into(), ip: None })
            .manual()
    }

    pub fn resource(
        subscription: &str,
        resource_group: &str,
        name: &str,
        location: &str,
        target: &str,
        group_id: &str,
        members: Vec<MemberSpec>,
    ) -> Self {
        let link = LinkSpec::Resource { id: target.into(), group_id: group_id.into(), members };
        let mut s = Self::new(subscription, resource_group, name, location, link);
        s.status = "Approved".into();
        s
    }

    fn new(subscription: &str, resource_group: &str, name: &str, location: &str, link: LinkSpec) -> Self {
        Self {
            subscription: subscription.into(),
            resource_group: resource_group.into(),
            name: name.into(),
            location: location.into(),
            link,
            manual: false,
            status: "Pending".into(),
            provisioning_state: "Succeeded".into(),
            tags: BTreeMap::new(),
            subnet: None,
            connection_name: None,
            request_message: None,
        }
    }

    pub fn manual(mut self) -> Self {
        self.manual = true;
        self.status = "Pending".into();
        self
    }

    /// The target's side has approved the connection (as a vendor or owner would).
    pub fn approved(mut self) -> Self {
        self.status = "Approved".into();
        self
    }

    pub fn with_ip(mut self, ip: Ipv4Addr) -> Self {
        match &mut self.link {
            LinkSpec::Alias { ip: slot, .. } => *slot = Some(ip),
            LinkSpec::Resource { members, .. } => {
                for m in members {
                    m.ip = Some(ip);
                }
            }
        }
        self
    }

    pub fn with_tag(mut self, key: &str, value: &str) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    pub fn provisioning(mut self, state: &str) -> Self {
        self.provisioning_state = state.into();
        self
    }

    pub fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/privateEndpoints/{}",
            self.subscription, self.resource_group, self.name
        )
    }
}

fn etag() -> String {
    format!("W/\"{}\"", new_guid())
}

impl FakeArm {
    /// Creates (or updates) a private endpoint and its NIC, as the PE PUT's
    /// long-running operation would leave them. Returns the PE id.
    pub fn put_endpoint(&self, spec: &EndpointSpec) -> String {
        put_endpoint(&mut self.shared().world(), spec)
    }

    /// Deletes a private endpoint with its NIC and zone group (and the records the
    /// zone group made), as the PE DELETE's long-running operation would. Returns
    /// whether it existed.
    pub fn delete_endpoint(&self, id: &str) -> bool {
        delete_endpoint(self.shared(), id)
    }

    /// Sets the connection state of an endpoint's (first) connection, as the target's
    /// owner approving or rejecting it would.
    pub fn set_connection_status(&self, id: &str, status: &str) -> bool {
        set_status(&mut self.shared().world(), id, status, &format!("{status} by the sandbox"))
    }

    /// Adds the platform's DNS integration (a `privateDnsZoneGroup` named `default`)
    /// for the given zone ids: the Network RP then owns those records.
    pub fn add_zone_group(&self, pe_id: &str, zone_ids: &[&str]) {
        let shared = self.shared();
        let mut w = shared.world();
        let Some(mut pe) = w.get(pe_id).cloned() else { return };
        let canonical = pe["id"].as_str().unwrap_or(pe_id).to_owned();
        let name = pe["name"].as_str().unwrap_or_default().to_owned();
        let guid = pe.pointer("/properties/resourceGuid").and_then(Value::as_str).unwrap_or_default().to_owned();
        let fqdn_ips: Vec<(String, String)> = pe
            .pointer("/properties/customDnsConfigs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some((c["fqdn"].as_str()?.to_owned(), c.pointer("/ipAddresses/0").and_then(Value::as_str)?.to_owned()))
            })
            .collect();
        let mut configs = Vec::new();
        for zone_id in zone_ids {
            let zone_name = zone_id.rsplit('/').next().unwrap_or_default().to_ascii_lowercase();
            let mut record_sets = Vec::new();
            // `privatelink.<public suffix>` holds `<name>` for `<name>.<public suffix>`
            // (the public name is CNAMEd into the privatelink zone).
            let public = zone_name.replacen("privatelink.", "", 1);
            for (fqdn, ip) in &fqdn_ips {
                let fqdn_l = fqdn.to_ascii_lowercase();
                let Some(label) = fqdn_l.strip_suffix(&format!(".{public}")) else { continue };
                let metadata =
                    json!({"creator": format!("created by private endpoint {name} with resource guid {guid}")});
                dns::store_record(&mut w, zone_id, label, 10, std::slice::from_ref(ip), metadata);
                record_sets.push(json!({
                    "recordType": "A", "recordSetName": label, "fqdn": format!("{label}.{zone_name}."),
                    "ttl": 10, "ipAddresses": [ip], "provisioningState": "Succeeded"
                }));
            }
            configs.push(json!({
                "name": zone_name.replace('.', "-"),
                "properties": {"privateDnsZoneId": zone_id, "recordSets": record_sets}
            }));
        }
        let group = json!({
            "name": "default",
            "id": format!("{canonical}/privateDnsZoneGroups/default"),
            "etag": etag(),
            "properties": {"provisioningState": "Succeeded", "privateDnsZoneConfigs": configs}
        });
        w.put(group);
        // The platform empties customDnsConfigs while a zone group exists (CAF #1020).
        pe["properties"]["customDnsConfigs"] = json!([]);
        w.put(pe);
    }
}

/// [`FakeArm::put_endpoint`] on the world itself (the PE PUT route uses it too).
fn put_endpoint(w: &mut World, spec: &EndpointSpec) -> String {
    let id = spec.id();
    let existing = w.get(&id).cloned();
    let guid = existing
        .as_ref()
        .and_then(|e| e.pointer("/properties/resourceGuid").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(new_guid);
    let nic_id = existing
        .as_ref()
        .and_then(|e| e.pointer("/properties/networkInterfaces/0/id").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| {
            format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkInterfaces/{}.nic.{}",
                spec.subscription,
                spec.resource_group,
                spec.name,
                new_guid()
            )
        });
    let subnet = spec.subnet.clone().unwrap_or_else(|| {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/virtualNetworks/spoke-vnet/subnets/endpoints",
            spec.subscription, spec.resource_group
        )
    });
    // (member, group, fqdns, ip) per IP configuration.
    let mut ipconfigs: Vec<(String, String, Vec<String>, Ipv4Addr)> = Vec::new();
    let (target, group_ids) = match &spec.link {
        LinkSpec::Alias { alias, ip } => {
            let ip = ip.unwrap_or_else(|| next_ip(&mut w.next_ip));
            ipconfigs.push((String::new(), String::new(), Vec::new(), ip));
            (alias.clone(), Vec::<String>::new())
        }
        LinkSpec::Resource { id: target, group_id, members } => {
            for m in members {
                let ip = m.ip.unwrap_or_else(|| next_ip(&mut w.next_ip));
                ipconfigs.push((m.required_member_name.clone(), group_id.clone(), m.fqdns.clone(), ip));
            }
            (target.clone(), vec![group_id.clone()])
        }
    };
    let has_zone_group = !w.children(&id, "privateDnsZoneGroups").is_empty();
    let custom_dns: Vec<Value> = if has_zone_group {
        Vec::new()
    } else {
        ipconfigs
            .iter()
            .flat_map(|(_, _, fqdns, ip)| {
                fqdns.iter().map(move |f| json!({"fqdn": f, "ipAddresses": [ip.to_string()]}))
            })
            .collect()
    };
    let conn_kind = if spec.manual { "manualPrivateLinkServiceConnections" } else { "privateLinkServiceConnections" };
    let conn_name = spec.connection_name.clone().unwrap_or_else(|| spec.name.clone());
    let request_message = spec
        .request_message
        .clone()
        .unwrap_or_else(|| if spec.manual { "Requested by the platform team".to_owned() } else { String::new() });
    let connection = json!({
        "name": conn_name,
        "id": format!("{id}/{conn_kind}/{conn_name}"),
        "etag": etag(),
        "type": format!("Microsoft.Network/privateEndpoints/{conn_kind}"),
        "properties": {
            "provisioningState": "Succeeded",
            "privateLinkServiceId": target,
            "groupIds": group_ids,
            "requestMessage": request_message,
            "privateLinkServiceConnectionState": {
                "status": spec.status,
                "description": if spec.status == "Approved" { "Auto-Approved" } else { "Awaiting approval" },
                "actionsRequired": "None"
            }
        }
    });
    let (auto, manual) = if spec.manual { (vec![], vec![connection]) } else { (vec![connection], vec![]) };
    let pe = json!({
        "name": spec.name,
        "id": id,
        "etag": etag(),
        "type": "Microsoft.Network/privateEndpoints",
        "location": spec.location,
        "tags": spec.tags,
        "properties": {
            "provisioningState": spec.provisioning_state,
            "resourceGuid": guid,
            "privateLinkServiceConnections": auto,
            "manualPrivateLinkServiceConnections": manual,
            "customNetworkInterfaceName": "",
            "subnet": {"id": subnet},
            "ipConfigurations": [],
            "networkInterfaces": [{"id": nic_id}],
            "customDnsConfigs": custom_dns,
            "applicationSecurityGroups": [],
            "ipVersionType": "IPv4"
        }
    });
    let configs: Vec<Value> = ipconfigs
        .iter()
        .enumerate()
        .map(|(i, (member, group, fqdns, ip))| {
            let name = if member.is_empty() {
                format!("privateEndpointIpConfig.{}", new_guid())
            } else {
                format!("{group}-{member}.privateEndpoint")
            };
            json!({
                "name": name,
                "id": format!("{nic_id}/ipConfigurations/{name}"),
                "etag": etag(),
                "type": "Microsoft.Network/networkInterfaces/ipConfigurations",
                "properties": {
                    "provisioningState": "Succeeded",
                    "privateIPAddress": ip.to_string(),
                    "privateIPAllocationMethod": "Dynamic",
                    "subnet": {"id": subnet},
                    "primary": i == 0,
                    "privateIPAddressVersion": "IPv4",
                    "privateLinkConnectionProperties": {"groupId": group, "requiredMemberName": member, "fqdns": fqdns}
                }
            })
        })
        .collect();
    let nic = json!({
        "name": nic_id.rsplit('/').next().unwrap_or_default(),
        "id": nic_id,
        "etag": etag(),
        "type": "Microsoft.Network/networkInterfaces",
        "location": spec.location,
        "properties": {
            "provisioningState": "Succeeded",
            "resourceGuid": new_guid(),
            "ipConfigurations": configs,
            "dnsSettings": {"dnsServers": [], "appliedDnsServers": []},
            "enableAcceleratedNetworking": false,
            "enableIPForwarding": false,
            "privateEndpoint": {"id": id},
            "nicType": "Standard"
        }
    });
    super::connections::on_endpoint_put(w, &pe);
    w.put(pe);
    w.put(nic);
    id
}

/// Sets the state of an endpoint's connections and of the matching connection on its
/// target, if the fake has one (both sides agree, as in Azure). Returns whether the
/// endpoint had a connection.
fn set_status(w: &mut World, id: &str, status: &str, description: &str) -> bool {
    let Some(mut pe) = w.get(id).cloned() else { return false };
    let state = json!({"status": status, "description": description, "actionsRequired": "None"});
    let mut changed = false;
    for kind in ["privateLinkServiceConnections", "manualPrivateLinkServiceConnections"] {
        if let Some(conns) = pe.pointer_mut(&format!("/properties/{kind}")).and_then(Value::as_array_mut) {
            for c in conns {
                if let Some(slot) = c.pointer_mut("/properties/privateLinkServiceConnectionState") {
                    *slot = state.clone();
                    changed = true;
                }
            }
        }
    }
    let pe_id = pe["id"].as_str().unwrap_or(id).to_ascii_lowercase();
    let on_target: Vec<Value> = w
        .resources
        .iter()
        .filter(|(k, s)| {
            k.contains("/privateendpointconnections/")
                && s.body.pointer("/properties/privateEndpoint/id").and_then(Value::as_str).map(str::to_ascii_lowercase)
                    == Some(pe_id.clone())
        })
        .map(|(_, s)| s.body.clone())
        .collect();
    for mut conn in on_target {
        conn["properties"]["privateLinkServiceConnectionState"] = state.clone();
        w.put(conn);
    }
    w.put(pe);
    changed
}

fn next_ip(counter: &mut u32) -> Ipv4Addr {
    let ip = Ipv4Addr::from(*counter);
    *counter += 1;
    ip
}

fn delete_endpoint(shared: &Shared, id: &str) -> bool {
    let mut w = shared.world();
    let Some(pe) = w.remove(id) else { return false };
    super::connections::on_endpoint_delete(&mut w, id);
    if let Some(nic) = pe.pointer("/properties/networkInterfaces/0/id").and_then(Value::as_str) {
        w.remove(nic);
    }
    for group in w.children(id, "privateDnsZoneGroups") {
        let group_id = group["id"].as_str().unwrap_or_default().to_owned();
        for cfg in group.pointer("/properties/privateDnsZoneConfigs").and_then(Value::as_array).into_iter().flatten() {
            let zone = cfg.pointer("/properties/privateDnsZoneId").and_then(Value::as_str).unwrap_or_default();
            for rs in cfg.pointer("/properties/recordSets").and_then(Value::as_array).into_iter().flatten() {
                if let Some(label) = rs["recordSetName"].as_str() {
                    w.remove(&format!("{zone}/A/{label}"));
                }
            }
        }
        w.remove(&group_id);
    }
    true
}

/// `Microsoft.Network` routes other than private DNS.
pub(super) fn route(shared: &Shared, call: &Call<'_>, s: &[&str]) -> Answer {
    let get = *call.method == axum::http::Method::GET;
    let del = *call.method == axum::http::Method::DELETE;
    let put = *call.method == axum::http::Method::PUT;
    match s {
        ["subscriptions", sub, "providers", "microsoft.network", "privateendpoints"] if get => {
            let prefix = format!("/subscriptions/{sub}/");
            list_type(shared, call, &prefix, "microsoft.network/privateendpoints")
        }
        ["subscriptions", sub, "resourcegroups", rg, "providers", "microsoft.network", "privateendpoints"] if get => {
            let prefix = format!("/subscriptions/{sub}/resourcegroups/{rg}/");
            list_type(shared, call, &prefix, "microsoft.network/privateendpoints")
        }
        ["subscriptions", _, "resourcegroups", _, "providers", "microsoft.network", "privateendpoints", _] => {
            if get {
                match shared.world().get(call.path) {
                    Some(v) => Answer::json(200, v.clone()),
                    None => Answer::not_found(call.path),
                }
            } else if del {
                let existed = shared.world().get(call.path).is_some();
                if !existed {
                    return Answer::empty(204);
                }
                delete_endpoint(shared, call.path);
                let mut a = Answer::empty(202);
                a.headers = shared.start_operation(s[1], "sandbox", None);
                a
            } else if put {
                put_from_request(shared, call)
            } else {
                Answer::error(405, "MethodNotAllowed", "The sandbox supports GET, PUT and DELETE on private endpoints.")
            }
        }
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            "microsoft.network",
            "privateendpoints",
            _,
            "x-sandbox",
            "connectionstate",
        ] if put => set_state_from_request(shared, call),
        [.., "privateendpoints", _, "privatednszonegroups"] if get => {
            let parent = call.path.rsplit_once('/').map(|(p, _)| p).unwrap_or_default();
            if shared.world().get(parent).is_none() {
                return Answer::not_found(parent);
            }
            let items = shared.world().children(parent, "privateDnsZoneGroups");
            page(shared, call, items)
        }
        [.., "privateendpoints", _, "privatednszonegroups", _] if get => match shared.world().get(call.path) {
            Some(v) => Answer::json(200, v.clone()),
            None => Answer::not_found(call.path),
        },
        ["subscriptions", _, "resourcegroups", _, "providers", "microsoft.network", "networkinterfaces", _] if get => {
            match shared.world().get(call.path) {
                Some(v) => Answer::json(200, v.clone()),
                None => Answer::not_found(call.path),
            }
        }
        _ => Answer::error(
            404,
            "InvalidResourceType",
            format!("The resource type could not be found for path '{}'.", call.path),
        ),
    }
}

/// Lists resources of `type_path` (`namespace/type`, lower-case) under `prefix`.
fn list_type(shared: &Shared, call: &Call<'_>, prefix: &str, type_path: &str) -> Answer {
    let marker = format!("/providers/{type_path}/");
    let items: Vec<Value> = shared
        .world()
        .resources
        .iter()
        .filter(|(k, _)| {
            k.starts_with(prefix) && k.contains(&marker) && !k.split(&marker).nth(1).unwrap_or("/").contains('/')
        })
        .map(|(_, v)| v.body.clone())
        .collect();
    page(shared, call, items)
}

/// `PUT …/privateEndpoints/{name}` with an ARM body (`location`, `properties.subnet.id`,
/// one connection in `privateLinkServiceConnections` or
/// `manualPrivateLinkServiceConnections` whose `privateLinkServiceId` is a resource id or
/// an alias), turned into an [`EndpointSpec`] and stored by the same [`put_endpoint`] the
/// tests use, so an endpoint created over HTTP is indistinguishable from a seeded one.
///
/// The spec (`privateEndpoint.json`, 2025-07-01, `PrivateEndpoints_CreateOrUpdate`) makes the
/// PUT long-running with 200/201 and `final-state-via: azure-async-operation`, and the
/// DELETE long-running with 200/202/204 and `final-state-via: location` (the existing
/// DELETE route answers 202 with both headers, its `Location` ending in 204).
///
/// Answers like the Network RP's long-running PUT: 201 (200 on update) with the resource
/// in `provisioningState: Updating` and `Azure-AsyncOperation` + `Retry-After`; the stored
/// resource is already `Succeeded`, which is what a client sees after polling. Automatic
/// connections are Approved at once (the requester is taken to hold the RBAC on the
/// target), manual ones Pending. A resource target of a type with a connection API
/// ([`super::connections::spec_versions`]) that the fake does not know yet is created as a
/// bare approvable target, so its owner can approve with `PUT
/// {target}/privateEndpointConnections/{name}`. A re-PUT keeps the endpoint's IPs and,
/// for the same target, its connection state. Error codes for invalid bodies are the
/// fake's own (`InvalidRequestFormat`): the point is to refuse what ARM refuses, not to
/// reproduce every message.
fn put_from_request(shared: &Shared, call: &Call<'_>) -> Answer {
    let body = match call.json_body() {
        Ok(b) => b,
        Err(a) => return a,
    };
    let invalid = |m: &str| Answer::error(400, "InvalidRequestFormat", format!("Cannot parse the request: {m}."));
    let Some(location) = body["location"].as_str().filter(|l| !l.trim().is_empty()) else {
        return Answer::error(400, "LocationRequired", "The location property is required for this definition.");
    };
    let props = &body["properties"];
    let Some(subnet) = props.pointer("/subnet/id").and_then(Value::as_str).filter(|s| s.starts_with("/subscriptions/"))
    else {
        return invalid("properties.subnet.id must be a subnet's resource id");
    };
    let list = |k: &str| props[k].as_array().cloned().unwrap_or_default();
    let (conn, manual) = match (
        list("privateLinkServiceConnections").as_slice(),
        list("manualPrivateLinkServiceConnections").as_slice(),
    ) {
        ([c], []) => (c.clone(), false),
        ([], [c]) => (c.clone(), true),
        _ => return invalid("exactly one private link service connection (automatic or manual) is required"),
    };
    let Some(target) =
        conn.pointer("/properties/privateLinkServiceId").and_then(Value::as_str).filter(|t| !t.is_empty())
    else {
        return invalid("privateLinkServiceId is required");
    };
    let group_ids: Vec<String> = conn
        .pointer("/properties/groupIds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str().map(str::to_owned))
        .collect();
    let is_resource = target.starts_with('/');
    if is_resource && group_ids.len() != 1 {
        return invalid("a connection to a resource needs exactly one groupId");
    }
    // Original spelling of subscription, resource group and name.
    let parts: Vec<&str> = call.path.split('/').filter(|p| !p.is_empty()).collect();
    let (sub, rg, name) = (parts[1], parts[3], parts[7]);
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) || name.len() > 80 {
        return Answer::error(400, "InvalidResourceName", format!("Resource name {name} is invalid."));
    }

    let mut w = shared.world();
    let existing = w.get(call.path).cloned();
    let same_target = existing.as_ref().is_some_and(|e| {
        let p = &e["properties"];
        p.pointer("/privateLinkServiceConnections/0/properties/privateLinkServiceId")
            .or_else(|| p.pointer("/manualPrivateLinkServiceConnections/0/properties/privateLinkServiceId"))
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case(target))
    });
    let prior_status = existing.as_ref().filter(|_| same_target).and_then(|e| {
        let p = &e["properties"];
        p.pointer("/privateLinkServiceConnections/0/properties/privateLinkServiceConnectionState/status")
            .or_else(|| {
                p.pointer("/manualPrivateLinkServiceConnections/0/properties/privateLinkServiceConnectionState/status")
            })
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let prior_ips: Vec<Ipv4Addr> = existing
        .as_ref()
        .and_then(|e| e.pointer("/properties/networkInterfaces/0/id").and_then(Value::as_str))
        .and_then(|nic| w.get(nic))
        .and_then(|nic| nic.pointer("/properties/ipConfigurations").and_then(Value::as_array).cloned())
        .into_iter()
        .flatten()
        .filter_map(|c| {
            c.pointer("/properties/privateIPAddress").and_then(Value::as_str).and_then(|ip| ip.parse().ok())
        })
        .collect();
    let link = if is_resource {
        let mut members = default_members(target, &group_ids[0], location);
        for (m, ip) in members.iter_mut().zip(&prior_ips) {
            m.ip = Some(*ip);
        }
        LinkSpec::Resource { id: target.to_owned(), group_id: group_ids[0].clone(), members }
    } else {
        LinkSpec::Alias { alias: target.to_owned(), ip: prior_ips.first().copied() }
    };
    let mut spec = EndpointSpec::new(sub, rg, name, location, link);
    spec.manual = manual;
    spec.status = prior_status.unwrap_or_else(|| if manual { "Pending" } else { "Approved" }.to_owned());
    spec.tags = body["tags"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect();
    spec.subnet = Some(subnet.to_owned());
    spec.connection_name = Some(conn["name"].as_str().unwrap_or(name).to_owned());
    spec.request_message =
        Some(conn.pointer("/properties/requestMessage").and_then(Value::as_str).unwrap_or_default().to_owned());
    if is_resource && w.get(target).is_none() && super::connections::spec_versions(&type_of(target)).is_some() {
        let target_name = target.rsplit('/').next().unwrap_or_default();
        w.put(
            json!({"id": target, "name": target_name, "type": type_of(target), "location": location, "properties": {}}),
        );
    }
    let id = put_endpoint(&mut w, &spec);
    let mut answer_body = w.get(&id).cloned().unwrap_or(Value::Null);
    drop(w);
    answer_body["properties"]["provisioningState"] = json!("Updating");
    let mut a = Answer::json(if existing.is_some() { 200 } else { 201 }, answer_body);
    // The Network RP's PUT sends Azure-AsyncOperation and Retry-After (no Location).
    a.headers = shared
        .start_operation(sub, &location.to_ascii_lowercase(), None)
        .into_iter()
        .filter(|(k, _)| k != "Location")
        .collect();
    a
}

/// `PUT {pe}/x-sandbox/connectionState` with `{"status": "Approved", "description": "…"}`:
/// the sandbox's admin route for the other side of a connection that has no ARM owner
/// the sandbox could serve (a vendor's Private Link Service, reached by alias). It sets
/// the endpoint's connection state (and the target-side connection's, when the target is
/// in the fake), as the vendor approving on its side would. Not an ARM API: the
/// `x-sandbox` segment marks it; it needs the same token and `api-version`.
fn set_state_from_request(shared: &Shared, call: &Call<'_>) -> Answer {
    let body = match call.json_body() {
        Ok(b) => b,
        Err(a) => return a,
    };
    let Some(status) =
        body["status"].as_str().filter(|s| matches!(*s, "Approved" | "Rejected" | "Pending" | "Disconnected"))
    else {
        return Answer::error(
            400,
            "InvalidRequestFormat",
            "status must be one of Approved, Rejected, Pending, Disconnected.",
        );
    };
    let description = body["description"].as_str().map_or_else(|| format!("{status} by the sandbox"), str::to_owned);
    let pe_path = call.path.rsplitn(3, '/').nth(2).unwrap_or_default();
    let mut w = shared.world();
    if !set_status(&mut w, pe_path, status, &description) {
        return Answer::not_found(pe_path);
    }
    Answer::json(200, w.get(pe_path).cloned().unwrap_or(Value::Null))
}

/// `Namespace/type` of a resource id (`Microsoft.KeyVault/vaults`).
fn type_of(id: &str) -> String {
    let parts: Vec<&str> = id.split('/').collect();
    let i = parts.iter().rposition(|p| p.eq_ignore_ascii_case("providers")).unwrap_or(0);
    format!("{}/{}", parts.get(i + 1).unwrap_or(&""), parts.get(i + 2).unwrap_or(&""))
}

/// The required members and FQDNs the platform would put on the NIC for a connection
/// to `target`'s sub-resource `group`, for the common first-party services (a request
/// body never carries them: the Network RP learns them from the target's provider).
/// Anything else gets one member named after the group and no FQDN.
fn default_members(target: &str, group: &str, location: &str) -> Vec<MemberSpec> {
    let name = target.rsplit('/').next().unwrap_or_default().to_ascii_lowercase();
    let region = location.to_ascii_lowercase().replace(' ', "");
    let one = |member: &str, fqdn: String| {
        vec![MemberSpec { required_member_name: member.into(), fqdns: vec![fqdn], ip: None }]
    };
    match group.to_ascii_lowercase().as_str() {
        "vault" => one("default", format!("{name}.vault.azure.net")),
        g @ ("blob" | "file" | "queue" | "table" | "dfs" | "web") => one(group, format!("{name}.{g}.core.windows.net")),
        "sqlserver" => one(group, format!("{name}.database.windows.net")),
        "registry" => one(group, format!("{name}.azurecr.io")),
        "namespace" => one(group, format!("{name}.servicebus.windows.net")),
        "sql" => one(group, format!("{name}.documents.azure.com")),
        "sites" => vec![MemberSpec {
            required_member_name: group.into(),
            fqdns: vec![format!("{name}.azurewebsites.net"), format!("{name}.scm.azurewebsites.net")],
            ip: None,
        }],
        "cluster" => vec![
            MemberSpec::new("Engine", &[&format!("{name}.{region}.kusto.windows.net")]),
            MemberSpec::new("DataManagement", &[&format!("ingest-{name}.{region}.kusto.windows.net")]),
        ],
        "prometheusmetrics" => one(group, format!("{name}.{region}.prometheus.monitor.azure.com")),
        _ => vec![MemberSpec { required_member_name: group.into(), fqdns: Vec::new(), ip: None }],
    }
}
