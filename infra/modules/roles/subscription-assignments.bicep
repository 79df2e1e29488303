// Assignments at one subscription in scope: read endpoints and NICs, and tag endpoints.
// Subscription scope is the narrowest that works: endpoints appear in any resource group, and the
// app learns of them only from the event. The tag role can tag any resource there, but cannot read
// or change the resources themselves (RBAC has no per-type condition on the Tags API).

targetScope = 'subscription'

@description('Principal id of the app identity.')
param principalId string

@description('Role definition names (guids) to assign here.')
param roleDefinitionNames array

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleName in roleDefinitionNames: {
  name: guid(subscription().id, principalId, roleName)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleName)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Private Link Autopilot'
  }
}]
