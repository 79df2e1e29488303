// The system topic resource itself (see eventgrid-system-topic.bicep for why it is per
// subscription). It has a system-assigned identity so it can write dead letters to the app's
// storage account without a key (deadLetterWithResourceIdentity).

@description('Topic name.')
param name string

@description('Subscription whose resource events this topic carries.')
param subscriptionId string

@description('Tags applied to every resource.')
param tags object

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  location: 'global'
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: '/subscriptions/${subscriptionId}'
    topicType: 'Microsoft.Resources.Subscriptions'
  }
}

output name string = topic.name
output principalId string = topic.identity.principalId
