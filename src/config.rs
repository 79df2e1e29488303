//! Configuration: one documented TOML file plus environment overrides.
//!
//! Azure Functions app settings arrive as environment variables, so every setting in
//! the file can also be set as `AUTOPILOT__<SECTION>__<KEY>` (double underscores nest,
//! the same convention Functions uses for `Connection__fullyQualifiedNamespace`).
//! Values are parsed as TOML scalars or arrays when they look like one (`true`, `16`,
//! `["a","b"]`), else taken as strings. Unknown keys are errors that name the key, so a
//! typo never silently falls back to a default. Every setting has a safe default;
//! `autopilot.example.toml` documents them all.
//!
//! Secrets never live in the file: settings that need one name the environment
//! variable that holds it (`*_env` keys), which in Azure is a Key Vault reference.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "AUTOPILOT__";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub arm: ArmSettings,
    pub dns: DnsSettings,
    pub catalog: CatalogSettings,
    pub reconcile: ReconcileSettings,
    pub queue: QueueSettings,
    pub vendors: crate::effects::vendors::VendorsConfig,
    pub audit: AuditSettings,
    pub sweep: SweepSettings,
    pub approvals: crate::effects::approvals::ApprovalSettings,
    pub marks: crate::effects::marks::MarkSettings,
    pub ledger: LedgerSettings,
    pub leases: LeaseSettings,
    pub log: LogSettings,
    pub coverage: crate::reconcile::coverage::CoverageSettings,
    pub doctor: DoctorSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArmSettings {
    /// `https://management.azure.com`; the sandbox points this at loopback.
    pub base_url: String,
    /// Client id of a user-assigned managed identity; empty = system-assigned / developer tools.
    pub managed_identity_client_id: String,
    pub request_timeout_secs: u64,
    pub max_retries: u32,
    pub max_concurrency: usize,
    /// Client-side budget per subscription (ARM: reads 250 burst + 25/s, writes 200 + 10/s).
    pub reads_burst: u32,
    pub reads_per_sec: f64,
    pub writes_burst: u32,
    pub writes_per_sec: f64,
    pub deletes_burst: u32,
    pub deletes_per_sec: f64,
}

impl Default for ArmSettings {
    fn default() -> Self {
        Self {
            base_url: "https://management.azure.com".into(),
            managed_identity_client_id: String::new(),
            request_timeout_secs: 20,
            max_retries: 4,
            max_concurrency: 16,
            reads_burst: 250,
            reads_per_sec: 25.0,
            writes_burst: 200,
            writes_per_sec: 10.0,
            deletes_burst: 200,
            deletes_per_sec: 10.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSettings {
    /// Where zones live when `[[dns.zones]]` does not name them (the hub).
    pub default_subscription: String,
    pub default_resource_group: String,
    /// Zones with an explicit location or backend.
    pub zones: Vec<ZoneSettings>,
    /// RFC 2136 servers that `zones` can point at.
    pub servers: Vec<DnsServerSettings>,
    /// Shared names (a vendor's regional wildcard) take endpoints from every VNet: the
    /// record then holds addresses in several VNets, so every client VNet must route to
    /// every other VNet's endpoints. Off by default: endpoints in another VNet are
    /// reported as conflicts (give each VNet its own zone instead).
    pub share_across_vnets: bool,
    /// `off` (default: zones and links are the user's, a missing zone is reported) or
    /// `create` (a missing zone is created, after searching the estate for a same-named
    /// one, and linked; see `effects/dns/zones.rs`).
    pub zone_management: String,
    /// What a zone we manage is linked to: `"endpoint_vnet"` (default) or a list of
    /// (hub) virtual network ids. `[[dns.zones]] link_to` overrides it per replica.
    pub link_to: LinkTo,
    /// `resolutionPolicy` of the links we create, sent only for `privatelink.*` zones
    /// (where Azure accepts it): `""` (not sent: Azure's default), `Default` or
    /// `NxDomainRedirect` (fallback to internet: a missing record resolves publicly).
    pub link_resolution_policy: String,
    /// Subscriptions searched (Resource Graph) for a same-named zone before one is
    /// created, besides the sweep's subscriptions and every zone location configured.
    pub zone_search_subscriptions: Vec<String>,
}

/// `dns.link_to`: the endpoint's own VNet, or fixed VNets (hubs).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum LinkTo {
    /// `"endpoint_vnet"`.
    Mode(String),
    /// Virtual network ids.
    Vnets(Vec<String>),
}

impl Default for LinkTo {
    fn default() -> Self {
        LinkTo::Mode(LINK_TO_ENDPOINT_VNET.into())
    }
}

/// The one `dns.link_to` word.
pub const LINK_TO_ENDPOINT_VNET: &str = "endpoint_vnet";

impl LinkTo {
    /// `None` = the endpoint's own VNet; `Some` = these VNets (lower-cased).
    pub fn fixed(&self) -> Option<Vec<String>> {
        match self {
            LinkTo::Mode(_) => None,
            LinkTo::Vnets(v) => Some(v.iter().map(|s| s.trim().to_ascii_lowercase()).collect()),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ZoneSettings {
    pub name: String,
    /// `azure` (default) or `rfc2136`.
    #[serde(default = "default_provider")]
    pub provider: String,
    #[serde(default)]
    pub subscription: String,
    #[serde(default)]
    pub resource_group: String,
    /// For `rfc2136`: the `[[dns.servers]]` name.
    #[serde(default)]
    pub server: String,
    /// Virtual networks this copy is linked to when we manage its links (overrides
    /// `dns.link_to`; a DR hub's copy is linked to the DR hub).
    #[serde(default)]
    pub link_to: Option<Vec<String>>,
}

fn default_provider() -> String {
    "azure".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsServerSettings {
    pub name: String,
    /// `host:port`, e.g. `10.0.0.53:53`.
    pub address: String,
    pub tsig_key_name: String,
    #[serde(default = "default_tsig_algorithm")]
    pub tsig_algorithm: String,
    /// Name of the environment variable holding the base64 TSIG secret.
    pub tsig_secret_env: String,
    #[serde(default = "default_dns_timeout")]
    pub timeout_secs: u64,
    #[serde(default = "default_true")]
    pub allow_axfr: bool,
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".into()
}
fn default_dns_timeout() -> u64 {
    5
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogSettings {
    /// Extra catalog file (TOML, same format as the built-in one); its targets are
    /// matched before the built-ins.
    pub file: String,
    pub include_builtin: bool,
    /// Exact Private Link Service aliases per vendor (`clickhouse = ["production-…"]`),
    /// for targets with `aliases_from = "vendor"`, in addition to what the vendors'
    /// APIs publish. Never patterns.
    pub vendor_aliases: std::collections::BTreeMap<String, Vec<String>>,
    /// Names an endpoint's tag may ask for, per vendor (`zilliz = ["in01-…"]`: the
    /// project's cluster ids), for `names` targets with `items_known = "vendor"`.
    pub vendor_names: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for CatalogSettings {
    fn default() -> Self {
        Self {
            file: String::new(),
            include_builtin: true,
            vendor_aliases: Default::default(),
            vendor_names: Default::default(),
        }
    }
}

/// `[reconcile]` is the reconciler's own settings type; `Config` embeds it.
pub use crate::reconcile::settings::ReconcileSettings;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// `embedded` (SQLite file: a laptop, `demo`, `serve` without Azure) or `servicebus`
    /// (Azure: the `WorkQueue` trigger consumes it, so `serve` runs no workers).
    pub kind: String,
    /// Embedded: the SQLite file.
    pub path: String,
    /// Embedded: how long a received message stays locked (should exceed one reconcile).
    pub lock_secs: u64,
    /// Embedded: workers draining the queue in `serve`.
    pub workers: usize,
    /// Service Bus: namespace, `mybus` or `mybus.servicebus.windows.net`.
    pub namespace: String,
    /// Service Bus: the work queue (the trigger's `%AUTOPILOT_WORK_QUEUE%`).
    pub name: String,
    /// Service Bus without a dead-letter table (local runs): where permanent failures
    /// are parked; empty = `<name>-deadletter`.
    pub dead_letter_queue: String,
    /// Service Bus: Table endpoint and table holding the dead letters (what infra deploys;
    /// see `src/queue/servicebus/mod.rs`, "Dead letters").
    pub dead_letter_table_endpoint: String,
    pub dead_letter_table: String,
    /// Service Bus: ARM id of the work queue, for its counts with Reader only.
    pub arm_queue_id: String,
    /// Service Bus: `managed_identity` (uses arm.managed_identity_client_id) or `sas`.
    pub auth: String,
    /// Service Bus with `auth = "sas"`: the policy name and the environment variable
    /// holding its key (a Key Vault reference in Azure).
    pub sas_key_name: String,
    pub sas_key_env: String,
    /// Service Bus: a local emulator's origin (`http://127.0.0.1:port`) to send the
    /// namespace's requests to instead. Loopback only: in Azure the data-plane URL is
    /// always derived from the namespace, so no setting can send a token elsewhere.
    pub emulator_endpoint: String,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            kind: "embedded".into(),
            path: ".autopilot/queue.sqlite".into(),
            lock_secs: 120,
            workers: 4,
            namespace: String::new(),
            name: "autopilot-work".into(),
            dead_letter_queue: String::new(),
            dead_letter_table_endpoint: String::new(),
            dead_letter_table: String::new(),
            arm_queue_id: String::new(),
            auth: "managed_identity".into(),
            sas_key_name: String::new(),
            sas_key_env: "AUTOPILOT_SERVICEBUS_KEY".into(),
            emulator_endpoint: String::new(),
        }
    }
}

/// `[doctor]`: what only `autopilot doctor` reads. It lives here, not in `doctor/`, because
/// the doctor sits above the config (it builds the app from it); every section a lower
/// layer reads lives with that layer instead.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DoctorSettings {
    /// ARM id of the vault holding the vendor secrets (infra's `AZURE_KEY_VAULT_NAME`).
    pub key_vault_id: String,
    /// ARM id of the audit topic (`audit.topic_endpoint`'s topic).
    pub audit_topic_id: String,
    /// VNet ids every Azure zone in `dns.zones` must be linked to; empty = at least one link.
    pub zone_links: Vec<String>,
}

// The sweep reads its own settings type (the runtime does not import `config`).
pub use crate::runtime::settings::SweepSettings;

/// Audit events (CloudEvents 1.0): to the Event Grid topic when `topic_endpoint` is set,
/// else to the JSON-lines `file`, else nowhere (`file = ""`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Event Grid custom topic endpoint (CloudEvents 1.0, managed identity).
    pub topic_endpoint: String,
    /// Local JSON-lines file.
    pub file: String,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self { topic_endpoint: String::new(), file: ".autopilot/audit.jsonl".into() }
    }
}

/// `[ledger]` is the ledger's own settings type; `Config` embeds it.
pub use crate::effects::vendors::ledger::LedgerSettings;

/// `[leases]`: one writer per endpoint across instances (see `arm::lease` for why a
/// lease and `reconcile::exclusive` for how it is held). `local` (one process: the
/// embedded deployment, the demo) or `table` (Azure, several instances).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseSettings {
    /// `local` or `table`.
    pub kind: String,
    /// Table endpoint; empty = `ledger.table_endpoint` (the same storage account).
    pub table_endpoint: String,
    pub table: String,
    /// How long a lease lasts between renewals (renewed every third of it). Also how long
    /// an endpoint waits after the instance converging it died.
    pub ttl_secs: u64,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self { kind: "local".into(), table_endpoint: String::new(), table: "endpointleases".into(), ttl_secs: 30 }
    }
}

impl LeaseSettings {
    /// The table endpoint in effect (its own, else the ledger's).
    pub fn endpoint<'a>(&'a self, ledger: &'a LedgerSettings) -> &'a str {
        if self.table_endpoint.trim().is_empty() { ledger.table_endpoint.trim() } else { self.table_endpoint.trim() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `private_link_autopilot=debug`.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: "text".into(), filter: "info".into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment override {name}: {message}")]
    Env { name: String, message: String },
    #[error("invalid setting {setting}: {message}")]
    Invalid { setting: String, message: String },
}

impl Config {
    /// Loads `path` (if any), applies `AUTOPILOT__*` overrides from `env`, validates.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.into(), source })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse { path: p.into(), message: e.to_string() })?
            }
            None => toml::Table::new(),
        };
        let mut overrides: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        overrides.sort();
        for (name, value) in overrides {
            apply_override(&mut table, &name, &value)?;
        }
        let source = path.map(|p| p.display().to_string()).unwrap_or_else(|| "defaults + environment".into());
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse { path: source.into(), message: e.to_string() })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Embedded defaults only (used by `demo` and tests).
    pub fn defaults() -> Self {
        Self::default()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting: &str, message: &str| {
            Err(ConfigError::Invalid { setting: setting.into(), message: message.into() })
        };
        if let Err(why) = crate::model::endpoint_url::credential_url(&self.arm.base_url) {
            return invalid("arm.base_url", &format!("{why} (the ARM token is sent there)"));
        }
        if self.arm.max_concurrency == 0 {
            return invalid("arm.max_concurrency", "must be at least 1");
        }
        if self.reconcile.deadline_ms == 0 || self.reconcile.deadline_ms > 25_000 {
            return invalid("reconcile.deadline_ms", "must be between 1 and 25000 (Event Grid waits 30 s)");
        }
        if self.reconcile.work_deadline_secs == 0 || self.reconcile.work_deadline_secs > 280 {
            return invalid(
                "reconcile.work_deadline_secs",
                "must be between 1 and 280 (host.json functionTimeout is 300 s)",
            );
        }
        if self.sweep.deadline_secs == 0 || self.sweep.deadline_secs > 280 {
            return invalid("sweep.deadline_secs", "must be between 1 and 280 (host.json functionTimeout is 300 s)");
        }
        if self.reconcile.max_parallel == 0 {
            return invalid("reconcile.max_parallel", "must be at least 1");
        }
        if !matches!(self.approvals.on_violation.as_str(), "leave_pending" | "reject") {
            return invalid("approvals.on_violation", "must be `leave_pending` or `reject`");
        }
        // Warnings go to stderr: logging is set up from this very configuration, later.
        let warnings =
            self.approvals.validate().map_err(|m| ConfigError::Invalid { setting: "approvals".into(), message: m })?;
        crate::effects::target_approvals::validate(&self.approvals)
            .map_err(|m| ConfigError::Invalid { setting: "approvals".into(), message: m })?;
        warnings.iter().for_each(|w| eprintln!("autopilot: warning: {w}"));
        if !matches!(self.sweep.source.as_str(), "resource_graph" | "arm") {
            return invalid("sweep.source", "must be `resource_graph` or `arm`");
        }
        match self.ledger.kind.as_str() {
            "sqlite" => {}
            "table" if self.ledger.table_endpoint.trim().is_empty() => {
                return invalid("ledger.table_endpoint", "is required when ledger.kind = \"table\"");
            }
            "table" => {}
            _ => return invalid("ledger.kind", "must be `sqlite` or `table`"),
        }
        match self.leases.kind.as_str() {
            "local" => {}
            "table" if self.leases.endpoint(&self.ledger).is_empty() => {
                return invalid(
                    "leases.table_endpoint",
                    "is required when leases.kind = \"table\" (or set ledger.table_endpoint)",
                );
            }
            "table" if self.leases.ttl_secs < 3 => return invalid("leases.ttl_secs", "must be at least 3"),
            "table" => {}
            _ => return invalid("leases.kind", "must be `local` or `table`"),
        }
        if let Err(e) = crate::effects::vendors::routing::validate(&self.vendors) {
            return invalid("vendors", &e);
        }
        match self.queue.kind.as_str() {
            "embedded" => {}
            "servicebus" => {
                if self.queue.namespace.trim().is_empty() {
                    return invalid("queue.namespace", "is required when queue.kind = \"servicebus\"");
                }
                if self.queue.name.trim().is_empty() {
                    return invalid("queue.name", "is required when queue.kind = \"servicebus\"");
                }
                match self.queue.auth.as_str() {
                    "managed_identity" => {}
                    "sas" if self.queue.sas_key_name.trim().is_empty() => {
                        return invalid("queue.sas_key_name", "is required when queue.auth = \"sas\"");
                    }
                    "sas" => {}
                    _ => return invalid("queue.auth", "must be `managed_identity` or `sas`"),
                }
                let emulator = self.queue.emulator_endpoint.trim();
                if !emulator.is_empty()
                    && !url::Url::parse(emulator).is_ok_and(|u| crate::model::endpoint_url::is_loopback(&u))
                {
                    return invalid("queue.emulator_endpoint", "must be a loopback origin (a local emulator)");
                }
            }
            _ => return invalid("queue.kind", "must be `embedded` or `servicebus`"),
        }
        if let Err((setting, message)) = validate_zone_management(&self.dns) {
            return Err(ConfigError::Invalid { setting, message });
        }
        for (i, z) in self.dns.zones.iter().enumerate() {
            let setting = format!("dns.zones[{i}] ({})", z.name);
            match z.provider.as_str() {
                "azure" => {}
                "rfc2136" => {
                    if !self.dns.servers.iter().any(|s| s.name == z.server) {
                        return Err(ConfigError::Invalid {
                            setting,
                            message: format!("server `{}` is not defined in [[dns.servers]]", z.server),
                        });
                    }
                }
                other => {
                    return Err(ConfigError::Invalid {
                        setting,
                        message: format!("provider must be `azure` or `rfc2136`, not `{other}`"),
                    });
                }
            }
        }
        Ok(())
    }
}

/// `dns.zone_management`, `dns.link_to`, `dns.link_resolution_policy` and replicas (several
/// `[[dns.zones]]` entries with one name): each replica must be an Azure zone in its own
/// place, so records, conflicts and ownership can be kept per replica.
fn validate_zone_management(dns: &DnsSettings) -> Result<(), (String, String)> {
    let err = |s: &str, m: String| Err((s.to_owned(), m));
    match dns.zone_management.as_str() {
        "" | "off" | "create" => {}
        other => return err("dns.zone_management", format!("must be `off` or `create`, not `{other}`")),
    }
    match &dns.link_to {
        LinkTo::Mode(m) if m == LINK_TO_ENDPOINT_VNET => {}
        LinkTo::Mode(m) => {
            return err(
                "dns.link_to",
                format!("must be \"{LINK_TO_ENDPOINT_VNET}\" or a list of virtual network ids, not `{m}`"),
            );
        }
        LinkTo::Vnets(v) => check_vnets("dns.link_to", v)?,
    }
    match dns.link_resolution_policy.as_str() {
        "" | "Default" | "NxDomainRedirect" => {}
        other => {
            return err(
                "dns.link_resolution_policy",
                format!("must be \"\" (not sent), `Default` or `NxDomainRedirect`, not `{other}`"),
            );
        }
    }
    let mut seen: Vec<(String, String, String)> = Vec::new();
    for (i, z) in dns.zones.iter().enumerate() {
        let setting = format!("dns.zones[{i}] ({})", z.name);
        if let Some(v) = &z.link_to {
            check_vnets(&format!("{setting}.link_to"), v)?;
        }
        let name = z.name.trim_end_matches('.').to_ascii_lowercase();
        let replicas = dns.zones.iter().filter(|o| o.name.trim_end_matches('.').eq_ignore_ascii_case(&name)).count();
        if replicas < 2 {
            continue;
        }
        if z.provider != "azure" {
            return err(&setting, "a zone named more than once (replicas) must use provider `azure`".into());
        }
        let place = (
            name,
            non_empty_or(&z.subscription, &dns.default_subscription).to_ascii_lowercase(),
            non_empty_or(&z.resource_group, &dns.default_resource_group).to_ascii_lowercase(),
        );
        if place.1.is_empty() || place.2.is_empty() {
            return err(&setting, "a replica needs its subscription and resource_group (or the dns defaults)".into());
        }
        if seen.contains(&place) {
            return err(
                &setting,
                format!(
                    "replica in {}/{} is listed twice: each copy of a zone lives in its own place",
                    place.1, place.2
                ),
            );
        }
        seen.push(place);
    }
    Ok(())
}

fn check_vnets(setting: &str, vnets: &[String]) -> Result<(), (String, String)> {
    for v in vnets {
        let lower = v.trim().to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        let ok = parts.len() == 9
            && parts[1] == "subscriptions"
            && parts[3] == "resourcegroups"
            && parts[5] == "providers"
            && parts[6] == "microsoft.network"
            && parts[7] == "virtualnetworks"
            && !parts[8].is_empty();
        if !ok {
            return Err((
                setting.to_owned(),
                format!(
                    "`{v}` is not a virtual network id (/subscriptions/…/providers/Microsoft.Network/virtualNetworks/<name>)"
                ),
            ));
        }
    }
    Ok(())
}

fn non_empty_or<'a>(value: &'a str, fallback: &'a str) -> &'a str {
    if value.trim().is_empty() { fallback } else { value }
}

fn apply_override(table: &mut toml::Table, name: &str, raw: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = name[ENV_PREFIX.len()..].split("__").map(|s| s.to_ascii_lowercase()).collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Env { name: name.into(), message: "empty path segment".into() });
    }
    let value = parse_env_value(raw);
    let mut cur = table;
    for (i, seg) in path.iter().enumerate() {
        if i == path.len() - 1 {
            cur.insert(seg.clone(), value);
            return Ok(());
        }
        let next = cur.entry(seg.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match next {
            toml::Value::Table(t) => t,
            _ => return Err(ConfigError::Env { name: name.into(), message: format!("`{seg}` is not a section") }),
        };
    }
    Ok(())
}

/// `true`/`16`/`1.5`/`["a"]`/`[{...}]` parse as TOML; anything else is a string.
fn parse_env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.arm.base_url, "https://management.azure.com");
        assert_eq!(c.queue.kind, "embedded");
    }

    #[test]
    fn env_overrides_nest_and_type() {
        let c = Config::load(
            None,
            env(&[
                ("AUTOPILOT__ARM__MAX_CONCURRENCY", "3"),
                ("AUTOPILOT__DNS__DEFAULT_SUBSCRIPTION", "sub-hub"),
                ("AUTOPILOT__CATALOG__INCLUDE_BUILTIN", "false"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.arm.max_concurrency, 3);
        assert_eq!(c.dns.default_subscription, "sub-hub");
        assert!(!c.catalog.include_builtin);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_setting() {
        let e = Config::load(None, env(&[("AUTOPILOT__ARM__MAX_CONCURENCY", "3")])).unwrap_err().to_string();
        assert!(e.contains("max_concurency"), "{e}");
        let e = Config::load(None, env(&[("AUTOPILOT__ARM__MAX_CONCURRENCY", "lots")])).unwrap_err().to_string();
        assert!(e.contains("max_concurrency"), "{e}");
        let e =
            Config::load(None, env(&[("AUTOPILOT__ARM__BASE_URL", "http://evil.example")])).unwrap_err().to_string();
        assert!(e.contains("arm.base_url"), "{e}");
    }

    #[test]
    fn zone_management_settings_are_checked() {
        let c = Config::load(
            None,
            env(&[
                ("AUTOPILOT__DNS__ZONE_MANAGEMENT", "create"),
                (
                    "AUTOPILOT__DNS__LINK_TO",
                    r#"["/subscriptions/h/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/hub"]"#,
                ),
            ]),
        )
        .unwrap();
        assert_eq!(c.dns.zone_management, "create");
        assert_eq!(c.dns.link_to.fixed().unwrap().len(), 1);
        assert!(Config::load(None, env(&[])).unwrap().dns.link_to.fixed().is_none());
        for (k, v, named) in [
            ("AUTOPILOT__DNS__ZONE_MANAGEMENT", "yes", "dns.zone_management"),
            ("AUTOPILOT__DNS__LINK_TO", "hub", "dns.link_to"),
            ("AUTOPILOT__DNS__LINK_TO", r#"["/subscriptions/h/vnet"]"#, "dns.link_to"),
            ("AUTOPILOT__DNS__LINK_RESOLUTION_POLICY", "nxdomainredirect", "dns.link_resolution_policy"),
        ] {
            let e = Config::load(None, env(&[(k, v)])).unwrap_err().to_string();
            assert!(e.contains(named), "{e}");
        }
    }

    #[test]
    fn replicas_are_azure_zones_in_distinct_places() {
        let zone = |sub: &str, provider: &str| ZoneSettings {
            name: "privatelink.example.com".into(),
            provider: provider.into(),
            subscription: sub.into(),
            resource_group: "dns".into(),
            server: "ns".into(),
            link_to: None,
        };
        let mut c = Config::defaults();
        c.dns.zones = vec![zone("a", "azure"), zone("b", "azure")];
        c.validate().unwrap();
        c.dns.zones = vec![zone("a", "azure"), zone("a", "azure")];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("listed twice"), "{e}");
        c.dns.zones = vec![zone("a", "azure"), zone("b", "rfc2136")];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("replicas"), "{e}");
    }

    #[test]
    fn example_file_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../autopilot.example.toml");
        Config::load(Some(&p), env(&[])).unwrap();
    }
}
