//! Event Grid notifications as a subscription's system topic sends them for private
//! endpoints, in both schemas, shaped like `../shared/fixtures/eventgrid`.
//!
//! The sandbox plays Azure: after it changes a private endpoint in the fake ARM it
//! builds the event Azure would raise and hands it to the real handler.

use serde_json::{Value, json};

use crate::host_emulator::new_guid;

/// Which resource event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceEvent {
    WriteSuccess,
    DeleteSuccess,
}

impl ResourceEvent {
    fn event_type(self) -> &'static str {
        match self {
            Self::WriteSuccess => "Microsoft.Resources.ResourceWriteSuccess",
            Self::DeleteSuccess => "Microsoft.Resources.ResourceDeleteSuccess",
        }
    }
    fn operation(self) -> &'static str {
        match self {
            Self::WriteSuccess => "Microsoft.Network/privateEndpoints/write",
            Self::DeleteSuccess => "Microsoft.Network/privateEndpoints/delete",
        }
    }
}

fn subscription_of(resource_id: &str) -> &str {
    resource_id.split('/').nth(2).unwrap_or_default()
}

fn data(kind: ResourceEvent, resource_id: &str) -> Value {
    let sub = subscription_of(resource_id);
    json!({
        "authorization": {"scope": resource_id, "action": kind.operation(), "evidence": {"role": "Network Contributor"}},
        "claims": {"appid": "00000000-0000-0000-0000-000000000000"},
        "correlationId": new_guid(),
        "resourceProvider": "Microsoft.Network",
        "resourceUri": resource_id,
        "operationName": kind.operation(),
        "status": "Succeeded",
        "subscriptionId": sub,
        "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47"
    })
}

/// Event Grid schema.
pub fn event_grid(kind: ResourceEvent, resource_id: &str) -> Value {
    let sub = subscription_of(resource_id);
    json!({
        "subject": resource_id,
        "eventType": kind.event_type(),
        "eventTime": now_rfc3339(),
        "id": new_guid(),
        "data": data(kind, resource_id),
        "dataVersion": "2",
        "metadataVersion": "1",
        "topic": format!("/subscriptions/{sub}")
    })
}

/// CloudEvents 1.0 schema.
pub fn cloud_event(kind: ResourceEvent, resource_id: &str) -> Value {
    let sub = subscription_of(resource_id);
    json!({
        "source": format!("/subscriptions/{sub}"),
        "subject": resource_id,
        "type": kind.event_type(),
        "time": now_rfc3339(),
        "id": new_guid(),
        "data": data(kind, resource_id),
        "specversion": "1.0"
    })
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
