//! Who a DNS record set belongs to: the marker, the owners' shares, and the canonical
//! references (endpoint, target, virtual network) that shares are recorded under.
//!
//! Why it is at the bottom: "never touch what is not ours" is decided in the planner,
//! the references are computed by the catalog, and each DNS backend encodes ownership in
//! its own wire format (record-set metadata, a sibling TXT). All of them need the same
//! words, so the words live in `model` and the layers above import them downward.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The marker we write into every record set we manage.
pub const MANAGED_BY: &str = "pl-autopilot";

/// One owner's part of a managed record set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
pub struct Share {
    /// The addresses this endpoint contributes.
    pub addresses: BTreeSet<Ipv4Addr>,
    /// What the endpoint points at ([`target_ref`]): a second endpoint may join a name
    /// only if it points at the same thing. Empty when an older version wrote the share.
    pub target: String,
    /// The endpoint's virtual network ([`vnet_ref`]), so the plan can tell a share from
    /// another VNet (whose address only resolves usefully where routing reaches it).
    pub vnet: String,
}

impl Share {
    pub fn new(addresses: BTreeSet<Ipv4Addr>, target: &str, vnet: &str) -> Self {
        Self { addresses, target: target.to_owned(), vnet: vnet.to_owned() }
    }
}

/// Owners of a managed set, keyed by owner key: the lower-cased private endpoint id, or
/// its [`opaque_ref`] where the backend is readable by everyone (RFC 2136 TXT).
pub type Owners = BTreeMap<String, Share>;

/// Who a record set belongs to, as recorded by the backend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Ownership {
    /// Ours: one [`Share`] per endpoint. Several endpoints may share one name (a regional
    /// wildcard) where the catalog says the name is shared; the record's addresses are
    /// the union of the shares.
    Managed(Owners),
    /// Not ours: no marker, another manager's marker, a private DNS zone group, or
    /// auto-registration. The string says who, as far as the backend can tell.
    Foreign(String),
}

impl Ownership {
    pub fn is_managed(&self) -> bool {
        matches!(self, Ownership::Managed(_))
    }
}

/// The owner key under which `endpoint` (a lower-cased endpoint id) appears in `owners`,
/// whether the backend stored the id itself or its opaque form.
pub fn owner_key_of(owners: &Owners, endpoint: &str) -> Option<String> {
    if owners.contains_key(endpoint) {
        return Some(endpoint.to_owned());
    }
    let opaque = opaque_ref(endpoint);
    owners.contains_key(&opaque).then_some(opaque)
}

/// Prefix of an opaque reference (a hash standing for an id that must not be published).
pub const OPAQUE_PREFIX: &str = "h:";

/// An opaque, stable stand-in for `value` (case-insensitive): `h:` and 32 hex digits of
/// its SHA-256. Used where ownership is readable by every DNS client (RFC 2136), so
/// subscription ids, resource groups and endpoint names are not published.
pub fn opaque_ref(value: &str) -> String {
    use sha2::Digest;
    if value.starts_with(OPAQUE_PREFIX) {
        return value.to_owned();
    }
    let digest = sha2::Sha256::digest(value.to_ascii_lowercase().as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{OPAQUE_PREFIX}{hex}")
}

/// Whether two references (ids, aliases, or their opaque forms) name the same thing.
/// An empty reference (not recorded) matches nothing.
pub fn same_ref(a: &str, b: &str) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    a.eq_ignore_ascii_case(b) || opaque_ref(a) == opaque_ref(b)
}

/// The canonical reference of what an endpoint points at: the lower-cased resource id
/// or alias.
pub fn target_ref(target: &str) -> String {
    target.trim().to_ascii_lowercase()
}

/// The canonical reference of a subnet's virtual network (the id up to
/// `/virtualNetworks/<name>`, lower-cased); empty when unknown.
pub fn vnet_ref(subnet_id: Option<&str>) -> String {
    let Some(subnet) = subnet_id else { return String::new() };
    let lower = subnet.to_ascii_lowercase();
    match lower.find("/subnets/") {
        Some(i) => lower[..i].to_owned(),
        None => lower,
    }
}
