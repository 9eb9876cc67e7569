"""`edge-ids pipeline`: raw NSL-KDD files -> feature spec -> FNN -> int8 bundle -> edge check.

Each stage lives in its own package; this module only runs them in order, reports progress and
writes the results: OUT/bundle/ (what ships), OUT/model.keras (the float model, for later
compression, with features.json and training.json: what `edge-ids compress` reads) and
OUT/summary.md (the metrics table).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass
class PipelineOptions:
    data_dir: str | None
    out: Path
    train_set: str = "KDDTrain+"
    k: int = 87
    zero_ratio: float = 0.9
    zero_scope: str = "numeric"
    mi_sample: int | None = None
    hidden: tuple[int, ...] = (50, 30, 20)
    loss: str = "focal"
    gamma: float = 2.0
    alpha: float | list[float] = 1.0
    epochs: int = 100
    batch_size: int = 256
    learning_rate: float = 0.001
    patience: int = 5
    val_fraction: float = 0.1
    # a stratified share of the training file the classifier never sees (not even for early
    # stopping): the hybrid benchmark sets its operating point there (train/fit.py)
    holdout_fraction: float = 0.0
    calibration_rows: int = 1000
    seed: int = 0
    test_sets: tuple[str, ...] = field(default=("KDDTest+", "KDDTest-21"))


class _Stages:
    """Numbered stage headers with the time each stage took."""

    def __init__(self, total: int, echo: Callable[[str], None]):
        self.total, self.echo, self.n, self.start = total, echo, 0, None

    def next(self, title: str) -> None:
        self.done()
        self.n += 1
        self.start = time.monotonic()
        self.echo(f"[{self.n}/{self.total}] {title}")

    def done(self) -> None:
        if self.start is not None:
            self.echo(f"      done in {time.monotonic() - self.start:.1f} s")
            self.start = None


def run_pipeline(opts: PipelineOptions, echo: Callable[[str], None] = print) -> dict:
    """Run every stage; return the bundle's manifest (with float and int8 metrics)."""
    # host-only imports stay inside: `edge-ids --help` must not load TensorFlow
    from .compress.bundle_writer import write_int8_bundle, write_manifest
    from .compress.quantize import representative_sample
    from .edge_runtime.model.bundle import load_bundle
    from .edge_runtime.model.classifier import Classifier
    from .edge_runtime.model.features import FeatureTransform
    from .train.datasets import nsl_kdd
    from .train.evaluate import classification_metrics, metrics_table
    from .train.feature_spec import fit_feature_spec
    from .train.fit import fit_classifier, split_with_holdout
    from .train.losses import make_loss
    from .train.models import build_fnn

    started = time.monotonic()
    classes = list(nsl_kdd.CLASSES)
    stages = _Stages(6, echo)

    stages.next(f"Loading NSL-KDD ({opts.train_set}; {', '.join(opts.test_sets)})")
    train = nsl_kdd.load(opts.train_set, opts.data_dir)
    tests = {name: nsl_kdd.load(name, opts.data_dir) for name in opts.test_sets}
    for s in (train, *tests.values()):
        counts = ", ".join(f"{c} {int(np.sum(s.y == i)):,}" for i, c in enumerate(classes))
        echo(f"      {s.name}: {len(s.y):,} records ({counts})")

    stages.next("Fitting the feature spec on the training split (one-hot, zero-ratio, "
                f"min-max, MI top-{opts.k})")
    fit_rows, val_rows, _ = split_with_holdout(train.y, opts.val_fraction,
                                               opts.holdout_fraction, opts.seed)
    fit_records = train.records.take(fit_rows)
    spec = fit_feature_spec(fit_records, train.y[fit_rows], nsl_kdd.SCHEMA, k=opts.k,
                            zero_ratio=opts.zero_ratio, zero_scope=opts.zero_scope,
                            mi_sample=opts.mi_sample, seed=opts.seed)
    transform = FeatureTransform(spec)
    x_all, _ = transform.transform(train.records.columns)
    x_fit, y_fit = x_all[fit_rows], train.y[fit_rows]
    x_val, y_val = x_all[val_rows], train.y[val_rows]
    echo(f"      {len(spec['kept'])} features after the zero-ratio filter "
         f"({len(spec['zero_ratio_filter']['dropped'])} dropped), {transform.n_inputs} selected; "
         f"{len(y_fit):,} rows to fit, {len(y_val):,} for validation")

    stages.next(f"Training the FNN {'-'.join(map(str, (opts.k, *opts.hidden, len(classes))))} "
                f"with {opts.loss} loss")
    model = build_fnn(transform.n_inputs, len(classes), hidden=opts.hidden, seed=opts.seed)
    loss_options = {"gamma": opts.gamma, "alpha": opts.alpha} if opts.loss == "focal" else {}
    history = fit_classifier(model, make_loss(opts.loss, **loss_options), x_fit, y_fit,
                             x_val, y_val, epochs=opts.epochs, batch_size=opts.batch_size,
                             learning_rate=opts.learning_rate, patience=opts.patience,
                             seed=opts.seed, echo=echo)
    echo(f"      best epoch {history['best_epoch']} of {history['epochs_run']}, "
         f"validation accuracy {history['best_val_accuracy']:.4f}")

    stages.next("Evaluating the float model on the test sets")
    x_tests = {name: transform.transform(s.records.columns)[0] for name, s in tests.items()}
    float_pred = {name: model.predict(x, batch_size=4096, verbose=0).argmax(1)
                  for name, x in x_tests.items()}
    metrics = {"float": {name: classification_metrics(tests[name].y, p, classes, nsl_kdd.NORMAL)
                         for name, p in float_pred.items()}}

    stages.next(f"Converting to full-integer int8 TFLite ({opts.calibration_rows} representative "
                "training rows) and writing the bundle")
    calibration = representative_sample(x_fit, y_fit, opts.calibration_rows, opts.seed)
    bundle_dir = Path(opts.out) / "bundle"
    write_int8_bundle(bundle_dir, model, spec, calibration, {
        "dataset": nsl_kdd.NAME,
        "raw_schema": {"name": nsl_kdd.NAME, "columns": len(nsl_kdd.FEATURES),
                       "trailing": list(nsl_kdd.SCHEMA.trailing)},
        "class_names": classes,
        "normal_class": nsl_kdd.NORMAL,
        "model": {"architecture": "fnn", "layers": [transform.n_inputs, *opts.hidden, len(classes)],
                  "parameters": int(model.count_params()), "quantization": "int8",
                  "input_output": "int8"},
        "training": {"train_set": opts.train_set, "fit_rows": int(len(y_fit)),
                     "validation_rows": int(len(y_val)), **history,
                     "options": _options_record(opts)},
    })
    tflite_bytes = (bundle_dir / "model.tflite").stat().st_size
    echo(f"      {bundle_dir}: model.tflite {tflite_bytes:,} bytes")

    stages.next("Evaluating the int8 bundle through the edge runtime (raw records in)")
    bundle = load_bundle(bundle_dir)
    classifier = Classifier(bundle)
    metrics["int8"] = {}
    agreement = {}
    for name, s in tests.items():
        int8_pred = classifier.classify(s.records).classes
        metrics["int8"][name] = classification_metrics(s.y, int8_pred, classes, nsl_kdd.NORMAL)
        agreement[name] = float(np.mean(int8_pred == float_pred[name]))
    manifest = dict(bundle.manifest, metrics=metrics, int8_float_agreement=agreement)
    write_manifest(bundle_dir, manifest)
    stages.done()

    table = metrics_table(metrics, classes)
    agreement_line = "int8 vs float prediction agreement: " + ", ".join(
        f"{k} {100 * v:.2f} %" for k, v in agreement.items())
    _write_model_folder(Path(opts.out), model, spec, opts, loss_options)
    (Path(opts.out) / "summary.md").write_text(
        f"# edge-ids pipeline: {nsl_kdd.NAME}\n\n{table}\n\n{agreement_line}\n")
    echo("")
    echo(table)
    echo("")
    echo(agreement_line)
    echo(f"bundle: {bundle_dir}   total time {time.monotonic() - started:.0f} s")
    return manifest


def _write_model_folder(out: Path, model, spec: dict, opts: PipelineOptions,
                        loss_options: dict) -> None:
    """The float model with what `edge-ids compress` needs to fine-tune it (as `train` writes)."""
    model.save(out / "model.keras")
    (out / "features.json").write_text(json.dumps(spec, indent=1) + "\n")
    record = {"dataset": "nsl-kdd", "train_set": opts.train_set, "seed": opts.seed,
              "val_fraction": opts.val_fraction, "holdout_fraction": opts.holdout_fraction,
              "method": {"model": "fnn", "loss": opts.loss, "loss_options": loss_options,
                         "resample": "none", "model_options": {"hidden": list(opts.hidden)},
                         "training": {"learning_rate": opts.learning_rate,
                                      "batch_size": opts.batch_size, "epochs": opts.epochs,
                                      "patience": opts.patience}}}
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")


def _options_record(opts: PipelineOptions) -> dict:
    record = asdict(opts)
    record["out"] = str(record["out"])
    record.pop("data_dir")
    return json.loads(json.dumps(record))
