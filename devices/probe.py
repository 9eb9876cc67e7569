"""What the device is: architecture, Python, glibc, systemd, the memory cgroup, root or sudo.

Standard library only, and alone: `edge-ids deploy` sends this file on stdin
(`python3 - < probe.py`) and the Ansible role with its `script` module before anything is
built for the device; install.py reads the same facts from it when it installs.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path


def has_systemd() -> bool:
    """sd_booted(): systemd is PID 1 when /run/systemd/system exists."""
    return os.path.isdir("/run/systemd/system") and shutil.which("systemctl") is not None


def memory_cgroup() -> bool:
    """Is the kernel's memory controller on (cgroup v2, or v1/hybrid as on older systems)?"""
    try:
        for line in Path("/proc/cgroups").read_text().splitlines():
            fields = line.split()
            if fields and fields[0] == "memory":
                return fields[-1] == "1"
    except OSError:
        pass
    try:
        return "memory" in Path("/sys/fs/cgroup/cgroup.controllers").read_text().split()
    except OSError:
        return False


def facts() -> dict:
    """What deploy checks against the device profile before it builds anything."""
    root = os.getuid() == 0
    sudo = root or (shutil.which("sudo") is not None and subprocess.run(
        ["sudo", "-n", "true"], capture_output=True).returncode == 0)
    return {"architecture": platform.machine(), "python": "%d.%d" % sys.version_info[:2],
            "python_full": platform.python_version(), "libc": platform.libc_ver(),
            "uid": os.getuid(), "systemd": has_systemd(), "memory_cgroup": memory_cgroup(),
            "sudo": sudo}


if __name__ == "__main__":  # (an argument `probe`, as install.py takes it, is allowed)
    print("RESULT " + json.dumps(facts()), flush=True)
