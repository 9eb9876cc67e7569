"""Which devices the incident tracker remembers: a device seen for the first time (announced,
within the storm limits of announce.py), the least recently seen evicted past the bound, and the
weakest episode dropped when too many devices are in trouble at once. IncidentTracker
(incidents.py) inherits these.
"""
from __future__ import annotations

from .devices import device_label
from .episodes import Device
from .incident_lines import new_device_event

NEW_DEVICES_REMEMBERED = 131072  # announced new devices (so none is named twice)


class DeviceRoster:
    """Methods of IncidentTracker (incidents.py) that keep its set of devices bounded."""

    def _device(self, key: str, ip: str | None, t: float, flows, r: int, events: list
                ) -> Device:
        """The device, now the most recently seen; a new one is announced with its flow r."""
        devices = self.devices
        device = devices.pop(key, None)
        if device is not None:
            devices[key] = device  # now the most recently seen
            return device
        new = key not in self.settings.known
        device = devices[key] = Device(key, ip, new, t, self.normals.start(key, t))
        if new and self.evicted_new.pop(key, False) is False:  # never named before
            self.new_devices += 1
            if self.announcements.allow(t, events, device_label(key, ip)):
                events.append(new_device_event(device, t, flows(r), self.rotations.get(key)))
        if len(self.devices) > self.max_devices:
            self._evict(events)
        return device

    def _evict(self, events: list) -> None:
        """The least recently seen device goes (its open incident is closed, saying so; what
        it learned on the device goes with it)."""
        key = next(iter(self.devices))
        device = self.devices.pop(key)
        self.muted.pop(key, None)
        self.normals.forget(key)
        if device.new:
            self.remember_announced(key)
        if device.episode is not None:
            self._end(device, events, "evicted: more devices than edge-ids keeps in memory")
        device.ended = None  # (an evicted device's episode cannot resume: not after _end,
        self.resumable.pop(key, None)  # which makes it resumable, else they pile up there)

    def remember_announced(self, key: str) -> None:
        """A new device named and no longer remembered: it is not named again."""
        self.evicted_new[key] = None
        if len(self.evicted_new) > NEW_DEVICES_REMEMBERED:
            del self.evicted_new[next(iter(self.evicted_new))]

    def _drop_weakest(self, events: list) -> None:
        """Bounded state with many devices in trouble at once: the episode with the least
        evidence and no incident goes (as if it had ended)."""
        quiet = [d for d in self.active.values() if d.episode.incident is None]
        if quiet:
            weakest = min(quiet, key=lambda d: d.episode.evidence)
            self._end(weakest, events, "dropped: too many devices in trouble at once")
            self._settle(weakest)
