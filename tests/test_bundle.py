"""The bundle contract: what the manifest holds, and refusal of anything that does not match."""
from __future__ import annotations

import json
import tarfile

import pytest

import hashlib

import numpy as np
from sklearn.metrics import f1_score

from edge_ids.edge_runtime.model.bundle import BundleError, load_bundle
from edge_ids.edge_runtime.model.classifier import Classifier
from edge_ids.train.datasets import nsl_kdd


def test_manifest_holds_what_the_device_and_the_reader_need(small_pipeline, data_dir):
    out, manifest = small_pipeline
    bundle = load_bundle(out / "bundle")
    m = bundle.manifest
    assert m == manifest
    assert m["schema_version"] == 2 and m["detector"] == "classifier"
    assert m["dataset"] == "nsl-kdd"
    assert m["class_names"] == ["Normal", "DoS", "Probe", "R2L", "U2R"]
    assert len(m["files"]["model.tflite"]["sha256"]) == 64
    assert len(m["files"]["features.json"]["sha256"]) == 64
    assert {"python", "tensorflow-cpu", "keras", "numpy", "scikit-learn", "ai-edge-litert",
            "edge-ids"} <= set(m["tools"])
    # the int8 metrics are what the bundle scores now, recomputed here through the edge runtime
    classifier = Classifier(bundle)
    for test_set in ("KDDTest+", "KDDTest-21"):
        test = nsl_kdd.load(test_set, data_dir)
        predicted = classifier.classify(test.records).classes
        recorded = m["metrics"]["int8"][test_set]
        assert recorded["accuracy"] == pytest.approx(np.mean(predicted == test.y), abs=1e-9)
        assert recorded["macro_f1"] == pytest.approx(
            f1_score(test.y, predicted, average="macro", labels=range(5), zero_division=0),
            abs=1e-9)
        for variant in ("float", "int8"):
            metrics = m["metrics"][variant][test_set]
            assert -1 <= metrics["mcc"] <= 1 and 0 <= metrics["fpr"] <= 1
            assert set(metrics["recall"]) == set(m["class_names"])
    assert bundle.spec["input_quantization"]["scale"] > 0


def test_tampered_model_is_refused(bundle_copy):
    model = bundle_copy / "model.tflite"
    data = bytearray(model.read_bytes())
    data[-100] ^= 1
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError) as refused:
        load_bundle(bundle_copy)
    said, actual = str(refused.value), hashlib.sha256(bytes(data)).hexdigest()
    expected = json.loads((bundle_copy / "manifest.json").read_text())["files"]["model.tflite"]
    assert "model.tflite was modified or corrupted" in said
    assert f"its SHA-256 is {actual}, the manifest says {expected['sha256']}" in said
    assert "Copy the bundle again from where it was built, or rebuild it" in said


def test_a_hash_differing_in_its_last_digit_says_where(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    digest = manifest["files"]["model.tflite"]["sha256"]
    manifest["files"]["model.tflite"]["sha256"] = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="they differ from character 64 on"):
        load_bundle(bundle_copy)


def test_a_model_file_given_as_the_bundle_says_what_a_bundle_is(bundle_copy):
    with pytest.raises(BundleError, match=r"A bundle is a folder \(or a \.tar\.gz of one\) "
                                          r"holding manifest\.json with model\.tflite and "
                                          r"features\.json \(a classifier\) .*; give the folder"):
        load_bundle(bundle_copy / "model.tflite")


def test_tampered_feature_spec_is_refused(bundle_copy):
    spec_file = bundle_copy / "features.json"
    spec = json.loads(spec_file.read_text())
    spec["kept"][0]["max"] *= 2
    spec_file.write_text(json.dumps(spec))
    with pytest.raises(BundleError, match=r"features\.json was modified or corrupted"):
        load_bundle(bundle_copy)


def test_other_schema_version_is_refused(bundle_copy):
    manifest_file = bundle_copy / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["schema_version"] = 99
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="bundle schema version 99, but this edge-ids reads "
                                          "versions 1, 2"):
        load_bundle(bundle_copy)


def test_a_version_1_bundle_still_loads_and_classifies_the_same(bundle_copy, kdd_test_lines):
    """Bundles written before the anomaly channel (schema 1: no "detector") keep working."""
    from edge_ids.edge_runtime import Detector
    from edge_ids.edge_runtime.ingest.records import parse_lines

    before = load_bundle(bundle_copy)
    manifest_file = bundle_copy / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["schema_version"] = 1
    del manifest["detector"]
    manifest_file.write_text(json.dumps(manifest))
    old = load_bundle(bundle_copy)
    assert old.detector == "classifier" and old.anomaly is None
    assert old.model_sha256 == before.model_sha256 == manifest["files"]["model.tflite"]["sha256"]
    records = parse_lines(kdd_test_lines[:500], Detector(old).schema)[0]
    assert (Detector(old).detect(records).verdicts == Detector(before).detect(records).verdicts
            ).all()


def test_missing_file_and_bad_json_are_refused(bundle_copy):
    good = (bundle_copy / "manifest.json").read_text()
    (bundle_copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="manifest.json is not valid JSON"):
        load_bundle(bundle_copy)
    (bundle_copy / "manifest.json").write_text(good)
    (bundle_copy / "features.json").unlink()
    with pytest.raises(BundleError, match="features.json is missing"):
        load_bundle(bundle_copy)
    with pytest.raises(BundleError, match="no such bundle"):
        load_bundle(bundle_copy / "nowhere")
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json is missing; a bundle holds"):
        load_bundle(bundle_copy)


def test_tar_gz_bundle_loads_the_same(bundle_copy, tmp_path):
    archive = tmp_path / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundle_copy, arcname="nsl-kdd-fnn")
    a, b = load_bundle(archive), load_bundle(bundle_copy)
    assert (a.model, a.spec, a.manifest) == (b.model, b.spec, b.manifest)
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(BundleError, match="not a bundle. A bundle is a folder"):
        load_bundle(tmp_path / "junk.tar.gz")
