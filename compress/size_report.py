"""What compression bought: file sizes, gzip sizes, parameters, and the sparsity that really
reached the device, read back from the weight tensors inside the .tflite.

Pruning does not shrink a .tflite (zeros are stored like any other weight), so the size that
shows pruning is the gzip size: what a bundle costs to ship and store compressed.
"""
from __future__ import annotations

import gzip

import numpy as np

from ..edge_runtime.model.interpreter import make_interpreter
from .pruning import kernel_sparsity, prunable_layers

WEIGHT_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")


def gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def tflite_weight_sparsity(tflite: bytes) -> list[dict]:
    """One entry per weight op, in graph order: tensor name, dtype, shape, share of zeros."""
    interpreter = make_interpreter(tflite)
    layers = []
    for op in interpreter._get_ops_details():  # LiteRT has no public op listing
        if op["op_name"] not in WEIGHT_OPS:
            continue
        index = int(op["inputs"][1])
        details = interpreter._get_tensor_details(index, 0)
        weights = interpreter.get_tensor(index)
        layers.append({"op": op["op_name"], "tensor": details["name"],
                       "dtype": np.dtype(weights.dtype).name, "shape": list(weights.shape),
                       "sparsity": float(np.mean(weights == 0))})
    return layers


def size_report(keras_model, float_tflite: bytes, compressed_tflite: bytes,
                pruned_float_tflite: bytes | None = None) -> dict:
    """Sizes of the uncompressed float model's .tflite, the shipped one (and of the pruned
    model in float, if pruned) and, per prunable layer of `keras_model` (the compressed one),
    the sparsity in Keras and in the shipped .tflite."""
    keras_layers = kernel_sparsity(keras_model)
    tflite_layers = tflite_weight_sparsity(compressed_tflite)
    if len(keras_layers) != len(tflite_layers):
        raise ValueError(f"{len(keras_layers)} prunable Keras layers but {len(tflite_layers)} "
                         "weight ops in the .tflite; cannot pair them")
    sizes = [int(np.prod(layer.kernel.shape)) for layer in prunable_layers(keras_model)]
    weights = sum(sizes)
    zeros = sum(round(s * n) for s, n in zip(keras_layers.values(), sizes))
    pruned = ({"pruned_float_tflite_bytes": len(pruned_float_tflite),
               "pruned_float_tflite_gzip_bytes": gzip_size(pruned_float_tflite)}
              if pruned_float_tflite is not None else {})
    return {
        "float_tflite_bytes": len(float_tflite),
        "float_tflite_gzip_bytes": gzip_size(float_tflite),
        "tflite_bytes": len(compressed_tflite),
        "tflite_gzip_bytes": gzip_size(compressed_tflite),
        **pruned,
        "parameters": int(keras_model.count_params()),
        "kernel_weights": weights,
        "kernel_sparsity": zeros / weights if weights else 0.0,
        "layers": [{"layer": name, "keras_sparsity": s, **t}
                   for (name, s), t in zip(keras_layers.items(), tflite_layers)],
    }


def format_size_report(report: dict, label: str = "compressed") -> str:
    """A few lines for the terminal."""
    lines = [f"  float .tflite  {report['float_tflite_bytes']:>9,} B   gzip "
             f"{report['float_tflite_gzip_bytes']:>9,} B   (the model before compression)"]
    if "pruned_float_tflite_bytes" in report:
        lines.append(f"  pruned float  {report['pruned_float_tflite_bytes']:>9,} B   gzip "
                     f"{report['pruned_float_tflite_gzip_bytes']:>9,} B")
    lines += [
             f"  {label:<13} {report['tflite_bytes']:>9,} B   gzip "
             f"{report['tflite_gzip_bytes']:>9,} B   "
             f"({report['tflite_gzip_bytes'] / report['float_tflite_gzip_bytes']:.2f} x float gzip)",
             f"  parameters {report['parameters']:,}; kernel sparsity "
             f"{100 * report['kernel_sparsity']:.1f} %"]
    for layer in report["layers"]:
        lines.append(f"    {layer['layer']:<12} {'x'.join(map(str, layer['shape'])):>10} "
                     f"{layer['dtype']:<7} sparsity in .tflite {100 * layer['sparsity']:5.1f} %"
                     f"  (Keras {100 * layer['keras_sparsity']:5.1f} %)")
    return "\n".join(lines)
