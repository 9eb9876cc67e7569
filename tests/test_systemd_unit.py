"""Slow: the unit's promises, shown by a real systemd (tests/booted_systemd.py) on the unit that
deploy installed. About 2 minutes once the root is cached; needs root, and for the capture test
argus, tcpreplay and iproute2 here:

    .venv/bin/python -m pytest -m slow tests/test_systemd_unit.py -s

Where a promise takes minutes on the real unit (WatchdogSec=30), a drop-in shortens the time and
nothing else, and is removed after. This machine's cgroups are a v1/v2 hybrid (memory under v1):
MemoryMax= is applied there as memory.limit_in_bytes, and the kernel's OOM kill shows as
Result=signal (Result=oom-kill needs cgroup v2)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from edge_ids.edge_runtime import load_bundle

from daemon_process import read_alerts, send
from systemd_site import (ALERTS, PREFIX, SOCKET, UNIT, counter, first, metrics_page,  # noqa: F401 (fixtures)
                          site, system, wait_until)

pytestmark = pytest.mark.slow
DROP_IN = f"/etc/systemd/system/{UNIT}.d/test.conf"
DYNAMIC_UIDS = range(61184, 65520)  # systemd's DynamicUser= range
PROBE = Path(__file__).with_name("unit_probe.py")


def with_drop_in(system, text: str | None) -> None:
    """Put (or, with None, remove) a drop-in for the unit, and start it afresh."""
    path = system.path(DROP_IN)
    if text is None:
        path.unlink(missing_ok=True)
    else:
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"[Service]\n{text}\n")
    system.systemctl("daemon-reload")
    system.systemctl("reset-failed", UNIT, check=False)  # also resets the start rate limit
    system.systemctl("restart", UNIT, check=text is None)


def state(system) -> dict:
    return system.show(UNIT, "MainPID", "ActiveState", "SubState", "NRestarts", "Result")


def serving(site, timeout: float = 30) -> str:
    """The model the active service names, once its metrics page answers."""
    def ask():
        try:
            return state(site.system)["ActiveState"] == "active" and site.serving()
        except OSError:
            return None
    return wait_until(ask, timeout, "the service did not come back", site.system)


def test_the_daemon_runs_as_a_dynamic_user_with_nothing_else(system, site, first):
    pid = site.main_pid()
    status = system.run(["cat", f"/proc/{pid}/status"]).stdout
    uid = int(re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE).group(1))
    assert uid in DYNAMIC_UIDS
    assert re.search(r"^CapEff:\s+0+$", status, re.MULTILINE)
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.MULTILINE)
    assert re.search(r"^Seccomp:\s+2$", status, re.MULTILINE)  # the system-call filter
    assert system.path(ALERTS).stat().st_uid == uid  # it wrote its alerts as that user


def test_the_sandbox_lets_it_write_only_its_own_directories(system, site, first, tmp_path):
    """The unit's own sandbox (every line but ExecStart/Type/watchdog) around a probe that tries
    to write everywhere and to reach a non-loopback address that answers the machine itself."""
    listener, address, cleanup = _non_loopback_listener()
    try:
        shutil.copy(PROBE, system.path("/opt/unit_probe.py"))
        unit = system.path(f"/etc/systemd/system/{UNIT}").read_text()
        probe_unit = re.sub(r"(?m)^(WatchdogSec|ExecReload|Restart|NotifyAccess)=.*\n", "", unit)
        probe_unit = re.sub(r"(?m)^ExecStart=.*$", f"ExecStart=/usr/bin/python3 "
                            f"/opt/unit_probe.py {address[0]} {address[1]}", probe_unit)
        probe_unit = probe_unit.replace("Type=notify", "Type=oneshot")
        system.path("/etc/systemd/system/edge-ids-probe.service").write_text(probe_unit)
        system.systemctl("daemon-reload")
        system.systemctl("start", "edge-ids-probe.service")
        said = system.run(["journalctl", "-u", "edge-ids-probe.service", "-o", "cat",
                           "--no-pager"]).stdout
        report = json.loads([line for line in said.splitlines() if line.startswith("{")][-1])
        unsandboxed = subprocess.run(["python3", str(PROBE), *map(str, address), "--network-only"],
                                     capture_output=True, text=True, cwd=tmp_path)
        control = json.loads(unsandboxed.stdout.splitlines()[-1])
    finally:
        cleanup()
    print(json.dumps(report, indent=1))
    assert report["uid"] in DYNAMIC_UIDS
    writable = {place for place, ok in report["writable"].items() if ok is True}
    assert writable == {"/var/lib/edge-ids", "/var/log/edge-ids", "/run/edge-ids", "/tmp",
                        "/var/tmp", "/dev/shm"}, report  # the last three private to the unit
    for place in ("/etc", "/usr", "/opt/edge-ids", "/root", "/home", "/srv", "/var", "/var/lib",
                  "/var/log", "/run"):
        assert report["writable"][place] in ("Read-only file system", "Permission denied")
    assert not system.path(f"/tmp/{report['marker']}").exists()  # its /tmp is its own
    assert report["other_pids_visible"] == []  # ProtectProc=invisible
    assert report["loopback"] == "connected" and control["network"] == "connected"
    assert report["network"] in ("timed out", "Operation not permitted")  # IPAddressDeny=any


def _non_loopback_listener():
    """A TCP listener on an address of an interface made for this test (not loopback; a veth
    pair, since not every kernel has the dummy driver)."""
    name, address = f"eids{os.getpid() % 100000}d", f"198.18.{os.getpid() % 250}.1"
    for command in (["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"],
                    ["ip", "addr", "add", f"{address}/32", "dev", name],
                    ["ip", "link", "set", name, "up"]):
        subprocess.run(command, check=True, capture_output=True)
    listener = socket.socket()
    listener.bind((address, 0))
    listener.listen(8)

    def cleanup():
        listener.close()
        subprocess.run(["ip", "link", "del", name], capture_output=True)
    return listener, listener.getsockname(), cleanup


def test_a_daemon_that_stops_answering_is_killed_by_the_watchdog_and_restarted(
        system, site, first):
    with_drop_in(system, "WatchdogSec=2")
    try:
        before = state(system)
        assert before["ActiveState"] == "active"
        stopped = time.monotonic()
        system.run(["kill", "-STOP", before["MainPID"]])
        wait_until(lambda: int(state(system)["NRestarts"]) > int(before["NRestarts"]), 30,
                   "the watchdog did not restart it", system)
        model = serving(site)
        took = time.monotonic() - stopped
        journal = system.journal(UNIT, 30)
    finally:
        with_drop_in(system, None)
    print(f"SIGSTOP -> serving again after {took:.1f} s (WatchdogSec=2, RestartSec=2)")
    assert "Watchdog timeout (limit 2s)!" in journal
    assert f"Killing process {before['MainPID']} (edge-ids) with signal SIGABRT" in journal
    assert "Failed with result 'watchdog'" in journal
    assert state(system)["MainPID"] != before["MainPID"]
    assert model == load_bundle(first[2]).model_sha256


def test_a_crash_is_restarted(system, site, first):
    before = state(system)
    system.run(["kill", "-SEGV", before["MainPID"]])
    wait_until(lambda: int(state(system)["NRestarts"]) > int(before["NRestarts"]), 30,
               "Restart=on-failure did not restart it", system)
    assert serving(site) == load_bundle(first[2]).model_sha256
    assert state(system)["MainPID"] != before["MainPID"]
    assert "status=11/SEGV" in system.journal(UNIT, 30)


def test_reload_switches_to_a_new_bundle_and_keeps_the_old_on_a_corrupt_one(
        system, site, first, other_bundle, kdd_test_lines):
    live = system.path(f"{PREFIX}/current/bundle")
    kept = {p.name: p.read_bytes() for p in live.iterdir()}
    port = site.ports[load_bundle(first[2]).model_sha256]
    new_model = load_bundle(other_bundle).model_sha256
    pid = state(system)["MainPID"]
    try:
        for p in other_bundle.iterdir():
            (live / p.name).write_bytes(p.read_bytes())
        system.systemctl("reload", UNIT)
        wait_until(lambda: new_model in metrics_page(port), 30, "the new model did not serve",
                   system)
        (live / "model.tflite").write_bytes(b"corrupt" * 100)
        system.systemctl("reload", UNIT)
        wait_until(lambda: counter(metrics_page(port), "edge_ids_reloads_total",
                                   result="failed") == 1, 30, "the failed reload was not counted",
                   system)
        page = metrics_page(port)
        before = counter(page, "edge_ids_records_total")
        send(system.path(SOCKET), b"".join(kdd_test_lines[:100]))
        wait_until(lambda: counter(metrics_page(port), "edge_ids_records_total") >= before + 100,
                   30, "it stopped classifying", system)
        last = read_alerts(system.path(ALERTS))[-1]
        after = wait_until(lambda: state(system)["ActiveState"] == "active" and state(system),
                           10, "the service did not say READY=1 again", system)
    finally:
        for name, data in kept.items():
            (live / name).write_bytes(data)
        system.systemctl("reload", UNIT)
    assert counter(page, "edge_ids_reloads_total", result="ok") == 1
    assert f'model_sha256="{new_model}"' in page  # still the new one, after the corrupt reload
    assert last["ml"]["model_sha256"] == new_model
    assert after["MainPID"] == pid  # reloaded in place, never restarted
    assert "reload failed, still serving" in system.journal(UNIT, 30)


def test_a_small_memory_max_is_enforced(system, site, first):
    """20 MB is less than the daemon needs to load its model: the kernel kills it at start."""
    memory = system.path("/sys/fs/cgroup/memory/system.slice/edge-ids.service")
    v2 = system.path("/sys/fs/cgroup/cgroup.controllers")
    if not system.path("/sys/fs/cgroup/memory").is_dir() and not (
            v2.exists() and "memory" in v2.read_text().split()):
        pytest.skip("this machine gives the booted system no memory controller")
    with_drop_in(system, "MemoryMax=120M")
    try:
        assert serving(site)
        v1 = memory.exists()
        limit = int((memory / "memory.limit_in_bytes").read_text() if v1 else
                    system.path("/sys/fs/cgroup/system.slice/edge-ids.service/memory.max")
                    .read_text())
        assert limit == 120 * 2**20
        with_drop_in(system, "MemoryMax=20M")
        result = wait_until(lambda: state(system)["Result"] not in ("success", "") and
                            state(system)["Result"], 30, "it was not killed", system)
        journal = system.journal(UNIT, 30)
    finally:
        with_drop_in(system, None)
    print(f"memory controller: {'cgroup v1' if v1 else 'cgroup v2'}; result {result}")
    assert "status=9/KILL" in journal
    assert result == ("signal" if v1 else "oom-kill")
    assert serving(site) == load_bundle(first[2]).model_sha256  # and back without the drop-in


@pytest.mark.skipif(not all(map(shutil.which, ("ip", "tcpreplay"))),
                    reason="needs iproute2 and tcpreplay")
def test_the_capture_unit_starts_argus_with_its_capabilities_and_classifies_a_replay(
        system, site, first, net_bundle, captures):
    tag = f"eids{os.getpid() % 100000}"
    here, there, namespace = f"{tag}c", f"{tag}r", f"{tag}s"
    setup = [["ip", "netns", "add", namespace],
             ["ip", "link", "add", here, "type", "veth", "peer", "name", there],
             ["ip", "link", "set", there, "netns", namespace], ["ip", "link", "set", here, "up"],
             ["ip", "netns", "exec", namespace, "ip", "link", "set", there, "up"]]
    try:
        for command in setup:
            subprocess.run(command, check=True, capture_output=True)
        result = site.deploy(net_bundle, "--capture", here)
        assert result.exit_code == 0, result.output
        assert f"{UNIT} is active and serves model" in result.output
        assert "capture --interface " + here in system.path(f"/etc/systemd/system/{UNIT}")\
            .read_text()
        pid = site.main_pid()
        children = system.run(["ps", "-o", "pid=,user=,comm=", "--ppid", str(pid)]).stdout
        argus = [line.split() for line in children.splitlines() if line.split()[2] == "argus"]
        assert argus, children
        caps = system.run(["grep", "^Cap", f"/proc/{argus[0][0]}/status"]).stdout
        port = site.ports[load_bundle(net_bundle).model_sha256]
        replay = subprocess.run(["ip", "netns", "exec", namespace, "tcpreplay", "-i", there,
                                 "--topspeed", str(captures["mirai-irc"])],
                                capture_output=True, text=True, timeout=120)
        assert replay.returncode == 0, replay.stderr
        flows = wait_until(lambda: counter(metrics_page(port), "edge_ids_records_total") >= 1000
                           and metrics_page(port), 60, "the replayed flows were not classified",
                           system)
        alerts = read_alerts(system.path(ALERTS))
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", here], capture_output=True)
    print(f"capture unit: argus {argus[0]}; {caps.strip()}; "
          f"{counter(flows, 'edge_ids_records_total'):.0f} flows classified")
    assert int(re.search(r"CapEff:\s+(\w+)", caps).group(1), 16) & (1 << 13)  # CAP_NET_RAW
    assert sum(counter(flows, "edge_ids_records_rejected_total", reason=reason)
               for reason in ("wrong_field_count", "non_numeric", "not_finite")) == 0
    new_model = load_bundle(net_bundle).model_sha256
    assert all(a["ml"]["model_sha256"] == new_model for a in alerts
               if a["ml"]["dataset"] == "wustl-ehms-net")
