// Vendor API credentials (ClickHouse, Elastic, Zilliz). The app reads them as ordinary app
// settings that are Key Vault references, resolved by the platform with the user-assigned identity
// (keyVaultReferenceIdentity), so the binary never talks to Key Vault and no secret is in Bicep,
// in the deployment history, or in app settings as plain text.
//
// RBAC mode (no access policies) so access is granted and audited like every other permission;
// purge protection so a deleted vault or secret cannot be destroyed before the retention ends.
// The secrets themselves are created by an operator (`az keyvault secret set`), never here.

@description('Vault name (3-24 characters, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Principal id of the app identity (reads secret values only).')
param appPrincipalId string

@description('Soft-delete retention in days.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: the vault is read by the App Service platform for Key Vault references from a Flex app without fixed egress IPs; a default-deny firewall would need VNet integration (see infra/README.md, Network). Reads need an RBAC data role.
  // checkov:skip=CKV_AZURE_189: same reason as CKV_AZURE_109 (public network access).
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

// Vault scope rather than per secret: the secrets do not exist at provisioning time (an operator
// adds them), and this vault holds nothing but the app's own vendor credentials.
resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Resolve Key Vault references for vendor credentials.'
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
