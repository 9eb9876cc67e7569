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
        """The fewest flows that give a threshold (231 at 1 %)."""
        return math.ceil(self.upper_bounds[0] / self.max_fpr - 1e-9)

    @property
    def measured_flows(self) -> int:
        """The fewest flows whose share over a threshold is measured, not bounded (500 at
        1 %): a learned normal changes only on as many."""
        return math.ceil(self.min_false_alarms / self.max_fpr - 1e-9)

    @property
    def window_flows(self) -> int:
        """The most flows a window's TOP_SCORES give learn's rule exactly for (3,200 at 1 %);
        a window is halved to stay near it (Window.forget)."""
        return math.ceil(TOP_SCORES / self.max_fpr - 1e-9)

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

    def forget(self, keep: int) -> None:
        """Halve the window until it holds at most `keep` flows: a random half of its flows
        keeps about every other one of its highest scores, and half of each count (a service
        used once may go, "other" too, so the window can count new ones again). The window then weighs recent flows more, and never
        holds more than learn's rule can use exactly."""
        while self.flows > keep:
            self.flows = (self.flows + 1) // 2
            self.named //= 2
            self.top = self.top[(len(self.top) - 1) % 2::2]  # the highest, the third, ...
            self.services = {s: n // 2 for s, n in self.services.items() if n > 1}

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


# chi2.ppf(0.9, 2k + 2) / 2 for k = 0..11 and chi2.ppf(0.1, 2k) for k = 1..10 (learn writes its
# own in the bundle, "incidents.tail_rule"; these are the same numbers, for older bundles)
POISSON_90 = (2.302585, 3.88972, 5.32232, 6.680783, 7.99359, 9.274674, 10.532072, 11.770914,
              12.994712, 14.20599, 15.406641, 16.598122)
CHI2_10 = (0.210721, 1.063623, 2.204131, 3.489539, 4.865182, 6.303796, 7.789534, 9.312236,
           10.864936, 12.442609)


@dataclass(frozen=True)
class TailRule:
    """learn's rule for the incident threshold (train/incident_budget._tail_threshold), for a
    device's own episodes on the device: the lowest level whose false-incident rate's 90 %
    upper bound fits the budget: read off the peaks when enough of them are above it, else
    the top episodes' exponential tail (peaks over a threshold) extrapolated, with the 90 %
    bound on its scale and rate. Tables instead of scipy (the device has none)."""

    upper_bounds: tuple = POISSON_90  # of k = 0, 1, ... events
    scale_quantiles: tuple = CHI2_10  # chi2.ppf(0.1, 2k) for k = 1, 2, ...
    measured: int = 5
    tail: int = 10
    min_tail: int = 3

    @property
    def peaks_kept(self) -> int:
        """The highest episode peaks the rule ever reads."""
        return max(self.tail, len(self.upper_bounds) - 1) + 1

    def most_within(self, allowed: float) -> int:
        return sum(1 for bound in self.upper_bounds if bound <= allowed) - 1

    def threshold(self, peaks, device_weeks: float, budget: float) -> tuple[float | None, dict]:
        """(bits, how) for `budget` false incidents per week over `device_weeks` of episodes
        whose peaks are these (the highest, any order); None with too few to fit a tail."""
        peaks = sorted((p for p in peaks if p > 0), reverse=True)
        c = min(self.most_within(budget * device_weeks), len(peaks))
        if self.measured <= c < len(peaks):
            return peaks[c], {"method": "measured", "above": c}
        if len(peaks) < self.min_tail + 1 or device_weeks <= 0:
            return None, {"method": f"too few episodes ({len(peaks)})"}
        k = min(self.tail, len(peaks) - 1, len(self.scale_quantiles),
                len(self.upper_bounds) - 1)
        level = peaks[k]
        scale = max(sum(peaks[:k]) / k - level, 1e-9)
        scale_bound = 2 * k * scale / self.scale_quantiles[k - 1]
        rate_bound = self.upper_bounds[k] / device_weeks
        fitted = level + scale_bound * math.log(max(rate_bound / budget, 1.0))
        floor = peaks[c] if 0 <= c < len(peaks) else peaks[0]
        return max(fitted, floor * (1 + 1e-9)), {"method": "extrapolated", "episodes": k,
                                                 "level": level, "scale_bound": scale_bound}

    @classmethod
    def of(cls, incidents: dict) -> "TailRule":
        rule = incidents.get("tail_rule") or {}
        return cls(upper_bounds=tuple(rule.get("upper_bounds", POISSON_90)),
                   scale_quantiles=tuple(rule.get("scale_quantiles", CHI2_10)))
