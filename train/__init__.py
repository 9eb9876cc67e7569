"""Host side: dataset loaders, the feature spec fit, models, losses, training and evaluation."""
import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ info lines quiet
# and its Python warnings (tf.function retracing notes when one process trains many models,
# as `reproduce` does): our own progress lines say what happens; errors still show
logging.getLogger("tensorflow").setLevel(logging.ERROR)
