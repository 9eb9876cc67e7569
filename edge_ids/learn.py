"""`edge-ids learn`: learn a site's normal traffic and write an anomaly-only or hybrid bundle.

    benign flows (pcaps through argus | ra, as `capture` reads them; or flow files a device
    recorded with `capture --record`) -> feature spec (log scale, no labels) -> autoencoder ->
    int8 TFLite -> operating point from --max-fpr on validation rows, scored by the bundle's
    own int8 models through the edge runtime -> OUT/bundle, verified by loading it

`learn_bundle` is the part that the NSL-KDD / WUSTL-EHMS evaluation (benchmarks/hybrid.py)
calls with labelled datasets' benign rows.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

MIN_FLOWS = 1000  # fewer benign rows than this cannot say what normal is
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


def run_learn(opts: LearnOptions, echo: Callable[[str], None] = print) -> dict:
    """Read benign flows, learn, write OUT/bundle (and OUT/learn.json, OUT/scores.png) only if
    everything succeeded; LearnError otherwise, with nothing written."""
    from .edge_runtime.bundle import load_bundle
    from .flows import default_flow_schema, read_flow_files, read_pcaps
    from .edge_runtime.records import RawSchema
    from .train.operating_point import check_budget

    started = time.monotonic()
    check_budget(opts.max_fpr, 10 ** 9)  # the range alone, before any work
    classifier = load_bundle(opts.classifier) if opts.classifier else None
    if classifier is not None and classifier.spec is None:
        raise LearnError(f"{opts.classifier}: an anomaly-only bundle is not a classifier")
    schema = RawSchema.from_spec(classifier.raw) if classifier else default_flow_schema()
    layout = f"the layout of {opts.classifier}" if classifier else "the Argus flow layout"
    echo(f"[1/5] Reading benign flows ({layout})")
    lines = []
    if opts.pcaps:
        lines += read_pcaps(opts.pcaps, schema, opts.flow_report_seconds, echo)
    if opts.flow_files:
        lines += read_flow_files(opts.flow_files, schema, echo)
    records = parse_benign(lines, schema, echo)
    if not len(records):
        raise LearnError("no benign flows were read from "
                         + ", ".join(map(str, (*opts.pcaps, *opts.flow_files)))
                         + ": nothing to learn from. Nothing was written.")
    if len(records) < MIN_FLOWS:
        raise LearnError(f"{len(records):,} benign flows read; learn needs at least "
                         f"{MIN_FLOWS:,} to know what normal looks like (record for longer). "
                         f"Nothing was written.")
    fit, val = split_rows(len(records), opts.val_fraction, opts.seed)
    check_budget(opts.max_fpr, len(val))
    with tempfile.TemporaryDirectory(prefix=".learn-", dir=_parent(opts.out)) as tmp:
        result = learn_bundle(records.take(fit), records.take(val), schema, Path(tmp) / "bundle",
                              max_fpr=opts.max_fpr, seed=opts.seed, classifier=classifier,
                              dataset=classifier.manifest.get("dataset") if classifier
                              else "flows", epochs=opts.epochs, echo=echo,
                              training={"sources": [*map(str, opts.pcaps),
                                                    *map(str, opts.flow_files)],
                                        "benign_rows": int(len(records))})
        report = {k: result[k] for k in ("operating_point", "history", "model")}
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
                 echo: Callable[[str], None] = print) -> dict:
    """Benign fit and validation Records -> a verified bundle at bundle_dir (see
    write_learned_bundle for what it returns)."""
    learned = fit_anomaly_model(fit, schema, seed=seed, epochs=epochs, echo=echo,
                                raw=classifier.spec["raw"] if classifier else None)
    return write_learned_bundle(learned, val, bundle_dir, max_fpr=max_fpr,
                                classifier=classifier, dataset=dataset, training=training,
                                echo=echo)


def fit_anomaly_model(fit, schema, *, seed: int, epochs: int = 200, raw: dict | None = None,
                      echo: Callable[[str], None] = print) -> Learned:
    """Feature spec (log scale, every feature, no labels), autoencoder, int8 conversion.
    `raw`: a classifier's raw layout, copied so that a hybrid's two specs match exactly."""
    from .compress.bundle_writer import input_quantization
    from .compress.quantize import convert_int8
    from .edge_runtime.features import FeatureTransform
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
                         echo: Callable[[str], None] = print) -> dict:
    """The operating point on validation benign Records, scored by the int8 models through the
    edge runtime, then the bundle, loaded back as the device will. Returns the manifest, the
    operating point and the validation scores."""
    from .compress.bundle_writer import spec_bytes, write_files
    from .edge_runtime.anomaly import AnomalyScorer
    from .edge_runtime.bundle import (ANOMALY_FEATURES_FILE, ANOMALY_MODEL_FILE, FEATURES_FILE,
                                      MODEL_FILE, SCORE_MSE, AnomalyPart,
                                      load_bundle)
    from .edge_runtime.classifier import Classifier
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
    return {"manifest": bundle.manifest, "operating_point": point, "history": learned.history,
            "model": manifest["anomaly"]["model"], "validation_scores": val_scores,
            "bundle": bundle}


def parse_benign(lines: list[bytes], schema, echo):
    from .edge_runtime.records import parse_lines

    records, rejected = parse_lines(lines, schema)
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
    """(fit rows, validation rows): a random split, each in their original order."""
    validation = np.random.default_rng(seed).random(n) < val_fraction
    return np.flatnonzero(~validation), np.flatnonzero(validation)


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
