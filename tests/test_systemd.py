"""Deploy's systemd path under a real systemd, booted in its own Debian root
(tests/booted_systemd.py) and reached over ssh like a device: the unit installed,
daemon-reload, enable, restart, the is-active + metrics-page health check, a release that fails
under systemd (the previous one restored *and restarted*), status and rollback. Needs root. Slow
set (`pytest -m slow tests/test_systemd.py`): about 1-2 minutes once the root is cached
(~/.cache/edge-ids/systemd; building it takes 2-3 minutes), too much of CI's 20; the virtual Pi
(test_virtual_pi.py) runs the same path on a whole emulated machine. The unit's other promises
are in test_systemd_unit.py (slow too)."""
from __future__ import annotations

import json
import re
import socket

import pytest
from edge_ids.edge_runtime import load_bundle

from daemon_process import read_alerts, send
from systemd_site import (ALERTS, PREFIX, SOCKET, UNIT, cli, counter, first, metrics_page,  # noqa: F401 (fixtures)
                          site, system, wait_until)
from test_daemon import expected_classes

pytestmark = pytest.mark.slow


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
    # LiteRT saw the CPU (ProcSubset=pid hid /proc/cpuinfo), and its one-line noise was
    # filtered inside the sandbox too (the filter needs a writable temporary file)
    journal = system.journal(UNIT)
    assert "Error in cpuinfo" not in journal and "XNNPACK delegate" not in journal


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
