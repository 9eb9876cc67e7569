"""The devices and incident settings a bundle carries (manifest "devices" and "incidents"), read
and checked once at load: a bundle whose settings are missing or inconsistent is refused.

    "devices":   {"home_net": [CIDR, ...], "min_validation_flows": 231,
                  "fallback_threshold": T_site,          (= the anomaly threshold)
                  "known": {KEY: {"ip": ..., "flows": n, "validation_flows": m,
                                  "threshold": t | null, "first_seen": s, "last_seen": s,
                                  "services": ["tcp/443", "udp/53", ...],
                                  "new_service_bits": b}}}
    "incidents": {"threshold_bits": B, "max_flow_bits": C, "half_life_seconds": 300,
                  "close_after_seconds": 1800, "update_every_seconds": 600,
                  "max_per_device_week": 1, "validation": {...}}

A known device's `threshold` is its own operating point (from its own held-out flows); null
means it had too few of them and uses the site's fallback, as new devices do. `services` are
the services it initiated while learning (protocol / the responder's port), and a flow to any
other adds `new_service_bits` of evidence (incidents.py says why and how much).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .devices import DEFAULT_HOME_NET, parse_home_net
from .normal_rule import NormalRule, TailRule

HALF_LIFE_SECONDS = 300.0  # a flagged flow's evidence counts half after five minutes
CLOSE_AFTER_SECONDS = 1800.0  # an incident closes after 30 minutes without a flagged flow
UPDATE_EVERY_SECONDS = 600.0  # at most one update line per incident every ten minutes
# A device that joins spends its first minutes being set up (DHCP, DNS, its cloud, discovery):
# flows unlike anything the site learned, and unlike its own later normal. Its flows in this
# grace are neither evidence nor its normal; chosen with one bot left out and checked on it
# (benchmarks/detection/living.py, docs/incidents.md)
JOIN_GRACE_MINUTES = 1


class SettingsError(ValueError):
    """The bundle's devices or incidents object is missing a value or contradicts itself."""


@dataclass(frozen=True)
class IncidentSettings:
    threshold_bits: float  # a device's evidence over this opens an incident
    fallback_threshold: float  # the site's anomaly threshold: devices without their own
    known: dict  # key -> own anomaly threshold, or None (the fallback)
    home_net: tuple[str, ...] = DEFAULT_HOME_NET
    half_life: float = HALF_LIFE_SECONDS
    close_after: float = CLOSE_AFTER_SECONDS
    update_every: float = UPDATE_EVERY_SECONDS
    known_ips: dict | None = None  # key -> the IP it had while learning (for the page)
    services: dict | None = None  # key -> frozenset of the services it used while learning
    service_bits: dict | None = None  # key -> evidence of a flow to a service not among them
    max_flow_bits: float = math.inf  # the most one flow's anomaly score may say, in bits
    join_grace_minutes: float = JOIN_GRACE_MINUTES
    rule: NormalRule = NormalRule()  # learn's rule for a device's own threshold (normals.py)
    tail_rule: TailRule = TailRule()  # learn's rule for the incident threshold (normals.py)
    max_per_device_week: float = 1.0  # the false-incident budget

    def threshold(self, key: str) -> float:
        own = self.known.get(key)
        return self.fallback_threshold if own is None else own

    def new_service_bits(self, key: str, service: str) -> float:
        """Evidence of a flow to `service` for device `key`: 0 unless it is a known device that
        never used that service while learning."""
        if self.services is None:
            return 0.0
        used = self.services.get(key)
        if used is None or service in used:
            return 0.0
        return self.service_bits.get(key, 0.0)

    def with_threshold(self, bits: float) -> "IncidentSettings":
        """The same settings at another incident threshold (learn tries candidates)."""
        return replace(self, threshold_bits=bits)

    def with_home_net(self, home_net: tuple[str, ...] | None) -> "IncidentSettings":
        if not home_net:
            return self
        parse_home_net(home_net)
        return replace(self, home_net=tuple(home_net))


def read_settings(manifest: dict, anomaly_threshold: float | None) -> IncidentSettings | None:
    """The bundle's settings, None when it has neither object (a bundle without devices)."""
    devices, incidents = manifest.get("devices"), manifest.get("incidents")
    if devices is None and incidents is None:
        return None
    if not isinstance(devices, dict) or not isinstance(incidents, dict):
        missing = "devices" if not isinstance(devices, dict) else "incidents"
        raise SettingsError(f"the manifest has {'incidents' if missing == 'devices' else 'devices'}"
                            f" but no \"{missing}\" object; rebuild the bundle with edge-ids learn")
    if anomaly_threshold is None:
        raise SettingsError("incident settings need an anomaly model; rebuild the bundle with "
                            "edge-ids learn")
    fallback = _number(devices, "fallback_threshold", "devices", minimum=0.0)
    if not math.isclose(fallback, anomaly_threshold, rel_tol=1e-9, abs_tol=1e-15):
        raise SettingsError(f"devices.fallback_threshold {fallback!r} is not the anomaly "
                            f"threshold {anomaly_threshold!r}")
    known_raw = devices.get("known")
    if not isinstance(known_raw, dict):
        raise SettingsError("devices.known is not an object of devices")
    known, ips, services, service_bits = {}, {}, {}, {}
    for key, device in known_raw.items():
        if not isinstance(device, dict):
            raise SettingsError(f"devices.known[{key!r}] is not an object")
        where = f"devices.known[{key!r}]"
        own = device.get("threshold")
        if own is not None:
            own = _number(device, "threshold", where, minimum=0.0)
        known[key], ips[key] = own, device.get("ip")
        used = device.get("services", [])
        if not isinstance(used, list) or not all(isinstance(s, str) for s in used):
            raise SettingsError(f"{where}.services is not a list of services")
        services[key] = frozenset(used)
        service_bits[key] = _number(device, "new_service_bits", where, minimum=0.0) \
            if "new_service_bits" in device else 0.0
    try:
        home_net = tuple(parse_home_net(devices.get("home_net") or ()))
    except ValueError as e:
        raise SettingsError(f"devices.home_net: {e}") from None
    anomaly = manifest.get("anomaly") or {}
    max_fpr = anomaly.get("max_fpr", 0.01)
    try:
        rule = NormalRule.of(devices, float(max_fpr))
        if not 0 < rule.max_fpr <= 0.5 or len(rule.upper_bounds) < 2 or \
                list(rule.upper_bounds) != sorted(rule.upper_bounds):
            raise ValueError(rule)
    except (TypeError, ValueError):
        raise SettingsError(f"devices.rule {devices.get('rule')!r} is not learn's rule (max_fpr "
                            f"in (0, 0.5], upper_bounds ascending)") from None
    budget = incidents.get("max_per_device_week", 1.0)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not \
            math.isfinite(budget) or budget <= 0:
        raise SettingsError(f"incidents.max_per_device_week is {budget!r}, not a finite "
                            f"number > 0")
    tail = TailRule.of(incidents)
    if len(tail.upper_bounds) < 2 or len(tail.scale_quantiles) < 1:
        raise SettingsError("incidents.tail_rule lacks its tables")
    return IncidentSettings(
        rule=rule, tail_rule=tail, max_per_device_week=float(budget), threshold_bits=_number(incidents, "threshold_bits", "incidents", minimum=0.0,
                               open_minimum=True),
        fallback_threshold=fallback, known=known,
        home_net=tuple(str(n) for n in home_net),
        half_life=_number(incidents, "half_life_seconds", "incidents", minimum=0.0,
                          open_minimum=True),
        close_after=_number(incidents, "close_after_seconds", "incidents", minimum=0.0,
                            open_minimum=True),
        update_every=_number(incidents, "update_every_seconds", "incidents", minimum=0.0),
        known_ips=ips, services=services, service_bits=service_bits,
        max_flow_bits=_number(incidents, "max_flow_bits", "incidents", minimum=0.0,
                              open_minimum=True))


def _number(obj: dict, name: str, where: str, minimum: float, open_minimum: bool = False
            ) -> float:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value < minimum or (open_minimum and value == minimum):
        bound = f"> {minimum:g}" if open_minimum else f">= {minimum:g}"
        raise SettingsError(f"{where}.{name} is {value!r}, not a finite number {bound}")
    return float(value)
