"""The protocol audit: `reproduce --protocol` (official, merged-resplit, test-selected) in quick
form on the real NSL-KDD files. The other protocols write only under the audit folder, say in
every title that they are not the official split, and never overwrite official results."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edge_ids.cli import main
from edge_ids.train.protocols import MERGED_TEST, PROTOCOLS, apply_protocol, check_protocol
from edge_ids.train.reproduce import RESULTS_DIR, default_out, reproduce

DNN = ["DNN (CE)"]


@pytest.fixture(scope="module")
def audit_runs(data_dir, tmp_path_factory):
    """One quick DNN (CE) run per protocol, laid out as the CLI lays them out in the
    repository's results, in a scratch tree (never the committed results): {protocol: results},
    and that tree's root."""
    root = tmp_path_factory.mktemp("audit")
    results = root / "benchmarks" / "results"
    runs = {p: reproduce("khanam2022", results / default_out("khanam2022", p).relative_to(
                         RESULTS_DIR), data_dir=data_dir, seeds=(0,), quick=True, protocol=p,
                         methods=DNN, echo=lambda _: None) for p in PROTOCOLS}
    return runs, root


def test_merged_resplit_pools_and_splits_stratified(data_dir):
    from edge_ids.train.datasets import load_dataset

    data = load_dataset("nsl-kdd", data_dir, train_set="KDDTrain+_20Percent")
    merged = apply_protocol(data, "merged-resplit")
    train, test = merged.train, merged.tests[MERGED_TEST]
    assert list(merged.tests) == [MERGED_TEST]
    assert len(train.y) + len(test.y) == len(data.train.y) + len(data.tests["KDDTest+"].y)
    assert len(test.y) == pytest.approx(0.2 * (len(train.y) + len(test.y)), abs=5)
    pooled = np.bincount(np.concatenate([train.y, test.y]), minlength=5)
    assert np.allclose(np.bincount(test.y, minlength=5), 0.2 * pooled, atol=1)
    # attack types that exist only in the test file now reach training
    assert {"mscan", "apache2", "snmpguess"} <= set(train.labels)
    assert "NOT the official split" in merged.notes or "Not the official split" in merged.notes


def test_unknown_protocol_and_paper_are_refused_with_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="choose from official, merged-resplit, test-selected"):
        check_protocol("cross-validated")
    with pytest.raises(ValueError, match="already a stratified split"):
        reproduce("dina2023", tmp_path / "x", protocol="merged-resplit")
    with pytest.raises(ValueError, match="choose from khanam2022, dina2023"):
        reproduce("smith2024", tmp_path / "y")
    runner = CliRunner()
    result = runner.invoke(main, ["reproduce", "khanam2022", "--protocol", "peeking"])
    assert result.exit_code == 2
    assert all(p in result.output for p in PROTOCOLS)
    result = runner.invoke(main, ["reproduce", "smith2024"])
    assert result.exit_code == 2 and "khanam2022" in result.output and "dina2023" in result.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_audit_never_overwrites_official_results(tmp_path, monkeypatch):
    official = tmp_path / "mine"
    official.mkdir()
    (official / "results.json").write_text('{"protocol": "official", "runs": {}}')
    for protocol in ("merged-resplit", "test-selected"):
        with pytest.raises(ValueError, match="must not overwrite"):
            reproduce("khanam2022", official, protocol=protocol)
    with pytest.raises(ValueError, match="must not overwrite"):  # nor official an audit folder
        (tmp_path / "audit-run").mkdir()
        (tmp_path / "audit-run" / "results.json").write_text('{"protocol": "test-selected"}')
        reproduce("khanam2022", tmp_path / "audit-run")
    monkeypatch.chdir(tmp_path)  # the official folder itself, even before it has results
    with pytest.raises(ValueError, match="official results folder"):
        reproduce("khanam2022", default_out("khanam2022"), protocol="test-selected")
    assert (official / "results.json").read_text() == '{"protocol": "official", "runs": {}}'
    assert not Path("benchmarks/results/khanam2022").exists()


def test_each_protocol_writes_its_own_folder_and_says_so(audit_runs):
    runs, root = audit_runs
    assert (root / "benchmarks/results/khanam2022/results.json").is_file()
    for protocol in ("merged-resplit", "test-selected"):
        folder = root / f"benchmarks/results/audit/khanam2022-{protocol}"
        saved = json.loads((folder / "results.json").read_text())
        assert saved["protocol"] == protocol
        assert all(r["protocol"] == protocol for rs in saved["runs"].values() for r in rs)
        titles = [line for line in (folder / "results.md").read_text().splitlines()
                  if line.startswith("#") and ("KDDTest" in line or "Khanam" in line
                                               or "merged" in line)]
        assert titles and all("not the official" in t.lower() for t in titles), titles
    assert runs["merged-resplit"]["tests"] == [MERGED_TEST]
    assert runs["merged-resplit"]["published"] == {}


def test_test_selected_keeps_the_best_test_epoch_of_the_official_trajectory(audit_runs):
    runs, _ = audit_runs
    official = runs["official"]["runs"]["DNN (CE)"][0]
    selected = runs["test-selected"]["runs"]["DNN (CE)"][0]
    curve = selected["test_accuracy_by_epoch"]["KDDTest+"]
    assert len(curve) == selected["history"]["epochs_run"] > 1
    assert selected["history"]["weights_from_epoch"] == int(np.argmax(curve)) + 1
    assert selected["metrics"]["KDDTest+"]["accuracy"] == pytest.approx(max(curve), abs=1e-12)
    # deterministic training: the same trajectory as the official run, whose last epoch it is
    assert official["metrics"]["KDDTest+"]["accuracy"] == pytest.approx(curve[-1], abs=1e-12)
    assert selected["metrics"]["KDDTest+"]["accuracy"] >= official["metrics"]["KDDTest+"][
        "accuracy"]


def test_audit_summary_tags_every_row_with_its_protocol(audit_runs):
    _, root = audit_runs
    audit = json.loads((root / "benchmarks/results/audit/results.json").read_text())
    assert {r["protocol"] for r in audit["rows"]} == set(PROTOCOLS)
    assert all(r["paper"] == "khanam2022" and r["method"] == "DNN (CE)" for r in audit["rows"])
    assert all("weighted_f1" in r and "macro_f1" in r for r in audit["rows"])
    markdown = (root / "benchmarks/results/audit/results.md").read_text()
    assert "### merged-resplit: NOT the official split" in markdown
    assert "### test-selected: NOT the official protocol" in markdown
    assert "is a quick run" in markdown
    seen = audit["seen_attack_types"]["khanam2022"]["KDDTest+"]
    assert seen["Normal"] == 1.0 and 0.3 < seen["Probe"] < 0.6  # mscan, saint, ... unseen
    assert "Share of each test set's rows whose attack name occurs" in markdown
