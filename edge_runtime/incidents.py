"""From flagged flows to incidents: one per device in trouble, opened, updated and closed.

Every flow is given to its local devices (devices.py) and may be **evidence** against them,
in bits over the operating point, from two detectors:

- how the flow looks: log2(score / threshold) when the autoencoder's score is over the device's
  own threshold (a flow the classifier names as an attack: log2(normal_threshold / P(normal)),
  whichever is larger), capped at what the learning period can resolve (`max_flow_bits`:
  log2(budget x validation flows); beyond every held-out flow, a higher score says no more);
- whom it talks to: a known device's flow to a service (protocol and the lower port) it never
  used while learning adds log2(budget / P(new service)), with P(new service) the Good-Turing
  estimate from its own learning flows (its services seen once, over its flows). IoT devices use
  a handful of services, so for them a new one is strong evidence; a device that keeps using
  new ones earns little from it.

A device's evidence takes the strongest of its flows each minute, counted from the episode's
first flagged flow (a burst of status records from one reconnect counts once, and Argus's
report interval does not change what an incident is), and decays with a half-life of five
minutes, so it measures trouble that lasts, not one odd moment. Evidence rising from nothing
starts an **episode**; when it crosses the bundle's incident threshold the episode becomes an incident
(one EVE line, `event_type: "incident"`, state "open"), updated at most every ten minutes while
flagged flows keep coming, and closed by a line when the device has had no flagged flow for 30
minutes (or the input ended). A device with an open incident never opens a second one; a device
that was not in the learning period is named once (`event_type: "new_device"`) and opens at most
one incident, marked new_device.

Because an incident is exactly an episode whose peak evidence crossed the threshold, `learn`
sets the threshold from the peaks of the episodes in the held-out tail of the learning period,
replayed through this same code (train/incident_budget.py).

Times are the flows' own (Argus LastTime), so a replayed capture says when things happened.
State is bounded: at most `max_devices` devices are remembered (the least recently seen goes
first), an episode is dropped when it ends, and the peers and ports of one are capped.
"""
from __future__ import annotations

import math

import numpy as np

from .devices import Owners, device_label
from .incident_lines import incident_event, new_device_event
from .incident_settings import IncidentSettings
from .services import ServiceIndex, service_of

SLOT_SECONDS = 60.0  # a device's evidence grows by its strongest flagged flow of each minute
MAX_DEVICES = 16384
MAX_EPISODES = 1024  # open episodes; past it the weakest without an incident is dropped
MAX_KEYS = 16  # peers and ports counted per incident; more are summed as "other"
NEW_DEVICES_REMEMBERED = 131072  # announced new devices (so none is named twice)
TIMELINE_BIN = 900.0  # the operator's page: flagged flows per quarter hour, the last day
TIMELINE_BINS = 96


class _Episode:
    __slots__ = ("evidence", "at", "first", "last", "last_flagged", "flagged", "seen", "peers",
                 "ports", "max_ratio", "errors", "incident", "opened", "last_line",
                 "lines_flagged", "peak", "slot", "slot_bits", "first_flagged")

    def __init__(self, start: float, n_inputs: int):
        self.evidence, self.at, self.first, self.last = 0.0, start, start, start
        self.slot, self.slot_bits = None, 0.0  # the current minute and its strongest flow
        self.first_flagged = start  # minutes count from the episode's first flagged flow
        self.last_flagged, self.flagged, self.seen = start, 0, 0
        self.peers, self.ports, self.max_ratio = {}, {}, 0.0
        # per model input: the evidence-weighted squared and signed differences (the "why")
        self.errors = np.zeros((2, n_inputs), np.float32) if n_inputs else None
        self.incident, self.opened, self.last_line, self.lines_flagged = None, None, None, 0
        self.peak = 0.0


class _Device:
    __slots__ = ("key", "ip", "new", "first_seen", "last_seen", "flows", "flagged", "episode",
                 "incidents", "ended", "timeline")

    def __init__(self, key: str, ip: str | None, new: bool, t: float):
        self.key, self.ip, self.new = key, ip, new
        self.first_seen = self.last_seen = t
        self.flows = self.flagged = self.incidents = 0
        self.episode: _Episode | None = None
        # The last episode that ended without an incident, with its place among the recorded
        # peaks: a flow that Argus reports late (its time inside that episode's window, after
        # other devices' flows moved the clock past it) resumes it instead of starting anew,
        # so a device's incidents do not depend on how much else the network is doing.
        self.ended: tuple[_Episode, int | None] | None = None
        self.timeline: dict[int, int] | None = None  # quarter hour -> flagged flows (if any)


def _count(counter: dict, key: str) -> None:
    if key in counter or len(counter) < MAX_KEYS:
        counter[key] = counter.get(key, 0) + 1
    else:
        counter["other"] = counter.get("other", 0) + 1


class IncidentTracker:
    """Feed it each batch's flows (in time order, roughly) and it returns the EVE events due."""

    def __init__(self, settings: IncidentSettings, features: list[tuple[str, bool]] = (),
                 max_devices: int = MAX_DEVICES, record_peaks: bool = False):
        self.settings = settings  # (and the services and decay that come with it)
        self.features = list(features)  # per model input: (raw column, is one-hot)
        self.max_devices = max_devices
        # plain dicts keep insertion order: re-inserting a device moves it to the end, so the
        # first is the least recently seen (lighter than an OrderedDict's linked list)
        self.devices: dict[str, _Device] = {}
        self.evicted_new: dict[str, None] = {}  # new devices named, then evicted
        self.active: dict[str, _Device] = {}  # devices with an episode
        self.resumable: dict[str, _Device] = {}  # devices with an ended, resumable episode
        self.clock = -math.inf
        self.next_id = 1
        self.opened = self.closed = self.new_devices = 0
        self.peaks: list[float] | None = [] if record_peaks else None
        self.timelines = False  # flagged flows per quarter hour per device, for the page

    @property
    def settings(self) -> IncidentSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: IncidentSettings) -> None:
        self._settings = settings
        self.index = ServiceIndex(settings.services)
        self._decay = math.log(2) / settings.half_life

    # -- one batch ------------------------------------------------------------------------------

    def observe(self, times, starts, devices, scores, named_bits, differences, flows,
                services) -> list:
        """times/starts: per record (flow end and start, Unix s); devices: per record a tuple of
        (key, ip), or their Owners; scores: anomaly scores or None; named_bits: the classifier's
        evidence per record or None; differences: the anomaly model's (input - reconstruction)
        rows or None; flows(r): record r's (src, sport, dst, dport, proto) texts, for peers;
        services: per record its service, as its number (ServiceIndex.numbers) or name.

        Which records are evidence for which of their devices is found for the whole batch at
        once (numpy); only those flows go through the episode's bookkeeping, device by device
        and each device's in their order, whoever else a flow belongs to (else how a batch was
        cut, which moves with all else on the network, changed them)."""
        events: list = []
        owners = devices if isinstance(devices, Owners) else Owners(devices)
        if len(owners):
            services = self.index.numbered(services)
            times = np.asarray(times, dtype=np.float64)
            self._observe(owners.pairs(), owners, times, starts,
                          None if scores is None else np.asarray(scores, dtype=np.float64),
                          None if named_bits is None else np.asarray(named_bits, np.float64),
                          differences, flows, services, events)
            self.clock = max(self.clock, float(times.max()))
        self._sweep(events)
        return events

    def _observe(self, pairs, owners, times, starts, scores, named_bits, differences, flows,
                 services, events) -> None:
        settings, keys, rows = self.settings, pairs.keys, pairs.rows
        thresholds = [settings.threshold(k) for k in keys]
        new_bits = [settings.service_bits.get(k, 0.0) if settings.services is not None
                    and settings.services.get(k) is not None else 0.0 for k in keys]
        # per pair: is the record evidence for that device?
        novel = (np.array(new_bits)[pairs.devices] > 0) & \
            self.index.unused(keys, pairs.devices, services[rows])
        flagged = novel.copy()
        if scores is not None:
            flagged |= scores[rows] > np.array(thresholds)[pairs.devices]
        if named_bits is not None:
            flagged |= named_bits[rows] > 0
        bounds = pairs.bounds
        candidates = np.flatnonzero(flagged)
        cuts = np.searchsorted(candidates, bounds).tolist()
        latest = np.maximum.reduceat(times[rows], bounds[:-1]).tolist()
        with_ip = np.maximum.reduceat(np.where(pairs.has_ip, np.arange(len(rows)), -1),
                                      bounds[:-1]).tolist()
        firsts, counts = bounds[:-1].tolist(), np.diff(bounds).tolist()
        first_rows = rows[bounds[:-1]].tolist()
        # the few evidence pairs' values as Python numbers, gathered once for the batch
        at = rows[candidates]
        evidence = zip(candidates.tolist(), at.tolist(), pairs.slots[candidates].tolist(),
                       times[at].tolist(), np.asarray(starts, np.float64)[at].tolist(),
                       [None] * len(at) if scores is None else scores[at].tolist(),
                       [0.0] * len(at) if named_bits is None else named_bits[at].tolist(),
                       novel[candidates].tolist())
        for d, key in enumerate(keys):
            first, r = firsts[d], first_rows[d]
            device = self._device(key, owners.ip(r, int(pairs.slots[first])), float(times[r]),
                                  flows, r, events)
            if with_ip[d] >= first:
                device.ip = owners.ip(int(rows[with_ip[d]]), int(pairs.slots[with_ip[d]]))
            device.flows += counts[d]
            if latest[d] > device.last_seen:
                device.last_seen = latest[d]
            seen = first  # the device's flows are counted in order: an episode sees those after
            for _ in range(cuts[d + 1] - cuts[d]):  # it began, whatever the batch
                p, r, slot, t, start, score, named, is_novel = next(evidence)
                if device.episode is not None:
                    device.episode.seen += p - seen  # flows not flagged since (flagged: in _flag)
                seen = p + 1
                self._evidence(device, r, owners.ip(r, slot), t, start, score, named,
                               thresholds[d], new_bits[d] if is_novel else 0.0, differences,
                               flows, events)
            if device.episode is not None:
                device.episode.seen += first + counts[d] - seen

    def _evidence(self, device, r, ip, t, start, score, named_bits, threshold, new_bits,
                  differences, flows, events) -> None:
        """Record r (flow end t, start, anomaly score or None, the classifier's bits) is
        evidence for the device: its bits, then the episode it belongs to."""
        settings = self.settings
        bits = 0.0
        if score is not None and score > threshold:
            bits = math.log2(score / threshold) if threshold > 0 else 64.0
        if named_bits > bits:
            bits = named_bits
        if bits > settings.max_flow_bits:
            bits = settings.max_flow_bits
        bits += new_bits  # a service it never used while learning
        episode = device.episode
        if episode is not None and t - episode.last_flagged >= settings.close_after:
            self._end(device, events, f"no flagged flow for {settings.close_after / 60:g} min",
                      episode.last_flagged + settings.close_after)
            episode = None  # (ended before this flow, whatever the batch boundaries)
        if episode is None:
            episode = device.episode = self._episode(device, t)
            self.active[device.key] = device
            if len(self.active) > MAX_EPISODES:
                self._drop_weakest(events)
        self._flag(device, episode, r, bits, t, start, ip, flows(r),
                   None if score is None else score / threshold, differences, events)

    def _drop_weakest(self, events: list) -> None:
        """Bounded state with many devices in trouble at once: the episode with the least
        evidence and no incident goes (as if it had ended)."""
        quiet = [d for d in self.active.values() if d.episode.incident is None]
        if quiet:
            weakest = min(quiet, key=lambda d: d.episode.evidence)
            self._end(weakest, events, "dropped: too many devices in trouble at once")
            weakest.ended = None
            self.resumable.pop(weakest.key, None)

    def _episode(self, device: _Device, t: float) -> _Episode:
        """A new episode, or the last one if this flow arrived late into its window."""
        if device.ended is not None:
            episode, place = device.ended
            device.ended = None
            self.resumable.pop(device.key, None)
            if t - episode.last_flagged < self.settings.close_after:
                if place is not None:
                    self.peaks[place] = None  # its peak is recorded again when it ends
                return episode
        return _Episode(t, len(self.features))

    def _device(self, key: str, ip: str | None, t: float, flows, r: int, events: list
                ) -> _Device:
        """The device, now the most recently seen; a new one is announced with its flow r."""
        devices = self.devices
        device = devices.pop(key, None)
        if device is not None:
            devices[key] = device  # now the most recently seen
            return device
        new = key not in self.settings.known
        device = devices[key] = _Device(key, ip, new, t)
        if new and self.evicted_new.pop(key, False) is False:  # never named before
            self.new_devices += 1
            events.append(new_device_event(device, t, flows(r)))
        if len(self.devices) > self.max_devices:
            self._evict(events)
        return device

    def _evict(self, events: list) -> None:
        """The least recently seen device goes (its open incident is closed, saying so)."""
        key = next(iter(self.devices))
        device = self.devices.pop(key)
        self.resumable.pop(key, None)
        if device.new:
            self.evicted_new[key] = None  # so that it is not named again
            if len(self.evicted_new) > NEW_DEVICES_REMEMBERED:
                del self.evicted_new[next(iter(self.evicted_new))]
        if device.episode is not None:
            self._end(device, events, "evicted: more devices than edge-ids keeps in memory")

    def _flag(self, device, episode, r, bits, t, start, ip, flow, ratio, differences,
              events) -> None:
        slot = math.floor((t - episode.first_flagged) / SLOT_SECONDS)
        if episode.slot is None or slot > episode.slot:  # a new minute: decay, then add
            decay = math.exp(-self._decay * max(0.0, t - episode.at))
            episode.evidence = episode.evidence * decay + bits
            episode.slot, episode.slot_bits = slot, bits
            episode.at = max(episode.at, t)
        elif bits > episode.slot_bits:  # the same minute: only the strongest flow counts
            episode.evidence += bits - episode.slot_bits
            episode.slot_bits = bits
        episode.flagged += 1
        episode.seen += 1
        device.flagged += 1
        if self.timelines:
            _bin(device, t)
        episode.first = min(episode.first, start)
        episode.last = max(episode.last, t)
        episode.last_flagged = max(episode.last_flagged, t)
        episode.peak = max(episode.peak, episode.evidence)
        if ratio is not None and ratio > episode.max_ratio:
            episode.max_ratio = ratio
        src, sport, dst, dport, proto = flow
        peer = dst if src == ip else src
        _count(episode.peers, peer or "?")
        _count(episode.ports, service_of(proto, sport, dport))
        if differences is not None and episode.errors is not None:
            row = differences[r]
            weighted = bits * row
            squared, signed = episode.errors  # (views: no copy back, as errors[0] += would)
            squared += weighted * row
            signed += weighted
        if episode.incident is None and episode.evidence > self.settings.threshold_bits and \
                not (device.new and device.incidents):
            episode.incident = self.next_id
            self.next_id += 1
            device.incidents += 1
            self.opened += 1
            episode.opened = t
            episode.last_line, episode.lines_flagged = t, episode.flagged
            events.append(self._line(device, episode, "open", t))

    def _sweep(self, events: list) -> None:
        """Close what has been quiet long enough; update what is due; forget ended episodes
        once no late flow can belong to them."""
        settings = self.settings
        for key, device in list(self.resumable.items()):
            if device.ended is None or \
                    self.clock - device.ended[0].last_flagged >= 2 * settings.close_after:
                device.ended = None
                del self.resumable[key]
        for key, device in list(self.active.items()):
            episode = device.episode
            if self.clock - episode.last_flagged >= settings.close_after:
                self._end(device, events, f"no flagged flow for "
                                          f"{settings.close_after / 60:g} min",
                          episode.last_flagged + settings.close_after)
            elif episode.incident is not None and episode.flagged > episode.lines_flagged \
                    and self.clock - episode.last_line >= settings.update_every:
                episode.last_line, episode.lines_flagged = self.clock, episode.flagged
                events.append(self._line(device, episode, "update", self.clock))

    def _end(self, device: _Device, events: list, reason: str, at: float | None = None
             ) -> None:
        """The episode is over (closed `at`, by default now); its incident's last line."""
        episode = device.episode
        place = None
        if self.peaks is not None:
            place = len(self.peaks)
            self.peaks.append(episode.peak)
        if episode.incident is not None:
            self.closed += 1
            events.append(self._line(device, episode, "closed", max(
                self.clock, episode.last) if at is None else at, reason))
            device.ended = None
        else:
            device.ended = (episode, place)
            self.resumable[device.key] = device
        device.episode = None
        self.active.pop(device.key, None)

    @property
    def episode_peaks(self) -> list[float]:
        """The peak evidence of every episode that ended (learn's calibration)."""
        return [p for p in self.peaks or () if p is not None]

    def finish(self, reason: str = "end of input") -> list:
        """Close every open incident (the input ended or the daemon stops)."""
        events: list = []
        for device in list(self.active.values()):
            self._end(device, events, reason)
        return events

    def _line(self, device, episode, state: str, t: float, reason: str | None = None) -> dict:
        return incident_event(device, episode, state, t, self.settings.threshold_bits,
                              self.features, reason)

    def snapshot(self) -> list[dict]:
        """The devices remembered now (for the operator's page): newest first."""
        rows = []
        for device in reversed(self.devices.values()):
            episode = device.episode
            rows.append({"device": device_label(device.key, device.ip), "new": device.new,
                         "first_seen": device.first_seen, "last_seen": device.last_seen,
                         "flows": device.flows, "flagged": device.flagged,
                         "incident": None if episode is None else episode.incident,
                         "timeline": dict(device.timeline or {})})
        return rows


def _bin(device: _Device, t: float) -> None:
    """Count a flagged flow in its quarter hour; a device keeps its last TIMELINE_BINS."""
    if device.timeline is None:
        device.timeline = {}
    slot = int(t // TIMELINE_BIN)
    device.timeline[slot] = device.timeline.get(slot, 0) + 1
    if len(device.timeline) > TIMELINE_BINS:
        del device.timeline[min(device.timeline)]
