"""`edge-ids train` on WUSTL-EHMS-2020: one run writes what compression takes (model.keras,
features.json) and a bundle that the device command classifies from raw CSV lines, identifier
columns and all."""
from __future__ import annotations

import gzip
import json

import keras
import numpy as np
from click.testing import CliRunner
from sklearn.metrics import f1_score

from conftest import majority_baseline
from edge_ids.cli import main
from edge_ids.edge_runtime import Classifier, load_bundle
from edge_ids.train.datasets import load_dataset


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def test_train_writes_model_spec_and_a_working_bundle(data_dir, tmp_path):
    out = tmp_path / "run"
    result = run("train", "--dataset", "wustl-ehms", "--model", "fnn", "--loss", "focal",
                 "--gamma", 2, "--alpha", 2, "--epochs", 3, "--data-dir", data_dir,
                 "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "training.json").read_text())
    assert record["method"]["model_options"] == {"hidden": [50]}  # Dina's EHMS depth
    f1 = record["metrics"]["float"]["test"]["macro_f1"]
    assert f1 > 0.6 and abs(record["metrics"]["int8"]["test"]["macro_f1"] - f1) < 0.05
    model = keras.saving.load_model(out / "model.keras")
    spec = json.loads((out / "features.json").read_text())
    assert model.input_shape == (None, len(spec["selected"]))
    dropped = {"SrcAddr", "DstAddr", "SrcMac", "DstMac", "Packet_num", "Sport"}
    assert not dropped & {f["column"] for f in spec["kept"]}

    # the device reads the raw file's lines (no header), identifiers included
    path = next((data_dir / "wustl-ehms-2020").glob("*.csv.gz"))
    with gzip.open(path, "rt") as f:
        lines = f.read().splitlines()[1:501]
    raw = tmp_path / "records.csv"
    raw.write_text("\n".join(lines) + "\n")
    classified = run("classify", "--bundle", out / "bundle", raw)
    assert classified.exit_code == 0, classified.output
    predictions = [json.loads(l)["class"] for l in classified.stdout.splitlines()]
    assert len(predictions) == 500 and set(predictions) <= {"Normal", "Attack"}

    data = load_dataset("wustl-ehms", data_dir)
    test = data.tests["test"]
    int8 = Classifier(load_bundle(out / "bundle")).classify(test.records).classes
    accuracy, macro_f1 = majority_baseline(data.train.y, test.y)  # 87.5 % Normal: 0.875, 0.467
    assert np.mean(int8 == test.y) > accuracy + 0.02
    assert f1_score(test.y, int8, average="macro") > macro_f1 + 0.15


def test_train_refuses_bad_combinations(tmp_path):
    result = run("train", "--dataset", "wustl-ehms", "--model", "fnn", "--loss", "ce",
                 "--gamma", 2, "--out", tmp_path)
    assert result.exit_code == 2 and "--gamma/--alpha apply to --loss focal" in result.output
    result = run("train", "--dataset", "wustl-ehms", "--model", "fnn", "--train-set",
                 "KDDTrain+", "--out", tmp_path)
    assert result.exit_code == 2 and "only NSL-KDD" in result.output
    result = run("train", "--dataset", "bot-iot", "--model", "fnn", "--data-dir", tmp_path,
                 "--out", tmp_path / "o")
    assert result.exit_code == 5 and "Error:" in result.output and "bot-iot" in result.output.lower()
    assert "UNSW_2018_IoT_Botnet_Final_10_best_Training.csv not found" in result.output
