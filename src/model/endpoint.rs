//! A private endpoint as ARM reports it, reduced to what the plan needs.
//!
//! Parsed from raw JSON on purpose: `properties.resourceGuid` is present in real
//! responses but missing from the REST spec (so generated SDK models drop it), and the
//! private IPs must come from the NIC (`customDnsConfigs` is empty for alias and Private
//! Link Service targets and while a DNS zone group exists).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::Value;

use super::resource_id::{IdError, ResourceId};

/// Where a connection points: a resource id, or a Private Link Service alias kept
/// verbatim (`<prefix>.<guid>.<region>.azure.privatelinkservice`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum LinkTarget {
    Resource(ResourceId),
    Alias(String),
    /// Neither (empty or unparseable); kept for reporting.
    Unknown(String),
}

impl LinkTarget {
    pub fn parse(s: &str) -> Self {
        let t = s.trim();
        if t.to_ascii_lowercase().ends_with(".azure.privatelinkservice") {
            return LinkTarget::Alias(t.to_ascii_lowercase());
        }
        match ResourceId::parse(t) {
            Ok(id) => LinkTarget::Resource(id),
            Err(_) => LinkTarget::Unknown(t.chars().take(300).collect()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum ConnectionStatus {
    Pending,
    Approved,
    Rejected,
    Disconnected,
    Other(String),
}

impl ConnectionStatus {
    pub fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "rejected" => Self::Rejected,
            "disconnected" => Self::Disconnected,
            _ => Self::Other(s.chars().take(64).collect()),
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            Self::Pending => "Pending",
            Self::Approved => "Approved",
            Self::Rejected => "Rejected",
            Self::Disconnected => "Disconnected",
            Self::Other(s) => s,
        }
    }
}

/// One entry of `privateLinkServiceConnections` or `manualPrivateLinkServiceConnections`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LinkConnection {
    pub name: String,
    pub target: LinkTarget,
    pub group_ids: Vec<String>,
    pub status: ConnectionStatus,
    pub description: String,
    /// What the requester wrote (`requestMessage`, at most 140 characters in Azure).
    pub request_message: String,
    /// From `manualPrivateLinkServiceConnections`.
    pub manual: bool,
}

/// One private IP on the endpoint's NIC, with what it is for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NicIpConfig {
    pub address: Ipv4Addr,
    pub group_id: String,
    pub required_member_name: String,
    pub fqdns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CustomDnsConfig {
    pub fqdn: String,
    pub addresses: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PrivateEndpoint {
    pub id: ResourceId,
    pub name: String,
    pub location: String,
    /// `properties.resourceGuid` (not in the spec; present in real responses).
    pub resource_guid: Option<String>,
    pub provisioning_state: String,
    pub subnet_id: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub connections: Vec<LinkConnection>,
    pub custom_dns_configs: Vec<CustomDnsConfig>,
    pub nic_ids: Vec<String>,
    /// From the NIC(s); empty until they are read.
    pub nic_ip_configs: Vec<NicIpConfig>,
    /// Zone ids named by the endpoint's `privateDnsZoneGroups` (the platform then
    /// manages those records itself; we must not write duplicates).
    pub dns_zone_group_zones: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("private endpoint JSON has no string `{0}`")]
    Missing(&'static str),
    #[error("private endpoint id: {0}")]
    Id(#[from] IdError),
}

fn s(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str().map(str::to_string)
}

/// Parses an address that may carry a prefix length (`172.20.2.16/28` appears in
/// NIC examples). Anything that is not IPv4 is skipped, never a panic.
pub fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
    s.split('/').next()?.trim().parse().ok()
}

impl PrivateEndpoint {
    /// Parses a PE GET body. NIC details are added with [`Self::add_nic`].
    pub fn from_arm_json(v: &Value) -> Result<Self, ParseError> {
        let id = ResourceId::parse_private_endpoint(&s(v, &["id"]).ok_or(ParseError::Missing("id"))?)?;
        let props = v.get("properties").cloned().unwrap_or(Value::Null);
        let name = s(v, &["name"]).unwrap_or_else(|| id.name().to_string());
        let mut connections = Vec::new();
        for (key, manual) in [("privateLinkServiceConnections", false), ("manualPrivateLinkServiceConnections", true)] {
            for c in props.get(key).and_then(Value::as_array).into_iter().flatten() {
                let cp = c.get("properties").cloned().unwrap_or(Value::Null);
                connections.push(LinkConnection {
                    name: s(c, &["name"]).unwrap_or_default(),
                    target: LinkTarget::parse(&s(&cp, &["privateLinkServiceId"]).unwrap_or_default()),
                    group_ids: cp
                        .get("groupIds")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(|g| g.as_str().map(str::to_string)).collect())
                        .unwrap_or_default(),
                    status: ConnectionStatus::parse(
                        &s(&cp, &["privateLinkServiceConnectionState", "status"]).unwrap_or_default(),
                    ),
                    description: s(&cp, &["privateLinkServiceConnectionState", "description"]).unwrap_or_default(),
                    request_message: s(&cp, &["requestMessage"]).unwrap_or_default(),
                    manual,
                });
            }
        }
        let custom_dns_configs = props
            .get("customDnsConfigs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some(CustomDnsConfig {
                    fqdn: c.get("fqdn")?.as_str()?.trim_end_matches('.').to_ascii_lowercase(),
                    addresses: c
                        .get("ipAddresses")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|a| a.as_str().and_then(parse_ipv4))
                        .collect(),
                })
            })
            .collect();
        let nic_ids = props
            .get("networkInterfaces")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|n| n.get("id")?.as_str().map(str::to_string))
            .collect();
        let tags = v
            .get("tags")
            .and_then(Value::as_object)
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
            .unwrap_or_default();
        Ok(Self {
            name,
            location: s(v, &["location"]).unwrap_or_default().to_ascii_lowercase(),
            resource_guid: s(&props, &["resourceGuid"]),
            provisioning_state: s(&props, &["provisioningState"]).unwrap_or_default(),
            subnet_id: s(&props, &["subnet", "id"]),
            tags,
            connections,
            custom_dns_configs,
            nic_ids,
            nic_ip_configs: Vec::new(),
            dns_zone_group_zones: Vec::new(),
            id,
        })
    }

    /// Adds the IP configurations of one NIC GET body.
    pub fn add_nic(&mut self, nic: &Value) {
        let configs = nic.pointer("/properties/ipConfigurations").and_then(Value::as_array);
        for c in configs.into_iter().flatten() {
            let Some(p) = c.get("properties") else { continue };
            let Some(address) = p.get("privateIPAddress").and_then(Value::as_str).and_then(parse_ipv4) else {
                continue;
            };
            let plc = p.get("privateLinkConnectionProperties").cloned().unwrap_or(Value::Null);
            self.nic_ip_configs.push(NicIpConfig {
                address,
                group_id: s(&plc, &["groupId"]).unwrap_or_default(),
                required_member_name: s(&plc, &["requiredMemberName"]).unwrap_or_default(),
                fqdns: plc
                    .get("fqdns")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|f| f.as_str().map(|f| f.trim_end_matches('.').to_ascii_lowercase()))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
    }

    /// Adds the zones of a `privateDnsZoneGroups` list body (`{value:[...]}`) or one group.
    pub fn add_dns_zone_groups(&mut self, body: &Value) {
        let groups: Vec<&Value> = match body.get("value").and_then(Value::as_array) {
            Some(a) => a.iter().collect(),
            None => vec![body],
        };
        for g in groups {
            for z in g.pointer("/properties/privateDnsZoneConfigs").and_then(Value::as_array).into_iter().flatten() {
                if let Some(zid) = z.pointer("/properties/privateDnsZoneId").and_then(Value::as_str) {
                    self.dns_zone_group_zones.push(zid.to_ascii_lowercase());
                }
            }
        }
    }

    pub fn is_provisioned(&self) -> bool {
        self.provisioning_state.eq_ignore_ascii_case("succeeded")
    }

    /// All private IPv4 addresses (NIC first; `customDnsConfigs` as a fallback).
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        let mut out: Vec<Ipv4Addr> = self.nic_ip_configs.iter().map(|c| c.address).collect();
        if out.is_empty() {
            out = self.custom_dns_configs.iter().flat_map(|c| c.addresses.iter().copied()).collect();
        }
        out.sort();
        out.dedup();
        out
    }

    /// The first connection's target (a PE has exactly one in practice).
    pub fn target(&self) -> Option<&LinkTarget> {
        self.connections.first().map(|c| &c.target)
    }
}
