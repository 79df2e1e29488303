//! Private endpoints, their NICs and zone groups, as `Microsoft.Network` returns them.
//!
//! The JSON follows the 2025-07-01 shape plus what real responses carry beyond the
//! spec: `properties.resourceGuid` (absent from the spec, present in ARM's answers), a
//! NIC named `<pe>.nic.<guid>` whose IP configurations carry
//! `privateLinkConnectionProperties`, an alias kept verbatim in `privateLinkServiceId`
//! with `groupIds: []`, and `customDnsConfigs` emptied while a zone group exists.
//!
//! The platform's zone-group integration is modelled too: adding a zone group writes
//! the endpoint's A records into those zones with the metadata the Network RP leaves
//! (`creator`), so tests can check that we treat them as someone else's.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::{Answer, Call, FakeArm, Shared, dns, page};
use crate::sandbox::host_emulator::new_guid;

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
        let id = spec.id();
        let mut w = self.shared().world();
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
        let subnet = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/virtualNetworks/spoke-vnet/subnets/endpoints",
            spec.subscription, spec.resource_group
        );
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
        let conn_kind =
            if spec.manual { "manualPrivateLinkServiceConnections" } else { "privateLinkServiceConnections" };
        let connection = json!({
            "name": spec.name,
            "id": format!("{id}/{conn_kind}/{}", spec.name),
            "etag": etag(),
            "type": format!("Microsoft.Network/privateEndpoints/{conn_kind}"),
            "properties": {
                "provisioningState": "Succeeded",
                "privateLinkServiceId": target,
                "groupIds": group_ids,
                "requestMessage": if spec.manual { "Requested by the platform team" } else { "" },
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
        super::connections::on_endpoint_put(&mut w, &pe);
        w.put(pe);
        w.put(nic);
        id
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
        let mut w = self.shared().world();
        let Some(mut pe) = w.get(id).cloned() else { return false };
        let mut changed = false;
        for kind in ["privateLinkServiceConnections", "manualPrivateLinkServiceConnections"] {
            if let Some(conns) = pe.pointer_mut(&format!("/properties/{kind}")).and_then(Value::as_array_mut) {
                for c in conns {
                    if let Some(state) = c.pointer_mut("/properties/privateLinkServiceConnectionState") {
                        state["status"] = json!(status);
                        state["description"] = json!(format!("{status} by the sandbox"));
                        changed = true;
                    }
                }
            }
        }
        w.put(pe);
        changed
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
            } else {
                Answer::error(
                    400,
                    "UnsupportedBySandbox",
                    "The sandbox creates private endpoints through FakeArm::put_endpoint.",
                )
            }
        }
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
