"""Find a TFLite interpreter: LiteRT first, then tflite-runtime, then TensorFlow as a host fallback.

The device install has ai-edge-litert (wheels for aarch64 Python 3.11 and 3.13); tflite-runtime
2.14 is frozen, has no Python >= 3.12 wheels and needs numpy<2 (TOOLCHAIN.md §3); importing
TensorFlow only happens on a host where neither is installed.
"""
from __future__ import annotations

import importlib


def _find():
    for module, name in (("ai_edge_litert.interpreter", "ai_edge_litert"),
                         ("tflite_runtime.interpreter", "tflite_runtime")):
        try:
            return importlib.import_module(module).Interpreter, name
        except ImportError:
            continue
    try:
        import tensorflow as tf  # last resort on a host; never on the device
    except ImportError:
        raise ImportError("no TFLite interpreter found: pip install ai-edge-litert") from None
    return tf.lite.Interpreter, "tensorflow.lite"


def interpreter_backend() -> str:
    """Name of the interpreter package that `make_interpreter` will use."""
    return _find()[1]


def make_interpreter(model_content: bytes, num_threads: int = 1):
    """An allocated interpreter for a .tflite flatbuffer. One thread: faster for tiny models."""
    interpreter_class, _ = _find()
    interpreter = interpreter_class(model_content=model_content, num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter
