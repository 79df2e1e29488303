//! Azure Private DNS zones, through ARM (`Microsoft.Network/privateDnsZones`, 2024-06-01).
//!
//! Record-set writes are synchronous (no long-running operation) and conditional:
//! `If-None-Match: *` on create and `If-Match: <etag>` on update and delete, so a
//! concurrent writer makes us re-read instead of overwrite (412).
//!
//! Ownership lives in the record set's `metadata` (a string map): `managedby =
//! pl-autopilot`, and per owning endpoint `plowner<hash>` = `<ips>|<endpoint id>`,
//! `pltarget<hash>` = what it points at and `plvnet<hash>` = its virtual network.
//! Keeping each owner's addresses lets us remove one endpoint from a shared regional
//! wildcard and leave exactly the survivors' addresses; keeping its target and VNet lets
//! the plan refuse a second endpoint that points somewhere else. Metadata key and value
//! constraints are unconfirmed, so keys are lower-case alphanumeric and a target or VNet
//! longer than [`MAX_META_VALUE`] is stored in its opaque (hashed) form, which compares
//! equal to the original (`same_ref`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{Value, json};

use super::provider::{ARecordSet, DnsError, DnsErrorKind, DnsProvider};
use crate::arm::client::Method;
use crate::arm::{ArmClient, ArmError, ArmRequest};
use crate::model::RecordKey;
use crate::model::ownership::{MANAGED_BY, Owners, Ownership, Share, opaque_ref};

pub const PRIVATE_DNS_API: &str = "2024-06-01";
const OWNER_PREFIX: &str = "plowner";
const TARGET_PREFIX: &str = "pltarget";
const VNET_PREFIX: &str = "plvnet";
/// ARM tag values are limited to 256 characters; metadata is assumed to be alike.
const MAX_META_VALUE: usize = 256;

/// Where a zone lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneLocation {
    pub subscription: String,
    pub resource_group: String,
    /// VNets this copy is linked to when we manage its links (`[[dns.zones]] link_to`).
    pub link_to: Option<Vec<String>>,
}

impl ZoneLocation {
    pub fn new(subscription: &str, resource_group: &str) -> Self {
        Self { subscription: subscription.to_owned(), resource_group: resource_group.to_owned(), link_to: None }
    }
    /// The replica id of this place: `subscription/resource-group`, lower case.
    pub fn replica_id(&self) -> String {
        format!("{}/{}", self.subscription, self.resource_group).to_ascii_lowercase()
    }
    /// The zone's ARM id in this place.
    pub fn zone_id(&self, zone: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/privateDnsZones/{}",
            self.subscription, self.resource_group, zone
        )
    }
}

/// Zone name -> location(s), with the hub as the default. A name configured in several
/// places has replicas: every record goes to each of them.
#[derive(Debug, Clone, Default)]
pub struct ZoneDirectory {
    /// The first (or only) place of each configured zone.
    pub zones: HashMap<String, ZoneLocation>,
    /// Every place of the zones configured more than once.
    pub replicas: HashMap<String, Vec<ZoneLocation>>,
    pub default: Option<ZoneLocation>,
}

impl ZoneDirectory {
    /// Adds a configured place of `zone` (a second place makes it replicated).
    pub fn add(&mut self, zone: &str, location: ZoneLocation) {
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        let first = self.zones.entry(zone.clone()).or_insert_with(|| location.clone()).clone();
        if first != location {
            let all = self.replicas.entry(zone).or_insert_with(|| vec![first]);
            if !all.contains(&location) {
                all.push(location);
            }
        }
    }

    pub fn locate(&self, zone: &str) -> Result<&ZoneLocation, DnsError> {
        self.zones.get(&zone.to_ascii_lowercase()).or(self.default.as_ref()).ok_or_else(|| {
            DnsError::permanent(format!(
                "zone {zone} has no configured location: add it to [[dns.zones]] or set \
                 dns.default_subscription and dns.default_resource_group"
            ))
        })
    }

    /// Where the record set at `key` lives: its replica's place, or the zone's one place.
    pub fn locate_key(&self, key: &RecordKey) -> Result<&ZoneLocation, DnsError> {
        if key.replica.is_empty() {
            return self.locate(&key.zone);
        }
        self.replicas.get(&key.zone).and_then(|all| all.iter().find(|l| l.replica_id() == key.replica)).ok_or_else(
            || DnsError::permanent(format!("zone {} has no replica {} in [[dns.zones]]", key.zone, key.replica)),
        )
    }

    /// The replica ids of `zone`: one per place when it has several, else `[""]` (its
    /// one place, found by [`Self::locate`]).
    pub fn replicas_of(&self, zone: &str) -> Vec<String> {
        match self.replicas.get(zone) {
            Some(all) if all.len() > 1 => all.iter().map(ZoneLocation::replica_id).collect(),
            _ => vec![String::new()],
        }
    }
}

#[derive(Debug, Clone)]
pub struct AzurePrivateDns {
    arm: ArmClient,
    directory: ZoneDirectory,
    /// What the last zone discovery skipped (zone, reason).
    skipped: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    /// List the default resource group even when zones are named (zone management).
    list_default_too: bool,
}

impl AzurePrivateDns {
    pub fn new(arm: ArmClient, directory: ZoneDirectory) -> Self {
        Self { arm, directory, skipped: Default::default(), list_default_too: false }
    }

    fn zone_path(&self, zone: &str) -> Result<String, DnsError> {
        Ok(self.directory.locate(zone)?.zone_id(zone))
    }

    fn record_path(&self, key: &RecordKey) -> Result<String, DnsError> {
        // `*` and `@` go into the path literally (x-ms-skip-url-encoding in the spec).
        Ok(format!("{}/A/{}", self.directory.locate_key(key)?.zone_id(&key.zone), key.name))
    }

    /// Where zones are, as configured.
    pub fn directory(&self) -> &ZoneDirectory {
        &self.directory
    }

    /// Lists one place of `zone`; records carry `replica`.
    async fn list_place(&self, zone: &str, replica: &str) -> Result<Vec<ARecordSet>, DnsError> {
        let key = RecordKey::new(zone, "@").in_replica(replica);
        let path = format!("{}/A", self.directory.locate_key(&key)?.zone_id(zone));
        let items =
            self.arm.list_all(&path, PRIVATE_DNS_API).await.map_err(|e| map_err(e, &format!("listing zone {zone}")))?;
        Ok(items
            .iter()
            .filter_map(|rs| parse_record_set(zone, rs))
            .map(|mut s| {
                s.key = s.key.in_replica(replica);
                s
            })
            .collect())
    }

    /// Every Azure zone worth scanning for a deleted endpoint's records (and for the
    /// sweep's listing).
    ///
    /// With zones configured by name (`[[dns.zones]]`, which infra sets from the same
    /// `dnsZoneNames` its A-record role is assigned at), each zone is read on its own:
    /// the role sits on each zone, and ARM authorises a collection GET against the scope
    /// in its URL, so listing the hub resource group would be refused (review F5). A zone
    /// that answers 403 or 404 is skipped and reported (a warning, and
    /// [`AzurePrivateDns::skipped_zones`]) instead of failing every delete: the records in
    /// the other zones still get cleaned up, and the sweep tries again. Only when no zone
    /// is named does it fall back to listing the default resource group, which needs
    /// `privateDnsZones/read` there; a refusal then names the setting that avoids it.
    pub async fn discover_zones(&self) -> Result<Vec<String>, DnsError> {
        if !self.directory.zones.is_empty() {
            let mut zones = self.read_configured_zones().await?;
            if self.list_default_too {
                zones.extend(self.list_default_zones().await?);
                zones.sort();
                zones.dedup();
            }
            return Ok(zones);
        }
        self.list_default_zones().await
    }

    /// With zone management on, zones are also created in the default place, which must
    /// then be listed besides the configured ones (zone management holds the role there).
    pub fn with_default_listing(mut self) -> Self {
        self.list_default_too = true;
        self
    }

    /// The zones of the default resource group.
    async fn list_default_zones(&self) -> Result<Vec<String>, DnsError> {
        let Some(loc) = &self.directory.default else {
            return Ok(Vec::new());
        };
        let path = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/privateDnsZones",
            loc.subscription, loc.resource_group
        );
        match self.arm.list_all(&path, PRIVATE_DNS_API).await {
            Ok(zones) => {
                let mut out: Vec<String> =
                    zones.iter().filter_map(|z| z.get("name")?.as_str().map(str::to_ascii_lowercase)).collect();
                out.sort();
                out.dedup();
                Ok(out)
            }
            Err(e) if e.status() == Some(404) => Ok(Vec::new()),
            Err(e) if e.status() == Some(403) => Err(DnsError::permanent(format!(
                "listing zones in {}/{} was refused ({e}); name the zones in [[dns.zones]] \
                 (AUTOPILOT__DNS__ZONES) so each is read with its own role assignment",
                loc.subscription, loc.resource_group
            ))),
            Err(e) => Err(map_err(e, &format!("listing zones in {}/{}", loc.subscription, loc.resource_group))),
        }
    }

    /// Reads each configured zone; see [`Self::discover_zones`].
    async fn read_configured_zones(&self) -> Result<Vec<String>, DnsError> {
        let mut names: Vec<&String> = self.directory.zones.keys().collect();
        names.sort();
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        for zone in names {
            let path = self.zone_path(zone)?;
            match self.arm.send(ArmRequest::get(&path, PRIVATE_DNS_API)).await {
                Ok(_) => out.push(zone.clone()),
                Err(e) if matches!(e.status(), Some(403 | 404)) => {
                    tracing::warn!(zone = %zone, error = %e, "private DNS zone skipped: it cannot be read");
                    skipped.push((zone.clone(), e.to_string()));
                }
                Err(e) => return Err(map_err(e, &format!("reading zone {zone}"))),
            }
        }
        *self.skipped.lock().unwrap_or_else(|p| p.into_inner()) = skipped;
        Ok(out)
    }

    /// Zones the last discovery skipped, with the reason (403: no role there; 404: the
    /// zone does not exist).
    pub fn skipped_zones(&self) -> Vec<(String, String)> {
        self.skipped.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub(crate) fn map_err(e: ArmError, what: &str) -> DnsError {
    let kind = match e.status() {
        Some(412) => DnsErrorKind::PreconditionFailed,
        _ if e.is_transient() => DnsErrorKind::Transient,
        _ => DnsErrorKind::Permanent,
    };
    let hint = if e.code() == Some("ParentResourceNotFound") {
        " (the private DNS zone does not exist there: create it and link it to the VNets that must resolve it, \
         name where it is in [[dns.zones]], or set dns.zone_management = \"create\")"
    } else {
        ""
    };
    DnsError { kind, message: format!("{what}: {e}{hint}"), retry_after: e.retry_after() }
}

/// FNV-1a: a stable, dependency-free hash for metadata keys (std's hasher is not
/// guaranteed stable across releases, and keys must survive upgrades).
fn owner_hash(endpoint_key: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in endpoint_key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

fn owner_key(endpoint_key: &str) -> String {
    format!("{OWNER_PREFIX}{}", owner_hash(endpoint_key))
}

fn fit(value: &str) -> String {
    if value.len() > MAX_META_VALUE { opaque_ref(value) } else { value.to_owned() }
}

/// Encodes ownership into record-set metadata.
pub fn encode_metadata(owners: &Owners) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("managedby".into(), Value::String(MANAGED_BY.into()));
    for (endpoint, share) in owners {
        let ips: Vec<String> = share.addresses.iter().map(Ipv4Addr::to_string).collect();
        let hash = owner_hash(endpoint);
        m.insert(owner_key(endpoint), Value::String(format!("{}|{}", ips.join(","), endpoint)));
        if !share.target.is_empty() {
            m.insert(format!("{TARGET_PREFIX}{hash}"), Value::String(fit(&share.target)));
        }
        if !share.vnet.is_empty() {
            m.insert(format!("{VNET_PREFIX}{hash}"), Value::String(fit(&share.vnet)));
        }
    }
    m
}

/// Reads ownership from a record set's JSON.
pub fn decode_ownership(rs: &Value) -> Ownership {
    let props = rs.get("properties").cloned().unwrap_or(Value::Null);
    if props.get("isAutoRegistered").and_then(Value::as_bool) == Some(true) {
        return Ownership::Foreign("auto-registered by a virtual network link".into());
    }
    let meta = props.get("metadata").and_then(Value::as_object);
    let ours = meta.and_then(|m| m.get("managedby")).and_then(Value::as_str) == Some(MANAGED_BY);
    if !ours {
        let detail = match meta {
            Some(m) if !m.is_empty() => {
                let pairs: Vec<String> = m
                    .iter()
                    .take(4)
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?").chars().take(160).collect::<String>()))
                    .collect();
                format!("metadata {}", pairs.join(", "))
            }
            _ => "no metadata".into(),
        };
        return Ownership::Foreign(format!(
            "not managed by {MANAGED_BY} ({detail}); a private DNS zone group or a person may own it"
        ));
    }
    let text = |k: String| meta.and_then(|m| m.get(&k)).and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut owners = BTreeMap::new();
    for (k, v) in meta.into_iter().flatten() {
        let Some(hash) = k.strip_prefix(OWNER_PREFIX) else { continue };
        let Some((ips, endpoint)) = v.as_str().and_then(|s| s.split_once('|')) else { continue };
        let ips: BTreeSet<Ipv4Addr> = ips.split(',').filter_map(|ip| ip.trim().parse().ok()).collect();
        let share = Share {
            addresses: ips,
            target: text(format!("{TARGET_PREFIX}{hash}")),
            vnet: text(format!("{VNET_PREFIX}{hash}")),
        };
        owners.insert(endpoint.to_ascii_lowercase(), share);
    }
    Ownership::Managed(owners)
}

/// Parses a record-set GET/list item.
pub fn parse_record_set(zone: &str, rs: &Value) -> Option<ARecordSet> {
    let name = rs.get("name")?.as_str()?;
    let props = rs.get("properties")?;
    let addresses = props
        .get("aRecords")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("ipv4Address")?.as_str()?.parse().ok())
        .collect();
    Some(ARecordSet {
        key: RecordKey::new(zone, name),
        ttl: props.get("ttl").and_then(Value::as_u64).unwrap_or(0).min(u64::from(u32::MAX)) as u32,
        addresses,
        ownership: decode_ownership(rs),
        version: rs.get("etag").and_then(Value::as_str).map(str::to_string),
    })
}

fn body(set: &ARecordSet) -> Result<Value, DnsError> {
    let Ownership::Managed(owners) = &set.ownership else {
        return Err(DnsError::permanent(format!("refusing to write {}: ownership is not ours", set.key)));
    };
    let records: Vec<Value> = set.addresses.iter().map(|ip| json!({"ipv4Address": ip.to_string()})).collect();
    Ok(json!({"properties": {"metadata": encode_metadata(owners), "ttl": set.ttl, "aRecords": records}}))
}

#[async_trait::async_trait]
impl DnsProvider for AzurePrivateDns {
    fn kind(&self) -> &'static str {
        "azure-private-dns"
    }

    /// `get` reads the A record set only; the listing holds every A record set.
    fn listing_is_complete(&self) -> bool {
        true
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<ARecordSet>, DnsError> {
        let path = self.record_path(key)?;
        match self.arm.send(ArmRequest::get(path, PRIVATE_DNS_API)).await {
            // The set read keeps the replica it was read from: a write planned from it must go
            // back to the same place (not to the zone's first one).
            Ok(r) => Ok(parse_record_set(&key.zone, &r.body).map(|mut s| {
                s.key = s.key.in_replica(&key.replica);
                s
            })),
            Err(e) if e.status() == Some(404) && e.code() != Some("ParentResourceNotFound") => Ok(None),
            Err(e) => Err(map_err(e, &format!("reading {key}"))),
        }
    }

    /// Every replica of a replicated zone is listed (its sets carry their replica); one
    /// that cannot be read (403/404) is skipped with a warning, so the others still get
    /// cleaned up.
    async fn list(&self, zone: &str) -> Result<Vec<ARecordSet>, DnsError> {
        let replicas = self.directory.replicas_of(zone);
        if replicas.len() == 1 {
            return self.list_place(zone, &replicas[0]).await;
        }
        let mut out = Vec::new();
        for replica in replicas {
            match self.list_place(zone, &replica).await {
                Ok(sets) => out.extend(sets),
                Err(e) if e.kind == DnsErrorKind::Permanent => {
                    tracing::warn!(zone, replica, error = %e, "replica skipped: it cannot be listed");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn create(&self, set: &ARecordSet) -> Result<(), DnsError> {
        let req = ArmRequest::new(Method::Put, self.record_path(&set.key)?, PRIVATE_DNS_API)
            .header("If-None-Match", "*")
            .body(body(set)?);
        self.arm.send(req).await.map(|_| ()).map_err(|e| map_err(e, &format!("creating {}", set.key)))
    }

    async fn update(&self, previous: &ARecordSet, next: &ARecordSet) -> Result<(), DnsError> {
        let etag = previous.version.as_deref().unwrap_or("*");
        let req = ArmRequest::new(Method::Put, self.record_path(&next.key)?, PRIVATE_DNS_API)
            .header("If-Match", etag)
            .body(body(next)?);
        self.arm.send(req).await.map(|_| ()).map_err(|e| map_err(e, &format!("updating {}", next.key)))
    }

    async fn delete(&self, previous: &ARecordSet) -> Result<(), DnsError> {
        let mut req = ArmRequest::new(Method::Delete, self.record_path(&previous.key)?, PRIVATE_DNS_API);
        if let Some(etag) = &previous.version {
            req = req.header("If-Match", etag);
        }
        match self.arm.send(req).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(map_err(e, &format!("deleting {}", previous.key))),
        }
    }
}

/// How long to wait before retrying after Private DNS throttled us, when it did not say.
pub const PRIVATE_DNS_THROTTLE_WAIT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_round_trips_through_metadata() {
        let mut owners = BTreeMap::new();
        owners.insert(
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.network/privateendpoints/a".to_string(),
            Share::new(
                BTreeSet::from(["10.0.0.4".parse().unwrap()]),
                "alias-a.guid.eastus2.azure.privatelinkservice",
                "",
            ),
        );
        owners.insert(
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.network/privateendpoints/b".to_string(),
            Share::new(
                BTreeSet::from(["10.0.0.5".parse().unwrap(), "10.0.0.6".parse().unwrap()]),
                &format!("/subscriptions/s/resourcegroups/rg/providers/microsoft.kusto/clusters/{}", "c".repeat(300)),
                "/subscriptions/s/resourcegroups/rg/providers/microsoft.network/virtualnetworks/v",
            ),
        );
        let rs = json!({"name": "*", "etag": "e1", "properties": {"ttl": 300, "metadata": encode_metadata(&owners),
            "aRecords": [{"ipv4Address": "10.0.0.4"}, {"ipv4Address": "10.0.0.5"}, {"ipv4Address": "10.0.0.6"}]}});
        let set = parse_record_set("zone.example", &rs).unwrap();
        let read = set.owners().unwrap();
        assert_eq!(read.len(), 2);
        for (k, share) in &owners {
            let got = &read[k];
            assert_eq!(got.addresses, share.addresses);
            assert!(share.target.is_empty() || crate::model::ownership::same_ref(&got.target, &share.target));
            assert_eq!(got.vnet, share.vnet);
        }
        // A long target is kept in its opaque form, which still compares equal.
        assert!(read.values().any(|s| s.target.starts_with(crate::model::ownership::OPAQUE_PREFIX)));
        assert_eq!(set.version.as_deref(), Some("e1"));
        assert_eq!(set.addresses.len(), 3);
    }

    #[test]
    fn fixture_record_sets_are_foreign() {
        // Shape of RecordSetAGet.json: metadata without our marker.
        let rs = json!({"name": "recorda", "etag": "x", "properties": {"metadata": {"key1": "value1"}, "ttl": 3600,
            "fqdn": "recorda.privatezone1.com.", "isAutoRegistered": false, "aRecords": [{"ipv4Address": "1.2.3.4"}]}});
        let set = parse_record_set("privatezone1.com", &rs).unwrap();
        match set.ownership {
            Ownership::Foreign(why) => assert!(why.contains("key1=value1"), "{why}"),
            o => panic!("expected foreign, got {o:?}"),
        }
        let auto = json!({"name": "vm1", "properties": {"isAutoRegistered": true, "aRecords": []}});
        assert!(
            matches!(parse_record_set("z", &auto).unwrap().ownership, Ownership::Foreign(w) if w.contains("auto-registered"))
        );
    }

    #[test]
    fn owner_keys_are_stable_and_alphanumeric() {
        let k = owner_key("/subscriptions/s/resourcegroups/rg/providers/microsoft.network/privateendpoints/a");
        assert_eq!(k, owner_key("/subscriptions/s/resourcegroups/rg/providers/microsoft.network/privateendpoints/a"));
        assert!(k.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(k.len(), OWNER_PREFIX.len() + 16);
    }
}
