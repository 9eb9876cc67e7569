"""What the device map learns of the LAN's shape from the flows: which subnets each MAC is seen
in, which MACs route a subnet of their own (an IoT VLAN, a guest network behind a router), which
are gateways to the internet, and which MACs are devices of the LAN (devices.py says what each
changes). Bounded: the oldest subnets and MACs are forgotten first.

Written by hand: a few dictionaries, consulted only when the device map meets a flow it has not
resolved before.
"""
from __future__ import annotations

import ipaddress

SUBNETS_LIMIT = 4096  # subnets remembered, each with at most two of its MACs
MACS_LIMIT = 16384  # MACs remembered (devices of the LAN, their subnets)
SUBNETS_A_MAC = 4  # subnets remembered per MAC (a router of more keeps its last four)
# distinct global IPv6 /64s with one MAC past which it is a gateway: a device's own addresses
# rotate within its /64 (privacy addresses, daily) and its /64 moves only when the delegated
# prefix does; a gateway carries the whole internet's
GATEWAY_PREFIXES6 = 32


def subnet_of(address: str) -> str:
    """The /24 of an IPv4 address, the /64 of an IPv6 one."""
    ip = ipaddress.ip_address(address)
    return str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False))


def locally_administered(mac: str) -> bool:
    """The MAC's U/L bit: set by phones' and laptops' private (randomised) addresses."""
    return bool(int(mac[:2], 16) & 2)


class LanShape:
    def __init__(self):
        self.subnet_macs: dict[str, tuple[str, ...]] = {}  # subnet -> up to two MACs seen
        self.subnet_hosts: dict[str, tuple[str, ...]] = {}  # subnet -> up to two addresses
        self.mac_subnets: dict[str, tuple[str, ...]] = {}  # MAC -> its subnets, newest last
        self.lan_macs: dict[str, None] = {}  # MACs seen with a home-net address
        self.gateways: dict[str, None] = {}  # MACs that carry the internet's addresses
        self.global6: dict[str, dict[str, None]] = {}  # MAC -> its global IPv6 /64s (a few)
        self.changes = 0  # times an answer already given may have changed

    def seen(self, address: str, mac: str) -> None:
        """A local address sent with this unicast MAC."""
        if mac not in self.lan_macs:
            self.lan_macs[mac] = None
            _bound(self.lan_macs, MACS_LIMIT)
        if ipaddress.ip_address(address).version == 6:  # routed subnets are IPv4's here:
            return  # a device's own IPv6 addresses (privacy, ULA) would look like hosts
        subnet = subnet_of(address)
        hosts = self.subnet_hosts.get(subnet, ())
        if address not in hosts and len(hosts) < 2:
            self.subnet_hosts[subnet] = hosts + (address,)
            _bound(self.subnet_hosts, SUBNETS_LIMIT)
            if hosts:
                self.changes += 1
        macs = self.subnet_macs.get(subnet, ())
        if mac not in macs and len(macs) < 2:
            self.subnet_macs[subnet] = macs + (mac,)
            _bound(self.subnet_macs, SUBNETS_LIMIT)
            if macs:  # a second MAC: the subnet is no longer one MAC's alone
                self.changes += 1
        subnets = self.mac_subnets.get(mac, ())
        if subnet not in subnets:
            self.mac_subnets.pop(mac, None)
            self.mac_subnets[mac] = (subnets + (subnet,))[-SUBNETS_A_MAC:]
            _bound(self.mac_subnets, MACS_LIMIT)
            if subnets:  # its second subnet: it may route one
                self.changes += 1

    def routed(self, address: str, mac: str) -> bool:
        """Is the address a host behind the router with this MAC (keyed by address)?"""
        subnets = self.mac_subnets.get(mac, ())
        if len(subnets) < 2:
            return False
        subnet = subnet_of(address)
        if self.subnet_macs.get(subnet, ()) != (mac,) or len(self.subnet_hosts[subnet]) < 2:
            return False  # other MACs live there (the router's own subnet), or one host only
        # the router needs a subnet of its own with other MACs in it: its LAN side
        return any(len(self.subnet_macs.get(s, ())) > 1 for s in subnets if s != subnet)

    def internet(self, mac: str, version: int, address: str) -> None:
        """A public address sent with this MAC: public IPv4 is a gateway's at once; global
        IPv6 once it came from many /64s (a device's own are in one, a gateway's anywhere)."""
        if mac in self.gateways:
            return
        if version == 6:
            seen = self.global6.setdefault(mac, {})
            _bound(self.global6, MACS_LIMIT)
            prefix = subnet_of(address)
            if prefix in seen or len(seen) < GATEWAY_PREFIXES6:
                seen[prefix] = None
                return
        self.gateways[mac] = None
        self.global6.pop(mac, None)
        _bound(self.gateways, MACS_LIMIT)
        self.changes += 1

    def lan_device(self, mac: str) -> bool:
        """Seen with an address of the home networks, and no gateway."""
        return mac in self.lan_macs and mac not in self.gateways


def _bound(table: dict, limit: int) -> None:
    while len(table) > limit:
        del table[next(iter(table))]
