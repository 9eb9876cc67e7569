"""A flow's service (its protocol and the lower of its two ports), and which devices never used it.

The daemon checks every flow of every device against the services that device used while
learning. One flow at a time in Python that was a large part of what incidents cost, so a
batch's services are made with numpy's text functions and looked up against every device's
at once, in one sorted array of "device service" texts (a binary search: no library does this
better here).
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
    """The services each known device used while learning."""

    def __init__(self, services: dict | None):
        self.devices = frozenset(services or ())
        # device keys (MACs, addresses) have no spaces, so "key service" is unambiguous
        self._pairs = np.array(sorted(f"{key} {name}" for key, used in (services or {}).items()
                                      for name in used), dtype=str)

    def unused(self, keys: list[str], devices: np.ndarray, services: np.ndarray
               ) -> np.ndarray:
        """Per (device, service) pair: True where that known device never used that service
        (devices: indices into keys; a device with no services on record is never True)."""
        known = np.array([k in self.devices for k in keys], dtype=bool)[devices]
        if not known.any() or not len(self._pairs):
            return known
        pairs = np.strings.add(np.strings.add(np.array(keys, dtype=str)[devices], " "),
                               services)
        found = np.minimum(np.searchsorted(self._pairs, pairs), len(self._pairs) - 1)
        return known & (self._pairs[found] != pairs)
