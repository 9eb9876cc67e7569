"""A device whose service user has no passwd entry (systemd's DynamicUser= without
libnss-systemd, as the virtual Pi's first image had) cannot run ssh-keygen: the refusal says
what to install instead of blaming the bundle."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import sshd
from edge_ids.edge_runtime.model.signature import NAMESPACE

UNNAMED_UID = 62237  # in systemd's dynamic range, with no passwd entry on this machine


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv (util-linux) to run as an unnamed uid")
def test_an_unnamed_service_user_is_told_to_install_libnss_systemd(small_pipeline):
    import pwd

    with pytest.raises(KeyError):
        pwd.getpwuid(UNNAMED_UID)
    folder = Path(tempfile.mkdtemp(prefix="edge-ids-unnamed-"))
    try:
        folder.chmod(0o755)
        kind, blob = sshd.keygen(folder / "release").split()[:2]
        allowed = folder / "allowed_signers"
        allowed.write_text(f'ops namespaces="{NAMESPACE}" {kind} {blob}\n')
        bundle = Path(shutil.copytree(small_pipeline[0] / "bundle", folder / "bundle"))
        signed = subprocess.run([sys.executable, "-m", "edge_ids", "sign", "--key",
                                 str(folder / "release"), str(bundle)], capture_output=True)
        assert signed.returncode == 0, signed.stderr
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        command = [sys.executable, "-m", "edge_ids", "verify", "--allowed-signers",
                   str(allowed), str(bundle)]
        as_root = subprocess.run(command, capture_output=True, text=True)
        assert as_root.returncode == 0, as_root.stderr  # the control: the bundle is fine
        unnamed = subprocess.run(["setpriv", f"--reuid={UNNAMED_UID}",
                                  f"--regid={UNNAMED_UID}", "--clear-groups", *command],
                                 capture_output=True, text=True, cwd=folder)
        assert unnamed.returncode == 5, unnamed.stdout + unnamed.stderr
        message = unnamed.stdout + unnamed.stderr
        assert f"ssh-keygen cannot run as uid {UNNAMED_UID}" in message
        assert "apt install libnss-systemd" in message
    finally:
        shutil.rmtree(folder)
