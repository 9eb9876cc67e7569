"""Losses for class-imbalanced intrusion data. Every loss takes integer class labels.

Focal loss (Lin et al. 2017), as Dina et al. 2023 use it: FL = -alpha * (1 - p_t)^gamma * log p_t.
The paper's code uses a scalar alpha (which, with Adam, mostly rescales the loss); a per-class
alpha vector is offered as well.
"""
from __future__ import annotations

import keras
from keras import ops

EPSILON = 1e-7


@keras.saving.register_keras_serializable(package="edge_ids")
class FocalLoss(keras.losses.Loss):
    def __init__(self, gamma: float = 2.0, alpha: float | list[float] = 1.0,
                 name: str = "focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma = float(gamma)
        self.alpha = alpha

    def call(self, y_true, y_pred):
        n_classes = ops.shape(y_pred)[-1]
        one_hot = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), n_classes)
        p_t = ops.sum(one_hot * ops.clip(y_pred, EPSILON, 1.0 - EPSILON), axis=-1)
        alpha = ops.convert_to_tensor(self.alpha, dtype=y_pred.dtype)
        alpha_t = ops.sum(one_hot * alpha, axis=-1) if ops.ndim(alpha) else alpha
        return -alpha_t * ops.power(1.0 - p_t, self.gamma) * ops.log(p_t)

    def get_config(self):
        return super().get_config() | {"gamma": self.gamma, "alpha": self.alpha}


def make_loss(name: str, **options) -> keras.losses.Loss:
    """A loss by name: "focal" (gamma, alpha) or "ce" (cross-entropy)."""
    if name == "focal":
        return FocalLoss(**options)
    if name == "ce":
        return keras.losses.SparseCategoricalCrossentropy()
    raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")


LOSSES = ("focal", "ce")
