"""What the incident tracker keeps per device and per episode (incidents.py decides with them).

An **episode** is a device's run of flagged flows: its evidence, times, peers and services, the
per-feature errors its "why" is made of, and the flows waiting to feed the device's normal
(normals.py) until it ends without an incident. A **device** is remembered with its counts, its
episode, its normal and, for the operator's page, its flagged flows per quarter hour.
"""
from __future__ import annotations

import numpy as np

from .normal_rule import Window
from .normals import Normal

MAX_KEYS = 16  # peers and ports counted per incident; more are summed as "other"
TIMELINE_BIN = 900.0  # the operator's page: flagged flows per quarter hour, the last day
TIMELINE_BINS = 96


class Episode:
    __slots__ = ("evidence", "at", "first", "last", "last_flagged", "flagged", "seen", "peers",
                 "ports", "max_ratio", "errors", "incident", "opened", "last_line",
                 "lines_flagged", "peak", "slot", "slot_bits", "first_flagged", "pending",
                 "why_since")

    def __init__(self, start: float, n_inputs: int):
        self.evidence, self.at, self.first, self.last = 0.0, start, start, start
        self.slot, self.slot_bits = None, 0.0  # the current minute and its strongest flow
        self.first_flagged = start  # minutes count from the episode's first flagged flow
        self.last_flagged, self.flagged, self.seen = start, 0, 0
        self.peers, self.ports, self.max_ratio = {}, {}, 0.0
        # per model input: the evidence-weighted squared and signed differences (the "why")
        self.errors = np.zeros((2, n_inputs), np.float32) if n_inputs else None
        self.why_since: float | None = None  # the model changed under it: "why" counts since
        self.incident, self.opened, self.last_line, self.lines_flagged = None, None, None, 0
        self.peak = 0.0
        self.pending: Window | None = Window(start)  # flagged flows waiting to feed the normal


class Device:
    __slots__ = ("key", "ip", "new", "first_seen", "last_seen", "flows", "flagged", "episode",
                 "incidents", "ended", "timeline", "normal")

    def __init__(self, key: str, ip: str | None, new: bool, t: float, normal: Normal):
        self.key, self.ip, self.new = key, ip, new
        self.first_seen = self.last_seen = t
        self.flows = self.flagged = self.incidents = 0
        self.episode: Episode | None = None
        # The last episode that ended without an incident, with its place among the recorded
        # peaks: a flow that Argus reports late (its time inside that episode's window, after
        # other devices' flows moved the clock past it) resumes it instead of starting anew,
        # so a device's incidents do not depend on how much else the network is doing.
        self.ended: tuple[Episode, int | None] | None = None
        self.timeline: dict[int, int] | None = None  # quarter hour -> flagged flows (if any)
        self.normal = normal


def count(counter: dict, key: str) -> None:
    """counter[key] += 1, at most MAX_KEYS keys (the rest as "other")."""
    if key in counter or len(counter) < MAX_KEYS:
        counter[key] = counter.get(key, 0) + 1
    else:
        counter["other"] = counter.get("other", 0) + 1


def bin_flagged(device: Device, t: float) -> None:
    """Count a flagged flow in its quarter hour; a device keeps its last TIMELINE_BINS."""
    if device.timeline is None:
        device.timeline = {}
    slot = int(t // TIMELINE_BIN)
    device.timeline[slot] = device.timeline.get(slot, 0) + 1
    if len(device.timeline) > TIMELINE_BINS:
        del device.timeline[min(device.timeline)]


class PeakLog:
    """The peak evidence of every episode that ended, each once (learn's calibration, not the
    daemon's: train/incident_budget.py sets the incident threshold from them). An episode that
    resumes takes its peak back; it is recorded again when it ends."""

    def __init__(self):
        self._peaks: list[float | None] = []

    def add(self, peak: float) -> int:
        """Record it; its place, to take it back."""
        self._peaks.append(peak)
        return len(self._peaks) - 1

    def take_back(self, place: int) -> None:
        self._peaks[place] = None

    @property
    def peaks(self) -> list[float]:
        return [p for p in self._peaks if p is not None]
