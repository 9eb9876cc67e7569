"""A flow's service (its protocol and the responder's port), and which devices never used it.

Argus writes a flow initiator -> responder (as Zeek's id.resp_p), so the responder's port is the
service: the one the device asked for when it initiated the flow (incidents are its
initiator's), the one it answered on when another did. (The lower of the two ports, as before,
gave inbound connections from low ports and UDP between two high ports the wrong service.)

The daemon checks every flow of every device against the services that device used while
learning. One flow at a time in Python that was a large part of what incidents cost, so a
batch's services are numbers made with numpy and looked up against every device's at once, in
one sorted array of (device, service) pairs (a binary search: no library does this better here).
The rule is written once, in ServiceIndex.numbers; names are made from the numbers.

A port is 1 to 5 ASCII digits (Argus writes 16-bit ports in decimal; ICMP's "0x0303" is not a
port); protocols have no "/" in them; a flow with one port that is not one has none.
"""
from __future__ import annotations

import numpy as np

PORT_BITS = 17  # a service's number: protocol << PORT_BITS | (port + 1), or 0 for no port
MAX_PROTOCOLS = 256  # protocols numbered (Argus names a few dozen)


def _is_port(text: str) -> bool:
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit()


def service_of(proto: str, sport: str, dport: str) -> str:
    """A flow's service: its protocol and the responder's port, or the protocol alone (ICMP,
    ARP, ...): the one rule (services_of), for a flow."""
    return str(services_of(np.array([proto]), np.array([sport]), np.array([dport]))[0])


_PLACES = np.array([[10 ** (n - 1 - j) if j < n else 0 for j in range(5)] for n in range(6)],
                   dtype=np.int32)  # per length, each digit's place value


def ports_of(texts: np.ndarray) -> np.ndarray:
    """Per text its port, or -1 where it is not one. By hand from the characters' code points:
    numpy's text-to-integer cast goes through Python integers (about 190 ns a value here,
    against about 70 ns this way for a batch of 1,024)."""
    texts = np.asarray(texts)
    if texts.dtype.kind != "U":
        texts = texts.astype(str)
    width = texts.dtype.itemsize // 4
    if not width:
        return np.full(len(texts), -1, dtype=np.int32)
    lengths = np.strings.str_len(texts)  # (numpy pads texts with NULs, which are not digits)
    digits = np.ascontiguousarray(texts).view(np.uint32).reshape(len(texts), width)[:, :5] \
        .astype(np.int32) - ord("0")
    valid = (lengths > 0) & (lengths <= 5) & (((digits >= 0) & (digits <= 9)).sum(axis=1)
                                              == lengths)
    ports = (digits * _PLACES[np.minimum(lengths, 5), :digits.shape[1]]).sum(axis=1)
    return np.where(valid, ports, -1)


def services_of(proto: np.ndarray, sport: np.ndarray, dport: np.ndarray) -> np.ndarray:
    """Each flow's service name (for learning: the daemon keeps the numbers, ServiceIndex)."""
    index = ServiceIndex()
    numbers = index.numbers(proto, sport, dport)
    if not len(numbers):
        return np.array([], dtype=str)
    distinct, inverse = np.unique(numbers, return_inverse=True)
    return np.array([index.name(n) for n in distinct.tolist()])[inverse.ravel()]


class ServiceIndex:
    """The services each device uses, as numbers: a batch's (device, service) pairs are looked
    up as integers (texts as long as "MAC service" for every pair of a batch cost several
    times more, in copies, sorts and comparisons). Devices' services change on the device
    (normals.py: graduation, a day's new services, the operator's accept), so a device's set can
    be replaced, and protocols get their numbers as they are first seen (at most
    MAX_PROTOCOLS: Argus knows a few dozen; a flood of made-up ones cannot grow it)."""

    def __init__(self, services: dict | None = None):
        self._proto: dict[str, int] = {}  # protocol -> its number, in the order first seen
        self._names = np.array([], dtype=str)  # the protocols, sorted (to look a batch up)
        self._ids = np.array([], dtype=np.int64)  # their numbers, in that order
        self._device: dict[str, int] = {}  # key -> its id (devices with services only)
        self._next = 0  # ids are never reused: an id's old pairs may still be in _pairs
        self._sets: dict[str, frozenset] = {}  # key -> its service numbers
        self._pairs = np.array([], dtype=np.int64)  # device << 32 | service, sorted
        self._changed: set[int] = set()  # ids whose pairs above are stale
        for key, used in sorted((services or {}).items()):
            self.set(key, [self.number(name) for name in sorted(used)])

    @property
    def devices(self):
        return self._sets.keys()

    def services(self, key: str) -> frozenset | None:
        """A device's service numbers, or None for one with no services on record."""
        return self._sets.get(key)

    def set(self, key: str, numbers) -> None:
        """A device's services are now these numbers (-1s are left out). Cheap: the sorted
        pairs are rebuilt when next read, once for all the changes since (a reload changes
        every device at once)."""
        numbers = frozenset(n for n in numbers if n >= 0)
        if self._sets.get(key) == numbers:
            return
        if key not in self._device:
            self._device[key] = self._next
            self._next += 1
        self._sets[key] = numbers
        self._changed.add(self._device[key])

    def drop(self, key: str) -> None:
        """The device has no services on record any more (forgotten, or back on probation)."""
        if self._sets.pop(key, None) is not None:
            self._changed.add(self._device.pop(key))

    def clear(self) -> None:
        """No device has services on record (the numbers of protocols stay)."""
        self._sets.clear()
        self._device.clear()
        self._changed.clear()
        self._pairs = np.array([], dtype=np.int64)

    def _rebuild(self) -> None:
        device = self._device
        self._pairs = np.array(sorted(device[key] << 32 | n for key, used in self._sets.items()
                                      for n in used), dtype=np.int64)
        self._changed.clear()

    def _register(self, protos) -> None:
        for proto in protos:
            if proto not in self._proto and len(self._proto) < MAX_PROTOCOLS:
                self._proto[proto] = len(self._proto)
        names = sorted(self._proto)
        self._names = np.array(names, dtype=str)
        self._ids = np.array([self._proto[n] for n in names], dtype=np.int64)

    def number(self, name: str) -> int:
        """A service's number (-1 only when MAX_PROTOCOLS protocols are known already)."""
        proto, port = _split(name)
        if proto not in self._proto:
            self._register([proto])
        if proto not in self._proto:
            return -1
        return self._proto[proto] << PORT_BITS | (0 if port is None else port + 1)

    def name(self, number: int) -> str:
        """The service a number stands for ("tcp/443", "icmp")."""
        proto = next((p for p, i in self._proto.items() if i == number >> PORT_BITS), "?")
        port = (number & ((1 << PORT_BITS) - 1)) - 1
        return proto if port < 0 else f"{proto}/{port}"

    def numbers(self, proto: np.ndarray, sport: np.ndarray, dport: np.ndarray) -> np.ndarray:
        """Per flow the number of its service, without making its text: the rule."""
        proto = np.asarray(proto)
        if not len(proto):
            return np.array([], dtype=np.int64)
        sport, dport = ports_of(sport), ports_of(dport)
        ported = (sport >= 0) & (dport >= 0)
        names = np.where(ported | (proto != ""), proto, "?")  # no protocol, no ports: "?"
        protos = self._lookup(names)
        if (protos < 0).any():  # protocols seen for the first time (rare): numbered now
            self._register(np.unique(names[protos < 0]).tolist())
            protos = self._lookup(names)
        numbers = protos << PORT_BITS | np.where(ported, dport + 1, 0)
        return np.where(protos < 0, -1, numbers)

    def _lookup(self, names: np.ndarray) -> np.ndarray:
        if not len(self._names):
            return np.full(len(names), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._names, names), len(self._names) - 1)
        return np.where(self._names[at] == names, self._ids[at], -1)

    def numbered(self, services) -> np.ndarray:
        """Services as their numbers, whether given as numbers or as names ("tcp/443")."""
        services = np.asarray(services)
        if services.dtype.kind not in "UO" or not len(services):
            return services.astype(np.int64, copy=False)
        names, inverse = np.unique(services, return_inverse=True)  # a batch has a few
        return np.array([self.number(n) for n in names.tolist()],
                        dtype=np.int64)[inverse.ravel()]

    def unused(self, keys: list[str], devices: np.ndarray, services: np.ndarray
               ) -> np.ndarray:
        """Per (device, service) pair: True where that device has services on record and this
        is not one of them (devices: indices into keys; services: their numbers)."""
        known = np.array([k in self._sets for k in keys], dtype=bool)[devices]
        if not known.any():
            return known
        if self._changed:  # (once for all the changes since: a reload's are one rebuild)
            self._rebuild()
        if not len(self._pairs):
            return known
        device = np.array([self._device.get(k, -1) for k in keys], dtype=np.int64)[devices]
        pairs = device << 32 | services  # a service never numbered (-1): no learned pair
        found = np.minimum(np.searchsorted(self._pairs, pairs), len(self._pairs) - 1)
        return known & ((self._pairs[found] != pairs) | (services < 0))


def _split(name: str) -> tuple[str, int | None]:
    """A service's name as (protocol, port or None): "tcp/443", "icmp", "?" (no protocol)."""
    proto, slash, port = name.rpartition("/")
    return (proto, int(port)) if slash and _is_port(port) else (name, None)
