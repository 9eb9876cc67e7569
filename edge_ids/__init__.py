"""edge-ids: intrusion-detection models from the notebook to a Raspberry Pi.

Stages, one folder each, mapped into this namespace: train/ (edge_ids.train), compress/,
edge_runtime/ (the device side: numpy + a TFLite interpreter only), devices/, benchmarks/.
"""
from importlib import metadata

try:
    __version__ = metadata.version("edge-ids")
except metadata.PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"
