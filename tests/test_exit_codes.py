"""One exit-code table for every command (edge_ids/exit_codes.py): each command's failure modes
run as a user makes them, each checked against the table, its message and, where a command
loads TensorFlow, that the mistake is reported before TensorFlow is imported."""
from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_ids import exit_codes as codes
from edge_ids.cli import main
from conftest import DATA_DIR, NSL_KDD, REPO

EDGE_IDS = str(Path(sys.executable).with_name("edge-ids"))
OK, FAILED, USAGE, REJECTED, BAD_INPUT = (codes.OK, codes.FAILED, codes.USAGE, codes.REJECTED,
                                          codes.BAD_INPUT)


def run(*args, input=None):
    return CliRunner().invoke(main, list(map(str, args)), input=input)


@pytest.fixture(scope="module")
def files(small_pipeline, kdd_test_lines, tmp_path_factory) -> dict[str, Path]:
    """A good bundle, a tampered one, records good / with a bad line / truncated, data folders."""
    tmp = tmp_path_factory.mktemp("mistakes")
    bundle = small_pipeline[0] / "bundle"
    tampered = Path(shutil.copytree(bundle, tmp / "tampered"))
    model = bytearray((tampered / "model.tflite").read_bytes())
    model[-1] ^= 1  # the last byte: the hashes differ in one hex digit only
    (tampered / "model.tflite").write_bytes(bytes(model))
    good = b"".join(kdd_test_lines[:300])
    (tmp / "good.csv").write_bytes(good)
    (tmp / "bad.csv").write_bytes(good + b"1,2,3\n")
    (tmp / "truncated.gz").write_bytes(gzip.compress(good)[:4000])
    (tmp / "empty-data").mkdir()
    (tmp / "only-test" / "nsl-kdd").mkdir(parents=True)
    shutil.copy(NSL_KDD / "KDDTest+.txt.gz", tmp / "only-test" / "nsl-kdd")
    (tmp / "model-folder").mkdir()
    (tmp / "no-keys").write_text("# an allowed-signers file without a key\n")
    (tmp / "hosts.ini").write_text("sensor-1 ansible_host=127.0.0.1 ansible_port=1\n")
    capture = DATA_DIR / "iot-23-pcap" / "CTU-IoT-Malware-Capture-3-1" / "test.pcap"
    (tmp / "cut.pcap").write_bytes(capture.read_bytes()[:300_000])  # in the middle of a packet
    for name, content in (("state", gzip.compress(json.dumps(
            {"schema": 1, "clock": None, "devices": [], "recent": [], "decisions": []}).encode())),
                          ("damaged-state", b"not gzip"), ("empty-state", None)):
        (tmp / name).mkdir()
        for sub in ("requests", "answers"):
            (tmp / name / sub).mkdir()
        if content is not None:
            (tmp / name / "state.json.gz").write_bytes(content)
    return {"bundle": bundle, "tampered": tampered, "tmp": tmp, "model": small_pipeline[0],
            "tflite": bundle / "model.tflite"}


# (command line with {placeholders}, exit status, words the message must hold)
CASES = [
    ("pipeline --bogus", USAGE, "No such option"),
    ("pipeline --data-dir {tmp}/nowhere --out {tmp}/o", USAGE, "does not exist"),
    ("pipeline --data-dir {tmp}/empty-data --out {tmp}/o", BAD_INPUT, "KDDTrain+.txt not found"),
    ("pipeline --data-dir {tmp}/only-test --out {tmp}/o --alpha 1,2", USAGE, "one per class"),
    ("train --dataset wustl-ehms --model fnn --out {tmp}/o --data-dir {tmp}/empty-data",
     BAD_INPUT, "wustl-ehms-2020_with_attacks_categories.csv not found"),
    ("train --dataset nsl-kdd --model fnn --out {tmp}/o --loss focal --alpha 1,2,3",
     USAGE, "Normal,DoS,Probe,R2L,U2R"),
    ("reproduce dina2023 --data-dir {tmp}/empty-data", BAD_INPUT, "not found"),
    ("reproduce dina2023 --dataset nsl-kdd --data-dir {tmp}/empty-data", USAGE, "wustl-ehms"),
    ("compress --model {tmp}/model-folder --out {tmp}/c", BAD_INPUT, "missing model.keras"),
    ("compress --model {model} --out {tmp}/c --data-dir {tmp}/empty-data", BAD_INPUT,
     "not found"),
    ("compress --model {model} --out {tmp}/c --gate-set KDDTest-99", USAGE, "KDDTest-21"),
    ("classify --bundle {tmp}/nowhere {tmp}/good.csv", USAGE, "does not exist"),
    ("classify --bundle {bundle} {tmp}/nowhere.csv", USAGE, "does not exist"),
    ("classify --bundle {tampered} {tmp}/good.csv", BAD_INPUT, "Copy the bundle again"),
    ("classify --bundle {tflite} {tmp}/good.csv", BAD_INPUT, "A bundle is a folder"),
    ("classify --bundle {bundle} {tmp}/bad.csv", REJECTED, "rejected 1 record:"),
    ("classify --bundle {bundle} {tmp}/truncated.gz", BAD_INPUT, "truncated or corrupt"),
    ("classify --bundle {bundle} {tmp}/good.csv", OK, "classified 300 records"),
    ("run --bundle {tmp}/nowhere --input file:{tmp}/good.csv", USAGE, "does not exist"),
    ("run --bundle {bundle} --input file:{tmp}/nowhere.csv", USAGE, "no such file"),
    ("run --bundle {bundle} --input nowhere:x", USAGE, "unknown input"),
    ("run --bundle {bundle} --input - --metrics host:port", USAGE, "expected HOST:PORT"),
    ("run --bundle {tampered} --input file:{tmp}/good.csv", BAD_INPUT, "cannot start"),
    ("run --bundle {bundle} --input file:{tmp}/bad.csv --alerts /dev/null", REJECTED, ""),
    ("run --bundle {bundle} --input file:{tmp}/truncated.gz --alerts /dev/null", BAD_INPUT,
     "truncated or corrupt"),
    ("run --bundle {bundle} --input file:{tmp}/good.csv --alerts /dev/null", OK, ""),
    ("run --bundle {bundle} --input file:{tmp}/good.csv --alerts {tmp}/no/such/dir/a.json",
     FAILED, "cannot start"),
    ("run --bundle {bundle} --input file:{tmp}/good.csv --ui 0.0.0.0:9109", USAGE,
     "needs --ui-token-file FILE and TLS (--ui-cert FILE --ui-key FILE)"),
    ("run --bundle {bundle} --input file:{tmp}/good.csv --ui 127.0.0.1:0 --ui-cert "
     "{tmp}/good.csv --ui-key {tmp}/good.csv", BAD_INPUT, "not a usable certificate and key"),
    ("capture --bundle {bundle}", USAGE, "give --interface IF or --pcap FILE"),
    ("capture --bundle {bundle} --print-config", BAD_INPUT, "Argus"),
    ("capture --pcap {tmp}/good.csv --record {tmp}/r.csv", BAD_INPUT,
     "is not a packet capture"),
    ("capture --pcap {tmp}/cut.pcap --record {tmp}/r2.csv", BAD_INPUT,
     "flows before it were recorded to"),
    ("learn --out {tmp}/l", USAGE, "give the benign traffic"),
    ("learn --pcap {tmp}/cut.pcap --out {tmp}/l --max-incidents-per-week inf", USAGE,
     "inf is not a budget"),
    ("learn --flows {tmp}/good.csv --classifier {tampered} --out {tmp}/l", BAD_INPUT,
     "modified or corrupted"),
    ("unit --device pi9", USAGE, "known devices: generic-aarch64"),
    ("unit --metrics nonsense", USAGE, "expected HOST:PORT"),
    ("unit --ui 0.0.0.0:9109 --ui-token-file /etc/edge-ids/ui-token", USAGE,
     "give --ui-cert FILE --ui-key FILE"),
    ("devices --bogus", USAGE, "No such option"),
    ("deploy --bundle {bundle}", USAGE, "give --host"),
    ("deploy --device pi9 --bundle {bundle} --dry-run", USAGE, "known devices"),
    ("deploy --bundle {bundle} --dry-run --python 2.7", USAGE, "choose one of"),
    ("deploy --bundle {tampered} --host x --dry-run", BAD_INPUT, "modified or corrupted"),
    ("deploy --bundle {bundle} --host x --dry-run --wheelhouse {tmp}/empty-data", BAD_INPUT,
     "no edge_ids-"),
    ("deploy --bundle {bundle} --host x --ui 0.0.0.0:9109 --ui-token-file "
     "/etc/edge-ids/ui-token", USAGE, "Nothing was installed"),
    ("deploy --bundle {bundle} --host nobody@127.0.0.1 --ssh-option Port=1", FAILED,
     "cannot reach"),
    ("status --host nobody@127.0.0.1 --ssh-option Port=1", FAILED, "cannot reach"),
    ("rollback --host nobody@127.0.0.1 --ssh-option Port=1", FAILED, "cannot reach"),
    ("sign --key {tmp}/nowhere {bundle}", USAGE, "does not exist"),
    ("sign --key {tflite} {tampered}", BAD_INPUT, "the bundle itself is refused"),
    ("sign --key {tflite} {bundle}", FAILED, "ssh-keygen could not sign"),  # not a key
    ("verify {tampered}", BAD_INPUT, "modified or corrupted"),
    ("verify --require-signature {bundle}", USAGE, "needs --allowed-signers"),
    ("verify {bundle}", OK, "not signed"),
    ("rotate-keys --key {tmp}/nowhere {tmp}/no-keys", USAGE, "does not exist"),
    ("rotate-keys --key {tflite} {tmp}/no-keys", BAD_INPUT, "lists no key"),
    ("rotate-keys --key {tflite} {tmp}/good.csv", FAILED, "ssh-keygen could not sign"),
    ("fleet deploy -i {tmp}/nowhere.ini --bundle {bundle}", USAGE, "does not exist"),
    ("fleet deploy -i {tmp}/hosts.ini --bundle {bundle} --batch 0%", USAGE, "a percentage"),
    ("fleet deploy -i {tmp}/hosts.ini --bundle {bundle} --ui-cert page.crt", USAGE,
     "--ui-cert"),
    ("fleet deploy -i {tmp}/hosts.ini --bundle {tampered}", BAD_INPUT, "modified or corrupted"),
    ("fleet status -i {tmp}/hosts.ini --quiet", FAILED, "sensor-1  - (unreachable"),
    ("fleet targets -i {tmp}/nowhere.ini", USAGE, "does not exist"),
    ("site list --state-dir {tmp}/nowhere", USAGE, "does not exist"),
    ("site list --state-dir {tmp}/empty-state", USAGE, "holds no state yet"),
    ("site list --state-dir {tmp}/damaged-state", BAD_INPUT, "cannot be read"),
    ("site list --state-dir {tmp}/state", OK, "0 devices"),
    ("site mute 02:00:00:00:00:01 --for 1d --state-dir {tmp}/state", USAGE, "no device"),
    ("site mute 02:00:00:00:00:01 --state-dir {tmp}/state", USAGE, "Missing option '--for'"),
    ("site accept 3 --state-dir {tmp}/state", USAGE, "no incident 3"),
    ("site mute 02:00:00:00:00:01 --for 9999999999999d --state-dir {tmp}/state", USAGE,
     "at most a year"),
    ("site undo 1 --state-dir {tmp}/state", USAGE, "no decision 1"),
    ("bench --bundle {tampered}", BAD_INPUT, "modified or corrupted"),
    ("bench --bundle {bundle} --device pi9", USAGE, "known devices"),
    ("bench --bundle {bundle} --data-dir {tmp}/empty-data", BAD_INPUT, "KDDTest+.txt not found"),
    ("bench --bundle {bundle} --data-dir {tmp}/only-test --test-set KDDTest-99", USAGE,
     "KDDTest+, KDDTest-21"),
    ("bench --bundle {bundle} --data-dir {tmp}/only-test --test-set KDDTest-21", BAD_INPUT,
     "KDDTest-21.txt not found"),
]


@pytest.mark.parametrize("line, code, words", CASES, ids=[c[0].split(" {")[0] + f" -> {c[1]}"
                                                           for c in CASES])
def test_every_command_exits_as_the_table_says(files, line, code, words):
    args = line.format(**files).split()
    if args[0] in ("run", "capture"):  # the daemon installs signal handlers and logging
        done = subprocess.run([EDGE_IDS, *args], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=120)
        exit_code, output = done.returncode, done.stdout + done.stderr
    else:
        result = run(*args, input=b"")
        exit_code, output = result.exit_code, result.output
    assert exit_code == code, output
    assert words in output
    assert "Traceback" not in output and "Aborted!" not in output


def test_every_command_is_in_the_table_and_says_its_codes_in_its_help():
    tested = {c[0].split()[0] for c in CASES}
    assert tested == set(main.commands), "a command without failure cases here"
    top = run("--help").output
    for code, meaning in codes.TABLE.items():
        assert re.search(rf"^\s+{code}  {re.escape(meaning.split()[0])}", top, re.M)
    for name in main.commands:
        help_text = " ".join(run(name, "--help").output.split())
        assert "Exit status: 0 done, 1 failed, 2 usage error" in help_text, name
        assert "5 bad input file" in help_text, name


def test_the_documented_table_is_the_code_table():
    section = (REPO / "docs" / "exit-status.md").read_text()
    rows = dict(re.findall(r"^\| (\d) \| ([^|]+) \|", section, re.M))
    assert {int(k) for k in rows} == set(codes.TABLE)
    for code, meaning in codes.TABLE.items():
        assert rows[str(code)].strip().rstrip(".") == meaning


@pytest.mark.parametrize("line", [
    "pipeline --data-dir {empty} --out {out}",
    "train --dataset nsl-kdd --model dnn --data-dir {empty} --out {out}",
    "reproduce khanam2022 --data-dir {empty} --out {out}",
    "compress --model {model} --data-dir {empty} --out {out}",
    "bench --bundle {bundle} --data-dir {empty} --out {out}",
])
def test_a_wrong_data_folder_is_reported_before_tensorflow_loads(line, small_pipeline, tmp_path):
    (tmp_path / "empty").mkdir()
    args = line.format(empty=tmp_path / "empty", out=tmp_path / "out", model=small_pipeline[0],
                       bundle=small_pipeline[0] / "bundle").split()
    code = ("import json, sys\nfrom edge_ids.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'torch', 'sklearn'))\n"
            "print(json.dumps([code, heavy]))")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120)
    exit_code, heavy = json.loads(done.stdout.splitlines()[-1])
    assert exit_code == BAD_INPUT and "not found" in done.stderr, done.stderr
    assert heavy == []


def test_the_output_is_ours_alone(small_pipeline, kdd_test_lines, data_dir, tmp_path):
    """No LiteRT, TensorFlow or absl lines among ours: classify and run (the device side),
    and train, which imports TensorFlow and converts to int8 (the host side)."""
    bundle = str(small_pipeline[0] / "bundle")
    records = tmp_path / "r.csv"
    records.write_bytes(b"".join(kdd_test_lines[:200]))
    classify = subprocess.run([EDGE_IDS, "classify", "--bundle", bundle, str(records)],
                              capture_output=True, text=True, timeout=120)
    assert classify.returncode == 0
    assert re.fullmatch(r"classified 200 records \([^)]*\)\n", classify.stderr), classify.stderr
    run_ = subprocess.run([EDGE_IDS, "run", "--bundle", bundle, "--input", f"file:{records}",
                           "--alerts", "/dev/null"], capture_output=True, text=True, timeout=120)
    assert run_.returncode == 0 and run_.stderr
    assert all(line.startswith("edge-ids: ") for line in run_.stderr.splitlines()), run_.stderr
    train = subprocess.run([EDGE_IDS, "train", "--dataset", "wustl-ehms", "--model", "fnn",
                            "--epochs", "1", "--data-dir", str(data_dir), "--out",
                            str(tmp_path / "t")], capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr
    assert train.stderr == ""  # progress and results go to stdout, and nothing else is said
    assert train.stdout.startswith("wustl-ehms: ") and "written: " in train.stdout
