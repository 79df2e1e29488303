// The audit trail: every change the app makes (DNS record written, vendor registered, connection
// approved, cleanup) is published as a CloudEvents 1.0 event, so other teams can subscribe without
// reading our logs. Local (key) auth is disabled: the app publishes with its managed identity and
// the EventGrid Data Sender role on this topic only.

@description('Topic name.')
param name string

@description('Azure region.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Principal id of the app identity (publishes to this topic only).')
param appPrincipalId string

var eventGridDataSender = 'd5a91429-5739-47e2-a06b-3470a27159e7'

resource topic 'Microsoft.EventGrid/topics@2022-06-15' = {
  // checkov:skip=CKV_AZURE_193: private-only publishing needs the app to be VNet-integrated (see infra/README.md, Network); publishing requires Entra ID and the Data Sender role (local auth disabled).
  name: name
  location: location
  tags: tags
  // The topic's own identity lets subscribers deliver or dead-letter with RBAC instead of keys.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

resource sender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, appPrincipalId, eventGridDataSender)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventGridDataSender)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Publish audit events.'
  }
}

output id string = topic.id
output endpoint string = topic.properties.endpoint
