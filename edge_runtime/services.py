"""A flow's service (its protocol and the lower of its two ports), and which devices never used it.

The daemon checks every flow of every device against the services that device used while
learning. One flow at a time in Python that was a large part of what incidents cost, so a
batch's services are made with numpy's text functions and looked up against every device's
at once, as numbers in one sorted array of (device, service) pairs (a binary search: no library
does this better here).
"""
from __future__ import annotations

import numpy as np


def service_of(proto: str, sport: str, dport: str) -> str:
    """A flow's service: its protocol and the lower of its two ports (the well-known side,
    whichever way Argus saw the flow start), or the protocol alone (ICMP, ARP, ...)."""
    if sport.isdigit() and dport.isdigit():
        return f"{proto}/{min(int(sport), int(dport))}"
    return proto or "?"


def services_of(proto: np.ndarray, sport: np.ndarray, dport: np.ndarray) -> np.ndarray:
    """service_of for a batch at once. Decimal ports compare by length, then as text, so no
    port is converted to a number (Argus writes ports without leading zeros)."""
    proto, sport, dport = (np.asarray(c).astype(str) for c in (proto, sport, dport))
    ported = np.strings.isdigit(sport) & np.strings.isdigit(dport)
    slen, dlen = np.strings.str_len(sport), np.strings.str_len(dport)
    low = np.where((slen < dlen) | ((slen == dlen) & (sport < dport)), sport, dport)
    return np.where(ported, np.strings.add(np.strings.add(proto, "/"), low),
                    np.where(proto != "", proto, "?"))


class ServiceIndex:
    """The services each known device used while learning, as numbers: a batch's (device,
    service) pairs are looked up as integers (texts as long as "MAC service" for every pair
    of a batch cost several times more, in copies and comparisons)."""

    def __init__(self, services: dict | None):
        services = services or {}
        self.devices = frozenset(services)
        self._device = {key: i for i, key in enumerate(services)}
        self._service = {name: i for i, name in enumerate(sorted(
            {name for used in services.values() for name in used}))}
        self._pairs = np.array(sorted(self._device[key] << 32 | self._service[name]
                                      for key, used in services.items() for name in used),
                               dtype=np.int64)

    def unused(self, keys: list[str], devices: np.ndarray, services: np.ndarray
               ) -> np.ndarray:
        """Per (device, service) pair: True where that known device never used that service
        (devices: indices into keys; a device with no services on record is never True)."""
        known = np.array([k in self.devices for k in keys], dtype=bool)[devices]
        if not known.any() or not len(self._pairs):
            return known
        names, inverse = np.unique(services, return_inverse=True)  # a batch has a few
        service = np.array([self._service.get(name, -1) for name in names.tolist()],
                           dtype=np.int64)[inverse.ravel()]
        device = np.array([self._device.get(k, -1) for k in keys], dtype=np.int64)[devices]
        pairs = device << 32 | service  # a service never learned (-1): no learned pair
        found = np.minimum(np.searchsorted(self._pairs, pairs), len(self._pairs) - 1)
        return known & ((self._pairs[found] != pairs) | (service < 0))
