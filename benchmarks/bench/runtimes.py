"""The runtimes a benchmark compares, one interface for all: float rows in, class probabilities
out. Each runtime's library is imported only by `load`, so this module runs on a device that has
numpy and LiteRT only (Keras and ONNX Runtime are then simply unavailable there).

The LiteRT members use the edge runtime's own `TFLiteModel`, so what is timed is the code the
daemon runs (quantization of the inputs included), not a leaner copy of it.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Runtime:
    name: str
    label: str  # for tables and plots
    model_file: str  # the file in the benchmark's work folder it runs
    module: str  # importing it is the runtime's import cost
    sets_threads: bool  # whether a thread count can be chosen per model
    loader: Callable[[Path, int, int], Predict]  # (model path, threads, largest batch) -> predict

    def missing(self, work: Path) -> str | None:
        """Why this runtime cannot run here, or None."""
        if importlib.util.find_spec(self.module.split(".")[0]) is None:
            return f"{self.module.split('.')[0]} is not installed here"
        if not (work / self.model_file).is_file():
            return f"no {self.model_file} (its converter is not installed on the host)"
        return None

    def load(self, path: Path, threads: int = 1, max_batch: int = 1024) -> Predict:
        return self.loader(path, threads, max_batch)


def _keras(path: Path, threads: int, max_batch: int) -> Predict:
    # Keras sets its thread pools once per process: `threads` cannot apply (sets_threads=False).
    import keras

    model = keras.saving.load_model(path, compile=False)
    return lambda x: model(x, training=False).numpy()


def _litert(path: Path, threads: int, max_batch: int) -> Predict:
    from ...edge_runtime.model.classifier import TFLiteModel

    return TFLiteModel(path.read_bytes(), num_threads=threads, max_batch=max_batch).predict


def _onnxruntime(path: Path, threads: int, max_batch: int) -> Predict:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


RUNTIMES = {r.name: r for r in (
    Runtime("keras", "Keras float (model called directly)", "model.keras", "keras", False,
            _keras),
    Runtime("litert-float", "LiteRT float32", "float.tflite", "ai_edge_litert.interpreter",
            True, _litert),
    Runtime("litert-int8", "LiteRT int8 (the bundle)", "model.tflite",
            "ai_edge_litert.interpreter", True, _litert),
    Runtime("onnxruntime", "ONNX Runtime float32", "model.onnx", "onnxruntime", True,
            _onnxruntime),
)}
