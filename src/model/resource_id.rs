//! ARM resource ids.
//!
//! ARM ids are case-insensitive (`resourceGroups` vs `resourcegroups` both appear in
//! real events), so every comparison and every key we store uses the lower-cased form,
//! while the original spelling is kept for display and for the URLs we call.

use std::fmt;

/// Longest id we accept. Real ids are far shorter; the bound stops hostile input
/// from reaching URLs, logs and storage keys.
pub const MAX_ID_LEN: usize = 1024;

/// A parsed, validated ARM resource id such as
/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/privateEndpoints/{name}`.
#[derive(Clone, Eq)]
pub struct ResourceId {
    raw: String,
    lower: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("resource id is empty")]
    Empty,
    #[error("resource id is longer than {MAX_ID_LEN} characters")]
    TooLong,
    #[error("resource id contains a control, whitespace or non-ASCII character")]
    BadCharacter,
    #[error(
        "resource id must look like /subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/{{namespace}}/{{type}}/{{name}}: {0}"
    )]
    Shape(String),
    #[error("resource id has a `.` or `..` segment")]
    DotSegment,
    #[error("not a private endpoint id (expected type Microsoft.Network/privateEndpoints): {0}")]
    NotPrivateEndpoint(String),
}

impl ResourceId {
    /// Parses any ARM resource id below a resource group's provider segment.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let s = s.trim_end_matches('/');
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(IdError::TooLong);
        }
        // `%` would let an id smuggle an encoded `/` or `..` past the shape check, and a
        // URL parser resolves `.`/`..` segments: an id must name exactly the path it spells.
        if s.chars()
            .any(|c| !c.is_ascii() || c.is_ascii_control() || c.is_whitespace() || matches!(c, '?' | '#' | '%' | '\\'))
        {
            return Err(IdError::BadCharacter);
        }
        if s.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(IdError::DotSegment);
        }
        let segs: Vec<&str> = s.split('/').collect();
        // ["", "subscriptions", sub, "resourceGroups", rg, "providers", ns, type, name, ...]
        let shape_ok = segs.len() >= 9
            && segs.len() % 2 == 1
            && segs[0].is_empty()
            && segs[1].eq_ignore_ascii_case("subscriptions")
            && segs[3].eq_ignore_ascii_case("resourcegroups")
            && segs[5].eq_ignore_ascii_case("providers")
            && segs[1..].iter().all(|p| !p.is_empty() && p.len() <= 260);
        if !shape_ok {
            return Err(IdError::Shape(truncate_for_message(s)));
        }
        Ok(Self { raw: s.to_string(), lower: s.to_ascii_lowercase() })
    }

    /// Parses an id and insists that it names a private endpoint (not a child of one).
    pub fn parse_private_endpoint(s: &str) -> Result<Self, IdError> {
        let id = Self::parse(s)?;
        if !id.is_private_endpoint() {
            return Err(IdError::NotPrivateEndpoint(truncate_for_message(s)));
        }
        Ok(id)
    }

    fn segments(&self) -> Vec<&str> {
        self.raw.split('/').collect()
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }
    /// The lower-cased id: the key for maps, ownership records and dedupe.
    pub fn key(&self) -> &str {
        &self.lower
    }
    pub fn subscription(&self) -> &str {
        self.segments()[2]
    }
    pub fn resource_group(&self) -> &str {
        self.segments()[4]
    }
    pub fn provider_namespace(&self) -> &str {
        self.segments()[6]
    }
    /// The full type, e.g. `Microsoft.Network/privateEndpoints` or
    /// `Microsoft.Kusto/clusters/privateEndpointConnections`.
    pub fn resource_type(&self) -> String {
        let segs = self.segments();
        let mut t = segs[6].to_string();
        let mut i = 7;
        while i < segs.len() {
            t.push('/');
            t.push_str(segs[i]);
            i += 2;
        }
        t
    }
    /// Last name segment.
    pub fn name(&self) -> &str {
        self.segments().last().copied().unwrap_or_default()
    }
    pub fn is_private_endpoint(&self) -> bool {
        let segs: Vec<&str> = self.lower.split('/').collect();
        segs.len() == 9 && segs[6] == "microsoft.network" && segs[7] == "privateendpoints"
    }
}

pub(crate) fn truncate_for_message(s: &str) -> String {
    const MAX: usize = 200;
    let clean: String = s.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
    if clean.chars().count() > MAX {
        let mut t: String = clean.chars().take(MAX).collect();
        t.push('…');
        t
    } else {
        clean
    }
}

impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.lower == other.lower
    }
}
impl std::hash::Hash for ResourceId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.lower.hash(state)
    }
}
impl PartialOrd for ResourceId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ResourceId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.lower.cmp(&other.lower)
    }
}
impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}
impl fmt::Debug for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceId({})", self.raw)
    }
}
impl serde::Serialize for ResourceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}
impl<'de> serde::Deserialize<'de> for ResourceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ResourceId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PE: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-spoke-1/providers/Microsoft.Network/privateEndpoints/pe-clickhouse";

    #[test]
    fn parses_and_compares_case_insensitively() {
        let a = ResourceId::parse_private_endpoint(PE).unwrap();
        let b =
            ResourceId::parse_private_endpoint(&PE.replace("resourceGroups", "resourcegroups").to_uppercase()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.subscription(), "00000000-0000-0000-0000-000000000001");
        assert_eq!(a.resource_group(), "rg-spoke-1");
        assert_eq!(a.name(), "pe-clickhouse");
        assert_eq!(a.resource_type(), "Microsoft.Network/privateEndpoints");
    }

    #[test]
    fn rejects_non_pe_and_junk() {
        assert!(matches!(
            ResourceId::parse_private_endpoint(&format!("{PE}/privateDnsZoneGroups/default")),
            Err(IdError::NotPrivateEndpoint(_))
        ));
        assert!(matches!(ResourceId::parse(""), Err(IdError::Empty)));
        assert!(matches!(ResourceId::parse("/subscriptions/x"), Err(IdError::Shape(_))));
        assert!(matches!(ResourceId::parse(&"a".repeat(5000)), Err(IdError::TooLong)));
        assert!(matches!(ResourceId::parse(&format!("{PE}\n")), Err(IdError::BadCharacter)));
        assert!(matches!(ResourceId::parse(&format!("{PE}?x=1")), Err(IdError::BadCharacter)));
    }
}
