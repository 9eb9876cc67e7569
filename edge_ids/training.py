"""`edge-ids train`: one model + loss + imbalance method on one dataset.

Writes OUT/model.keras (float model) and OUT/features.json (its feature spec), the inputs that
compression takes, plus OUT/training.json (settings, history, test metrics) and, unless told
not to, OUT/bundle/ (int8 TFLite, checked on the edge runtime like `pipeline` does).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable


def run_training(dataset: str, model: str, loss: str, resample: str, out: Path, *,
                 data_dir=None, train_set: str | None = None, seed: int = 0,
                 val_fraction: float = 0.2, model_options: dict | None = None,
                 loss_options: dict | None = None, resample_options: dict | None = None,
                 training: dict | None = None, bundle: bool = True, budget: str = "reduced",
                 echo: Callable[[str], None] = print) -> dict:
    from .train.datasets import load_dataset
    from .train.evaluate import metrics_table
    from .train.experiment import Method, prepare, run_method

    started = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(dataset, data_dir, train_set=train_set)
    echo(f"{data.name}: {len(data.train.y):,} training records; tests "
         + ", ".join(f"{k} {len(v.y):,}" for k, v in data.tests.items()))
    prep = prepare(data, seed, val_fraction, echo=echo)
    method = Method(f"{model}/{loss}/{resample}", model, loss, resample, model_options or {},
                    loss_options or {}, resample_options or {}, training or {})
    result = run_method(prep, method, echo=echo, budget=budget)
    keras_model = result["model"]
    keras_model.save(out / "model.keras")
    (out / "features.json").write_text(json.dumps(prep.spec, indent=1) + "\n")
    metrics = {"float": result["metrics"]}
    record = {"dataset": data.name, "classes": list(data.classes), "normal": data.normal,
              "train_set": train_set, "seed": seed, "val_fraction": val_fraction,
              "method": {"model": model, "loss": loss, "resample": resample,
                         "model_options": model_options, "loss_options": loss_options,
                         "resample_options": resample_options, "training": training},
              "history": result["history"], "budget": result["budget"],
              "rows_after_resampling":
                  result["rows_after_resampling"], "notes": data.notes}
    if bundle:
        metrics["int8"] = _write_bundle(out / "bundle", keras_model, prep, data, record, echo)
    record["metrics"] = metrics
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    table = metrics_table(metrics, list(data.classes))
    echo("")
    echo(table)
    echo(f"written: {out}/model.keras, features.json, training.json"
         + (", bundle/" if bundle else "") + f"   ({time.monotonic() - started:.0f} s)")
    return record


def _write_bundle(bundle_dir: Path, model, prep, data, record: dict, echo) -> dict:
    """int8-quantize, write the bundle, evaluate it through the edge runtime on raw records."""
    from .compress.bundle_writer import write_int8_bundle, write_manifest
    from .compress.evaluation import evaluate_bundle
    from .compress.quantize import representative_sample

    calibration = representative_sample(prep.x_fit, prep.y_fit, 1000, prep.seed)
    manifest = write_int8_bundle(bundle_dir, model, dict(prep.spec), calibration, {
        "dataset": data.name,
        "raw_schema": {"name": data.name, "columns": len(data.schema.names),
                       "trailing": list(data.schema.trailing)},
        "class_names": list(data.classes), "normal_class": data.normal,
        "model": {"architecture": record["method"]["model"],
                  "parameters": int(model.count_params()), "quantization": "int8",
                  "input_output": "int8"},
        "training": record})
    metrics = evaluate_bundle(bundle_dir, data)
    write_manifest(bundle_dir, manifest | {"metrics": {"int8": metrics}})
    size = (bundle_dir / "model.tflite").stat().st_size
    echo(f"      {bundle_dir}: int8 model.tflite {size:,} bytes")
    return metrics

