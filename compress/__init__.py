"""Host side: Keras model -> int8 TFLite, and the bundle writer."""
import logging
import os

# 3: as train/__init__.py says (the C++ log's info, warning and harmless error lines)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
logging.getLogger("tensorflow").setLevel(logging.ERROR)  # as train/__init__.py says why
