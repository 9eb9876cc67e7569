"""Keras 3 model -> TFLite: float32, or full-integer int8 calibrated on a representative
training sample, with int8 or float input/output.

Optimize.EXPERIMENTAL_SPARSITY is refused together with int8: the model converts but its outputs
are wrong (argmax agreement ~0.3; TOOLCHAIN.md §2, tests/test_quantize.py shows it). For a
pruned model, report the gzip size instead: the zeros compress.
"""
from __future__ import annotations

import warnings

import numpy as np
import tensorflow as tf

from .quiet import quiet_native_output


class UnsafeConversion(ValueError):
    """A conversion that is known to produce a model with wrong outputs."""


SPARSITY_WITH_INT8 = ("EXPERIMENTAL_SPARSITY with int8 quantization converts, but the model's "
                      "outputs are wrong (argmax agreement with Keras ~0.3 instead of ~0.99, "
                      "in LiteRT, TF and tflite-runtime alike; TOOLCHAIN.md §2). Prune, "
                      "quantize to int8 without it, and ship the gzip size.")


def convert(model, quantize: str = "int8", representative: np.ndarray | None = None,
            int8_io: bool = False, experimental_sparsity: bool = False) -> bytes:
    """One entry point for every conversion the tool offers; refuses the unsafe one."""
    if quantize == "int8":
        if experimental_sparsity:
            raise UnsafeConversion(SPARSITY_WITH_INT8)
        if representative is None:
            raise ValueError("int8 quantization needs representative training rows")
        return convert_int8(model, representative, int8_io)
    if quantize == "none":
        return convert_float(model, experimental_sparsity)
    raise ValueError(f"quantize must be 'int8' or 'none', not {quantize!r}")


def convert_float(model, experimental_sparsity: bool = False) -> bytes:
    """float32 TFLite; EXPERIMENTAL_SPARSITY is safe here (outputs identical, smaller file)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if experimental_sparsity:
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    return _convert(converter)


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
