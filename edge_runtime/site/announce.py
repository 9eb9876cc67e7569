"""How many `new_device` lines a storm may write: at most NEW_DEVICE_LINES an hour of flow time
(a host making up MACs, or a phone rotating its private address, would otherwise bury the next
incident). The devices held back are still watched; each hour that held some ends with one
`new_devices_held` line that counts them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

NEW_DEVICE_LINES = 30  # an hour (a home gains a few devices a week)
LIMITS = {"all": (NEW_DEVICE_LINES, 3600.0)}  # (lines, window s)


@dataclass
class Window:
    start: float = -math.inf
    lines: int = 0  # new_device lines written in it
    held: int = 0  # devices not announced in it
    first: dict | None = None  # the first of them, as lines name a device


class Announcements:
    def __init__(self):
        self.windows = {kind: Window() for kind in LIMITS}
        self.held = 0  # devices not announced, in all

    def allow(self, t: float, events: list, label: dict) -> bool:
        """May the device first seen at t be announced? (A window that ended is summed up
        in `events` first.) `label`: the device as lines name it (for the summary)."""
        kinds = ("all",)
        for kind in kinds:
            self._roll(kind, t, events)
        full = [k for k in kinds if self.windows[k].lines >= LIMITS[k][0]]
        if full:
            window = self.windows[full[-1]]
            window.held += 1
            window.first = window.first or label
            self.held += 1
            return False
        for kind in kinds:
            self.windows[kind].lines += 1
        return True

    def due(self, now: float, events: list) -> None:
        """Sum up every window that ended by `now` (flow time)."""
        if not math.isfinite(now):  # (no flow yet)
            return
        for kind in self.windows:
            self._roll(kind, now, events)

    def finish(self, events: list) -> None:
        """The input ended: sum up the windows that held devices so far."""
        for kind in self.windows:
            self._roll(kind, None, events)

    def _roll(self, kind: str, t: float | None, events: list) -> None:
        window, length = self.windows[kind], LIMITS[kind][1]
        if t is not None and t < window.start + length:
            return
        if window.held:
            events.append({"time": window.start + length, "event_type": "new_devices_held",
                           "device": window.first,
                           "new_devices_held": {"devices": window.held,
                                                "since": window.start,
                                                "until": window.start + length}})
        if t is None:
            window.held, window.first = 0, None
        else:
            self.windows[kind] = Window(math.floor(t / length) * length)
