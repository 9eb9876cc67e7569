"""`edge-ids learn`: learn a site's normal traffic and write an anomaly-only or hybrid bundle.

    benign flows (pcaps through argus | ra, as `capture` reads them; or flow files a device
    recorded with `capture --record`), in time order -> the last part by time held out ->
    feature spec (log scale, no labels) -> autoencoder -> int8 TFLite -> operating point from
    --max-fpr on the held-out flows, scored by the bundle's own int8 models through the edge
    runtime -> each device's own threshold and the incident threshold from
    --max-incidents-per-week (train/incident_budget.py) -> OUT/bundle, verified by loading it

`learn_bundle` is the part that the NSL-KDD / WUSTL-EHMS evaluation (benchmarks/hybrid.py)
calls with labelled datasets' benign rows.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

EARLY_STOP_FRACTION = 0.1  # of the fit rows, for the autoencoder's early stopping
CALIBRATION_ROWS = 1000


class LearnError(ValueError):
    """Nothing was written; the message says why."""


@dataclass
class LearnOptions:
    out: Path
    pcaps: tuple[str, ...] = ()
    flow_files: tuple[str, ...] = ()
    classifier: Path | None = None
    max_fpr: float = 0.01
    seed: int = 0
    val_fraction: float = 0.2
    epochs: int = 200
    flow_report_seconds: int = 5
    max_incidents_per_week: float = 1.0  # per device
    home_net: tuple[str, ...] = ()  # default: the private ranges
    device_parts: tuple[str, ...] = ("thresholds", "services")  # (the benchmark leaves out)
    priors: dict | None = None  # what devices learned on the device (incident_budget.prior_normals)


def minimum_flows(max_fpr: float, val_fraction: float) -> int:
    """The fewest flows learn accepts: the held-out last part (⌊share × n⌋ flows) must allow
    MIN_FALSE_ALARMS flows over the threshold at the budget."""
    from .train.operating_point import MIN_FALSE_ALARMS

    validation = math.ceil(MIN_FALSE_ALARMS / max_fpr - 1e-9)
    n = math.ceil(validation / val_fraction - 1e-9)
    while math.floor(n * val_fraction + 1e-9) < validation:
        n += 1
    return n


def run_learn(opts: LearnOptions, echo: Callable[[str], None] = print) -> dict:
    """Read benign flows, learn, write OUT/bundle (and OUT/learn.json, OUT/scores.png) only if
    everything succeeded; LearnError otherwise, with nothing written."""
    from .edge_runtime.model.bundle import load_bundle
    from .edge_runtime.site.devices import DEFAULT_HOME_NET, parse_home_net
    from .flows import default_flow_schema, read_flow_files, read_pcaps
    from .edge_runtime.ingest.records import RawSchema
    from .train.operating_point import check_budget

    started = time.monotonic()
    check_budget(opts.max_fpr, 10 ** 9)  # the range alone, before any work
    if not opts.max_incidents_per_week > 0:
        raise LearnError(f"--max-incidents-per-week {opts.max_incidents_per_week:g}: the "
                         f"budget is a number of false incidents per device per week, > 0 "
                         f"(e.g. 1). Nothing was written.")
    home_net = tuple(opts.home_net) or DEFAULT_HOME_NET
    parse_home_net(home_net)  # ValueError naming a bad one
    classifier = load_bundle(opts.classifier) if opts.classifier else None
    if classifier is not None and classifier.spec is None:
        raise LearnError(f"{opts.classifier}: an anomaly-only bundle is not a classifier")
    schema = RawSchema.from_spec(classifier.raw) if classifier else default_flow_schema()
    if not {"StartTime", "LastTime"} <= set(schema.names):
        raise LearnError(f"{opts.classifier}: its layout has no flow times (StartTime, "
                         f"LastTime), which learn orders the flows by and incidents are timed "
                         f"with; train it again with this edge-ids (the wustl-ehms-net layout "
                         f"has them). Nothing was written.")
    layout = f"the layout of {opts.classifier}" if classifier else "the Argus flow layout"
    echo(f"[1/5] Reading benign flows ({layout})")
    lines = []
    if opts.pcaps:
        lines += read_pcaps(opts.pcaps, schema, opts.flow_report_seconds, echo)
    if opts.flow_files:
        lines += read_flow_files(opts.flow_files, schema, echo)
    records = parse_benign(lines, schema, echo)
    sources = ", ".join(map(str, (*opts.pcaps, *opts.flow_files)))
    if not len(records):
        raise LearnError(f"no benign flows were read from {sources}: nothing to learn from. "
                         f"Nothing was written.")
    need = minimum_flows(opts.max_fpr, opts.val_fraction)
    if len(records) < need:
        raise LearnError(f"{len(records):,} benign flows read; learn needs at least {need:,} "
                         f"flows at --max-fpr {opts.max_fpr:g} and --val-fraction "
                         f"{opts.val_fraction:g} (the last {opts.val_fraction:.0%} by time set "
                         f"the threshold, and the budget must allow "
                         f"{math.ceil(5 / opts.max_fpr - 1e-9) * opts.max_fpr:.0f} flows over "
                         f"it). Record for longer, or raise --max-fpr. Nothing was written.")
    untimed = no_flow_times(records)
    if untimed:
        raise LearnError(f"{untimed:,} of the {len(records):,} flows from {sources} have no "
                         f"start time (StartTime): the learning period must say when each flow "
                         f"happened (recordings made by this edge-ids' capture --record, and "
                         f"pcaps, do). Nothing was written.")
    fit, val = split_by_time(records, opts.val_fraction, opts.flow_report_seconds)
    check_budget(opts.max_fpr, len(val))
    with tempfile.TemporaryDirectory(prefix=".learn-", dir=_parent(opts.out)) as tmp:
        result = learn_bundle(records.take(fit), records.take(val), schema, Path(tmp) / "bundle",
                              max_fpr=opts.max_fpr, seed=opts.seed, classifier=classifier,
                              dataset=classifier.manifest.get("dataset") if classifier
                              else "flows", epochs=opts.epochs, echo=echo,
                              training={"sources": [*map(str, opts.pcaps),
                                                    *map(str, opts.flow_files)],
                                        "benign_rows": int(len(records)),
                                        "validation": "the last part by time"},
                              incidents=(opts.max_incidents_per_week, home_net,
                                         opts.device_parts, opts.priors))
        for warning in result.get("warnings", []):
            echo(f"warning: {warning}")
        report = {k: result[k] for k in ("operating_point", "history", "model", "devices",
                                         "incidents") if k in result}
        (Path(tmp) / "learn.json").write_text(json.dumps(report, indent=1) + "\n")
        _score_picture(result, Path(tmp) / "scores.png")
        _move_into_place(Path(tmp), opts.out)
    point = result["operating_point"]
    echo(f"bundle: {opts.out / 'bundle'} ({result['manifest']['detector']}); anomaly threshold "
         f"{point['threshold']:.6g}, validation false-alarm rate {100 * point['validation_fpr']:.2f} % "
         f"(budget {100 * opts.max_fpr:g} %)   total {time.monotonic() - started:.0f} s")
    return result["manifest"]


@dataclass
class Learned:
    """An autoencoder fitted on benign rows, converted, not yet given an operating point."""

    spec: dict  # its feature spec (with the int8 input quantization)
    autoencoder: object  # train.anomaly.Autoencoder (the float Keras model inside)
    tflite: bytes
    history: dict

    @property
    def n_inputs(self) -> int:
        return len(self.spec["selected"])


def learn_bundle(fit, val, schema, bundle_dir: Path, *, max_fpr: float, seed: int,
                 classifier=None, dataset: str, epochs: int = 200, training: dict | None = None,
                 incidents: tuple | None = None, echo: Callable[[str], None] = print) -> dict:
    """Benign fit and validation Records -> a verified bundle at bundle_dir (see
    write_learned_bundle for what it returns)."""
    learned = fit_anomaly_model(fit, schema, seed=seed, epochs=epochs, echo=echo,
                                raw=classifier.spec["raw"] if classifier else None)
    return write_learned_bundle(learned, val, bundle_dir, max_fpr=max_fpr,
                                classifier=classifier, dataset=dataset, training=training,
                                incidents=incidents, fit=fit, echo=echo)


def fit_anomaly_model(fit, schema, *, seed: int, epochs: int = 200, raw: dict | None = None,
                      echo: Callable[[str], None] = print) -> Learned:
    """Feature spec (log scale, every feature, no labels), autoencoder, int8 conversion.
    `raw`: a classifier's raw layout, copied so that a hybrid's two specs match exactly."""
    from .compress.bundle_writer import input_quantization
    from .compress.quantize import convert_int8
    from .edge_runtime.model.features import FeatureTransform
    from .train.anomaly import Autoencoder
    from .train.feature_spec import fit_feature_spec

    echo(f"[2/5] Fitting the feature spec on {len(fit):,} benign rows (log scale, every "
         f"feature)")
    spec = fit_feature_spec(fit, None, schema, k=None, zero_ratio=1.0, zero_scope="none",
                            scale="log")
    if raw is not None:
        spec["raw"] = raw
    transform = FeatureTransform(spec)
    x = transform.transform(fit.columns, fit.numeric)[0]
    stop_rows = np.random.default_rng(seed).random(len(x)) < EARLY_STOP_FRACTION
    echo(f"[3/5] Training the autoencoder on {int((~stop_rows).sum()):,} rows "
         f"({transform.n_inputs} inputs; early stopping on {int(stop_rows.sum()):,})")
    autoencoder = Autoencoder(seed=seed, epochs=epochs)
    history = autoencoder.fit(x[~stop_rows], x[stop_rows], echo=echo)
    echo(f"      best epoch {history['best_epoch']} of {history['epochs_run']}, "
         f"reconstruction loss {history['best_val_loss']:.3g}")
    echo(f"[4/5] Converting to full-integer int8 TFLite ({CALIBRATION_ROWS:,} calibration rows)")
    calibration = x[np.random.default_rng(seed).permutation(len(x))[:CALIBRATION_ROWS]]
    tflite = convert_int8(autoencoder.keras_model, calibration, int8_io=False)
    spec["input_quantization"] = input_quantization(tflite)
    return Learned(spec, autoencoder, tflite, history)


def write_learned_bundle(learned: Learned, val, bundle_dir: Path, *, max_fpr: float,
                         classifier=None, dataset: str, training: dict | None = None,
                         incidents: tuple | None = None, fit=None,
                         echo: Callable[[str], None] = print) -> dict:
    """The operating point on validation benign Records, scored by the int8 models through the
    edge runtime, then the bundle, loaded back as the device will. With `incidents`
    (max incidents per device-week, home networks) and the `fit` Records, also each device's
    threshold and the incident threshold (flows with addresses and times only). Returns the
    manifest, the operating point and the validation scores."""
    from .compress.bundle_writer import spec_bytes, write_files
    from .edge_runtime.model.anomaly import AnomalyScorer
    from .edge_runtime.model.bundle import (ANOMALY_FEATURES_FILE, ANOMALY_MODEL_FILE, FEATURES_FILE,
                                      MODEL_FILE, SCORE_MSE, AnomalyPart,
                                      load_bundle)
    from .edge_runtime.model.classifier import Classifier
    from .train.operating_point import choose_operating_point

    echo(f"[5/5] Operating point: false-alarm budget {max_fpr:g} on {len(val):,} validation "
         f"rows, scored by the int8 models through the edge runtime")
    candidate = AnomalyPart(learned.spec, learned.tflite, float("inf"), {})
    val_scores = AnomalyScorer(candidate, bundle_dir).score(val)[0]
    normal_probability = attack_named = None
    raw = learned.spec["raw"]
    manifest = {"dataset": dataset, "raw_schema": {"name": dataset, "columns": len(raw["columns"]),
                                                   "trailing": list(raw.get("trailing", []))},
                "class_names": ["Normal"], "normal_class": "Normal"}
    files = {ANOMALY_MODEL_FILE: learned.tflite, ANOMALY_FEATURES_FILE: spec_bytes(learned.spec)}
    if classifier is not None:
        model = Classifier(classifier)
        probabilities = model.model.predict(model.transform.transform(val.columns,
                                                                      val.numeric)[0])
        normal_probability = probabilities[:, model.normal_index]
        attack_named = probabilities.argmax(1) != model.normal_index
        files |= {name: classifier.files[name] for name in (MODEL_FILE, FEATURES_FILE)}
        manifest = {k: classifier.manifest[k] for k in ("dataset", "raw_schema", "class_names",
                                                        "normal_class", "model", "training")
                    if k in classifier.manifest}
    point = choose_operating_point(max_fpr, val_scores, normal_probability, attack_named)
    if classifier is not None:
        manifest["classifier"] = {"normal_threshold": point["normal_threshold"],
                                  "validation_fpr": point["classifier_validation_fpr"],
                                  "source": str(classifier.path),
                                  "model_sha256": classifier.model_sha256,
                                  "metrics": classifier.manifest.get("metrics")}
    manifest["anomaly"] = {"score": SCORE_MSE, **point,
                           "model": learned.autoencoder.describe(learned.n_inputs),
                           "history": learned.history, "training": training or {},
                           "quantization": "int8", "input_output": "float"}
    write_files(bundle_dir, files, manifest)
    bundle = load_bundle(bundle_dir)  # what the device will do with it
    result = {"operating_point": point, "history": learned.history,
              "model": manifest["anomaly"]["model"], "validation_scores": val_scores}
    if incidents is not None:
        from .train.incident_budget import device_settings
        budget, home_net, *parts = incidents
        manifest["devices"], manifest["incidents"], result["warnings"] = device_settings(
            bundle, fit, val, val_scores, normal_probability, attack_named, point, max_fpr,
            budget, home_net, echo, *parts)
        write_files(bundle_dir, files, manifest)
        bundle = load_bundle(bundle_dir)
        result["devices"] = {"home_net": manifest["devices"]["home_net"],
                             "known": manifest["devices"]["known"]}
        result["incidents"] = manifest["incidents"]
    return result | {"manifest": bundle.manifest, "bundle": bundle}


def parse_benign(lines: list[bytes], schema, echo):
    """The flows as Records, with the columns devices and times are read from kept as text."""
    from .edge_runtime.ingest.records import parse_lines
    from .edge_runtime.watch import FLOW_COLUMNS, TIME_COLUMNS
    from .edge_runtime.site.devices import MAC_COLUMNS

    wanted = {c for names in (*FLOW_COLUMNS, *MAC_COLUMNS.values()) for c in names}
    keep = tuple(n for n in schema.ignored if n in wanted or n in TIME_COLUMNS)
    records, rejected = parse_lines(lines, schema, keep_text=keep)
    if rejected:
        reasons = {}
        for r in rejected:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        echo(f"      {len(rejected):,} lines rejected ("
             + ", ".join(f"{k} {v:,}" for k, v in reasons.items()) + f"), e.g. line "
             f"{rejected[0].record}: {rejected[0].detail}")
    echo(f"      {len(records):,} benign flows")
    return records


def split_rows(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, validation rows): a random split, each in their original order (for
    datasets without flow times: NSL-KDD, WUSTL-EHMS rows)."""
    validation = np.random.default_rng(seed).random(n) < val_fraction
    return np.flatnonzero(~validation), np.flatnonzero(validation)


def no_flow_times(records) -> int:
    """How many records have no numeric StartTime."""
    from .edge_runtime.watch import _to_float

    texts = records.columns.get("StartTime")
    if texts is None:
        return len(records)
    return int((~np.isfinite(_to_float(texts))).sum())


def split_by_time(records, val_fraction: float, report_seconds: float = 5
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, validation rows), each in time order: the validation rows are the last
    ⌊share × n⌋ flows by start time (the same for every seed), plus the earlier status records
    of flows still open at the cut (same addresses, ports and protocol, reported within one
    report interval of it), so that one long flow never sits on both sides."""
    from .edge_runtime.watch import _to_float

    start = _to_float(records.columns["StartTime"])
    order = np.argsort(start, kind="stable")
    n_val = int(math.floor(len(order) * val_fraction + 1e-9))
    fit, val = order[:len(order) - n_val], order[len(order) - n_val:]
    key_columns = [c for c in ("SrcAddr", "Sport", "DstAddr", "Dport", "Proto")
                   if c in records.columns]
    if not len(val) or not key_columns:
        return fit, val
    keys = list(zip(*(records.columns[c].tolist() for c in key_columns)))
    cut = float(start[val[0]])
    end = _to_float(records.columns["LastTime"]) if "LastTime" in records.columns else start
    open_after = {keys[r] for r in val.tolist()}
    moved = np.array([keys[r] in open_after and end[r] >= cut - report_seconds
                      for r in fit.tolist()], dtype=bool)
    val = np.concatenate([fit[moved], val])
    return fit[~moved], val


def _parent(out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.parent


def _move_into_place(tmp: Path, out: Path) -> None:
    """OUT gets bundle/, learn.json and scores.png; an older bundle there is replaced."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("bundle", "learn.json", "scores.png"):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        (tmp / name).replace(target)


def _score_picture(result: dict, path: Path) -> None:
    from .train.plots import score_histogram

    point = result["operating_point"]
    score_histogram({"validation benign": result["validation_scores"]}, point["threshold"],
                    f"validation scores and the threshold (budget {point['max_fpr']:g})", path)
