"""A flow's service (its protocol and the lower of its two ports), and which devices never used it.

The daemon checks every flow of every device against the services that device used while
learning. One flow at a time in Python that was a large part of what incidents cost, so a
batch's services are numbers made with numpy and looked up against every device's at once, in
one sorted array of (device, service) pairs (a binary search: no library does this better here).

A port is 1 to 5 ASCII digits (Argus writes 16-bit ports in decimal; ICMP's "0x0303" is not a
port); protocols have no "/" in them.
"""
from __future__ import annotations

import numpy as np

PORT_BITS = 17  # a service's number: protocol << PORT_BITS | (port + 1), or 0 for no port


def _is_port(text: str) -> bool:
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit()


def service_of(proto: str, sport: str, dport: str) -> str:
    """A flow's service: its protocol and the lower of its two ports (the well-known side,
    whichever way Argus saw the flow start), or the protocol alone (ICMP, ARP, ...)."""
    if _is_port(sport) and _is_port(dport):
        return f"{proto}/{min(int(sport), int(dport))}"
    return proto or "?"


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
    """service_of for a batch at once (for learning: the daemon numbers them, ServiceIndex)."""
    proto = np.asarray(proto).astype(str)
    sport, dport = ports_of(sport), ports_of(dport)
    ported = (sport >= 0) & (dport >= 0)
    low = np.minimum(sport, dport).astype(str)
    return np.where(ported, np.strings.add(np.strings.add(proto, "/"), low),
                    np.where(proto != "", proto, "?"))


class ServiceIndex:
    """The services each known device used while learning, as numbers: a batch's (device,
    service) pairs are looked up as integers (texts as long as "MAC service" for every pair
    of a batch cost several times more, in copies, sorts and comparisons)."""

    def __init__(self, services: dict | None):
        services = services or {}
        self.devices = frozenset(services)
        self._device = {key: i for i, key in enumerate(services)}
        names = {name for used in services.values() for name in used}
        self._protos = np.array(sorted({_split(name)[0] for name in names}), dtype=str)
        self._proto = {proto: i for i, proto in enumerate(self._protos.tolist())}
        self._pairs = np.array(sorted(self._device[key] << 32 | self.number(name)
                                      for key, used in services.items() for name in used),
                               dtype=np.int64)

    def number(self, name: str) -> int:
        """A service's number, or -1 for one no device used while learning."""
        proto, port = _split(name)
        if proto not in self._proto:
            return -1
        return self._proto[proto] << PORT_BITS | (0 if port is None else port + 1)

    def numbers(self, proto: np.ndarray, sport: np.ndarray, dport: np.ndarray) -> np.ndarray:
        """Per flow the number of its service (service_of), without making its text."""
        proto = np.asarray(proto)
        if not len(self._protos):
            return np.full(len(proto), -1, dtype=np.int64)
        sport, dport = ports_of(sport), ports_of(dport)
        ported = (sport >= 0) & (dport >= 0)
        at = np.minimum(np.searchsorted(self._protos, proto), len(self._protos) - 1)
        protos = np.where(self._protos[at] == proto, at, -1)
        # without ports, a flow without a protocol is "?"
        portless = np.where(proto == "", self._proto.get("?", -1), protos)
        numbers = np.where(ported, protos.astype(np.int64) << PORT_BITS | (np.minimum(
            sport, dport) + 1), portless.astype(np.int64) << PORT_BITS)
        return np.where(np.where(ported, protos, portless) < 0, -1, numbers)

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
        """Per (device, service) pair: True where that known device never used that service
        (devices: indices into keys; services: their numbers; a device with no services on
        record is never True)."""
        known = np.array([k in self.devices for k in keys], dtype=bool)[devices]
        if not known.any() or not len(self._pairs):
            return known
        device = np.array([self._device.get(k, -1) for k in keys], dtype=np.int64)[devices]
        pairs = device << 32 | services  # a service never learned (-1): no learned pair
        found = np.minimum(np.searchsorted(self._pairs, pairs), len(self._pairs) - 1)
        return known & ((self._pairs[found] != pairs) | (services < 0))


def _split(name: str) -> tuple[str, int | None]:
    """A service's name as (protocol, port or None): "tcp/443", "icmp", "?" (no protocol)."""
    proto, slash, port = name.rpartition("/")
    return (proto, int(port)) if slash and _is_port(port) else (name, None)
