"""Write a model bundle: model.tflite, features.json, manifest.json (docs/bundle.md).

The manifest's hashes are what the device checks before it loads anything
(edge_runtime/bundle.py reads what this writes; the constants live there).
"""
from __future__ import annotations

import datetime
import json
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

from ..edge_runtime.bundle import (BUNDLE_SCHEMA_VERSION, FEATURES_FILE, MANIFEST_FILE,
                                   MODEL_FILE, sha256_bytes)


def write_bundle(out_dir: str | Path, model: bytes, spec: dict, manifest: dict) -> Path:
    """Write the three files; `manifest` supplies dataset, class_names, model, training, metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    features = json.dumps(spec, indent=1).encode()
    (out_dir / MODEL_FILE).write_bytes(model)
    (out_dir / FEATURES_FILE).write_bytes(features)
    full = {
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **manifest,
        "files": {MODEL_FILE: {"sha256": sha256_bytes(model), "bytes": len(model)},
                  FEATURES_FILE: {"sha256": sha256_bytes(features), "bytes": len(features)}},
        "tools": tool_versions(),
    }
    write_manifest(out_dir, full)
    return out_dir


def write_int8_bundle(out_dir: str | Path, model, spec: dict, calibration, manifest: dict
                      ) -> dict:
    """Quantize a Keras model to full-integer int8 (int8 input/output) calibrated on
    `calibration` rows and write the bundle; return the manifest as written."""
    from .quantize import convert_int8
    return write_tflite_bundle(out_dir, convert_int8(model, calibration), spec, manifest)


def write_tflite_bundle(out_dir: str | Path, tflite: bytes, spec: dict, manifest: dict) -> dict:
    """Write a bundle around a converted model, recording its int8 input quantization in the
    spec (null for float input); return the manifest as written."""
    from ..edge_runtime.interpreter import make_interpreter

    model_input = make_interpreter(tflite).get_input_details()[0]
    quantization = None
    if model_input["dtype"] == np.int8:
        scale, zero_point = model_input["quantization"]
        quantization = {"scale": float(scale), "zero_point": int(zero_point)}
    write_bundle(out_dir, tflite, dict(spec, input_quantization=quantization), manifest)
    return json.loads((Path(out_dir) / MANIFEST_FILE).read_text())


def write_manifest(out_dir: str | Path, manifest: dict) -> None:
    """(Re)write manifest.json, e.g. to add metrics measured on the written bundle."""
    (Path(out_dir) / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")


def tool_versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in ("edge-ids", "tensorflow-cpu", "tensorflow", "keras", "numpy",
                    "scikit-learn", "ai-edge-litert"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions
