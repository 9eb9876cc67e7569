"""Which local device(s) a flow belongs to: the endpoints inside the home networks.

A flow belongs to each of its endpoints whose address is inside `--home-net` (default: the
private ranges, as Suricata's HOME_NET), keyed by that endpoint's MAC where the flow has a
unicast one, else by the MAC last seen for that address, else by the address itself. So a device
keeps one identity across its IPv4 and IPv6 flows and a changed DHCP lease, and an ARP request
(sent to the broadcast MAC) still reaches the device it asks about. Multicast and broadcast
addresses (IPv4 x.x.x.255 counts as a broadcast) are never devices; a DHCP client's 0.0.0.0
is, by its MAC. Flows without IP addresses (EAPOL, LLC) belong to no device. Where a real
network differs from one flat LAN (docs/incidents.md):

- **Asked about only**: an address that only ever had a broadcast MAC (an ARP request's
  target, a scan's unanswered one) and none bound is no device (an empty MAC, as in captures
  without Ethernet, still gives a device by its address).
- **Routed subnets** (an IoT VLAN or guest network behind a router): their hosts reach the LAN
  with the router's MAC. A MAC seen with two addresses of an IPv4 /24 where no other MAC was ever
  seen, and with a /24 it shares with other MACs, routes the first: its addresses there are
  keyed by address, each host its own device; the router keeps its MAC for its own address.
- **Global IPv6**: a global address is no home-net address, but with the unicast MAC of a
  device of the LAN it is that device's (so a rotating delegated prefix does not matter); never
  with a gateway's MAC (one seen carrying public IPv4 addresses, or global IPv6 of many /64s).
- **Locally administered MACs** (a phone's private address): said on the new_device line, with
  the randomised MAC whose address it took over, if any (a phone rotating its address).

Written by hand, not with a library: the rule is a few lines, and it runs for every flow on the
device, so the parsed addresses and the answers are memoised (bounded, so that a flood of made-up
addresses cannot grow memory); what the rule learns of the LAN is lan.py's.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from itertools import islice
from typing import Iterable

import numpy as np

from .lan import LanShape, locally_administered

DEFAULT_HOME_NET = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fe80::/10")
ADDRESS_COLUMNS = {"src": ("SrcAddr", "saddr"), "dst": ("DstAddr", "daddr")}
MAC_COLUMNS = {"src": ("SrcMac", "smac"), "dst": ("DstMac", "dmac")}
MEMO_LIMIT = 4096  # answers remembered; past it the oldest quarter goes (flows repeat them)
BINDINGS_LIMIT = 16384  # address -> MAC bindings remembered (as many as devices kept)
_HEX = frozenset("0123456789abcdef")
GLOBAL_UNICAST6 = ipaddress.ip_network("2000::/3")


def remember(memo: dict, key, value, limit: int = MEMO_LIMIT) -> None:
    """memo[key] = value, the oldest quarter forgotten first when it is full: bounded, and the
    answers in use stay (dicts keep their insertion order)."""
    if len(memo) >= limit:
        for old in list(islice(memo, limit // 4)):
            del memo[old]
    memo[key] = value


def parse_home_net(cidrs: Iterable[str]) -> tuple:
    """The networks, or ValueError naming the bad one."""
    networks = []
    for text in cidrs:
        try:
            networks.append(ipaddress.ip_network(str(text).strip(), strict=False))
        except ValueError:
            raise ValueError(f"--home-net {text!r} is not a network: give it in CIDR form, "
                             f"e.g. 192.168.1.0/24 or fd00::/8") from None
    if not networks:
        raise ValueError("--home-net: give at least one network")
    return tuple(networks)


def unicast_mac(text: str) -> str | None:
    """The MAC in lower case if `text` is a unicast MAC (not broadcast, multicast, or the
    zeros of an ARP request's unknown target)."""
    mac = text.strip().lower()
    if len(mac) != 17 or mac.count(":") != 5 or not set(mac.replace(":", "")) <= _HEX:
        return None
    return None if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00" else mac


def is_mac(key: str) -> bool:
    return unicast_mac(key) is not None


class HomeNet:
    """Is an address text a local device's? Memoised."""

    def __init__(self, cidrs: Iterable[str] = DEFAULT_HOME_NET):
        self.cidrs = tuple(str(n) for n in parse_home_net(cidrs))
        self._networks = parse_home_net(self.cidrs)
        self._memo: dict[str, str | None] = {}

    def classify(self, text: str) -> str | None:
        """"local", "unspecified" (0.0.0.0 or ::: a DHCP client), "public" (the internet's:
        a device only as a LAN device's global IPv6) or None (multicast, broadcast, ...)."""
        found = self._memo.get(text, False)
        if found is not False:
            return found
        try:
            address = ipaddress.ip_address(text.strip())
        except ValueError:
            answer = None  # a MAC in Argus's address column (a non-IP flow), or empty
        else:
            if address.is_unspecified:
                answer = "unspecified"
            elif address.is_multicast or (address.version == 4 and address.packed[-1] == 255):
                answer = None  # x.x.x.255: a subnet's broadcast (the home net's mask is not it)
            elif any(address in n for n in self._networks if n.version == address.version):
                answer = "local"
            elif address.version == 4:
                answer = "public" if address.is_global else None
            else:  # global unicast space (2000::/3; documentation prefixes too, for tests)
                answer = "public" if address in GLOBAL_UNICAST6 else None
        remember(self._memo, text, answer)
        return answer


class DeviceMap:
    """Flows -> the devices they belong to: a tuple of (key, ip) per flow, at most two."""

    def __init__(self, home_net: HomeNet, columns: Iterable[str]):
        columns = set(columns)
        pick = (lambda names: next((c for c in names if c in columns), None))
        self.addresses = (pick(ADDRESS_COLUMNS["src"]), pick(ADDRESS_COLUMNS["dst"]))
        self.macs = (pick(MAC_COLUMNS["src"]), pick(MAC_COLUMNS["dst"]))
        self.home_net = home_net
        # where src, src MAC, dst, dst MAC are in a flow's key fields (None: not in the layout)
        self._places = [self.key_columns.index(c) if c else None
                        for c in (self.addresses[0], self.macs[0], self.addresses[1],
                                  self.macs[1])]
        self._mac_of_ip: dict[str, str] = {}
        self.lan = LanShape()  # subnets, routers, gateways (lan.py)
        self.rotations: dict[str, str] = {}  # randomised MAC -> the randomised MAC whose
        # address it took (a phone rotating its private address?)
        self._lan_changes = 0
        self._by_binding: set[str] = set()  # addresses remembered answers keyed by binding
        self._forgotten = 0  # times the remembered answers were forgotten
        self._memo: dict[tuple, int] = {}  # a flow's key fields -> its tuple's number
        self._numbers: dict[tuple, int] = {}  # a tuple of devices -> its number
        self._tuples: list[tuple] = []  # by number

    def seed(self, known: dict) -> None:
        """Start from the address -> MAC bindings of the learning period (key -> its IP), so
        that flows before a device's MAC is seen again are still given to it by MAC."""
        for key, ip in known.items():
            if ip and is_mac(key):
                self._mac_of_ip[ip] = key
        self.forget()

    def bindings(self) -> dict[str, str]:
        """The address -> MAC bindings learned (what a restart keeps)."""
        return dict(self._mac_of_ip)

    def restore(self, bindings: dict[str, str]) -> None:
        """Bindings kept from before a restart (over those the bundle gave)."""
        for ip, mac in list(bindings.items())[-BINDINGS_LIMIT:]:
            if is_mac(mac):
                self._mac_of_ip.pop(ip, None)
                self._mac_of_ip[ip] = mac
        while len(self._mac_of_ip) > BINDINGS_LIMIT:
            del self._mac_of_ip[next(iter(self._mac_of_ip))]
        self.forget()

    @property
    def usable(self) -> bool:
        """The layout names both addresses: flows can be given to devices."""
        return None not in self.addresses

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The columns a flow's devices are found from (the daemon's parser hands them over
        per record as one tuple: `Records.fields`)."""
        return tuple(c for c in (self.addresses[0], self.macs[0], self.addresses[1],
                                 self.macs[1]) if c)

    def owners(self, records) -> "Owners":
        """The devices of each record, from its key fields if the parser kept them, else from
        its columns."""
        if records.fields is not None and records.fields[0] == self.key_columns:
            return self._owners(records.fields[1])
        return self._owners(self._key_fields(records.columns))

    def attribute(self, columns: dict) -> list[tuple]:
        """One tuple of (key, ip) per record (empty: no local device)."""
        return list(self._owners(self._key_fields(columns)))

    def initiators(self, columns: dict) -> tuple[list[tuple], list[str | None]]:
        """Per record its tuple of (key, ip), and the key of the device that initiated it
        (None: the source is no device of the home networks)."""
        owners = self._owners(self._key_fields(columns))
        return list(owners), [o[0][0] if s else None for o, s in zip(owners, owners.sources)]

    def _key_fields(self, columns: dict) -> list[tuple]:
        """Per record, its key fields, from text columns (as the parser's keep_fields)."""
        return list(zip(*(np.asarray(columns[c]).tolist() for c in self.key_columns)))

    def _owners(self, flows: list[tuple]) -> "Owners":
        """Each flow's answer is remembered by number (a flow's key fields -> the number of its
        tuple of devices), so a batch is one dictionary lookup a record; a miss is resolved in
        record order, and one that changes an answer by a new address -> MAC binding looks the
        later records up again, as if each had been resolved in turn."""
        if len(self._tuples) > MEMO_LIMIT or len(self._by_binding) > 2 * MEMO_LIMIT:
            self._numbers.clear()  # between batches, so that no number in use goes stale
            self._tuples.clear()
            self.forget()
        memo = self._memo  # (each answer: its tuple's number x 2, + 1 if the first device
        found = list(map(memo.get, flows))  # of the tuple is the flow's source, its initiator)
        i = -1
        while True:
            try:
                i = found.index(None, i + 1)
            except ValueError:
                break
            answer = memo.get(flows[i])
            if answer is None:
                forgotten = self._forgotten
                answer = self._resolve(flows[i])
                if self._forgotten != forgotten:  # a binding changed answers already found
                    found[i + 1:] = map(memo.get, flows[i + 1:])
            found[i] = answer
        found = np.array(found, dtype=np.intp)
        return Owners.numbered(found >> 1, self._tuples, (found & 1).astype(bool))

    def _resolve(self, flow: tuple) -> int:
        """The flow's tuple of devices, as its number x 2 + 1 if the source (Argus's
        initiator) is the first of them (remembered for its key fields)."""
        src, src_mac, dst, dst_mac = [flow[i].strip() if i is not None else ""
                                      for i in self._places]
        source, target = self._endpoint(src, src_mac), self._endpoint(dst, dst_mac)
        devices = [d for d in (source, target) if d is not None]
        if len(devices) == 2 and devices[0][0] == devices[1][0]:
            del devices[1]  # (one device on both ends: once)
        if self.lan.changes != self._lan_changes:  # a router or gateway found, a subnet
            self._lan_changes = self.lan.changes  # shared: answers given may have changed
            self.forget()
        devices = tuple(devices)
        number = self._numbers.get(devices)
        if number is None:
            number = self._numbers[devices] = len(self._tuples)
            self._tuples.append(devices)
        answer = 2 * number + (source is not None)
        remember(self._memo, flow, answer)
        return answer

    def _endpoint(self, address: str, mac_text: str) -> tuple[str, str | None] | None:
        """One end of a flow as a device (key, ip), or None: not one (the rules above)."""
        kind = self.home_net.classify(address)
        if kind is None:
            return None
        mac, lan = unicast_mac(mac_text), self.lan
        if kind == "public":
            if mac is None:
                return None
            lan.internet(mac, 6 if ":" in address else 4, address)
            # a LAN device's own global IPv6
            return (mac, address) if ":" in address and lan.lan_device(mac) else None
        if kind == "unspecified":  # (only ever a source: a DHCP client)
            return None if mac is None else (mac, None)
        if mac is not None:
            lan.seen(address, mac)
            if self._mac_of_ip.get(address) != mac:
                self._learn(address, mac)
            return (address if lan.routed(address, mac) else mac), address
        self._by_binding.add(address)
        bound = self._mac_of_ip.get(address)
        if bound is None and mac_text:
            return None  # sent to broadcast (no MAC of its own), never bound: asked about
        return (address if bound is None or lan.routed(address, bound) else bound), address

    def _learn(self, address: str, mac: str) -> None:
        """A new address -> MAC binding: the answers that looked the address up (or the one
        whose binding goes to make room) are stale."""
        was = self._mac_of_ip.pop(address, None)
        if was is not None and was != mac and locally_administered(was) and \
                locally_administered(mac):
            remember(self.rotations, mac, was)
        evicted = None
        if len(self._mac_of_ip) >= BINDINGS_LIMIT:
            evicted = next(iter(self._mac_of_ip))  # the oldest binding
            del self._mac_of_ip[evicted]
        self._mac_of_ip[address] = mac
        if address in self._by_binding or evicted in self._by_binding:
            self.forget()

    def forget(self) -> None:
        """Every remembered answer goes (a binding they used changed)."""
        self._memo.clear()
        self._by_binding.clear()
        self._forgotten += 1


@dataclass
class Pairs:
    """A batch's (record, device) pairs, grouped by device: device d's are bounds[d]:bounds[d+1]."""

    keys: list[str]  # the batch's devices, in the order they first appear
    rows: np.ndarray  # per pair: its record
    devices: np.ndarray  # per pair: its device (index into keys)
    slots: np.ndarray  # per pair: the device's place in the record's tuple
    has_ip: np.ndarray  # per pair: the record gives the device's address
    bounds: np.ndarray
    initiator: np.ndarray  # per pair: the device initiated the flow (its evidence, its normal)


class Owners:
    """The devices of a batch's records, each distinct tuple of (key, ip) once, and per record
    the index of its tuple: flows repeat their devices, so what is done per tuple (a device's
    threshold, its place in the batch) is not done per record."""

    def __init__(self, owners: list[tuple], sources=None):
        index: dict[tuple, int] = {}
        self.codes = np.array([index.setdefault(o, len(index)) for o in owners], dtype=np.intp)
        self.tuples = list(index)
        # per record: its tuple's first device is its source (initiator); None: not known,
        # every device of a flow counts as its initiator
        self.sources = None if sources is None else np.asarray(sources, dtype=bool)

    @classmethod
    def numbered(cls, numbers: np.ndarray, table: list[tuple], sources=None) -> "Owners":
        """From each record's number in a table of tuples: renumbered in order of first
        appearance, as the constructor numbers them."""
        owners = cls([], sources)
        distinct, first, inverse = np.unique(numbers, return_index=True, return_inverse=True)
        order = np.argsort(first)
        rank = np.empty(len(order), dtype=np.intp)
        rank[order] = np.arange(len(order))
        owners.codes = rank[inverse.ravel()]
        owners.tuples = [table[t] for t in distinct[order].tolist()]
        return owners

    @classmethod
    def joined(cls, parts: list["Owners"]) -> "Owners":
        """Several batches' owners as one, numbered in the order the tuples first appear."""
        index: dict[tuple, int] = {}
        owners = cls([])
        owners.codes = np.concatenate([
            np.array([index.setdefault(t, len(index)) for t in part.tuples], dtype=np.intp)
            [part.codes] for part in parts])
        owners.tuples = list(index)
        if all(part.sources is not None for part in parts):
            owners.sources = np.concatenate([part.sources for part in parts])
        return owners

    def __len__(self) -> int:
        return len(self.codes)

    def __iter__(self):
        return map(self.tuples.__getitem__, self.codes.tolist())

    def __getitem__(self, r: int) -> tuple:
        return self.tuples[self.codes[r]]

    def pairs(self) -> "Pairs":
        """Every (record, device) pair, device by device (numbered in the order they first
        appear) and in record order within one."""
        keys: dict[str, int] = {}
        shape = (len(self.tuples), max(map(len, self.tuples), default=0))
        at, has_ip = np.full(shape, -1, np.intp), np.zeros(shape, bool)
        for t, owners in enumerate(self.tuples):
            for j, (key, ip) in enumerate(owners):
                at[t, j] = keys.setdefault(key, len(keys))
                has_ip[t, j] = ip is not None
        per_record = at[self.codes]
        rows, slots = np.nonzero(per_record >= 0)  # row-major: in record order
        devices = per_record[rows, slots]
        order = np.argsort(devices, kind="stable")  # stable: record order within a device
        rows, devices, slots = rows[order], devices[order], slots[order]
        initiator = np.ones(len(rows), bool) if self.sources is None else \
            (slots == 0) & self.sources[rows]
        return Pairs(list(keys), rows, devices, slots, has_ip[self.codes[rows], slots],
                     np.searchsorted(devices, np.arange(len(keys) + 1)), initiator)

    def ip(self, row: int, slot: int) -> str | None:
        return self.tuples[self.codes[row]][slot][1]


def device_label(key: str, ip: str | None) -> dict:
    """How an event names a device: its MAC and/or IP."""
    mac = key if is_mac(key) else None
    return {"key": key, "mac": mac, "ip": ip if ip is not None else (None if mac else key)}
