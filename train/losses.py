"""Classification losses for class-imbalanced intrusion data. One interface: every loss is a
Keras loss taking integer class labels (shape (n,) or (n, 1)) and softmax probabilities.

- ce: cross-entropy, the baseline of both papers.
- focal: Lin et al. 2017 as Dina et al. 2023 use it, FL = -alpha * (1 - p_t)^gamma * log p_t.
  Their code uses a scalar alpha (with Adam it mostly rescales the loss); a per-class alpha
  vector is offered as well.
- classwise_focal: focal loss whose gamma *and* alpha depend on the true class (Khanam et al.
  2022 give the minority classes a larger gamma). `focal_term` is shared with the CFLVAE's
  reconstruction loss (train/cflvae.py), which applies it feature by feature.
- dice: soft multi-class Dice loss, the papers' FNN-Dice baseline (1 - mean per-class Dice).
"""
from __future__ import annotations

import keras
from keras import ops

EPSILON = 1e-7


def focal_term(p_t, gamma, alpha):
    """-alpha * (1 - p_t)^gamma * log(p_t), elementwise; gamma and alpha broadcast."""
    p_t = ops.clip(p_t, EPSILON, 1.0 - EPSILON)
    return -alpha * ops.power(1.0 - p_t, gamma) * ops.log(p_t)


def _one_hot(y_true, y_pred):
    return ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), ops.shape(y_pred)[-1],
                       dtype=y_pred.dtype)


def _per_class(value, one_hot):
    """A scalar, or the entry of a per-class vector that belongs to each sample's true class."""
    value = ops.convert_to_tensor(value, dtype=one_hot.dtype)
    return ops.sum(one_hot * value, axis=-1) if ops.ndim(value) else value


@keras.saving.register_keras_serializable(package="edge_ids")
class FocalLoss(keras.losses.Loss):
    """Focal loss with one gamma; alpha a scalar or one weight per class."""

    def __init__(self, gamma: float = 2.0, alpha: float | list[float] = 1.0,
                 name: str = "focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma, self.alpha = float(gamma), alpha

    def call(self, y_true, y_pred):
        one_hot = _one_hot(y_true, y_pred)
        p_t = ops.sum(one_hot * y_pred, axis=-1)
        return focal_term(p_t, self.gamma, _per_class(self.alpha, one_hot))

    def get_config(self):
        return super().get_config() | {"gamma": self.gamma, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="edge_ids")
class ClassWiseFocalLoss(keras.losses.Loss):
    """Focal loss with a gamma and an alpha per class (lists as long as the class count)."""

    def __init__(self, gamma: list[float], alpha: list[float],
                 name: str = "classwise_focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if len(gamma) != len(alpha):
            raise ValueError(f"class-wise focal loss needs one gamma and one alpha per class, "
                             f"got {len(gamma)} gammas and {len(alpha)} alphas")
        self.gamma, self.alpha = [float(g) for g in gamma], [float(a) for a in alpha]

    def call(self, y_true, y_pred):
        one_hot = _one_hot(y_true, y_pred)
        p_t = ops.sum(one_hot * y_pred, axis=-1)
        return focal_term(p_t, _per_class(self.gamma, one_hot), _per_class(self.alpha, one_hot))

    def get_config(self):
        return super().get_config() | {"gamma": self.gamma, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="edge_ids")
class DiceLoss(keras.losses.Loss):
    """Soft Dice over the batch, averaged over classes: 1 - (2|Y.P| + s) / (|Y| + |P| + s).

    Dice is a batch-level quantity; Keras wants one value per sample, so each sample carries the
    batch's Dice loss (the mean over the batch is the same number)."""

    def __init__(self, smooth: float = 1.0, name: str = "dice_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        one_hot = _one_hot(y_true, y_pred)
        overlap = ops.sum(one_hot * y_pred, axis=0)
        size = ops.sum(one_hot, axis=0) + ops.sum(y_pred, axis=0)
        dice = (2.0 * overlap + self.smooth) / (size + self.smooth)
        return ops.ones_like(y_pred[:, 0]) * (1.0 - ops.mean(dice))

    def get_config(self):
        return super().get_config() | {"smooth": self.smooth}


def make_loss(name: str, n_classes: int | None = None, **options) -> keras.losses.Loss:
    """A loss by name (see LOSSES). classwise_focal without gamma/alpha lists gets the CFLVAE
    paper's values spread over `n_classes`: gamma 1.3 / alpha 0.5 for the first two classes
    after the majority, 1.5 / 0.6 for the rest (see default_classwise)."""
    if name == "ce":
        return keras.losses.SparseCategoricalCrossentropy()
    if name == "focal":
        return FocalLoss(**options)
    if name == "classwise_focal":
        if "gamma" not in options or "alpha" not in options:
            if n_classes is None:
                raise ValueError("classwise_focal needs gamma and alpha lists, or n_classes")
            gamma, alpha = default_classwise(n_classes)
            options = {"gamma": gamma, "alpha": alpha} | options
        return ClassWiseFocalLoss(**options)
    if name == "dice":
        return DiceLoss(**options)
    raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")


def default_classwise(n_classes: int) -> tuple[list[float], list[float]]:
    """Khanam et al.'s class-wise gamma/alpha, for classes ordered majority first (NSL-KDD:
    Normal, DoS, Probe, R2L, U2R): DoS and Probe gamma 1.3 alpha 0.5, R2L and U2R gamma 1.5
    alpha 0.6; the majority class gets the smaller pair too."""
    gamma = [1.3 if c < 3 else 1.5 for c in range(n_classes)]
    alpha = [0.5 if c < 3 else 0.6 for c in range(n_classes)]
    return gamma, alpha


LOSSES = ("ce", "focal", "classwise_focal", "dice")
