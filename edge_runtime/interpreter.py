"""Find a TFLite interpreter: LiteRT (ai-edge-litert), else tflite-runtime.

The base install brings ai-edge-litert (wheels for aarch64 Python 3.11 and 3.13). tflite-runtime
2.14 is frozen, has no Python >= 3.12 wheels and needs numpy<2 (TOOLCHAIN.md §3): it is only a
fallback. DESIGN.md allows tensorflow.lite as a last resort on a host, but the device side must
never import TensorFlow, and every install of edge-ids has LiteRT, so there is no such fallback.
"""
from __future__ import annotations

import importlib

_CANDIDATES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


def _find():
    for module in _CANDIDATES:
        try:
            return importlib.import_module(module).Interpreter
        except ImportError:
            continue
    raise ImportError("no TFLite interpreter found: pip install ai-edge-litert "
                      "(or tflite-runtime with numpy<2 on Python 3.11)")


def make_interpreter(model_content: bytes, num_threads: int = 1):
    """An allocated interpreter for a .tflite flatbuffer. One thread: faster for tiny models."""
    interpreter = _find()(model_content=model_content, num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter
