//! The target catalog: from "what does this private endpoint point at" to "which A
//! records must exist".
//!
//! It is data, not code (`builtin.toml`, plus an optional user file tried first), so a
//! platform team can add a vendor or a first-party service without a new build. The
//! output is the *desired* half of the plan; the reconciler compares it with what the
//! DNS backends hold.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;

use serde::Deserialize;

use crate::model::ownership::{target_ref, vnet_ref};
use crate::model::{LinkTarget, PrivateEndpoint, RecordKey};

pub const BUILTIN: &str = include_str!("builtin.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    #[serde(default, rename = "target")]
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub id: String,
    #[serde(default)]
    pub description: String,
    /// Vendor plugin that must learn about the endpoint (none for first-party targets).
    #[serde(default)]
    pub vendor: Option<String>,
    #[serde(rename = "match")]
    pub matcher: Matcher,
    pub dns: DnsRule,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Matcher {
    /// Exact Private Link Service aliases (case-insensitive).
    pub aliases: Vec<String>,
    /// Refused at load: the first label of an alias is the PLS name, which whoever
    /// creates the PLS chooses, so a pattern would let a look-alike in.
    pub alias_globs: Vec<String>,
    /// `"vendor"`: the exact aliases of the target's vendor, learnt from its API
    /// (ClickHouse `privateEndpointConfig.endpointServiceId`, Zilliz's endpoint services)
    /// or configured (`[vendors.<name>] aliases`); see [`KnownNames`].
    pub aliases_from: String,
    pub resource_types: Vec<String>,
    pub group_ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsRule {
    pub mode: DnsMode,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub zones: Vec<String>,
    #[serde(default)]
    pub suffix_zones: BTreeMap<String, String>,
    #[serde(default)]
    pub name_template: String,
    #[serde(default)]
    pub items: Vec<String>,
    #[serde(default)]
    pub items_tag: String,
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// Several endpoints (to the same target) may own this name: a vendor's regional
    /// wildcard. Otherwise a name has one owner and a second endpoint is a conflict.
    #[serde(default)]
    pub shared: bool,
    /// Write records while the connection is still Pending. Off by default: a record is
    /// a claim on a name for every VNet linked to the zone, and only the target's
    /// approval grants it. A target type with a real reason to resolve before approval
    /// can turn it on in a user catalog.
    #[serde(default)]
    pub before_approval: bool,
    /// Mode `names`: where items from `items_tag` must be known before they become
    /// records. `"vendor"` = the vendor's own list (Zilliz: clusters of the configured
    /// project) or `[vendors.<name>] names`; empty = only `items` of this rule. A tag
    /// is a request, never a grant.
    #[serde(default)]
    pub items_known: String,
    /// Mode `names`: at most this many items per endpoint (a tag cannot ask for a
    /// hundred names and spend the hub's write budget).
    #[serde(default = "default_max_items")]
    pub max_items: usize,
}

fn default_ttl() -> u32 {
    300
}

fn default_max_items() -> usize {
    8
}

/// How a desired record may share its name with other endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    /// One owner (`shared = false`).
    Exclusive,
    /// Shared among endpoints to the same target in the same VNet.
    SameVnet,
    /// Shared among endpoints to the same target in any VNet (`dns.share_across_vnets`:
    /// every client VNet must route to every other VNet's endpoint).
    AnyVnet,
}

/// Names the catalog may match or write that only the vendors (or the configuration)
/// know: exact aliases and valid `names`-mode items, per vendor, lower-cased.
#[derive(Debug, Clone, Default)]
pub struct KnownNames {
    pub aliases: BTreeMap<String, BTreeSet<String>>,
    pub items: BTreeMap<String, BTreeSet<String>>,
}

impl KnownNames {
    pub fn add_aliases<'a>(&mut self, vendor: &str, aliases: impl IntoIterator<Item = &'a String>) {
        let set = self.aliases.entry(vendor.to_ascii_lowercase()).or_default();
        set.extend(aliases.into_iter().map(|a| a.trim().to_ascii_lowercase()).filter(|a| !a.is_empty()));
    }
    pub fn add_items<'a>(&mut self, vendor: &str, items: impl IntoIterator<Item = &'a String>) {
        let set = self.items.entry(vendor.to_ascii_lowercase()).or_default();
        set.extend(items.into_iter().map(|a| a.trim().to_ascii_lowercase()).filter(|a| !a.is_empty()));
    }
    fn has_alias(&self, vendor: &str, alias: &str) -> bool {
        self.aliases.get(&vendor.to_ascii_lowercase()).is_some_and(|s| s.contains(&alias.to_ascii_lowercase()))
    }
    fn has_item(&self, vendor: &str, item: &str) -> bool {
        self.items.get(&vendor.to_ascii_lowercase()).is_some_and(|s| s.contains(&item.to_ascii_lowercase()))
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DnsMode {
    Wildcard,
    Names,
    Fqdns,
}

/// One record the endpoint needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DesiredRecord {
    pub key: RecordKey,
    pub ttl: u32,
    pub addresses: BTreeSet<Ipv4Addr>,
    /// What the endpoint points at (`dns::target_ref`), recorded in its share.
    pub target: String,
    /// The endpoint's virtual network (`dns::vnet_ref`), recorded in its share.
    pub vnet: String,
    pub sharing: Sharing,
}

/// What the catalog says about one endpoint.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Desired {
    /// The catalog target that matched (`None`: nothing matched; reported, not guessed).
    pub target_id: Option<String>,
    pub vendor: Option<String>,
    pub records: Vec<DesiredRecord>,
    /// Why something expected is missing (no FQDNs, no items tag, zone group ...).
    pub notes: Vec<String>,
    /// Records wait for the connection's approval (the default; `before_approval`).
    pub after_approval: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {source_name}: {message}")]
    Parse { source_name: String, message: String },
}

#[derive(Debug)]
pub struct Catalog {
    targets: Vec<Target>,
    /// `dns.share_across_vnets`: shared names take endpoints from every VNet.
    share_across_vnets: bool,
    known: std::sync::RwLock<KnownNames>,
}

impl Clone for Catalog {
    fn clone(&self) -> Self {
        Self { targets: self.targets.clone(), share_across_vnets: self.share_across_vnets, known: self.known().into() }
    }
}

impl Catalog {
    pub fn builtin() -> Self {
        Self::from_toml(BUILTIN, "built-in").expect("the built-in catalog is valid (tested)")
    }

    pub fn from_toml(text: &str, source_name: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile = toml::from_str(text)
            .map_err(|e| CatalogError::Parse { source_name: source_name.into(), message: e.to_string() })?;
        for t in &file.targets {
            let bad = |m: &str| CatalogError::Parse {
                source_name: source_name.into(),
                message: format!("target `{}`: {m}", t.id),
            };
            match t.dns.mode {
                DnsMode::Wildcard if t.dns.zone.is_empty() => return Err(bad("mode wildcard needs `zone`")),
                DnsMode::Names if t.dns.zone.is_empty() || !t.dns.name_template.contains("{item}") => {
                    return Err(bad("mode names needs `zone` and a `name_template` containing {item}"));
                }
                _ => {}
            }
            if t.dns.ttl == 0 {
                return Err(bad("ttl must be positive"));
            }
            if !t.matcher.alias_globs.is_empty() {
                return Err(bad(
                    "alias_globs are not accepted: an alias's first label is the PLS name its creator chooses, \
                     so a pattern lets a look-alike in; list exact `aliases`, or set aliases_from = \"vendor\"",
                ));
            }
            if !matches!(t.matcher.aliases_from.as_str(), "" | "vendor") {
                return Err(bad("aliases_from must be \"vendor\" or absent"));
            }
            if !t.matcher.aliases_from.is_empty() && t.vendor.is_none() {
                return Err(bad("aliases_from = \"vendor\" needs `vendor`"));
            }
            if !matches!(t.dns.items_known.as_str(), "" | "vendor") {
                return Err(bad("items_known must be \"vendor\" or absent"));
            }
            if t.dns.max_items == 0 {
                return Err(bad("max_items must be positive"));
            }
        }
        Ok(Self::with_targets(file.targets))
    }

    fn with_targets(targets: Vec<Target>) -> Self {
        Self { targets, share_across_vnets: false, known: Default::default() }
    }

    /// `dns.share_across_vnets` (see [`Sharing::AnyVnet`]).
    pub fn with_share_across_vnets(mut self, on: bool) -> Self {
        self.share_across_vnets = on;
        self
    }

    /// Adds names learnt from the vendors or the configuration.
    pub fn learn(&self, update: impl FnOnce(&mut KnownNames)) {
        update(&mut self.known.write().unwrap_or_else(|p| p.into_inner()));
    }

    /// Replaces what one vendor's API said (configured names are added back by the caller).
    pub fn known(&self) -> KnownNames {
        self.known.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// User targets first, then (optionally) the built-ins.
    pub fn load(user_file: Option<&Path>, include_builtin: bool) -> Result<Self, CatalogError> {
        let mut targets = Vec::new();
        if let Some(p) = user_file {
            let text = std::fs::read_to_string(p)
                .map_err(|e| CatalogError::Parse { source_name: p.display().to_string(), message: e.to_string() })?;
            targets.extend(Self::from_toml(&text, &p.display().to_string())?.targets);
        }
        if include_builtin {
            targets.extend(Self::builtin().targets);
        }
        Ok(Self::with_targets(targets))
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// The first target matching the endpoint's connection.
    pub fn match_target(&self, pe: &PrivateEndpoint) -> Option<&Target> {
        let conn = pe.connections.first()?;
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        self.targets.iter().find(|t| t.matcher.matches(&conn.target, &conn.group_ids, t.vendor.as_deref(), &known))
    }

    /// The records `pe` needs. Zones that the endpoint's own private DNS zone group
    /// manages are skipped: the platform writes those, and a second writer would fight it.
    pub fn desired(&self, pe: &PrivateEndpoint) -> Desired {
        let Some(target) = self.match_target(pe) else {
            let what = match pe.target() {
                Some(LinkTarget::Alias(a)) => format!("alias {a}"),
                Some(LinkTarget::Resource(r)) => format!("resource {r}"),
                Some(LinkTarget::Unknown(u)) => format!("unrecognised target `{u}`"),
                None => "no private link connection".into(),
            };
            return Desired {
                notes: vec![format!("no catalog target matches {what}: nothing to do")],
                ..Default::default()
            };
        };
        let mut out = Desired {
            target_id: Some(target.id.clone()),
            vendor: target.vendor.clone(),
            after_approval: !target.dns.before_approval,
            ..Default::default()
        };
        let target_ref = match pe.target() {
            Some(LinkTarget::Alias(a)) => target_ref(a),
            Some(LinkTarget::Resource(r)) => target_ref(r.as_str()),
            _ => String::new(),
        };
        let vnet = vnet_ref(pe.subnet_id.as_deref());
        let sharing = match (target.dns.shared, self.share_across_vnets) {
            (false, _) => Sharing::Exclusive,
            (true, false) => Sharing::SameVnet,
            (true, true) => Sharing::AnyVnet,
        };
        let record = |key: RecordKey, ttl: u32, addresses: BTreeSet<Ipv4Addr>| DesiredRecord {
            key,
            ttl,
            addresses,
            target: target_ref.clone(),
            vnet: vnet.clone(),
            sharing,
        };
        let addresses: BTreeSet<Ipv4Addr> = pe.addresses().into_iter().collect();
        if addresses.is_empty() {
            out.notes.push("endpoint has no private IPv4 address yet".into());
            return out;
        }
        let rule = &target.dns;
        let vars = TemplateVars::new(pe);
        match rule.mode {
            DnsMode::Wildcard => {
                out.records.push(record(RecordKey::new(&vars.render(&rule.zone), "*"), rule.ttl, addresses.clone()));
            }
            DnsMode::Names => {
                let mut items: Vec<String> = rule.items.clone();
                if !rule.items_tag.is_empty() {
                    let tag = pe.tags.iter().find(|(k, _)| k.eq_ignore_ascii_case(&rule.items_tag)).map(|(_, v)| v);
                    match tag {
                        Some(v) => {
                            let requested =
                                v.split(',').map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty());
                            items.extend(self.admit_items(target, requested, &mut out.notes));
                        }
                        None if items.is_empty() => {
                            out.notes.push(format!("tag `{}` is missing: it lists the names to create", rule.items_tag))
                        }
                        None => {}
                    }
                }
                let zone = vars.render(&rule.zone);
                let mut seen = BTreeSet::new();
                for item in items {
                    if !is_dns_label(&item) {
                        out.notes.push(format!("skipped `{}`: not a valid DNS label", sanitize(&item)));
                        continue;
                    }
                    if !seen.insert(item.clone()) {
                        continue;
                    }
                    if seen.len() > rule.max_items {
                        out.notes.push(format!(
                            "skipped `{}`: at most {} names per endpoint (max_items of target `{}`)",
                            sanitize(&item),
                            rule.max_items,
                            target.id
                        ));
                        continue;
                    }
                    let key = RecordKey::new(&zone, &rule.name_template.replace("{item}", &item));
                    out.records.push(record(key, rule.ttl, addresses.clone()));
                }
            }
            DnsMode::Fqdns => {
                for (fqdn, addrs) in fqdn_addresses(pe) {
                    match place_fqdn(&fqdn, &rule.zones, &rule.suffix_zones, rule.zones.is_empty()) {
                        Some(key) => out.records.push(record(key, rule.ttl, addrs)),
                        None => out.notes.push(format!("no zone of target `{}` serves {fqdn}", target.id)),
                    }
                }
                if out.records.is_empty() && out.notes.is_empty() {
                    out.notes.push("endpoint reports no FQDNs (NIC and customDnsConfigs are empty)".into());
                }
            }
        }
        // Several FQDNs may land on the same name (e.g. duplicate customDnsConfigs): merge.
        let mut merged: BTreeMap<RecordKey, DesiredRecord> = BTreeMap::new();
        for r in out.records.drain(..) {
            merged.entry(r.key.clone()).and_modify(|m| m.addresses.extend(r.addresses.iter().copied())).or_insert(r);
        }
        let group_zones: BTreeSet<String> = pe
            .dns_zone_group_zones
            .iter()
            .filter_map(|id| id.rsplit('/').next().map(str::to_ascii_lowercase))
            .collect();
        for (key, rec) in merged {
            if group_zones.contains(&key.zone) {
                out.notes.push(format!(
                    "{}: zone {} is managed by the endpoint's private DNS zone group; left to the platform",
                    key.fqdn(),
                    key.zone
                ));
            } else {
                out.records.push(rec);
            }
        }
        out
    }
}

impl Catalog {
    /// The tag's items this target accepts: only names the rule lists or the vendor
    /// knows (`items_known = "vendor"`); the rest are noted and skipped.
    fn admit_items(
        &self,
        target: &Target,
        requested: impl Iterator<Item = String>,
        notes: &mut Vec<String>,
    ) -> Vec<String> {
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        let vendor = target.vendor.as_deref().unwrap_or_default();
        let mut out = Vec::new();
        for item in requested {
            let listed = target.dns.items.iter().any(|i| i.eq_ignore_ascii_case(&item));
            let by_vendor = target.dns.items_known == "vendor" && known.has_item(vendor, &item);
            if listed || by_vendor {
                out.push(item);
            } else {
                let source = if target.dns.items_known == "vendor" {
                    format!("{vendor}'s own list for the configured account, nor [vendors.{vendor}] names")
                } else {
                    format!("the `items` of target `{}`", target.id)
                };
                notes.push(format!(
                    "skipped `{}` from tag `{}`: not in {source}; a tag asks for a name, it cannot grant one",
                    sanitize(&item),
                    target.dns.items_tag
                ));
            }
        }
        out
    }
}

impl Matcher {
    fn matches(&self, target: &LinkTarget, group_ids: &[String], vendor: Option<&str>, known: &KnownNames) -> bool {
        let by_target = match target {
            LinkTarget::Alias(alias) => {
                self.aliases.iter().any(|a| a.eq_ignore_ascii_case(alias))
                    || (self.aliases_from == "vendor" && vendor.is_some_and(|v| known.has_alias(v, alias)))
            }
            LinkTarget::Resource(id) => {
                let t = id.resource_type();
                self.resource_types.iter().any(|rt| rt == "*" || rt.eq_ignore_ascii_case(&t))
            }
            LinkTarget::Unknown(_) => false,
        };
        let by_group = self.group_ids.is_empty()
            || group_ids.iter().any(|g| self.group_ids.iter().any(|m| m.eq_ignore_ascii_case(g)));
        by_target && by_group
    }
}

/// [`glob_match`] ignoring ASCII case (aliases, request messages, resource ids).
pub fn glob_match_ci(pattern: &str, text: &str) -> bool {
    glob_match(&pattern.to_ascii_lowercase(), &text.to_ascii_lowercase())
}

/// `*` matches any run of characters (including dots); everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            if !rest.starts_with(part) {
                return false;
            }
            rest = &rest[part.len()..];
        } else if i == parts.len() - 1 {
            return rest.len() >= part.len() && rest.ends_with(part);
        } else if let Some(pos) = rest.find(part) {
            rest = &rest[pos + part.len()..];
        } else {
            return false;
        }
    }
    true
}

struct TemplateVars {
    region: String,
    alias_region: String,
}

impl TemplateVars {
    fn new(pe: &PrivateEndpoint) -> Self {
        let region = pe.location.to_ascii_lowercase();
        let alias_region = match pe.target() {
            // <prefix>.<guid>.<region>.azure.privatelinkservice
            Some(LinkTarget::Alias(a)) => {
                let labels: Vec<&str> = a.split('.').collect();
                if labels.len() >= 5 { labels[labels.len() - 3].to_string() } else { region.clone() }
            }
            _ => region.clone(),
        };
        Self { region, alias_region }
    }
    fn render(&self, t: &str) -> String {
        t.replace("{alias_region}", &self.alias_region).replace("{region}", &self.region).to_ascii_lowercase()
    }
}

/// Each FQDN the endpoint serves with the addresses that serve it. The NIC's
/// `privateLinkConnectionProperties.fqdns` are authoritative; `customDnsConfigs` fill in
/// when the NIC has none (it is empty for alias targets and while a zone group exists).
fn fqdn_addresses(pe: &PrivateEndpoint) -> BTreeMap<String, BTreeSet<Ipv4Addr>> {
    let mut out: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for c in &pe.nic_ip_configs {
        for f in &c.fqdns {
            out.entry(f.clone()).or_default().insert(c.address);
        }
    }
    if out.is_empty() {
        for c in &pe.custom_dns_configs {
            out.entry(c.fqdn.clone()).or_default().extend(c.addresses.iter().copied());
        }
    }
    out.retain(|f, a| !a.is_empty() && !f.is_empty() && f.len() <= 253);
    out
}

/// Places `fqdn` in the longest matching zone. A zone `privatelink.S` serves names
/// `<name>.S` and `<name>.privatelink.S`; `{region}` in a zone pattern matches one label.
/// With `fallback`, a name not served by `zones` goes to `suffix_zones` or to
/// `privatelink.<fqdn minus first label>`.
fn place_fqdn(
    fqdn: &str,
    zones: &[String],
    suffix_zones: &BTreeMap<String, String>,
    fallback: bool,
) -> Option<RecordKey> {
    let fqdn = fqdn.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = fqdn.split('.').collect();
    let mut best: Option<(usize, RecordKey)> = None;
    for pattern in zones {
        let pattern = pattern.to_ascii_lowercase();
        let public = pattern.strip_prefix("privatelink.").unwrap_or(&pattern);
        let plabels: Vec<&str> = public.split('.').collect();
        for with_privatelink in [true, false] {
            let mut want: Vec<&str> = plabels.clone();
            if with_privatelink {
                want.insert(0, "privatelink");
            }
            if labels.len() <= want.len() {
                continue;
            }
            let tail = &labels[labels.len() - want.len()..];
            let ok = tail.iter().zip(&want).all(|(l, p)| *p == "{region}" || l == p);
            if !ok {
                continue;
            }
            let zone_labels: Vec<&str> = tail.iter().skip(usize::from(with_privatelink)).copied().collect();
            let zone = format!("privatelink.{}", zone_labels.join("."));
            let name = labels[..labels.len() - want.len()].join(".");
            if best.as_ref().is_none_or(|(len, _)| plabels.len() > *len) {
                best = Some((plabels.len(), RecordKey::new(&zone, &name)));
            }
        }
    }
    if let Some((_, key)) = best {
        return Some(key);
    }
    if !fallback || labels.len() < 3 {
        return None;
    }
    let mut longest: Option<(&str, &str)> = None;
    for (suffix, zone) in suffix_zones {
        if fqdn.ends_with(&format!(".{suffix}")) && longest.is_none_or(|(s, _)| suffix.len() > s.len()) {
            longest = Some((suffix, zone));
        }
    }
    if let Some((suffix, zone)) = longest {
        let name = &fqdn[..fqdn.len() - suffix.len() - 1];
        return Some(RecordKey::new(zone, name.strip_suffix(".privatelink").unwrap_or(name)));
    }
    let rest = labels[1..].join(".");
    let rest = rest.strip_prefix("privatelink.").unwrap_or(&rest);
    Some(RecordKey::new(&format!("privatelink.{rest}"), labels[0]))
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 50
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests;
