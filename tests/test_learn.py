"""`edge-ids learn` and `capture --record`: a site's benign flows -> an anomaly-only or hybrid
bundle, through the real argus | ra path; and what it refuses, writing nothing."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from edge_ids.cli import main
from edge_ids.edge_runtime import Detector, load_bundle
from edge_ids.edge_runtime.ingest.recorder import FlowRecorder
from edge_ids.edge_runtime.ingest.records import RawSchema, parse_lines
from edge_ids.flows import FlowError, default_flow_schema, to_layout

HAS_ARGUS = bool(shutil.which("argus", path="/usr/sbin:/usr/bin") and shutil.which("ra"))
needs_argus = pytest.mark.skipif(not HAS_ARGUS, reason="needs Debian's argus-server and "
                                                       "argus-client (apt-get install ...)")


def run(*args):
    return CliRunner().invoke(main, ["learn", *map(str, args)])


@pytest.mark.parametrize("budget", ["0", "0.6", "-0.01"])
def test_a_budget_outside_0_to_half_is_refused(budget, tmp_path):
    flows = tmp_path / "flows.csv"
    flows.write_text("x\n")
    result = run("--flows", flows, "--out", tmp_path / "out", "--max-fpr", budget)
    assert result.exit_code == 2 and "--max-fpr" in result.output and "0<x<=0.5" in result.output
    assert not (tmp_path / "out").exists()


def test_learn_needs_some_traffic(tmp_path):
    result = run("--out", tmp_path / "out")
    assert result.exit_code == 2 and "give the benign traffic: --pcap FILE and/or --flows FILE" \
        in result.output


def _flow_lines(n: int) -> list[str]:
    """n plausible rows in the default flow layout (ignored columns empty)."""
    schema = default_flow_schema()
    rows = []
    for i in range(n):
        fields = []
        for name, kind in zip(schema.names, schema.types):
            fields.append("" if kind == "ignored" else " e        " if kind == "categorical"
                          else str((i * 7 + len(name)) % 97 + 0.5))
        rows.append(",".join(fields))
    return rows


@pytest.mark.parametrize("flows, message", [
    (0, "no benign flows were read from"),
    (500, "500 benign flows read; learn needs at least 2,500 flows at --max-fpr 0.01 and "
          "--val-fraction 0.2"),
    (2600, "2,600 of the 2,600 flows from"),  # no StartTime: when did they happen?
])
def test_too_little_traffic_is_refused_and_nothing_is_written(tmp_path, flows, message):
    path = tmp_path / "flows.csv"
    path.write_text("".join(line + "\n" for line in _flow_lines(flows)))
    out = tmp_path / "site"
    result = run("--flows", path, "--out", out, "--epochs", 2)
    assert result.exit_code == 5, result.output  # the exit table: a file given is unusable
    assert message in result.output and "Error" in result.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".learn-")]


def test_a_header_maps_columns_by_name_and_a_missing_one_is_named(tmp_path):
    schema = RawSchema.of(("a", "b", "c"), categorical=("b",), ignored=("c",))
    lines = [b"c,b,a,extra", b"9,tcp,1.5,x", b"8,udp,2.5", b"7,udp,3.5,y"]
    mapped, skipped = to_layout(lines, schema, tmp_path / "f.csv")
    assert mapped == [b"1.5,tcp,9", b"3.5,udp,7"] and skipped == 1
    assert to_layout([b"1,tcp,3"], schema, tmp_path / "f.csv") == ([b"1,tcp,3"], 0)
    with pytest.raises(FlowError, match="has no column a, which the model reads"):
        to_layout([b"b,c", b"tcp,1"], schema, tmp_path / "f.csv")


def test_the_recording_rotates_keeps_its_bound_and_starts_every_file_with_the_header(tmp_path):
    path = tmp_path / "flows.csv"
    recorder = FlowRecorder(path, ("x", "y"), max_bytes=2048, keep=2)
    for batch in range(200):  # about 11 KB: five rotations
        recorder.write([f"{batch},{i}".encode() for i in range(10)])
    recorder.close()
    files = [path, tmp_path / "flows.csv.1", tmp_path / "flows.csv.2"]
    assert sorted(tmp_path.iterdir()) == sorted(files)  # flows.csv.3 and older: deleted
    kept = []
    for f in reversed(files):  # oldest first
        lines = f.read_bytes().splitlines()
        assert lines[0] == b"x,y" and f.stat().st_size <= 2048 + 100
        kept += lines[1:]
    assert kept[-1] == b"199,9" and len(kept) == len(set(kept))
    numbers = [int(line.split(b",")[0]) * 10 + int(line.split(b",")[1]) for line in kept]
    assert numbers == list(range(numbers[0], 2000))  # the newest lines, none lost in between
    assert 2 * 2048 / 8 < len(numbers) < 3 * 2048 / 6  # about three files' worth


@needs_argus
def test_a_capture_without_flows_says_so_and_writes_nothing(tmp_path):
    empty = tmp_path / "empty.pcap"  # a valid pcap header (Ethernet), not one packet
    empty.write_bytes(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"))
    result = run("--pcap", empty, "--out", tmp_path / "site")
    assert result.exit_code == 5, result.output
    assert "0 flows (argus | ra)" in result.output
    assert "no benign flows were read from" in result.output and "Nothing was written" in \
        result.output
    assert not (tmp_path / "site").exists()


@needs_argus
def test_record_on_the_device_then_learn_on_the_host_then_capture(tmp_path, captures):
    """The workflow: capture --record (no bundle yet) -> learn --flows -> capture --bundle.
    The recorded flows are the ones learn --pcap reads from the same packets."""
    runner = CliRunner()
    recorded = runner.invoke(main, ["capture", "--pcap", str(captures["honeypot"]),
                                    "--record", str(tmp_path / "flows.csv"),
                                    "--record-max-mb", "1"])
    assert recorded.exit_code == 0, recorded.output
    files = sorted(tmp_path.glob("flows.csv*"))
    assert len(files) >= 2  # over 1 MB of flows: rotated
    from_flows = run(*sum((["--flows", f] for f in files), []), "--out", tmp_path / "site",
                     "--epochs", 3, "--max-fpr", 0.02)
    assert from_flows.exit_code == 0, from_flows.output
    from_pcap = run("--pcap", captures["honeypot"], "--out", tmp_path / "site-pcap",
                    "--epochs", 3, "--max-fpr", 0.02)
    assert from_pcap.exit_code == 0, from_pcap.output
    reports = [json.loads((tmp_path / d / "learn.json").read_text())
               for d in ("site", "site-pcap")]
    rows = [r["operating_point"]["validation_rows"] for r in reports]
    assert rows[0] == rows[1] > 1000  # the same flows (argus may add the open last one: ±1)
    bundle = load_bundle(tmp_path / "site" / "bundle")
    assert bundle.detector == "anomaly" and bundle.raw == default_flow_schema().to_spec()
    assert (tmp_path / "site" / "scores.png").stat().st_size > 5000
    alerts = tmp_path / "alerts.json"
    served = runner.invoke(main, ["capture", "--pcap", str(captures["mirai-irc"]), "--bundle",
                                  str(tmp_path / "site" / "bundle"), "--alerts", str(alerts)])
    assert served.exit_code == 0, served.output
    lines = [json.loads(line) for line in alerts.read_text().splitlines()]
    events = [e for e in lines if e["event_type"] == "alert"]
    assert len(events) > 1000  # the bot's C&C flows are not like the Hue bridge's traffic
    # and the bot is a device the Hue's learning period never saw: named once, in trouble
    # (never blind after a first incident: the bot goes quiet and comes back, incidents again)
    assert [e["event_type"] for e in lines].count("new_device") == 1
    incidents = [e for e in lines if e["event_type"] == "incident"]
    assert [e["incident"]["state"] for e in incidents].count("open") >= 1
    assert all(e["incident"]["new_device"] and e["src_ip"] == "192.168.1.195"
               for e in incidents)
    for e in events[:50]:
        assert e["ml"]["class"] == "Unknown" and e["alert"]["category"] == "Unknown"
        assert e["ml"]["anomaly_score"] > e["ml"]["anomaly_threshold"] == \
            bundle.anomaly.threshold and "score" not in e["ml"]
        assert e["dest_port"] == 6667


@needs_argus
def test_learn_with_a_classifier_makes_a_hybrid_in_its_layout(tmp_path, captures, net_bundle):
    result = run("--pcap", captures["honeypot"], "--classifier", net_bundle, "--out",
                 tmp_path / "hybrid", "--epochs", 3)
    assert result.exit_code == 0, result.output
    bundle = load_bundle(tmp_path / "hybrid" / "bundle")
    classifier = load_bundle(net_bundle)
    assert bundle.detector == "hybrid" and bundle.raw == classifier.raw
    assert bundle.model == classifier.model and bundle.spec == classifier.spec
    point = bundle.manifest["anomaly"]
    assert point["validation_fpr"] <= point["max_fpr"] == 0.01
    # the WUSTL classifier stays within its half of the budget on the Hue's held-out flows
    # (its threshold made stricter when its argmax alone would flag more)
    assert bundle.manifest["classifier"]["validation_fpr"] <= 0.005
    lines = (tmp_path / "hybrid").joinpath("learn.json").read_text()
    assert json.loads(lines)["operating_point"]["normal_threshold"] == \
        bundle.manifest["classifier"]["normal_threshold"] <= 1.0
    again = run("--pcap", captures["honeypot"], "--classifier", net_bundle, "--out",
                tmp_path / "hybrid2", "--epochs", 3)
    assert again.exit_code == 0
    assert load_bundle(tmp_path / "hybrid2" / "bundle").model_sha256 == bundle.model_sha256


def test_a_bundle_without_a_classifier_is_not_a_classifier(tmp_path, learned_nsl_kdd):
    flows = tmp_path / "flows.csv"
    flows.write_text("1\n")
    result = run("--flows", flows, "--classifier", learned_nsl_kdd["anomaly"], "--out",
                 tmp_path / "out")
    assert result.exit_code == 5 and "an anomaly-only bundle is not a classifier" in result.output


def test_records_of_a_learned_bundle_parse_in_its_layout(learned_nsl_kdd, kdd_test_lines):
    bundle = load_bundle(learned_nsl_kdd["anomaly"])
    records, rejected = parse_lines(kdd_test_lines[:10], Detector(bundle).schema)
    assert len(records) == 10 and not rejected
