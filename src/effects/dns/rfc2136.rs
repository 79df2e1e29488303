//! RFC 2136 dynamic update provider (BIND, Knot, PowerDNS, Windows DNS with TSIG).
//!
//! Every message (queries included) is TSIG-signed and goes over TCP: updates must
//! reach the primary, answers can exceed 512 bytes (TXT ownership, AXFR), and TCP spares
//! us truncation and retry logic. One connection per exchange keeps the provider
//! stateless; the reconciler's volume is a few messages per endpoint event.
//!
//! Ownership cannot live in the A record set itself, so it lives in a TXT record set at a
//! *sibling* name: the first label gets a `plautopilot-` prefix (`*` -> `plautopilot-_wildcard`,
//! `@` -> `plautopilot-_apex`). A sibling rather than a child (`_owner.*.zone`) because a name
//! below a wildcard creates an empty non-terminal that stops the wildcard from matching
//! that branch; and never a new label, so nothing appears between the apex and a deep name
//! like `<alias>.es.<zone>` that the apex `*` must keep answering (RFC 4592). The `_` keeps
//! `*` and `@` from colliding with hosts literally named `wildcard` or `apex` (host labels
//! never contain `_`). The TXT set holds one record `heritage=pl-autopilot` and one record per owner
//! `owner=<ref>;ips=<ip,ip>;target=<ref>;vnet=<ref>` (split into 255-byte strings,
//! concatenated on read), where each `<ref>` is an opaque hash (`h:<hex>`): the zone is
//! readable by every client of the server, so it must not publish subscription ids,
//! resource groups or endpoint names. The reconciler recognises its own shares by hashing
//! the endpoint id it holds.
//!
//! Writes are conditional through RFC 2136 prerequisites instead of ETags: `create`
//! requires that neither the A set nor the TXT name exists; `update` and `delete` require
//! the A set to be exactly the addresses read and the TXT set exactly the records read
//! (carried in [`ARecordSet::version`]). A and TXT change in one atomic update message, so
//! they never disagree. A failed prerequisite (YXRRSET, NXRRSET, YXDOMAIN, NXDOMAIN) is a
//! lost race and maps to [`DnsErrorKind::PreconditionFailed`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_proto::dnssec::rdata::{DNSSECRData, TSIG};
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::{A, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::provider::{ARecordSet, DnsError, DnsErrorKind, DnsProvider};
use crate::backoff::Backoff;
use crate::model::RecordKey;
use crate::model::Secret;
use crate::model::ownership::{MANAGED_BY, Owners, Ownership, Share, opaque_ref};

/// Prefix of the ownership TXT name's first label.
const TXT_PREFIX: &str = "plautopilot-";
/// TSIG fudge (allowed clock skew), the common default.
const TSIG_FUDGE: u16 = 300;
/// A DNS character-string holds at most 255 bytes.
const MAX_TXT_STRING: usize = 255;
/// Tries per exchange when the failure is transient; the work queue retries beyond this.
const ATTEMPTS: u32 = 3;
/// Short waits between those tries: long enough for a restarting server, short enough to
/// stay well inside one reconcile deadline.
const RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));

/// Connection and key settings for one RFC 2136 server.
#[derive(Clone)]
pub struct Rfc2136Config {
    /// The primary server that accepts updates (and, if allowed, AXFR).
    pub server: SocketAddr,
    /// TSIG key name as configured on the server (e.g. `autopilot-key`).
    pub tsig_key_name: String,
    /// TSIG algorithm name; `hmac-sha256` is the default and what BIND's `tsig-keygen` makes.
    pub tsig_algorithm: String,
    /// Base64 key material.
    pub tsig_secret: Secret,
    /// Bound on one whole exchange (connect, send, receive).
    pub timeout: Duration,
    /// Whether `list` may use AXFR (the server must allow transfers to the key).
    pub allow_axfr: bool,
}

impl Rfc2136Config {
    /// Settings with the defaults: hmac-sha256, 10 s timeout, no AXFR.
    pub fn new(server: SocketAddr, tsig_key_name: impl Into<String>, tsig_secret: Secret) -> Self {
        Self {
            server,
            tsig_key_name: tsig_key_name.into(),
            tsig_algorithm: "hmac-sha256".into(),
            tsig_secret,
            timeout: Duration::from_secs(10),
            allow_axfr: false,
        }
    }
}

impl fmt::Debug for Rfc2136Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rfc2136Config")
            .field("server", &self.server)
            .field("tsig_key_name", &self.tsig_key_name)
            .field("tsig_algorithm", &self.tsig_algorithm)
            .field("tsig_secret", &"***")
            .field("timeout", &self.timeout)
            .field("allow_axfr", &self.allow_axfr)
            .finish()
    }
}

/// A [`DnsProvider`] speaking RFC 2136 + TSIG to one server.
#[derive(Clone)]
pub struct Rfc2136Provider {
    cfg: Rfc2136Config,
    signer: TSigner,
}

impl fmt::Debug for Rfc2136Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // TSigner's own Debug is not relied on: it would be one field away from the key.
        f.debug_struct("Rfc2136Provider").field("cfg", &self.cfg).finish()
    }
}

fn parse_algorithm(name: &str) -> Option<TsigAlgorithm> {
    Some(match name.trim_end_matches('.').to_ascii_lowercase().as_str() {
        "hmac-sha256" => TsigAlgorithm::HmacSha256,
        "hmac-sha384" => TsigAlgorithm::HmacSha384,
        "hmac-sha512" => TsigAlgorithm::HmacSha512,
        _ => return None,
    })
}

impl Rfc2136Provider {
    /// Validates the key settings. Errors are `Permanent` and never contain the secret.
    pub fn new(cfg: Rfc2136Config) -> Result<Self, DnsError> {
        let server = cfg.server;
        let algorithm = parse_algorithm(&cfg.tsig_algorithm).ok_or_else(|| {
            DnsError::permanent(format!(
                "TSIG algorithm `{}` for server {server} is not supported (use hmac-sha256, hmac-sha384 or hmac-sha512)",
                cfg.tsig_algorithm
            ))
        })?;
        let key = base64::engine::general_purpose::STANDARD.decode(cfg.tsig_secret.expose().trim()).map_err(|_| {
            DnsError::permanent(format!(
                "TSIG secret for key `{}` (server {server}) is not valid base64",
                cfg.tsig_key_name
            ))
        })?;
        if key.is_empty() {
            return Err(DnsError::permanent(format!(
                "TSIG secret for key `{}` (server {server}) is empty",
                cfg.tsig_key_name
            )));
        }
        let key_name = Name::from_ascii(&cfg.tsig_key_name).map_err(|e| {
            DnsError::permanent(format!("TSIG key name `{}` (server {server}) is invalid: {e}", cfg.tsig_key_name))
        })?;
        let signer = TSigner::new(key, algorithm, key_name, TSIG_FUDGE)
            .map_err(|e| DnsError::permanent(format!("TSIG key for server {server}: {e}")))?;
        Ok(Self { cfg, signer })
    }

    pub fn config(&self) -> &Rfc2136Config {
        &self.cfg
    }

    /// [`Self::exchange_once`], retried with backoff while the failure is transient
    /// (timeouts, refused or reset connections, SERVFAIL). Retrying a write is safe
    /// because every write carries prerequisites: if the first attempt was applied and
    /// only its answer got lost, the retry fails its prerequisite and the reconciler
    /// re-reads. Configuration errors (keys, zones, permissions) are returned at once.
    async fn exchange(&self, msg: Message, zone: &str, what: &str, transfer: bool) -> Result<Vec<Message>, DnsError> {
        let mut attempt = 1;
        loop {
            match self.exchange_once(msg.clone(), zone, what, transfer).await {
                Err(e) if e.kind == DnsErrorKind::Transient && attempt < ATTEMPTS => {
                    tracing::debug!(server = %self.cfg.server, zone, attempt, error = %e, "rfc2136: retrying");
                    tokio::time::sleep(RETRY.delay(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Sends one signed message and reads its response (for a zone transfer, every
    /// message up to the closing SOA). Each response's TSIG is checked before its RCODE
    /// is believed: a TSIG error from the server (BADSIG/BADKEY/BADTIME) becomes a clear
    /// Permanent error, and an unauthenticated answer must not make us think, say, that
    /// a prerequisite failed.
    async fn exchange_once(
        &self,
        mut msg: Message,
        zone: &str,
        what: &str,
        transfer: bool,
    ) -> Result<Vec<Message>, DnsError> {
        let server = self.cfg.server;
        let ctx = || format!("{what} (zone {zone}, server {server})");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .min(u64::from(u32::MAX)) as u32;
        let mut verifier = msg
            .finalize(&self.signer, now)
            .map_err(|e| DnsError::permanent(format!("{}: signing failed: {e}", ctx())))?;
        let bytes = msg.to_vec().map_err(|e| DnsError::permanent(format!("{}: encoding failed: {e}", ctx())))?;
        let len = u16::try_from(bytes.len())
            .map_err(|_| DnsError::permanent(format!("{}: message too large ({} bytes)", ctx(), bytes.len())))?;
        let id = msg.id();
        // For a query NXDOMAIN is an answer ("absent"); for an update it is a failed prerequisite.
        let is_query = msg.op_code() == OpCode::Query;

        let io = async {
            let mut stream = TcpStream::connect(server).await?;
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&bytes);
            stream.write_all(&framed).await?;
            let mut out = Vec::new();
            // A zone transfer ends with the second copy of the SOA (RFC 5936 section 2.2).
            let mut soas = 0usize;
            loop {
                let mut lenbuf = [0u8; 2];
                stream.read_exact(&mut lenbuf).await?;
                let mut buf = vec![0u8; usize::from(u16::from_be_bytes(lenbuf))];
                stream.read_exact(&mut buf).await?;
                let parsed = Message::from_vec(&buf);
                let finished = match &parsed {
                    Ok(m) => {
                        soas += m.answers().iter().filter(|r| r.record_type() == RecordType::SOA).count();
                        m.id() != id || m.response_code() != ResponseCode::NoError || !transfer || soas >= 2
                    }
                    Err(_) => true,
                };
                out.push((buf, parsed));
                if finished {
                    return Ok::<_, std::io::Error>(out);
                }
            }
        };
        let raw = match tokio::time::timeout(self.cfg.timeout, io).await {
            Err(_) => return Err(DnsError::transient(format!("{}: no answer within {:?}", ctx(), self.cfg.timeout))),
            Ok(Err(e)) => {
                return Err(DnsError::transient(format!("{}: server unreachable or connection lost: {e}", ctx())));
            }
            Ok(Ok(raw)) => raw,
        };

        let mut messages = Vec::with_capacity(raw.len());
        for (buf, parsed) in raw {
            let m = parsed.map_err(|e| DnsError::transient(format!("{}: malformed response: {e}", ctx())))?;
            if m.id() != id {
                return Err(DnsError::transient(format!("{}: response id does not match the request", ctx())));
            }
            if let Some(tsig_err) = tsig_error(&m).filter(|c| *c != 0) {
                return Err(DnsError::permanent(format!(
                    "{}: {}",
                    ctx(),
                    describe_tsig_error(tsig_err, &self.cfg.tsig_key_name, &self.cfg.tsig_algorithm)
                )));
            }
            let rcode = m.response_code();
            let absent = is_query && !transfer && rcode == ResponseCode::NXDomain;
            let signed = m.signature().iter().any(|r| r.record_type() == RecordType::TSIG);
            if !signed && rcode != ResponseCode::NoError && !absent && !is_prerequisite_failure(rcode) {
                // Some errors come back unsigned (FORMERR, or REFUSED before the key was
                // checked). Say what the server said; an unsigned answer never counts as
                // success, and unsigned prerequisite failures fall through to the
                // verifier below, which rejects them.
                classify(rcode, &ctx())?;
            }
            if let Some(v) = verifier.as_mut() {
                v(&buf)
                    .map_err(|e| DnsError::permanent(format!("{}: response failed TSIG verification: {e}", ctx())))?;
            }
            if !absent {
                classify(rcode, &ctx())?;
            }
            messages.push(m);
        }
        Ok(messages)
    }

    async fn query(&self, zone: &str, name: &Name, rtype: RecordType) -> Result<Vec<Record>, DnsError> {
        let mut msg = Message::new();
        msg.set_id(fastrand::u16(..))
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(false);
        msg.add_query(Query::query(name.clone(), rtype));
        let what = format!("querying {rtype} at {name}");
        let mut resp = self.exchange(msg, zone, &what, false).await?;
        let Some(mut m) = resp.pop() else { return Ok(Vec::new()) };
        // Every record owned by `name` (the type asked for, or a CNAME standing in its
        // place); records for a CNAME's target are not about `name`.
        Ok(m.take_answers().into_iter().filter(|r| r.name() == name).collect())
    }

    /// Sends an update; `Ok` on NOERROR.
    async fn update_msg(&self, zone: &str, msg: Message, what: &str) -> Result<(), DnsError> {
        self.exchange(msg, zone, what, false).await.map(|_| ())
    }

    /// Whether the `rtype` set at `name` exists in the zone data, as opposed to being
    /// synthesized from a wildcard: prerequisites are checked without wildcard expansion
    /// (RFC 2136 section 3.2), so an update with only a prerequisite and no changes
    /// answers that (BIND neither changes the zone nor bumps the serial for it).
    async fn exists_literally(
        &self,
        zone: &Name,
        zone_str: &str,
        name: &Name,
        rtype: RecordType,
    ) -> Result<bool, DnsError> {
        let mut msg = update_message(zone);
        let mut pre = Record::update0(name.clone(), 0, rtype).into_record_of_rdata();
        pre.set_dns_class(DNSClass::ANY);
        msg.add_pre_requisite(pre);
        match self.update_msg(zone_str, msg, &format!("checking {rtype} at {name}")).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind == DnsErrorKind::PreconditionFailed => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn read(&self, key: &RecordKey) -> Result<Option<ARecordSet>, DnsError> {
        let zone = zone_name(&key.zone)?;
        let name = record_name(key)?;
        let txt_name = owner_txt_name(key)?;
        let at_name = self.query(&key.zone, &name, RecordType::A).await?;
        // A CNAME owns the name: no A can sit beside it (BIND silently drops such an add,
        // so `create` also has a "no CNAME" prerequisite). Report it as not ours.
        if let Some((target, ttl)) = at_name.iter().find_map(|r| match r.data() {
            RData::CNAME(c) => Some((c.0.to_string(), r.ttl())),
            _ => None,
        }) && (key.name == "*" || self.exists_literally(&zone, &key.zone, &name, RecordType::CNAME).await?)
        {
            return Ok(Some(ARecordSet {
                key: key.clone(),
                ttl,
                addresses: BTreeSet::new(),
                ownership: Ownership::Foreign(format!("the name is a CNAME to {target}, not an A record set")),
                version: None,
            }));
        }
        let mut a_records: Vec<Record> = at_name.into_iter().filter(|r| r.record_type() == RecordType::A).collect();
        if !a_records.is_empty()
            && key.name != "*"
            && !self.exists_literally(&zone, &key.zone, &name, RecordType::A).await?
        {
            // Synthesized from a wildcard: nothing is stored at this name.
            a_records.clear();
        }
        let txt: Vec<Record> = self
            .query(&key.zone, &txt_name, RecordType::TXT)
            .await?
            .into_iter()
            .filter(|r| r.record_type() == RecordType::TXT)
            .collect();
        let txt_values: Vec<Vec<String>> = txt.iter().filter_map(txt_strings).collect();
        let ownership = decode_ownership(&txt_values, &txt_name);
        if a_records.is_empty() && !ownership.is_managed() {
            return Ok(None);
        }
        // An ownership TXT without A (someone deleted the A by hand) is still reported so
        // the reconciler can repair it with `update` (prerequisite: A absent).
        let ttl = a_records.first().map(Record::ttl).unwrap_or(0);
        let addresses = a_records
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        let version = if txt_values.is_empty() { None } else { serde_json::to_string(&txt_values).ok() };
        Ok(Some(ARecordSet { key: key.clone(), ttl, addresses, ownership, version }))
    }
}

/// Reads the TSIG error field of a response, if it carries a TSIG record.
fn tsig_error(m: &Message) -> Option<u16> {
    let rec = m.signature().iter().find(|r| r.record_type() == RecordType::TSIG)?;
    let RData::DNSSEC(DNSSECRData::TSIG(tsig)) = rec.data() else { return None };
    tsig_error_field(tsig)
}

/// hickory 0.25 has no accessor for the TSIG error field, so read it from the rdata's
/// wire form: algorithm name, time (6), fudge (2), MAC size (2), MAC, original id (2), error (2).
fn tsig_error_field(tsig: &TSIG) -> Option<u16> {
    let bytes = tsig.to_bytes().ok()?;
    let mut i = 0usize;
    loop {
        let l = usize::from(*bytes.get(i)?);
        i += 1;
        if l == 0 {
            break;
        }
        i += l;
    }
    i += 8;
    let mac_len = usize::from(u16::from_be_bytes([*bytes.get(i)?, *bytes.get(i + 1)?]));
    i += 2 + mac_len + 2;
    Some(u16::from_be_bytes([*bytes.get(i)?, *bytes.get(i + 1)?]))
}

/// RCODEs by which an update reports a failed prerequisite (RFC 2136 section 3.2).
fn is_prerequisite_failure(rcode: ResponseCode) -> bool {
    matches!(rcode, ResponseCode::YXRRSet | ResponseCode::NXRRSet | ResponseCode::YXDomain | ResponseCode::NXDomain)
}

/// What a TSIG error (RFC 8945 section 5.2) means for the operator.
fn describe_tsig_error(code: u16, key: &str, algorithm: &str) -> String {
    match code {
        16 => format!(
            "TSIG key rejected (BADSIG: the signature made with key `{key}` did not verify; the secret or \
             algorithm differs from the server's)"
        ),
        17 => format!("TSIG key rejected (BADKEY: the server does not know key `{key}` with algorithm {algorithm})"),
        18 => format!(
            "TSIG key rejected (BADTIME: this host's clock and the server's differ by more than {TSIG_FUDGE} s; key `{key}`)"
        ),
        other => {
            format!("TSIG key rejected (TSIG error {other}: {}; key `{key}`)", <ResponseCode as From<u16>>::from(other))
        }
    }
}

/// Maps a response code to our error kinds. Messages carry the RFC mnemonic (NOTAUTH,
/// REFUSED, ...) because that is what operators search server logs and docs for.
fn classify(rcode: ResponseCode, ctx: &str) -> Result<(), DnsError> {
    use DnsErrorKind::{Permanent, PreconditionFailed, Transient};
    let (kind, detail) = match rcode {
        ResponseCode::NoError => return Ok(()),
        ResponseCode::YXDomain => (PreconditionFailed, "prerequisite failed: a name that must be unused is in use"),
        ResponseCode::YXRRSet => (PreconditionFailed, "prerequisite failed: a record set that must be absent exists"),
        ResponseCode::NXRRSet => {
            (PreconditionFailed, "prerequisite failed: a record set is missing or no longer holds the values read")
        }
        ResponseCode::NXDomain => (PreconditionFailed, "prerequisite failed: a name that must exist does not"),
        ResponseCode::ServFail => (Transient, "the server failed to process the request"),
        ResponseCode::Refused => (Permanent, "the server refused: check allow-update / allow-transfer for the key"),
        ResponseCode::NotAuth => {
            (Permanent, "the server is not authoritative for the zone (or did not accept the TSIG signature)")
        }
        ResponseCode::NotZone => (Permanent, "a name in the request is outside the zone"),
        ResponseCode::NotImp => (Permanent, "the server does not implement this request (dynamic update / AXFR)"),
        ResponseCode::FormErr => (Permanent, "the server could not parse the request"),
        _ => (Permanent, "unexpected response code"),
    };
    Err(DnsError::new(kind, format!("{ctx}: server answered {} ({detail})", rcode_mnemonic(rcode))))
}

fn rcode_mnemonic(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::YXDomain => "YXDOMAIN".into(),
        ResponseCode::YXRRSet => "YXRRSET".into(),
        ResponseCode::NXRRSet => "NXRRSET".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        ResponseCode::NotZone => "NOTZONE".into(),
        other => format!("RCODE {} ({other})", u16::from(other)),
    }
}

fn zone_name(zone: &str) -> Result<Name, DnsError> {
    Name::from_ascii(format!("{}.", zone.trim_end_matches('.')))
        .map_err(|e| DnsError::permanent(format!("zone `{zone}` is not a valid DNS name: {e}")))
}

fn fqdn_name(fqdn: &str, key: &RecordKey) -> Result<Name, DnsError> {
    Name::from_ascii(format!("{fqdn}.")).map_err(|e| DnsError::permanent(format!("{key} is not a valid DNS name: {e}")))
}

fn record_name(key: &RecordKey) -> Result<Name, DnsError> {
    fqdn_name(&key.fqdn(), key)
}

/// The ownership TXT's name: the record's first label prefixed (see module docs).
pub fn owner_txt_label(name: &str) -> String {
    let (first, rest) = match name.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (name, None),
    };
    let label = match first {
        "*" => format!("{TXT_PREFIX}_wildcard"),
        "@" | "" => format!("{TXT_PREFIX}_apex"),
        other => format!("{TXT_PREFIX}{other}"),
    };
    match rest {
        Some(r) => format!("{label}.{r}"),
        None => label,
    }
}

fn owner_txt_name(key: &RecordKey) -> Result<Name, DnsError> {
    fqdn_name(&format!("{}.{}", owner_txt_label(&key.name), key.zone), key)
}

fn txt_strings(r: &Record) -> Option<Vec<String>> {
    match r.data() {
        RData::TXT(t) => Some(t.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect()),
        _ => None,
    }
}

/// Encodes ownership as TXT records (each a list of <=255-byte strings). Every client
/// of the server can read them, so owners, targets and VNets are written in their opaque
/// form (`h:<hash>`): no subscription id, resource group or endpoint name is published.
pub fn encode_ownership(owners: &Owners) -> Vec<Vec<String>> {
    let mut out = vec![vec![format!("heritage={MANAGED_BY}")]];
    for (endpoint, share) in owners {
        let ips: Vec<String> = share.addresses.iter().map(Ipv4Addr::to_string).collect();
        let mut entry = format!("owner={};ips={}", opaque_ref(endpoint), ips.join(","));
        if !share.target.is_empty() {
            entry.push_str(&format!(";target={}", opaque_ref(&share.target)));
        }
        if !share.vnet.is_empty() {
            entry.push_str(&format!(";vnet={}", opaque_ref(&share.vnet)));
        }
        out.push(split_string(&entry));
    }
    out
}

fn split_string(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    for c in s.chars() {
        if cur.len() + c.len_utf8() > MAX_TXT_STRING {
            parts.push(std::mem::take(&mut cur));
        }
        cur.push(c);
    }
    if !cur.is_empty() || parts.is_empty() {
        parts.push(cur);
    }
    parts
}

/// Reads ownership from TXT records (each record's strings are concatenated).
pub fn decode_ownership(records: &[Vec<String>], txt_name: &Name) -> Ownership {
    let joined: Vec<String> = records.iter().map(|r| r.concat()).collect();
    if !joined.iter().any(|r| r == &format!("heritage={MANAGED_BY}")) {
        let detail = if joined.is_empty() {
            format!("no ownership TXT at {txt_name}")
        } else {
            let shown: Vec<String> = joined.iter().take(3).map(|s| s.chars().take(120).collect()).collect();
            format!("TXT at {txt_name} is not ours: {}", shown.join(" | "))
        };
        return Ownership::Foreign(format!("not managed by {MANAGED_BY} ({detail}); a person or another tool owns it"));
    }
    let mut owners = BTreeMap::new();
    for r in &joined {
        let Some(rest) = r.strip_prefix("owner=") else { continue };
        // `owner=<ref>;ips=<a,b>[;target=<ref>][;vnet=<ref>]` (older versions wrote the
        // full endpoint id and neither target nor vnet; such a share still matches its
        // endpoint, see `owner_key_of`).
        let mut fields = rest.split(';');
        let endpoint = fields.next().unwrap_or_default();
        let mut share = Share::default();
        for field in fields {
            match field.split_once('=') {
                Some(("ips", ips)) => {
                    share.addresses = ips.split(',').filter_map(|ip| Ipv4Addr::from_str(ip.trim()).ok()).collect()
                }
                Some(("target", t)) => share.target = t.to_owned(),
                Some(("vnet", v)) => share.vnet = v.to_owned(),
                _ => {}
            }
        }
        owners.insert(endpoint.to_ascii_lowercase(), share);
    }
    Ownership::Managed(owners)
}

fn update_message(zone: &Name) -> Message {
    let mut msg = Message::new();
    msg.set_id(fastrand::u16(..))
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Update)
        .set_recursion_desired(false);
    let mut q = Query::new();
    q.set_name(zone.clone()).set_query_class(DNSClass::IN).set_query_type(RecordType::SOA);
    msg.add_zone(q);
    msg
}

fn txt_record(name: &Name, ttl: u32, strings: &[String]) -> Record {
    Record::from_rdata(name.clone(), ttl, RData::TXT(TXT::new(strings.to_vec())))
}

/// "RRset does not exist" (CLASS NONE, empty rdata).
fn rrset_absent(name: &Name, rtype: RecordType) -> Record {
    let mut r = Record::update0(name.clone(), 0, rtype).into_record_of_rdata();
    r.set_dns_class(DNSClass::NONE);
    r
}

/// "Delete an RRset" (CLASS ANY, empty rdata).
fn delete_rrset(name: &Name, rtype: RecordType) -> Record {
    let mut r = Record::update0(name.clone(), 0, rtype).into_record_of_rdata();
    r.set_dns_class(DNSClass::ANY);
    r
}

fn managed_owners(set: &ARecordSet) -> Result<&Owners, DnsError> {
    set.owners().ok_or_else(|| DnsError::permanent(format!("refusing to write {}: ownership is not ours", set.key)))
}

/// Prerequisites that the A set and the ownership TXT are still what `previous` read.
fn add_same_as_read(msg: &mut Message, previous: &ARecordSet, name: &Name, txt_name: &Name) -> Result<(), DnsError> {
    if previous.addresses.is_empty() {
        msg.add_pre_requisite(rrset_absent(name, RecordType::A));
    } else {
        for ip in &previous.addresses {
            msg.add_pre_requisite(Record::from_rdata(name.clone(), 0, RData::A(A(*ip))));
        }
    }
    // The TXT exactly as read; fall back to our canonical encoding when the caller built
    // `previous` itself.
    let txt: Vec<Vec<String>> = match previous.version.as_deref().map(serde_json::from_str::<Vec<Vec<String>>>) {
        Some(Ok(v)) => v,
        _ => encode_ownership(managed_owners(previous)?),
    };
    for strings in &txt {
        msg.add_pre_requisite(txt_record(txt_name, 0, strings));
    }
    Ok(())
}

fn check_set(set: &ARecordSet) -> Result<(), DnsError> {
    if set.addresses.len() > super::provider::MAX_RECORDS_PER_SET {
        return Err(DnsError::permanent(format!(
            "{} would hold {} addresses; the limit is {}",
            set.key,
            set.addresses.len(),
            super::provider::MAX_RECORDS_PER_SET
        )));
    }
    Ok(())
}

fn add_new_set(msg: &mut Message, set: &ARecordSet, name: &Name, txt_name: &Name) -> Result<(), DnsError> {
    let owners = managed_owners(set)?;
    for ip in &set.addresses {
        msg.add_update(Record::from_rdata(name.clone(), set.ttl, RData::A(A(*ip))));
    }
    for strings in encode_ownership(owners) {
        msg.add_update(txt_record(txt_name, set.ttl, &strings));
    }
    Ok(())
}

#[async_trait::async_trait]
impl DnsProvider for Rfc2136Provider {
    fn kind(&self) -> &'static str {
        "rfc2136"
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<ARecordSet>, DnsError> {
        self.read(key).await
    }

    async fn list(&self, zone: &str) -> Result<Vec<ARecordSet>, DnsError> {
        let server = self.cfg.server;
        if !self.cfg.allow_axfr {
            return Err(DnsError::permanent(format!(
                "listing zone {zone} on server {server} needs a zone transfer (AXFR); set allow_axfr for this \
                 server and allow-transfer for the key"
            )));
        }
        let zone_n = zone_name(zone)?;
        let mut msg = Message::new();
        msg.set_id(fastrand::u16(..))
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(false);
        msg.add_query(Query::query(zone_n.clone(), RecordType::AXFR));
        let messages = self.exchange(msg, zone, &format!("transferring zone {zone} (AXFR)"), true).await?;
        let mut a: BTreeMap<Name, (u32, BTreeSet<Ipv4Addr>)> = BTreeMap::new();
        let mut txt: BTreeMap<Name, Vec<Vec<String>>> = BTreeMap::new();
        for r in messages.iter().flat_map(Message::answers) {
            match r.data() {
                RData::A(ip) => {
                    let e = a.entry(r.name().to_lowercase()).or_insert((r.ttl(), BTreeSet::new()));
                    e.1.insert(ip.0);
                }
                RData::TXT(_) => {
                    if let Some(s) = txt_strings(r) {
                        txt.entry(r.name().to_lowercase()).or_default().push(s);
                    }
                }
                _ => {}
            }
        }
        let zone_fqdn = zone_n.to_lowercase().to_ascii();
        let mut out = Vec::with_capacity(a.len());
        for (name, (ttl, addresses)) in a {
            let full = name.to_ascii();
            let rel = full.strip_suffix(&zone_fqdn).unwrap_or(&full).trim_end_matches('.');
            let key = RecordKey::new(zone, if rel.is_empty() { "@" } else { rel });
            let txt_name = owner_txt_name(&key)?.to_lowercase();
            let values = txt.get(&txt_name).cloned().unwrap_or_default();
            let ownership = decode_ownership(&values, &txt_name);
            let version = if values.is_empty() { None } else { serde_json::to_string(&values).ok() };
            out.push(ARecordSet { key, ttl, addresses, ownership, version });
        }
        Ok(out)
    }

    async fn create(&self, set: &ARecordSet) -> Result<(), DnsError> {
        check_set(set)?;
        let zone = zone_name(&set.key.zone)?;
        let name = record_name(&set.key)?;
        let txt_name = owner_txt_name(&set.key)?;
        let mut msg = update_message(&zone);
        msg.add_pre_requisite(rrset_absent(&name, RecordType::A));
        // BIND answers NOERROR but drops an A added beside a CNAME; make that a failure.
        msg.add_pre_requisite(rrset_absent(&name, RecordType::CNAME));
        // "Name is not in use" (TYPE ANY, CLASS NONE) for the ownership name.
        msg.add_pre_requisite(rrset_absent(&txt_name, RecordType::ANY));
        add_new_set(&mut msg, set, &name, &txt_name)?;
        self.update_msg(&set.key.zone, msg, &format!("creating {}", set.key)).await
    }

    async fn update(&self, previous: &ARecordSet, next: &ARecordSet) -> Result<(), DnsError> {
        check_set(next)?;
        if previous.key != next.key {
            return Err(DnsError::permanent(format!("update from {} to {}: keys differ", previous.key, next.key)));
        }
        if !previous.ownership.is_managed() {
            return Err(DnsError::permanent(format!("refusing to update {}: ownership is not ours", previous.key)));
        }
        let zone = zone_name(&next.key.zone)?;
        let name = record_name(&next.key)?;
        let txt_name = owner_txt_name(&next.key)?;
        let mut msg = update_message(&zone);
        add_same_as_read(&mut msg, previous, &name, &txt_name)?;
        msg.add_update(delete_rrset(&name, RecordType::A));
        msg.add_update(delete_rrset(&txt_name, RecordType::TXT));
        add_new_set(&mut msg, next, &name, &txt_name)?;
        self.update_msg(&next.key.zone, msg, &format!("updating {}", next.key)).await
    }

    async fn delete(&self, previous: &ARecordSet) -> Result<(), DnsError> {
        if !previous.ownership.is_managed() {
            return Err(DnsError::permanent(format!("refusing to delete {}: ownership is not ours", previous.key)));
        }
        let zone = zone_name(&previous.key.zone)?;
        let name = record_name(&previous.key)?;
        let txt_name = owner_txt_name(&previous.key)?;
        let mut msg = update_message(&zone);
        add_same_as_read(&mut msg, previous, &name, &txt_name)?;
        msg.add_update(delete_rrset(&name, RecordType::A));
        msg.add_update(delete_rrset(&txt_name, RecordType::TXT));
        match self.update_msg(&previous.key.zone, msg, &format!("deleting {}", previous.key)).await {
            Ok(()) => Ok(()),
            // A failed prerequisite may just mean it is already gone, which is success.
            Err(e) if e.kind == DnsErrorKind::PreconditionFailed => match self.read(&previous.key).await? {
                None => Ok(()),
                Some(_) => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_names_are_siblings() {
        assert_eq!(owner_txt_label("*"), "plautopilot-_wildcard");
        assert_eq!(owner_txt_label("*.es"), "plautopilot-_wildcard.es");
        assert_eq!(owner_txt_label("@"), "plautopilot-_apex");
        // Host names never contain `_`, so no real host maps onto the wildcard's record.
        assert_ne!(owner_txt_label("wildcard"), owner_txt_label("*"));
        assert_ne!(owner_txt_label("apex"), owner_txt_label("@"));
        assert_eq!(owner_txt_label("x.y"), "plautopilot-x.y");
    }

    #[test]
    fn ownership_round_trips_and_splits_long_entries() {
        let long = format!(
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.network/privateendpoints/{}",
            "p".repeat(300)
        );
        let many: BTreeSet<Ipv4Addr> = (1..=20).map(|i| Ipv4Addr::new(10, 200, 100, i)).collect();
        let mut owners = BTreeMap::new();
        owners.insert(long.clone(), Share::new(many, "zilliz-x.guid.eastus2.azure.privatelinkservice", "/sub/vnet"));
        owners
            .insert("/subscriptions/s/x".to_string(), Share::new(BTreeSet::from([Ipv4Addr::new(10, 0, 0, 6)]), "", ""));
        let enc = encode_ownership(&owners);
        assert!(enc.iter().flatten().all(|s| s.len() <= MAX_TXT_STRING));
        assert!(enc.iter().any(|r| r.len() > 1));
        // Nothing a DNS client could learn the estate from.
        let published = enc.iter().flatten().cloned().collect::<String>();
        assert!(!published.contains("subscriptions") && !published.contains("privatelinkservice"), "{published}");
        let name = Name::from_ascii("plautopilot-x.zone.").unwrap();
        let Ownership::Managed(read) = decode_ownership(&enc, &name) else { panic!("not managed") };
        let key = crate::model::ownership::owner_key_of(&read, &long).expect("found by its endpoint id");
        assert_eq!(read[&key].addresses, owners[&long].addresses);
        assert!(crate::model::ownership::same_ref(&read[&key].target, &owners[&long].target));
        // An older TXT (full id, no target) is still recognised as that endpoint's share.
        let legacy = vec![vec![format!("heritage={MANAGED_BY}")], vec!["owner=/subscriptions/s/x;ips=10.0.0.6".into()]];
        let Ownership::Managed(old) = decode_ownership(&legacy, &name) else { panic!("not managed") };
        assert!(crate::model::ownership::owner_key_of(&old, "/subscriptions/s/x").is_some());
        assert!(matches!(decode_ownership(&[], &name), Ownership::Foreign(w) if w.contains("no ownership TXT")));
        let other = vec![vec!["heritage=external-dns,external-dns/owner=default".to_string()]];
        assert!(matches!(decode_ownership(&other, &name), Ownership::Foreign(w) if w.contains("external-dns")));
    }

    #[test]
    fn debug_hides_the_secret() {
        let cfg = Rfc2136Config::new("127.0.0.1:53".parse().unwrap(), "k", Secret::new("c2VjcmV0c2VjcmV0"));
        let p = Rfc2136Provider::new(cfg).unwrap();
        let s = format!("{p:?}");
        assert!(!s.contains("c2VjcmV0c2VjcmV0"), "{s}");
    }

    #[test]
    fn bad_settings_are_permanent() {
        let mut cfg = Rfc2136Config::new("127.0.0.1:53".parse().unwrap(), "k", Secret::new("!!notbase64"));
        let e = Rfc2136Provider::new(cfg.clone()).unwrap_err();
        assert_eq!(e.kind, DnsErrorKind::Permanent);
        assert!(!e.message.contains("notbase64"));
        cfg.tsig_secret = Secret::new("c2VjcmV0");
        cfg.tsig_algorithm = "hmac-md5".into();
        assert_eq!(Rfc2136Provider::new(cfg).unwrap_err().kind, DnsErrorKind::Permanent);
    }

    #[test]
    fn rcodes_map_to_kinds() {
        assert_eq!(classify(ResponseCode::NXRRSet, "x").unwrap_err().kind, DnsErrorKind::PreconditionFailed);
        assert_eq!(classify(ResponseCode::YXDomain, "x").unwrap_err().kind, DnsErrorKind::PreconditionFailed);
        assert_eq!(classify(ResponseCode::ServFail, "x").unwrap_err().kind, DnsErrorKind::Transient);
        assert_eq!(classify(ResponseCode::Refused, "x").unwrap_err().kind, DnsErrorKind::Permanent);
        assert_eq!(classify(ResponseCode::NotZone, "x").unwrap_err().kind, DnsErrorKind::Permanent);
        assert!(classify(ResponseCode::NoError, "x").is_ok());
        let e = classify(ResponseCode::NotAuth, "creating x (zone z, server 127.0.0.1:53)").unwrap_err();
        assert!(e.message.contains("NOTAUTH") && e.message.contains("zone z"), "{e}");
        assert!(describe_tsig_error(17, "k", "hmac-sha256").contains("BADKEY"));
        assert!(describe_tsig_error(16, "k", "hmac-sha256").contains("BADSIG"));
    }
}
