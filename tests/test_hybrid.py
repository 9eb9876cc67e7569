"""Hybrid and anomaly-only bundles: the verdict rule, the operating point carried in the bundle,
what classify writes, and the refusal of bundles whose anomaly part is missing or inconsistent."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from click.testing import CliRunner

from edge_ids.cli import main
from edge_ids.edge_runtime import UNKNOWN, BundleError, Detector, load_bundle
from edge_ids.edge_runtime.model.bundle import sha256_bytes
from edge_ids.edge_runtime.model.features import FeatureTransform
from edge_ids.edge_runtime.ingest.records import parse_lines


def _records(bundle, lines):
    records, rejected = parse_lines(lines, Detector(bundle).schema)
    assert not rejected
    return records


def _reconstruction_error(bundle, records) -> np.ndarray:
    """The anomaly score computed here independently: LiteRT's own interpreter on the
    anomaly.tflite bytes, then the mean squared error in plain numpy."""
    x = FeatureTransform(bundle.anomaly.spec).transform(records.columns)[0]
    interpreter = Interpreter(model_content=bundle.anomaly.model)
    index_in = interpreter.get_input_details()[0]["index"]
    index_out = interpreter.get_output_details()[0]["index"]
    out = []
    for row in x:
        interpreter.resize_tensor_input(index_in, [1, x.shape[1]])
        interpreter.allocate_tensors()
        interpreter.set_tensor(index_in, row[None, :])
        interpreter.invoke()
        out.append(interpreter.get_tensor(index_out)[0])
    return ((np.array(out) - x) ** 2).mean(axis=1)


def test_hybrid_verdict_is_class_else_unknown_over_threshold_else_normal(learned_nsl_kdd,
                                                                         kdd_test_lines):
    bundle = load_bundle(learned_nsl_kdd["hybrid"])
    assert bundle.detector == "hybrid" and bundle.anomaly.threshold > 0
    detector = Detector(bundle)
    assert detector.verdict_names == ["Normal", "DoS", "Probe", "R2L", "U2R", UNKNOWN]
    records = _records(bundle, kdd_test_lines[:1500])
    v = detector.detect(records)
    np.testing.assert_allclose(v.anomaly_scores, _reconstruction_error(bundle, records),
                               rtol=1e-4, atol=1e-7)
    named = v.classes != 0
    over = v.anomaly_scores > bundle.anomaly.threshold
    expected = np.where(named, v.classes, np.where(over, 5, 0))
    np.testing.assert_array_equal(v.verdicts, expected)
    # every branch of the rule is exercised by these records
    assert named.sum() > 100 and (expected == 5).sum() > 10 and (expected == 0).sum() > 100
    # the classifier's decision is the classifier bundle's own
    alone = Detector(learned_nsl_kdd["classifier"]).detect(records)
    np.testing.assert_array_equal(v.classes, alone.classes)


def test_anomaly_only_bundle_says_normal_or_unknown(learned_nsl_kdd, kdd_test_lines):
    bundle = load_bundle(learned_nsl_kdd["anomaly"])
    assert bundle.detector == "anomaly" and bundle.spec is None and bundle.model is None
    detector = Detector(bundle)
    records = _records(bundle, kdd_test_lines[:1500])
    v = detector.detect(records)
    assert v.classes is None and v.scores is None
    names = np.asarray(detector.verdict_names)[v.verdicts]
    np.testing.assert_array_equal(names == UNKNOWN, v.anomaly_scores > bundle.anomaly.threshold)
    assert set(names) == {"Normal", UNKNOWN}


@pytest.mark.parametrize("kind", ["hybrid", "anomaly"])
def test_the_operating_point_in_the_bundle_is_what_its_own_int8_models_give(learned_nsl_kdd,
                                                                            kind):
    """The threshold is a quantile of the bundle's own scores on validation benign rows: run the
    bundle again over exactly those rows and count its false alarms."""
    bundle = load_bundle(learned_nsl_kdd[kind])
    point = bundle.manifest["anomaly"]
    val = learned_nsl_kdd["validation"]
    v = Detector(bundle).detect(val)
    flagged = v.verdicts != 0
    assert point["max_fpr"] == 0.05 and point["validation_rows"] == len(val)
    assert flagged.mean() == pytest.approx(point["validation_fpr"], abs=1e-12)
    assert point["validation_fpr"] <= point["max_fpr"]
    assert point["validation_fpr"] > point["max_fpr"] - 2 / len(val)  # the budget is spent
    unknown_alone = v.anomaly_scores > bundle.anomaly.threshold
    assert point["threshold"] in set(v.anomaly_scores.astype(float).tolist())
    if kind == "hybrid":
        by_classifier = (v.classes != 0).mean()
        assert by_classifier == pytest.approx(
            bundle.manifest["classifier"]["validation_fpr"], abs=1e-12)
        assert by_classifier <= 0.5 * point["max_fpr"] + 1e-12
        assert flagged.sum() == (v.classes != 0).sum() + (unknown_alone & (v.classes == 0)).sum()


def test_classify_lines_carry_the_verdict_and_the_anomaly_score(learned_nsl_kdd, data_dir,
                                                                 small_pipeline):
    test_file = data_dir / "nsl-kdd" / "KDDTest+.txt.gz"
    runner = CliRunner()
    hybrid = runner.invoke(main, ["classify", "--bundle", str(learned_nsl_kdd["hybrid"]),
                                  str(test_file)])
    assert hybrid.exit_code == 0, hybrid.output
    lines = [json.loads(x) for x in hybrid.stdout.splitlines()]
    assert len(lines) == 22544
    threshold = load_bundle(learned_nsl_kdd["hybrid"]).anomaly.threshold
    for line in lines:
        assert set(line) == {"record", "verdict", "class", "score", "anomaly_score"}
        score = line["anomaly_score"]  # (printed to 6 significant digits)
        if line["class"] != "Normal":
            assert line["verdict"] == line["class"]
        elif score > threshold * (1 + 1e-5):
            assert line["verdict"] == UNKNOWN
        elif score < threshold * (1 - 1e-5):
            assert line["verdict"] == "Normal"
    assert sum(line["verdict"] == UNKNOWN for line in lines) > 100
    assert "Unknown" in hybrid.stderr
    alone = runner.invoke(main, ["classify", "--bundle", str(small_pipeline[0] / "bundle"),
                                 str(test_file)])
    for line in map(json.loads, alone.stdout.splitlines()[:200]):
        assert set(line) == {"record", "verdict", "class", "score"}
        assert line["verdict"] == line["class"]
    anomaly = runner.invoke(main, ["classify", "--bundle", str(learned_nsl_kdd["anomaly"]),
                                   str(test_file)])
    for line in map(json.loads, anomaly.stdout.splitlines()[:200]):
        assert set(line) == {"record", "verdict", "anomaly_score"}


def test_a_new_threshold_is_a_new_model_hash(hybrid_copy):
    before = load_bundle(hybrid_copy)
    manifest = json.loads((hybrid_copy / "manifest.json").read_text())
    manifest["anomaly"]["threshold"] *= 2
    (hybrid_copy / "manifest.json").write_text(json.dumps(manifest))
    after = load_bundle(hybrid_copy)
    assert after.model_sha256 != before.model_sha256
    assert len(after.model_sha256) == 64


def _edit_manifest(path, change):
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, message", [
    (lambda m: m["anomaly"].pop("threshold"), "anomaly threshold None is not a finite number"),
    (lambda m: m["anomaly"].update(threshold=math.nan), "anomaly threshold nan is not"),
    (lambda m: m["anomaly"].update(threshold="0.1"), "anomaly threshold '0.1' is not"),
    (lambda m: m["anomaly"].update(threshold=-1.0), "anomaly threshold -1.0 is not"),
    (lambda m: m.pop("anomaly"), 'has no "anomaly" object with its threshold'),
    (lambda m: m["anomaly"].update(score="cosine"), "anomaly score 'cosine'; this edge-ids "
                                                    "computes 'mean_squared_error'"),
    (lambda m: m.update(detector="ensemble"), "unknown detector 'ensemble'"),
])
def test_a_bundle_with_a_missing_or_bad_threshold_is_refused(hybrid_copy, damage, message):
    _edit_manifest(hybrid_copy, damage)
    with pytest.raises(BundleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_bundle(hybrid_copy)


def test_missing_or_tampered_anomaly_files_are_refused(hybrid_copy):
    model = hybrid_copy / "anomaly.tflite"
    data = bytearray(model.read_bytes())
    data[-50] ^= 1
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"anomaly\.tflite was modified or corrupted"):
        load_bundle(hybrid_copy)
    model.unlink()
    with pytest.raises(BundleError, match="a hybrid bundle holds model.tflite, features.json, "
                                          "anomaly.tflite, anomaly.json, but anomaly.tflite is "
                                          "missing"):
        load_bundle(hybrid_copy)


def _rehash(path, *names):
    _edit_manifest(path, lambda m: m["files"].update(
        {n: {"sha256": sha256_bytes((path / n).read_bytes()),
             "bytes": (path / n).stat().st_size} for n in names}))


def test_inconsistent_anomaly_parts_are_refused_even_with_good_hashes(hybrid_copy):
    """Files that hash right but do not fit together: another layout, a model that is no
    autoencoder (the classifier put in its place)."""
    spec = json.loads((hybrid_copy / "anomaly.json").read_text())
    spec["raw"]["columns"][0]["name"] = "length"
    (hybrid_copy / "anomaly.json").write_text(json.dumps(spec))
    _rehash(hybrid_copy, "anomaly.json")
    with pytest.raises(BundleError, match="describe different raw record layouts"):
        load_bundle(hybrid_copy)
    spec["raw"]["columns"][0]["name"] = "duration"
    (hybrid_copy / "anomaly.json").write_text(json.dumps(spec))
    shutil.copy(hybrid_copy / "model.tflite", hybrid_copy / "anomaly.tflite")
    _rehash(hybrid_copy, "anomaly.json", "anomaly.tflite")
    bundle = load_bundle(hybrid_copy)  # the files are what the manifest says ...
    with pytest.raises(BundleError, match="the anomaly model takes 87 inputs but its feature "
                                          "spec selects"):
        Detector(bundle)  # ... but they do not make a detector


def test_edge_runtime_scores_without_host_libraries(learned_nsl_kdd):
    """The anomaly channel is numpy + LiteRT: the device side imports nothing heavier."""
    import subprocess
    import sys

    code = ("import sys; from edge_ids.edge_runtime import Detector, load_bundle\n"
            "Detector(load_bundle(sys.argv[1])).warm_up()\n"
            "bad = [m for m in ('tensorflow', 'keras', 'sklearn', 'pandas') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code, str(learned_nsl_kdd["hybrid"])], check=True)
