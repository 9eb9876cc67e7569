"""Train a classifier with early stopping on a validation split carved from the training data."""
from __future__ import annotations

import time
from typing import Callable

import keras
import numpy as np
from sklearn.model_selection import train_test_split

from .determinism import seed_everything

# Keras dispatches each optimizer step from Python unless told to run several per call; for
# these small models that dispatch is most of a step's cost (benchmarks/training_speed.py
# measures it). The steps and their order are the same, so the trained weights are too.
STEPS_PER_EXECUTION = 64


def split_validation(n_rows: int, y: np.ndarray, fraction: float, seed: int):
    """Stratified (train, validation) row indices: each class split in the same proportion."""
    rows = np.arange(n_rows)
    return train_test_split(rows, test_size=fraction, stratify=y, random_state=seed)


def split_with_holdout(y: np.ndarray, val_fraction: float, holdout_fraction: float,
                       seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fit, validation, holdout) rows, stratified: the holdout is set aside first and never
    seen by the model (neither fitted on nor early-stopped on), for choices made after it is
    trained (an operating point); the rest splits as split_validation does."""
    if not holdout_fraction:
        fit, val = split_validation(len(y), y, val_fraction, seed)
        return fit, val, np.array([], dtype=np.int64)
    rest, holdout = split_validation(len(y), y, holdout_fraction, seed + HOLDOUT_SEED)
    fit, val = split_validation(len(rest), y[rest], val_fraction, seed)
    return rest[fit], rest[val], holdout


HOLDOUT_SEED = 7919  # the holdout's own split seed: not the validation split's


def fit_classifier(model: keras.Model, loss: keras.losses.Loss, x, y, x_val, y_val, *,
                   epochs: int = 50, batch_size: int = 256, learning_rate: float = 0.01,
                   schedule: str | None = None, decay_epochs: int = 10,
                   patience: int | None = 5, min_delta: float = 0.0, seed: int = 0,
                   callbacks: tuple = (), steps_per_execution: int = STEPS_PER_EXECUTION,
                   echo: Callable[[str], None] | None = None) -> dict:
    """Fit with Adam; stop when validation loss has not improved for `patience` epochs and keep
    the best weights. schedule "polynomial" decays the learning rate to 1e-5 (power 0.5) over
    `decay_epochs` epochs, as Khanam et al. do. Returns a short history: epochs run, the epoch
    of least validation loss with its loss and accuracy, and the epoch whose weights were kept
    with its validation accuracy. patience=None runs every epoch and keeps the
    last weights (the papers' protocol; pruning: earlier weights are less sparse). `callbacks`
    run inside fit; a callback that must act after every optimizer step (pruning masks) needs
    steps_per_execution=1, since Keras calls batch hooks once per execution."""
    seed_everything(seed)
    rate = learning_rate
    if schedule == "polynomial":
        steps = decay_epochs * int(np.ceil(len(y) / batch_size))
        rate = keras.optimizers.schedules.PolynomialDecay(learning_rate, steps, 1e-5, power=0.5)
    elif schedule is not None:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; use 'polynomial' or None")
    model.compile(optimizer=keras.optimizers.Adam(rate), loss=loss,
                  metrics=["sparse_categorical_accuracy"],
                  steps_per_execution=steps_per_execution)
    # min_delta: once a learning rate has decayed, the loss still creeps down by ~1e-6 an
    # epoch; without a floor a 200-epoch budget is spent on nothing (models.TRAINING sets 1e-4)
    stop = None
    # min_delta: once a learning rate has decayed, the loss still creeps down by ~1e-6 an
    # epoch; without a floor a 200-epoch budget is spent on nothing (models.TRAINING sets 1e-4)
    if patience is not None:
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                             min_delta=min_delta, restore_best_weights=True)
    # the caller's callbacks run after early stopping: one that sets weights at the end (the
    # audit's test-selected epoch) has the last word, and says which epoch with `kept_epoch`
    callbacks = [c for c in (stop, *callbacks) if c is not None] + (
        [_EpochLine(epochs, echo)] if echo else [])
    history = model.fit(x, y, validation_data=(x_val, y_val), epochs=epochs,
                        batch_size=batch_size, shuffle=True, verbose=0, callbacks=callbacks)
    val_loss = history.history["val_loss"]
    val_accuracy = history.history["val_sparse_categorical_accuracy"]
    best = int(np.argmin(val_loss))
    kept = len(val_loss) if stop is None else stop.best_epoch + 1
    for callback in callbacks:
        kept = getattr(callback, "kept_epoch", kept)
    return {"epochs_run": len(val_loss), "best_epoch": best + 1,
            "best_val_loss": float(val_loss[best]), "best_val_accuracy": float(val_accuracy[best]),
            "weights_from_epoch": int(kept), "kept_val_accuracy": float(val_accuracy[kept - 1])}


class _EpochLine(keras.callbacks.Callback):
    """One progress line per epoch (Keras' own bars are unreadable in logs)."""

    def __init__(self, epochs: int, echo: Callable[[str], None]):
        super().__init__()
        self.epochs, self.echo = epochs, echo

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"{k} {logs[k]:.4f}" for k in ("loss", "val_loss",
                                                "val_sparse_categorical_accuracy") if k in logs]
        self.echo(f"  epoch {epoch + 1:3d}/{self.epochs}  " + "  ".join(parts).replace(
            "val_sparse_categorical_accuracy", "val_acc")
                  + f"  ({time.monotonic() - self.start:.1f} s)")
