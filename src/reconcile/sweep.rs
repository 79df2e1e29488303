//! The sweep's source of truth: every private endpoint in the subscriptions in scope.
//!
//! Events are hints; the sweep is what makes a missed or dropped event harmless. It lists
//! endpoints with ARM's per-subscription list (paged by `nextLink`, read budget honoured
//! by the client) and hands the ids to the same reconcile path the events use, so a sweep
//! can only ever do what an event for that endpoint would have done.

use crate::arm::endpoints::NETWORK_API;
use crate::arm::{ArmClient, ArmError};
use crate::model::ResourceId;

/// Ids of every private endpoint in `subscriptions`, deduplicated, in id order. Items
/// that do not parse as a private endpoint id are skipped with a warning (ARM would not
/// send them; a proxy or a fake might).
pub async fn list_endpoints(arm: &ArmClient, subscriptions: &[String]) -> Result<Vec<ResourceId>, ArmError> {
    let mut out = std::collections::BTreeMap::new();
    for sub in subscriptions {
        let path = format!("/subscriptions/{}/providers/Microsoft.Network/privateEndpoints", sub.trim());
        for item in arm.list_all(&path, NETWORK_API).await? {
            match item.get("id").and_then(|v| v.as_str()).map(ResourceId::parse_private_endpoint) {
                Some(Ok(id)) => {
                    out.insert(id.key().to_owned(), id);
                }
                _ => tracing::warn!(subscription = %sub, "sweep: skipping a listed item without a private endpoint id"),
            }
        }
    }
    Ok(out.into_values().collect())
}
