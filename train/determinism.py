"""Same seed, same machine, same software: bit-identical training.

`keras.utils.set_random_seed` seeds Python's, numpy's and TensorFlow's generators (Keras'
shuffling and any initialiser or sampler without its own seed); op determinism makes
TensorFlow use kernels whose order of floating-point additions does not depend on thread
timing. Both are global to the process, so every entry point that trains (fit_classifier, the
CFLVAE, the autoencoder) calls `seed_everything` before it builds or fits a model. The
samplers outside TensorFlow take their own seed: imbalanced-learn's `random_state`, CTGAN's
`set_random_state`, the CFLVAE's numpy generator. tests/test_determinism.py trains twice and
compares.
"""
from __future__ import annotations


def seed_everything(seed: int) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
