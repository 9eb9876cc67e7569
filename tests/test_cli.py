"""The `edge-ids` command as a user types it."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

import click
from edge_ids import __version__
from edge_ids.cli import HELP_WIDTH, main
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
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help, f"{name} {param.opts[-1]} has no description"
                assert param.opts[-1] in result.output


def test_help_is_one_width_and_examples_do_not_run_into_their_text():
    texts = {"": run("--help").output} | {n: run(n, "--help").output for n in main.commands}
    for name, text in texts.items():
        long = [line for line in text.splitlines() if len(line) > HELP_WIDTH]
        assert not long, (name, long)
    lines = texts[""].splitlines()
    examples = [i for i, line in enumerate(lines) if line.startswith("    edge-ids ")]
    assert len(examples) == 14  # each example on its own line, its text indented below it
    assert all(lines[i + 1].startswith("        ") and lines[i + 1].strip() for i in examples)


def test_shared_options_are_one_definition():
    def option(command, name):
        return next(p for p in main.commands[command].params if p.opts[-1] == name)
    for name in ("--val-fraction", "--alpha", "--seed", "--data-dir"):
        a, b = option("pipeline", name), option("train", name)
        assert (a.default, a.help, a.type.to_info_dict()) == (b.default, b.help,
                                                              b.type.to_info_dict()), name
    assert option("compress", "--data-dir").help == option("bench", "--data-dir").help
    assert option("unit", "--device").help == option("deploy", "--device").help


def test_pipeline_help_lists_every_file_it_writes(small_pipeline):
    text = run("pipeline", "--help").output
    written = [p.name for p in small_pipeline[0].iterdir()]
    assert written and all(name in text for name in written), written


def test_devices_has_a_header_row():
    lines = run("devices").output.splitlines()
    assert lines[0].split()[:4] == ["PROFILE", "ARCH", "CPU", "CORES"]
    assert {line.split()[0] for line in lines[1:]} >= {"pi4", "pi5", "x86_64"}


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
    assert "named" not in result.stderr  # all four were named


def test_classify_says_how_many_rejects_it_did_not_name(small_pipeline, kdd_test_lines):
    lines = kdd_test_lines[:20] + [b"1,2,3\n"] * 15 + kdd_test_lines[20:40]
    bundle = small_pipeline[0] / "bundle"
    default = run("classify", "--bundle", bundle, input=b"".join(lines))
    assert default.exit_code == 3 and len(default.stdout.splitlines()) == 40
    assert default.stderr.count("rejected (wrong_field_count)") == 10
    assert "rejected 15 records" in default.stderr
    assert "named 10 of them above; --log-rejects 15 names them all" in default.stderr
    every = run("classify", "--bundle", bundle, "--log-rejects", 15, input=b"".join(lines))
    assert every.stderr.count("rejected (wrong_field_count)") == 15
    assert "named" not in every.stderr
    one = run("classify", "--bundle", bundle, input=b"".join(lines[:21]))
    assert "rejected 1 record: wrong_field_count 1" in one.stderr


def test_a_truncated_gz_keeps_every_record_before_the_damage(small_pipeline, kdd_test_lines,
                                                             tmp_path):
    """classify and run --input file: both write every record the damaged file still holds
    (counted here by zlib, independently), then say what is wrong and exit 5."""
    bundle = small_pipeline[0] / "bundle"
    data = gzip.compress(b"".join(kdd_test_lines[:3000]))
    path = tmp_path / "cut.gz"
    path.write_bytes(data[:len(data) // 2])
    readable = zlib.decompressobj(wbits=31).decompress(path.read_bytes())
    whole = readable.count(b"\n")
    assert 100 < whole < 3000
    classified = run("classify", "--bundle", bundle, path)
    assert classified.exit_code == 5
    assert [json.loads(l)["record"] for l in classified.stdout.splitlines()] == list(
        range(1, whole + 1))
    assert "is truncated or corrupt" in classified.stderr
    assert f"the {whole:,} records before it were classified" in classified.stderr
    alerts = tmp_path / "alerts.json"
    daemon = subprocess.run([str(Path(sys.executable).with_name("edge-ids")), "run",
                             "--bundle", str(bundle), "--input", f"file:{path}", "--alerts",
                             str(alerts), "--emit", "all"], capture_output=True, text=True,
                            timeout=120)
    assert daemon.returncode == 5, daemon.stderr
    flows = [json.loads(l)["flow_id"] for l in alerts.read_text().splitlines()]
    assert flows[:whole] == list(range(1, whole + 1))  # a half line after them is rejected
    assert "truncated or corrupt" in daemon.stderr


def test_classify_refuses_a_tampered_bundle(bundle_copy, kdd_test_lines):
    (bundle_copy / "model.tflite").write_bytes(b"\0" * 100)
    result = run("classify", "--bundle", bundle_copy, input=kdd_test_lines[0])
    assert result.exit_code == 5
    assert "modified or corrupted" in result.stderr and "Traceback" not in result.output


def test_pipeline_reports_missing_data_without_a_traceback(tmp_path):
    result = run("pipeline", "--data-dir", tmp_path, "--out", tmp_path / "out")
    assert result.exit_code == 5
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
