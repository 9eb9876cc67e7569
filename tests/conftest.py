"""Shared fixtures: the real datasets in ../shared/datasets (or $EDGE_IDS_DATA_DIR), and one
real pipeline run on KDDTrain+_20Percent whose bundle the other tests use.

Under CI=true a skipped test fails the run: CI (.ci/run) provides the datasets and every
system package the fast set uses, so a skip there would only hide work that did not run."""
from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("EDGE_IDS_DATA_DIR") or REPO.parent / "shared" / "datasets")
NSL_KDD = DATA_DIR / "nsl-kdd"
CI = os.environ.get("CI", "").lower() == "true"
SLOW_TIMEOUT = 3600  # seconds: the full-size runs of `pytest -m slow`


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (f"skipped under CI=true ({reason}); .ci/run provides the datasets "
                           f"and the system packages, so this test must run there")


def majority_baseline(y_train: np.ndarray, y_test: np.ndarray) -> tuple[float, float]:
    """(accuracy, macro-F1) of always predicting the training set's most common class: every
    quality threshold in the tests sits above this."""
    from sklearn.metrics import f1_score

    guess = np.full_like(y_test, np.bincount(y_train).argmax())
    labels = np.unique(np.concatenate([y_train, y_test]))
    return (float(np.mean(guess == y_test)),
            float(f1_score(y_test, guess, labels=labels, average="macro", zero_division=0)))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (NSL_KDD / "KDDTest+.txt.gz").is_file():
        pytest.skip(f"NSL-KDD files not found in {NSL_KDD}: put the shared datasets beside the "
                    f"repository or set EDGE_IDS_DATA_DIR")
    return DATA_DIR


@pytest.fixture(scope="session")
def kdd_test_lines(data_dir) -> list[bytes]:
    """KDDTest+ as raw lines (bytes, newline kept), as a device would read them."""
    with gzip.open(NSL_KDD / "KDDTest+.txt.gz", "rb") as f:
        return f.readlines()


@pytest.fixture(scope="session")
def small_pipeline(data_dir, tmp_path_factory):
    """(output dir, manifest) of one real pipeline run on the 20 % training file."""
    from edge_ids.pipeline import PipelineOptions, run_pipeline

    out = tmp_path_factory.mktemp("pipeline")
    manifest = run_pipeline(PipelineOptions(data_dir=str(data_dir), out=out,
                                            train_set="KDDTrain+_20Percent"), echo=lambda _: None)
    return out, manifest


@pytest.fixture
def bundle_copy(small_pipeline, tmp_path) -> Path:
    """A private copy of the pipeline's bundle that a test may damage."""
    return Path(shutil.copytree(small_pipeline[0] / "bundle", tmp_path / "bundle"))


@pytest.fixture(scope="session")
def other_bundle(data_dir, tmp_path_factory) -> Path:
    """A second, different good bundle (another seed, two epochs): what a reload switches to."""
    from edge_ids.pipeline import PipelineOptions, run_pipeline

    out = tmp_path_factory.mktemp("pipeline-other")
    run_pipeline(PipelineOptions(data_dir=str(data_dir), out=out, train_set="KDDTrain+_20Percent",
                                 epochs=2, seed=1, mi_sample=3000, test_sets=("KDDTest-21",)),
                 echo=lambda _: None)
    return out / "bundle"


@pytest.fixture(scope="session")
def net_bundle(data_dir) -> Path:
    """A network-only WUSTL-EHMS bundle (Argus flow columns; three epochs: the tests are about
    the plumbing), in a folder others may read (a capture test runs as nobody)."""
    from edge_ids.training import run_training

    out = Path(tempfile.mkdtemp(prefix="edge-ids-net-"))
    run_training("wustl-ehms-net", "fnn", "focal", "none", out, data_dir=data_dir,
                 training={"epochs": 3}, echo=lambda _: None)
    for path in [out, *out.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield out / "bundle"
    shutil.rmtree(out)


@pytest.fixture
def veth_pair():
    """Two ends of a veth pair: one here, one in a network namespace made for this test."""
    import subprocess

    if not all(map(shutil.which, ("ip", "tcpreplay"))):
        pytest.skip("needs ip and tcpreplay (apt-get install iproute2 tcpreplay)")
    tag = f"eids{os.getpid() % 100000}"
    here, there, namespace = f"{tag}a", f"{tag}b", f"{tag}ns"
    commands = [["ip", "netns", "add", namespace],
                ["ip", "link", "add", here, "type", "veth", "peer", "name", there],
                ["ip", "link", "set", there, "netns", namespace],
                ["ip", "link", "set", here, "up"],
                ["ip", "netns", "exec", namespace, "ip", "link", "set", there, "up"]]
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        yield here, there, namespace
    finally:  # deleting the namespace deletes its end, and so the pair
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", here], capture_output=True)


@pytest.fixture(scope="session")
def captures(data_dir) -> dict[str, Path]:
    """The two IoT-23 captures: benign Philips Hue traffic, and a Mirai bot's IRC C&C."""
    root = data_dir / "iot-23-pcap"
    return {"honeypot": next((root / "CTU-Honeypot-Capture-4-1").glob("*.pcap")),
            "mirai-irc": next((root / "CTU-IoT-Malware-Capture-34-1/other-pcap").glob("*.pcap"))}


@pytest.fixture(scope="session")
def learned_nsl_kdd(small_pipeline, data_dir, tmp_path_factory):
    """An autoencoder learned (five epochs: the tests are about the plumbing) on the benign rows
    of the pipeline's own training split, with its hybrid and anomaly-only bundles at a 5 %
    budget, thresholds set on the benign rows of the pipeline's validation split.
    {"hybrid", "anomaly": bundle paths, "validation": benign validation Records, ...}"""
    from edge_ids.edge_runtime import load_bundle
    from edge_ids.learn import fit_anomaly_model, write_learned_bundle
    from edge_ids.train.datasets import nsl_kdd
    from edge_ids.train.fit import split_validation

    out = tmp_path_factory.mktemp("learned")
    train = nsl_kdd.load("KDDTrain+_20Percent", data_dir)
    fit_rows, val_rows = split_validation(len(train.y), train.y, 0.1, 0)
    fit = train.records.take(fit_rows[train.y[fit_rows] == 0])
    val = train.records.take(val_rows[train.y[val_rows] == 0])
    classifier = load_bundle(small_pipeline[0] / "bundle")
    learned = fit_anomaly_model(fit, nsl_kdd.SCHEMA, seed=0, epochs=5,
                                raw=classifier.spec["raw"], echo=lambda _: None)
    results = {kind: write_learned_bundle(learned, val, out / kind, max_fpr=0.05,
                                          classifier=classifier if kind == "hybrid" else None,
                                          dataset="nsl-kdd", echo=lambda _: None)
               for kind in ("hybrid", "anomaly")}
    for path in [out, *out.rglob("*")]:  # readable by the daemon when a test runs it as nobody
        path.chmod(0o755 if path.is_dir() else 0o644)
    return {"hybrid": out / "hybrid", "anomaly": out / "anomaly", "validation": val,
            "learned": learned, "results": results, "classifier": classifier}


@pytest.fixture
def hybrid_copy(learned_nsl_kdd, tmp_path) -> Path:
    """A private copy of the hybrid bundle that a test may damage."""
    return Path(shutil.copytree(learned_nsl_kdd["hybrid"], tmp_path / "hybrid"))


@pytest.fixture(scope="session")
def smart_home(data_dir, tmp_path_factory) -> dict:
    """The four smart-home devices as one site, cut after four days (the incidents
    benchmark's captures: benchmarks/harness/site_scenarios.py), and one injected infection and a
    few joins made the same way. Needs wireshark-common and tcpreplay."""
    from edge_ids.benchmarks.harness import site_scenarios as scenarios

    missing = scenarios.missing_tools()
    if missing:
        pytest.skip(missing)
    work = tmp_path_factory.mktemp("smart-home")
    site = scenarios.site(data_dir, work)
    return {"work": work, "site": site, "devices": scenarios.devices(data_dir)}


@pytest.fixture(scope="session")
def learned_site(smart_home, tmp_path_factory) -> dict:
    """`edge-ids learn --pcap` on the site's first four days (thirty epochs: the tests are
    about the plumbing), in a folder others may read."""
    from click.testing import CliRunner

    from edge_ids.cli import main

    out = Path(tempfile.mkdtemp(prefix="edge-ids-site-"))
    result = CliRunner().invoke(main, ["learn", "--pcap", str(smart_home["site"]["learn"]),
                                       "--out", str(out), "--epochs", "30"])
    assert result.exit_code == 0, result.output
    for path in [out, *out.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield {"out": out, "bundle": out / "bundle", "output": result.output}
    shutil.rmtree(out)
