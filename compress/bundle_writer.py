"""Write a model bundle (docs/bundle.md): a classifier (model.tflite, features.json), an anomaly
model (anomaly.tflite, anomaly.json) or both, and manifest.json.

The manifest's hashes are what the device checks before it loads anything
(edge_runtime/model/bundle.py reads what this writes; the constants live there).
"""
from __future__ import annotations

import datetime
import json
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

from ..edge_runtime.model.bundle import (BUNDLE_SCHEMA_VERSION, DETECTOR_FILES, FEATURES_FILE,
                                   MANIFEST_FILE, MODEL_FILE, sha256_bytes)


def write_bundle(out_dir: str | Path, model: bytes, spec: dict, manifest: dict) -> Path:
    """A classifier bundle; `manifest` supplies dataset, class_names, model, training, metrics."""
    return write_files(out_dir, {MODEL_FILE: model, FEATURES_FILE: spec_bytes(spec)}, manifest)


def write_files(out_dir: str | Path, files: dict[str, bytes], manifest: dict) -> Path:
    """Write a bundle's model and spec files, and a manifest with their hashes; which files
    are there says which detector it is."""
    detector = next((d for d, names in DETECTOR_FILES.items() if set(names) == set(files)), None)
    if detector is None:
        raise ValueError(f"not a bundle's set of files: {sorted(files)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out_dir / name).write_bytes(data)
    full = {
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "detector": detector,
        **manifest,
        "files": {name: {"sha256": sha256_bytes(data), "bytes": len(data)}
                  for name, data in files.items()},
        "tools": tool_versions(),
    }
    write_manifest(out_dir, full)
    return out_dir


def spec_bytes(spec: dict) -> bytes:
    return json.dumps(spec, indent=1).encode()


def input_quantization(tflite: bytes) -> dict | None:
    """The int8 input tensor's {scale, zero_point} (None for float input): the spec records it."""
    from ..edge_runtime.model.interpreter import make_interpreter

    model_input = make_interpreter(tflite).get_input_details()[0]
    if model_input["dtype"] != np.int8:
        return None
    scale, zero_point = model_input["quantization"]
    return {"scale": float(scale), "zero_point": int(zero_point)}


def write_int8_bundle(out_dir: str | Path, model, spec: dict, calibration, manifest: dict
                      ) -> dict:
    """Quantize a Keras model to full-integer int8 (int8 input/output) calibrated on
    `calibration` rows and write the bundle; return the manifest as written."""
    from .quantize import convert_int8
    return write_tflite_bundle(out_dir, convert_int8(model, calibration), spec, manifest)


def write_tflite_bundle(out_dir: str | Path, tflite: bytes, spec: dict, manifest: dict) -> dict:
    """Write a bundle around a converted model, recording its int8 input quantization in the
    spec (null for float input); return the manifest as written."""
    write_bundle(out_dir, tflite, dict(spec, input_quantization=input_quantization(tflite)),
                 manifest)
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
