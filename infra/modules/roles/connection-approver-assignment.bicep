// Assigns the connection-approver role at one owned resource (a Kusto cluster, a Private Link
// service or an Azure Monitor workspace), so the app can approve connections to that resource
// and nothing else.
//
// Bicep needs a typed symbol to scope an assignment to, so each supported type has its own
// `existing` reference and a conditional assignment. An unsupported type fails the deployment at
// the `supportedTypes[resourceType]` lookup in the output instead of silently granting nothing.

@description('Principal id of the app identity.')
param principalId string

@description('Role definition name (guid) of the connection-approver role.')
param roleDefinitionName string

@description('Lower-cased resource type, e.g. microsoft.kusto/clusters.')
param resourceType string

@description('Resource name.')
param resourceName string

var supportedTypes = {
  'microsoft.kusto/clusters': 'Azure Data Explorer cluster'
  'microsoft.network/privatelinkservices': 'Private Link service'
  'microsoft.monitor/accounts': 'Azure Monitor workspace'
}

var roleDefinitionId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionName)

resource kusto 'Microsoft.Kusto/clusters@2024-04-13' existing = {
  name: resourceName
}

resource privateLinkService 'Microsoft.Network/privateLinkServices@2024-05-01' existing = {
  name: resourceName
}

resource monitorWorkspace 'Microsoft.Monitor/accounts@2023-04-03' existing = {
  name: resourceName
}

resource onKusto 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (resourceType == 'microsoft.kusto/clusters') {
  name: guid(kusto.id, principalId, roleDefinitionName)
  scope: kusto
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Private Link Autopilot: approve connections'
  }
}

resource onPrivateLinkService 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (resourceType == 'microsoft.network/privatelinkservices') {
  name: guid(privateLinkService.id, principalId, roleDefinitionName)
  scope: privateLinkService
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Private Link Autopilot: approve connections'
  }
}

resource onMonitorWorkspace 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (resourceType == 'microsoft.monitor/accounts') {
  name: guid(monitorWorkspace.id, principalId, roleDefinitionName)
  scope: monitorWorkspace
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Private Link Autopilot: approve connections'
  }
}

output approvedResourceKind string = supportedTypes[resourceType]
