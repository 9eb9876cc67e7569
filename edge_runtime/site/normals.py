"""Each device's normal, kept up to date on the device: a device that joins after learning, or a
quiet device that had too few held-out flows, gets a normal of its own without the host.

A device's normal is its own anomaly threshold and the services it uses. Its **stage**:

- `known`: the bundle gave it its own threshold (learned on the host);
- `probation`: no threshold of its own yet (a device the bundle does not know, or a known one
  with too few held-out flows): it is held to the site's threshold (the fallback) while its
  own normal is collected from its flows; a device the bundle does not know has no services
  on record yet, so a new service is no evidence against it;
- `learned`: it graduated on the device, and is watched exactly as a known device.

**Which flows feed it**: every flow of the device except the flows of an incident, those a
classifier names as an attack, those with a peer the operator accepted, and any while the
operator has muted it. A flagged flow waits in its episode until the episode ends without an
incident (an incident drops what waited: a bot that is reported never teaches its device that
it is normal). A normal changes only while its device has no episode, at the device's first
flow once it may (incidents.py), so that how batches were cut never changes it.

**Graduation**: a device on probation with enough collected flows for the budget's share of
them to be measured (`rule.measured_flows`: 500 at a 1 % budget, as a busy known device's own
threshold is) and a day since its last change graduates: its threshold comes from learn's rule
on the collected scores, and a device the bundle did not know takes the services it used (a
new one is then evidence, log2(budget / P(new)) bits by Good-Turing, as learn gives them).

**Its own incident budget**: the incident threshold is calibrated on the known devices' held-out
episodes; a device on probation or learned on the device keeps the peaks of its own episodes
that ended without an incident, and once a day its incident threshold becomes what learn's tail
rule (`TailRule`) gives them for the budget over the time it has been watched, never below the
bundle's (the first at most twice the bundle's, then at most x√2 a day): so a device that keeps
brushing against the threshold (a camera whose flows the site's model never learned) stays
within the budget too.

**Bounded change after that**, for known and learned devices alike: at most once a day, and
only once its window holds enough flows for the budget's share to be measured
(`rule.measured_flows`: 500 at 1 %), the threshold moves toward what the window gives by at
most a factor THRESHOLD_RATE (doubling takes two days), and at most NEW_SERVICES_A_DAY
services, each used by at least two of its flows, join; a device learned on the device takes
the new-service bits its window gives. Each change is one EVE line.

A device's window keeps growing across its changes (a quiet device's rule gets sharper with
every day), and is halved at a change once it holds more than half of what learn's rule can use
exactly (`Window.forget`): it weighs recent days more, and forgets. Scores are kept as ratios
to the site's threshold: each model has its own scale, and a device learned on the device keeps
its normal across a reload to another model.
"""
from __future__ import annotations

import math

from .incident_settings import IncidentSettings
from array import array
from bisect import insort

from .normal_rule import OTHER, NormalRule, TailRule, Window, service_bits
from .services import ServiceIndex

DAY = 86400.0
WEEK = 7 * DAY
MAX_NORMAL_SERVICES = 64  # services a normal learned on the device may hold
THRESHOLD_RATE = math.sqrt(2.0)  # a threshold moves at most by this factor a day
NEW_SERVICES_A_DAY = 4  # services that may join a normal a day
MIN_CHANGE = 0.05  # a threshold that would move by less than 5 % does not change
BITS_FALL = 1.0  # a learned device's new-service evidence falls at most this much a day
MAX_PEERS = 16  # peers the operator accepted, per device
# Shared by every device that has none: in Python 3.11 each frozenset() and array() is a new
# object (about 300 bytes the two), and most devices never get either.
NO_PEERS: frozenset = frozenset()
NO_PEAKS = ()


class Normal:
    """One device's living normal (the tracker keeps it with the device)."""

    __slots__ = ("stage", "ratio", "services", "bits", "window", "changed", "joined", "muted",
                 "peers", "since", "peaks", "incident_bits")

    def __init__(self, stage: str, ratio: float | None, services: frozenset | None,
                 bits: float, start: float, joined: float | None):
        self.stage = stage  # "known", "probation" or "learned"
        self.ratio = ratio  # its threshold / the site's; None: the site's
        self.services = services  # service numbers; None: none on record (no evidence)
        self.bits = bits  # evidence of a flow to a service not among them
        self.window = Window(start)
        self.changed = start  # flow time of its last change (or its first flow)
        self.joined = joined  # a device the bundle did not know: when it was first seen
        self.muted: float | None = None  # silenced by the operator until then (flow time)
        self.peers = NO_PEERS  # peers the operator accepted (a new set each): never evidence
        self.since = start  # watched since (its own incident budget counts from here)
        self.peaks = NO_PEAKS  # its episodes' highest peaks (ascending), no incident
        self.incident_bits: float | None = None  # its own incident threshold (None: the site's)

    def muted_at(self, t: float) -> bool:
        """The operator has it muted at flow time t."""
        return self.muted is not None and t < self.muted

    def add_peak(self, peak: float, keep: int) -> None:
        """An episode ended without an incident at this peak evidence."""
        if len(self.peaks) < keep:
            if not self.peaks:  # (NO_PEAKS, shared: never changed in place)
                self.peaks = array("f")
            insort(self.peaks, peak)
        elif peak > self.peaks[0]:
            del self.peaks[0]
            insort(self.peaks, peak)

    def may_change(self, t: float, flows: int, rule: NormalRule, tail: TailRule,
                   peaks: int = 0) -> bool:
        """Could it change by flow time t with `flows` more flows and `peaks` more episodes
        ended (a quick test, so that only a device about to change is taken flow by flow)?"""
        if self.muted_at(t) or t - self.changed < DAY:
            return False
        return self.window.flows + flows >= rule.measured_flows or \
            (self.stage != "known" and len(self.peaks) + peaks > tail.min_tail)

    def ripe(self, t: float, rule: NormalRule, tail: TailRule) -> bool:
        """May it change now (its device has no episode)?"""
        return self.may_change(t, 0, rule, tail)

    def change(self, t: float, rule: NormalRule, tail: TailRule, budget: float,
               site_bits: float, name=str) -> dict | None:
        """Graduate, or move at the bounded rate; its own incident threshold; what changed
        (for its line), or None."""
        window, before = self.window, self.ratio
        measured = window.flows >= rule.measured_flows
        proposed = rule.threshold(window) if measured else None
        change: dict = self._own_budget(t, tail, budget, site_bits)
        if self.stage == "probation":
            self.changed = t
            if proposed is None:
                if change:
                    change |= {"change": "updated", "flows": window.flows,
                               "since": window.start}
                return change or None
            self.stage, self.ratio = "learned", proposed
            if self.services is None:  # a new device: the services it used, and their bits
                used = sorted((s for s in window.services if s != OTHER),
                              key=lambda s: (-window.services[s], name(s)))
                self.services = frozenset(used[:MAX_NORMAL_SERVICES])
                self.bits = service_bits(window.services, rule.max_fpr)
                change["services_added"] = sorted(self.services)
            change |= {"change": "learned", "threshold_ratio": proposed}
        elif measured:
            if proposed is not None and before is not None:
                bounded = min(max(proposed, before / THRESHOLD_RATE), before * THRESHOLD_RATE)
                if abs(math.log(bounded / before)) > math.log1p(MIN_CHANGE):
                    self.ratio = bounded
                    change |= {"threshold_ratio": bounded, "was_ratio": before,
                               "proposed_ratio": proposed}
            added = self._new_services(window, name)
            if added:
                self.services = self.services | frozenset(added)
                change["services_added"] = added
            if self.stage == "learned" and self.services is not None:
                # what its window gives, falling at most BITS_FALL a day (a device probed with
                # new services every day must not lose its new-service evidence at once)
                bits = max(service_bits(window.services, rule.max_fpr), self.bits - BITS_FALL)
                if abs(bits - self.bits) > 0.05:
                    change["bits_were"], self.bits = self.bits, bits
            if change:
                change["change"] = "updated"
        elif change:
            change["change"] = "updated"
        if change:  # what it was learned from
            change |= {"flows": window.flows, "since": window.start}
        self.changed = t
        window.forget(rule.window_flows // 2)
        return change or None

    def _own_budget(self, t: float, tail: TailRule, budget: float, site_bits: float) -> dict:
        """Its own incident threshold from its episodes (a known device keeps the site's): the
        first at most twice the bundle's (one step, as graduation is), then rising at most by
        THRESHOLD_RATE a day; what changed."""
        if self.stage == "known":
            return {}
        bits, _ = tail.threshold(self.peaks, (t - self.since) / WEEK, budget)
        most = 2 * site_bits if self.incident_bits is None else \
            self.incident_bits * THRESHOLD_RATE
        new = None if bits is None or bits <= site_bits else min(bits, most)
        if (new is None) == (self.incident_bits is None) and \
                (new is None or abs(new - self.incident_bits) < 0.05):
            return {}
        was, self.incident_bits = self.incident_bits, new
        return {"incident_bits": new, "incident_bits_were": was}

    def _new_services(self, window: Window, name) -> list[int]:
        """The most used of the window's services it does not have (ties: by name, so that no
        run's numbering decides), at most NEW_SERVICES_A_DAY, each used at least twice."""
        if self.services is None or len(self.services) >= MAX_NORMAL_SERVICES:
            return []
        fresh = sorted((s for s, n in window.services.items()
                        if s != OTHER and n >= 2 and s not in self.services),
                       key=lambda s: (-window.services[s], name(s)))
        room = MAX_NORMAL_SERVICES - len(self.services)
        return sorted(fresh[:min(NEW_SERVICES_A_DAY, room)])


class Normals:
    """The devices' normals as the watch and the tracker read them: each device's threshold and
    services now (the bundle's, or what the device learned since), and how they start."""

    def __init__(self, settings: IncidentSettings, rule: NormalRule, adapt: bool = True,
                 index: ServiceIndex | None = None):
        self.settings, self.rule, self.adapt = settings, rule, adapt
        # (another bundle keeps the index: its numbers are those the devices' normals hold)
        self.index = index or ServiceIndex()
        self.index.clear()
        for key, used in sorted((settings.services or {}).items()):  # (sorted: the numbers
            self.index.set(key, [self.index.number(name) for name in sorted(used)])  # repeat)
        self.own: dict[str, float | None] = {}  # key -> its threshold, over the bundle's
        self.bits: dict[str, float] = {}  # key -> its new-service bits, over the bundle's
        self.version = 0  # counts changes of thresholds (what the watch remembers)

    @property
    def fallback(self) -> float:
        return self.settings.fallback_threshold

    def threshold(self, key: str) -> float:
        own = self.own.get(key, False)
        if own is False:
            return self.settings.threshold(key)
        return self.fallback if own is None else own

    def service_bits(self, key: str) -> float:
        """Evidence of a flow to a service the device does not use (0: none on record)."""
        if self.index.services(key) is None:
            return 0.0
        bits = self.bits.get(key)
        if bits is None:
            bits = (self.settings.service_bits or {}).get(key, 0.0)
        return bits

    def start(self, key: str, t: float) -> Normal:
        """The normal of a device the tracker starts to remember: the bundle's, or probation."""
        settings = self.settings
        if key in settings.known:
            own = settings.known[key]
            return Normal("probation" if own is None else "known",
                          None if own is None else own / self.fallback,
                          self.index.services(key), self.service_bits(key), t, None)
        return Normal("probation", None, None, 0.0, t, t)

    def adopt(self, key: str, normal: Normal) -> None:
        """Serve what the device's normal says now (after a change, a restart or a decision)."""
        self.own[key] = None if normal.ratio is None else normal.ratio * self.fallback
        self.bits[key] = normal.bits
        if normal.services is None:
            self.index.drop(key)
        else:
            self.index.set(key, normal.services)
        self.version += 1

    def forget(self, key: str) -> None:
        """Back to the bundle's (a device no longer remembered, or forgotten)."""
        self.own.pop(key, None)
        self.bits.pop(key, None)
        bundle = (self.settings.services or {}).get(key) if key in self.settings.known else None
        if bundle is None:
            self.index.drop(key)
        else:
            self.index.set(key, [self.index.number(s) for s in bundle])
        self.version += 1

    def service_names(self, numbers) -> list[str]:
        return sorted(self.index.name(n) for n in numbers)
