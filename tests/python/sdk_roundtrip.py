"""Microsoft's official Python management clients against `autopilot sandbox`.

Why: the fake ARM is only useful if what it answers is what ARM answers. Our own Rust
client is tested against it, but a fake and a client written by the same people can agree
on the same mistake. Here `azure-mgmt-privatedns` and `azure-mgmt-network` (generated
from the REST specs) drive it: every answer must deserialize into their models, and their
long-running-operation pollers must finish against the fake's `Azure-AsyncOperation`
and `Location` headers.

Input: the sandbox's first stdout line (one JSON object) on stdin. Output: one line per
check; exit status 0 only if all passed. Run by tests/sandbox_standalone.rs.

What the SDKs need to talk to a loopback fake:
  * base_url = the sandbox's `arm_url`;
  * a credential object with `get_token(*scopes, **kwargs)` returning an AccessToken
    (the token is the sandbox's `arm_token`);
  * azure-core's bearer-token policy refuses plain http unless the request's context
    says `enforce_https=False`; it reads that per operation (`**kwargs` of each call),
    so a per-call pipeline policy sets it once for every request, poller GETs included.
"""

import json
import sys
import time

from azure.core import MatchConditions
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.core.rest import HttpRequest
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network import models as net
from azure.mgmt.privatedns import PrivateDnsManagementClient
from azure.mgmt.privatedns import models as dns

NETWORK_API = "2025-07-01"
KEYVAULT_API = "2026-02-01"


class StaticToken:
    """A TokenCredential with a fixed bearer token (the sandbox accepts only this one)."""

    def __init__(self, token):
        self._token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self._token, int(time.time()) + 3600)


class AllowHttp(SansIOHTTPPolicy):
    """Lets the bearer-token policy send the token over http (loopback only here)."""

    def on_request(self, request):
        request.context["enforce_https"] = False


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok   {what}")


def main():
    sandbox = json.loads(sys.stdin.readline())
    arm_url = sandbox["arm_url"]
    cred = StaticToken(sandbox["arm_token"])
    hub = sandbox["hub"]
    spoke = sandbox["spoke"]
    common = dict(base_url=arm_url, per_call_policies=[AllowHttp()], polling_interval=1)

    # ---- Private DNS: zone get, record set create/get/list/update/delete --------------
    pdns = PrivateDnsManagementClient(cred, hub["subscription"], **common)
    zone_name = "privatelink.vaultcore.azure.net"
    zone = pdns.private_zones.get(hub["resource_group"], zone_name)
    check(isinstance(zone, dns.PrivateZone) and zone.name == zone_name, "private_zones.get parses into PrivateZone")
    check(zone.location.lower() == "global", f"zone location is global ({zone.location})")

    rs_in = dns.RecordSet(ttl=300, a_records=[dns.ARecord(ipv4_address="10.9.0.4")], metadata={"source": "sdk"})
    created = pdns.record_sets.create_or_update(hub["resource_group"], zone_name, "A", "SDK-Roundtrip", rs_in)
    check(created.name == "sdk-roundtrip", f"record set name lower-cased ({created.name})")
    check(created.ttl == 300 and [a.ipv4_address for a in created.a_records] == ["10.9.0.4"], "created A record")
    check(created.fqdn == f"sdk-roundtrip.{zone_name}.", f"fqdn ends with a dot ({created.fqdn})")
    check(bool(created.etag), "etag present")
    check((created.metadata or {}).get("source") == "sdk", "metadata round-trips")

    got = pdns.record_sets.get(hub["resource_group"], zone_name, "A", "sdk-roundtrip")
    check(got.id == created.id and got.etag == created.etag, "record_sets.get returns the same set")

    listed = list(pdns.record_sets.list_by_type(hub["resource_group"], zone_name, "A"))
    check(any(r.name == "sdk-roundtrip" for r in listed), "record_sets.list_by_type lists it")
    everything = list(pdns.record_sets.list(hub["resource_group"], zone_name))
    check(any(r.name == "sdk-roundtrip" for r in everything), "record_sets.list lists it")

    rs_in.a_records = [dns.ARecord(ipv4_address="10.9.0.5")]
    updated = pdns.record_sets.create_or_update(
        hub["resource_group"],
        zone_name,
        "A",
        "sdk-roundtrip",
        rs_in,
        etag=created.etag,
        match_condition=MatchConditions.IfNotModified,
    )
    check([a.ipv4_address for a in updated.a_records] == ["10.9.0.5"], "conditional update with If-Match")
    try:
        pdns.record_sets.create_or_update(
            hub["resource_group"],
            zone_name,
            "A",
            "sdk-roundtrip",
            rs_in,
            etag=created.etag,
            match_condition=MatchConditions.IfNotModified,
        )
        check(False, "stale If-Match is refused")
    except (ResourceModifiedError, HttpResponseError) as e:
        check(e.status_code == 412, f"stale If-Match is refused with 412 ({e.status_code})")

    pdns.record_sets.delete(hub["resource_group"], zone_name, "A", "sdk-roundtrip")
    try:
        pdns.record_sets.get(hub["resource_group"], zone_name, "A", "sdk-roundtrip")
        check(False, "deleted record set is gone")
    except ResourceNotFoundError:
        check(True, "deleted record set answers 404 (ResourceNotFoundError)")

    # ---- Network: private endpoint create (LRO), get, NIC, approve, delete (LRO) ------
    # The client's default api-version is newer than the spec version the fake follows;
    # the generated operations take `api_version` per call (not on the client).
    netc = NetworkManagementClient(cred, spoke["subscription"], **common)
    v = {"api_version": NETWORK_API}
    rg = spoke["resource_group"]
    subnet_id = (
        f"/subscriptions/{spoke['subscription']}/resourceGroups/{rg}"
        "/providers/Microsoft.Network/virtualNetworks/sdk-vnet/subnets/endpoints"
    )
    vault_id = f"/subscriptions/{spoke['subscription']}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/kv-sdk"
    pe_in = net.PrivateEndpoint(
        location="eastus2",
        subnet=net.Subnet(id=subnet_id),
        manual_private_link_service_connections=[
            net.PrivateLinkServiceConnection(
                name="kv-sdk-conn",
                properties=net.PrivateLinkServiceConnectionProperties(
                    private_link_service_id=vault_id, group_ids=["vault"], request_message="sdk roundtrip"
                ),
            )
        ],
        tags={"owner": "sdk"},
    )
    pe = netc.private_endpoints.begin_create_or_update(rg, "pe-sdk-kv", pe_in, **v).result()
    check(isinstance(pe, net.PrivateEndpoint), "begin_create_or_update's poller ends in a PrivateEndpoint")
    check(pe.provisioning_state == "Succeeded", f"provisioningState Succeeded ({pe.provisioning_state})")
    check(pe.subnet.id == subnet_id, "subnet as requested")
    conn = pe.manual_private_link_service_connections[0]
    check(conn.name == "kv-sdk-conn" and conn.private_link_service_id == vault_id, "manual connection as requested")
    check(conn.private_link_service_connection_state.status == "Pending", "manual connection is Pending")
    check(conn.request_message == "sdk roundtrip", "request message kept")
    check(pe.tags == {"owner": "sdk"}, "tags kept")
    check([c.fqdn for c in pe.custom_dns_configs] == ["kv-sdk.vault.azure.net"], "customDnsConfigs has the vault FQDN")

    again = netc.private_endpoints.get(rg, "pe-sdk-kv", **v)
    check(again.id == pe.id and again.etag, "private_endpoints.get parses")
    check(any(p.name == "pe-sdk-kv" for p in netc.private_endpoints.list(rg, **v)), "private_endpoints.list lists it")

    nic_name = pe.network_interfaces[0].id.rsplit("/", 1)[1]
    nic = netc.network_interfaces.get(rg, nic_name, **v)
    ipc = nic.ip_configurations[0]
    check(isinstance(nic, net.NetworkInterface) and nic.private_endpoint.id == pe.id, "NIC parses, points at the PE")
    check(bool(ipc.private_ip_address), f"NIC has an allocated IP ({ipc.private_ip_address})")
    check(
        ipc.private_link_connection_properties.fqdns == ["kv-sdk.vault.azure.net"],
        "NIC privateLinkConnectionProperties carries the FQDN",
    )
    check(pe.custom_dns_configs[0].ip_addresses == [ipc.private_ip_address], "customDnsConfigs IP = NIC IP")

    # The vault's owner approves on the target (no Key Vault SDK installed: the same
    # pipeline, token and http allowance, through the client's send_request).
    listing = netc.send_request(
        HttpRequest("GET", f"{arm_url}{vault_id}/privateEndpointConnections?api-version={KEYVAULT_API}")
    )
    listing.raise_for_status()
    target_conn = next(
        c for c in listing.json()["value"] if c["properties"]["privateEndpoint"]["id"].lower() == pe.id.lower()
    )
    approve = {"properties": {"privateLinkServiceConnectionState": {"status": "Approved", "description": "sdk"}}}
    put = netc.send_request(
        HttpRequest("PUT", f"{arm_url}{target_conn['id']}?api-version={KEYVAULT_API}", json=approve)
    )
    put.raise_for_status()
    approved = netc.private_endpoints.get(rg, "pe-sdk-kv", **v)
    state = approved.manual_private_link_service_connections[0].private_link_service_connection_state
    check(state.status == "Approved", "owner's approval shows on the endpoint")

    # An automatic connection to a vendor alias: Approved at once, alias kept verbatim.
    alias = sandbox["aliases"]["clickhouse"]
    auto_in = net.PrivateEndpoint(
        location="eastus2",
        subnet=net.Subnet(id=subnet_id),
        private_link_service_connections=[
            net.PrivateLinkServiceConnection(
                name="ch", properties=net.PrivateLinkServiceConnectionProperties(private_link_service_id=alias)
            )
        ],
    )
    auto = netc.private_endpoints.begin_create_or_update(rg, "pe-sdk-ch", auto_in, **v).result()
    aconn = auto.private_link_service_connections[0]
    check(aconn.private_link_service_id == alias, "alias kept verbatim")
    check(aconn.private_link_service_connection_state.status == "Approved", "automatic connection is Approved")

    for name in ("pe-sdk-kv", "pe-sdk-ch"):
        netc.private_endpoints.begin_delete(rg, name, **v).result()
        try:
            netc.private_endpoints.get(rg, name, **v)
            check(False, f"{name} deleted")
        except ResourceNotFoundError:
            check(True, f"begin_delete's poller finished and {name} answers 404")
    try:
        netc.network_interfaces.get(rg, nic_name, **v)
        check(False, "NIC deleted with the endpoint")
    except ResourceNotFoundError:
        check(True, "NIC deleted with the endpoint")
    zones_and_links(pdns, hub)
    print("sdk roundtrip: all checks passed")


def zones_and_links(pdns, hub):
    """Zone and link writes as zone management does them (conditional create, owned tag,
    registrationEnabled false, resolutionPolicy on a privatelink zone), read back through
    the SDK's models and pollers; and the fake's refusals in the shapes the SDK raises."""
    rg = hub["resource_group"]
    zone_name = "privatelink.sdk-zones.example"
    vnet = f"/subscriptions/{hub['subscription']}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/hub-vnet"
    zone = pdns.private_zones.begin_create_or_update(
        rg,
        zone_name,
        dns.PrivateZone(location="global", tags={"plautopilot-owned": "true"}),
        match_condition=MatchConditions.IfMissing,
    ).result()
    check(isinstance(zone, dns.PrivateZone) and zone.tags == {"plautopilot-owned": "true"}, "zone create poller ends in a tagged PrivateZone")
    link_in = dns.VirtualNetworkLink(
        location="global",
        tags={"plautopilot-owned": "true"},
        virtual_network=dns.SubResource(id=vnet),
        registration_enabled=False,
        resolution_policy="NxDomainRedirect",
    )
    link = pdns.virtual_network_links.begin_create_or_update(
        rg, zone_name, "plautopilot-hub", link_in, match_condition=MatchConditions.IfMissing
    ).result()
    check(isinstance(link, dns.VirtualNetworkLink), "link create poller ends in a VirtualNetworkLink")
    check(link.virtual_network.id == vnet and link.registration_enabled is False, "link VNet and registrationEnabled read back")
    check(link.resolution_policy == "NxDomainRedirect", f"resolutionPolicy read back ({link.resolution_policy})")
    check(link.virtual_network_link_state == "Completed" and link.provisioning_state == "Succeeded", "link state Completed")
    listed = list(pdns.virtual_network_links.list(rg, zone_name))
    check([l.name for l in listed] == ["plautopilot-hub"], "virtual_network_links.list lists it")
    got = pdns.private_zones.get(rg, zone_name)
    check(got.number_of_virtual_network_links == 1, "zone counts its link")
    try:
        pdns.private_zones.begin_delete(rg, zone_name).result()
        check(False, "a zone with a link is not deleted")
    except HttpResponseError as e:
        check(e.status_code == 409, f"a zone with a link is not deleted (409, {e.status_code})")
    try:
        pdns.virtual_network_links.begin_create_or_update(rg, zone_name, "second", link_in).result()
        check(False, "a second link for the same VNet is refused")
    except HttpResponseError as e:
        check(e.status_code == 400, f"a second link for the same VNet is refused ({e.status_code})")
    pdns.virtual_network_links.begin_delete(
        rg, zone_name, "plautopilot-hub", etag=link.etag, match_condition=MatchConditions.IfNotModified
    ).result()
    pdns.private_zones.begin_delete(rg, zone_name).result()
    try:
        pdns.private_zones.get(rg, zone_name)
        check(False, "empty zone deleted")
    except ResourceNotFoundError:
        check(True, "link and empty zone deleted through the pollers")


if __name__ == "__main__":
    main()
