"""Device profiles load, and the unit rendered from each passes the real `systemd-analyze verify`
with the hardening and limits the daemon is meant to run under."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_ids.cli import main
from edge_ids.devices.profiles import ProfileError, load_profile, profile_names
from edge_ids.devices.unit import render_unit

import unit_sandbox
from conftest import REPO

README = "\n".join(p.read_text() for p in [REPO / "README.md", *(REPO / "docs").glob("*.md")])

REQUIRED = ["Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
            "DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
            "PrivateTmp=yes", "StateDirectory=edge-ids", "LogsDirectory=edge-ids"]


def test_every_profile_loads():
    names = profile_names()
    assert {"pi4", "pi5", "pi3", "pi-zero-2w", "generic-aarch64", "x86_64"} <= set(names)
    for name in names:
        p = load_profile(name)
        assert p.architecture in ("aarch64", "x86_64") and p.cores >= 1 and p.memory_mb >= 256
        assert p.max_batch >= 1 and p.watchdog_sec > 0 and p.memory_max.endswith("M")
        assert p.flow_report_seconds >= 1 and p.capture_memory_max.endswith("M")
    assert load_profile("pi4").cpu == "cortex-a72"


def test_an_unknown_device_names_the_valid_ones():
    with pytest.raises(ProfileError, match="pi4"):
        load_profile("pi9")
    result = CliRunner().invoke(main, ["unit", "--device", "pi9"])
    assert result.exit_code != 0 and "pi-zero-2w" in result.output


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("capture, quoted", [(None, "0.9 SAFE"), ("eth0", "1.8 OK")])
def test_systemd_analyze_security_rates_the_unit_as_the_readme_says(capture, quoted, tmp_path):
    unit = tmp_path / "edge-ids.service"
    unit.write_text(render_unit(load_profile("pi4"), capture=capture))
    rated = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                           capture_output=True, text=True)
    found = re.search(r"Overall exposure level for edge-ids.service: ([\d.]+ \w+)",
                      rated.stdout)
    assert found, rated.stdout + rated.stderr
    assert found.group(1) == quoted
    assert f"rates it **{quoted}**" in README or f"rates it {quoted}" in README


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("capture", [None, "eth0"])
@pytest.mark.parametrize("device", ["pi4", "pi-zero-2w", "x86_64"])
def test_unit_passes_systemd_analyze_verify(device, capture, tmp_path):
    prefix = tmp_path / "opt"  # verify checks that ExecStart's program exists
    (prefix / "current/venv/bin").mkdir(parents=True)
    (prefix / "current/venv/bin/edge-ids").symlink_to(Path(sys.executable).with_name("edge-ids"))
    profile = load_profile(device)
    text = render_unit(profile, str(prefix), capture=capture)
    assert "Documentation=man:systemd.exec(5)" in text  # manuals that exist, not a dead link
    assert f"{prefix}/current/venv/bin/edge-ids run --help" in text
    for line in REQUIRED + [f"WatchdogSec={profile.watchdog_sec}", f"CPUQuota={profile.cpu_quota}",
                            f"--max-batch {profile.max_batch}", "IPAddressDeny=any"]:
        assert line in text, line
    if capture:  # argus, a child, opens a packet socket: capabilities it inherits, AF_PACKET
        for line in ["edge-ids capture --interface eth0 --flow-report "
                     f"{profile.flow_report_seconds} --bundle", "PrivateUsers=no",
                     "AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN\n",
                     "CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN\n", " AF_PACKET",
                     "SystemCallFilter=~@privileged @resources\nSystemCallFilter=setuid\n",
                     f"MemoryMax={profile.capture_memory_max}"]:
            assert line in text, line
        assert "--input" not in text
    else:
        for line in ["edge-ids run --input unix:", "PrivateUsers=yes", "AmbientCapabilities=\n",
                     "CapabilityBoundingSet=\n", f"MemoryMax={profile.memory_max}"]:
            assert line in text, line
        assert "AF_PACKET" not in text and "SystemCallFilter=setuid" not in text
    unit = tmp_path / "edge-ids.service"
    unit.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 0 and "edge-ids.service" not in done.stderr, done.stderr
    broken = tmp_path / "broken" / "edge-ids.service"  # a control: verify does catch mistakes
    broken.parent.mkdir()
    broken.write_text(text.replace("Type=notify", "Type=notifyy"))
    done = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True,
                          text=True, cwd=tmp_path)
    assert "service type" in done.stderr


def test_metrics_beyond_loopback_lift_the_ip_policy():
    text = render_unit(load_profile("pi4"), metrics="0.0.0.0:9108")
    assert "IPAddressDeny" not in text and "--metrics 0.0.0.0:9108" in text
    with pytest.raises(ValueError, match="absolute"):
        render_unit(load_profile("pi4"), prefix="opt/edge-ids")


def test_the_unit_command_prints_the_unit(tmp_path):
    result = CliRunner().invoke(main, ["unit", "--device", "pi4", "-o", str(tmp_path / "u")])
    assert result.exit_code == 0, result.output
    assert "ExecStart=/opt/edge-ids/current/venv/bin/edge-ids run" in (tmp_path / "u").read_text()
    listing = CliRunner().invoke(main, ["devices"])
    assert listing.exit_code == 0 and "cortex-a72" in listing.output


@pytest.mark.skipif(unit_sandbox.missing() is not None, reason=str(unit_sandbox.missing()))
def test_the_daemon_runs_under_the_units_user_capabilities_and_system_call_filter(
        small_pipeline, kdd_test_lines):
    """No running systemd here: tests/unit_sandbox.py rebuilds the unit's user, capabilities
    (none) and seccomp filter from its text, and the daemon classifies inside them."""
    unit = render_unit(load_profile("pi4"))
    folder = Path(tempfile.mkdtemp())
    try:
        shutil.copytree(small_pipeline[0] / "bundle", folder / "bundle")
        (folder / "records.csv").write_bytes(b"".join(kdd_test_lines[:1000]))
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        edge_ids = str(Path(sys.executable).with_name("edge-ids"))
        done = subprocess.run(unit_sandbox.sandboxed(
            [edge_ids, "run", "--bundle", str(folder / "bundle"), "--input",
             f"file:{folder / 'records.csv'}", "--alerts", "-", "--emit", "all", "--metrics",
             "127.0.0.1:0"], unit), capture_output=True, text=True, timeout=120, cwd="/")
    finally:
        shutil.rmtree(folder)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1000 and "metrics on http://127.0.0.1:" in done.stderr
    script = Path(tempfile.mkdtemp()) / "nice.py"  # the control: the filter is in force
    script.write_text("#!/usr/bin/env python3\nimport os\nos.nice(1)\nprint('niced')\n")
    script.chmod(0o755)
    script.parent.chmod(0o755)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    try:
        free = subprocess.run([*nobody, sys.executable, str(script)], capture_output=True,
                              text=True)
        filtered = subprocess.run(unit_sandbox.sandboxed([str(script)], unit),
                                  capture_output=True, text=True)
    finally:
        shutil.rmtree(script.parent)
    assert free.stdout == "niced\n", free.stderr  # nobody may lower its own priority...
    assert "os.nice(1)" in filtered.stderr and "PermissionError" in filtered.stderr
    assert "niced" not in filtered.stdout  # ...but setpriority is in @resources, denied
