// One custom role for the app identity. The action lists, and why each role exists instead of a
// built-in one, are in main.bicep (section "Least-privilege roles") and infra/README.md.
//
// Deployed at the subscription of the role's first assignable scope (as `az role definition
// create` does), so the definition never lives outside the scopes it is meant for.
// The name is a deterministic guid() computed by the caller, so redeploying updates the role
// instead of creating a twin, and assignments can name it before it exists.
// ARM refuses to drop a scope from assignableScopes while assignments remain under it: remove
// those assignments first when shrinking a scope list.

targetScope = 'subscription'

@description('Role definition name (a guid, computed by the caller).')
param roleDefinitionName string

@description('Display name (unique per tenant).')
param roleName string

@description('What the role allows, in one sentence.')
param roleDescription string

@description('Allowed control-plane actions.')
param actions array

@description('Scopes the role may be assigned at (subscriptions or resource groups).')
param assignableScopes array

resource role 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: roleDefinitionName
  properties: {
    roleName: roleName
    description: roleDescription
    type: 'CustomRole'
    assignableScopes: assignableScopes
    permissions: [
      {
        actions: actions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
  }
}

output name string = role.name
