"""What a device's normal is learned from on the device (normals.py says how it is used): learn's
rule for a device's own threshold (`NormalRule`, carried in the bundle: the device has no
scipy), and a `Window` of what a device's flows taught since its normal last changed: how many,
the highest scores, the services used.

Written by hand: a few counters and the highest scores per device; no library keeps per-key
bounded top-k lists and counts any lighter, and there may be 16,384 devices.
"""
from __future__ import annotations

import math
from array import array
from bisect import insort
from dataclasses import dataclass

TOP_SCORES = 32  # highest scores kept a window: learn's rule exactly up to 3,200 flows at 1 %
MAX_SERVICES = 32  # services counted a window (more: the rest are "other", never learned)
OTHER = -2  # the service number of what did not fit a window's MAX_SERVICES
OTHER_NAME = "(other)"
# chi2.ppf(0.9, 2k + 2) / 2: the 90 % upper bounds of a Poisson count of k = 0..4 (learn writes
# them in the bundle; these are the same numbers, for bundles made before it did)
UPPER_BOUNDS_90 = (2.302585, 3.889720, 5.322320, 6.680783, 7.993590)


@dataclass(frozen=True)
class NormalRule:
    """learn's rule for a device's own threshold (train/incident_budget.own_threshold): with
    enough flows for the budget to be measured, the score that exactly the budget's share
    exceeds; with fewer, the lowest whose false-alarm rate's 90 % upper bound is the budget."""

    max_fpr: float = 0.01
    min_false_alarms: int = 5
    upper_bounds: tuple = UPPER_BOUNDS_90

    @property
    def graduate_flows(self) -> int:
        return math.ceil(self.upper_bounds[0] / self.max_fpr - 1e-9)

    def allowed(self, n: int) -> int:
        """Flows that may be over the threshold among n (-1: too few for any threshold)."""
        expected = self.max_fpr * n
        if expected >= self.min_false_alarms:
            return int(math.floor(expected + 1e-9))
        return sum(1 for bound in self.upper_bounds if bound <= expected) - 1

    def threshold(self, window: "Window") -> float | None:
        """The ratio to the site's threshold that the window's flows give, or None."""
        left = self.allowed(window.flows) - window.named
        if left < 0 or not len(window.top):
            return None
        top = window.top  # ascending; past TOP_SCORES the lowest kept (a higher threshold)
        return float(top[max(len(top) - 1 - left, 0)])

    @classmethod
    def of(cls, devices: dict, max_fpr: float) -> "NormalRule":
        """From the bundle's manifest "devices" object (older bundles: these constants)."""
        rule = devices.get("rule") or {}
        return cls(max_fpr=float(rule.get("max_fpr", max_fpr)),
                   min_false_alarms=int(rule.get("min_false_alarms", 5)),
                   upper_bounds=tuple(rule.get("upper_bounds", UPPER_BOUNDS_90)))


class Window:
    """What a device's flows taught since its normal last changed: how many, the highest
    scores (as ratios to the site's threshold), the services used, and how many a classifier
    named (learn's rule counts those against the budget)."""

    __slots__ = ("flows", "top", "services", "named", "start")

    def __init__(self, start: float):
        self.flows = self.named = 0
        self.top = array("f")  # ascending, at most TOP_SCORES
        self.services: dict[int, int] = {}
        self.start = start

    def add(self, ratio: float, service: int) -> None:
        self.flows += 1
        top = self.top
        if len(top) < TOP_SCORES:
            insort(top, ratio)
        elif ratio > top[0]:
            del top[0]
            insort(top, ratio)
        self.count(service, 1)

    def add_many(self, ratios) -> None:
        """Scores only (the caller counts the flows and their services): once the top is full,
        only those over the lowest kept change it."""
        top = self.top
        for ratio in ratios:
            if len(top) < TOP_SCORES:
                insort(top, ratio)
            elif ratio > top[0]:
                del top[0]
                insort(top, ratio)

    def count(self, service: int, n: int) -> None:
        services = self.services
        if service in services or len(services) < MAX_SERVICES:
            services[service] = services.get(service, 0) + n
        else:
            services[OTHER] = services.get(OTHER, 0) + n

    def floor(self) -> float:
        """A score below this cannot enter the top (the top is full)."""
        return self.top[0] if len(self.top) >= TOP_SCORES else -math.inf

    def merge(self, other: "Window") -> None:
        self.flows += other.flows
        self.named += other.named
        self.add_many(other.top)
        for service, n in other.services.items():
            self.count(service, n)

    def to_state(self, name) -> list:
        """As JSON values, services by name (`name`: number -> name; numbers are this run's)."""
        return [self.flows, self.named, self.start, self.top.tolist(),
                [[OTHER_NAME if s == OTHER else name(s), n] for s, n in self.services.items()]]

    @classmethod
    def from_state(cls, value: list, number) -> "Window":
        """From to_state's values (`number`: name -> this run's number)."""
        flows, named, start, top, services = value
        window = cls(float(start))
        window.flows, window.named = int(flows), int(named)
        window.top = array("f", sorted(float(x) for x in top)[-TOP_SCORES:])
        for service, n in services[:MAX_SERVICES + 1]:
            window.count(OTHER if service == OTHER_NAME else number(str(service)), int(n))
        return window


def service_bits(counts: dict[int, int], max_fpr: float) -> float:
    """log2(budget / P(new service)), P(new) by Good-Turing from the counts (as learn gives a
    known device's, train/incident_budget.new_service_bits); 0 for a device too varied to
    count (it used more than MAX_SERVICES services)."""
    if OTHER in counts:
        return 0.0
    n, once = sum(counts.values()), sum(1 for c in counts.values() if c == 1)
    return max(0.0, math.log2(max_fpr * (n + 1) / (once + 1)))
