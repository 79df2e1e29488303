//! ARM's permissions API in the fake: `GET {scope}/providers/Microsoft.Authorization/permissions`
//! (2022-04-01) answers the caller's own permissions from the fake's [`super::rbac`] grants,
//! one block per assignment at or above the scope (all of them: `*` when RBAC is off).
//! Every caller may ask it, so the front door does not authorise it (`mod.rs`).

use serde_json::{Value, json};

use super::{Answer, Call, Shared};

/// `GET {scope}/providers/Microsoft.Authorization/permissions`.
pub(super) fn answer(shared: &Shared, call: &Call<'_>) -> Answer {
    let lower = call.path.to_ascii_lowercase();
    let scope = &call.path[..lower.rfind("/providers/microsoft.authorization/permissions").unwrap_or(0)];
    let blocks: Vec<Value> = match &shared.world().grants {
        None => vec![json!({"actions": ["*"], "notActions": [], "dataActions": [], "notDataActions": []})],
        Some(g) => g
            .assignments
            .iter()
            .filter(|a| super::rbac::covers(&a.scope, scope))
            .map(|a| json!({"actions": a.actions, "notActions": [], "dataActions": [], "notDataActions": []}))
            .collect(),
    };
    Answer::json(200, json!({ "value": blocks }))
}
