"""What the device is (devices/probe.py) and what deploy makes of it: the facts read on this
machine, probe.py alone on stdin as deploy and the Ansible role send it, a 32-bit Pi OS refused,
and the memory-cgroup notes of deploy and status."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import pytest


def test_a_32_bit_os_is_refused_with_the_reason(tmp_path):
    """The facts probe.py reads on this machine, as a 32-bit Pi OS reports them. probe.py runs
    alone, from stdin, as deploy and the Ansible role send it (nothing beside it)."""
    from edge_ids.devices.deploy import DeployError, check_target
    from edge_ids.devices.package import PROBE_SCRIPT
    from edge_ids.devices.profiles import load_profile

    done = subprocess.run(["/usr/bin/python3", "-"], input=PROBE_SCRIPT.read_text(), cwd=tmp_path,
                          capture_output=True, text=True, check=True)
    facts = json.loads(done.stdout.split("RESULT ")[-1])
    assert facts["architecture"] == platform.machine() and facts["uid"] == os.getuid()
    assert check_target(load_profile("x86_64"), facts).architecture == "x86_64"  # control
    with pytest.raises(DeployError) as refused:
        check_target(load_profile("pi4"), facts | {"architecture": "armv7l"})
    said = str(refused.value)
    assert "32-bit Raspberry Pi OS" in said and "no 32-bit wheels" in said
    assert "install the 64-bit Raspberry Pi OS" in said


def test_deploy_and_status_say_when_memory_max_is_ignored():
    """Both decide from what probe.py reads on the device (its memory_cgroup(), checked
    here against the kernel's /proc/cgroups). Under a running systemd only: this machine has
    none, so the real deploy takes the no-systemd branch (test_deploy_puts_everything_...)."""
    from edge_ids.cli_deploy import format_status
    from edge_ids.devices.deploy import report_notes
    from edge_ids.devices.probe import memory_cgroup

    # MemoryMax= needs the memory controller on; systemd applies it on cgroup v2 and on the
    # v1/hybrid hierarchies (shown under the booted systemd here, which has v1: test_systemd_unit)
    enabled = {line.split()[0]: line.split()[3] == "1" for line in
               Path("/proc/cgroups").read_text().splitlines()[1:]}
    assert memory_cgroup() == enabled.get("memory", False)
    off = report_notes({"systemd": True, "memory_cgroup": False})
    assert len(off) == 1 and "MemoryMax= is ignored there" in off[0]
    assert "cgroup_enable=memory to /boot/firmware/cmdline.txt" in off[0]
    assert report_notes({"systemd": True, "memory_cgroup": True}) == []
    assert "start the daemon by hand" in report_notes({"systemd": False,
                                                      "memory_cgroup": False})[0]
    status = {"prefix": "/opt/edge-ids", "systemd": True, "service": "active",
              "memory_cgroup": False, "metrics": None, "metrics_error": "refused",
              "releases": []}
    assert "the memory cgroup is off, so MemoryMax= is ignored" in format_status("pi", status)
    assert "memory cgroup" not in format_status("pi", status | {"memory_cgroup": True})
