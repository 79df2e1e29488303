// Assigns the A-record writer role at each named private DNS zone (not the resource group), so
// the app can touch no other zone in the hub, and nothing but A records in these ones. The zones
// must already exist; with dnsZoneManagement = 'create' the zones the app creates are covered by the zone
// manager role at the resource group instead (dns-resource-group-assignments.bicep).

@description('Principal id of the app identity.')
param principalId string

@description('Role definition name (guid) of the A-record writer role.')
param roleDefinitionName string

@description('Private DNS zone names in this resource group.')
param zoneNames array

resource zones 'Microsoft.Network/privateDnsZones@2024-06-01' existing = [for zoneName in zoneNames: {
  name: zoneName
}]

resource writers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (zoneName, i) in zoneNames: {
  name: guid(zones[i].id, principalId, roleDefinitionName)
  scope: zones[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionName)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Private Link Autopilot: A records in this zone'
  }
}]
