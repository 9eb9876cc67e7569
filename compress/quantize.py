"""Keras 3 model -> full-integer int8 TFLite, calibrated on a representative training sample.

Never add Optimize.EXPERIMENTAL_SPARSITY here: with int8 it converts but gives wrong outputs
(TOOLCHAIN.md §2).
"""
from __future__ import annotations

import warnings

import numpy as np
import tensorflow as tf

from .quiet import quiet_native_output


def convert_int8(model, representative: np.ndarray, int8_io: bool = True) -> bytes:
    """Full-integer int8 model. int8_io=True: int8 input/output tensors (the device quantizes);
    False: float input/output with QUANTIZE/DEQUANTIZE inside the graph."""
    representative = np.asarray(representative, dtype=np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([representative[i:i + 1]]
                                                for i in range(len(representative)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return _convert(converter)


def _convert(converter) -> bytes:
    with warnings.catch_warnings(), quiet_native_output():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return converter.convert()


def representative_sample(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n training rows for calibration, every class present (rare attacks widen the ranges)."""
    rng = np.random.default_rng(seed)
    rows = [rng.choice(np.flatnonzero(y == c), size=min(n // len(np.unique(y)) or 1,
                                                        int(np.sum(y == c))), replace=False)
            for c in np.unique(y)]
    rest = rng.choice(len(x), size=max(0, n - sum(map(len, rows))), replace=False)
    return x[np.concatenate(rows + [rest])]
