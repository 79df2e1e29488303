// One Event Grid system topic for one Azure subscription in scope.
//
// Subscription-level resource events (Microsoft.Resources.Subscriptions) are the only source that
// sees every private endpoint create and delete in a subscription, whichever resource group or
// tool made it. A system topic of that type must live in a resource group of the subscription it
// watches, so this module is deployed at subscription scope once per subscription in scope and
// creates that resource group too.

targetScope = 'subscription'

@description('Resource group that holds the system topic in this subscription.')
param resourceGroupName string

@description('Region of that resource group (the topic itself is global).')
param location string

@description('Topic name.')
param topicName string

@description('Tags applied to every resource.')
param tags object

resource group 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: resourceGroupName
  location: location
  tags: tags
}

module topic 'eventgrid-system-topic-resource.bicep' = {
  name: 'system-topic'
  scope: group
  params: {
    name: topicName
    subscriptionId: subscription().subscriptionId
    tags: tags
  }
}

output resourceGroupName string = group.name
output topicName string = topic.outputs.name
output principalId string = topic.outputs.principalId
