"""Find a TFLite interpreter: LiteRT (ai-edge-litert), else tflite-runtime.

The base install brings ai-edge-litert (wheels for aarch64 Python 3.11 and 3.13). tflite-runtime
2.14 is frozen, has no Python >= 3.12 wheels and needs numpy<2 (TOOLCHAIN.md §3): it is only a
fallback. DESIGN.md allows tensorflow.lite as a last resort on a host, but the device side must
never import TensorFlow, and every install of edge-ids has LiteRT, so there is no such fallback.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile

_CANDIDATES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")
# What LiteRT's C++ logger prints on every interpreter it builds. It has no switch for it
# (TF_CPP_MIN_LOG_LEVEL does not reach that logger, and the Python API sets no severity), so
# make_interpreter catches fd 2 while it builds one and passes on everything else.
_LITERT_NOISE = (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)


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
    with _without_litert_noise():
        interpreter = _find()(model_content=model_content, num_threads=num_threads)
        interpreter.allocate_tensors()
    return interpreter


@contextlib.contextmanager
def _without_litert_noise():
    """fd 2 into a temporary file for the duration; then its lines, less LiteRT's, to fd 2."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
        capture = tempfile.TemporaryFile()
    except OSError:  # no stderr, or nowhere to write: nothing to filter
        yield
        return
    try:
        os.dup2(capture.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        capture.seek(0)
        kept = [line for line in capture.read().splitlines(keepends=True)
                if line.rstrip(b"\r\n") not in _LITERT_NOISE]
        capture.close()
        if kept:
            os.write(2, b"".join(kept))
