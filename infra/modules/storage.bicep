// Host storage for the function app, the Flex Consumption deployment container, and the Event
// Grid dead-letter container.
//
// Shared keys are disabled: the host reaches the account with the user-assigned identity
// (AzureWebJobsStorage__accountName + __credential + __clientId), Flex pulls its package with the
// same identity, and Event Grid writes dead letters with each system topic's own identity. Nothing
// ever holds an account key, so there is no key to leak or rotate.

@description('Storage account name (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Principal id of the app identity (host storage, deployment package).')
param appPrincipalId string

@description('Container Flex Consumption deploys the package from.')
param deploymentContainerName string

@description('Container Event Grid writes undeliverable events to.')
param deadLetterContainerName string

@description('Table holding the vendor registration ledger (what was registered with each vendor).')
param ledgerTableName string = 'vendorregistrations'

@description('Table holding the endpoint leases (one writer per endpoint across instances).')
param leaseTableName string = 'endpointleases'

@description('Replication. Geo-redundant by default so dead-lettered events survive a regional outage.')
@allowed([
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_GRS'

// Storage Blob Data Owner: the Functions host needs it for identity-based AzureWebJobsStorage
// (it manages its own containers: leases for the timer trigger, host keys, the package).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: default-deny needs VNet integration or fixed egress IPs, which Flex Consumption without a VNet does not have; access is Entra-only (shared keys disabled).
  // checkov:skip=CKV_AZURE_59: same reason: the public endpoint is reachable, but only Entra ID principals with a data role can use it.
  // checkov:skip=CKV_AZURE_206: replication is the skuName parameter (default Standard_GRS, LRS not allowed); checkov does not resolve parameter values.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource ledgerTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: ledgerTableName
}

// Storage Table Data Contributor on the ledger table only (not the account): the app reads
// and writes its vendor registrations and nothing else in table storage.
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'

resource appLedgerWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(ledgerTable.id, appPrincipalId, storageTableDataContributor)
  scope: ledgerTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Vendor registration ledger (deregistration after ARM has forgotten the endpoint).'
  }
}

// One writer per endpoint across instances: a lease row per endpoint being converged
// (src/arm/lease.rs). Same role, scoped to this table only.
resource leaseTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: leaseTableName
}

resource appLeaseWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(leaseTable.id, appPrincipalId, storageTableDataContributor)
  scope: leaseTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Endpoint leases (one instance converges an endpoint at a time).'
  }
}

resource appBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, appPrincipalId, storageBlobDataOwner)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Functions host storage and deployment package, identity-based.'
  }
}

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output tableEndpoint string = account.properties.primaryEndpoints.table
output ledgerTableName string = ledgerTable.name
output leaseTableName string = leaseTable.name
output deploymentContainerName string = deploymentContainer.name
output deadLetterContainerName string = deadLetterContainer.name
