"""`edge-ids run`: the long-running daemon. Records in, EVE alerts and metrics out.

Two threads. The reader thread pulls lines from the source into the `Intake`; the main thread
takes micro-batches from it, parses, classifies, writes alerts and updates metrics, and between
batches handles what signals asked for (signal handlers only set flags):

    SIGHUP           reopen the alert file (logrotate), then load the bundle again: verified
                     first (hashes, and its signature under the trust policy); if the new
                     one is broken, refused or reads another raw layout, the old model keeps
                     serving. The devices remembered stay (incident_state.rebase).
    SIGTERM, SIGINT  stop reading, classify every line already accepted, exit 0

A bad line never stops it: it is rejected with a reason, counted, and logged at a bounded rate.
With a bundle that knows its devices (`edge-ids learn`), each batch also goes through the
device watch (watch.py): flows are held to their devices' own thresholds, and incident and
new-device lines are written beside (or instead of) the flow alerts. When the input ends or the
daemon stops, open incidents are closed with that reason; with a state directory (`--state-dir`,
site_state.py) they are kept instead, with all the watch remembers, for the next start.
"""
from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from .outputs.alerts import AlertWriter, EveFormatter, event_lines
from .model.bundle import BundleError, load_bundle
from .model.detector import Detector
from .ingest.intake import Batch, Intake
from .outputs.metrics import Metrics
from .outputs.operator import OperatorOutputs
from .ingest.records import parse_lines
from .outputs.ratelimit import RateLimitedLog
from .ingest.recorder import FlowRecorder
from .site.site_state import SiteMemory
from .model.signature import TrustPolicy
from .ingest.inputs import open_source
from .ingest.sources import LineSource
from .systemd import Notifier
from .watch import DeviceWatch, anomaly_features, flow_times
from .outputs.webhook import WebhookOptions

log = logging.getLogger("edge_ids.daemon")
REPLAYS = ("file:", "pcap:")  # inputs whose flow time moves only with their records
try:  # (edge_runtime imports nothing from outside itself, so not edge_ids.__version__)
    VERSION = metadata.version("edge-ids")
except metadata.PackageNotFoundError:
    VERSION = "0+unknown"
TICK_SECONDS = 0.1  # the longest the main loop sleeps before looking at signals and watchdog
STATUS_SECONDS = 5.0


@dataclass
class DaemonOptions:
    bundle: Path
    input: str
    alerts: str
    metrics: str | None = None
    emit_all: bool = False  # a line for every record, not only the flagged ones
    flow_alerts: bool = True  # flow alert lines (event_type "alert")
    incidents: bool = True  # incident and new_device lines, when the bundle knows its devices
    home_net: tuple[str, ...] = ()  # overrides the bundle's home networks
    max_batch: int = 256
    max_delay: float = 0.005
    threads: int = 1
    follow_from_start: bool = False
    rejects_logged_per_minute: int = 60
    flow_report_seconds: int = 5  # argus:/pcap: inputs only
    record: str | None = None  # also write every input line here (a learning period)
    record_max_bytes: int = 64 * 2**20
    record_keep: int = 4
    trust: TrustPolicy = TrustPolicy()  # signatures: allowed signers, required or not
    ui: str | None = None  # the operator's page, ADDRESS:PORT (operator_page.py)
    ui_token: str | None = None  # required on every request; needed off loopback
    ui_tls: tuple[Path, Path] | None = None  # the page's certificate and key; needed off loopback
    webhook: WebhookOptions | None = None  # a push per incident opened/closed, new device
    state_dir: Path | None = None  # what the device watch remembers, kept across restarts
    adapt: bool = True  # devices' normals live with the network (normals.py); False: frozen


class Model:
    """What serves: a verified bundle, its detector and its EVE formatter, swapped as one."""

    def __init__(self, path: Path, options: DaemonOptions):
        # BundleError unless signature, hashes and versions check out
        self.bundle = load_bundle(path, options.trust)
        self.detector = Detector(self.bundle, options.threads, options.max_batch)
        self.detector.warm_up()  # it runs
        self.formatter = EveFormatter(self.detector, options.emit_all)
        if options.incidents and not options.flow_alerts and self.bundle.incidents is None:
            raise BundleError(f"{path}: --emit incidents needs a bundle that knows its devices "
                              f"(made by edge-ids learn from flows with times); this one has "
                              f"no incident settings")
        self.watching = options.incidents and self.bundle.incidents is not None
        self.ml = {"model_sha256": self.bundle.model_sha256,
                   "dataset": self.bundle.manifest.get("dataset")}

    def new_watch(self, options: DaemonOptions) -> DeviceWatch | None:
        if not self.watching:
            return None
        return DeviceWatch.for_bundle(self.bundle, self.detector, options.home_net or None,
                                      adapt=options.adapt)

    def describe(self) -> str:
        kind = "" if self.bundle.detector == "classifier" else f"{self.bundle.detector} "
        signed = f", signed by {self.bundle.signer}" if self.bundle.signer else ""
        return (f"{self.bundle.manifest.get('dataset')} {kind}model "
                f"{self.bundle.model_sha256[:12]}{signed}")


class Daemon:
    def __init__(self, options: DaemonOptions, notifier: Notifier | None = None):
        self.options = options
        self.notifier = notifier or Notifier()
        self.metrics = Metrics()
        self.counts = Counter()  # lines taken, records classified, alerts, rejected
        self.metrics_address = None
        self._stop = threading.Event()
        self._hup = threading.Event()
        self._reader_error: BaseException | None = None
        self._rejects_log = RateLimitedLog(options.rejects_logged_per_minute)

    # -- lifecycle ------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until the input ends or SIGTERM; 0 when stopped cleanly, 1 if the input failed.
        Raises BundleError/OSError/ValueError when it cannot start."""
        # the state directory first: a second daemon on it is refused before anything starts
        self.memory = SiteMemory(self.options.state_dir) if self.options.state_dir else None
        try:
            self.model = Model(self.options.bundle, self.options)
        except BaseException:
            if self.memory is not None:
                self.memory.store.close()
            raise
        self.watch = self.model.new_watch(self.options) if self.memory is None else \
            self.memory.restore(lambda: self.model.new_watch(self.options),
                                self.model.bundle.model_sha256)
        self._keep_text, self._keep_fields = self._text_columns(), self._key_columns()
        self._set_model_metrics()
        self.outputs = OperatorOutputs(self.metrics, self.model.ml, self.model.describe(),
                                       self.options.ui, self.options.ui_token,
                                       self.options.webhook, ui_tls=self.options.ui_tls)
        self.outputs.watching(self.watch, self.model.describe(), self.model.ml)
        writer = AlertWriter(self.options.alerts)
        source = open_source(self.options.input, self.options.follow_from_start,
                             self.model.detector.schema, self.options.flow_report_seconds)
        intake = Intake(self.options.max_batch, self.options.max_delay,
                        on_wait=self.metrics.input_blocked.inc)
        recorder = None if self.options.record is None else FlowRecorder(
            self.options.record, self.model.detector.schema.names,
            self.options.record_max_bytes, self.options.record_keep)
        handlers = {}
        try:
            if self.options.metrics:
                self.metrics_address = self.metrics.serve(self.options.metrics)
                log.info("metrics on http://%s:%d/metrics", *self.metrics_address)
            self.outputs.start()
            handlers = self._install_signal_handlers()
            reader = threading.Thread(target=self._read, args=(source, intake, recorder),
                                      daemon=True, name="edge-ids-reader")
            reader.start()
            log.info("serving %s; reading %s; alerts to %s", self.model.describe(),
                     self.options.input, self.options.alerts)
            gc.freeze()  # what start-up allocated is never scanned again: no long GC pauses
            self.notifier.ready(self._status())
            self._serve(intake, writer)
            reader.join(timeout=5)
            self._finish_incidents(writer)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            source.close()
            writer.close()
            self.outputs.close()
            if recorder is not None:
                recorder.close()
        log.info("stopped: %s", self._status())
        return 1 if self._reader_error else 0

    def _text_columns(self) -> tuple[str, ...]:
        """What the parser keeps as text: the 5-tuple for alerts, and with the device watch
        the addresses, MACs and flow times."""
        columns = self.model.formatter.text_columns
        if self.watch is not None:
            columns += tuple(c for c in self.watch.text_columns if c not in columns)
        times = tuple(c for c in ("LastTime", "StartTime")
                      if c in self.model.detector.schema.names and c not in columns)
        return columns + times

    def _key_columns(self) -> tuple[str, ...]:
        """What the parser hands over per record as one tuple: the device watch's keys."""
        return self.watch.key_columns if self.watch is not None else ()

    def _finish_incidents(self, writer: AlertWriter) -> None:
        """Open incidents are closed, or with a state directory kept for the next start."""
        if self.memory is not None:
            with self.outputs.lock:
                if self.watch is not None:
                    self._write_events(self.watch.flush(), writer)
                self.memory.stop(self.watch, self.model.bundle.model_sha256)
            return
        if self.watch is None:
            return
        reason = "the daemon stopped" if self._stop.is_set() else "end of input"
        with self.outputs.lock:
            self._write_events(self.watch.finish(reason), writer)

    def _write_events(self, events: list, writer: AlertWriter) -> None:
        if not events:
            return
        self.counts.update(self.metrics.count_events(events, self.watch.tracker))
        try:
            writer.write(event_lines(events, self.model.ml))
        except OSError as e:
            self.metrics.write_errors.inc()
            log.error("writing incidents to %s failed: %s", self.options.alerts, e)
        self.outputs.publish(events)

    def _install_signal_handlers(self) -> dict:
        """Ours in place of the current handlers, which are returned (restored at the end)."""
        if threading.current_thread() is not threading.main_thread():
            return {}  # run from another thread (embedded): call stop() and reload() instead
        ours = {signal.SIGHUP: lambda *_: self._hup.set(), signal.SIGTERM: lambda *_: self.stop(),
                signal.SIGINT: lambda *_: self.stop()}
        return {signum: signal.signal(signum, handler) for signum, handler in ours.items()}

    @property
    def reader_error(self) -> BaseException | None:
        """Why the input failed, if it did (the run then ended early)."""
        return self._reader_error

    @property
    def stopped_by_signal(self) -> bool:
        """Stopped by SIGTERM/SIGINT (or stop()), not by the end of its input."""
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def reload(self) -> None:
        self._hup.set()

    def _read(self, source: LineSource, intake: Intake, recorder: FlowRecorder | None) -> None:
        try:
            for lines in source.batches(self._stop):
                if recorder is not None:
                    try:
                        recorder.write(lines)
                    except OSError as e:  # a full disk must not stop the detection
                        log.error("recording to %s failed, recording stopped (classifying goes "
                                  "on): %s", self.options.record, e)
                        recorder = None
                intake.put(lines)
        except Exception as e:  # noqa: BLE001 - any failure of the input ends the run
            self._reader_error = e
            log.error("reading %s failed: %s", self.options.input, e)
        finally:
            intake.close()

    def _tend_memory(self, writer: AlertWriter, now: float) -> None:
        """The operator's decisions waiting in the state directory, and a save when due."""
        if self.memory is not None and self.memory.due(now):
            with self.outputs.lock:
                if self.watch is not None:
                    self._write_events(self.watch.flush(force=False), writer)
                self._write_events(self.memory.tick(
                    self.watch, self.model.bundle.model_sha256, now), writer)

    def _serve(self, intake: Intake, writer: AlertWriter) -> None:
        last_status = last_records = time.monotonic()
        stopping = False
        live = not self.options.input.startswith(REPLAYS)
        self._tend_memory(writer, last_status)  # decisions left while no daemon ran
        while True:
            batch = intake.take(TICK_SECONDS)
            if self._stop.is_set() and not stopping:
                stopping = True
                waiting = intake.accepted - self.counts["lines"]
                log.info("stopping: classifying the %s lines already accepted", f"{waiting:,}")
                self.notifier.stopping(self._status())
            if batch is None:
                break
            now = time.monotonic()
            if batch.lines:  # (with more lines waiting, incidents may wait to be worked out)
                self._classify(batch, writer, later=intake.waiting > 0)
            elif self.watch is not None:  # idle: nothing waits; live, flow time goes on
                with self.outputs.lock:
                    self._write_events(self.watch.idle(now - last_records) if live else
                                       self.watch.flush(force=False), writer)
            last_records = now
            self._tend_memory(writer, now)
            self.notifier.watchdog_if_due(now)
            if self._hup.is_set() and not stopping:
                self._hup.clear()
                self._on_hup(writer)
            if now - last_status >= STATUS_SECONDS:
                last_status = now
                self.notifier.status(self._status())

    # -- one batch ------------------------------------------------------------------------------

    def _classify(self, batch: Batch, writer: AlertWriter, later: bool = False) -> None:
        start = time.perf_counter()
        model = self.model
        records, rejected = parse_lines(batch.lines, model.detector.schema,
                                        first_number=batch.first_number,
                                        keep_text=self._keep_text,
                                        keep_fields=self._keep_fields)
        self.counts["lines"] += len(batch.lines)
        for r in rejected:
            self.metrics.rejected.labels(r.reason).inc()
            self._rejects_log.warning(f"record {r.record} rejected ({r.reason}): {r.detail}")
        self.counts["rejected"] += len(rejected)
        if len(records):
            watch = self.watch
            owners, thresholds = watch.devices(records) if watch is not None else (None, None)
            verdicts = model.detector.detect(records, thresholds, explain=watch is not None)
            times = flow_times(records) if self._keep_text and any(
                c in records.columns for c in ("LastTime", "StartTime")) else None
            text = model.formatter.format(records, verdicts, times) \
                if self.options.flow_alerts else ""
            self.metrics.inference.observe(time.perf_counter() - start)
            if text:
                try:
                    writer.write(text)
                except OSError as e:
                    self.metrics.write_errors.inc()
                    log.error("writing alerts to %s failed: %s", self.options.alerts, e)
            if watch is not None:
                with self.outputs.lock:  # the page copies the devices under it
                    self._write_events(watch.observe(records, verdicts, owners, times=times,
                                                     later=later), writer)
            self._count(model, records, verdicts)
        self.metrics.batch_size.observe(len(batch.lines))
        self.metrics.latency.observe(time.monotonic() - batch.oldest_arrival)

    def _count(self, model: Model, records, verdicts) -> None:
        self.metrics.records.inc(len(records))
        self.counts["records"] += len(records)
        names = model.formatter.class_names
        per_verdict = np.bincount(verdicts.verdicts, minlength=len(names))
        for i, n in enumerate(per_verdict.tolist()):
            if n and i != model.formatter.normal_index:
                self.metrics.alerts.labels(names[i]).inc(n)
                self.counts["alerts"] += n
        for column, n in verdicts.unknown.items():
            if n:
                self.metrics.unknown.labels(column).inc(n)
        if verdicts.anomaly_scores is not None:
            self.metrics.anomaly_scores.observe_many(verdicts.anomaly_scores
                                                     / max(model.detector.threshold, 1e-30))

    # -- SIGHUP ---------------------------------------------------------------------------------

    def _on_hup(self, writer: AlertWriter) -> None:
        self.notifier.reloading()
        try:
            writer.reopen()
        except OSError as e:
            log.error("reopening %s failed: %s", self.options.alerts, e)
        self.outputs.reload()  # the webhook's token file and the page's certificate, read again
        try:
            new = Model(self.options.bundle, self.options)
            if new.detector.schema.names != self.model.detector.schema.names:
                raise BundleError(f"its raw input layout ({len(new.detector.schema.names)} "
                                  f"columns) is not the one this daemon reads "
                                  f"({len(self.model.detector.schema.names)}): restart the "
                                  f"daemon to serve it")
        except Exception as e:  # noqa: BLE001 - whatever is wrong with it, the old model stays
            self.metrics.reloads.labels("failed").inc()
            log.error("reload failed, still serving %s: %s", self.model.describe(), e)
        else:
            old = self.model
            self.model = new
            with self.outputs.lock:  # the page reads the watch's devices
                if self.watch is not None:  # what waits was flagged by the old bundle
                    self._write_events(self.watch.flush(), writer)
                if new.watching and self.watch is not None:
                    self.watch.reconfigure(new.bundle.incidents.with_home_net(
                        self.options.home_net or None),
                        anomaly_features(new.bundle.anomaly.spec),
                        same_model=new.bundle.model_sha256 == old.bundle.model_sha256)
                else:
                    self.watch = new.new_watch(self.options)
                if self.memory is not None and self.watch is not None:
                    self.memory.save(self.watch, new.bundle.model_sha256)
                self.outputs.watching(self.watch, new.describe(), new.ml)
            self._keep_text, self._keep_fields = self._text_columns(), self._key_columns()
            self._set_model_metrics()
            self.metrics.reloads.labels("ok").inc()
            log.info("reloaded: %s (was %s)", new.describe(), old.describe())
        self.notifier.ready(self._status())

    def _set_model_metrics(self) -> None:
        b = self.model.bundle
        self.metrics.set_model(VERSION, b.model_sha256, str(b.manifest.get("dataset")))
        self.metrics.set_threshold(self.model.detector.threshold)

    def _status(self) -> str:
        c = self.counts
        incidents = (f", {c['incidents']:,} incidents, {c['new_devices']:,} new devices"
                     if self.watch is not None else "")
        return (f"{c['records']:,} records, {c['alerts']:,} alerts{incidents}, "
                f"{c['rejected']:,} rejected; {self.model.describe()}")
