"""Which local device(s) a flow belongs to: the endpoints inside the home networks.

A flow belongs to each of its endpoints whose address is inside `--home-net` (default: the
private ranges, as Suricata's HOME_NET), keyed by that endpoint's MAC where the flow has a
unicast one, else by the MAC last seen for that address, else by the address itself. So a device
keeps one identity across its IPv4 and IPv6 flows and a changed DHCP lease, and an ARP request
(sent to the broadcast MAC) still reaches the device it asks about. Multicast and broadcast
addresses (IPv4 x.x.x.255 counts as a broadcast) are never devices; a DHCP client's 0.0.0.0
is, by its MAC. Flows without IP addresses
(EAPOL, LLC) belong to no device.

Written by hand, not with a library: the rule is a few lines, and it runs for every flow on the
device, so the parsed addresses and the answers are memoised (bounded, so that a flood of made-up
addresses cannot grow memory).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from itertools import islice
from typing import Iterable

import numpy as np

DEFAULT_HOME_NET = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fe80::/10")
ADDRESS_COLUMNS = {"src": ("SrcAddr", "saddr"), "dst": ("DstAddr", "daddr")}
MAC_COLUMNS = {"src": ("SrcMac", "smac"), "dst": ("DstMac", "dmac")}
MEMO_LIMIT = 4096  # answers remembered; past it the oldest quarter goes (flows repeat them)
BINDINGS_LIMIT = 16384  # address -> MAC bindings remembered (as many as devices kept)
_HEX = frozenset("0123456789abcdef")


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
    """The MAC in lower case if `text` is a unicast MAC (not broadcast or multicast)."""
    mac = text.strip().lower()
    if len(mac) != 17 or mac.count(":") != 5 or not set(mac.replace(":", "")) <= _HEX:
        return None
    return None if int(mac[:2], 16) & 1 else mac


def is_mac(key: str) -> bool:
    return unicast_mac(key) is not None


class HomeNet:
    """Is an address text a local device's? Memoised."""

    def __init__(self, cidrs: Iterable[str] = DEFAULT_HOME_NET):
        self.cidrs = tuple(str(n) for n in parse_home_net(cidrs))
        self._networks = parse_home_net(self.cidrs)
        self._memo: dict[str, str | None] = {}

    def classify(self, text: str) -> str | None:
        """"local", "unspecified" (0.0.0.0 or ::: a DHCP client) or None (not a device)."""
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
            else:
                answer = "local" if any(address in n for n in self._networks
                                        if n.version == address.version) else None
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
        self._mac_of_ip: dict[str, str] = {}
        self._memo: dict[tuple, tuple] = {}

    def seed(self, known: dict) -> None:
        """Start from the address -> MAC bindings of the learning period (key -> its IP), so
        that flows before a device's MAC is seen again are still given to it by MAC."""
        for key, ip in known.items():
            if ip and is_mac(key):
                self._mac_of_ip[ip] = key
        self._memo.clear()

    @property
    def usable(self) -> bool:
        """The layout names both addresses: flows can be given to devices."""
        return None not in self.addresses

    @property
    def text_columns(self) -> tuple[str, ...]:
        return tuple(c for c in (*self.addresses, *self.macs) if c)

    def attribute(self, columns: dict) -> list[tuple]:
        """One tuple of (key, ip) per record (empty: no local device)."""
        n = len(columns[self.addresses[0]])
        empty = [""] * n
        fields = [columns[c].tolist() if c else empty
                  for c in (self.addresses[0], self.macs[0], self.addresses[1], self.macs[1])]
        memo = self._memo
        out = []
        for flow in zip(*fields):
            devices = memo.get(flow)
            if devices is None:
                devices = self._resolve(flow)
            out.append(devices)
        return out

    def _resolve(self, flow: tuple) -> tuple:
        src, src_mac, dst, dst_mac = flow
        devices = []
        for address, mac_text in ((src, src_mac), (dst, dst_mac)):
            kind = self.home_net.classify(address)
            if kind is None:
                continue
            mac = unicast_mac(mac_text)
            if kind == "unspecified":
                if mac is not None:
                    devices.append((mac, None))
                continue
            if mac is not None:
                if self._mac_of_ip.get(address) != mac:
                    self._learn(address, mac)
                key = mac
            else:
                key = self._mac_of_ip.get(address, address)
            if all(key != k for k, _ in devices):
                devices.append((key, address))
        devices = tuple(devices)
        remember(self._memo, flow, devices)
        return devices

    def _learn(self, address: str, mac: str) -> None:
        """A new address -> MAC binding: earlier answers keyed by the address may be stale."""
        if len(self._mac_of_ip) >= BINDINGS_LIMIT:
            self._mac_of_ip.pop(next(iter(self._mac_of_ip)))  # the oldest binding
        self._mac_of_ip[address] = mac
        self._memo.clear()


@dataclass
class Pairs:
    """A batch's (record, device) pairs, grouped by device: device d's are bounds[d]:bounds[d+1]."""

    keys: list[str]  # the batch's devices, in the order they first appear
    rows: np.ndarray  # per pair: its record
    devices: np.ndarray  # per pair: its device (index into keys)
    slots: np.ndarray  # per pair: the device's place in the record's tuple
    has_ip: np.ndarray  # per pair: the record gives the device's address
    bounds: np.ndarray


class Owners:
    """The devices of a batch's records, each distinct tuple of (key, ip) once, and per record
    the index of its tuple: flows repeat their devices, so what is done per tuple (a device's
    threshold, its place in the batch) is not done per record."""

    def __init__(self, owners: list[tuple]):
        index: dict[tuple, int] = {}
        self.codes = np.array([index.setdefault(o, len(index)) for o in owners], dtype=np.intp)
        self.tuples = list(index)

    def __len__(self) -> int:
        return len(self.codes)

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
        return Pairs(list(keys), rows, devices, slots, has_ip[self.codes[rows], slots],
                     np.searchsorted(devices, np.arange(len(keys) + 1)))

    def ip(self, row: int, slot: int) -> str | None:
        return self.tuples[self.codes[row]][slot][1]


def device_label(key: str, ip: str | None) -> dict:
    """How an event names a device: its MAC and/or IP."""
    mac = key if is_mac(key) else None
    return {"key": key, "mac": mac, "ip": ip if ip is not None else (None if mac else key)}
