"""Model builders. One interface: build(n_inputs, n_classes, seed=0, **options) -> an uncompiled
keras.Model with a softmax output, so every model trains, converts to int8 and deploys the same
way. TRAINING holds each model's training recipe (fit.py applies it) and BUDGETS how long it
trains: the papers' own budget, or the reduced one of the first reproduction.

Layers have explicit names: a .tflite holds them, and Keras' automatic names count the layers
built before in the process, so the same seed would otherwise give different bytes.
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
        x = keras.layers.Dense(units, activation="relu", kernel_initializer=init,
                               name=f"hidden_{i}")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="classes",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed + 99))(x)
    return keras.Model(inputs, outputs, name="fnn")


def build_cnn(n_inputs: int, n_classes: int, seed: int = 0, filters: tuple[int, int] = (32, 64),
              kernel_size: int = 3) -> keras.Model:
    """A small 1D-CNN over the feature vector (Dina et al. report a CNN but publish no code):
    Conv1D-MaxPool-Conv1D-GlobalAveragePool-softmax. Every op has an int8 TFLite kernel."""
    inputs = keras.Input((n_inputs,), name="features")
    x = keras.layers.Reshape((n_inputs, 1), name="as_sequence")(inputs)
    x = keras.layers.Conv1D(filters[0], kernel_size, padding="same", activation="relu",
                            kernel_initializer=keras.initializers.GlorotUniform(seed),
                            name="conv_0")(x)
    x = keras.layers.MaxPooling1D(2, name="pool")(x)
    x = keras.layers.Conv1D(filters[1], kernel_size, padding="same", activation="relu",
                            kernel_initializer=keras.initializers.GlorotUniform(seed + 1),
                            name="conv_1")(x)
    x = keras.layers.GlobalAveragePooling1D(name="average")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="classes",
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
                               bias_regularizer=keras.regularizers.L2(bias_l2),
                               name=f"hidden_{i}")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="classes",
                                 kernel_initializer=keras.initializers.GlorotNormal(seed + 99),
                                 bias_regularizer=keras.regularizers.L2(bias_l2))(x)
    return keras.Model(inputs, outputs, name="dnn")


MODELS = {"fnn": build_fnn, "cnn": build_cnn, "dnn": build_dnn}

# Training recipe per model, from its paper; the CNN's code is unpublished, so it gets the
# FNN's. "polynomial": Adam's learning rate decays from learning_rate to 1e-5 with power 0.5
# over `decay_epochs` epochs (Khanam et al. say "decay steps 10"; ten optimizer steps would end
# the decay inside the first epoch, so we read epochs). These are the "reduced" budget (the
# default of `edge-ids train` and the compression study): the DNN in batches of 256 for at
# most 100 epochs, every model with early stopping on the validation loss.
TRAINING = {
    "fnn": {"learning_rate": 0.01, "batch_size": 100, "epochs": 100, "patience": 10,
            "min_delta": 1e-4},
    "cnn": {"learning_rate": 0.01, "batch_size": 100, "epochs": 100, "patience": 10,
            "min_delta": 1e-4},
    "dnn": {"learning_rate": 0.001, "batch_size": 256, "epochs": 100, "schedule": "polynomial",
            "decay_epochs": 10, "patience": 10, "min_delta": 1e-4},
}


# What BUDGETS[name][model] changes in TRAINING[model], and ["cflvae"] in the CFLVAE sampler's
# options. "paper": Khanam et al. (table 1) train the DNN 200 and the CFLVAE 500 epochs in
# batches of 64, both with Adam 1e-3 under the polynomial decay; Dina et al.'s code trains 100
# epochs in batches of 100 with Adam 0.01. Neither paper stops early (Khanam et al. "monitor"
# a 20 % validation split; Dina et al.'s code uses its validation split for nothing), so the
# last weights are kept. "reduced": the first reproduction's budget, 1/8 of Khanam's optimizer
# steps, kept so its table can be compared and as the quicker default of `edge-ids train`.
BUDGETS = {
    "paper": {"dnn": {"batch_size": 64, "epochs": 200, "patience": None},
              "fnn": {"patience": None}, "cnn": {"patience": None},
              "cflvae": {"epochs": 500, "batch_size": 64, "patience": None,
                         "schedule": "polynomial"}},
    "reduced": {"dnn": {}, "fnn": {}, "cnn": {},
                "cflvae": {"epochs": 200, "batch_size": 256, "patience": 10, "schedule": None}},
}


def training_recipe(model: str, budget: str = "reduced") -> dict:
    """TRAINING[model] under a budget (see BUDGETS)."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose from {', '.join(BUDGETS)}")
    return TRAINING[model] | BUDGETS[budget][model]


def build_model(name: str, n_inputs: int, n_classes: int, **options) -> keras.Model:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name](n_inputs, n_classes, **options)
