"""Host side: Keras model -> int8 TFLite, and the bundle writer."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
