"""edge-ids: intrusion-detection models from the notebook to a Raspberry Pi.

Stages, one folder each, mapped into this namespace: train/ (edge_ids.train), compress/,
edge_runtime/ (the device side: numpy + a TFLite interpreter only), devices/, benchmarks/.
"""
import os
from importlib import metadata

# TensorFlow, wherever edge-ids imports it (this runs first): its C++ log off below errors, and
# oneDNN's custom kernels off. On CPUs with AVX-512 VNNI or AMX, TensorFlow turns those kernels
# on by itself; they round differently (the same seed then trains to other figures) and they
# announce themselves with absl lines that TF_CPP_MIN_LOG_LEVEL does not silence. Off, every
# CPU runs the kernels this repository's figures were made with (an AVX2 machine, where they
# are off anyway: docs/pipeline.md says what was measured). Set either variable to override.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

try:
    __version__ = metadata.version("edge-ids")
except metadata.PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"
