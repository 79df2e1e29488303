//! What the caller may do at a scope, as ARM itself says: the permissions API.
//!
//! Why ask ARM instead of reading role assignments: the effective permission at a scope
//! is the union of every role assigned at or above it (custom and built-in, to groups the
//! principal is in), minus each role's `notActions`. Reading assignments and definitions
//! would need `Microsoft.Authorization/roleAssignments/read` and a re-implementation of
//! that evaluation; `GET {scope}/providers/Microsoft.Authorization/permissions` answers it
//! for the caller, with nothing more than the caller's own token.
//!
//! The spec (`Microsoft.Authorization` 2022-04-01, `Permissions_ListForResourceGroup` and
//! `Permissions_ListForResource`) serves it at a resource group or a resource; a
//! subscription's grants are inherited by its resource groups, so they are checked there.
//! Each item of `value` is one role's `actions`/`notActions`/`dataActions`/`notDataActions`;
//! an action is held when some item allows it and that same item does not exclude it.

use serde::Deserialize;
use serde_json::Value;

use super::{ArmClient, ArmError};

/// The stable version of the permissions API (authorization-RoleDefinitionsCalls.json).
pub const PERMISSIONS_API: &str = "2022-04-01";

/// One item of the answer: a role's permission block.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct PermissionBlock {
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
    pub data_actions: Vec<String>,
    pub not_data_actions: Vec<String>,
}

/// The caller's effective permissions at one scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub blocks: Vec<PermissionBlock>,
}

impl Permissions {
    /// Whether a control-plane `action` is held.
    pub fn allows(&self, action: &str) -> bool {
        self.blocks.iter().any(|b| {
            b.actions.iter().any(|p| action_matches(p, action))
                && !b.not_actions.iter().any(|p| action_matches(p, action))
        })
    }

    /// Whether a data-plane action is held.
    pub fn allows_data(&self, action: &str) -> bool {
        self.blocks.iter().any(|b| {
            b.data_actions.iter().any(|p| action_matches(p, action))
                && !b.not_data_actions.iter().any(|p| action_matches(p, action))
        })
    }
}

/// The caller's permissions at `scope` (a resource group or a resource id).
pub async fn read(arm: &ArmClient, scope: &str) -> Result<Permissions, ArmError> {
    let path = format!("{}/providers/Microsoft.Authorization/permissions", scope.trim_end_matches('/'));
    let items = arm.list_all(&path, PERMISSIONS_API).await?;
    let blocks = items.into_iter().filter_map(|v: Value| serde_json::from_value(v).ok()).collect();
    Ok(Permissions { blocks })
}

/// Case-insensitive match of a granted action (with `*` wildcards, as roles write
/// `Microsoft.Network/*` and `*/read`) against a required one.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    fn glob(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
            Some((c, rest)) => s.first().is_some_and(|d| d == c) && glob(rest, &s[1..]),
        }
    }
    glob(pattern.to_ascii_lowercase().as_bytes(), action.to_ascii_lowercase().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_actions_subtract_within_their_block() {
        let p = Permissions {
            blocks: vec![
                PermissionBlock {
                    actions: vec!["*".into()],
                    not_actions: vec!["Microsoft.Authorization/*/write".into()],
                    ..Default::default()
                },
                PermissionBlock { actions: vec!["*/read".into()], ..Default::default() },
            ],
        };
        assert!(p.allows("Microsoft.Network/privateDnsZones/A/write"));
        assert!(!p.allows("Microsoft.Authorization/roleAssignments/write"));
        assert!(p.allows("microsoft.authorization/roleassignments/read"));
        assert!(!p.allows_data("Microsoft.KeyVault/vaults/secrets/getSecret/action"));
    }
}
