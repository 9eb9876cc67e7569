"""Model builders. One interface: build(n_inputs, n_classes, **options) -> uncompiled keras.Model
with a softmax output, so every model trains, converts and deploys the same way."""
from __future__ import annotations

import keras


def build_fnn(n_inputs: int, n_classes: int, hidden: tuple[int, ...] = (50, 30, 20),
              seed: int = 0) -> keras.Model:
    """The FNN of Dina et al. 2023: ReLU layers, no regularisation, softmax output.

    Their code has 50-30-20 for the 5-class Bot-IoT (our NSL-KDD default), 50-30 for
    WUSTL-IIoT and 50 for WUSTL-EHMS. First layer Glorot-uniform, later hidden layers
    RandomUniform(-0.05, 0.05), as in their code.
    """
    inputs = keras.Input((n_inputs,), name="features")
    x = inputs
    for i, units in enumerate(hidden):
        init = (keras.initializers.GlorotUniform(seed + i) if i == 0
                else keras.initializers.RandomUniform(-0.05, 0.05, seed + i))
        x = keras.layers.Dense(units, activation="relu", kernel_initializer=init)(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed + 99))(x)
    return keras.Model(inputs, outputs, name="fnn")


MODELS = {"fnn": build_fnn}


def build_model(name: str, n_inputs: int, n_classes: int, **options) -> keras.Model:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name](n_inputs, n_classes, **options)
