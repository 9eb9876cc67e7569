"""Magnitude pruning for Keras 3: the schedule, exact sparsity per layer or globally, masks that
hold through further training, and the sparsity read back from the int8 .tflite."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from edge_ids.compress.pruning import (KeepZeros, MagnitudePruning, PolynomialDecay,
                                       kernel_sparsity, prunable_layers)
from edge_ids.compress.quantize import convert_int8
from edge_ids.compress.size_report import tflite_weight_sparsity
from edge_ids.train.models import MODELS


def synthetic(n=2000, width=24, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, width)).astype("float32")
    return x, (x @ rng.normal(size=(width, classes))).argmax(1)


def fit(model, x, y, callbacks, epochs=3):
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=100, verbose=0, callbacks=callbacks)


def test_schedule_follows_tfmot_polynomial_decay():
    s = PolynomialDecay(0.8, begin_step=100, end_step=300, initial_sparsity=0.2, frequency=50)
    assert s.sparsity(0) == pytest.approx(0.2) and s.sparsity(100) == pytest.approx(0.2)
    assert s.sparsity(200) == pytest.approx(0.8 + (0.2 - 0.8) * 0.5 ** 3)
    assert s.sparsity(300) == pytest.approx(0.8) and s.sparsity(10_000) == pytest.approx(0.8)
    steps = [s.sparsity(t) for t in range(0, 400, 7)]
    assert steps == sorted(steps)
    assert [t for t in range(400) if s.updates_at(t)] == [100, 150, 200, 250, 300]
    with pytest.raises(ValueError):
        PolynomialDecay(1.0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_reaches_the_target_and_keeps_its_zeros(name):
    x, y = synthetic()
    model = MODELS[name](x.shape[1], 4, seed=0)
    fit(model, x, y, [MagnitudePruning(PolynomialDecay(0.5, end_step=40, frequency=10))])
    sparsity = kernel_sparsity(model)
    assert len(sparsity) == len(prunable_layers(model)) >= 2
    assert all(abs(s - 0.5) < 0.01 for s in sparsity.values()), sparsity
    zeros = {l.name: keras.ops.convert_to_numpy(l.kernel) == 0 for l in prunable_layers(model)}
    fit(model, x, y, [KeepZeros()], epochs=1)  # fine-tuning on: the pruned weights stay zero
    for layer in prunable_layers(model):
        assert np.all(keras.ops.convert_to_numpy(layer.kernel)[zeros[layer.name]] == 0)


def test_without_the_masks_training_would_revive_the_zeros():
    """The control for the test above: the masks are what hold the zeros."""
    x, y = synthetic()
    model = MODELS["fnn"](x.shape[1], 4, seed=0)
    fit(model, x, y, [MagnitudePruning(PolynomialDecay(0.5, end_step=40, frequency=10))])
    fit(model, x, y, [], epochs=1)
    sizes = [int(np.prod(l.kernel.shape)) for l in prunable_layers(model)]
    overall = np.dot(list(kernel_sparsity(model).values()), sizes) / sum(sizes)
    assert overall < 0.45  # (weights behind dead ReLUs get no gradient and stay zero)


def test_global_scope_and_per_layer_targets():
    x, y = synthetic()
    model = MODELS["fnn"](x.shape[1], 4, seed=0)
    fit(model, x, y, [MagnitudePruning(PolynomialDecay(0.7, end_step=40, frequency=10),
                                       scope="global")])
    sizes = {l.name: int(np.prod(l.kernel.shape)) for l in prunable_layers(model)}
    sparsity = kernel_sparsity(model)
    overall = sum(sparsity[n] * sizes[n] for n in sizes) / sum(sizes.values())
    assert overall == pytest.approx(0.7, abs=0.01)
    assert max(sparsity.values()) - min(sparsity.values()) > 0.05  # one threshold, uneven layers

    model = MODELS["fnn"](x.shape[1], 4, seed=0)
    first, last = prunable_layers(model)[0].name, prunable_layers(model)[-1].name
    fit(model, x, y, [MagnitudePruning(PolynomialDecay(0.9, end_step=40),
                                       targets={first: 0.8, last: 0.3})])
    sparsity = kernel_sparsity(model)
    assert sparsity[first] == pytest.approx(0.8, abs=0.01)
    assert sparsity[last] == pytest.approx(0.3, abs=0.02)
    assert all(s == 0 for n, s in sparsity.items() if n not in (first, last))
    with pytest.raises(ValueError, match="no prunable layer named nope"):
        fit(model, x, y, [MagnitudePruning(PolynomialDecay(0.5), targets={"nope": 0.5})])


def test_sparsity_read_back_from_the_int8_tflite():
    x, y = synthetic()
    model = MODELS["cnn"](x.shape[1], 4, seed=0)
    fit(model, x, y, [MagnitudePruning(PolynomialDecay(0.8, end_step=40, frequency=10))])
    layers = tflite_weight_sparsity(convert_int8(model, x[:200], int8_io=False))
    assert [l["op"] for l in layers] == ["CONV_2D", "CONV_2D", "FULLY_CONNECTED"]
    assert all(l["dtype"] == "int8" for l in layers)
    # int8 rounding may zero a few more small weights, never fewer
    assert all(0.8 - 0.01 <= l["sparsity"] <= 0.8 + 0.05 for l in layers), layers
