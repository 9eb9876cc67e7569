"""`edge-ids compress`: a trained model -> pruned (fine-tuned) -> TFLite -> a bundle, shipped
only if its macro-F1 on the gate test set is within `max_f1_drop` points of the float model's.

Input is a model folder as `edge-ids train` (or `pipeline`) writes it: model.keras,
features.json, training.json. The training data come back from the dataset files with the same
seed and validation fraction, so fine-tuning and calibration see only training rows, and the
quantization-aware option is chosen on validation rows: test sets are only ever measured.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np


class GateRefused(Exception):
    """The compressed model lost more macro-F1 than allowed; the bundle was not shipped."""


class ModelFolderError(ValueError):
    """The model folder lacks what compression needs."""


@dataclass
class CompressOptions:
    sparsity: float = 0.0  # final share of zero kernel weights
    scope: str = "layer"  # "layer": each layer reaches `sparsity`; "global": one threshold
    layer_sparsity: dict[str, float] = field(default_factory=dict)  # per-layer targets
    quantize: str = "int8"  # "int8" or "none"
    io: str = "float"  # int8 models: "float" (quantize inside the graph) or "int8" tensors
    qat: str = "never"  # "never", "always", or "auto" (when the validation drop > the gate)
    max_f1_drop: float | None = None  # macro-F1 points (0-100 scale); None: measure only
    gate_set: str | None = None  # default: the dataset's first test set
    fine_tune_epochs: int = 10
    qat_epochs: int = 3
    learning_rate: float | None = None  # default: a tenth of the model's training rate
    calibration_rows: int = 1000
    calibration_percentiles: tuple[float, ...] = (100.0, 99.0, 95.0, 90.0)  # see _convert
    experimental_sparsity: bool = False  # refused with int8 (quantize.SPARSITY_WITH_INT8)
    data_dir: str | None = None


def read_model_folder(folder: str | Path) -> tuple[dict, dict]:
    """(training record, feature spec) of a model folder, or a clear error."""
    folder = Path(folder)
    missing = [n for n in ("model.keras", "features.json", "training.json")
               if not (folder / n).is_file()]
    if missing:
        raise ModelFolderError(f"{folder}: missing {', '.join(missing)}; give a folder written "
                               "by `edge-ids train` or `edge-ids pipeline`")
    return (json.loads((folder / "training.json").read_text()),
            json.loads((folder / "features.json").read_text()))


def compress_model(model_dir: str | Path, out: str | Path, opts: CompressOptions,
                   echo: Callable[[str], None] = print) -> dict:
    """Compress, evaluate, gate, write the bundle to `out`; return its manifest. A refused
    bundle is written to `out`.rejected (for inspection) and GateRefused is raised."""
    import keras

    from ..train.datasets import load_dataset
    from ..train.experiment import prepare
    from .bundle_writer import write_tflite_bundle
    from .evaluation import evaluate_bundle
    from .quantize import SPARSITY_WITH_INT8, UnsafeConversion, convert_float
    from .size_report import format_size_report, size_report

    if opts.experimental_sparsity and opts.quantize == "int8":
        raise UnsafeConversion(SPARSITY_WITH_INT8)
    started = time.monotonic()
    record, spec = read_model_folder(model_dir)
    model = keras.saving.load_model(Path(model_dir) / "model.keras", compile=False)
    data = load_dataset(record["dataset"], opts.data_dir, train_set=record.get("train_set"))
    gate_set = opts.gate_set or next(iter(data.tests))
    if gate_set not in data.tests:
        raise ValueError(f"no test set {gate_set!r}; {data.name} has {', '.join(data.tests)}")
    prep = prepare(data, record["seed"], record["val_fraction"], spec=spec, echo=echo)
    classes = list(data.classes)
    float_metrics = _keras_metrics(model, prep)
    echo(f"float model: {gate_set} macro-F1 {100 * float_metrics[gate_set]['macro_f1']:.2f}")
    float_tflite = convert_float(model)
    history, pruned_tflite = {}, None
    if opts.sparsity > 0 or opts.layer_sparsity:
        history["pruning"] = _fine_tune(model, prep, record, opts, "prune", echo)
        pruned_tflite = convert_float(model, opts.experimental_sparsity)
    pruned_metrics = _keras_metrics(model, prep) if history else None
    val_classes = _val_classes(model, prep)
    tflite, calibration = _convert(model, opts, prep, val_classes, echo)
    qat_reason = _qat_reason(opts, val_classes, tflite, prep, classes, data.normal)
    if qat_reason:
        echo(f"quantization-aware fine-tuning ({qat_reason})")
        history["qat"] = _fine_tune(model, prep, record, opts, "qat", echo)
        tflite, calibration = _convert(model, opts, prep, _val_classes(model, prep), echo)

    sizes = size_report(model, float_tflite, tflite, pruned_tflite)
    label = "int8 .tflite" if opts.quantize == "int8" else "float .tflite"
    echo(format_size_report(sizes, label))
    staging = Path(f"{out}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    write_tflite_bundle(staging, tflite, spec, {
        "dataset": data.name,
        "raw_schema": {"name": data.name, "columns": len(data.schema.names),
                       "trailing": list(data.schema.trailing)},
        "class_names": classes, "normal_class": data.normal,
        "model": {"architecture": record["method"]["model"],
                  "parameters": sizes["parameters"], "quantization": opts.quantize,
                  "input_output": opts.io if opts.quantize == "int8" else "float",
                  "sparsity": sizes["kernel_sparsity"]},
        "training": record,
        "compression": {"options": asdict(opts) | {"data_dir": None}, "sizes": sizes,
                        "fine_tuning": history, "qat": qat_reason or None,
                        "calibration": calibration},
    })
    compressed = evaluate_bundle(staging, data)
    drop = 100 * (float_metrics[gate_set]["macro_f1"] - compressed[gate_set]["macro_f1"])
    gate = {"test_set": gate_set, "max_f1_drop": opts.max_f1_drop, "f1_drop": drop,
            "passed": opts.max_f1_drop is None or drop <= opts.max_f1_drop}
    metrics = {"float": float_metrics, "compressed": compressed}
    if pruned_metrics:
        metrics["pruned_float"] = pruned_metrics
    manifest = _finish_manifest(staging, metrics, gate)
    echo(f"macro-F1 on {gate_set}: float {100 * float_metrics[gate_set]['macro_f1']:.2f}, "
         f"compressed {100 * compressed[gate_set]['macro_f1']:.2f} (drop {drop:.2f} points"
         + (f", gate {opts.max_f1_drop:.2f})" if opts.max_f1_drop is not None else ")")
         + f"   ({time.monotonic() - started:.0f} s)")
    target = Path(out) if gate["passed"] else Path(f"{out}.rejected")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    if not gate["passed"]:
        raise GateRefused(
            f"refused: macro-F1 on {gate_set} dropped {drop:.2f} points (float "
            f"{100 * float_metrics[gate_set]['macro_f1']:.2f} -> compressed "
            f"{100 * compressed[gate_set]['macro_f1']:.2f}), more than the allowed "
            f"{opts.max_f1_drop:.2f}; nothing written to {out}, the candidate is in {target}")
    return manifest


def _keras_metrics(model, prep) -> dict:
    from ..train.evaluate import classification_metrics
    classes = list(prep.dataset.classes)
    return {name: classification_metrics(y, model.predict(x, batch_size=4096, verbose=0)
                                         .argmax(1), classes, prep.dataset.normal)
            for name, (x, y) in prep.tests.items()}


def _fine_tune(model, prep, record: dict, opts: CompressOptions, kind: str, echo) -> dict:
    """Fine-tune on the training rows (resampled as the model was trained): with the pruning
    schedule ("prune"), or through fake quantization with the zeros held ("qat")."""
    from ..train.fit import fit_classifier
    from ..train.losses import make_loss
    from ..train.models import TRAINING
    from ..train.resample import make_sampler
    from .pruning import KeepZeros, MagnitudePruning, PolynomialDecay
    from .qat import copy_back, quantization_aware_model

    method = record["method"]
    # the recipe the model was trained with (its budget, since issue 17), else the default
    recipe = (record.get("budget") or {}).get("classifier") or (
        TRAINING[method["model"]] | (method.get("training") or {}))
    sampler = make_sampler(method.get("resample", "none"), seed=prep.seed, echo=echo,
                           **(method.get("resample_options") or {}))
    x, y = sampler.fit_resample(prep.x_fit, prep.y_fit)
    epochs = opts.fine_tune_epochs if kind == "prune" else opts.qat_epochs
    steps = epochs * int(np.ceil(len(y) / recipe["batch_size"]))
    if kind == "prune":
        schedule = PolynomialDecay(opts.sparsity or max(opts.layer_sparsity.values()),
                                   end_step=max(1, int(0.7 * steps)),
                                   frequency=max(1, min(100, steps // 20)))
        callback = MagnitudePruning(schedule, opts.layer_sparsity or None, opts.scope)
        target = model
        echo(f"pruning to {100 * schedule.final_sparsity:.0f} % ({opts.scope}) over "
             f"{schedule.end_step} of {steps} steps, {epochs} epochs")
    else:
        callback, target = KeepZeros(), quantization_aware_model(model, x[:4096])
    loss = make_loss(method.get("loss", "ce"), n_classes=len(prep.dataset.classes),
                     **(method.get("loss_options") or {}))
    rate = opts.learning_rate or recipe["learning_rate"] / 10
    history = fit_classifier(target, loss, x, y, prep.x_val, prep.y_val, epochs=epochs,
                             batch_size=recipe["batch_size"], learning_rate=rate, patience=None,
                             seed=prep.seed, callbacks=(callback,), echo=echo,
                             steps_per_execution=1)  # the masks act after every step
    if kind == "qat":
        copy_back(target, model)
    return history | {"learning_rate": rate, "steps": steps}


def _val_classes(model, prep):
    """The Keras model's classes for the validation rows (what int8 is compared against)."""
    return model.predict(prep.x_val, batch_size=4096, verbose=0).argmax(1)


def _convert(model, opts: CompressOptions, prep, reference, echo) -> tuple[bytes, dict | None]:
    """The converted model, and for int8 which calibration rows made it.

    int8 activation ranges are the min/max over the calibration rows. On NSL-KDD a few very
    confident rows stretch the logits' range to about -530..39, a step of 2.2, and rows
    near a decision boundary then tie (one FNN: 1.1 % of validation predictions changed,
    nearly all ties, 3.4 macro-F1 points lost on KDDTest+). Leaving the rows with the most
    extreme logits out of the calibration narrows the range; the extreme rows saturate,
    which keeps their argmax. Each of `calibration_percentiles` is tried and the one whose
    predictions agree best with the float model on the validation rows ships (validation
    only: the test sets are never consulted).
    """
    from ..edge_runtime.model.classifier import TFLiteModel
    from .quantize import convert, representative_sample

    if opts.quantize != "int8":
        return convert(model, opts.quantize, experimental_sparsity=opts.experimental_sparsity), None
    pool = representative_sample(prep.x_fit, prep.y_fit, 5 * opts.calibration_rows, prep.seed)
    pool = pool[np.random.default_rng(prep.seed).permutation(len(pool))]
    logits = _logits(model, pool)
    best, agreements = None, {}
    for q in opts.calibration_percentiles:
        low, high = np.percentile(logits, 100 - q), np.percentile(logits, q)
        rows = pool[(logits.min(1) >= low) & (logits.max(1) <= high)][:opts.calibration_rows]
        tflite = convert(model, "int8", rows, int8_io=opts.io == "int8")
        agreements[q] = float(np.mean(
            TFLiteModel(tflite).predict(prep.x_val).argmax(1) == reference))
        if best is None or agreements[q] > agreements[best[0]]:
            best = (q, tflite)
    echo("int8 calibration, validation agreement with the float model by logit percentile "
         "kept: " + ", ".join(f"{q:g}: {100 * a:.2f} %" for q, a in agreements.items())
         + f" (using {best[0]:g})")
    return best[1], {"rows": opts.calibration_rows, "validation_agreement": agreements,
                     "logit_percentile": best[0]}


def _logits(model, x) -> np.ndarray:
    """The last layer's pre-softmax outputs (every model here ends in Dense + softmax)."""
    import keras
    last = model.layers[-1]
    features = keras.Model(model.inputs, model.layers[-2].output).predict(x, batch_size=4096,
                                                                          verbose=0)
    return (features @ keras.ops.convert_to_numpy(last.kernel)
            + keras.ops.convert_to_numpy(last.bias))


def _qat_reason(opts, val_classes, tflite, prep, classes, normal) -> str:
    """Why quantization-aware fine-tuning runs, or "" (auto: judged on validation rows)."""
    if opts.quantize != "int8" or opts.qat == "never":
        return ""
    if opts.qat == "always":
        return "asked for"
    from ..edge_runtime.model.classifier import TFLiteModel
    from ..train.evaluate import classification_metrics
    keras_f1 = classification_metrics(prep.y_val, val_classes, classes, normal)["macro_f1"]
    int8_f1 = classification_metrics(prep.y_val, TFLiteModel(tflite).predict(prep.x_val)
                                     .argmax(1), classes, normal)["macro_f1"]
    drop = 100 * (keras_f1 - int8_f1)
    gate = opts.max_f1_drop if opts.max_f1_drop is not None else 0.0
    return f"validation macro-F1 drop {drop:.2f} > {gate:.2f}" if drop > gate else ""


def _finish_manifest(bundle_dir: Path, metrics: dict, gate: dict) -> dict:
    from .bundle_writer import write_manifest
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest |= {"metrics": metrics, "gate": gate}
    write_manifest(bundle_dir, manifest)
    return manifest
