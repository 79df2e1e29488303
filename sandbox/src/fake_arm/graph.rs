//! Azure Resource Graph's `resources` query API, as far as the sweep uses it.
//!
//! `POST /providers/Microsoft.ResourceGraph/resources` answers from the fake's world
//! without evaluating KQL: every query is taken to be "the private endpoints of these
//! subscriptions, ordered by id" (what [`private_link_autopilot::arm::graph::PRIVATE_ENDPOINTS_QUERY`]
//! asks), and the NIC join column `nicIpConfigs` is added when the query text names it.
//! The query is *checked*, though, so a typo in a table or column fails here and not
//! only in Azure ([`check_kql`]): every table it reads (the first word, and the first
//! word inside a `join (…)`) must be one of Resource Graph's documented tables
//! ([`KNOWN_TABLES`], learn.microsoft.com "Azure Resource Graph table and resource type
//! reference"), and every bare column it names must be one of the documented columns of
//! the `Resources`-shaped tables ([`KNOWN_COLUMNS`], "Understand the query language")
//! or a name the query itself defines (`name = …`). A violation is answered like the
//! service answers an invalid query: 400 `BadRequest` whose `details` hold
//! `InvalidQuery` and the reason (the reason's code and wording are the fake's; the
//! public reports show `InvalidQuery` and Kusto's "does not refer to any known table"
//! message, not a fixed code for it).
//! What the real service does and a client can get wrong is reproduced, following
//! `../shared/reference/arm.md` section 6 and the official examples
//! `ResourcesFirstPageQuery.json` / `ResourcesNextPageQuery.json`:
//!
//! * the answer shape: `totalRecords`, `count`, `data` (objectArray), `facets`,
//!   `resultTruncated` as the *string* `"false"`, and `$skipToken` while rows remain; the
//!   token is opaque (base64 of the next offset and page size) and a malformed one is a 400;
//! * validation: `subscriptions` must be 1..=1000 strings and `options.$top` an integer
//!   in 1..=1000, else a 400 with an ARM error body (`{"error":{"code","message"}}`).
//!   Tenant and management-group scopes are not modelled, so a missing scope is a 400
//!   too, and so is the `table` result format;
//! * the per-principal quota (default 15 queries per 5 s, [`super::FakeArmOptions::resource_graph_quota`]):
//!   a fixed window that opens with the first query, every answer carrying
//!   `x-ms-user-quota-remaining` and `x-ms-user-quota-resets-after` (`hh:mm:ss`, rounded
//!   up so a client that waits that long is never early), and 429 `RateLimiting` with
//!   `Retry-After` once it is spent (a refused query does not count);
//! * lag ([`FakeArm::set_graph_lag`]): Resource Graph is an index that trails ARM, so an
//!   endpoint (and its NIC) deleted less than the lag ago is still listed. That is the
//!   case the sweep must survive by re-reading ARM before it deletes anything.
//!
//! Besides the sweep's endpoint listing, two more query shapes are answered, told apart by
//! the query text (the fake still evaluates no KQL):
//!
//! * **Pending connections on owned resources** (a query that `mv-expand`s
//!   `properties.privateEndpointConnections`, as `effects::target_approvals` sends): one
//!   row per Pending connection on a resource of the `type in~ (…)` list, with the
//!   columns that query projects (`id` of the owning resource, `connectionId`,
//!   `connectionName`, `endpointId`, `description`). The embedded array is built from the
//!   connections the fake stores as children, so a connection whose endpoint lives in a
//!   tenant the fake will not let us read ([`FakeArm::add_foreign_connection`]) is listed
//!   like any other. Like the service, it lists only resources the caller may read: under
//!   [`super::rbac`] grants, a resource without `<type>/read` is silently left out;
//! * **`resourcechanges`** (a query on that table, `changeTime > todatetime('…')`): the
//!   change records ARM writes for private endpoints (create, update, delete), with the
//!   documented shape (`properties.targetResourceId`, `targetResourceType`, `changeType`,
//!   `changeAttributes.timestamp`) plus the columns the query projects; records older than
//!   14 days are gone, as in the service ([`FakeArm::backdate_changes`] ages them).
//!
//! The fake has a single principal (its one accepted token), hence a single quota window.
//!
//! One more query shape is answered: a query whose type literal is
//! `microsoft.network/privatednszones` lists private DNS zones instead (zone management's
//! search for same-named zones), filtered by the `name =~ '…'` literal when there is one.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::{Answer, Call, FakeArm, Shared, World};

const PE_TYPE: &str = "microsoft.network/privateendpoints";
const ZONE_TYPE: &str = "microsoft.network/privatednszones";
const NIC_TYPE: &str = "microsoft.network/networkinterfaces";
/// Page size when neither `$top` nor the skip token says otherwise (the service's default).
const DEFAULT_TOP: u64 = 100;
const MAX_TOP: u64 = 1000;
const MAX_SUBSCRIPTIONS: usize = 1000;

/// Resource Graph's state in the fake world: the quota window and the deletions it has
/// not caught up with yet.
#[derive(Debug, Default)]
pub(crate) struct GraphState {
    window: Option<Window>,
    lag: Duration,
    /// Endpoints and NICs removed from ARM less than `lag` ago (only kept while a lag is set).
    removed: Vec<Removed>,
    /// `resourcechanges` records for private endpoints, oldest first.
    changes: Vec<ChangeRecord>,
}

/// `properties.changes` of an update: `{"<dotted path>": {"previousValue", "newValue"}}`,
/// one entry per changed tag (`tags.<name>`) and per changed first-level property
/// (`properties.<name>`), the granularity the documented examples show.
fn property_changes(before: &Value, after: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for section in ["tags", "properties"] {
        let empty = serde_json::Map::new();
        let b = before.get(section).and_then(Value::as_object).unwrap_or(&empty);
        let a = after.get(section).and_then(Value::as_object).unwrap_or(&empty);
        let keys: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
        for k in keys {
            if b.get(k) != a.get(k) {
                out.insert(format!("{section}.{k}"), json!({"previousValue": b.get(k), "newValue": a.get(k)}));
            }
        }
    }
    Value::Object(out)
}

/// One `resourcechanges` record.
#[derive(Debug, Clone)]
struct ChangeRecord {
    target_id: String,
    change_type: &'static str,
    changes: Value,
    /// Unix seconds.
    at: u64,
}

/// How long Resource Graph keeps change records.
const CHANGE_RETENTION_SECS: u64 = 14 * 24 * 3600;

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    used: u32,
}

#[derive(Debug)]
struct Removed {
    /// Lower-cased id.
    key: String,
    body: Value,
    at: Instant,
}

impl GraphState {
    /// Called for every resource put into the world: a private endpoint's create or
    /// update is a change record.
    pub(crate) fn on_put(&mut self, key: &str, body: &Value, previous: Option<&Value>) {
        if !is_type(key, PE_TYPE) {
            return;
        }
        let id = body.get("id").and_then(Value::as_str).unwrap_or(key).to_owned();
        let (change_type, changes) = match previous {
            None => ("Create", json!({})),
            Some(before) if before == body => return,
            Some(before) => ("Update", property_changes(before, body)),
        };
        self.changes.push(ChangeRecord { target_id: id, change_type, changes, at: unix_now() });
    }

    /// Called for every resource removed from the world: Resource Graph still shows a
    /// removed endpoint or NIC for a while.
    pub(crate) fn on_remove(&mut self, key: &str, body: &Value) {
        if is_type(key, PE_TYPE) {
            let id = body.get("id").and_then(Value::as_str).unwrap_or(key).to_owned();
            self.changes.push(ChangeRecord {
                target_id: id,
                change_type: "Delete",
                changes: json!({}),
                at: unix_now(),
            });
        }
        if self.lag.is_zero() || !(is_type(key, PE_TYPE) || is_type(key, NIC_TYPE)) {
            return;
        }
        let now = Instant::now();
        self.prune(now);
        self.removed.push(Removed { key: key.to_owned(), body: body.clone(), at: now });
    }

    fn prune(&mut self, now: Instant) {
        let lag = self.lag;
        self.removed.retain(|r| now.saturating_duration_since(r.at) < lag);
    }

    /// Counts one query against the quota: `Ok((remaining, resets_after))` or
    /// `Err(resets_after)` when the window's quota is spent.
    fn take_quota(&mut self, (limit, window): (u32, Duration), now: Instant) -> Result<(u32, Duration), Duration> {
        let window = window.max(Duration::from_millis(1));
        let w = match &mut self.window {
            Some(w) if now.saturating_duration_since(w.opened) < window => w,
            slot => slot.insert(Window { opened: now, used: 0 }),
        };
        let resets_after = (w.opened + window).saturating_duration_since(now);
        if w.used >= limit {
            return Err(resets_after);
        }
        w.used += 1;
        Ok((limit - w.used, resets_after))
    }
}

impl FakeArm {
    /// Makes Resource Graph trail ARM by `lag`: endpoints deleted less than `lag` ago are
    /// still listed. Only deletions after this call are remembered; zero turns it off.
    pub fn set_graph_lag(&self, lag: Duration) {
        let mut w = self.shared().world();
        w.graph.lag = lag;
        w.graph.prune(Instant::now());
    }

    /// Makes every change record so far `by` older (records past 14 days disappear).
    pub fn backdate_changes(&self, by: Duration) {
        let mut w = self.shared().world();
        for c in &mut w.graph.changes {
            c.at = c.at.saturating_sub(by.as_secs());
        }
    }

    /// How many `resourcechanges` records the fake holds (within retention).
    pub fn change_records(&self) -> usize {
        let now = unix_now();
        self.shared().world().graph.changes.iter().filter(|c| c.at + CHANGE_RETENTION_SECS > now).count()
    }
}

/// Whether a lower-cased id is a top-level resource of `type_path` (not a child of one).
fn is_type(key: &str, type_path: &str) -> bool {
    let marker = format!("/providers/{type_path}/");
    key.split_once(&marker).is_some_and(|(_, name)| !name.is_empty() && !name.contains('/'))
}

/// `hh:mm:ss`, rounded up to the next second.
fn hms(d: Duration) -> String {
    let secs = ceil_secs(d);
    format!("{:02}:{:02}:{:02}", secs / 3600, (secs / 60) % 60, secs % 60)
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `POST /providers/Microsoft.ResourceGraph/resources`.
pub(super) fn route(shared: &Shared, call: &Call<'_>) -> Answer {
    if *call.method != axum::http::Method::POST {
        return Answer::error(
            405,
            "UnsupportedHttpMethod",
            format!("The '{}' method is not supported for Resource Graph queries; use POST.", call.method),
        );
    }
    let mut w = shared.world();
    let now = Instant::now();
    let quota = match w.graph.take_quota(shared.options.resource_graph_quota, now) {
        Ok(q) => q,
        Err(resets_after) => {
            return Answer::error(
                429,
                "RateLimiting",
                "Client application has been throttled and should not attempt to repeat the request until an amount of time has elapsed.",
            )
            .with_header("Retry-After", ceil_secs(resets_after).max(1).to_string())
            .with_header("x-ms-user-quota-remaining", "0")
            .with_header("x-ms-user-quota-resets-after", hms(resets_after));
        }
    };
    let answer = match call.json_body().and_then(|b| Query::parse(&b)) {
        Ok(q) => {
            w.graph.prune(now);
            q.answer(&w)
        }
        Err(a) => a,
    };
    answer
        .with_header("x-ms-user-quota-remaining", quota.0.to_string())
        .with_header("x-ms-user-quota-resets-after", hms(quota.1))
}

/// Which of the answered query shapes a query is (see the module docs).
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Endpoints,
    /// Lower-cased resource types from `type in~ (…)`, and the `mv-expand` row limit.
    PendingConnections(Vec<String>, usize),
    /// `changeTime > todatetime('…')`, as unix seconds.
    Changes(u64),
}

fn shape_of(query: &str) -> Result<Shape, Answer> {
    let lower = query.to_ascii_lowercase();
    if lower.trim_start().starts_with("resourcechanges") {
        let since = lower
            .split_once("changetime > todatetime('")
            .and_then(|(_, rest)| rest.split_once('\''))
            .and_then(|(t, _)| {
                time::OffsetDateTime::parse(&t.to_ascii_uppercase(), &time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .and_then(|t| u64::try_from(t.unix_timestamp()).ok());
        return match since {
            Some(s) => Ok(Shape::Changes(s)),
            None => Err(Answer::error(
                400,
                "UnsupportedBySandbox",
                "The sandbox answers resourcechanges queries filtered by changeTime > todatetime('<RFC 3339>') only.",
            )),
        };
    }
    if lower.contains("mv-expand") && lower.contains("privateendpointconnections") {
        let types = lower
            .split_once("type in~ (")
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(list, _)| list.split(',').map(|t| t.trim().trim_matches('\'').to_owned()).collect::<Vec<_>>())
            .unwrap_or_default();
        // Resource Graph: "RowLimit max of 400. The default is 128."
        let limit = match lower.split_once("privateendpointconnections limit ") {
            None => 128,
            Some((_, rest)) => match rest.split_whitespace().next().and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if n <= 400 => n,
                _ => {
                    return Err(invalid_query("InvalidMvExpandLimit", "mv-expand: RowLimit max of 400.".into()));
                }
            },
        };
        return Ok(Shape::PendingConnections(types, limit));
    }
    Ok(Shape::Endpoints)
}

/// A validated request body.
struct Query {
    shape: Shape,
    /// Lower-cased, deduplicated.
    subscriptions: Vec<String>,
    with_nic_ips: bool,
    /// Columns of the query's last `| project` (lower case).
    projected: Vec<String>,
    /// `Some(name filter)` for a private DNS zone query (`None` inside = every zone).
    zones: Option<Option<String>>,
    offset: u64,
    top: u64,
}

/// The column names of the last `| project a, b = expr, c` clause (left of any `=`).
fn last_projection(query: &str) -> Vec<String> {
    let lower = query.to_ascii_lowercase();
    let Some(at) = lower.rfind("| project ") else { return Vec::new() };
    let clause = &lower[at + "| project ".len()..];
    let clause = clause.split('|').next().unwrap_or_default();
    clause.split(',').map(|c| c.split('=').next().unwrap_or_default().trim().to_owned()).collect()
}

fn bad_request(message: impl Into<String>) -> Answer {
    Answer::error(400, "BadRequest", message)
}

impl Query {
    fn parse(body: &Value) -> Result<Self, Answer> {
        let Some(body) = body.as_object() else {
            return Err(bad_request("The request body must be a JSON object."));
        };
        let subs = match body.get("subscriptions") {
            Some(Value::Array(subs)) => subs,
            Some(_) => return Err(bad_request("'subscriptions' must be an array of subscription ids.")),
            None => {
                return Err(Answer::error(
                    400,
                    "UnsupportedBySandbox",
                    "The sandbox answers subscription-scoped queries only; pass 'subscriptions'.",
                ));
            }
        };
        if subs.is_empty() || subs.len() > MAX_SUBSCRIPTIONS {
            return Err(bad_request(format!(
                "'subscriptions' must hold between 1 and {MAX_SUBSCRIPTIONS} subscription ids; it holds {}.",
                subs.len()
            )));
        }
        let mut seen = HashSet::new();
        let mut subscriptions = Vec::new();
        for s in subs {
            match s.as_str().map(str::trim) {
                Some(s) if !s.is_empty() => {
                    if seen.insert(s.to_ascii_lowercase()) {
                        subscriptions.push(s.to_ascii_lowercase());
                    }
                }
                _ => return Err(bad_request("Every entry of 'subscriptions' must be a non-empty string.")),
            }
        }
        let query = match body.get("query") {
            Some(Value::String(q)) if !q.trim().is_empty() => q,
            _ => return Err(bad_request("'query' must be a non-empty string.")),
        };
        let empty = serde_json::Map::new();
        let options = match body.get("options") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(o)) => o,
            Some(_) => return Err(bad_request("'options' must be an object.")),
        };
        match options.get("resultFormat").and_then(Value::as_str) {
            None => {}
            Some(f) if f.eq_ignore_ascii_case("objectArray") => {}
            Some(f) => {
                return Err(Answer::error(
                    400,
                    "UnsupportedBySandbox",
                    format!("The sandbox answers in the objectArray format only, not '{f}'."),
                ));
            }
        }
        let top = match options.get("$top") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(t) if (1..=MAX_TOP).contains(&t) => Some(t),
                _ => return Err(bad_request(format!("'$top' must be an integer between 1 and {MAX_TOP}; got {v}."))),
            },
        };
        let (offset, token_top) = match options.get("$skipToken") {
            None | Some(Value::Null) => match options.get("$skip") {
                None | Some(Value::Null) => (0, None),
                Some(v) => match v.as_u64() {
                    Some(s) => (s, None),
                    None => return Err(bad_request(format!("'$skip' must be a non-negative integer; got {v}."))),
                },
            },
            Some(Value::String(t)) => decode_token(t).ok_or_else(|| bad_request("The '$skipToken' is not valid."))?,
            Some(_) => return Err(bad_request("'$skipToken' must be a string.")),
        };
        check_kql(query)?;
        Ok(Self {
            shape: shape_of(query)?,
            subscriptions,
            with_nic_ips: query.to_ascii_lowercase().contains("nicipconfigs"),
            projected: last_projection(query),
            zones: zone_query(query),
            offset,
            top: top.or(token_top).unwrap_or(DEFAULT_TOP),
        })
    }

    /// The page of rows this query selects, ordered by id.
    fn answer(&self, w: &World) -> Answer {
        match &self.shape {
            Shape::Endpoints => self.endpoints(w),
            Shape::PendingConnections(types, limit) => self.page(self.pending_connections(w, types, *limit)),
            Shape::Changes(since) => self.page(self.changes(w, *since)),
        }
    }

    /// One page of `rows` (already in the query's order).
    fn page(&self, rows: Vec<Value>) -> Answer {
        let total = rows.len();
        self.page_of(total, |offset, top| rows.into_iter().skip(offset).take(top).collect())
    }

    /// The page answer for `total` rows, `slice(offset, top)` giving this page's rows.
    fn page_of(&self, total: usize, slice: impl FnOnce(usize, usize) -> Vec<Value>) -> Answer {
        let total = total as u64;
        let offset = usize::try_from(self.offset).unwrap_or(usize::MAX);
        let top = usize::try_from(self.top).unwrap_or(usize::MAX);
        let data: Vec<Value> = slice(offset, top);
        let next = self.offset.saturating_add(data.len() as u64);
        let mut body = json!({
            "totalRecords": total,
            "count": data.len(),
            "data": data,
            "facets": [],
            "resultTruncated": "false",
        });
        if next < total {
            body["$skipToken"] = Value::String(encode_token(next, self.top));
        }
        Answer::json(200, body)
    }

    /// One row per Pending connection on a resource of `types` in scope, ordered by the
    /// resource's id, then the connection's.
    fn pending_connections(&self, w: &World, types: &[String], row_limit: usize) -> Vec<Value> {
        let mut rows = Vec::new();
        for sub in &self.subscriptions {
            let prefix = format!("/subscriptions/{sub}/");
            for (k, s) in w.resources.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)) {
                let rtype = s.body.get("type").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
                if !types.contains(&rtype) || !types.iter().any(|t| is_type(k, t)) {
                    continue;
                }
                // Resource Graph lists only what the caller may read.
                let readable = w.grants.as_ref().is_none_or(|g| {
                    let rtype = s.body.get("type").and_then(Value::as_str).unwrap_or_default();
                    g.allows(&format!("{rtype}/read"), k)
                });
                if !readable {
                    continue;
                }
                let id = s.body.get("id").cloned().unwrap_or(Value::Null);
                // `mv-expand` stops at its row limit, before the Pending filter.
                for conn in w.children(k, "privateEndpointConnections").into_iter().take(row_limit) {
                    let state = &conn["properties"]["privateLinkServiceConnectionState"];
                    if !state["status"].as_str().is_some_and(|st| st.eq_ignore_ascii_case("Pending")) {
                        continue;
                    }
                    rows.push(json!({
                        "id": id,
                        "connectionId": conn["id"],
                        "connectionName": conn["name"],
                        "endpointId": conn["properties"]["privateEndpoint"]["id"],
                        "description": state["description"],
                    }));
                }
            }
        }
        rows
    }

    /// Change records of private endpoints in scope after `since`, within retention.
    fn changes(&self, w: &World, since: u64) -> Vec<Value> {
        let now = unix_now();
        let mut rows: Vec<Value> = w
            .graph
            .changes
            .iter()
            .filter(|c| c.at > since && c.at + CHANGE_RETENTION_SECS > now && self.in_scope(&c.target_id.to_ascii_lowercase()))
            .enumerate()
            .map(|(i, c)| {
                let timestamp = time::OffsetDateTime::from_unix_timestamp(i64::try_from(c.at).unwrap_or(0))
                    .ok()
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                    .unwrap_or_default();
                let mut row = json!({
                    "id": format!("{}/providers/Microsoft.Resources/changes/{:020}", c.target_id, c.at * 1000 + i as u64),
                    "properties": {
                        "targetResourceId": c.target_id,
                        "targetResourceType": "Microsoft.Network/privateEndpoints",
                        "changeType": c.change_type,
                        "changeAttributes": {"timestamp": timestamp, "changesCount": 1},
                        "changes": c.changes,
                    },
                });
                for (column, value) in [
                    ("targetresourceid", json!(c.target_id)),
                    ("changetype", json!(c.change_type)),
                    ("changetime", json!(timestamp)),
                    ("changes", c.changes.clone()),
                ] {
                    if self.projected.iter().any(|p| p == column) {
                        let name = match column {
                            "targetresourceid" => "targetResourceId",
                            "changetype" => "changeType",
                            "changes" => "changes",
                            _ => "changeTime",
                        };
                        row[name] = value;
                    }
                }
                row
            })
            .collect();
        rows.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        rows
    }

    fn endpoints(&self, w: &World) -> Answer {
        // Lower-cased id -> the endpoint's JSON; live endpoints win over remembered ones
        // (deleted and re-created within the lag).
        let mut endpoints: BTreeMap<String, &Value> = BTreeMap::new();
        if let Some(name) = &self.zones {
            for sub in &self.subscriptions {
                let prefix = format!("/subscriptions/{sub}/");
                for (k, s) in w.resources.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)) {
                    let named = name.as_ref().is_none_or(|n| k.rsplit('/').next() == Some(n.as_str()));
                    // Resource Graph lists only what the caller may read: a zone the search
                    // cannot see is one zone management could shadow.
                    let readable =
                        w.grants.as_ref().is_none_or(|g| g.allows("Microsoft.Network/privateDnsZones/read", k));
                    if is_type(k, ZONE_TYPE) && named && readable {
                        endpoints.insert(k.clone(), &s.body);
                    }
                }
            }
            return self.endpoint_page(w, endpoints);
        }
        for r in &w.graph.removed {
            if is_type(&r.key, PE_TYPE) && self.in_scope(&r.key) {
                endpoints.insert(r.key.clone(), &r.body);
            }
        }
        for sub in &self.subscriptions {
            let prefix = format!("/subscriptions/{sub}/");
            for (k, s) in w.resources.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)) {
                if is_type(k, PE_TYPE) {
                    endpoints.insert(k.clone(), &s.body);
                }
            }
        }
        self.endpoint_page(w, endpoints)
    }

    /// One page of endpoint (or zone) rows; only this page's rows are built.
    fn endpoint_page(&self, w: &World, endpoints: BTreeMap<String, &Value>) -> Answer {
        self.page_of(endpoints.len(), |offset, top| {
            endpoints.values().skip(offset).take(top).map(|pe| self.row(w, pe)).collect()
        })
    }

    fn in_scope(&self, key: &str) -> bool {
        let sub = key.split('/').nth(2).unwrap_or_default();
        self.subscriptions.iter().any(|s| s == sub)
    }

    fn row(&self, w: &World, pe: &Value) -> Value {
        let mut row = json!({"id": pe.get("id").cloned().unwrap_or(Value::Null)});
        // The columns the query's final `project` names, as the index holds them.
        for column in ["name", "location", "tags", "properties"] {
            if self.projected.iter().any(|c| c == column) {
                row[column] = pe.get(column).cloned().unwrap_or(Value::Null);
            }
        }
        if self.with_nic_ips && self.zones.is_none() {
            // The query joins the first NIC on its lower-cased id; no NIC (or one that is
            // already gone from the index) gives null, as a leftouter join does.
            let nic = pe
                .pointer("/properties/networkInterfaces/0/id")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
                .and_then(|nic| w.get(&nic).or_else(|| w.graph.removed.iter().find(|r| r.key == nic).map(|r| &r.body)));
            row["nicIpConfigs"] =
                nic.and_then(|n| n.pointer("/properties/ipConfigurations")).cloned().unwrap_or(Value::Null);
        }
        row
    }
}

/// For a query over private DNS zones: `Some(the lower-cased `name =~ '…'` literal, if any)`.
fn zone_query(query: &str) -> Option<Option<String>> {
    let lower = query.to_ascii_lowercase();
    if !lower.contains(&format!("'{ZONE_TYPE}'")) {
        return None;
    }
    let name = lower.split_once("name =~ '").and_then(|(_, rest)| rest.split_once('\'')).map(|(n, _)| n.to_owned());
    Some(name)
}

/// Resource Graph's documented tables (lower case; table names are case-insensitive).
pub const KNOWN_TABLES: &[&str] = &[
    "resources",
    "resourcecontainers",
    "advisorresources",
    "alertsmanagementresources",
    "appserviceresources",
    "authorizationresources",
    "chaosresources",
    "communitygalleryresources",
    "computeresources",
    "desktopvirtualizationresources",
    "extendedlocationresources",
    "guestconfigurationresources",
    "healthresources",
    "iotsecurityresources",
    "kubernetesconfigurationresources",
    "maintenanceresources",
    "managedservicesresources",
    "networkresources",
    "patchassessmentresources",
    "patchinstallationresources",
    "policyresources",
    "recoveryservicesresources",
    "resourcechanges",
    "resourcecontainerchanges",
    "securityresources",
    "servicehealthresources",
    "spotresources",
    "supportresources",
];

/// Columns of the `Resources`-shaped tables (lower case).
pub const KNOWN_COLUMNS: &[&str] = &[
    "id",
    "name",
    "type",
    "tenantid",
    "kind",
    "location",
    "resourcegroup",
    "subscriptionid",
    "managedby",
    "sku",
    "plan",
    "properties",
    "tags",
    "identity",
    "zones",
    "extendedlocation",
];

/// KQL words that are neither tables nor columns (operators, join kinds, literals).
const KQL_WORDS: &[&str] = &[
    "where",
    "extend",
    "project",
    "join",
    "kind",
    "leftouter",
    "inner",
    "innerunique",
    "leftanti",
    "leftsemi",
    "rightouter",
    "fullouter",
    "on",
    "order",
    "sort",
    "by",
    "asc",
    "desc",
    "and",
    "or",
    "not",
    "in",
    "has",
    "contains",
    "startswith",
    "endswith",
    "limit",
    "take",
    "top",
    "summarize",
    "count",
    "distinct",
    "mv",
    "expand",
    "mv-expand",
    "union",
    "true",
    "false",
    "null",
    "between",
    "with",
    "as",
    "nulls",
    "first",
    "last",
    "let",
];

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Punct(char),
}

fn tokenize(query: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' || c == '"' {
            // String literal: skipped (its content is data, not names).
            for d in chars.by_ref() {
                if d == c {
                    break;
                }
            }
            out.push(Tok::Word(String::new()));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut w = c.to_string();
            while let Some(&d) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' || d == '-' && w.eq_ignore_ascii_case("mv") {
                    w.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(Tok::Word(w));
        } else if c.is_ascii_digit() {
            while chars.peek().is_some_and(|d| d.is_ascii_alphanumeric() || *d == '.') {
                chars.next();
            }
            out.push(Tok::Word(String::new()));
        } else if !c.is_whitespace() {
            out.push(Tok::Punct(c));
        }
    }
    out
}

fn invalid_query(code: &str, reason: String) -> Answer {
    Answer::json(
        400,
        json!({"error": {
            "code": "BadRequest",
            "message": "Please provide below info when asking for support: timestamp = sandbox, correlationId = sandbox.",
            "details": [
                {"code": "InvalidQuery", "message": "Query is invalid. Please refer to the documentation for the Azure Resource Graph service and fix the error before retrying."},
                {"code": code, "message": reason}
            ]
        }}),
    )
}

/// Checks the tables and bare column names of a query (see the module docs).
pub fn check_kql(query: &str) -> Result<(), Answer> {
    let toks = tokenize(query);
    let word = |i: usize| match toks.get(i) {
        Some(Tok::Word(w)) => Some(w.to_ascii_lowercase()),
        _ => None,
    };
    let punct = |i: usize, c: char| matches!(toks.get(i), Some(Tok::Punct(p)) if *p == c);
    // Tables: the query's first word, and the first word after `join [kind=x] (`.
    let mut tables = vec![0usize];
    for i in 0..toks.len() {
        if word(i).as_deref() == Some("join") {
            let mut j = i + 1;
            if word(j).as_deref() == Some("kind") && punct(j + 1, '=') {
                j += 3;
            }
            if punct(j, '(') {
                tables.push(j + 1);
            }
        }
    }
    for &t in &tables {
        match word(t) {
            Some(w) if KNOWN_TABLES.contains(&w.as_str()) => {}
            Some(w) => {
                let original = match &toks[t] {
                    Tok::Word(o) => o.clone(),
                    Tok::Punct(_) => w.clone(),
                };
                return Err(invalid_query(
                    "UnknownTable",
                    format!("The name '{original}' does not refer to any known table, tabular variable or function."),
                ));
            }
            None => return Err(invalid_query("ParserFailure", "The query does not start with a table.".into())),
        }
    }
    // Names the query defines: `name =` (not `==` or `=~`).
    let defined: Vec<String> = (0..toks.len())
        .filter(|&i| punct(i + 1, '=') && !punct(i + 2, '=') && !punct(i + 2, '~'))
        .filter_map(word)
        .collect();
    for (i, tok) in toks.iter().enumerate() {
        let Tok::Word(original) = tok else { continue };
        let w = original.to_ascii_lowercase();
        if w.is_empty()
            || tables.contains(&i)
            || (i > 0 && punct(i - 1, '.'))
            || punct(i + 1, '(')
            || KQL_WORDS.contains(&w.as_str())
            || KNOWN_COLUMNS.contains(&w.as_str())
            || defined.contains(&w)
        {
            continue;
        }
        return Err(invalid_query("UnknownColumn", format!("Failed to resolve scalar expression named '{original}'")));
    }
    Ok(())
}

fn encode_token(offset: u64, top: u64) -> String {
    B64.encode(json!({"offset": offset, "top": top}).to_string())
}

fn decode_token(token: &str) -> Option<(u64, Option<u64>)> {
    let v: Value = serde_json::from_slice(&B64.decode(token.trim()).ok()?).ok()?;
    let offset = v.get("offset")?.as_u64()?;
    let top = v.get("top").and_then(Value::as_u64).filter(|t| (1..=MAX_TOP).contains(t));
    Some((offset, top))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_rejected() {
        assert_eq!(decode_token(&encode_token(1000, 1000)), Some((1000, Some(1000))));
        assert_eq!(decode_token("not base64!"), None);
        assert_eq!(decode_token(&B64.encode("{}")), None);
    }

    #[test]
    fn the_products_query_uses_known_tables_and_columns() {
        assert!(check_kql(private_link_autopilot::arm::graph::PRIVATE_ENDPOINTS_QUERY).is_ok());
        let e = check_kql("Resourcez | where type =~ 'x'").unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert_eq!(e.body.as_ref().unwrap()["error"]["details"][1]["code"], "UnknownTable");
        let e = check_kql("Resources | join kind=leftouter (NetworkResourcez | project a = id) on a").unwrap_err();
        assert!(e.body.unwrap().to_string().contains("NetworkResourcez"));
        let e = check_kql("Resources | where typ =~ 'x' | project id").unwrap_err();
        assert!(e.body.unwrap().to_string().contains("'typ'"));
        assert!(check_kql("resources | extend n = tolower(name) | where n == 'a' | project id, n").is_ok());
    }

    #[test]
    fn the_target_side_and_catch_up_queries_are_valid_and_recognised() {
        let q = private_link_autopilot::effects::target_approvals::pending_connections_query(&[
            "Microsoft.Storage/storageAccounts".into(),
            "Microsoft.Kusto/clusters".into(),
        ]);
        assert!(check_kql(&q).is_ok(), "{:?}", check_kql(&q).err().and_then(|a| a.body));
        assert_eq!(
            shape_of(&q).ok(),
            Some(Shape::PendingConnections(
                vec!["microsoft.storage/storageaccounts".into(), "microsoft.kusto/clusters".into()],
                400
            ))
        );
        let q = private_link_autopilot::reconcile::catch_up::changes_query(86400);
        assert!(check_kql(&q).is_ok(), "{:?}", check_kql(&q).err().and_then(|a| a.body));
        assert_eq!(shape_of(&q).ok(), Some(Shape::Changes(86400)));
        assert_eq!(shape_of(private_link_autopilot::arm::graph::PRIVATE_ENDPOINTS_QUERY).ok(), Some(Shape::Endpoints));
    }

    #[test]
    fn hms_rounds_up() {
        assert_eq!(hms(Duration::from_millis(4200)), "00:00:05");
        assert_eq!(hms(Duration::from_secs(3723)), "01:02:03");
        assert_eq!(hms(Duration::ZERO), "00:00:00");
    }

    #[test]
    fn quota_window() {
        let mut g = GraphState::default();
        let t0 = Instant::now();
        let q = (2, Duration::from_secs(5));
        assert_eq!(g.take_quota(q, t0).map(|r| r.0), Ok(1));
        assert_eq!(g.take_quota(q, t0).map(|r| r.0), Ok(0));
        assert!(g.take_quota(q, t0 + Duration::from_secs(1)).is_err());
        assert_eq!(g.take_quota(q, t0 + Duration::from_secs(5)).map(|r| r.0), Ok(1));
    }

    #[test]
    fn types_are_top_level_only() {
        let pe = "/subscriptions/s/resourcegroups/rg/providers/microsoft.network/privateendpoints/a";
        assert!(is_type(pe, PE_TYPE));
        assert!(!is_type(&format!("{pe}/privatednszonegroups/default"), PE_TYPE));
        assert!(!is_type(pe, NIC_TYPE));
    }
}
