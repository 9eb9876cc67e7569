"""Model builders. One interface: build(n_inputs, n_classes, seed=0, **options) -> an uncompiled
keras.Model with a softmax output, so every model trains, converts to int8 and deploys the same
way. TRAINING holds each model's training recipe from its paper (fit.py applies it).
"""
from __future__ import annotations

import keras

# Dina et al.'s FNN depth per dataset (their reference code; the summary in ../shared/papers).
FNN_HIDDEN = {"wustl-ehms": (50,), "wustl-iiot": (50, 30), "bot-iot": (50, 30, 20),
              "nsl-kdd": (50, 30, 20), "wustl-ehms-net": (50,)}


def build_fnn(n_inputs: int, n_classes: int, seed: int = 0,
              hidden: tuple[int, ...] = (50, 30, 20)) -> keras.Model:
    """The FNN of Dina et al. 2023: ReLU layers, no regularisation, softmax output.
    First layer Glorot-uniform, later hidden layers RandomUniform(-0.05, 0.05), as in their code."""
    inputs = keras.Input((n_inputs,), name="features")
    x = inputs
    for i, units in enumerate(hidden):
        init = (keras.initializers.GlorotUniform(seed + i) if i == 0
                else keras.initializers.RandomUniform(-0.05, 0.05, seed + i))
        x = keras.layers.Dense(units, activation="relu", kernel_initializer=init)(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed + 99))(x)
    return keras.Model(inputs, outputs, name="fnn")


def build_cnn(n_inputs: int, n_classes: int, seed: int = 0, filters: tuple[int, int] = (32, 64),
              kernel_size: int = 3) -> keras.Model:
    """A small 1D-CNN over the feature vector (Dina et al. report a CNN but publish no code):
    Conv1D-MaxPool-Conv1D-GlobalAveragePool-softmax. Every op has an int8 TFLite kernel."""
    inputs = keras.Input((n_inputs,), name="features")
    x = keras.layers.Reshape((n_inputs, 1))(inputs)
    x = keras.layers.Conv1D(filters[0], kernel_size, padding="same", activation="relu",
                            kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    x = keras.layers.MaxPooling1D(2)(x)
    x = keras.layers.Conv1D(filters[1], kernel_size, padding="same", activation="relu",
                            kernel_initializer=keras.initializers.GlorotUniform(seed + 1))(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed + 2))(x)
    return keras.Model(inputs, outputs, name="cnn")


def build_dnn(n_inputs: int, n_classes: int, seed: int = 0,
              hidden: tuple[int, ...] = (40, 20, 10), bias_l2: float = 5e-4) -> keras.Model:
    """The DNN of Khanam et al. 2022 (87-40-20-10-5): ReLU6, GlorotNormal, bias regulariser
    5e-4 on every layer, softmax output."""
    inputs = keras.Input((n_inputs,), name="features")
    x = inputs
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(units, activation="relu6",
                               kernel_initializer=keras.initializers.GlorotNormal(seed + i),
                               bias_regularizer=keras.regularizers.L2(bias_l2))(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax",
                                 kernel_initializer=keras.initializers.GlorotNormal(seed + 99),
                                 bias_regularizer=keras.regularizers.L2(bias_l2))(x)
    return keras.Model(inputs, outputs, name="dnn")


MODELS = {"fnn": build_fnn, "cnn": build_cnn, "dnn": build_dnn}

# Training recipe per model, from its paper; the CNN's code is unpublished, so it gets the
# FNN's. "polynomial": Adam's learning rate decays from learning_rate to 1e-5 with power 0.5
# over `decay_epochs` epochs (Khanam et al. say "decay steps 10"; ten optimizer steps would end
# the decay inside the first epoch, so we read epochs). Compute budget: the paper trains the
# DNN 200 epochs in batches of 64; Keras costs ~5 ms a step here whatever the batch, so the DNN
# uses batches of 256 and at most 100 epochs (early stopping ends it sooner anyway).
TRAINING = {
    "fnn": {"learning_rate": 0.01, "batch_size": 100, "epochs": 100, "patience": 10,
            "min_delta": 1e-4},
    "cnn": {"learning_rate": 0.01, "batch_size": 100, "epochs": 100, "patience": 10,
            "min_delta": 1e-4},
    "dnn": {"learning_rate": 0.001, "batch_size": 256, "epochs": 100, "schedule": "polynomial",
            "decay_epochs": 10, "patience": 10, "min_delta": 1e-4},
}


def build_model(name: str, n_inputs: int, n_classes: int, **options) -> keras.Model:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name](n_inputs, n_classes, **options)
