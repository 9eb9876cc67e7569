"""What the booted-systemd tests share: one boot per test module (tests/booted_systemd.py), the
first deploy into it over ssh, and small readers of the service's state and metrics page."""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_ids.cli import main
from edge_ids.edge_runtime import load_bundle

import booted_systemd
import sshd

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
    if not (CACHE / "bookworm").is_dir() and not booted_systemd.mirror_reachable():
        pytest.skip(f"no cached root in {CACHE} and deb.debian.org is out of reach to build one")
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


def wait_until(condition, timeout: float, what: str, system=None, every: float = 0.2):
    """condition()'s first true value within timeout, else an AssertionError with the unit's
    journal on `system` (a BootedSystemd or the virtual Pi)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
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
