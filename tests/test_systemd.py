"""Deploy's systemd path and the unit's promises, under a real systemd booted in its own Debian
root (tests/booted_systemd.py), reached over ssh like a device. Needs root; the root is built
once (about 2-3 minutes, cached in ~/.cache/edge-ids/systemd) and each boot takes about a
second.

CI runs the deploy tests (install, enable, restart, health check, a failed health check that
restores and restarts the previous release, status and rollback); the unit's other promises
(watchdog, reload, crash restart, sandbox, MemoryMax, capture) are slow:

    .venv/bin/python -m pytest -m slow tests/test_systemd.py
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_ids.cli import main
from edge_ids.edge_runtime import load_bundle

import booted_systemd
import sshd
from daemon_process import read_alerts, send
from test_daemon import expected_classes

CACHE = Path(os.environ.get("EDGE_IDS_SYSTEMD_CACHE")
             or Path.home() / ".cache" / "edge-ids" / "systemd")
UNIT = "edge-ids.service"
PREFIX = "/opt/edge-ids"
SOCKET = "/run/edge-ids/records.sock"
ALERTS = "/var/log/edge-ids/alerts.json"


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """A booted systemd with sshd inside; ended (processes, mounts, cgroups) after the module."""
    why = booted_systemd.missing()
    if why:
        pytest.skip(why)
    root = booted_systemd.build_root(CACHE / "bookworm")
    work = tmp_path_factory.mktemp("systemd")
    with booted_systemd.BootedSystemd(root, work) as booted:
        print(f"systemd booted in {booted.boot_seconds:.1f} s")
        yield booted
    shutil.rmtree(work, ignore_errors=True)


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


class Site:
    """What the tests deployed: the metrics port of each release, by model hash."""

    def __init__(self, system):
        self.system = system
        self.ports: dict[str, int] = {}

    def deploy(self, bundle: Path, *extra: str, port: int | None = None):
        port = port or sshd.free_port()
        result = cli("deploy", *self.system.ssh_args(), "--device", "x86_64", "--bundle",
                     str(bundle), "--metrics", f"127.0.0.1:{port}", "--timeout", "60", *extra)
        if result.exit_code == 0:
            self.ports[load_bundle(bundle).model_sha256] = port
        return result

    def current(self) -> str:
        return os.readlink(self.system.path(f"{PREFIX}/current")).split("/")[-1]

    def serving(self) -> str:
        """The model hash the running service's metrics page names."""
        release = json.loads(self.system.path(f"{PREFIX}/current/release.json").read_text())
        page = metrics_page(self.ports[release["model_sha256"]])
        return re.search(r'model_sha256="(\w+)"', page).group(1)

    def main_pid(self) -> int:
        return int(self.system.show(UNIT, "MainPID")["MainPID"])


def metrics_page(port: int, timeout: float = 5) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        return r.read().decode()


def counter(page: str, name: str, **labels) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{name}{{{wanted}}} (\S+)$" if labels else rf"^{name} (\S+)$", page,
                      re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def wait_until(condition, timeout: float, what: str, system=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    journal = system.journal(UNIT) if system else ""
    raise AssertionError(f"{what} within {timeout} s; journal:\n{journal}")


@pytest.fixture(scope="module")
def site(system):
    return Site(system)


@pytest.fixture(scope="module")
def first(site, small_pipeline):
    """The first deploy into the booted system: the real systemd path."""
    bundle = small_pipeline[0] / "bundle"
    started = time.monotonic()
    result = site.deploy(bundle)
    assert result.exit_code == 0, result.output
    print(f"first deploy under systemd: {time.monotonic() - started:.1f} s")
    return site.current(), result.output, bundle


def test_deploy_installs_enables_restarts_and_checks_the_service(system, site, first):
    release_id, output, bundle = first
    assert "systemd running" in output
    assert "daemon-reload, enable, restart" in output
    model = load_bundle(bundle).model_sha256
    assert f"health: {UNIT} is active and serves model {model[:12]}" in output
    assert system.systemctl("is-enabled", UNIT).stdout.strip() == "enabled"
    assert system.systemctl("is-active", UNIT).stdout.strip() == "active"
    installed = system.path(f"/etc/systemd/system/{UNIT}").read_text()
    assert installed == system.path(f"{PREFIX}/releases/{release_id}/{UNIT}").read_text()
    shown = system.show(UNIT, "Type", "NotifyAccess", "WatchdogUSec", "StatusText",
                        "FragmentPath")
    assert shown["Type"] == "notify" and shown["WatchdogUSec"] == "30s"
    # READY=1 and STATUS= reached systemd: StatusText is the daemon's own summary
    assert re.match(rf"[\d,]+ records, [\d,]+ alerts, [\d,]+ rejected; nsl-kdd model "
                    rf"{model[:12]}", shown["StatusText"]), shown
    assert site.serving() == model


def test_the_service_classifies_what_arrives_on_its_socket_and_status_counts_it(
        system, site, first, kdd_test_lines):
    lines = kdd_test_lines[:2000]
    before = counter(metrics_page(site.ports[load_bundle(first[2]).model_sha256]),
                     "edge_ids_records_total")
    alerts_before = len(read_alerts(system.path(ALERTS))) if system.path(ALERTS).exists() else 0
    send(system.path(SOCKET), b"".join(lines))
    port = site.ports[load_bundle(first[2]).model_sha256]
    wait_until(lambda: counter(metrics_page(port), "edge_ids_records_total") >= before + 2000,
               30, "the service did not classify the records", system)
    expected = [c for c in expected_classes(first[2], lines) if c != "Normal"]
    got = read_alerts(system.path(ALERTS))[alerts_before:]
    assert [a["ml"]["class"] for a in got] == expected
    wait_until(lambda: f"{int(before) + 2000:,} records" in
               system.show(UNIT, "StatusText")["StatusText"], 15,
               "StatusText did not follow the counts", system)
    result = cli("status", *system.ssh_args(), "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["service"] == "active" and status["systemd"] is True
    assert status["counters"]["records"] == before + 2000


def test_a_release_that_fails_under_systemd_brings_back_and_restarts_the_previous(
        system, site, first, other_bundle):
    """The new release passes the probe (its model runs) but cannot serve under systemd: its
    metrics port is taken. The previous release comes back, and its service is restarted."""
    pid_before = site.main_pid()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = site.deploy(other_bundle, port=taken.getsockname()[1])
    assert result.exit_code == 1
    assert f"failed its health check and was rolled back to {first[0]}" in result.output
    assert "health: the daemon classified" in result.output  # the probe passed
    assert "Address already in use" in result.output, result.output  # the journal's reason
    assert f"rollback: current -> {first[0]}" in result.output
    assert site.current() == first[0]
    assert system.systemctl("is-active", UNIT).stdout.strip() == "active"
    assert site.main_pid() != pid_before  # restarted, not left as it was
    assert site.serving() == load_bundle(first[2]).model_sha256
    installed = system.path(f"/etc/systemd/system/{UNIT}").read_text()
    assert installed == system.path(f"{PREFIX}/releases/{first[0]}/{UNIT}").read_text()


def test_status_and_rollback_against_systemd(system, site, first, other_bundle):
    result = site.deploy(other_bundle)
    assert result.exit_code == 0, result.output
    second = site.current()
    assert second != first[0] and site.serving() == load_bundle(other_bundle).model_sha256
    text = cli("status", *system.ssh_args()).output
    assert "daemon:   systemd service active" in text
    assert f"* {second}" in text and "healthy" in text
    pid = site.main_pid()
    result = cli("rollback", *system.ssh_args())
    assert result.exit_code == 0, result.output
    assert f"current -> releases/{first[0]} (was {second})" in result.output
    assert site.current() == first[0]
    assert system.systemctl("is-active", UNIT).stdout.strip() == "active"
    assert site.main_pid() != pid
    assert site.serving() == load_bundle(first[2]).model_sha256
