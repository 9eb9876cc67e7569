"""The daemon's Prometheus metrics, served in the text exposition format.

prometheus_client is in the device install: it is pure Python, has no dependencies, and gets the
exposition format (escaping, histograms, HELP/TYPE) and the HTTP endpoint right, which a
hand-written page would have to re-learn. The daemon updates the metrics once per batch, never
per record, so its locks cost nothing measurable.
"""
from __future__ import annotations

import threading
from collections import Counter as Counter_

import numpy as np
from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector,
                               ProcessCollector, start_http_server)
from prometheus_client.core import HistogramMetricFamily

from ..ingest import records as r
from .webhook import RESULTS as WEBHOOK_RESULTS

DEFAULT_PORT = 9108
REJECT_REASONS = (r.WRONG_FIELD_COUNT, r.NON_NUMERIC, r.NOT_FINITE, r.EMPTY_LINE,
                  r.LINE_TOO_LONG, r.INVALID_UTF8, r.BAD_JSON, r.MISSING_FIELD)
LATENCY_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
# Anomaly score over the bundle's threshold: 1 is where alarms start. Traffic drifting away from
# the learned normal shows as mass moving up towards 1 before the alarms rise.
SCORE_RATIO_BUCKETS = (0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0,
                       5.0, 10.0, 100.0)


class Metrics:
    def __init__(self):
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)  # process_resident_memory_bytes, cpu seconds, …
        PlatformCollector(registry=registry)
        self.records = Counter("edge_ids_records", "Records classified.", registry=registry)
        self.rejected = Counter("edge_ids_records_rejected", "Lines rejected, by reason.",
                                ["reason"], registry=registry)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        self.alerts = Counter("edge_ids_alerts", "Alerts by verdict: a class the classifier "
                              "named, or Unknown (the anomaly model's).", ["class"],
                              registry=registry)
        self.unknown = Counter("edge_ids_unknown_category",
                               "Categorical values never seen in training (classified with an "
                               "all-zero one-hot), by column.", ["column"], registry=registry)
        self.inference = Histogram("edge_ids_inference_seconds",
                                   "Parsing, feature transform and model time per batch.",
                                   buckets=LATENCY_BUCKETS, registry=registry)
        self.latency = Histogram("edge_ids_record_latency_seconds",
                                 "Arrival to alert written, for the oldest record of each batch.",
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_size = Histogram("edge_ids_batch_size", "Records per batch.",
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.build_info = Gauge("edge_ids_build_info", "The running edge-ids and model.",
                                ["version", "model_sha256", "dataset"], registry=registry)
        self.reloads = Counter("edge_ids_reloads", "Bundle reloads (SIGHUP), by result.",
                               ["result"], registry=registry)
        for result in ("ok", "failed"):
            self.reloads.labels(result)
        self.write_errors = Counter("edge_ids_alert_write_errors",
                                    "Batches of alert lines that could not be written.",
                                    registry=registry)
        self.input_blocked = Counter("edge_ids_input_blocked_seconds",
                                     "Time the input was not read because classification was "
                                     "behind: its writers waited (back-pressure; nothing is "
                                     "dropped).", registry=registry)
        self.model_loaded = Gauge("edge_ids_model_loaded_timestamp_seconds",
                                  "When the serving model was loaded (Unix time).",
                                  registry=registry)
        self.anomaly_threshold = Gauge("edge_ids_anomaly_threshold",
                                       "The serving bundle's anomaly threshold (absent without "
                                       "an anomaly model).", registry=registry)
        self.anomaly_scores = RatioHistogram(
            "edge_ids_anomaly_score_ratio", "Anomaly score of each record divided by the "
            "bundle's threshold (over 1: anomalous).", SCORE_RATIO_BUCKETS)
        registry.register(self.anomaly_scores)
        # Incidents and devices: no per-device label (a network's devices are unbounded).
        self.incidents = Counter("edge_ids_incidents", "Incidents, by what happened: opened, "
                                 "closed.", ["event"], registry=registry)
        for event in ("opened", "closed"):
            self.incidents.labels(event)
        self.incidents_open = Gauge("edge_ids_incidents_open", "Incidents open now.",
                                    registry=registry)
        self.devices = Gauge("edge_ids_devices", "Devices remembered now, by kind: known (in "
                             "the learning period) or new.", ["kind"], registry=registry)
        for kind in ("known", "new"):
            self.devices.labels(kind)
        self.new_devices = Counter("edge_ids_new_devices", "Devices seen that were not in the "
                                   "learning period (each named once, or counted in a "
                                   "new_devices_held line).", registry=registry)
        self.stages = Gauge("edge_ids_device_stages", "Devices remembered now, by the stage "
                            "of their normal: known (from the bundle), probation, learned (on "
                            "the device), muted.", ["stage"], registry=registry)
        for stage in ("known", "probation", "learned", "muted"):
            self.stages.labels(stage)
        self.normal_changes = Counter("edge_ids_normal_changes", "Devices' normals that "
                                      "changed on the device: learned (graduated), updated.",
                                      ["change"], registry=registry)
        for change in ("learned", "updated"):
            self.normal_changes.labels(change)
        self.decisions = Counter("edge_ids_decisions", "The operator's decisions taken, by "
                                 "action.", ["action"], registry=registry)
        self.webhook = Counter("edge_ids_webhook_events", "Incident and new-device events for "
                               "the webhook, by result: sent (a 2xx answer), failed (any other "
                               "answer after its retries; a redirect at once, never followed), "
                               "dropped (its queue was full, or held it at stop), throttled, "
                               "below_floor.",
                               ["result"], registry=registry)
        for result in WEBHOOK_RESULTS:
            self.webhook.labels(result)
        self.clock_events = Counter("edge_ids_flow_clock_events", "Flow times the incident "
                                    "tracker's clock did not simply follow: stray (a lone "
                                    "record far ahead, taken at the clock's time), step (the "
                                    "input's time jumped or stepped back, two records in a "
                                    "row).", ["kind"], registry=registry)
        self._clock_seen = {"stray": 0, "step": 0}
        for kind in self._clock_seen:
            self.clock_events.labels(kind)
        self._build_labels = None

    def count_events(self, events: list[dict], tracker) -> Counter_:
        """Count a batch's incident, device and decision lines; the devices' gauges from the
        tracker. Returns how many incidents opened and new devices were named."""
        counted = Counter_()
        for event in events:
            kind = event["event_type"]
            if kind == "new_device":
                self.new_devices.inc()
                counted["new_devices"] += 1
            elif kind == "device_normal":
                self.normal_changes.labels(event["device_normal"]["change"]).inc()
            elif kind == "new_devices_held":  # (not announced: a storm, or randomised MACs)
                self.new_devices.inc(event["new_devices_held"]["devices"])
            elif kind == "decision":
                self.decisions.labels(event["decision"]["action"]).inc()
            elif kind != "incident":
                continue
            elif event["incident"]["state"] == "open":
                self.incidents.labels("opened").inc()
                counted["incidents"] += 1
            elif event["incident"]["state"] == "closed":
                self.incidents.labels("closed").inc()
        self.incidents_open.set(tracker.opened - tracker.closed)
        clock = tracker.flow_clock
        for kind, value in (("stray", clock.strays), ("step", clock.steps)):
            if value > self._clock_seen[kind]:
                self.clock_events.labels(kind).inc(value - self._clock_seen[kind])
            self._clock_seen[kind] = value
        stages = Counter_(d.normal.stage for d in tracker.devices.values())
        new = sum(1 for d in tracker.devices.values() if d.new)
        self.devices.labels("new").set(new)
        self.devices.labels("known").set(len(tracker.devices) - new)
        for stage in ("known", "probation", "learned"):
            self.stages.labels(stage).set(stages.get(stage, 0))
        self.stages.labels("muted").set(len(tracker.muted))
        return counted

    def set_model(self, version: str, model_sha256: str, dataset: str) -> None:
        if self._build_labels:
            self.build_info.remove(*self._build_labels)
        self._build_labels = (version, model_sha256, dataset)
        self.build_info.labels(*self._build_labels).set(1)
        self.model_loaded.set_to_current_time()

    def set_threshold(self, threshold: float | None) -> None:
        """A reload may switch between bundles with and without an anomaly model."""
        if threshold is None:
            self.anomaly_threshold.set(float("nan"))
        else:
            self.anomaly_threshold.set(threshold)

    def serve(self, address: str):
        """Start the HTTP endpoint; return the bound (host, port)."""
        host, port = parse_address(address)
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return host, server.server_port


def parse_address(address: str) -> tuple[str, int]:
    """'127.0.0.1:9108', ':9108' or '9108' (loopback), '[::1]:9108', '0.0.0.0:9108'."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"metrics address {address!r}: expected HOST:PORT, e.g. "
                         f"127.0.0.1:{DEFAULT_PORT}")
    return host, int(port)


class RatioHistogram:
    """A Prometheus histogram that takes a whole batch of values at once.

    prometheus_client's Histogram.observe takes one value under a lock: at tens of thousands
    of records a second that is a measurable cost, so the daemon counts a batch's buckets with
    numpy and this collector exposes them in the same exposition format."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]):
        self.name, self.documentation = name, documentation
        self.bounds = np.array(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last: +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: np.ndarray) -> None:
        counts = np.bincount(np.searchsorted(self.bounds, values, side="left"),
                             minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(np.sum(values))

    def collect(self):
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], [*zip(map(_bound, self.bounds.tolist()), cumulative[:-1]),
                               ("+Inf", cumulative[-1])], total)
        yield family

    def describe(self):
        return [HistogramMetricFamily(self.name, self.documentation)]


def _bound(value: float) -> str:
    return repr(float(value))
