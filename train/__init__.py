"""Host side: dataset loaders, the feature spec fit, models, losses, training and evaluation."""
import logging
import os

# TensorFlow's C++ log: 3 hides its info and warning lines, and also the error-level line
# "NodeDef mentions attribute use_unbounded_threadpool ..." that every fit prints under op
# determinism (Keras 3.15 builds a tf.data op attribute TF 2.21 does not know; it is ignored).
# A real failure still reaches the user as a Python exception.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# and its Python warnings (tf.function retracing notes when one process trains many models,
# as `reproduce` does): our own progress lines say what happens; errors still show
logging.getLogger("tensorflow").setLevel(logging.ERROR)
