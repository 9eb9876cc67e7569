"""The real daemon with a state directory (`--state-dir`) and the operator's word (`edge-ids
site`), on the smart-home site's real flows with a real bot in the hub: a restart continues
where it stopped, a reload to a bundle of another width or vocabulary keeps serving with a "why"
that names only what it measured, and bad input changes nothing."""
from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from daemon_process import DaemonProcess, read_alerts
from site_replay import HAS_ARGUS, bot_and_joiner
from edge_ids.edge_runtime import load_bundle
from edge_ids.edge_runtime.watch import anomaly_features

DEVICE_EVENTS = ("incident", "new_device", "device_normal", "decision")


@pytest.fixture(scope="module")
def site_flows(learned_site, smart_home, data_dir, tmp_path_factory) -> dict:
    """Four hours of the site's test days with a bot in the hub from the third hour and a
    HueSwitch joining, as `capture --record` writes them; and two re-learned bundles: one of
    another width (another site's flows) and one of the same width with another vocabulary."""
    if not HAS_ARGUS:
        pytest.skip("needs Debian's argus-server and argus-client")
    work = tmp_path_factory.mktemp("state")
    replay = bot_and_joiner(learned_site, smart_home, data_dir, work, 7200, 7200, -3600)
    other = work / "other"
    honeypot = next((data_dir / "iot-23-pcap" / "CTU-Honeypot-Capture-4-1").glob("*.pcap"))
    done = subprocess.run([sys.executable, "-m", "edge_ids", "learn", "--pcap", str(honeypot),
                           "--out", str(other), "--epochs", "3"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return {"lines": replay["lines"], "hub": replay["hub"], "bot": replay["bot"],
            "last_time": replay["names"].index("LastTime"),
            "start_time": replay["names"].index("StartTime"),
            "joined": replay["joined"], "bundle": learned_site["bundle"], "other": other / "bundle",
            "renamed": renamed_vocabulary(learned_site["bundle"], work / "renamed")}


def renamed_vocabulary(bundle: Path, out: Path) -> Path:
    """The bundle with each one-hot value of its anomaly model renamed (the same width, another
    vocabulary), written as a bundle is (hashes and all)."""
    from edge_ids.compress.bundle_writer import spec_bytes, write_files

    spec = json.loads((bundle / "anomaly.json").read_text())
    for kept in spec["kept"]:
        if "value" in kept:
            kept["value"] = f"{kept['value']}~"
    manifest = json.loads((bundle / "manifest.json").read_text())
    files = {"anomaly.tflite": (bundle / "anomaly.tflite").read_bytes(),
             "anomaly.json": spec_bytes(spec)}
    keep = {k: v for k, v in manifest.items() if k not in ("schema_version", "created_utc",
                                                           "detector", "files", "tools")}
    return write_files(out, files, keep)


def run(tmp, bundle, lines, *options) -> tuple[int, list[dict], str]:
    """The daemon over lines given on its stdin; (exit code, its device events, its log)."""
    alerts = tmp / f"alerts-{len(list(tmp.glob('alerts-*')))}.json"
    daemon = DaemonProcess(tmp, "--bundle", str(bundle), "--input", "-", "--alerts",
                           str(alerts), "--emit", "incidents", *options)
    daemon.process.stdin.write(b"".join(lines))
    daemon.process.stdin.close()
    code = daemon.wait()
    events = [e for e in read_alerts(alerts) if e["event_type"] in DEVICE_EVENTS]
    return code, events, daemon.log_text()


def brief(events):
    """The events but updates (their time is the batch's clock: at a bounded rate)."""
    return [(e["event_type"], e["device"]["key"], e["timestamp"],
             e.get("incident", {}).get("id"), e.get("incident", {}).get("state"))
            for e in events if e.get("incident", {}).get("state") != "update"]


def test_a_restart_with_a_state_directory_continues_where_it_stopped(site_flows, tmp_path):
    lines = site_flows["lines"]
    code, whole, _ = run(tmp_path, site_flows["bundle"], lines, "--state-dir", str(tmp_path / "a"))
    assert code == 0
    opened = [e for e in whole if e["event_type"] == "incident"
              and e["incident"]["state"] == "open" and e["device"]["key"] == site_flows["hub"].mac]
    assert opened, "the bot in the hub opens an incident"
    opened_at = datetime.strptime(opened[0]["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z")
    cut = next(i for i, line in enumerate(lines)
               if float(line.split(b",")[site_flows["last_time"]]) > opened_at.timestamp() + 120)
    first = run(tmp_path, site_flows["bundle"], lines[:cut], "--state-dir", str(tmp_path / "b"))
    second = run(tmp_path, site_flows["bundle"], lines[cut:], "--state-dir", str(tmp_path / "b"))
    assert first[0] == second[0] == 0
    assert brief(first[1] + second[1]) == brief(whole)  # the same lines, the same ids
    assert "state: " in second[2] and "devices, incident ids from" in second[2]
    assert not [e for e in second[1] if e["event_type"] == "new_device"]
    assert not [e for e in second[1] if e["event_type"] == "incident" and
                e["incident"]["state"] == "open" and e["device"]["key"] == site_flows["hub"].mac]


def test_sigterm_keeps_the_open_incident_for_the_next_start(site_flows, tmp_path):
    lines, state = site_flows["lines"], tmp_path / "state"
    bot = site_flows["hub"].ip.encode()
    cut = next(i for i, line in enumerate(lines) if bot in line and b",6667," in line) + 600
    daemon = DaemonProcess(tmp_path, "--bundle", str(site_flows["bundle"]), "--input", "-",
                           "--alerts", str(tmp_path / "a.json"), "--emit", "incidents",
                           "--state-dir", str(state), "--metrics", "127.0.0.1:0")
    daemon.process.stdin.write(b"".join(lines[:cut]))
    daemon.process.stdin.flush()
    daemon.wait_metric("edge_ids_records_total", cut)
    assert daemon.metric("edge_ids_incidents_total", event="opened") >= 1
    assert daemon.stop() == 0  # SIGTERM
    events = read_alerts(tmp_path / "a.json")
    assert not [e for e in events if e.get("incident", {}).get("state") == "closed"
                and e["device"]["key"] == site_flows["hub"].mac]
    with gzip.open(state / "state.json.gz", "rt") as f:
        saved = json.load(f)
    kept = [d for d in saved["devices"] if d["key"] == site_flows["hub"].mac][0]["episode"]
    assert kept["incident"] is not None
    # the rest of the flows: the same incident goes on, nothing is announced again
    code, after, _ = run(tmp_path, site_flows["bundle"], lines[cut:], "--state-dir", str(state))
    assert code == 0
    mine = [e for e in after if e["event_type"] == "incident"
            and e["device"]["key"] == site_flows["hub"].mac]
    assert mine and all(e["incident"]["id"] == kept["incident"] for e in mine)
    assert "open" not in [e["incident"]["state"] for e in mine]
    assert not [e for e in after if e["event_type"] == "new_device"]
    assert all(e["incident"]["id"] > saved["next_id"] - 1 for e in after
               if e["event_type"] == "incident" and e["incident"]["state"] == "open")


def test_a_reload_to_another_width_or_vocabulary_keeps_serving_and_every_why_is_true(site_flows,
                                                                                    tmp_path):
    """Under load, with the bot's incident open: SIGHUP to a bundle of another width, then to
    one of the same width with another vocabulary. The daemon keeps serving; a line's "why"
    names only inputs of the model that measured it: after a reload, since when it counts."""
    lines, link = site_flows["lines"], tmp_path / "bundle"
    link.symlink_to(site_flows["bundle"])
    daemon = DaemonProcess(tmp_path, "--bundle", str(link), "--input", "-", "--alerts",
                           str(tmp_path / "a.json"), "--emit", "incidents", "--state-dir",
                           str(tmp_path / "s"), "--metrics", "127.0.0.1:0")
    stages = [site_flows["other"], site_flows["renamed"]]
    assert len(anomaly_features(load_bundle(site_flows["other"]).anomaly.spec)) != \
        len(anomaly_features(load_bundle(site_flows["bundle"]).anomaly.spec))
    opened_at = next(i for i, line in enumerate(lines) if site_flows["hub"].ip.encode() in line
                     and b",6667," in line) + 400
    cuts = [opened_at, opened_at + 300, len(lines)]
    start = 0
    for k, cut in enumerate(cuts):
        daemon.process.stdin.write(b"".join(lines[start:cut]))
        daemon.process.stdin.flush()
        daemon.wait_metric("edge_ids_records_total", cut)
        start = cut
        if k < len(stages):
            link.unlink()
            link.symlink_to(stages[k])
            daemon.signal(signal.SIGHUP)
            daemon.wait_metric("edge_ids_reloads_total", k + 1, result="ok")
    assert daemon.metric("edge_ids_reloads_total", result="failed") == 0
    daemon.process.stdin.close()
    assert daemon.wait() == 0
    events = read_alerts(tmp_path / "a.json")
    incidents = [e for e in events if e["event_type"] == "incident"
                 and e["device"]["key"] == site_flows["hub"].mac]
    assert {e["incident"]["state"] for e in incidents} >= {"open", "update"}  # (kept open)
    assert "Traceback" not in daemon.log_text()
    models = {e["ml"]["model_sha256"] for e in events}
    assert len(models) >= 2  # lines from more than one model
    columns = {c for c, *_ in anomaly_features(load_bundle(site_flows["bundle"]).anomaly.spec)}
    after = [e for e in incidents if "why_since" in e["incident"]]
    assert after, "lines after a reload say since when their why counts"
    for e in incidents:
        assert {w["feature"] for w in e["incident"]["why"]} <= columns
        if e["ml"]["model_sha256"] != load_bundle(site_flows["bundle"]).model_sha256:
            assert "why_since" in e["incident"]  # measured by the model serving then


def site(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_ids", "site", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_the_operators_word_reaches_the_running_daemon_and_bad_input_changes_nothing(
        site_flows, tmp_path):
    """`edge-ids site` against a running daemon: list, mute with an answer and an audit line;
    an unknown key or incident, a mute without a duration, a second daemon on the same state
    directory, a state directory that is a file: each refused with a plain message, nothing
    changed; a damaged state: set aside, a fresh start."""
    state, flows, alerts = tmp_path / "state", tmp_path / "flows.csv", tmp_path / "a.json"
    lines = site_flows["lines"][:3000]
    flows.write_bytes(b"".join(lines))
    options = ["--bundle", str(site_flows["bundle"]), "--alerts", str(alerts), "--emit",
               "incidents", "--state-dir", str(state), "--metrics", "127.0.0.1:0"]
    daemon = DaemonProcess(tmp_path, *options, "--input", f"follow:{flows}", "--from-start")
    try:
        daemon.wait_metric("edge_ids_records_total", len(lines))
        listed = site("list", "--state-dir", state)
        assert listed.returncode == 0 and site_flows["hub"].mac in listed.stdout, listed.stderr
        assert "learned" in listed.stdout or "known" in listed.stdout
        muted = site("mute", site_flows["hub"].mac, "--for", "7d", "--state-dir", state)
        assert muted.returncode == 0 and "decision 1" in muted.stdout, muted.stderr
        as_json = json.loads(site("list", "--json", "--state-dir", state).stdout)
        hub = [d for d in as_json["devices"] if d["key"] == site_flows["hub"].mac][0]
        assert hub["muted_until"] is not None and as_json["decisions"][0]["action"] == "mute"
        for args, message in ((("mute", "aa:bb:cc:dd:ee:ff", "--for", "1d"), "no device"),
                              (("accept", "999"), "no incident 999"),
                              (("mute", site_flows["hub"].mac), "Missing option '--for'"),
                              (("mute", site_flows["hub"].mac, "--for", "soon"), "duration"),
                              (("undo", "42"), "no decision 42")):
            refused = site(*args, "--state-dir", state)
            assert refused.returncode == 2 and message in refused.stderr, (args, refused)
        second = subprocess.run([sys.executable, "-m", "edge_ids", "run", *options, "--input",
                                 f"file:{flows}"], capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and "in use by another edge-ids" in second.stderr
    finally:
        assert daemon.stop() == 0
    audit = [e for e in read_alerts(alerts) if e["event_type"] == "decision"]
    assert len(audit) == 1 and audit[0]["decision"]["action"] == "mute"
    as_file = subprocess.run([sys.executable, "-m", "edge_ids", "run", *options[:-4],
                              "--state-dir", str(flows), "--input", f"file:{flows}"],
                             capture_output=True, text=True, timeout=60)
    assert as_file.returncode == 2 and "is a file" in as_file.stderr
    (state / "state.json.gz").write_bytes(b"damaged")
    fresh = subprocess.run([sys.executable, "-m", "edge_ids", "run", *options, "--input",
                            f"file:{flows}"], capture_output=True, text=True, timeout=60)
    assert fresh.returncode == 0 and "moved aside" in fresh.stderr
    assert list(state.glob("state.json.gz.unreadable-*"))


def shifted(line: bytes, columns: tuple[int, int], by: float) -> bytes:
    fields = line.split(b",")
    for c in columns:
        fields[c] = f"{float(fields[c]) + by:.6f}".encode()
    return b",".join(fields)


def with_close_after(bundle: Path, out: Path, seconds: float) -> Path:
    """The bundle with another close time for incidents, written as a bundle is."""
    from edge_ids.compress.bundle_writer import write_files

    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["incidents"]["close_after_seconds"] = seconds
    files = {n: (bundle / n).read_bytes() for n in manifest["files"]}
    keep = {k: v for k, v in manifest.items() if k not in ("schema_version", "created_utc",
                                                           "detector", "files", "tools")}
    return write_files(out, files, keep)


def stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def incidents_of(events, key):
    """(id, state, opened, the line's time, reason) of the device's incident lines."""
    return [(e["incident"]["id"], e["incident"]["state"], stamp(e["incident"]["opened"]),
             stamp(e["timestamp"]), e["incident"].get("reason")) for e in events
            if e["event_type"] == "incident" and e["device"]["key"] == key
            and e["incident"]["state"] != "update"]


def test_one_record_stamped_a_day_ahead_in_a_replay_changes_no_incident(site_flows, tmp_path):
    """A copy of one of the hub's flows, stamped a day ahead, in the middle of the bot: the
    same incidents (before, the clock jumped a day: every episode closed "quiet", and the
    bot's incident opened again and again)."""
    lines, hub = site_flows["lines"], site_flows["hub"]
    columns = (site_flows["last_time"], site_flows["start_time"])
    at = next(i for i, line in enumerate(lines) if hub.ip.encode() in line
              and b",6667," in line) + 300
    stray = lines[:at] + [shifted(lines[at], columns, 86400.0)] + lines[at:]
    got = {}
    for name, replay in (("plain", lines), ("stray", stray)):
        path = tmp_path / f"{name}.csv"
        path.write_bytes(b"".join(replay))
        daemon = DaemonProcess(tmp_path, "--bundle", str(site_flows["bundle"]), "--input",
                               f"file:{path}", "--alerts", str(tmp_path / f"{name}.json"),
                               "--emit", "incidents")
        assert daemon.wait() == 0
        got[name] = read_alerts(tmp_path / f"{name}.json")
    plain, stray = (incidents_of(got[n], hub.mac) for n in ("plain", "stray"))
    assert plain and [i[:2] + i[4:] for i in stray] == [i[:2] + i[4:] for i in plain]
    assert all(abs(a[2] - b[2]) <= 60 for a, b in zip(stray, plain))
    others = lambda events: sorted(  # noqa: E731
        (e["device"]["key"], e["incident"]["state"]) for e in events
        if e["event_type"] == "incident" and e["device"]["key"] != hub.mac)
    assert others(got["stray"]) == others(got["plain"])


def test_on_a_live_input_an_incident_closes_on_time_while_no_record_arrives(site_flows,
                                                                            tmp_path):
    """The bot's flows as if they came now (follow:), then silence: the incident closes
    within a minute of its close time (a bundle closing after 20 s of quiet, so that the test
    waits seconds, not half an hour). Before, it waited for the next record."""
    lines, hub = site_flows["lines"], site_flows["hub"]
    columns = (site_flows["last_time"], site_flows["start_time"])
    cut = next(i for i, line in enumerate(lines) if hub.ip.encode() in line
               and b",6667," in line) + 600
    bundle = with_close_after(site_flows["bundle"], tmp_path / "bundle", 20.0)
    flows, alerts = tmp_path / "flows.csv", tmp_path / "alerts.json"
    flows.touch()
    daemon = DaemonProcess(tmp_path, "--bundle", str(bundle), "--input", f"follow:{flows}",
                           "--alerts", str(alerts), "--emit", "incidents", "--metrics",
                           "127.0.0.1:0")
    by = time.time() - float(lines[cut - 1].split(b",")[columns[0]])
    with flows.open("ab") as f:
        f.write(b"".join(shifted(line, columns, by) for line in lines[:cut]))
    daemon.wait_metric("edge_ids_records_total", cut)
    assert daemon.metric("edge_ids_incidents_total", event="opened") >= 1
    deadline = time.time() + 120
    while time.time() < deadline:
        mine = incidents_of(read_alerts(alerts), hub.mac)
        if mine and mine[-1][1] == "closed":
            break
        time.sleep(0.5)
    seen = time.time()
    daemon.stop()
    assert mine and mine[-1][1] == "closed", mine
    assert seen - mine[-1][3] <= 60 and mine[-1][4] == "no flagged flow for 20 s"
