"""The daemon's device side: which devices each batch's flows belong to, the anomaly threshold
each flow is held to (its devices' own, else the site's), and the incident tracker fed with the
detector's verdicts. `learn` replays the held-out tail of the learning period through this same
class to set the incident threshold, so the daemon and the budget cannot disagree.
"""
from __future__ import annotations

import math
import time
from bisect import bisect_right
from typing import NamedTuple

import numpy as np

from .model.detector import Detector, Verdicts
from .site.devices import DeviceMap, HomeNet, Owners, remember
from .site.incident_settings import IncidentSettings
from .site.incidents import MAX_DEVICES, IncidentTracker
from .ingest.records import Records

TIME_COLUMNS = ("LastTime", "StartTime")  # Argus ltime, stime (ra -u: Unix seconds)
FLOW_COLUMNS = (("SrcAddr", "saddr"), ("Sport", "sport"), ("DstAddr", "daddr"),
                ("Dport", "dport"), ("Proto", "proto"))
WATCH_RECORDS = 1024  # under a backlog, batches wait to be observed together up to this many
MAX_NAMED_BITS = 8.0  # int8 probabilities resolve P(normal) to 1/256: log2(256)


def anomaly_features(spec: dict) -> list[tuple[str, bool, str | None]]:
    """Per model input of an anomaly spec: (its raw column, whether it is a one-hot value, that
    value): what an episode's errors are errors of (a reload to another vocabulary of the same
    width must not pair them with other inputs)."""
    kept = spec["kept"]
    return [(kept[i]["column"], "value" in kept[i], kept[i].get("value"))
            for i in spec["selected"]]


def flow_times(records: Records, now: float | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(end, start, own) of each flow from its own LastTime/StartTime; a record without them
    gets the time it is processed (so do layouts that have none), and `own` False."""
    n = len(records)
    now = time.time() if now is None else now
    out = []
    for column in TIME_COLUMNS:
        texts = records.columns.get(column)
        values = np.full(n, np.nan)
        if texts is not None:
            values = _to_float(texts)
        out.append(values)
    end, start = out
    own = np.isfinite(end) | np.isfinite(start)
    end = np.where(np.isfinite(end), end, np.where(np.isfinite(start), start, now))
    start = np.where(np.isfinite(start), np.minimum(start, end), end)
    return end, start, own


def _to_float(texts: np.ndarray) -> np.ndarray:
    try:  # float() over the list: numpy's own text-to-float is several times slower
        return np.array(list(map(float, texts.tolist())), dtype=np.float64)
    except ValueError:
        pass
    try:
        return np.where(texts == "", "nan", texts).astype(np.float64)
    except ValueError:  # a damaged time field: that record gets the processing time
        values = []
        for text in texts.tolist():
            try:
                values.append(float(text))
            except ValueError:
                values.append(math.nan)
        return np.array(values, dtype=np.float64)


class Stacked:
    """Several batches' arrays read by record number as if they were one, without copying them
    into one: a copy of a batch's model inputs or addresses for every flush is large enough for
    the C library to map fresh memory each time (page faults), and only a few rows are read."""

    def __init__(self, parts: list):
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts[:-1]]).tolist()

    def locate(self, r: int) -> tuple[int, int]:
        """(the part record r is in, its row there)."""
        i = bisect_right(self.starts, r) - 1
        return i, r - self.starts[i]

    def __getitem__(self, r: int):
        i, j = self.locate(r)
        return self.parts[i][j]


class _Waiting(NamedTuple):
    """A batch observed under a backlog, until the tracker is given it."""

    owners: Owners
    end: np.ndarray
    start: np.ndarray
    scores: np.ndarray | None
    named_bits: np.ndarray | None
    differences: np.ndarray | None
    columns: list[np.ndarray]  # FLOW_COLUMNS' texts


class DeviceWatch:
    def __init__(self, settings: IncidentSettings, columns, features=(),
                 max_devices: int = MAX_DEVICES, record_peaks: bool = False,
                 normal_threshold: float = 1.0, normal_index: int | None = None,
                 adapt: bool = True):
        columns = tuple(columns)
        self.settings = settings
        self.map = DeviceMap(HomeNet(settings.home_net), columns)
        self.map.seed(settings.known_ips or {})
        self.tracker = IncidentTracker(settings, features, max_devices, record_peaks,
                                       adapt=adapt)
        self.tracker.rotations = self.map.rotations
        self._version = -1  # the normals' version the remembered thresholds are of
        self.normal_threshold, self.normal_index = normal_threshold, normal_index
        self.flow_columns = [next((c for c in names if c in columns), None)
                             for names in FLOW_COLUMNS]
        self.time_columns = tuple(c for c in TIME_COLUMNS if c in columns)
        self._thresholds: dict[tuple, float] = {}
        self._pending: list[_Waiting] = []  # batches observed, not yet given to the tracker
        self._waiting = 0  # their records

    @classmethod
    def for_bundle(cls, bundle, detector: Detector, home_net=None, **kwargs) -> "DeviceWatch":
        settings = bundle.incidents.with_home_net(home_net)
        return cls(settings, detector.schema.names, anomaly_features(bundle.anomaly.spec),
                   normal_threshold=bundle.normal_threshold,
                   normal_index=detector.normal_index, **kwargs)

    @property
    def text_columns(self) -> tuple[str, ...]:
        """Raw columns the parser must keep as text for this (and `key_columns` as fields)."""
        return tuple(dict.fromkeys((*self.time_columns, *filter(None, self.flow_columns))))

    @property
    def key_columns(self) -> tuple[str, ...]:
        """Raw columns the parser should hand over per record as one tuple (`keep_fields`);
        without them, they are read from the records' text columns."""
        return self.map.key_columns

    def devices(self, records: Records) -> tuple[Owners, np.ndarray]:
        """(the devices of each record, the anomaly threshold each is held to: the lowest of its
        devices' own, so that a flow unusual for either is flagged)."""
        if not self.map.usable:
            return Owners([()] * len(records)), np.full(len(records),
                                                        self.settings.fallback_threshold)
        owners = self.map.owners(records)
        normals, memo = self.tracker.normals, self._thresholds
        if normals.version != self._version:  # a device's threshold changed since
            memo.clear()
            self._version = normals.version
        thresholds = []
        for devices in owners.tuples:  # once per distinct tuple of devices, not per record
            value = memo.get(devices)
            if value is None:
                value = min((normals.threshold(k) for k, _ in devices),
                            default=normals.fallback)
                remember(memo, devices, value)
            thresholds.append(value)
        return owners, np.array(thresholds, dtype=np.float64)[owners.codes]

    def observe(self, records: Records, verdicts: Verdicts, owners, now: float | None = None,
                times=None, later: bool = False) -> list[dict]:
        """The incident and new-device events of a batch. `times`: flow_times(records), if
        the caller has them already. `later`: more records are already waiting, so this batch
        may wait for them (up to WATCH_RECORDS): under a backlog the tracker's numpy work is
        done once for several batches (its cost is mostly per call, not per record); only
        these events wait, never the flow alerts."""
        end, start, _ = times if times is not None else flow_times(records, now)
        n = len(records)
        columns = [records.columns[c] if c else np.full(n, "") for c in self.flow_columns]
        self._pending.append(_Waiting(owners, end, start, verdicts.anomaly_scores,
                                      self._named_bits(verdicts), verdicts.differences,
                                      columns))
        self._waiting += n
        if later and self._waiting < WATCH_RECORDS:
            return []
        return self.flush(force=False)

    def flush(self, force: bool = True) -> list[dict]:
        """The events of the batches waiting, observed as one; unless `force`, they wait for
        the next batch if the last record's time needs it (a stray or a step: clock.py)."""
        if not self._pending:
            return []
        pending, waiting = self._pending, self._waiting
        self._pending, self._waiting = [], 0
        owners = pending[0].owners if len(pending) == 1 else \
            Owners.joined([p.owners for p in pending])
        end, start, scores, named_bits = (
            None if arrays[0] is None else np.concatenate(arrays)
            for arrays in zip(*((p.end, p.start, p.scores, p.named_bits) for p in pending)))
        # what only the few evidence flows read stays in its batches (`Stacked`, no copy)
        differences = None if pending[0].differences is None else \
            Stacked([p.differences for p in pending])
        batches = Stacked([p.end for p in pending])  # (to find a record's batch)

        def flow(r: int) -> tuple:  # only for the few flows an event names
            i, j = batches.locate(r)
            return tuple(str(c[j]) for c in pending[i].columns)

        _, sport, _, dport, proto = (texts[0] if len(texts) == 1 else np.concatenate(texts)
                                     for texts in zip(*(p.columns for p in pending)))
        events = self.tracker.observe(end, start, owners, scores, named_bits, differences, flow,
                                      self.tracker.index.numbers(proto, sport, dport),
                                      final=force or waiting >= 64 * WATCH_RECORDS)
        if events is None:  # the last record's time needs the next batch's (clock.py)
            self._pending, self._waiting = pending, waiting
            return []
        return events

    def _named_bits(self, verdicts: Verdicts) -> list[float] | None:
        """A flow the classifier names as an attack: log2(normal_threshold / P(normal)), in
        [0, 8] bits (int8 probabilities resolve P(normal) to 1/256)."""
        if verdicts.classes is None or verdicts.normal_probability is None:
            return None
        named = verdicts.classes != self.normal_index
        bits = np.log2(self.normal_threshold / np.maximum(verdicts.normal_probability, 1 / 256))
        return np.where(named, np.clip(bits, 0.0, MAX_NAMED_BITS), 0.0)

    def finish(self, reason: str = "end of input") -> list[dict]:
        return self.flush() + self.tracker.finish(reason)

    def idle(self, seconds: float) -> list[dict]:
        """A live input was idle this long: what is due closes (incidents.py, clock.py)."""
        return self.flush() + self.tracker.idle(seconds)

    def reconfigure(self, settings: IncidentSettings, features, same_model: bool) -> None:
        """A reloaded bundle: the devices remembered stay, and the new bundle decides what
        applies (incident_state.rebase). flush() first: the batches waiting were flagged with
        the old one."""
        from .site.incident_state import rebase

        self.settings = settings
        rebase(self.tracker, settings, features, same_model)
        self.map.home_net = HomeNet(settings.home_net)
        self.map.forget()
        self._thresholds.clear()
