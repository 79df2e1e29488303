//! Listing private endpoints with Azure Resource Graph, for the sweep.
//!
//! Why Resource Graph and not `GET .../privateEndpoints` per subscription: one query
//! covers up to 1000 subscriptions and also brings the NIC addresses (a join), so a
//! sweep over a large estate costs a handful of requests instead of one list per
//! subscription plus one GET per NIC. The price is that Resource Graph is an index that
//! lags ARM (an endpoint deleted a moment ago may still be listed, a new one may be
//! missing): the sweep treats the list as *candidates* and re-reads each endpoint from
//! ARM before acting on it, the way every other handler does ("ARM is the truth").
//!
//! The request follows `../shared/reference/arm.md` section 6:
//!
//! * `POST /providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01` with
//!   `{"subscriptions", "query", "options": {"$top", "$skipToken", "resultFormat"}}`;
//! * pages of at most 1000 rows ([`PAGE_SIZE`]), followed with `options.$skipToken` while
//!   the answer carries one; paging is only stable because the query projects `id`;
//! * at most 1000 subscriptions per request ([`MAX_SUBSCRIPTIONS_PER_QUERY`]), so larger
//!   scopes are queried in chunks, one paged query per chunk;
//! * the per-principal quota (about 15 queries per 5 s) is not handled here: the
//!   [`ArmClient`] puts these POSTs in their own bucket, lowers it from
//!   `x-ms-user-quota-remaining`, pauses until `x-ms-user-quota-resets-after` when the
//!   quota is spent, and retries a 429 after its `Retry-After`.
//!
//! The parser is lenient where the service is quirky (`resultTruncated` is the *string*
//! `"true"`/`"false"`; the joined column is `null` when an endpoint has no readable NIC)
//! and strict where leniency would lose endpoints silently: a row without an `id`, a
//! `table`-shaped answer or a truncated answer without a `$skipToken` is an error.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::{Value, json};

use super::client::{CODE_TOO_MANY_PAGES, Method};
use super::{ArmClient, ArmError, ArmRequest};

/// The Resource Graph API version the reference recommends.
pub const GRAPH_API: &str = "2024-04-01";

/// The Resource Graph query endpoint (tenant level: the scope is in the body).
pub const GRAPH_PATH: &str = "/providers/Microsoft.ResourceGraph/resources";

/// Rows per page: Resource Graph's maximum `$top`.
pub const PAGE_SIZE: u32 = 1000;

/// Resource Graph rejects more subscriptions than this in one request.
pub const MAX_SUBSCRIPTIONS_PER_QUERY: usize = 1000;

/// Never follow more `$skipToken`s than this for one chunk (a million endpoints): a
/// server that keeps answering with a token must not keep the sweep busy forever.
pub const MAX_GRAPH_PAGES: usize = 1000;

/// Code of the [`ArmError::Api`] (status 0) for an answer we cannot use.
pub const CODE_INVALID_GRAPH_RESPONSE: &str = "InvalidGraphResponse";

/// Every private endpoint in scope with the private IPs of its NIC.
///
/// * `type =~`: Resource Graph stores types lower-case, so compare case-insensitively.
/// * The NIC is joined on its lower-cased id, because the id inside the endpoint's
///   `properties.networkInterfaces` and the NIC's own `id` may differ in case.
///   `kind=leftouter` keeps endpoints whose NIC is not indexed (yet): they come back with
///   a `null` `nicIpConfigs`, and the reconcile reads the NIC from ARM anyway.
/// * Only the first NIC is joined: a private endpoint has exactly one (managed) NIC, and
///   a second `mv-expand` would multiply rows and break paging.
/// * The NIC's whole `ipConfigurations` array is projected and the addresses are picked
///   out here: Resource Graph has no `mv-apply` to map an array in the query.
/// * `order by id asc` and projecting `id` are what make `$skipToken` paging stable.
pub const PRIVATE_ENDPOINTS_QUERY: &str = "Resources \
| where type =~ 'microsoft.network/privateendpoints' \
| extend nicId = tolower(tostring(properties.networkInterfaces[0].id)) \
| join kind=leftouter (Resources \
| where type =~ 'microsoft.network/networkinterfaces' \
| project nicId = tolower(id), nicIpConfigs = properties.ipConfigurations) on nicId \
| project id, name, location, tags, properties, nicIpConfigs \
| order by id asc";

/// One private endpoint as Resource Graph lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphEndpoint {
    /// The id as Resource Graph returns it (its casing is not normalised).
    pub id: String,
    /// Private IPs of the endpoint's NIC, in order, without duplicates; empty when the
    /// query had no NIC column or the NIC was not indexed.
    pub nic_ips: Vec<String>,
    /// The endpoint as the index holds it (`id`, `name`, `location`, `tags`, `properties`)
    /// and its NIC (`properties.ipConfigurations`), when the query projected them: enough
    /// for the sweep to tell a converged endpoint without reading ARM (see `sweep.rs`).
    pub view: Option<(Value, Value)>,
}

/// One answer of the Resource Graph `resources` API, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphPage {
    pub rows: Vec<GraphEndpoint>,
    /// Present while there are more pages.
    pub skip_token: Option<String>,
    pub total_records: Option<u64>,
    pub count: Option<u64>,
    pub result_truncated: bool,
}

/// Lists every private endpoint in `subscriptions` (ids as Resource Graph returns them,
/// each once). An empty `subscriptions` lists nothing: without a scope Resource Graph
/// would answer for the whole tenant, which is not what an empty sweep scope means.
pub async fn list_private_endpoints(arm: &ArmClient, subscriptions: &[String]) -> Result<Vec<GraphEndpoint>, ArmError> {
    // The same subscription twice would only cost rows we drop again.
    let mut seen_subs = HashSet::new();
    let subs: Vec<&str> = subscriptions
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty() && seen_subs.insert(s.to_ascii_lowercase()))
        .collect();
    let mut out = Vec::new();
    // Ids are compared case-insensitively: ARM ids are, and a page boundary that moves
    // while the index changes could otherwise repeat an endpoint.
    let mut seen_ids = HashSet::new();
    for chunk in subs.chunks(MAX_SUBSCRIPTIONS_PER_QUERY) {
        for row in query_chunk(arm, chunk).await? {
            if seen_ids.insert(row.id.to_ascii_lowercase()) {
                out.push(row);
            }
        }
    }
    Ok(out)
}

/// Private DNS zones named `zone` anywhere in `subscriptions` (ids as Resource Graph
/// returns them), so a zone is never created where it would shadow or collide with an
/// existing one (a VNet can be linked to one zone of a name only). `zone` must be a DNS
/// name (letters, digits, `-`, `_`, `.`): it goes into the query text.
pub async fn find_private_dns_zones(
    arm: &ArmClient,
    subscriptions: &[String],
    zone: &str,
) -> Result<Vec<String>, ArmError> {
    if zone.is_empty() || !zone.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(invalid(format!("`{zone}` is not a DNS zone name; not searched")));
    }
    let query = format!(
        "Resources | where type =~ 'microsoft.network/privatednszones' | where name =~ '{zone}' \
         | project id, name, tags | order by id asc"
    );
    let mut seen = HashSet::new();
    let subs: Vec<&str> = subscriptions
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty() && seen.insert(s.to_ascii_lowercase()))
        .collect();
    let mut out = Vec::new();
    for chunk in subs.chunks(MAX_SUBSCRIPTIONS_PER_QUERY) {
        let rows = query_rows(arm, chunk, &query).await?;
        out.extend(rows.iter().filter_map(|r| r.get("id").and_then(Value::as_str)).map(str::to_owned));
    }
    Ok(out)
}

/// One paged query over at most [`MAX_SUBSCRIPTIONS_PER_QUERY`] subscriptions.
async fn query_chunk(arm: &ArmClient, subscriptions: &[&str]) -> Result<Vec<GraphEndpoint>, ArmError> {
    query_rows(arm, subscriptions, PRIVATE_ENDPOINTS_QUERY)
        .await?
        .iter()
        .enumerate()
        .map(|(i, row)| parse_row(i, row))
        .collect()
}

/// Every row `query` answers for `subscriptions` (at most [`MAX_SUBSCRIPTIONS_PER_QUERY`]),
/// following `$skipToken` with the same checks as the sweep's listing: the one pager every
/// Resource Graph query of the product goes through (the target-side approvals and the
/// `resourcechanges` catch-up use it too). The query must project `id` (paging and the
/// truncation check depend on it); rows come back as the service sent them.
pub async fn query_rows(arm: &ArmClient, subscriptions: &[&str], query: &str) -> Result<Vec<Value>, ArmError> {
    let mut rows = Vec::new();
    let mut skip_token: Option<String> = None;
    for _ in 0..MAX_GRAPH_PAGES {
        let mut options = json!({"$top": PAGE_SIZE, "resultFormat": "objectArray"});
        if let Some(t) = &skip_token {
            options["$skipToken"] = Value::String(t.clone());
        }
        let body = json!({"subscriptions": subscriptions, "query": query, "options": options});
        let resp = arm.send(ArmRequest::new(Method::Post, GRAPH_PATH, GRAPH_API).body(body)).await?;
        let page = page_rows(&resp.body)?;
        rows.extend(page.0);
        match page.1 {
            Some(t) => skip_token = Some(t),
            None if page.2 => {
                // Only happens when `id` is not projected; never drop rows quietly.
                return Err(invalid("the answer is truncated and has no $skipToken to continue".into()));
            }
            None => return Ok(rows),
        }
    }
    Err(ArmError::Api {
        method: Method::Post,
        path: GRAPH_PATH.into(),
        status: 0,
        code: CODE_TOO_MANY_PAGES.into(),
        message: format!("the query did not end within {MAX_GRAPH_PAGES} pages"),
        retry_after: None,
    })
}

/// A page's raw rows, its `$skipToken` and whether it says it is truncated.
fn page_rows(body: &Value) -> Result<(Vec<Value>, Option<String>, bool), ArmError> {
    let Value::Object(map) = body else {
        return Err(invalid("the answer is not a JSON object".into()));
    };
    let data = match map.get("data") {
        Some(Value::Array(rows)) => rows.clone(),
        Some(Value::Object(_)) => {
            return Err(invalid("the answer is in the table format; objectArray was requested".into()));
        }
        // An empty scope may come back without data at all.
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(invalid("`data` is not an array".into())),
    };
    let skip_token = match map.get("$skipToken") {
        Some(Value::String(t)) if !t.trim().is_empty() => Some(t.clone()),
        _ => None,
    };
    // The service sends the string "true"/"false"; accept a real boolean too.
    let result_truncated = match map.get("resultTruncated") {
        Some(Value::String(s)) => s.trim().eq_ignore_ascii_case("true"),
        Some(Value::Bool(b)) => *b,
        _ => false,
    };
    Ok((data, skip_token, result_truncated))
}

fn invalid(message: String) -> ArmError {
    ArmError::Api {
        method: Method::Post,
        path: GRAPH_PATH.into(),
        status: 0,
        code: CODE_INVALID_GRAPH_RESPONSE.into(),
        message,
        retry_after: None,
    }
}

/// Parses one answer (`objectArray` format). Rows need a string `id`; the NIC addresses
/// are read from `nicIpConfigs` (the NIC's `ipConfigurations`, as [`PRIVATE_ENDPOINTS_QUERY`]
/// projects them) or from `nicIps` (a plain array of addresses), and are optional.
pub fn parse_page(body: &Value) -> Result<GraphPage, ArmError> {
    let (data, skip_token, result_truncated) = page_rows(body)?;
    let rows = data.iter().enumerate().map(|(i, row)| parse_row(i, row)).collect::<Result<Vec<_>, _>>()?;
    Ok(GraphPage {
        rows,
        skip_token,
        total_records: body.get("totalRecords").and_then(Value::as_u64),
        count: body.get("count").and_then(Value::as_u64),
        result_truncated,
    })
}

fn parse_row(index: usize, row: &Value) -> Result<GraphEndpoint, ArmError> {
    let id = match row.get("id") {
        Some(Value::String(id)) if !id.trim().is_empty() => id.clone(),
        _ => return Err(invalid(format!("row {index} has no string `id`; the query must project it"))),
    };
    let mut nic_ips: Vec<String> = Vec::new();
    let mut push = |v: Option<&Value>| {
        // Anything that is not an address (empty strings from a failed join, garbage) is
        // dropped: these are hints, and nothing unparsable should travel further.
        if let Some(ip) = v.and_then(Value::as_str).and_then(|s| s.trim().parse::<IpAddr>().ok()) {
            let ip = ip.to_string();
            if !nic_ips.contains(&ip) {
                nic_ips.push(ip);
            }
        }
    };
    if let Some(Value::Array(configs)) = row.get("nicIpConfigs") {
        for c in configs {
            push(c.pointer("/properties/privateIPAddress"));
        }
    }
    if let Some(Value::Array(ips)) = row.get("nicIps") {
        for ip in ips {
            push(Some(ip));
        }
    }
    let view = match (row.get("properties"), row.get("nicIpConfigs")) {
        (Some(props @ Value::Object(_)), Some(configs @ Value::Array(_))) => Some((
            json!({"id": id, "name": row.get("name"), "location": row.get("location"),
                   "tags": row.get("tags"), "properties": props}),
            json!({"properties": {"ipConfigurations": configs}}),
        )),
        _ => None,
    };
    Ok(GraphEndpoint { id, nic_ips, view })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_with_and_without_ips() {
        let body = json!({
            "totalRecords": 3, "count": 3, "facets": [], "resultTruncated": "false",
            "$skipToken": "abc",
            "data": [
                {"id": "/subscriptions/s/resourceGroups/RG/providers/Microsoft.Network/privateEndpoints/a",
                 "nicIpConfigs": [{"properties": {"privateIPAddress": "10.0.0.4"}},
                                  {"properties": {"privateIPAddress": "10.0.0.5"}},
                                  {"properties": {"privateIPAddress": "10.0.0.4"}}]},
                {"id": "/subscriptions/s/resourceGroups/RG/providers/Microsoft.Network/privateEndpoints/b",
                 "nicIpConfigs": null},
                {"id": "/subscriptions/s/resourceGroups/RG/providers/Microsoft.Network/privateEndpoints/c",
                 "nicIps": ["fd00::4", "", "not-an-ip"]}
            ]
        });
        let page = parse_page(&body).expect("parses");
        assert_eq!(page.rows.len(), 3);
        assert_eq!(page.rows[0].nic_ips, vec!["10.0.0.4", "10.0.0.5"]);
        assert!(page.rows[1].nic_ips.is_empty());
        assert_eq!(page.rows[2].nic_ips, vec!["fd00::4"]);
        assert!(page.rows[0].id.ends_with("/privateEndpoints/a"));
        assert_eq!(page.skip_token.as_deref(), Some("abc"));
        assert_eq!((page.total_records, page.count, page.result_truncated), (Some(3), Some(3), false));
    }

    #[test]
    fn rejects_what_would_lose_endpoints() {
        let no_id = json!({"data": [{"name": "x"}]});
        assert_eq!(parse_page(&no_id).unwrap_err().code(), Some(CODE_INVALID_GRAPH_RESPONSE));
        let table = json!({"data": {"columns": [], "rows": []}});
        assert!(parse_page(&table).is_err());
        assert!(parse_page(&json!("nope")).is_err());
        assert!(parse_page(&json!({"data": 3})).is_err());
        let err = parse_page(&json!([])).unwrap_err();
        assert!(!err.is_transient());
    }

    #[test]
    fn truncation_flag_accepts_string_and_bool() {
        assert!(parse_page(&json!({"data": [], "resultTruncated": "true"})).unwrap().result_truncated);
        assert!(parse_page(&json!({"data": [], "resultTruncated": true})).unwrap().result_truncated);
        assert!(!parse_page(&json!({"data": []})).unwrap().result_truncated);
        assert_eq!(parse_page(&json!({"data": [], "$skipToken": ""})).unwrap().skip_token, None);
    }

    #[test]
    fn query_projects_id_and_pages_stably() {
        let q = PRIVATE_ENDPOINTS_QUERY;
        assert!(q.contains("project id, name, location, tags, properties, nicIpConfigs"));
        assert!(q.contains("order by id asc"));
        assert!(q.contains("type =~ 'microsoft.network/privateendpoints'"));
    }
}
