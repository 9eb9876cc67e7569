"""The incident tracker's side of a normal that lives with the network (normals.py): a device
whose normal may change in a batch, or that is in its set-up grace, is taken flow by flow so
that the change falls on the same flow however batches were cut; the other devices' flows that
were no evidence feed their normals a batch at a time (numpy); a device's own incident
threshold. IncidentTracker (incidents.py) inherits these.
"""
from __future__ import annotations

import math

import numpy as np

from .episodes import Device
from .incident_lines import normal_event


class LivingNormals:
    """Methods of IncidentTracker (incidents.py) that keep its devices' normals alive."""

    def _in_order(self, device: Device, batch: "BatchPairs", first: int, end: int,
                  events: list) -> None:
        """A device whose normal may change in this batch, or in its set-up grace, flow by
        flow: an episode that ended before a flow ends first, the normal changes at the first
        flow it may, and each flow is judged by the normal as it is at that flow."""
        normals, key = self.normals, device.key
        for p in range(first, end):
            r = int(batch.rows[p])
            t = float(batch.times[r])
            if not batch.initiator[p] or device.normal.joined is not None and \
                    t < device.normal.joined + self._grace:
                if device.episode is not None:  # a flow it answered, or its set-up: no
                    device.episode.seen += 1    # evidence, not its normal
                continue
            episode = device.episode
            if episode is not None and t - episode.last_flagged >= self.settings.close_after:
                self._end(device, events, self._quiet_reason(),
                          episode.last_flagged + self.settings.close_after)
            if device.ended is not None and \
                    t - device.ended[0].last_flagged >= self.settings.close_after:
                self._settle(device)  # it can no longer resume: its flows feed the normal
            if device.episode is None and device.normal.ripe(t, normals.rule, self._tail):
                self._change(device, t, events)
            threshold, bits = normals.threshold(key), normals.service_bits(key)
            score = None if batch.scores is None else float(batch.scores[r])
            named = 0.0 if batch.named_bits is None else float(batch.named_bits[r])
            service = int(batch.services[r])
            novel = bits > 0 and service not in normals.index.services(key)
            if novel or named > 0 or (score is not None and score > threshold):
                self._evidence(device, r, batch.owners.ip(r, int(batch.slots[p])), t,
                               float(batch.starts[r]), score, named, threshold,
                               bits if novel else 0.0, service, batch.differences,
                               batch.flows, events)
            else:
                if device.episode is not None:
                    device.episode.seen += 1
                if not device.normal.muted_at(t):
                    device.normal.window.add(batch.ratio(score), service)

    def _change(self, device: Device, t: float, events: list) -> None:
        """Its normal graduates or moves (normals.py); the watch and this serve it from now."""
        settings = self.settings
        change = device.normal.change(t, self.normals.rule, self._tail,
                                      settings.max_per_device_week, settings.threshold_bits,
                                      self.index.name)
        if change:
            self.normals.adopt(device.key, device.normal)
            self.changes += 1
            events.append(normal_event(device, change, t, self.normals))

    def _settle(self, device: Device) -> None:
        """Its last episode ended without an incident and can no longer resume (a flow of its
        own came a close window after it, or another episode began, or it was forgotten): its
        peak and the flagged flows that waited in it feed its normal now, and only now, so a
        late flow that resumes an episode never finds its flows already learned."""
        ended, device.ended = device.ended, None
        self.resumable.pop(device.key, None)
        episode = ended[0] if ended is not None else None
        if episode is None or episode.incident is not None or not self.normals.adapt:
            return
        normal = device.normal
        if not normal.muted_at(episode.last):
            normal.add_peak(episode.peak, self._tail.peaks_kept)
        if episode.pending is not None and episode.pending.flows:
            normal.window.merge(episode.pending)  # (its flows were kept only while unmuted)
        episode.pending = None

    def incident_threshold(self, device: Device, t: float) -> float:
        """The evidence that opens an incident for this device at flow time t: its own
        (normals.py) or the bundle's; none while the operator has it muted."""
        return math.inf if device.normal.muted_at(t) else self.open_threshold(device)

    def open_threshold(self, device: Device) -> float:
        """Its incident threshold, mute aside (what its lines say)."""
        own = device.normal.incident_bits
        return self.settings.threshold_bits if own is None else max(
            own, self.settings.threshold_bits)


def waiting(device: Device) -> int:
    """Flows waiting in the device's episodes (going on, or ended and resumable) to feed its
    normal."""
    return sum(e.pending.flows for e in (device.episode, device.ended and device.ended[0])
               if e is not None and e.pending is not None)


class BatchPairs:
    """A batch's per-pair arrays, for the devices taken flow by flow and for feeding."""

    __slots__ = ("rows", "slots", "times", "starts", "scores", "named_bits", "services",
                 "owners", "flagged", "initiator", "differences", "flows", "fallback")

    def __init__(self, rows, slots, times, starts, scores, named_bits, services, owners,
                 flagged, initiator, differences, flows, fallback):
        self.rows, self.slots, self.times, self.starts = rows, slots, times, starts
        self.scores, self.named_bits, self.services = scores, named_bits, services
        self.owners, self.flagged, self.initiator = owners, flagged, initiator
        self.differences, self.flows = differences, flows
        self.fallback = fallback

    def ratio(self, score: float | None) -> float:
        return 0.0 if score is None else score / self.fallback

    def feed(self, normal, first: int, end: int) -> None:
        """The flows the device initiated in pairs first:end that were no evidence feed its
        normal: how many, the highest scores, the services (numpy for a device with many in
        the batch)."""
        fed = self.initiator[first:end] & ~self.flagged[first:end]
        n = int(fed.sum())
        if not n:
            return
        window = normal.window
        rows = self.rows[first:end][fed]
        services = self.services[rows]
        if self.scores is None:
            scores = np.zeros(n)
        else:
            scores = self.scores[rows] / self.fallback
        if n <= 8:
            for ratio, service in zip(scores.tolist(), services.tolist()):
                window.add(ratio, service)
            return
        window.flows += n
        window.add_many(scores[scores > window.floor()].tolist())
        values, first, counts = np.unique(services, return_index=True, return_counts=True)
        for i in np.argsort(first).tolist():  # in the order they came, as one by one
            window.count(int(values[i]), int(counts[i]))
