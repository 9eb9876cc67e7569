"""Host side: Keras model -> int8 TFLite, and the bundle writer."""
import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
logging.getLogger("tensorflow").setLevel(logging.ERROR)  # as train/__init__.py says why
