"""What survives a restart (edge_runtime/site/incident_state.py, state.py): the device watch's memory
written and read back continues exactly where it was; another bundle takes over by the reload
rules; the state file is atomic, locked, and set aside (never a crash) when unreadable."""
from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edge_ids.edge_runtime.model.detector import Verdicts
from edge_ids.edge_runtime.site.incident_settings import IncidentSettings
from edge_ids.edge_runtime.site.incident_state import dump, load, rebase
from edge_ids.edge_runtime.ingest.records import RawSchema, parse_lines
from edge_ids.edge_runtime.site.state import StateError, StateStore
from edge_ids.edge_runtime.watch import DeviceWatch

T0 = 1_615_600_000.0
CAM, HUB, NEW, ROUTER = ("f4:b8:5e:ff:2b:1b", "24:6f:28:d9:a7:64", "02:00:00:00:00:01",
                         "00:1c:7f:53:d0:28")
NAMES = ("SrcAddr", "Sport", "DstAddr", "Dport", "Proto", "SrcMac", "DstMac", "LastTime",
         "StartTime", "Dur")
SCHEMA = RawSchema.of(NAMES, ignored=NAMES[:9])
FEATURES = [("Flgs", True), ("Dur", False)]


def settings(**changes) -> IncidentSettings:
    base = dict(threshold_bits=6.0, fallback_threshold=1.0, known={CAM: None, HUB: 0.5},
                services={CAM: frozenset({"tcp/443"}), HUB: frozenset({"tcp/1883"})},
                service_bits={CAM: 0.5, HUB: 7.0}, max_flow_bits=5.0,
                home_net=("192.168.0.0/16",), known_ips={CAM: "192.168.1.129",
                                                         HUB: "192.168.1.128"})
    return IncidentSettings(**(base | changes))


def flows(seed: int = 0) -> list[tuple]:
    """Two days of three devices: (time, mac, ip, dport, score); the new one misbehaves on its
    second day, the cam graduates, the hub's normal changes."""
    rng = np.random.default_rng(seed)
    out = []
    for mac, ip, port, n in ((CAM, "192.168.1.129", 443, 1100), (HUB, "192.168.1.128", 1883, 900),
                             (NEW, "192.168.1.7", 80, 400)):
        times = np.sort(rng.uniform(T0, T0 + 2 * 86400, n))
        for t in times:
            out.append((float(t), mac, ip, port, float(rng.uniform(0.05, 0.4))))
    out += [(T0 + 1.5 * 86400 + 20 * i, NEW, "192.168.1.7", 6667, 40.0) for i in range(60)]
    return sorted(out)


def lines_of(part) -> list[bytes]:
    return [f"{ip},40000,52.1.2.3,{port},tcp,{mac},{ROUTER},{t:.6f},{t - 1:.6f},1".encode()
            for t, mac, ip, port, _ in part]


def observe(watch, part, size=128) -> list[dict]:
    events = []
    for k in range(0, len(part), size):
        chunk = part[k:k + size]
        records, _ = parse_lines(lines_of(chunk), SCHEMA, keep_text=watch.text_columns,
                                 keep_fields=watch.key_columns)
        owners, _ = watch.devices(records)
        n = len(records)
        width = len(watch.tracker.features)  # the serving model's inputs
        differences = np.tile(np.linspace(0.5, -0.25, width, dtype=np.float32), (n, 1))
        verdicts = Verdicts(np.zeros(n, np.intp), {}, anomaly_scores=np.array(
            [f[4] for f in chunk]), differences=differences)
        events += watch.observe(records, verdicts, owners)
    return events


def watch_of(s=None) -> DeviceWatch:
    return DeviceWatch(s or settings(), NAMES, FEATURES)


def key(events):
    return [json.dumps(e, sort_keys=True, default=str) for e in events]


def test_a_restart_continues_exactly_where_it_was():
    """Half the flows, the state written (through JSON) and read into a new watch, the other
    half: the same events as one watch given them all, open incidents and ids included."""
    data = flows()
    half = next(i for i, f in enumerate(data) if f[0] > T0 + 1.5 * 86400 + 600)  # mid-incident
    whole = watch_of()
    expected = observe(whole, data[:half]) + observe(whole, data[half:]) + whole.finish()
    first = watch_of()
    before = observe(first, data[:half])
    state = json.loads(json.dumps(dump(first, "sha-a")))
    assert any(d["episode"] and d["episode"]["incident"] for d in state["devices"])
    second = watch_of()
    assert load(second, state, "sha-a") == 3
    after = observe(second, data[half:]) + second.finish()
    assert key(before + after) == key(expected)
    kinds = [e["event_type"] for e in expected]
    assert kinds.count("new_device") == 1 and "device_normal" in kinds
    assert not [e for e in after if e["event_type"] == "new_device"]  # nobody announced again


def test_another_bundle_decides_what_applies_and_the_why_starts_again():
    data = flows()
    watch = watch_of()
    observe(watch, data[:next(i for i, f in enumerate(data) if f[0] > T0 + 1.5 * 86400 + 600)])
    tracker = watch.tracker
    assert tracker.devices[NEW].episode.incident is not None
    learned_cam = tracker.devices[CAM].normal
    assert learned_cam.stage == "learned"  # graduated on the device
    # the re-learned bundle knows the new device (and the cam again), with 3 model inputs
    other = settings(known={CAM: 0.7, NEW: 0.9}, services={CAM: frozenset({"tcp/443"}),
                                                           NEW: frozenset({"tcp/80"})},
                     service_bits={CAM: 1.0, NEW: 2.0})
    features = [("Flgs", True), ("Flgs", True), ("Dur", False)]
    rebase(tracker, other, features, same_model=False)
    assert tracker.devices[NEW].normal.stage == "known" and not tracker.devices[NEW].new
    assert tracker.normals.threshold(NEW) == 0.9 and tracker.normals.threshold(CAM) == 0.7
    assert tracker.devices[HUB].normal.stage == "learned"  # kept, no longer the bundle's
    assert tracker.normals.threshold(HUB) == pytest.approx(
        tracker.devices[HUB].normal.ratio * 1.0)
    episode = tracker.devices[NEW].episode
    assert episode.errors.shape == (2, 3) and not episode.errors.any()
    assert episode.why_since == tracker.clock
    events = observe(watch, [(tracker.clock + 30, NEW, "192.168.1.7", 6667, 40.0)]) + \
        watch.finish()
    line = [e for e in events if e["event_type"] == "incident"][-1]["incident"]
    assert line["why_since"] == episode.why_since
    assert {w["feature"] for w in line["why"]} <= {"Flgs", "Dur"}
    # the same model again: what the devices learned since stays
    same = watch_of()
    observe(same, data[:3000])
    before = same.tracker.devices[CAM].normal
    rebase(same.tracker, settings(), FEATURES, same_model=True)
    assert same.tracker.devices[CAM].normal is before


def test_the_state_file_is_atomic_locked_and_set_aside_when_unreadable(tmp_path, caplog):
    store = StateStore(tmp_path)
    assert store.load() is None
    store.save_now([json.dumps({"schema": 1, "devices": list(range(1000))})])
    assert store.load()["devices"] == list(range(1000))
    with pytest.raises(StateError, match=rf"in use by another edge-ids \(pid {os.getpid()}\)"):
        StateStore(tmp_path)
    store.close()
    again = StateStore(tmp_path)  # the lock went with the first
    (tmp_path / "state.json.gz").write_bytes(b"\x1f\x8b not gzip at all")
    with caplog.at_level(logging.WARNING, logger="edge_ids.state"):
        assert again.load() is None
    aside = list(tmp_path.glob("state.json.gz.unreadable-*"))
    assert len(aside) == 1 and str(aside[0]) in caplog.text and "starting fresh" in caplog.text
    (tmp_path / "state.json.gz").write_bytes(gzip.compress(b'{"schema": 99}'))
    assert again.load() is None and len(list(tmp_path.glob("*.unreadable-*"))) >= 1
    again.close()
    (tmp_path / "f").write_text("x")
    with pytest.raises(StateError, match="not a directory"):
        StateStore(tmp_path / "f")
    with pytest.raises(StateError, match="cannot make it"):
        StateStore(tmp_path / "f" / "sub")


WRITER = """
import json, sys, time
from edge_ids.edge_runtime.site.state import StateStore
store = StateStore(sys.argv[1])
i = 0
while True:
    i += 1
    store.save_now([json.dumps({"schema": 1, "n": i, "devices": ["x" * 64] * (2000 + i % 3000)})])
"""


def test_kill_9_at_any_moment_leaves_a_state_that_loads(tmp_path):
    """A writer saving as fast as it can, killed at 12 moments: each time the state loads, and
    is the one written last or the one before (never half of one)."""
    rng = np.random.default_rng(0)
    last = 0
    for _ in range(12):
        before = (tmp_path / "state.json.gz").stat().st_mtime_ns \
            if (tmp_path / "state.json.gz").exists() else 0
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)])
        deadline = time.monotonic() + 60  # (its start may be slow on a loaded machine)
        while time.monotonic() < deadline and not (
                (tmp_path / "state.json.gz").exists()
                and (tmp_path / "state.json.gz").stat().st_mtime_ns != before):
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0, 0.4)))  # then at any moment
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        store = StateStore(tmp_path)
        state = store.load()
        store.close()
        assert state is not None and state["schema"] == 1 and state["n"] >= 1
        assert len(state["devices"]) == 2000 + state["n"] % 3000
        assert not list(tmp_path.glob("*.unreadable-*"))
        last = state["n"]
    assert last >= 1


CORRUPT = {  # a state of the right schema whose values are wrong: path -> value
    "counts is a list": (["counts"], [1, 2]),
    "next_id infinite": (["next_id"], float("inf")),
    "a device's flows infinite": (["devices", 0, "flows"], float("inf")),
    "decisions is a number": (["decisions"], 5),
    "a decision without its keys": (["decisions"], [{"id": 1}]),
    "an episode's last flagged flow null": (["devices", "active", "episode", "last_flagged"],
                                            None),
    "an episode's evidence a text": (["devices", "active", "episode", "evidence"], "x"),
    "an episode's errors of another width": (["devices", "active", "episode", "errors"],
                                             [[0.0], [0.0]]),
    "a timeline an object": (["devices", 0, "timeline"], {"1": 2}),
    "a device's stage unknown": (["devices", 0, "normal", "stage"], "royal"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_a_state_of_the_right_schema_but_wrong_values_is_set_aside_never_a_crash(case,
                                                                                 tmp_path):
    from edge_ids.edge_runtime.site.site_state import SiteMemory

    data = flows()
    half = next(i for i, f in enumerate(data) if f[0] > T0 + 1.5 * 86400 + 600)
    watch = watch_of()
    observe(watch, data[:half])
    state = json.loads(json.dumps(dump(watch, "sha"))) | {"decisions": []}
    active = next(i for i, d in enumerate(state["devices"]) if d["episode"])
    path, value = CORRUPT[case]
    place = state
    for key in path[:-1]:
        place = place[active if key == "active" else key]
    place[path[-1]] = value
    with gzip.open(tmp_path / "state.json.gz", "wt") as f:
        json.dump(state, f)
    memory = SiteMemory(tmp_path)
    restored = memory.restore(watch_of, "sha")
    observe(restored, data[half:half + 400])  # the daemon goes on
    memory.tick(restored, "sha", 1e9)
    memory.stop(restored, "sha")
    if case.startswith(("decisions", "a decision")):  # dropped, the rest loaded
        assert restored.tracker.devices and not memory.decisions.log
    else:
        assert list(tmp_path.glob("state.json.gz.unreadable-*"))  # set aside: fresh


def test_stopping_while_a_save_is_being_made_durable_leaves_the_last_state(tmp_path,
                                                                          monkeypatch):
    """The periodic save is still being fsync'd (a slow SD card) when the daemon stops: the
    state left is the one written at stop, readable."""
    import threading

    real = os.fsync

    def slow(fd):
        if threading.current_thread().name == "edge-ids-state":
            time.sleep(0.3)
        real(fd)

    monkeypatch.setattr(os, "fsync", slow)
    for delay in (0.0, 0.1, 0.35):
        folder = tmp_path / f"d{delay}"
        store = StateStore(folder)
        store.save([json.dumps({"schema": 1, "which": "periodic", "blob": ["x" * 40] * 50000})])
        time.sleep(delay)
        store.save_now([json.dumps({"schema": 1, "which": "final"})])
        store.close()
        with gzip.open(folder / "state.json.gz", "rt") as f:
            assert json.load(f)["which"] == "final"
        assert not list(folder.glob(".*.tmp"))


def test_hostile_requests_are_answered_and_removed_never_a_crash_or_a_hang(tmp_path):
    """Whoever may write in the state directory may decide, but a request is never trusted:
    a pipe, a link, deep or huge JSON, absurd numbers, no object: each is refused in its
    answer and removed; a good one beside them is taken."""
    from edge_ids.edge_runtime.site.site_state import SiteMemory

    memory = SiteMemory(tmp_path / "state")
    watch = watch_of()
    observe(watch, flows()[:2000])
    requests, answers = tmp_path / "state" / "requests", tmp_path / "state" / "answers"
    os.mkfifo(requests / "a-pipe.json")
    (tmp_path / "secret").write_text('{"action": "mute"}')
    (requests / "b-link.json").symlink_to(tmp_path / "secret")
    (requests / "c-deep.json").write_text("[" * 5000 + "]" * 5000)
    (requests / "d-huge.json").write_text('{"action": "mute", "target": "%s", "seconds": '
                                          '1e400}' % CAM)
    (requests / "e-list.json").write_text("[1, 2]")
    (requests / "f-broken.json").write_text('{"action": "undo", "target": "1"')
    (requests / "g-good.json").write_text(json.dumps({"action": "mute", "target": CAM,
                                                      "seconds": 3600}))
    (answers / "old.json").symlink_to(tmp_path / "nowhere")  # a dangling link: no matter
    events = memory.tick(watch, "sha", 1e9)
    memory.stop(watch, "sha")
    assert [e["event_type"] for e in events] == ["decision"]  # only the good one
    assert not [p for p in requests.iterdir() if p.name.endswith(".json")]
    said = {p.stem: json.loads(p.read_text()) for p in answers.glob("*.json")
            if not p.is_symlink()}
    assert said["g-good"]["ok"] and not any(v["ok"] for k, v in said.items() if k != "g-good")
    assert "a-pipe" not in said and "b-link" not in said  # not regular files: never read
    assert (tmp_path / "secret").exists()
