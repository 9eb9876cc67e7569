"""The `edge-ids` command as a user types it."""
from __future__ import annotations

import gzip
import json

import pytest
from click.testing import CliRunner

from edge_ids import __version__
from edge_ids.cli import main
from edge_ids.edge_runtime import Classifier, load_bundle
from edge_ids.train.datasets import nsl_kdd
from conftest import NSL_KDD


def run(*args, input=None):
    return CliRunner().invoke(main, list(map(str, args)), input=input)


def test_version_and_help_on_every_command():
    assert run("--version").output.strip() == f"edge-ids, version {__version__}"
    top = run("--help")
    assert top.exit_code == 0
    for name, command in main.commands.items():
        assert name in top.output
        result = run(name, "--help")
        assert result.exit_code == 0 and "Usage: " in result.output
        assert command.help.split("\n")[0] in result.output
        for param in command.params:
            if param.help is not None:
                assert param.opts[-1] in result.output


def test_classify_matches_the_host_int8_evaluation(small_pipeline, data_dir):
    bundle_dir = small_pipeline[0] / "bundle"
    result = run("classify", "--bundle", bundle_dir, NSL_KDD / "KDDTest+.txt.gz")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(l) for l in result.stdout.splitlines()]
    test = nsl_kdd.load("KDDTest+", data_dir)
    host = Classifier(load_bundle(bundle_dir)).classify(test.records)
    names = list(nsl_kdd.CLASSES)
    assert [l["record"] for l in lines] == list(range(1, 22_545))
    assert [l["class"] for l in lines] == [names[c] for c in host.classes]
    assert all(0 < l["score"] <= 1 for l in lines)
    assert "classified 22,544 records" in result.stderr


def test_classify_stdin_with_41_columns(small_pipeline, kdd_test_lines):
    bundle_dir = small_pipeline[0] / "bundle"
    lines = kdd_test_lines[:300]
    short = b"".join(b",".join(l.split(b",")[:41]) + b"\n" for l in lines)
    a = run("classify", "--bundle", bundle_dir, "-", input=b"".join(lines))
    b = run("classify", "--bundle", bundle_dir, input=short)
    assert a.exit_code == b.exit_code == 0
    assert a.stdout == b.stdout and len(a.stdout.splitlines()) == 300


def test_classify_skips_bad_records_and_keeps_the_rest(small_pipeline, kdd_test_lines, tmp_path):
    good = kdd_test_lines[:6]
    bad_value = good[2].split(b",")
    bad_value[4] = b"NaN"
    lines = [good[0], good[1], b",".join(bad_value), b"\xff\xfe\n", good[3], b"\n", good[4],
             b"0,tcp\n", good[5]]
    path = tmp_path / "mixed.csv.gz"
    path.write_bytes(gzip.compress(b"".join(lines)))
    result = run("classify", "--bundle", small_pipeline[0] / "bundle", path)
    assert result.exit_code == 3
    assert [json.loads(l)["record"] for l in result.stdout.splitlines()] == [1, 2, 5, 7, 9]
    assert "record 3 rejected (not_finite): column 5 (src_bytes)" in result.stderr
    assert "record 4 rejected (invalid_utf8)" in result.stderr
    assert "record 8 rejected (wrong_field_count): expected 41 to 43 fields, got 2" in result.stderr
    assert "rejected 4 records" in result.stderr


def test_classify_refuses_a_tampered_bundle(bundle_copy, kdd_test_lines):
    (bundle_copy / "model.tflite").write_bytes(b"\0" * 100)
    result = run("classify", "--bundle", bundle_copy, input=kdd_test_lines[0])
    assert result.exit_code == 1
    assert "modified or corrupted" in result.stderr and "Traceback" not in result.output


def test_pipeline_reports_missing_data_without_a_traceback(tmp_path):
    result = run("pipeline", "--data-dir", tmp_path, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "Error: KDDTrain+.txt not found" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--alpha", "1,2"], "give one positive number or 5"),
    (["--hidden", "50,x"], "expected comma-separated integers"),
    (["--zero-scope", "some"], "'some' is not one of"),
])
def test_pipeline_rejects_bad_options(tmp_path, args, message):
    result = run("pipeline", "--out", tmp_path, *args)
    assert result.exit_code == 2 and message in result.stderr


def test_research_choices_match_the_registries():
    from edge_ids.cli_research import BUDGET_NAMES, LOSS_NAMES, MODEL_NAMES
    from edge_ids.train.losses import LOSSES
    from edge_ids.train.models import MODELS

    assert MODEL_NAMES == tuple(MODELS) and LOSS_NAMES == LOSSES
    from edge_ids.train.models import BUDGETS
    assert BUDGET_NAMES == tuple(BUDGETS)
