"""The pipeline's promises: the int8 bundle behaves like the Keras model it came from."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from edge_ids.edge_runtime import Classifier, load_bundle
from edge_ids.edge_runtime.model.features import FeatureTransform
from edge_ids.train.datasets import nsl_kdd
from edge_ids.train.evaluate import classification_metrics


def _keras_and_int8_predictions(out, data_dir, test_set="KDDTest+"):
    bundle = load_bundle(out / "bundle")
    test = nsl_kdd.load(test_set, data_dir)
    model = keras.saving.load_model(out / "model.keras")
    x, _ = FeatureTransform(bundle.spec).transform(test.records.columns)
    keras_pred = model.predict(x, batch_size=4096, verbose=0).argmax(1)
    int8_pred = Classifier(bundle).classify(test.records).classes
    return test, keras_pred, int8_pred


def test_int8_agrees_with_keras_on_kddtest_plus(small_pipeline, data_dir):
    out, manifest = small_pipeline
    test, keras_pred, int8_pred = _keras_and_int8_predictions(out, data_dir)
    agreement = np.mean(keras_pred == int8_pred)
    assert agreement >= 0.98
    assert agreement == pytest.approx(manifest["int8_float_agreement"]["KDDTest+"])


def test_manifest_metrics_are_the_measured_ones(small_pipeline, data_dir):
    out, manifest = small_pipeline
    test, keras_pred, int8_pred = _keras_and_int8_predictions(out, data_dir)
    for variant, pred in (("float", keras_pred), ("int8", int8_pred)):
        measured = classification_metrics(test.y, pred, list(nsl_kdd.CLASSES), nsl_kdd.NORMAL)
        assert manifest["metrics"][variant]["KDDTest+"] == measured
    float_acc = manifest["metrics"]["float"]["KDDTest+"]["accuracy"]
    int8_acc = manifest["metrics"]["int8"]["KDDTest+"]["accuracy"]
    assert abs(float_acc - int8_acc) <= 0.01
    assert (out / "summary.md").read_text().count("| int8 | KDDTest") == 2


def test_metrics_by_hand():
    # Two normal records (one flagged), two DoS (one missed as Normal), one U2R caught.
    y_true, y_pred = [0, 0, 1, 1, 4], [0, 1, 1, 0, 4]
    m = classification_metrics(y_true, y_pred, list(nsl_kdd.CLASSES), "Normal")
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["fpr"] == pytest.approx(0.5)
    assert m["recall"] == {"Normal": 0.5, "DoS": 0.5, "Probe": 0.0, "R2L": 0.0, "U2R": 1.0}
    assert m["confusion_matrix"][0] == [1, 1, 0, 0, 0]


@pytest.mark.slow
def test_full_pipeline_as_the_readme_runs_it(data_dir, tmp_path):
    """The README's command 1 (`edge-ids pipeline --data-dir DIR --out OUT`, the full
    KDDTrain+, a few minutes; `pytest -m slow`): the int8 promises, and the README's seed-0
    table, agreement and sizes are what it prints (benchmarks/papers/readme_pipeline.py)."""
    import subprocess
    import sys
    from pathlib import Path

    from edge_ids.benchmarks.papers.readme_pipeline import differences

    command = [str(Path(sys.executable).parent / "edge-ids"), "pipeline", "--data-dir",
               str(data_dir), "--out", str(tmp_path)]
    subprocess.run(command, check=True, capture_output=True)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert differences(tmp_path) == []
    test, keras_pred, int8_pred = _keras_and_int8_predictions(tmp_path, data_dir)
    assert np.mean(keras_pred == int8_pred) >= 0.98
    # The promise is for KDDTest+; on KDDTest-21 one of 3 seeds lost 1.37 points (README).
    drop = (manifest["metrics"]["float"]["KDDTest+"]["accuracy"]
            - manifest["metrics"]["int8"]["KDDTest+"]["accuracy"])
    assert abs(drop) <= 0.01, f"int8 accuracy differs by {100 * drop:.2f} points on KDDTest+"
