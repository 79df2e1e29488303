// Lets each Event Grid system topic write dead letters into the container, with its own
// system-assigned identity (deadLetterWithResourceIdentity): no SAS, no account key. Scoped to the
// one container, not the account, so a topic identity can read or write nothing else.

@description('Storage account name.')
param storageAccountName string

@description('Dead-letter container name.')
param containerName string

@description('Principal ids of the system topic identities.')
param topicPrincipalIds array

var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: containerName
}

resource writers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in topicPrincipalIds: {
  name: guid(container.id, principalId, storageBlobDataContributor)
  scope: container
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Event Grid system topic writes undeliverable events here.'
  }
}]
