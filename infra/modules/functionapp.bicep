// The function app that runs the Rust custom handler (`autopilot serve`).
//
// Default: Linux Flex Consumption (runtime `custom`), with one always-ready instance for the Event
// Grid function. Why always-ready: Event Grid waits 30 s for an answer, and a cold start from zero
// (platform allocation + host start + handler start) can take tens of seconds; a timed-out
// delivery is retried, but every retry is delayed and a slow endpoint gets "delayed delivery" for
// new events too. One warm instance keeps the first answer fast; more instances are added by
// per-function scaling as load grows.
//
// Alternative (hostingPlan = ElasticPremium): a Linux EP plan, which always has at least one warm
// instance, for tenants where Flex Consumption is not available in the region.

@description('Function app name (globally unique, becomes <name>.azurewebsites.net).')
param name string

@description('Azure region.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Hosting plan.')
@allowed([
  'FlexConsumption'
  'ElasticPremium'
])
param hostingPlan string

@description('Always-ready instances (Flex) or minimum instances (Elastic Premium).')
@minValue(0)
@maxValue(20)
param alwaysReadyInstances int

@description('Flex per-function scale group that gets the always-ready instances.')
param alwaysReadyGroup string

@description('Flex: maximum instances the app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int

@description('Flex: memory per instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

@description('Elastic Premium SKU.')
@allowed([
  'EP1'
  'EP2'
  'EP3'
])
param elasticPremiumSku string

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Blob endpoint of the host storage account (https://<account>.blob.core.windows.net/).')
param storageBlobEndpoint string

@description('Container the Flex deployment package is read from.')
param deploymentContainerName string

@description('Every app setting, as one object (built in main.bicep, the single source of the list).')
param appSettings object

var isFlex = hostingPlan == 'FlexConsumption'

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy is not offered for Flex Consumption plans in every region; enable it on the EP plan where needed.
  name: 'plan-${name}'
  location: location
  tags: tags
  kind: isFlex ? 'functionapp' : 'elastic'
  sku: isFlex ? {
    name: 'FC1'
    tier: 'FlexConsumption'
  } : {
    name: elasticPremiumSku
    tier: 'ElasticPremium'
  }
  properties: {
    reserved: true
    maximumElasticWorkerCount: isFlex ? null : 20
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: client certificates would stop Event Grid (AzureFunction destination) from reaching the app; the only HTTP function (Status) uses a function key.
  // checkov:skip=CKV_AZURE_222: public network access is needed for Event Grid delivery without a VNet; every inbound call is authenticated by the Functions host (system key for Event Grid, function key for Status).
  // checkov:skip=CKV_AZURE_16: the app has a user-assigned managed identity; the check only recognises a system-assigned one.
  // checkov:skip=CKV_AZURE_212: instances are elastic by design (Flex per-function scaling from alwaysReadyInstances up to maximumInstanceCount); a fixed floor of 2 doubles the idle cost for no gain, since Event Grid and Service Bus redeliver on failure.
  // checkov:skip=CKV_AZURE_213: App Service health check probes a route with no key; the only HTTP route (Status) requires a function key, and the Functions host already restarts a handler that stops answering.
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'autopilot'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      minimumElasticInstanceCount: isFlex ? null : max(alwaysReadyInstances, 1)
      appSettings: [for setting in items(appSettings): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: isFlex ? {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: alwaysReadyInstances > 0 ? [
          {
            name: alwaysReadyGroup
            instanceCount: alwaysReadyInstances
          }
        ] : []
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    } : null
  }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName
