"""`edge-ids compress` on real data: the gate both ways, the size report read back from the
bundle, every model family, and the refusals that come before any work."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edge_ids.cli import main
from edge_ids.cli_compress import EXIT_GATE_REFUSED
from edge_ids.compress.size_report import gzip_size, tflite_weight_sparsity
from edge_ids.edge_runtime import load_bundle
from conftest import majority_baseline


def run(*args):
    return CliRunner().invoke(main, ["compress", *map(str, args)])


def test_gate_passes_and_the_manifest_holds_both_metrics_and_the_sizes(small_pipeline,
                                                                       data_dir, tmp_path):
    model_dir, out = small_pipeline[0], tmp_path / "p50"
    # a gate that can refuse: measured here 3.5 points lost (README: up to 3.9 over seeds)
    result = run("--model", model_dir, "--sparsity", 0.5, "--epochs", 1, "--max-f1-drop", 5,
                 "--qat", "auto", "--calibration-percentiles", "100,95",
                 "--data-dir", data_dir, "--out", out)
    assert result.exit_code == 0, result.output
    bundle = load_bundle(out)
    manifest = bundle.manifest
    float_f1 = manifest["metrics"]["float"]["KDDTest+"]["macro_f1"]
    compressed_f1 = manifest["metrics"]["compressed"]["KDDTest+"]["macro_f1"]
    assert set(manifest["metrics"]) == {"float", "pruned_float", "compressed"}
    assert set(manifest["metrics"]["compressed"]) == {"KDDTest+", "KDDTest-21"}
    assert manifest["gate"]["passed"] and manifest["gate"]["test_set"] == "KDDTest+"
    assert manifest["gate"]["f1_drop"] == pytest.approx(100 * (float_f1 - compressed_f1))
    assert manifest["gate"]["max_f1_drop"] == 5 and manifest["gate"]["f1_drop"] <= 5
    assert compressed_f1 > 0.4  # working: "always Normal" scores macro-F1 0.12 on KDDTest+

    sizes = manifest["compression"]["sizes"]
    assert sizes["tflite_bytes"] == len(bundle.model)
    assert sizes["tflite_gzip_bytes"] == gzip_size(bundle.model)
    assert sizes["tflite_gzip_bytes"] < 0.4 * sizes["float_tflite_gzip_bytes"]
    assert sizes["pruned_float_tflite_gzip_bytes"] < sizes["float_tflite_gzip_bytes"]
    read_back = tflite_weight_sparsity(bundle.model)
    assert [l["sparsity"] for l in sizes["layers"]] == [l["sparsity"] for l in read_back]
    assert all(0.49 < l["sparsity"] < 0.56 and l["keras_sparsity"] == pytest.approx(0.5,
               abs=0.01) for l in sizes["layers"])
    assert manifest["model"]["quantization"] == "int8"
    assert bundle.spec["input_quantization"] is None  # float I/O by default
    assert "parameters" in result.output and "sparsity in .tflite" in result.output
    # auto QAT judged the validation drop of int8 alone, well within 5 points: not run
    assert manifest["compression"]["qat"] is None and "qat" not in manifest["compression"][
        "fine_tuning"]
    calibration = manifest["compression"]["calibration"]
    agreement = {float(q): a for q, a in calibration["validation_agreement"].items()}
    assert set(agreement) == {100.0, 95.0} and all(0.9 < a <= 1 for a in agreement.values())
    assert agreement[calibration["logit_percentile"]] == max(agreement.values())


def test_gate_refuses_and_ships_nothing(small_pipeline, data_dir, tmp_path):
    out = tmp_path / "p95"
    result = run("--model", small_pipeline[0], "--sparsity", 0.95, "--epochs", 1,
                 "--max-f1-drop", 0, "--io", "int8", "--data-dir", data_dir, "--out", out)
    assert result.exit_code == EXIT_GATE_REFUSED, result.output
    assert not out.exists()
    rejected = json.loads((tmp_path / "p95.rejected" / "manifest.json").read_text())
    drop = rejected["gate"]["f1_drop"]
    assert not rejected["gate"]["passed"] and drop > 0
    assert f"dropped {drop:.2f} points" in result.output and "refused" in result.output


def test_auto_qat_runs_when_the_validation_drop_exceeds_the_gate(small_pipeline, data_dir,
                                                                 tmp_path):
    """One calibration row gives int8 ranges that lose macro-F1 on the validation rows (1.0
    points measured here), more than the 0.5-point gate: auto QAT runs, and its model passes."""
    out = tmp_path / "qat"
    result = run("--model", small_pipeline[0], "--qat", "auto", "--max-f1-drop", 0.5,
                 "--calibration-rows", 1, "--calibration-percentiles", 100,
                 "--data-dir", data_dir, "--out", out)
    assert result.exit_code == 0, result.output
    compression = load_bundle(out).manifest["compression"]
    reason = compression["qat"]
    assert reason.startswith("validation macro-F1 drop") and reason.endswith("> 0.50")
    assert float(reason.split()[3]) > 0.5
    assert list(compression["fine_tuning"]) == ["qat"]
    assert f"quantization-aware fine-tuning ({reason})" in result.output


# dnn in the fast set; fnn and cnn in the slow set (`pytest -m slow tests/test_compress.py`)
@pytest.mark.parametrize("model", [pytest.param("fnn", marks=pytest.mark.slow),
                                   pytest.param("cnn", marks=pytest.mark.slow), "dnn"])
def test_every_model_compresses(model, data_dir, tmp_path):
    from edge_ids.training import run_training
    from edge_ids.train.datasets import load_dataset

    # three epochs: after one, the CNN and DNN still answer "Normal" to everything
    run_training("wustl-ehms", model, "ce", "none", tmp_path / "m", data_dir=data_dir,
                 training={"epochs": 3}, bundle=False, echo=lambda _: None)
    result = run("--model", tmp_path / "m", "--sparsity", 0.5, "--epochs", 1, "--qat", "always",
                 "--qat-epochs", 1, "--data-dir", data_dir, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    manifest = load_bundle(tmp_path / "b").manifest
    assert manifest["model"]["architecture"] == model
    assert manifest["compression"]["qat"] == "asked for"
    assert set(manifest["compression"]["fine_tuning"]) == {"pruning", "qat"}
    layers = manifest["compression"]["sizes"]["layers"]
    assert len(layers) >= 2 and all(l["sparsity"] >= 0.49 for l in layers)
    data = load_dataset("wustl-ehms", data_dir)  # 87.5 % Normal: above "always Normal"
    accuracy, macro_f1 = majority_baseline(data.train.y, data.tests["test"].y)
    compressed = manifest["metrics"]["compressed"]["test"]
    assert compressed["accuracy"] > accuracy + 0.02 and compressed["macro_f1"] > macro_f1 + 0.15


def test_refusals_before_any_work(small_pipeline, tmp_path):
    model_dir = small_pipeline[0]
    result = run("--model", model_dir, "--experimental-sparsity", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "outputs are wrong" in result.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    result = run("--model", model_dir, "--out", tmp_path / "full")
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    result = run("--model", tmp_path, "--out", tmp_path / "y")
    assert result.exit_code == 5 and "missing model.keras" in result.output
    result = run("--model", model_dir, "--layer-sparsity", "dense", "--out", tmp_path / "z")
    assert result.exit_code == 2 and "NAME=SPARSITY" in result.output
    result = run("--model", model_dir, "--calibration-percentiles", "99,x", "--out", tmp_path / "w")
    assert result.exit_code == 2 and "percentiles" in result.output
