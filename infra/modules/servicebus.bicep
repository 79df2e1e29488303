// The durable work queue between "an event arrived" and "the endpoint is converged".
//
// Event Grid waits 30 s for an answer; anything that cannot finish inside the reconcile deadline
// is queued here and retried by the WorkQueue function. Queue settings and why:
// - requiresDuplicateDetection: the handler may enqueue the same work twice (Event Grid redelivers
//   whole batches, ARM emits duplicate write events); a MessageId per endpoint+attempt dedups it.
// - lockDuration PT5M: the longest Service Bus allows, equal to host.json functionTimeout (5 min),
//   so a message is never handed to a second instance while the first may still be working on it.
//   The host also renews the lock up to maxAutoLockRenewalDuration (5 min by default).
// - maxDeliveryCount 10: the host abandons on failure with no backoff (the handler schedules its
//   own delayed retries), so ten immediate redeliveries mean a poison message: dead-letter it.
// - deadLetteringOnMessageExpiration: expired work is kept for `autopilot dlq` rather than lost.
// Local (SAS) auth is disabled: the app connects with its managed identity only.
//
// Everything the queue code (src/queue/servicebus/mod.rs) reaches in Azure is created and granted
// here, and tests/queue_servicebus.rs (`infra_provides_what_the_service_bus_code_needs`) reads
// this file to keep it so:
// - the work queue: Data Sender (enqueue, scheduled retries, replays) and Data Receiver (the
//   WorkQueue trigger; `autopilot dlq` reading the broker's own $DeadLetterQueue), on the queue;
// - Reader on the queue: its message counts come from ARM (properties.countDetails), because the
//   data-plane entity description needs the Manage claim, i.e. Data Owner, which could also delete
//   or reconfigure the queue. Reader is read-only control plane and opens no message;
// - the dead-letter table: a custom handler cannot dead-letter (the host settles; REST has no
//   dead-letter operation) and REST has no non-locking peek, so parked work lives in a table,
//   where listing and counting are plain reads. Storage Table Data Contributor on that table only.
//   No `<queue>-deadletter` entity exists or is needed.

@description('Namespace name (globally unique).')
param name string

@description('Azure region.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Work queue name.')
param queueName string

@description('Principal id of the app identity (sends and receives on the queue only).')
param appPrincipalId string

@description('Standard is the cheapest tier with duplicate detection; Premium adds isolation and zone redundancy.')
@allowed([
  'Standard'
  'Premium'
])
param skuName string = 'Standard'

@description('Allow SAS (shared access key) authentication. Off: only Entra ID principals can connect.')
param localAuthEnabled bool = false

@description('How long the queue remembers MessageIds for duplicate detection (ISO 8601).')
param duplicateDetectionWindow string = 'PT10M'

@description('Time to live of a queued message before it is dead-lettered (ISO 8601).')
param messageTimeToLive string = 'P14D'

@description('Storage account (the function app\'s) that holds the dead-letter table.')
param storageAccountName string

@description('Table holding parked (dead-lettered) work items.')
param deadLetterTableName string = 'workdeadletters'

var serviceBusDataSender = '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
var serviceBusDataReceiver = '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
var reader = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
    tier: skuName
  }
  properties: {
    disableLocalAuth: !localAuthEnabled
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = {
  parent: namespace
  name: queueName
  properties: {
    lockDuration: 'PT5M'
    maxDeliveryCount: 10
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: messageTimeToLive
    requiresSession: false
    enablePartitioning: false
  }
}

resource sender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(queue.id, appPrincipalId, serviceBusDataSender)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSender)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Enqueue (and schedule) reconcile work.'
  }
}

resource receiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(queue.id, appPrincipalId, serviceBusDataReceiver)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataReceiver)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'WorkQueue trigger receives, completes and dead-letters work.'
  }
}

resource queueReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(queue.id, appPrincipalId, reader)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', reader)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Queue depth and dead-letter count from ARM countDetails (no Manage claim needed).'
  }
}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource deadLetterTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: deadLetterTableName
}

resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterTable.id, appPrincipalId, storageTableDataContributor)
  scope: deadLetterTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Parked work items: written by the WorkQueue function, listed and replayed by autopilot dlq.'
  }
}

output id string = namespace.id
output name string = namespace.name
output fullyQualifiedNamespace string = '${namespace.name}.servicebus.windows.net'
output queueName string = queue.name
output queueId string = queue.id
output deadLetterTableName string = deadLetterTable.name
