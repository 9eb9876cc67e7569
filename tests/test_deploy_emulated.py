"""Slow: the pi4 / Python 3.11 package, built here, installed by its own install.py inside an
emulated aarch64 Debian root (qemu-aarch64, -cpu cortex-a72), and the unit's ExecStart there
classifying all of KDDTest+ like the host does. Run as root, about 4 minutes:

    apt-get install -y qemu-user-static debootstrap
    .venv/bin/python -m pytest -m slow tests/test_deploy_emulated.py -s

The Debian root is cached in $EDGE_IDS_EMULATION_CACHE (default ~/.cache/edge-ids/emulation)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_ids.cli import main
from edge_ids.devices.install import exec_start, with_options
from edge_ids.devices.profiles import load_profile

import emulated_root
from test_daemon import expected_classes

pytestmark = pytest.mark.slow
CACHE = Path(os.environ.get("EDGE_IDS_EMULATION_CACHE")
             or Path.home() / ".cache" / "edge-ids" / "emulation")


@pytest.fixture(scope="module")
def aarch64_root(tmp_path_factory):
    """A fresh copy of the cached Bookworm arm64 root, with aarch64 programs handed to qemu."""
    why = emulated_root.missing()
    if why:
        pytest.skip(why)
    cached = emulated_root.build_root(CACHE / "bookworm-arm64")
    root = tmp_path_factory.mktemp("emulated") / "root"
    subprocess.run(["cp", "-a", cached, root], check=True)
    registered = emulated_root.register_binfmt()
    yield root
    if registered:
        emulated_root.unregister_binfmt()


def test_pi4_package_installs_and_classifies_like_the_host(aarch64_root, small_pipeline,
                                                           kdd_test_lines, tmp_path):
    profile = load_profile("pi4")
    bundle = small_pipeline[0] / "bundle"
    package = tmp_path / "pi4.tar.gz"
    result = CliRunner().invoke(main, ["deploy", "--device", "pi4", "--python", "3.11",
                                       "--bundle", str(bundle), "--output", str(package)])
    assert result.exit_code == 0, result.output
    with tarfile.open(package) as tar:
        tar.extractall(aarch64_root / "tmp", filter="tar")
        release_id = tar.getnames()[0].split("/")[0]

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        return emulated_root.chroot(aarch64_root, argv, cpu=profile.cpu)

    python = run(["/usr/bin/python3", "-c", "import platform; print(platform.machine(), "
                  "platform.python_version())"])
    assert python.stdout.split()[0] == "aarch64" and python.stdout.split()[1].startswith("3.11")

    install = run(["/usr/bin/python3", f"/tmp/{release_id}/install.py", "install",
                   "--prefix", "/opt/edge-ids", "--systemd", "no", "--timeout", "300"])
    print(install.stdout)
    assert install.returncode == 0, install.stdout + install.stderr
    outcome = json.loads(install.stdout.splitlines()[-1].removeprefix("RESULT "))
    assert outcome["ok"] and outcome["release"] == release_id
    numpy = run(["/opt/edge-ids/current/venv/bin/python", "-c",
                 "import numpy, ai_edge_litert; print(numpy.__file__)"])
    assert numpy.returncode == 0 and numpy.stdout.startswith("/opt/edge-ids/"), numpy.stderr

    (aarch64_root / "tmp/kddtest.csv").write_bytes(b"".join(kdd_test_lines))
    unit = (aarch64_root / "opt/edge-ids/current/edge-ids.service").read_text()
    argv = with_options(exec_start(unit), {"--input": "file:/tmp/kddtest.csv",
                                           "--alerts": "/tmp/eve.json", "--emit": "all"},
                        drop=("--metrics",))
    daemon = run(argv)
    assert daemon.returncode == 0, daemon.stderr
    lines = (aarch64_root / "tmp/eve.json").read_text().splitlines()
    emulated = [json.loads(line)["ml"]["class"] for line in lines]
    host = expected_classes(bundle, kdd_test_lines)
    assert len(emulated) == len(host) == 22544
    agreement = sum(a == b for a, b in zip(emulated, host)) / len(host)
    print(f"aarch64 ({profile.cpu}, emulated) vs host on KDDTest+: {agreement:.4%} agree "
          f"({sum(a != b for a, b in zip(emulated, host))} of {len(host)} differ)")
    assert emulated == host  # what the README claims: 22,544 of 22,544 agree
    shutil.rmtree(aarch64_root)
