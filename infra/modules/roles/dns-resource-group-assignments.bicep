// Assigns the zone manager role at the hub's DNS resource group (dnsZoneManagement = 'create').
// A zone that does not exist yet has no id to assign at, so creating one needs the resource group:
// the narrowest scope that can hold a zone created later. The role covers private DNS zones, their
// A records and their virtual network links there, and nothing else in the resource group.

targetScope = 'resourceGroup'

@description('Principal id of the app identity.')
param principalId string

@description('Role definition name (guid) of the zone manager role.')
param roleDefinitionName string

resource manager 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, roleDefinitionName)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionName)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Private Link Autopilot: create, link and remove its private DNS zones here'
  }
}
