// The one identity the function app uses for everything: ARM (DNS, approvals, tags), Service Bus,
// Event Grid publishing, Key Vault references and host storage. A user-assigned identity (not the
// app's system-assigned one) so role assignments can be created before the app exists, survive an
// app re-creation, and so the binary can name it by client id (azure_identity rejects
// user-assigned resource ids on App Service; see shared/reference/arm.md section 8.1).

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region.')
param location string

@description('Tags applied to every resource.')
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
