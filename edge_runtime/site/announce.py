"""How many `new_device` lines a storm may write: at most NEW_DEVICE_LINES an hour of flow time
(a host making up MACs, or a phone rotating its private address, would otherwise bury the next
incident). The devices held back are still watched; each hour that held some ends with one
`new_devices_held` line that counts them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

NEW_DEVICE_LINES = 30  # an hour (a home gains a few devices a week)
WINDOW_SECONDS = 3600.0


@dataclass
class Window:
    start: float = -math.inf
    lines: int = 0  # new_device lines written in it
    held: int = 0  # devices not announced in it
    first: dict | None = None  # the first of them, as lines name a device


class Announcements:
    def __init__(self):
        self.window = Window()
        self.held = 0  # devices not announced, in all

    def allow(self, t: float, events: list, label: dict) -> bool:
        """May the device first seen at t be announced? (A window that ended is summed up
        in `events` first.) `label`: the device as lines name it (for the summary)."""
        self._roll(t, events)
        window = self.window
        if window.lines >= NEW_DEVICE_LINES:
            window.held += 1
            window.first = window.first or label
            self.held += 1
            return False
        window.lines += 1
        return True

    def due(self, now: float, events: list) -> None:
        """Sum up the window if it ended by `now` (flow time)."""
        if math.isfinite(now):  # (no flow yet)
            self._roll(now, events)

    def finish(self, events: list) -> None:
        """The input ended: sum up what the window held so far."""
        self._roll(None, events)

    def _roll(self, t: float | None, events: list) -> None:
        window = self.window
        if t is not None and t < window.start + WINDOW_SECONDS:
            return
        if window.held:
            events.append({"time": window.start + WINDOW_SECONDS,
                           "event_type": "new_devices_held", "device": window.first,
                           "new_devices_held": {"devices": window.held, "since": window.start,
                                                "until": window.start + WINDOW_SECONDS}})
        if t is None:
            window.held, window.first = 0, None
        else:
            self.window = Window(math.floor(t / WINDOW_SECONDS) * WINDOW_SECONDS)
