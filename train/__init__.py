"""Host side: dataset loaders, the feature spec fit, models, losses, training and evaluation."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ info lines quiet
