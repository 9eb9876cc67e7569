"""--seed N gives bit-identical results on the same machine and software: a training run twice
(metrics, weights and the int8 .tflite bytes), every sampler twice, and the pipeline twice.
Each comparison also checks that another seed gives something else, so it cannot pass by
comparing a thing with itself."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge_ids.train.resample import SAMPLERS, make_sampler

FAST = {"ctgan": {"epochs": 2}, "cflvae": {"epochs": 3, "patience": None, "batch_size": 32,
                                           "schedule": "polynomial"}}


def _train(data_dir, out, seed):
    from edge_ids.training import run_training

    return run_training("wustl-ehms", "fnn", "focal", "ros", out, data_dir=data_dir, seed=seed,
                        loss_options={"gamma": 2.0, "alpha": 2.0},
                        resample_options={"ratio": 0.5}, training={"epochs": 3},
                        echo=lambda _: None)


def test_training_twice_is_bit_identical(data_dir, tmp_path):
    import keras

    first, second = _train(data_dir, tmp_path / "a", 4), _train(data_dir, tmp_path / "b", 4)
    assert first["metrics"] == second["metrics"]
    assert first["history"] == second["history"]
    weights = [keras.saving.load_model(tmp_path / name / "model.keras").get_weights()
               for name in ("a", "b")]
    assert all(np.array_equal(a, b) for a, b in zip(*weights))
    # layer names are part of the .tflite: Keras' automatic ones would differ in one process
    assert ((tmp_path / "a/bundle/model.tflite").read_bytes()
            == (tmp_path / "b/bundle/model.tflite").read_bytes())
    other = _train(data_dir, tmp_path / "c", 5)
    assert other["history"] != first["history"]


@pytest.mark.parametrize("name", [s for s in SAMPLERS if s != "none"])
def test_every_sampler_is_seeded(name):
    rng = np.random.default_rng(0)
    x = rng.random((300, 6)).astype(np.float32)
    y = np.repeat(np.arange(3), (200, 70, 30))
    x[y == 1] += 0.3
    x = np.clip(x, 0, 1)

    def sample(seed):
        return make_sampler(name, seed=seed, ratio=0.8, **FAST.get(name, {})).fit_resample(x, y)

    first, again, other = sample(1), sample(1), sample(2)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_pipeline_twice_gives_the_same_manifest_metrics(other_bundle, data_dir, tmp_path):
    """The `other_bundle` fixture's pipeline (seed 1, two epochs) run once more."""
    from edge_ids.pipeline import PipelineOptions, run_pipeline

    manifest = run_pipeline(PipelineOptions(data_dir=str(data_dir), out=tmp_path,
                                            train_set="KDDTrain+_20Percent", epochs=2, seed=1,
                                            mi_sample=3000, test_sets=("KDDTest-21",)),
                            echo=lambda _: None)
    before = json.loads((other_bundle / "manifest.json").read_text())
    assert manifest["metrics"] == before["metrics"]
    assert manifest["int8_float_agreement"] == before["int8_float_agreement"]
    assert (tmp_path / "bundle/model.tflite").read_bytes() == (
        other_bundle / "model.tflite").read_bytes()
