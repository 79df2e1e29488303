// The event subscription from one subscription's system topic to the PrivateEndpointEvents
// function.
//
// - Destination AzureFunction (not a webhook URL): Event Grid validates the endpoint itself, needs
//   no function key in the deployment, and adapts its delivery rate to the function.
//   It requires the function to exist, so this module is deployed only when
//   wireEventSubscriptions is true (the second `azd provision`, after the code is deployed).
// - Filter: only successful writes and deletes whose data.operationName is a private endpoint
//   write or delete. Our own tag PATCHes and DNS writes therefore never re-trigger the app, and
//   the app is not invoked (or billed) for the thousands of other ARM writes in a subscription.
//   Action events are not included: no private endpoint operation arrives as an action, and the
//   operationName filter would drop them anyway.
// - Retry policy: Event Grid's own retries (10 s, 30 s, 1 min, ... hourly) up to the limits below.
// - Dead-letter: without it Event Grid silently drops an event after the last attempt; with it
//   the event lands in blob storage, written with the topic's own identity, for replay.

@description('Name of the existing system topic in this resource group.')
param systemTopicName string

@description('Resource id of the function: <function app id>/functions/PrivateEndpointEvents.')
param functionResourceId string

@description('Resource id of the storage account holding the dead-letter container.')
param deadLetterStorageAccountId string

@description('Dead-letter container name.')
param deadLetterContainerName string

@description('Delivery attempts before the event is dead-lettered (1-30).')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int

@description('Minutes an event is retried before it is dead-lettered (1-1440).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int

var includedEventTypes = [
  'Microsoft.Resources.ResourceWriteSuccess'
  'Microsoft.Resources.ResourceDeleteSuccess'
]

var privateEndpointOperations = [
  'Microsoft.Network/privateEndpoints/write'
  'Microsoft.Network/privateEndpoints/delete'
]

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource toFunction 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'private-endpoints-to-autopilot'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: functionResourceId
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: includedEventTypes
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.operationName'
          values: privateEndpointOperations
        }
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output id string = toFunction.id
