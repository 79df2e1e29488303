// Private Link Autopilot: everything the function app needs, deployed with `azd up`
// (or `az deployment sub create`). See infra/README.md for the permission table and the
// two-phase rollout (the Event Grid subscriptions need the deployed function).
//
// Subscription scope because the app's footprint is spread out by nature: its own resource group
// here, an Event Grid system topic and read/tag roles in every subscription in scope, record-level
// roles on the hub's private DNS zones, and approval roles on the owned resources.

targetScope = 'subscription'

// ---------------------------------------------------------------------------------------------
// Parameters

@description('azd environment name; prefixes resource names and custom role names.')
@minLength(1)
@maxLength(20)
param environmentName string

@description('Region of the app and its resources.')
param location string

@description('Resource group for the app (created). Empty: rg-<environmentName>.')
param resourceGroupName string = ''

@description('Hosting plan: Flex Consumption (default) or Elastic Premium.')
@allowed([
  'FlexConsumption'
  'ElasticPremium'
])
param hostingPlan string = 'FlexConsumption'

@description('Always-ready (Flex) or minimum (Elastic Premium) instances. 1: Event Grid answers stay under 30 s.')
@minValue(0)
@maxValue(20)
param alwaysReadyInstances int = 1

@description('Flex per-function scale group that gets the always-ready instances.')
param alwaysReadyGroup string = 'function:PrivateEndpointEvents'

@description('Flex: maximum instances.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Flex: memory per instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Elastic Premium SKU (hostingPlan = ElasticPremium only).')
@allowed([
  'EP1'
  'EP2'
  'EP3'
])
param elasticPremiumSku string = 'EP1'

@description('Subscription id holding the private DNS zones (the hub).')
param dnsZoneSubscriptionId string

@description('Resource group holding the private DNS zones.')
param dnsZoneResourceGroup string

@description('Private DNS zone names the app may write A records in (the zones must exist).')
param dnsZoneNames array

@description('Zone management (dns.zone_management): off = zones and links are the network team\'s; create = the app creates a missing zone in the hub resource group, links it to the endpoint\'s VNet and removes it when it is its own and empty. create assigns the zone manager role at the hub resource group and the zone linker role in each subscription in scope and the hub subscription.')
@allowed([
  'off'
  'create'
])
param dnsZoneManagement string = 'off'

@description('Subscription ids whose private endpoints the app manages (one system topic each).')
param subscriptionsInScope array = [
  subscription().subscriptionId
]

@description('Resource group created in each subscription in scope for its system topic.')
param eventsResourceGroupName string = 'rg-autopilot-events'

@description('Resource ids of owned resources (Kusto clusters, Private Link services, Azure Monitor workspaces) whose connections the app approves.')
param ownedResourceIds array = []

@description('Approval policy: requester subscriptions whose connections to owned resources are approved (approvals fail closed without a policy). Default: the subscriptions in scope.')
param approvalAllowedSubscriptions array = subscriptionsInScope

@description('Target-side approvals: subscriptions whose owned resources (of approvalTargetTypes) are scanned with Resource Graph for Pending connections, including managed and other tenants\' endpoints. The target approver role is assigned in each. Requester rules ([[approvals.requesters]]) come from the configuration file.')
param approvalTargetSubscriptions array = []

@description('Target-side approvals: the owned resource types scanned (the target approver role covers these).')
param approvalTargetTypes array = [
  'Microsoft.Storage/storageAccounts'
  'Microsoft.Sql/servers'
  'Microsoft.KeyVault/vaults'
  'Microsoft.DocumentDB/databaseAccounts'
  'Microsoft.Kusto/Clusters'
]

@description('Register endpoints with ClickHouse Cloud (needs secrets clickhouse-key-id, clickhouse-key-secret).')
param enableClickHouse bool = false

@description('ClickHouse Cloud organization id (enableClickHouse).')
param clickHouseOrganizationId string = ''

@description('ClickHouse Cloud services whose privateEndpointIds receive endpoints by default (enableClickHouse).')
param clickHouseServiceIds array = []

@description('Register endpoints with Elastic Cloud (needs secret elastic-api-key).')
param enableElastic bool = false

@description('Elastic Cloud deployments the traffic filter ruleset is associated with by default (enableElastic).')
param elasticDeploymentIds array = []

@description('Register endpoints with Zilliz Cloud (needs secret zilliz-api-key).')
param enableZilliz bool = false

@description('Zilliz Cloud project id (enableZilliz).')
param zillizProjectId string = ''

@description('Create the Event Grid subscriptions. Needs the deployed function: false on the first provision, true after `azd deploy`.')
param wireEventSubscriptions bool = false

@description('Let the sweep create a missing Event Grid system topic or event subscription in a subscription in scope, so a new subscription is covered without a redeploy. Assigns the event subscription writer role in each subscription in scope.')
param createMissingEventSubscriptions bool = false

@description('Service Bus work queue name.')
param workQueueName string = 'autopilot-work'

@description('Service Bus tier (Standard or above: duplicate detection).')
@allowed([
  'Standard'
  'Premium'
])
param serviceBusSku string = 'Standard'

@description('NCRONTAB (6 fields) of the periodic sweep.')
param sweepSchedule string = '0 */15 * * * *'

@description('NCRONTAB (6 fields) of the CatchUp timer (target-side approvals and the resourcechanges catch-up).')
param catchUpSchedule string = '0 */5 * * * *'

@description('Event Grid delivery attempts before dead-lettering.')
@minValue(1)
@maxValue(30)
param eventMaxDeliveryAttempts int = 30

@description('Event Grid retry window in minutes before dead-lettering.')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

@description('Tags applied to every resource.')
param tags object = {}

// ---------------------------------------------------------------------------------------------
// Names

var token = toLower(uniqueString(subscription().id, environmentName, location))
var appName = 'func-${environmentName}-${token}'
var allTags = union(tags, {
  'azd-env-name': environmentName
  application: 'private-link-autopilot'
})
var groupName = empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
var deploymentContainerName = 'app-package'
var systemTopicName = 'evgst-autopilot-${environmentName}'
// The app's id, known before the app exists (its settings name its own function).
var functionAppId = '${subscription().id}/resourceGroups/${groupName}/providers/Microsoft.Web/sites/${appName}'
var deadLetterContainerName = 'eventgrid-deadletter'

// Owned resources, parsed from their ids: /subscriptions/{0}/resourceGroups/{1}/providers/{2}/{3}/{4}
var ownedResources = [for id in ownedResourceIds: {
  subscriptionId: split(id, '/')[2]
  resourceGroup: split(id, '/')[4]
  type: toLower(format('{0}/{1}', split(id, '/')[6], split(id, '/')[7]))
  name: last(split(id, '/'))
}]
var ownedKustoClusters = filter(ownedResources, r => r.type == 'microsoft.kusto/clusters')
// union() of an array with itself removes duplicates (assignableScopes must be unique).
var approverScopesAll = [for r in ownedResources: toLower(format('/subscriptions/{0}/resourceGroups/{1}', r.subscriptionId, r.resourceGroup))]
var approverScopes = union(approverScopesAll, approverScopesAll)
var kustoSubscriptionsAll = [for r in ownedKustoClusters: toLower(r.subscriptionId)]
var kustoSubscriptions = union(kustoSubscriptionsAll, kustoSubscriptionsAll)
var kustoOperationScopes = [for s in kustoSubscriptions: '/subscriptions/${s}']
var endpointScopes = [for s in subscriptionsInScope: '/subscriptions/${s}']
var dnsZoneResourceGroupId = format('/subscriptions/{0}/resourceGroups/{1}', dnsZoneSubscriptionId, dnsZoneResourceGroup)

// ---------------------------------------------------------------------------------------------
// The app and its own resources

resource group 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: groupName
  location: location
  tags: allTags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: group
  params: {
    name: 'id-${environmentName}-${token}'
    location: location
    tags: allTags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: group
  params: {
    name: '${environmentName}-${token}'
    location: location
    tags: allTags
    publisherPrincipalId: identity.outputs.principalId
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: group
  params: {
    name: 'st${take(token, 22)}'
    location: location
    tags: allTags
    appPrincipalId: identity.outputs.principalId
    deploymentContainerName: deploymentContainerName
    deadLetterContainerName: deadLetterContainerName
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  name: 'servicebus'
  scope: group
  params: {
    name: 'sb-${environmentName}-${token}'
    location: location
    tags: allTags
    queueName: workQueueName
    appPrincipalId: identity.outputs.principalId
    skuName: serviceBusSku
    storageAccountName: storage.outputs.name
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: group
  params: {
    name: 'kv${take(token, 22)}'
    location: location
    tags: allTags
    appPrincipalId: identity.outputs.principalId
  }
}

module auditTopic 'modules/audit-topic.bicep' = {
  name: 'audit-topic'
  scope: group
  params: {
    name: 'evgt-${environmentName}-${token}'
    location: location
    tags: allTags
    appPrincipalId: identity.outputs.principalId
  }
}

// ---------------------------------------------------------------------------------------------
// App settings: the single list (mirrored in infra/README.md). The binary reads
// AUTOPILOT__SECTION__KEY; the Functions host reads the rest.

var vaultName = keyVault.outputs.name
var baseSettings = {
  // Host storage, identity-based (no connection string, no key).
  AzureWebJobsStorage__accountName: storage.outputs.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.outputs.clientId
  // Telemetry with Entra ID (the component has local auth disabled).
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.outputs.clientId};Authorization=AAD'
  // serviceBusTrigger connection "ServiceBusConnection", identity-based.
  ServiceBusConnection__fullyQualifiedNamespace: serviceBus.outputs.fullyQualifiedNamespace
  ServiceBusConnection__credential: 'managedidentity'
  ServiceBusConnection__clientId: identity.outputs.clientId
  // Binding expressions in handlers/WorkQueue and handlers/Sweep.
  AUTOPILOT_WORK_QUEUE: serviceBus.outputs.queueName
  AUTOPILOT_SWEEP_SCHEDULE: sweepSchedule
  AUTOPILOT_CATCHUP_SCHEDULE: catchUpSchedule
  // The binary.
  AUTOPILOT__ARM__MANAGED_IDENTITY_CLIENT_ID: identity.outputs.clientId
  AUTOPILOT__DNS__DEFAULT_SUBSCRIPTION: dnsZoneSubscriptionId
  AUTOPILOT__DNS__DEFAULT_RESOURCE_GROUP: dnsZoneResourceGroup
  // Features switched on by the same parameters that grant their permissions (review F4/F5;
  // tests/rbac.rs checks the pairing). Arrays are JSON, which the binary reads as TOML arrays.
  // The zones the A-record role is assigned at, iterated by name: the role is per zone, so
  // listing the hub resource group would be refused.
  AUTOPILOT__DNS__ZONES: '[${join(map(dnsZoneNames, zone => '{ name = "${zone}" }'), ', ')}]'
  // The zone manager and zone linker roles are assigned only with 'create'.
  AUTOPILOT__DNS__ZONE_MANAGEMENT: dnsZoneManagement
  // Endpoint reader + tagger are assigned in these subscriptions: the sweep covers them.
  AUTOPILOT__SWEEP__SUBSCRIPTIONS: string(subscriptionsInScope)
  // The connection approver is assigned at these resources, with a policy (fail closed).
  AUTOPILOT__APPROVALS__OWNED_RESOURCES: string(ownedResourceIds)
  AUTOPILOT__APPROVALS__ALLOWED_SUBSCRIPTIONS: string(approvalAllowedSubscriptions)
  // The target approver is assigned in these subscriptions: the target-side scan covers them.
  AUTOPILOT__APPROVALS__TARGET_SCOPES: string(approvalTargetSubscriptions)
  AUTOPILOT__APPROVALS__TARGET_TYPES: string(approvalTargetTypes)
  AUTOPILOT__QUEUE__KIND: 'servicebus'
  AUTOPILOT__QUEUE__NAMESPACE: serviceBus.outputs.fullyQualifiedNamespace
  AUTOPILOT__QUEUE__NAME: serviceBus.outputs.queueName
  AUTOPILOT__QUEUE__DEAD_LETTER_TABLE_ENDPOINT: storage.outputs.tableEndpoint
  AUTOPILOT__QUEUE__DEAD_LETTER_TABLE: serviceBus.outputs.deadLetterTableName
  AUTOPILOT__QUEUE__ARM_QUEUE_ID: serviceBus.outputs.queueId
  AUTOPILOT__AUDIT__TOPIC_ENDPOINT: auditTopic.outputs.endpoint
  AUTOPILOT__LEDGER__KIND: 'table'
  AUTOPILOT__LEDGER__TABLE_ENDPOINT: storage.outputs.tableEndpoint
  AUTOPILOT__LEDGER__TABLE: storage.outputs.ledgerTableName
  AUTOPILOT__LEASES__KIND: 'table'
  AUTOPILOT__LEASES__TABLE: storage.outputs.leaseTableName
  AUTOPILOT__LOG__FORMAT: 'json'
  // Coverage: where each subscription's events must go (the sweep reports a subscription
  // without its topic or event subscription, `sweep.coverage_gap`), and what it creates with
  // createMissingEventSubscriptions (the writer role below is assigned only then).
  AUTOPILOT__COVERAGE__FUNCTION_ID: '${functionAppId}/functions/PrivateEndpointEvents'
  AUTOPILOT__COVERAGE__CREATE_MISSING: createMissingEventSubscriptions ? 'true' : 'false'
  AUTOPILOT__COVERAGE__RESOURCE_GROUP: eventsResourceGroupName
  AUTOPILOT__COVERAGE__TOPIC_NAME: systemTopicName
  AUTOPILOT__COVERAGE__DEAD_LETTER_STORAGE_ACCOUNT_ID: storage.outputs.id
  AUTOPILOT__COVERAGE__DEAD_LETTER_CONTAINER: storage.outputs.deadLetterContainerName
  AUTOPILOT__COVERAGE__MAX_DELIVERY_ATTEMPTS: string(eventMaxDeliveryAttempts)
  AUTOPILOT__COVERAGE__EVENT_TTL_MINUTES: string(eventTimeToLiveInMinutes)
  // `autopilot doctor` (run with these settings) checks the vault and the audit topic.
  AUTOPILOT__DOCTOR__KEY_VAULT_ID: keyVault.outputs.id
  AUTOPILOT__DOCTOR__AUDIT_TOPIC_ID: auditTopic.outputs.id
}
// Flex Consumption sets the runtime in functionAppConfig and rejects FUNCTIONS_WORKER_RUNTIME /
// FUNCTIONS_EXTENSION_VERSION as app settings; Elastic Premium needs them.
var elasticPremiumSettings = hostingPlan == 'ElasticPremium' ? {
  FUNCTIONS_WORKER_RUNTIME: 'custom'
  FUNCTIONS_EXTENSION_VERSION: '~4'
  WEBSITE_RUN_FROM_PACKAGE: '${storage.outputs.blobEndpoint}${deploymentContainerName}/autopilot-functionapp.zip'
  WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID: identity.outputs.id
} : {}
// Vendor credentials as Key Vault references, only for enabled vendors.
// Each vendor's switch and ids come with its secrets: a vendor with a key but switched off (or on
// without a key) is a deployment mistake, so one parameter decides both.
var clickHouseSettings = enableClickHouse ? {
  CLICKHOUSE_KEY_ID: '@Microsoft.KeyVault(VaultName=${vaultName};SecretName=clickhouse-key-id)'
  CLICKHOUSE_KEY_SECRET: '@Microsoft.KeyVault(VaultName=${vaultName};SecretName=clickhouse-key-secret)'
  AUTOPILOT__VENDORS__CLICKHOUSE__ENABLED: 'true'
  AUTOPILOT__VENDORS__CLICKHOUSE__ORGANIZATION_ID: clickHouseOrganizationId
  AUTOPILOT__VENDORS__CLICKHOUSE__SERVICE_IDS: string(clickHouseServiceIds)
} : {}
var elasticSettings = enableElastic ? {
  ELASTIC_API_KEY: '@Microsoft.KeyVault(VaultName=${vaultName};SecretName=elastic-api-key)'
  AUTOPILOT__VENDORS__ELASTIC__ENABLED: 'true'
  AUTOPILOT__VENDORS__ELASTIC__DEPLOYMENT_IDS: string(elasticDeploymentIds)
} : {}
var zillizSettings = enableZilliz ? {
  ZILLIZ_API_KEY: '@Microsoft.KeyVault(VaultName=${vaultName};SecretName=zilliz-api-key)'
  AUTOPILOT__VENDORS__ZILLIZ__ENABLED: 'true'
  AUTOPILOT__VENDORS__ZILLIZ__PROJECT_ID: zillizProjectId
} : {}
var appSettings = union(baseSettings, elasticPremiumSettings, clickHouseSettings, elasticSettings, zillizSettings)

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: group
  params: {
    name: appName
    location: location
    tags: allTags
    hostingPlan: hostingPlan
    alwaysReadyInstances: alwaysReadyInstances
    alwaysReadyGroup: alwaysReadyGroup
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    elasticPremiumSku: elasticPremiumSku
    identityId: identity.outputs.id
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: deploymentContainerName
    appSettings: appSettings
  }
}

// ---------------------------------------------------------------------------------------------
// Least-privilege roles for the app identity outside its own resource group

// Each custom role lists only the actions the binary calls. Where a built-in role exists it grants
// far more (see infra/README.md, "Permissions", for the comparison and sources).

// (a) + (e): read the endpoint, its NIC (the IPs live on the NIC) and its DNS zone group; Resource
// Graph for the periodic sweep (it returns only what the caller may read). Built-in Reader would
// expose every resource in the subscription.
var endpointReaderActions = [
  'Microsoft.Network/privateEndpoints/read'
  'Microsoft.Network/privateEndpoints/privateDnsZoneGroups/read'
  'Microsoft.Network/networkInterfaces/read'
  'Microsoft.ResourceGraph/resources/read'
  'Microsoft.Resources/subscriptions/read'
  // Coverage: the Event Grid system topic of the subscription and its event subscription to
  // the function (read by the sweep with coverage.function_id, and by `autopilot doctor`).
  'Microsoft.EventGrid/systemTopics/read'
  'Microsoft.EventGrid/systemTopics/eventSubscriptions/read'
]
// (c): mark endpoints through the Tags API (PATCH <pe>/providers/Microsoft.Resources/tags/default):
// a PE has no PATCH, and a PE PUT would need privateEndpoints/write and re-emit a write event.
// Built-in Tag Contributor also grants tags/delete and resource-group reads.
var endpointTaggerActions = [
  'Microsoft.Resources/tags/read'
  'Microsoft.Resources/tags/write'
]
// (b): A records only. Built-in Private DNS Zone Contributor grants privateDnsZones/* (zone delete,
// every record type, virtual network links), virtualNetworks/join/action, deployments/*, Support/*
// and alertRules/* (fixture role-PrivateDnsZoneContributor.json).
var dnsRecordWriterActions = [
  'Microsoft.Network/privateDnsZones/read'
  'Microsoft.Network/privateDnsZones/A/read'
  'Microsoft.Network/privateDnsZones/A/write'
  'Microsoft.Network/privateDnsZones/A/delete'
  // `autopilot doctor`: is the zone linked where expected (read only; links are not changed).
  'Microsoft.Network/privateDnsZones/virtualNetworkLinks/read'
]
// (d): approve connections on owned resources: list, approve and remove connections, nothing
// else (tests/rbac.rs removes each action in turn and shows the product needs it). Assigned at each
// owned resource, so the actions for the other kind grant nothing there. The alternative,
// Contributor on the resource, could reconfigure or delete it. Azure Monitor workspaces have no
// connection API in any published version: they are approved in the portal, and need nothing here.
var connectionApproverActions = [
  'Microsoft.Kusto/Clusters/PrivateEndpointConnections/read'
  'Microsoft.Kusto/Clusters/PrivateEndpointConnections/write'
  'Microsoft.Kusto/Clusters/PrivateEndpointConnections/delete'
  'Microsoft.Network/privateLinkServices/privateEndpointConnections/read'
  'Microsoft.Network/privateLinkServices/privateEndpointConnections/write'
  'Microsoft.Network/privateLinkServices/privateEndpointConnections/delete'
]
// (e): target-side approvals: find owned resources of the scanned types with Resource Graph
// (which lists only resources the caller may read, hence each type's read), read and approve
// their connections. Assigned per target subscription. Storage, SQL, Key Vault and Cosmos DB
// approve with a synchronous PUT; Kusto's is long-running (its operation results, read here too).
// No provider registration read: like the other roles, api-versions fall back to the spec-derived
// table (arm/providers.rs).
var targetApproverActions = [
  'Microsoft.ResourceGraph/resources/read'
  'Microsoft.Storage/storageAccounts/read'
  'Microsoft.Storage/storageAccounts/privateEndpointConnections/read'
  'Microsoft.Storage/storageAccounts/privateEndpointConnections/write'
  'Microsoft.Sql/servers/read'
  'Microsoft.Sql/servers/privateEndpointConnections/read'
  'Microsoft.Sql/servers/privateEndpointConnections/write'
  'Microsoft.KeyVault/vaults/read'
  'Microsoft.KeyVault/vaults/privateEndpointConnections/read'
  'Microsoft.KeyVault/vaults/privateEndpointConnections/write'
  'Microsoft.DocumentDB/databaseAccounts/read'
  'Microsoft.DocumentDB/databaseAccounts/privateEndpointConnections/read'
  'Microsoft.DocumentDB/databaseAccounts/privateEndpointConnections/write'
  'Microsoft.Kusto/Clusters/read'
  'Microsoft.Kusto/Clusters/PrivateEndpointConnections/read'
  'Microsoft.Kusto/Clusters/PrivateEndpointConnections/write'
  'Microsoft.Kusto/locations/operationresults/read'
]
// Kusto approval is a long-running operation whose Location is
// /subscriptions/<id>/providers/Microsoft.Kusto/locations/<region>/operationResults/<op>: outside
// the cluster, so polling it needs this one action at the cluster's subscription.
var kustoOperationReaderActions = [
  'Microsoft.Kusto/locations/operationresults/read'
]

// Coverage creation (createMissingEventSubscriptions): create a subscription's system topic
// and the event subscription from it to the function. Built-in EventGrid Contributor would
// also allow deleting and reconfiguring every Event Grid resource in the subscription.
// Both writes are long-running: their status is polled under
// /subscriptions/<id>/providers/Microsoft.EventGrid/locations/global/operationsStatus.
var eventSubscriptionWriterActions = [
  'Microsoft.EventGrid/systemTopics/write'
  'Microsoft.EventGrid/systemTopics/eventSubscriptions/write'
  'Microsoft.EventGrid/locations/operationsStatus/read'
]
// The subscriptions the writer role is assigned in: none unless creation is switched on.
var eventSubscriptionWriterSubscriptions = createMissingEventSubscriptions ? subscriptionsInScope : []

// Zone management (dnsZoneManagement = 'create'), at the hub resource group: create a missing
// zone (PUT If-None-Match: *, long-running: its status is polled under the resource group's
// privateDnsOperationStatuses), link it (links are long-running too), write A records in it (the
// A-record writer is assigned per named zone, and a created zone has no name in dnsZoneNames),
// and remove it when it is ours and empty (its record sets are listed first, then our links and
// the zone are deleted). Built-in Private DNS Zone Contributor would add every record type,
// deployments/*, Support/* and alertRules/*.
// (Reading the zones is the linker's privateDnsZones/read, which covers the hub subscription.)
var dnsZoneManagerActions = [
  'Microsoft.Network/privateDnsZones/write'
  'Microsoft.Network/privateDnsZones/delete'
  'Microsoft.Network/privateDnsZones/A/read'
  'Microsoft.Network/privateDnsZones/A/write'
  'Microsoft.Network/privateDnsZones/A/delete'
  'Microsoft.Network/privateDnsZones/ALL/read'
  'Microsoft.Network/privateDnsZones/virtualNetworkLinks/read'
  'Microsoft.Network/privateDnsZones/virtualNetworkLinks/write'
  'Microsoft.Network/privateDnsZones/virtualNetworkLinks/delete'
  'Microsoft.Network/privateDnsOperationStatuses/read'
]
// ... and in each subscription in scope plus the hub's: link a zone to a VNet there (ARM checks
// join/action on the VNet: endpoint VNets live in the subscriptions in scope, hub VNets for
// dns.link_to in the hub subscription), and find a same-named zone there before creating one
// (Resource Graph lists only zones the caller may read; a zone it cannot see would be shadowed).
// Built-in Network Contributor would be the alternative for join/action.
var dnsZoneLinkerActions = [
  'Microsoft.Network/virtualNetworks/join/action'
  'Microsoft.Network/privateDnsZones/read'
  'Microsoft.ResourceGraph/resources/read'
]
var dnsZoneManagerResourceGroups = dnsZoneManagement == 'create' ? [dnsZoneResourceGroup] : []
var dnsZoneLinkerSubscriptions = dnsZoneManagement == 'create' ? union(subscriptionsInScope, [dnsZoneSubscriptionId]) : []
var dnsZoneLinkerScopes = [for s in dnsZoneLinkerSubscriptions: '/subscriptions/${s}']

var endpointReaderName = guid(subscription().id, environmentName, 'autopilot-endpoint-reader')
var endpointTaggerName = guid(subscription().id, environmentName, 'autopilot-endpoint-tagger')
var dnsRecordWriterName = guid(subscription().id, environmentName, 'autopilot-dns-a-writer')
var connectionApproverName = guid(subscription().id, environmentName, 'autopilot-connection-approver')
var kustoOperationReaderName = guid(subscription().id, environmentName, 'autopilot-kusto-operation-reader')
var targetApproverName = guid(subscription().id, environmentName, 'autopilot-target-approver')
var targetApproverScopes = [for s in approvalTargetSubscriptions: '/subscriptions/${s}']
var firstTargetSubscription = first(concat(approvalTargetSubscriptions, [subscription().subscriptionId]))
var eventSubscriptionWriterName = guid(subscription().id, environmentName, 'autopilot-event-subscription-writer')
var dnsZoneManagerName = guid(subscription().id, environmentName, 'autopilot-dns-zone-manager')
var dnsZoneLinkerName = guid(subscription().id, environmentName, 'autopilot-dns-zone-linker')
var firstEndpointSubscription = first(subscriptionsInScope)
var ownedSubscriptions = [for r in ownedResources: r.subscriptionId]
// first(concat(list, [fallback])): ARM may evaluate a scope expression even when the module's
// condition is false, so it must be valid for an empty list.
var firstApproverSubscription = first(concat(ownedSubscriptions, [subscription().subscriptionId]))
var firstKustoSubscription = first(concat(kustoSubscriptions, [subscription().subscriptionId]))

module endpointReaderRole 'modules/roles/role-definition.bicep' = {
  name: 'autopilot-role-endpoint-reader-${environmentName}'
  scope: subscription(firstEndpointSubscription)
  params: {
    roleDefinitionName: endpointReaderName
    roleName: 'Private Link Autopilot endpoint reader (${environmentName})'
    roleDescription: 'Read private endpoints, their NICs and DNS zone groups; query Resource Graph.'
    actions: endpointReaderActions
    assignableScopes: endpointScopes
  }
}

module endpointTaggerRole 'modules/roles/role-definition.bicep' = {
  name: 'autopilot-role-endpoint-tagger-${environmentName}'
  scope: subscription(firstEndpointSubscription)
  params: {
    roleDefinitionName: endpointTaggerName
    roleName: 'Private Link Autopilot endpoint tagger (${environmentName})'
    roleDescription: 'Read and merge tags through the Tags API; cannot read or change the tagged resources.'
    actions: endpointTaggerActions
    assignableScopes: endpointScopes
  }
}

module dnsRecordWriterRole 'modules/roles/role-definition.bicep' = {
  name: 'autopilot-role-dns-writer-${environmentName}'
  scope: subscription(dnsZoneSubscriptionId)
  params: {
    roleDefinitionName: dnsRecordWriterName
    roleName: 'Private Link Autopilot DNS A record writer (${environmentName})'
    roleDescription: 'Read private DNS zones; read, write and delete their A record sets only.'
    actions: dnsRecordWriterActions
    assignableScopes: [
      dnsZoneResourceGroupId
    ]
  }
}

module connectionApproverRole 'modules/roles/role-definition.bicep' = if (!empty(ownedResources)) {
  name: 'autopilot-role-approver-${environmentName}'
  scope: subscription(firstApproverSubscription)
  params: {
    roleDefinitionName: connectionApproverName
    roleName: 'Private Link Autopilot connection approver (${environmentName})'
    roleDescription: 'Read owned resources; read and approve their private endpoint connections.'
    actions: connectionApproverActions
    assignableScopes: approverScopes
  }
}

module kustoOperationReaderRole 'modules/roles/role-definition.bicep' = if (!empty(kustoSubscriptions)) {
  name: 'autopilot-role-kusto-operations-${environmentName}'
  scope: subscription(firstKustoSubscription)
  params: {
    roleDefinitionName: kustoOperationReaderName
    roleName: 'Private Link Autopilot Kusto operation reader (${environmentName})'
    roleDescription: 'Poll Azure Data Explorer long-running operation results.'
    actions: kustoOperationReaderActions
    assignableScopes: kustoOperationScopes
  }
}

module targetApproverRole 'modules/roles/role-definition.bicep' = if (!empty(approvalTargetSubscriptions)) {
  name: 'autopilot-role-target-approver-${environmentName}'
  scope: subscription(firstTargetSubscription)
  params: {
    roleDefinitionName: targetApproverName
    roleName: 'Private Link Autopilot target approver (${environmentName})'
    roleDescription: 'Find owned resources with Resource Graph; read and approve their private endpoint connections.'
    actions: targetApproverActions
    assignableScopes: targetApproverScopes
  }
}

module eventSubscriptionWriterRole 'modules/roles/role-definition.bicep' = if (createMissingEventSubscriptions) {
  name: 'autopilot-role-event-subscription-writer-${environmentName}'
  scope: subscription(firstEndpointSubscription)
  params: {
    roleDefinitionName: eventSubscriptionWriterName
    roleName: 'Private Link Autopilot event subscription writer (${environmentName})'
    roleDescription: 'Create a subscription\'s Event Grid system topic and its event subscription to the function.'
    actions: eventSubscriptionWriterActions
    assignableScopes: endpointScopes
  }
}

module dnsZoneManagerRole 'modules/roles/role-definition.bicep' = if (dnsZoneManagement == 'create') {
  name: 'autopilot-role-dns-zone-manager-${environmentName}'
  scope: subscription(dnsZoneSubscriptionId)
  params: {
    roleDefinitionName: dnsZoneManagerName
    roleName: 'Private Link Autopilot DNS zone manager (${environmentName})'
    roleDescription: 'Create, link and delete private DNS zones; read, write and delete their A record sets.'
    actions: dnsZoneManagerActions
    assignableScopes: [
      dnsZoneResourceGroupId
    ]
  }
}

module dnsZoneLinkerRole 'modules/roles/role-definition.bicep' = if (dnsZoneManagement == 'create') {
  name: 'autopilot-role-dns-zone-linker-${environmentName}'
  scope: subscription(dnsZoneSubscriptionId)
  params: {
    roleDefinitionName: dnsZoneLinkerName
    roleName: 'Private Link Autopilot DNS zone linker (${environmentName})'
    roleDescription: 'Link private DNS zones to virtual networks; find private DNS zones with Resource Graph.'
    actions: dnsZoneLinkerActions
    assignableScopes: dnsZoneLinkerScopes
  }
}

module endpointRoles 'modules/roles/subscription-assignments.bicep' = [for subscriptionId in subscriptionsInScope: {
  name: 'autopilot-endpoint-roles-${environmentName}'
  scope: subscription(subscriptionId)
  params: {
    principalId: identity.outputs.principalId
    roleDefinitionNames: [
      endpointReaderRole.outputs.name
      endpointTaggerRole.outputs.name
    ]
  }
}]

module dnsZoneRoles 'modules/roles/dns-zone-assignments.bicep' = {
  name: 'autopilot-dns-roles-${environmentName}'
  scope: resourceGroup(dnsZoneSubscriptionId, dnsZoneResourceGroup)
  params: {
    principalId: identity.outputs.principalId
    roleDefinitionName: dnsRecordWriterRole.outputs.name
    zoneNames: dnsZoneNames
  }
}

module dnsZoneManagerRoles 'modules/roles/dns-resource-group-assignments.bicep' = [for rg in dnsZoneManagerResourceGroups: {
  name: 'autopilot-dns-zone-manager-${environmentName}'
  scope: resourceGroup(dnsZoneSubscriptionId, rg)
  dependsOn: [
    dnsZoneManagerRole
  ]
  params: {
    principalId: identity.outputs.principalId
    roleDefinitionName: dnsZoneManagerName
  }
}]

module dnsZoneLinkerRoles 'modules/roles/subscription-assignments.bicep' = [for subscriptionId in dnsZoneLinkerSubscriptions: {
  name: 'autopilot-dns-zone-linker-${environmentName}'
  scope: subscription(subscriptionId)
  dependsOn: [
    dnsZoneLinkerRole
  ]
  params: {
    principalId: identity.outputs.principalId
    roleDefinitionNames: [
      dnsZoneLinkerName
    ]
  }
}]

module approverRoles 'modules/roles/connection-approver-assignment.bicep' = [for (r, i) in ownedResources: {
  name: 'autopilot-approver-${environmentName}-${i}'
  scope: resourceGroup(r.subscriptionId, r.resourceGroup)
  dependsOn: [
    connectionApproverRole
  ]
  params: {
    principalId: identity.outputs.principalId
    roleDefinitionName: connectionApproverName
    resourceType: r.type
    resourceName: r.name
  }
}]

module kustoOperationRoles 'modules/roles/subscription-assignments.bicep' = [for subscriptionId in kustoSubscriptions: {
  name: 'autopilot-kusto-operation-roles-${environmentName}'
  scope: subscription(subscriptionId)
  dependsOn: [
    kustoOperationReaderRole
  ]
  params: {
    principalId: identity.outputs.principalId
    roleDefinitionNames: [
      kustoOperationReaderName
    ]
  }
}]

module targetApproverRoles 'modules/roles/subscription-assignments.bicep' = [for subscriptionId in approvalTargetSubscriptions: {
  name: 'autopilot-target-approver-roles-${environmentName}'
  scope: subscription(subscriptionId)
  dependsOn: [
    targetApproverRole
  ]
  params: {
    principalId: identity.outputs.principalId
    roleDefinitionNames: [
      targetApproverName
    ]
  }
}]

module eventSubscriptionWriterRoles 'modules/roles/subscription-assignments.bicep' = [for subscriptionId in eventSubscriptionWriterSubscriptions: {
  name: 'autopilot-event-subscription-writer-${environmentName}'
  scope: subscription(subscriptionId)
  dependsOn: [
    eventSubscriptionWriterRole
  ]
  params: {
    principalId: identity.outputs.principalId
    roleDefinitionNames: [
      eventSubscriptionWriterName
    ]
  }
}]

// ---------------------------------------------------------------------------------------------
// Event Grid: one system topic per subscription in scope, dead letters to the app's storage

module systemTopics 'modules/eventgrid-system-topic.bicep' = [for subscriptionId in subscriptionsInScope: {
  name: 'autopilot-system-topic-${environmentName}'
  scope: subscription(subscriptionId)
  params: {
    resourceGroupName: eventsResourceGroupName
    location: location
    topicName: systemTopicName
    tags: allTags
  }
}]

module deadLetterAccess 'modules/deadletter-access.bicep' = {
  name: 'deadletter-access'
  scope: group
  params: {
    storageAccountName: storage.outputs.name
    containerName: storage.outputs.deadLetterContainerName
    topicPrincipalIds: [for (subscriptionId, i) in subscriptionsInScope: systemTopics[i].outputs.principalId]
  }
}

module eventSubscriptions 'modules/eventgrid-subscription.bicep' = [for (subscriptionId, i) in subscriptionsInScope: if (wireEventSubscriptions) {
  name: 'autopilot-event-subscription-${environmentName}'
  scope: resourceGroup(subscriptionId, eventsResourceGroupName)
  dependsOn: [
    deadLetterAccess
  ]
  params: {
    systemTopicName: systemTopics[i].outputs.topicName
    functionResourceId: '${functionApp.outputs.id}/functions/PrivateEndpointEvents'
    deadLetterStorageAccountId: storage.outputs.id
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    maxDeliveryAttempts: eventMaxDeliveryAttempts
    eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
  }
}]

// ---------------------------------------------------------------------------------------------
// Outputs (azd stores them in the environment)

output AZURE_RESOURCE_GROUP string = group.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AUTOPILOT_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AUTOPILOT_SERVICE_BUS_NAMESPACE string = serviceBus.outputs.fullyQualifiedNamespace
output AUTOPILOT_AUDIT_TOPIC_ENDPOINT string = auditTopic.outputs.endpoint
output AUTOPILOT_EVENT_SUBSCRIPTIONS_WIRED bool = wireEventSubscriptions
