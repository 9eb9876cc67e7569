"""Incidents end to end, on real captures: `edge-ids learn --pcap` on four smart-home devices'
first four days, then `edge-ids capture --pcap` (argus | ra | the daemon) on their test days
with a real bot's capture rewritten into one device (tcprewrite, editcap, mergecap) and real
devices joining. The figures are the benchmark's (benchmarks/detection/incidents.py); these tests check
that the pieces say what they should."""
from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client import generate_latest

from edge_ids.benchmarks.harness import site_scenarios as scenarios
from edge_ids.cli import main
from edge_ids.edge_runtime import load_bundle
from edge_ids.edge_runtime.model.bundle import BundleError

HAS_ARGUS = bool(shutil.which("argus", path="/usr/sbin:/usr/bin") and shutil.which("ra"))
pytestmark = pytest.mark.skipif(not HAS_ARGUS, reason="needs Debian's argus-server and "
                                                      "argus-client (apt-get install ...)")


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def seconds(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def device(smart_home, name):
    return next(d for d in smart_home["devices"] if d.name == name)


def test_learn_knows_the_sites_devices_and_sets_the_incident_budget(learned_site, smart_home):
    bundle = load_bundle(learned_site["bundle"])
    known = bundle.manifest["devices"]["known"]
    for d in smart_home["devices"]:
        assert d.mac in known and known[d.mac]["ip"] == d.ip
    hub, cam = known[device(smart_home, "lockly-hub-01").mac], known[device(smart_home,
                                                                         "blink-cam-01").mac]
    least = bundle.manifest["devices"]["min_validation_flows"]
    assert least == 231  # none of 231 flows over it bounds the rate at 1 % with 90 % confidence
    assert hub["validation_flows"] >= 500 and hub["threshold"] is not None  # its own
    assert cam["validation_flows"] < least and cam["threshold"] is None  # the site's fallback
    assert "tcp/443" in cam["services"] and "tcp/1883" in hub["services"]
    incidents = bundle.manifest["incidents"]
    assert incidents["threshold_bits"] > incidents["max_flow_bits"] > 0
    validation = incidents["validation"]
    assert 19 < validation["hours"] < 21 and validation["device_weeks"] < 1
    assert validation["incidents_at_threshold"] == 0
    assert "warning: the validation tail (" in learned_site["output"] and \
        "too short to measure 1 false incident(s) per device per week" in learned_site["output"]
    report = json.loads((learned_site["out"] / "learn.json").read_text())
    assert report["incidents"] == incidents and set(report["devices"]["known"]) == set(known)
    assert bundle.incidents.threshold(hub and device(smart_home, "lockly-hub-01").mac) == \
        hub["threshold"]


def test_an_injected_bot_opens_one_incident_for_that_device_in_minutes(learned_site, smart_home,
                                                                       data_dir, tmp_path):
    hub = device(smart_home, "lockly-hub-01")
    injection = scenarios.infection(data_dir, smart_home["work"], smart_home["site"], "mirai",
                                    hub, 1)
    alerts = tmp_path / "alerts.json"
    result = cli("capture", "--pcap", injection.pcap, "--bundle", learned_site["bundle"],
                 "--alerts", alerts)
    assert result.exit_code == 0, result.output
    lines = events(alerts)
    mine = [e for e in lines if e["event_type"] == "incident" and e["device"]["mac"] == hub.mac
            and injection.start - 1 <= seconds(e["incident"]["opened"]) <= injection.end]
    opened = [e for e in mine if e["incident"]["state"] == "open"]
    # The bot keeps at it for a day. Its incident stays open while its flows keep being flagged;
    # if the model lets it go under the hub's threshold for 30 minutes, that incident closes and
    # the next flagged flows open another: never two at once, each closed before the next opens.
    assert opened
    states = [(e["incident"]["id"], e["incident"]["state"]) for e in mine]
    for earlier, later in zip(opened, opened[1:]):
        closed = states.index((earlier["incident"]["id"], "closed"))
        assert closed < states.index((later["incident"]["id"], "open"))
        close = next(e for e in mine if e["incident"]["id"] == earlier["incident"]["id"] and
                     e["incident"]["state"] == "closed")
        assert close["incident"]["reason"] == "no flagged flow for 30 min"
    incident = opened[0]["incident"]
    assert seconds(incident["opened"]) - injection.start <= 300
    assert incident["peers"][0]["ip"] == "185.244.25.235"
    assert incident["ports"][0]["port"] == "tcp/6667"
    assert incident["why"] and incident["flows_flagged"] >= 1
    assert opened[0]["src_ip"] == hub.ip and opened[0]["timestamp"].startswith("2021-03-")
    assert mine[-1]["incident"]["state"] == "closed"
    assert {e["incident"]["state"] for e in mine} <= {"open", "update", "closed"}
    # the flow alerts keep coming beside it, each with its flow's own times
    alert = next(e for e in lines if e["event_type"] == "alert" and e.get("dest_port") == 6667)
    assert alert["timestamp"] == alert["flow"]["end"] and alert["flow"]["start"] <= \
        alert["flow"]["end"] and alert["timestamp"].startswith("2021-03-")
    assert not [e for e in lines if e["event_type"] == "new_device"]  # every device is known


def test_devices_joining_are_named_once_and_their_set_up_is_no_incident(learned_site,
                                                                       smart_home, data_dir,
                                                                       tmp_path):
    merged, table = scenarios.joins(data_dir, smart_home["work"], smart_home["site"],
                                    ("HueSwitch", "TP-LinkPlugHS100", "HomeMaticPlug"))
    alerts = tmp_path / "alerts.json"
    result = cli("capture", "--pcap", merged, "--bundle", learned_site["bundle"], "--alerts",
                 alerts, "--emit", "incidents")
    assert result.exit_code == 0, result.output
    lines = events(alerts)
    assert {e["event_type"] for e in lines} <= {"incident", "new_device", "device_normal"}
    grace = 60 * load_bundle(learned_site["bundle"]).incidents.join_grace_minutes
    for join in table:
        new = [e for e in lines if e["event_type"] == "new_device" and
               e["device"]["key"] == join["mac"]]
        assert len(new) == 1, join
        assert new[0]["device"]["mac"] == join["mac"]
        assert seconds(new[0]["new_device"]["first_flow"]) >= join["start"] - 1
        incidents = [e for e in lines if e["event_type"] == "incident" and
                     e["device"]["key"] == join["mac"] and e["incident"]["state"] == "open"]
        # a set-up's first minutes are no evidence: an incident's flows begin after them
        assert all(e["incident"]["new_device"] and seconds(e["incident"]["first_flow"]) >=
                   seconds(new[0]["new_device"]["first_flow"]) + grace - 5 for e in incidents)


def test_the_metrics_count_incidents_and_devices(learned_site, smart_home, data_dir, tmp_path):
    from edge_ids.edge_runtime.daemon import Daemon, DaemonOptions

    hub = device(smart_home, "lockly-hub-01")
    injection = scenarios.infection(data_dir, smart_home["work"], smart_home["site"], "mirai",
                                    hub, 1)
    daemon = Daemon(DaemonOptions(bundle=learned_site["bundle"], input=f"pcap:{injection.pcap}",
                                  alerts=str(tmp_path / "alerts.json")))
    assert daemon.run() == 0
    text = generate_latest(daemon.metrics.registry).decode()
    opened = daemon.counts["incidents"]
    assert opened >= 1 and f'edge_ids_incidents_total{{event="opened"}} {float(opened)}' in text
    assert 'edge_ids_incidents_total{event="closed"}' in text
    assert "edge_ids_incidents_open 0.0" in text  # the input ended: all closed
    assert 'edge_ids_devices{kind="known"}' in text and "edge_ids_new_devices_total 0.0" in text
    assert "device=" not in text and "mac=" not in text  # no per-device label


def test_bad_settings_or_input_are_refused_with_a_reason_and_write_nothing(learned_site,
                                                                          small_pipeline,
                                                                          tmp_path):
    out = tmp_path / "out"
    for args, code, message in [
            (("--home-net", "192.168.1.0/33"), 2, "is not a network"),
            (("--max-incidents-per-week", "0"), 2, "is not a budget"),
            (("--max-incidents-per-week", "-1"), 2, "is not a budget")]:
        result = cli("learn", "--pcap", learned_site["bundle"] / "manifest.json", "--out", out,
                     *args)  # the options are checked before the file is read
        assert result.exit_code == code and message in result.output, result.output
        assert not out.exists()
    result = cli("run", "--bundle", learned_site["bundle"], "--input", "-", "--home-net", "x")
    assert result.exit_code == 2 and "is not a network" in result.output
    result = cli("run", "--bundle", small_pipeline[0] / "bundle", "--input", "file:/dev/null",
                 "--emit", "incidents")
    assert result.exit_code == 5 and "needs a bundle that knows its devices" in result.output


def test_a_learning_period_without_flow_times_is_refused(tmp_path, smart_home):
    """Flows recorded by an older edge-ids (no StartTime column): refused, nothing written."""
    recorded = tmp_path / "flows.csv"
    assert cli("capture", "--pcap", smart_home["site"]["learn"], "--record",
               recorded).exit_code == 0
    lines = recorded.read_text().splitlines()
    header = lines[0].split(",")
    drop = [header.index(c) for c in ("StartTime", "LastTime")]
    old = tmp_path / "old.csv"
    old.write_text("\n".join(",".join(f for i, f in enumerate(line.split(","))
                                      if i not in drop) for line in lines[:4000]) + "\n")
    result = cli("learn", "--flows", old, "--out", tmp_path / "site", "--epochs", 1)
    assert result.exit_code == 5, result.output
    assert "have no start time (StartTime)" in result.output and "Nothing was written" in \
        result.output
    assert not (tmp_path / "site").exists()


def test_learn_on_exactly_its_stated_minimum_succeeds_for_every_seed(tmp_path, smart_home):
    """2,500 flows at the defaults (5 / 0.01 / 0.2): enough for seeds 0-4; one fewer is
    refused with the minimum in flows."""
    recorded = tmp_path / "flows.csv"
    assert cli("capture", "--pcap", smart_home["site"]["learn"], "--record",
               recorded).exit_code == 0
    lines = recorded.read_text().splitlines()
    for n, seeds in ((2500, range(5)), (2499, range(1))):
        flows = tmp_path / f"flows-{n}.csv"
        flows.write_text("\n".join(lines[:n + 1]) + "\n")  # the header and n flows
        for seed in seeds:
            out = tmp_path / f"site-{n}-{seed}"
            result = cli("learn", "--flows", flows, "--out", out, "--epochs", 2, "--seed",
                         seed)
            if n == 2500:
                assert result.exit_code == 0, result.output
                point = json.loads((out / "learn.json").read_text())["operating_point"]
                assert point["validation_rows"] >= 500
            else:
                assert result.exit_code == 5 and "2,499 benign flows read; learn needs at " \
                    "least 2,500 flows at --max-fpr 0.01 and --val-fraction 0.2" in \
                    result.output, result.output
                assert not out.exists()
    help_text = cli("learn", "--help").output
    assert "2,500 at the defaults" in help_text


def test_a_bundle_with_inconsistent_incident_settings_is_refused(learned_site, tmp_path):
    for edit, message in [
            (lambda m: m["devices"].update(fallback_threshold=m["devices"]
                                           ["fallback_threshold"] * 2),
             "is not the anomaly threshold"),
            (lambda m: m.pop("incidents"), 'no "incidents" object'),
            (lambda m: m["incidents"].update(threshold_bits=-1), "not a finite number")]:
        copy = Path(shutil.copytree(learned_site["bundle"], tmp_path / f"b{len(message)}"))
        manifest = json.loads((copy / "manifest.json").read_text())
        edit(manifest)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(BundleError, match=message):
            load_bundle(copy)


def test_sighup_to_inconsistent_incident_settings_keeps_the_old_model(learned_site, tmp_path):
    import signal

    from daemon_process import DaemonProcess
    from test_daemon import point

    broken = Path(shutil.copytree(learned_site["bundle"], tmp_path / "broken"))
    manifest = json.loads((broken / "manifest.json").read_text())
    del manifest["incidents"]["threshold_bits"]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    current = tmp_path / "current"
    point(current, learned_site["bundle"])
    daemon = DaemonProcess(tmp_path, "--bundle", str(current), "--input",
                           f"unix:{tmp_path / 'in.sock'}", "--alerts", str(tmp_path / "a.json"),
                           "--metrics", "127.0.0.1:0")
    try:
        point(current, broken)
        daemon.signal(signal.SIGHUP)
        daemon.wait_metric("edge_ids_reloads_total", 1, result="failed")
        assert "inconsistent incident settings" in daemon.log_text() and \
            "incidents.threshold_bits is None" in daemon.log_text()
    finally:
        assert daemon.stop() == 0


def test_the_benchmarks_capture_cache_is_keyed_on_its_data_and_its_code(data_dir):
    """`python -m edge_ids.benchmarks.detection.incidents` makes its captures again when the data
    files or the code that makes them change: the key reads both (it once named a moved file)."""
    from edge_ids.benchmarks.detection.incidents import captures_version
    from edge_ids.train.fingerprint import files_fingerprint

    key = captures_version(data_dir)
    assert key["data"] == files_fingerprint(scenarios.sources(data_dir))
    assert len(key["code"]) == 16 and captures_version(data_dir) == key
