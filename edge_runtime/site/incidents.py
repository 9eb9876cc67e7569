"""From flagged flows to incidents: one per device in trouble, opened, updated and closed.

Every flow is given to its local devices (devices.py) and may be **evidence** against them, in
bits over the operating point: how the flow looks (log2(score / the device's threshold), or a
classifier's attack name, capped at `max_flow_bits`, what the learning period can resolve), plus
whom it talks to (a service the device does not use: log2(budget / P(new service)), Good-Turing
from its own flows). A device's evidence takes the strongest of its flows each minute, counted
from the episode's first flagged flow, and decays with a half-life of five minutes. Evidence
rising from nothing starts an **episode**; crossing the incident threshold makes it an
incident (one EVE line, state "open"), updated at most every ten minutes while flagged flows
keep coming, and closed when the device has had no flagged flow for 30 minutes (or the input
ended). A device with an open incident never opens a second one. A device the bundle did not
know is named once (`new_device`); its first minute (its set-up) is neither evidence nor its
normal, and after it, it is watched like any other.

Each device's normal (threshold, services, its own incident threshold) lives with the network
(normals.py, living.py): each change is one line (`device_normal`). The operator may mute a
device or accept an incident's peers (operator_word.py). `learn` sets the incident threshold from
the peaks of the held-out tail's episodes, replayed through this same code
(train/incident_budget.py). Times are the flows' own. State is bounded: `max_devices` devices
(the least recently seen goes first), episodes dropped when they end, 16 peers and ports each.
"""
from __future__ import annotations

import math

import numpy as np

from .announce import Announcements
from .clock import FlowClock
from .devices import Owners
from .episodes import Device, Episode, PeakLog, bin_flagged, count
from .incident_lines import incident_event
from .incident_settings import IncidentSettings
from .living import BatchPairs, LivingNormals, waiting
from .normal_rule import NormalRule
from .normals import Normals
from .roster import DeviceRoster

SLOT_SECONDS = 60.0  # a device's evidence grows by its strongest flagged flow of each minute
MAX_DEVICES = 16384
MAX_EPISODES = 1024  # open episodes; past it the weakest without an incident is dropped
RECENT_INCIDENTS = 256  # closed incidents remembered (the operator may accept one)


class IncidentTracker(LivingNormals, DeviceRoster):
    """Feed it each batch's flows (in time order, roughly) and it returns the EVE events due."""

    def __init__(self, settings: IncidentSettings, features: list[tuple[str, bool]] = (),
                 max_devices: int = MAX_DEVICES, record_peaks: bool = False,
                 rule: NormalRule | None = None, adapt: bool = True):
        self.features = list(features)  # per model input: (raw column, is one-hot, value)
        self.max_devices = max_devices
        self.normals = Normals(settings, rule or settings.rule, adapt)
        self.settings = settings  # (and the decay that comes with it)
        # plain dicts keep insertion order: re-inserting a device moves it to the end, so the
        # first is the least recently seen (lighter than an OrderedDict's linked list)
        self.devices: dict[str, Device] = {}
        self.evicted_new: dict[str, None] = {}  # new devices named, then evicted
        self.active: dict[str, Device] = {}  # devices with an episode
        self.resumable: dict[str, Device] = {}  # devices with an ended, resumable episode
        self.muted: dict[str, float] = {}  # devices the operator muted -> until (flow time)
        self.recent: dict[int, tuple] = {}  # closed incident -> (device, peers, services)
        self.flow_clock = FlowClock()  # flow time, kept from a stray time stamp (clock.py)
        self.announcements = Announcements()  # new_device lines, rate-limited (announce.py)
        self.rotations: dict = {}  # randomised MAC -> the one whose address it took (the map's)
        self.next_id = 1
        self.opened = self.closed = self.new_devices = self.changes = 0
        self.peaks = PeakLog() if record_peaks else None  # learn's calibration only
        self.timelines = False  # flagged flows per quarter hour per device, for the page

    @property
    def settings(self) -> IncidentSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: IncidentSettings) -> None:
        self._settings = self.normals.settings = settings
        self._decay = math.log(2) / settings.half_life
        self._grace = 60.0 * settings.join_grace_minutes
        self._tail = settings.tail_rule

    @property
    def clock(self) -> float:
        """Flow time now (what closes, updates and forgets go by)."""
        return self.flow_clock.now

    @clock.setter
    def clock(self, value: float) -> None:
        self.flow_clock.now = value

    @property
    def index(self):
        """The devices' services, numbered (services.ServiceIndex)."""
        return self.normals.index

    # -- one batch ------------------------------------------------------------------------------

    def observe(self, times, starts, devices, scores, named_bits, differences, flows,
                services, final: bool = True) -> list | None:
        """times/starts: per record (flow end and start, Unix s); devices: per record a tuple of
        (key, ip), or their Owners; scores: anomaly scores or None; named_bits: the classifier's
        evidence per record or None; differences: the anomaly model's (input - reconstruction)
        rows or None; flows(r): record r's (src, sport, dst, dport, proto) texts, for peers;
        services: per record its service, as its number (ServiceIndex.numbers) or name;
        final: False when more records may follow, so that a batch whose last record's time
        needs the next one (clock.py) is refused (None) and given again with them.

        Which records are evidence for which of their devices is found for the whole batch at
        once (numpy); only those flows go through the episode's bookkeeping, device by device
        and each device's in their order, whoever else a flow belongs to (else how a batch was
        cut, which moves with all else on the network, changed them). A device whose normal
        may change in this batch is taken flow by flow, so that the change falls on the same
        flow however the batches were cut."""
        events: list = []
        owners = devices if isinstance(devices, Owners) else Owners(devices)
        if len(owners):
            times = self.flow_clock.admit(times, final)
            if times is None:
                return None
            services = self.index.numbered(services)
            starts = np.minimum(np.asarray(starts, np.float64), times)
            self._observe(owners.pairs(), owners, times, starts,
                          None if scores is None else np.asarray(scores, dtype=np.float64),
                          None if named_bits is None else np.asarray(named_bits, np.float64),
                          differences, flows, services, events)
        self._sweep(events)
        return events

    def idle(self, seconds: float) -> list:
        """A live input brought no record for this long (wall time): flow time moves on as
        much, and what is due closes (a replay's clock moves only with its records)."""
        events: list = []
        self.flow_clock.advance(seconds)
        self._sweep(events)
        return events

    def _observe(self, pairs, owners, times, starts, scores, named_bits, differences, flows,
                 services, events) -> None:
        normals, keys, rows = self.normals, pairs.keys, pairs.rows
        thresholds = [normals.threshold(k) for k in keys]
        new_bits = [normals.service_bits(k) for k in keys]
        # per pair: is the record evidence for that device?
        # only a flow's initiator is judged by it (a scan is the scanner's evidence, not its
        # target's); the flows it answered are neither its evidence nor its normal
        novel = (np.array(new_bits)[pairs.devices] > 0) & \
            self.index.unused(keys, pairs.devices, services[rows])
        flagged = novel.copy()
        if scores is not None:
            flagged |= scores[rows] > np.array(thresholds)[pairs.devices]
        if named_bits is not None:
            flagged |= named_bits[rows] > 0
        flagged &= pairs.initiator
        bounds = pairs.bounds
        candidates = np.flatnonzero(flagged)
        cuts = np.searchsorted(candidates, bounds).tolist()
        latest = np.maximum.reduceat(times[rows], bounds[:-1]).tolist()
        earliest = np.minimum.reduceat(times[rows], bounds[:-1]).tolist()
        with_ip = np.maximum.reduceat(np.where(pairs.has_ip, np.arange(len(rows)), -1),
                                      bounds[:-1]).tolist()
        firsts, counts = bounds[:-1].tolist(), np.diff(bounds).tolist()
        first_rows = rows[bounds[:-1]].tolist()
        batch = BatchPairs(rows, pairs.slots, times, starts, scores, named_bits, services, owners,
                           flagged, pairs.initiator, differences, flows, normals.fallback)
        # the few evidence pairs' values as Python numbers, gathered once for the batch
        at = rows[candidates]
        evidence = zip(candidates.tolist(), at.tolist(), pairs.slots[candidates].tolist(),
                       times[at].tolist(), starts[at].tolist(),
                       [None] * len(at) if scores is None else scores[at].tolist(),
                       [0.0] * len(at) if named_bits is None else named_bits[at].tolist(),
                       novel[candidates].tolist(), services[at].tolist())
        for d, key in enumerate(keys):
            first, r = firsts[d], first_rows[d]
            device = self._device(key, owners.ip(r, int(pairs.slots[first])), float(times[r]),
                                  flows, r, events)
            if with_ip[d] >= first:
                device.ip = owners.ip(int(rows[with_ip[d]]), int(pairs.slots[with_ip[d]]))
            device.flows += counts[d]
            if latest[d] > device.last_seen:
                device.last_seen = latest[d]
            end = first + counts[d]
            normal = device.normal
            # (episodes that may end in this batch: its own, and one a close window of its
            # flows' time; each may add a peak before its next flow)
            ending = (device.episode is not None) + (device.ended is not None) + int(
                (latest[d] - earliest[d]) // self.settings.close_after)
            muted = normal.muted is not None and earliest[d] < normal.muted <= latest[d]
            if normal.joined is not None and earliest[d] < normal.joined + self._grace or \
                    muted or normals.adapt and normal.may_change(
                        latest[d], counts[d] + waiting(device), normals.rule, self._tail,
                        ending):
                for _ in range(cuts[d + 1] - cuts[d]):  # (taken again below, in order)
                    next(evidence)
                self._in_order(device, batch, first, end, events)
                continue
            seen = first  # the device's flows are counted in order: an episode sees those after
            for _ in range(cuts[d + 1] - cuts[d]):  # it began, whatever the batch
                p, r, slot, t, start, score, named, is_novel, service = next(evidence)
                if device.episode is not None:
                    device.episode.seen += p - seen  # flows not flagged since (flagged: in _flag)
                seen = p + 1
                self._evidence(device, r, owners.ip(r, slot), t, start, score, named,
                               thresholds[d], new_bits[d] if is_novel else 0.0, service,
                               differences, flows, events)
            if device.episode is not None:
                device.episode.seen += end - seen
            if normals.adapt and not device.normal.muted_at(latest[d]):
                batch.feed(device.normal, first, end)

    def _evidence(self, device, r, ip, t, start, score, named_bits, threshold, new_bits,
                  service, differences, flows, events) -> None:
        """Record r (flow end t, start, anomaly score or None, the classifier's bits) is
        evidence for the device: its bits, then the episode it belongs to."""
        settings, normal = self.settings, device.normal
        flow = flows(r)
        src, _, dst, _, _ = flow
        peer = (dst if src == ip else src) or "?"
        ratio = None if score is None else score / self.normals.fallback
        if peer in normal.peers:  # the operator accepted it: its flows are this device's normal
            if device.episode is not None:  # (counted with their services, not their scores:
                device.episode.seen += 1   # accepting raises no threshold)
            if self.normals.adapt and not normal.muted_at(t) and named_bits <= 0:
                normal.window.flows += 1
                normal.window.count(service, 1)
            return
        bits = 0.0
        if score is not None and score > threshold:
            bits = math.log2(score / threshold) if threshold > 0 else 64.0
        if named_bits > bits:
            bits = named_bits
        if bits > settings.max_flow_bits:
            bits = settings.max_flow_bits
        # a service it does not use: on top of an unusual flow; alone (a flow that looks normal)
        # at most what one flow may say, so that it never opens an incident by itself
        bits = bits + new_bits if bits > 0 else min(new_bits, settings.max_flow_bits)
        episode = device.episode
        if episode is not None and t - episode.last_flagged >= settings.close_after:
            self._end(device, events, self._quiet_reason(),
                      episode.last_flagged + settings.close_after)
            episode = None  # (ended before this flow, whatever the batch boundaries)
        if episode is None:
            episode = device.episode = self._episode(device, t)
            self.active[device.key] = device
            if len(self.active) > MAX_EPISODES:
                self._drop_weakest(events)
        if episode.pending is not None and self.normals.adapt and not normal.muted_at(t):
            if named_bits > 0:  # learn's rule counts these against the budget, scores not
                episode.pending.flows += 1
                episode.pending.named += 1
            else:
                episode.pending.add(ratio or 0.0, service)
        self._flag(device, episode, r, bits, t, start, peer, service,
                   None if score is None else score / threshold, differences, events)

    def _quiet_reason(self) -> str:
        after = self.settings.close_after
        return f"no flagged flow for {after / 60:g} min" if after % 60 == 0 else \
            f"no flagged flow for {after:g} s"

    def _episode(self, device: Device, t: float) -> Episode:
        """A new episode, or the last one if this flow arrived late into its window."""
        if device.ended is not None:
            episode, place = device.ended
            if t - episode.last_flagged < self.settings.close_after:
                device.ended = None
                self.resumable.pop(device.key, None)
                if place is not None:
                    self.peaks.take_back(place)
                return episode
            self._settle(device)
        return Episode(t, len(self.features))

    def _flag(self, device, episode, r, bits, t, start, peer, service, ratio, differences,
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
            bin_flagged(device, t)
        episode.first = min(episode.first, start)
        episode.last = max(episode.last, t)
        episode.last_flagged = max(episode.last_flagged, t)
        episode.peak = max(episode.peak, episode.evidence)
        if ratio is not None and ratio > episode.max_ratio:
            episode.max_ratio = ratio
        count(episode.peers, peer)
        count(episode.ports, self.index.name(service))
        if differences is not None and episode.errors is not None:
            row = differences[r]
            weighted = bits * row
            squared, signed = episode.errors  # (views: no copy back, as errors[0] += would)
            squared += weighted * row
            signed += weighted
        if episode.incident is None and episode.evidence > self.incident_threshold(device, t):
            episode.incident = self.next_id
            self.next_id += 1
            device.incidents += 1
            self.opened += 1
            episode.opened = t
            episode.last_line, episode.lines_flagged = t, episode.flagged
            episode.pending = None  # an incident's flows never feed the normal
            events.append(self._line(device, episode, "open", t))

    def _sweep(self, events: list) -> None:
        """Close what has been quiet long enough; update what is due; forget ended episodes
        once no late flow can belong to them; end mutes that are over."""
        settings = self.settings
        for key, device in list(self.resumable.items()):
            if device.ended is None or \
                    self.clock - device.ended[0].last_flagged >= 2 * settings.close_after:
                self._settle(device)
        for key, device in list(self.active.items()):
            episode = device.episode
            if self.clock - episode.last_flagged >= settings.close_after:
                self._end(device, events, self._quiet_reason(),
                          episode.last_flagged + settings.close_after)
            elif episode.incident is not None and episode.flagged > episode.lines_flagged \
                    and self.clock - episode.last_line >= settings.update_every:
                episode.last_line, episode.lines_flagged = self.clock, episode.flagged
                events.append(self._line(device, episode, "update", self.clock))
        self.announcements.due(self.clock, events)
        for key, until in list(self.muted.items()):
            if self.clock >= until:
                del self.muted[key]
                if key in self.devices:
                    self.devices[key].normal.muted = None

    def _end(self, device: Device, events: list, reason: str, at: float | None = None
             ) -> None:
        """The episode is over (closed `at`, by default now); its incident's last line. What
        waited to feed the normal feeds it, if it was no incident."""
        episode = device.episode
        place = None
        if self.peaks is not None:
            place = self.peaks.add(episode.peak)
        if episode.incident is not None:
            self.closed += 1
            self.recent[episode.incident] = (device.key, list(episode.peers),
                                             list(episode.ports))
            if len(self.recent) > RECENT_INCIDENTS:
                del self.recent[next(iter(self.recent))]
            events.append(self._line(device, episode, "closed", max(
                self.clock, episode.last) if at is None else at, reason))
            device.ended = None
        else:  # (its peak and waiting flows feed the normal once it can no longer resume)
            if device.ended is not None:
                self._settle(device)
            device.ended = (episode, place)
            self.resumable[device.key] = device
        device.episode = None
        self.active.pop(device.key, None)

    @property
    def episode_peaks(self) -> list[float]:
        """The peak evidence of every episode that ended (learn's calibration)."""
        return [] if self.peaks is None else self.peaks.peaks

    def finish(self, reason: str = "end of input") -> list:
        """Close every open incident (the input ended or the daemon stops)."""
        events: list = []
        for device in list(self.active.values()):
            self._end(device, events, reason)
        self.announcements.finish(events)
        return events

    def _line(self, device, episode, state: str, t: float, reason: str | None = None) -> dict:
        return incident_event(device, episode, state, t, self.open_threshold(device),
                              self.features, reason)
