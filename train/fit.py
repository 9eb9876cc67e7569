"""Train a classifier with early stopping on a validation split carved from the training data."""
from __future__ import annotations

import time
from typing import Callable

import keras
import numpy as np
from sklearn.model_selection import train_test_split


def split_validation(n_rows: int, y: np.ndarray, fraction: float, seed: int):
    """Stratified (train, validation) row indices: each class split in the same proportion."""
    rows = np.arange(n_rows)
    return train_test_split(rows, test_size=fraction, stratify=y, random_state=seed)


def fit_classifier(model: keras.Model, loss: keras.losses.Loss, x, y, x_val, y_val, *,
                   epochs: int = 50, batch_size: int = 256, learning_rate: float = 0.01,
                   patience: int = 5, seed: int = 0,
                   echo: Callable[[str], None] | None = None) -> dict:
    """Fit with Adam; stop when validation loss has not improved for `patience` epochs and keep
    the best weights. Returns a short history: epochs run, best epoch, best validation loss."""
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss,
                  metrics=["sparse_categorical_accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                         restore_best_weights=True)
    callbacks = [stop] + ([_EpochLine(epochs, echo)] if echo else [])
    history = model.fit(x, y, validation_data=(x_val, y_val), epochs=epochs,
                        batch_size=batch_size, shuffle=True, verbose=0, callbacks=callbacks)
    val_loss = history.history["val_loss"]
    best = int(np.argmin(val_loss))
    return {"epochs_run": len(val_loss), "best_epoch": best + 1,
            "best_val_loss": float(val_loss[best]),
            "best_val_accuracy": float(history.history["val_sparse_categorical_accuracy"][best])}


class _EpochLine(keras.callbacks.Callback):
    """One progress line per epoch (Keras' own bars are unreadable in logs)."""

    def __init__(self, epochs: int, echo: Callable[[str], None]):
        super().__init__()
        self.epochs, self.echo = epochs, echo

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.echo(f"  epoch {epoch + 1:3d}/{self.epochs}  loss {logs.get('loss', 0):.4f}  "
                  f"val_loss {logs.get('val_loss', 0):.4f}  "
                  f"val_acc {logs.get('val_sparse_categorical_accuracy', 0):.4f}  "
                  f"({time.monotonic() - self.start:.1f} s)")
