"""Magnitude pruning for Keras 3 models, written by hand: tensorflow-model-optimization (tfmot
0.8.1) rejects Keras 3 models, and making it work pulls in tf-keras and the full 572 MB
tensorflow wheel next to tensorflow-cpu (TOOLCHAIN.md §2).

The schedule is tfmot's PolynomialDecay; the callback zeroes the smallest-magnitude kernel
weights every `frequency` steps and re-applies the masks after every optimizer step, so pruned
weights stay zero through fine-tuning. The result is a plain Keras model: nothing to strip.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

PRUNABLE = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D)


@dataclass(frozen=True)
class PolynomialDecay:
    """Sparsity at a training step, as tfmot.sparsity.keras.PolynomialDecay:
    s(t) = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** power, held at s_f after t1."""

    final_sparsity: float
    begin_step: int = 0
    end_step: int = 1000
    initial_sparsity: float = 0.0
    frequency: int = 100
    power: float = 3.0

    def __post_init__(self):
        for name in ("initial_sparsity", "final_sparsity"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.end_step < self.begin_step or self.frequency < 1:
            raise ValueError("need begin_step <= end_step and frequency >= 1")

    def sparsity(self, step: int) -> float:
        if self.end_step == self.begin_step:
            return self.final_sparsity
        progress = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (
            1.0 - progress) ** self.power

    def updates_at(self, step: int) -> bool:
        """Masks are recomputed every `frequency` steps inside [begin, end], and at end."""
        return (self.begin_step <= step <= self.end_step
                and ((step - self.begin_step) % self.frequency == 0 or step == self.end_step))

    def scaled(self, final_sparsity: float) -> "PolynomialDecay":
        """The same timing with another target (per-layer targets share one clock)."""
        return PolynomialDecay(final_sparsity, self.begin_step, self.end_step,
                               min(self.initial_sparsity, final_sparsity), self.frequency,
                               self.power)


def prunable_layers(model: keras.Model) -> list:
    return [layer for layer in model.layers if isinstance(layer, PRUNABLE)]


class MagnitudePruning(keras.callbacks.Callback):
    """Prune every Dense/Conv kernel of the model being fitted.

    targets: None prunes each layer to the schedule's final sparsity; a dict {layer name:
    final sparsity} sets per-layer targets (layers not named are left dense).
    scope "global" ranks all kernels' weights together (one threshold), so layers with many
    small weights give up more of them; "layer" gives each layer exactly its target.
    """

    def __init__(self, schedule: PolynomialDecay, targets: dict[str, float] | None = None,
                 scope: str = "layer"):
        super().__init__()
        if scope not in ("layer", "global"):
            raise ValueError(f"scope must be 'layer' or 'global', not {scope!r}")
        if scope == "global" and targets:
            raise ValueError("per-layer targets and a global threshold exclude each other")
        self.schedule, self.targets, self.scope = schedule, targets, scope
        self.step = 0
        self.masks: dict[str, np.ndarray] = {}

    def _layers(self) -> list:
        layers = prunable_layers(self.model)
        if self.targets is not None:
            unknown = set(self.targets) - {layer.name for layer in layers}
            if unknown:
                raise ValueError(f"no prunable layer named {', '.join(sorted(unknown))}; the "
                                 f"model has {', '.join(layer.name for layer in layers)}")
            layers = [layer for layer in layers if layer.name in self.targets]
        return layers

    def _target(self, layer) -> float:
        final = self.schedule.final_sparsity if self.targets is None else self.targets[layer.name]
        return self.schedule.scaled(final).sparsity(self.step)

    def on_train_begin(self, logs=None):
        self._update_masks()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.schedule.updates_at(self.step):
            self._update_masks()
        else:
            self._apply_masks()

    def _update_masks(self) -> None:
        layers = self._layers()
        kernels = {layer.name: np.abs(keras.ops.convert_to_numpy(layer.kernel)) for layer in layers}
        if self.scope == "global":
            threshold = _threshold(np.concatenate([k.ravel() for k in kernels.values()]),
                                   self.schedule.sparsity(self.step))
            self.masks = {name: k > threshold for name, k in kernels.items()}
        else:
            self.masks = {layer.name: kernels[layer.name] > _threshold(
                kernels[layer.name].ravel(), self._target(layer)) for layer in layers}
        self._apply_masks()

    def _apply_masks(self) -> None:
        for layer in self._layers():
            layer.kernel.assign(keras.ops.convert_to_numpy(layer.kernel) * self.masks[layer.name])


class KeepZeros(keras.callbacks.Callback):
    """Hold the zeros a pruned model already has (e.g. through quantization-aware fine-tuning)."""

    def on_train_begin(self, logs=None):
        self.masks = {layer.name: keras.ops.convert_to_numpy(layer.kernel) != 0
                      for layer in prunable_layers(self.model)}

    def on_train_batch_end(self, batch, logs=None):
        for layer in prunable_layers(self.model):
            layer.kernel.assign(keras.ops.convert_to_numpy(layer.kernel) * self.masks[layer.name])


def _threshold(magnitudes: np.ndarray, sparsity: float) -> float:
    """The magnitude at or below which a `sparsity` share of the weights lies (-1: prune none)."""
    n = int(round(sparsity * magnitudes.size))
    if n == 0:
        return -1.0
    return float(np.partition(magnitudes, n - 1)[n - 1])


def kernel_sparsity(model: keras.Model) -> dict[str, float]:
    """Share of exact zeros in each prunable kernel of the Keras model."""
    return {layer.name: float(np.mean(keras.ops.convert_to_numpy(layer.kernel) == 0))
            for layer in prunable_layers(model)}
