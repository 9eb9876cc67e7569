"""The device install: a wheel of this project in a fresh venv with only the base dependencies
(numpy, ai-edge-litert, click). `edge-ids classify` must work there, with no TensorFlow anywhere,
and give the host's int8 classes record for record."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from edge_ids.edge_runtime import Classifier, load_bundle
from edge_ids.train.datasets import nsl_kdd
from conftest import NSL_KDD, REPO


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("base-install")
    source = tmp / "source"  # build from a copy: the build must not write into the checkout
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    files = tracked.stdout.split() if tracked.returncode == 0 else []
    if not files:
        pytest.skip("not a git checkout: cannot tell which files the wheel is built from")
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "dist",
                    source], check=True)
    wheel = next((tmp / "dist").glob("edge_ids-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([venv / "bin/pip", "install", "-q", wheel], check=True)
    return venv


def test_base_install_has_no_host_libraries(base_venv):
    listed = subprocess.run([base_venv / "bin/pip", "list", "--format=json"], check=True,
                            capture_output=True, text=True).stdout
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed)}
    assert {"edge-ids", "numpy", "ai-edge-litert", "click", "prometheus-client"} <= installed
    assert not installed & {"tensorflow", "tensorflow-cpu", "keras", "scikit-learn", "pandas"}
    imports = ("import edge_ids.train.datasets, edge_ids.compress, edge_ids.edge_runtime, "
               "edge_ids.devices, edge_ids.benchmarks, edge_ids.cli")
    subprocess.run([base_venv / "bin/python", "-c", imports], check=True, cwd=base_venv)


def test_base_install_classifies_like_the_host(base_venv, small_pipeline, data_dir, tmp_path):
    bundle_dir = small_pipeline[0] / "bundle"
    out = tmp_path / "classes.jsonl"
    subprocess.run([base_venv / "bin/edge-ids", "classify", "--bundle", bundle_dir,
                    NSL_KDD / "KDDTest+.txt.gz", "-o", out], check=True, cwd=tmp_path)
    device = [json.loads(l)["class"] for l in out.read_text().splitlines()]
    test = nsl_kdd.load("KDDTest+", data_dir)
    host = Classifier(load_bundle(bundle_dir)).classify(test.records).classes
    assert len(device) == 22_544
    assert device == [nsl_kdd.CLASSES[c] for c in host]


def test_base_install_runs_the_daemon(base_venv, small_pipeline, kdd_test_lines, tmp_path):
    """`edge-ids run` with its metrics page, from the device install alone."""
    records = tmp_path / "records.csv"
    records.write_bytes(b"".join(kdd_test_lines[:2000]))
    alerts = tmp_path / "alerts.json"
    done = subprocess.run([base_venv / "bin/edge-ids", "run", "--bundle",
                           small_pipeline[0] / "bundle", "--input", f"file:{records}",
                           "--alerts", alerts, "--emit", "all", "--metrics", "127.0.0.1:0"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "metrics on http://127.0.0.1:" in done.stderr
    lines = alerts.read_text().splitlines()
    assert len(lines) == 2000 and all(json.loads(l)["ml"]["class"] for l in lines)
    assert "stopped: 2,000 records" in done.stderr
