"""Anomaly models: learn benign traffic only, then score how far each row is from it.

One interface for the family (tests/test_anomaly.py checks every member):

    model = make_anomaly_model(name, seed=0, **options)
    model.fit(x, x_early_stop)   # benign feature rows only, in [0, 1]; returns a short history
    model.score(x)               # one float per row, higher = less like the benign rows

`autoencoder` ships: a small dense Keras autoencoder, converted to int8 TFLite like the
classifiers and scored on the device by edge_runtime/model/anomaly.py with the same reconstruction
error as `score` here. `isolation_forest` (scikit-learn) is a comparison in the results only:
it has no TFLite form, so it never goes into a bundle.
"""
from __future__ import annotations

import numpy as np

from ..edge_runtime.model.anomaly import reconstruction_error


class Autoencoder:
    """n-32-8-32-n, ReLU, sigmoid output (features are in [0, 1]), mean squared error; early
    stopping on benign rows held out from the fit.

    The sizes are not tuned for detection: with benign rows only there is no validation signal
    that says a model finds attacks better (a larger one just reconstructs attacks better too).
    They were chosen for the device: on NSL-KDD's 77 inputs, 32-8 costs 0.28 µs a record in
    LiteRT against 0.42 for 64-16, and its int8 verdicts agree with float as often on
    validation rows (99.3-99.9 % at budgets 0.01-0.05; scratch study, seed 2)."""

    deployable = True

    def __init__(self, seed: int = 0, hidden: tuple[int, ...] = (32, 8), epochs: int = 200,
                 batch_size: int = 256, learning_rate: float = 1e-3, patience: int = 10,
                 steps_per_execution: int = 32):
        self.seed, self.hidden, self.epochs = seed, tuple(hidden), epochs
        self.batch_size, self.learning_rate, self.patience = batch_size, learning_rate, patience
        self.steps_per_execution = steps_per_execution
        self.keras_model = None

    def build(self, n_inputs: int):
        import keras

        inputs = keras.Input((n_inputs,), name="features")
        x = inputs
        sizes = [*self.hidden, *reversed(self.hidden[:-1])]  # encoder, bottleneck, decoder
        # Named layers: the .tflite holds the names, and Keras' automatic ones count the layers
        # this process built before, so the same seed would give different bytes.
        for i, units in enumerate(sizes):
            x = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}",
                                   kernel_initializer=keras.initializers.GlorotUniform(
                                       self.seed + i))(x)
        outputs = keras.layers.Dense(n_inputs, activation="sigmoid",
                                     kernel_initializer=keras.initializers.GlorotUniform(
                                         self.seed + 99), name="reconstruction")(x)
        return keras.Model(inputs, outputs, name="autoencoder")

    def fit(self, x: np.ndarray, x_early_stop: np.ndarray, echo=None) -> dict:
        """`echo`, if given, gets a progress line every tenth of the epochs."""
        import keras

        from .determinism import seed_everything

        seed_everything(self.seed)
        self.keras_model = model = self.build(x.shape[1])
        # steps_per_execution: a small model's step is mostly per-step dispatch otherwise
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate), loss="mse",
                      steps_per_execution=self.steps_per_execution)
        callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=self.patience,
                                                   restore_best_weights=True)]
        if echo is not None:
            every = max(1, self.epochs // 10)
            callbacks.append(keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: echo(
                    f"      epoch {epoch + 1}/{self.epochs}: reconstruction loss "
                    f"{logs['loss']:.3g}, held out {logs['val_loss']:.3g}")
                if (epoch + 1) % every == 0 else None))
        history = model.fit(x, x, validation_data=(x_early_stop, x_early_stop),
                            epochs=self.epochs, batch_size=self.batch_size, shuffle=True,
                            verbose=0, callbacks=callbacks)
        val_loss = history.history["val_loss"]
        best = int(np.argmin(val_loss))
        return {"epochs_run": len(val_loss), "best_epoch": best + 1,
                "best_val_loss": float(val_loss[best]), "fit_rows": int(len(x)),
                "early_stopping_rows": int(len(x_early_stop))}

    def score(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return reconstruction_error(x, self.reconstruct(x))

    def reconstruct(self, x: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """The float model's output, called directly in chunks (Keras' predict retraces its
        function for every new input size, and says so)."""
        return np.concatenate([np.asarray(self.keras_model(x[i:i + chunk], training=False))
                               for i in range(0, len(x), chunk)] or [x[:0]])

    def describe(self, n_inputs: int) -> dict:
        sizes = [n_inputs, *self.hidden, *reversed(self.hidden[:-1]), n_inputs]
        return {"architecture": "autoencoder", "layers": sizes,
                "parameters": int(self.keras_model.count_params()),
                "training": {"optimizer": "adam", "learning_rate": self.learning_rate,
                             "batch_size": self.batch_size, "max_epochs": self.epochs,
                             "patience": self.patience, "loss": "mse"}}


class IsolationForestScorer:
    """scikit-learn's IsolationForest on the same rows; score = the negated score_samples
    (higher = more anomalous). Comparison only: no TFLite form."""

    deployable = False

    def __init__(self, seed: int = 0, n_estimators: int = 200):
        from sklearn.ensemble import IsolationForest

        self.forest = IsolationForest(n_estimators=n_estimators, random_state=seed, n_jobs=1)

    def fit(self, x: np.ndarray, x_early_stop: np.ndarray | None = None) -> dict:
        self.forest.fit(x)
        return {"fit_rows": int(len(x)), "trees": int(self.forest.n_estimators)}

    def score(self, x: np.ndarray) -> np.ndarray:
        return -self.forest.score_samples(x)


ANOMALY_MODELS = {"autoencoder": Autoencoder, "isolation_forest": IsolationForestScorer}


def make_anomaly_model(name: str, seed: int = 0, **options):
    if name not in ANOMALY_MODELS:
        raise ValueError(f"unknown anomaly model {name!r}; choose from {', '.join(ANOMALY_MODELS)}")
    return ANOMALY_MODELS[name](seed=seed, **options)
