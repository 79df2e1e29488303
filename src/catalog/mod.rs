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

use crate::effects::dns::RecordKey;
use crate::model::{LinkTarget, PrivateEndpoint};

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
    pub aliases: Vec<String>,
    pub alias_globs: Vec<String>,
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
}

fn default_ttl() -> u32 {
    300
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
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {source_name}: {message}")]
    Parse { source_name: String, message: String },
}

#[derive(Debug, Clone)]
pub struct Catalog {
    targets: Vec<Target>,
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
        }
        Ok(Self { targets: file.targets })
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
        Ok(Self { targets })
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// The first target matching the endpoint's connection.
    pub fn match_target(&self, pe: &PrivateEndpoint) -> Option<&Target> {
        let conn = pe.connections.first()?;
        self.targets.iter().find(|t| t.matcher.matches(&conn.target, &conn.group_ids))
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
        let mut out =
            Desired { target_id: Some(target.id.clone()), vendor: target.vendor.clone(), ..Default::default() };
        let addresses: BTreeSet<Ipv4Addr> = pe.addresses().into_iter().collect();
        if addresses.is_empty() {
            out.notes.push("endpoint has no private IPv4 address yet".into());
            return out;
        }
        let rule = &target.dns;
        let vars = TemplateVars::new(pe);
        match rule.mode {
            DnsMode::Wildcard => {
                out.records.push(DesiredRecord {
                    key: RecordKey::new(&vars.render(&rule.zone), "*"),
                    ttl: rule.ttl,
                    addresses: addresses.clone(),
                });
            }
            DnsMode::Names => {
                let mut items: Vec<String> = rule.items.clone();
                if !rule.items_tag.is_empty() {
                    let tag = pe.tags.iter().find(|(k, _)| k.eq_ignore_ascii_case(&rule.items_tag)).map(|(_, v)| v);
                    match tag {
                        Some(v) => items.extend(v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty())),
                        None if items.is_empty() => {
                            out.notes.push(format!("tag `{}` is missing: it lists the names to create", rule.items_tag))
                        }
                        None => {}
                    }
                }
                let zone = vars.render(&rule.zone);
                for item in items {
                    if !is_dns_label(&item) {
                        out.notes.push(format!("skipped `{}`: not a valid DNS label", sanitize(&item)));
                        continue;
                    }
                    out.records.push(DesiredRecord {
                        key: RecordKey::new(&zone, &rule.name_template.replace("{item}", &item)),
                        ttl: rule.ttl,
                        addresses: addresses.clone(),
                    });
                }
            }
            DnsMode::Fqdns => {
                for (fqdn, addrs) in fqdn_addresses(pe) {
                    match place_fqdn(&fqdn, &rule.zones, &rule.suffix_zones, rule.zones.is_empty()) {
                        Some(key) => out.records.push(DesiredRecord { key, ttl: rule.ttl, addresses: addrs }),
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

impl Matcher {
    fn matches(&self, target: &LinkTarget, group_ids: &[String]) -> bool {
        let by_target = match target {
            LinkTarget::Alias(alias) => {
                let alias_rule = !self.aliases.is_empty() || !self.alias_globs.is_empty();
                alias_rule
                    && (self.aliases.iter().any(|a| a.eq_ignore_ascii_case(alias))
                        || self.alias_globs.iter().any(|g| glob_match(&g.to_ascii_lowercase(), alias)))
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
