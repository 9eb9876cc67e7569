"""Alerts as Suricata-EVE-style JSON lines, written so that a crash never leaves half a line.

One line per attack (or per record with emit_all):

    {"timestamp": "2026-11-23T17:20:00.123456+0000", "flow_id": 12, "event_type": "alert",
     "src_ip": …, "src_port": …, "dest_ip": …, "dest_port": …, "proto": "tcp",
     "flow": {"start": "2026-11-23T17:19:55.010203+0000", "end": "…"},
     "alert": {"action": "allowed", "signature_id": 9100001, "signature": "edge-ids ml: DoS",
               "category": "DoS", "severity": 2},
     "ml": {"class": "DoS", "model_sha256": "…", "dataset": "nsl-kdd", "score": 0.9731}}

`timestamp` is the flow's own end time (Argus LastTime) when the record has one, as Suricata
stamps an event with its packet's time, so a replayed capture says when things happened; with
it, `flow` gives the flow's start and end. A record without times gets the time it is processed.
`ml.class` is the verdict. A bundle with an anomaly model adds `ml.anomaly_score` to every line,
and an `Unknown` alert (the anomaly channel's: no class named, score over the threshold) also
names `ml.anomaly_threshold`, the threshold that record was held to (its devices' own, else the
bundle's); an anomaly-only bundle has no `score`. `flow_id` is the record's
intake sequence number since the daemon started. The 5-tuple keys appear when the bundle's raw
schema has those columns. A normal record (only with emit_all) has `"event_type": "ml"` and no
`alert` object, so EVE consumers that read alerts skip it.
"""
from __future__ import annotations

import json
import math
import os
import stat
import time
from datetime import datetime, timezone

import numpy as np

from ..model.detector import UNKNOWN, Detector, Verdicts
from ..ingest.records import Records

# EVE key -> raw column names that hold it, across our datasets' schemas (Argus, Bot-IoT,
# NSL-KDD); matched case-sensitively, first match wins.
FIVE_TUPLE = {
    "src_ip": ("SrcAddr", "saddr"),
    "src_port": ("Sport", "sport"),
    "dest_ip": ("DstAddr", "daddr"),
    "dest_port": ("Dport", "dport"),
    "proto": ("Proto", "proto", "protocol_type"),
}
SIGNATURE_ID_BASE = 9_100_000  # + class index; a range Suricata leaves to local rules


class EveFormatter:
    """Records and their predictions -> EVE lines. The constant part of each class's line is
    built once, so a record costs a few string joins."""

    def __init__(self, detector: Detector, emit_all: bool = False):
        bundle = detector.bundle
        self.emit_all = emit_all
        self.class_names = detector.verdict_names
        self.normal_index = detector.normal_index
        self.five_tuple = {}
        for key, candidates in FIVE_TUPLE.items():
            column = next((c for c in candidates if c in detector.schema.names), None)
            if column:
                self.five_tuple[key] = column
        ml = {"model_sha256": bundle.model_sha256, "dataset": bundle.manifest.get("dataset")}
        self._tails = []  # per verdict: everything after the 5-tuple, up to the scores
        for i, name in enumerate(self.class_names):
            attack = i != self.normal_index
            head = '"event_type":"alert"' if attack else '"event_type":"ml"'
            alert = {"action": "allowed", "signature_id": SIGNATURE_ID_BASE + i,
                     "signature": f"edge-ids ml: {name}", "category": name, "severity": 2}
            alert_part = f',"alert":{json.dumps(alert, separators=(",", ":"))}' if attack else ""
            ml_part = json.dumps({"class": name} | ml, separators=(",", ":"))[:-1]
            self._tails.append((head, alert_part + ',"ml":' + ml_part + ","))
        self.unknown = self.class_names.index(UNKNOWN) if UNKNOWN in self.class_names else -1
        self.threshold = detector.threshold  # the bundle's (a record's devices' own, if given)

    @property
    def text_columns(self) -> tuple[str, ...]:
        """Raw columns the parser should keep as text for the 5-tuple."""
        return tuple(self.five_tuple.values())

    def format(self, records: Records, verdicts: Verdicts, times=None) -> str:
        """The lines to write (each ending in a newline), or "" when none is due. `times`:
        watch.flow_times of these records (end, start, own), for the flows' own times."""
        classes = verdicts.verdicts
        emit = np.ones(len(classes), bool) if self.emit_all or self.normal_index is None else (
            classes != self.normal_index)
        rows = np.flatnonzero(emit)
        if not len(rows):
            return ""
        tuples = self._tuples(records, rows)
        scores = _scores(verdicts, rows, classes == self.unknown, self.threshold)
        stamps = _stamps(rows, times)
        lines = []
        for k, r in enumerate(rows.tolist()):
            head, tail = self._tails[classes[r]]
            lines.append(f'{stamps[k]}{records.numbers[r]},{head}{tuples[k]}{tail}{scores[k]}}}}}')
        return "\n".join(lines) + "\n"

    def _tuples(self, records: Records, rows: np.ndarray) -> list[str]:
        if not self.five_tuple:
            return [""] * len(rows)
        parts = []
        for key, column in self.five_tuple.items():
            values = records.columns[column][rows]
            if key.endswith("_port"):
                parts.append([f',"{key}":{v}' if v.isdigit() else f',"{key}":{json.dumps(v)}'
                              for v in values.tolist()])
            else:
                parts.append([f',"{key}":{json.dumps(v)}' for v in values.tolist()])
        return ["".join(p) for p in zip(*parts)]


def _stamps(rows: np.ndarray, times) -> list[str]:
    """Each line's start, up to its flow_id: its flow's own time (and a flow object), or now."""
    if times is None:
        return ['{"timestamp":"' + timestamp() + '","flow_id":'] * len(rows)
    end, start, own = times
    now = '{"timestamp":"' + timestamp() + '","flow_id":'
    return [f'{{"timestamp":"{iso(e)}","flow":{{"start":"{iso(s)}","end":"{iso(e)}"}},'
            f'"flow_id":' if o else now
            for e, s, o in zip(end[rows].tolist(), start[rows].tolist(), own[rows].tolist())]


def _scores(verdicts: Verdicts, rows: np.ndarray, unknown: np.ndarray, threshold) -> list[str]:
    """The end of each line's ml object: the classifier's score and/or the anomaly score; an
    Unknown line also the threshold its score was held to (its devices' own, or the bundle's)."""
    parts = []
    if unknown[rows].any():
        held = [threshold] * len(rows) if verdicts.thresholds is None else \
            verdicts.thresholds[rows].tolist()
        parts.append([f'"anomaly_threshold":{h!r}' if u else ""
                      for u, h in zip(unknown[rows].tolist(), held)])
    if verdicts.scores is not None:
        parts.append([f'"score":{s:.4f}' for s in verdicts.scores[rows].tolist()])
    if verdicts.anomaly_scores is not None:
        parts.append([f'"anomaly_score":{s:.6g}' for s in verdicts.anomaly_scores[rows].tolist()])
    return [",".join(filter(None, p)) for p in zip(*parts)]


_second: list = [None, ""]  # the last whole second formatted, and its text


def timestamp() -> str:
    """Now, the way Suricata writes it: 2026-11-23T17:20:00.123456+0000."""
    return iso(time.time())


def iso(t: float) -> str:
    """A Unix time the way Suricata writes it (strftime once a second: it is a good part of a
    single record's cost)."""
    if not math.isfinite(t):  # (nothing to say of it: the time it is written)
        t = time.time()
    second = math.floor(t)
    if second != _second[0]:
        try:
            text = datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        except (OverflowError, OSError, ValueError):  # a made-up time far outside the calendar
            return iso(time.time())
        _second[:] = second, text
    return f"{_second[1]}.{min(round((t - second) * 1e6), 999999):06d}+0000"


TIME_FIELDS = ("opened", "first_flow", "last_flow", "why_since", "since", "until")


def event_lines(events: list[dict], ml: dict) -> str:
    """Incident and new-device events (incidents.py) as EVE lines: times as Suricata writes
    them, the device's addresses as src_ip / src_mac, and the model as in every alert."""
    lines = []
    for event in events:
        device = event["device"]
        body = {"timestamp": iso(event["time"]), "event_type": event["event_type"],
                "src_ip": device["ip"], "src_mac": device["mac"], "device": device}
        detail = dict(event[event["event_type"]])
        for key in TIME_FIELDS:
            if detail.get(key) is not None:
                detail[key] = iso(detail[key])
        body[event["event_type"]] = detail
        body["ml"] = ml
        lines.append(json.dumps(body, separators=(",", ":")))
    return "\n".join(lines) + "\n" if lines else ""


class AlertWriter:
    """Whole lines to a file (appended) or to stdout ("-"), each batch in one write(2).

    Nothing is buffered in Python, so there is nothing to lose at exit. If a write fails part
    way (disk full), the file is cut back to where that write began, so the file still ends
    with a whole line; the error is raised for the caller to count. A SIGKILL can still cut a
    large write(2) between pages (Linux checks for fatal signals per page), so opening a file
    that ends in a torn line cuts it back to its last whole line first."""

    def __init__(self, dest: str):
        self.dest = dest
        self._fd = None
        self.open()

    def open(self) -> None:
        if self.dest == "-":
            self._fd = 1
        else:
            self._fd = os.open(self.dest, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o640)
            _cut_torn_last_line(self._fd)

    def reopen(self) -> None:
        """After logrotate moved the file away: start a new one under the same name."""
        if self.dest != "-":
            self.close()
            self.open()

    def write(self, text: str) -> None:
        data = memoryview(text.encode())
        start = None if self.dest == "-" else os.lseek(self._fd, 0, os.SEEK_END)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError:
            if start is not None and written:
                os.ftruncate(self._fd, start)
            raise

    def close(self) -> None:
        if self._fd is not None and self._fd != 1:
            os.close(self._fd)
        self._fd = None


def _cut_torn_last_line(fd: int) -> None:
    """Truncate a regular file that does not end in a newline back to its last one."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return
    end = os.lseek(fd, 0, os.SEEK_END)
    position = end
    while position > 0:
        start = max(0, position - 65536)
        block = os.pread(fd, position - start, start)
        if position == end and block.endswith(b"\n"):
            return
        newline = block.rfind(b"\n")
        if newline >= 0:
            os.ftruncate(fd, start + newline + 1)
            return
        position = start
    os.ftruncate(fd, 0)
