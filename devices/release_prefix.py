"""The install prefix on the device: releases/<id>/, venvs/<wheelhouse hash>/, the `current`
link and the trust anchor's place, and whether a new release would change the current one.

Standard library only: it travels in every release package beside install.py and probe.py,
and is kept under the prefix with them (`status` and `rollback` run from there).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

UNIT_NAME = "edge-ids.service"
ALLOWED_SIGNERS_FILE = "allowed_signers"  # optional in a release: the keys it asks to trust
# The keys the daemon trusts, under the prefix but outside every release (trust_anchor.py)
TRUST_ANCHOR = f"trust/{ALLOWED_SIGNERS_FILE}"
DEFAULT_PREFIX = "/opt/edge-ids"
DEVICE_SCRIPTS = ("install.py", "probe.py", "release_prefix.py",
                  "trust_anchor.py")  # travel and stay together


class Prefix:
    """The install prefix on the device: releases, venvs and the `current` link."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.releases = self.path / "releases"
        self.venvs = self.path / "venvs"
        self.current_link = self.path / "current"

    def current(self) -> str | None:
        try:
            return Path(os.readlink(self.current_link)).name
        except OSError:
            return None

    def release_ids(self) -> list[str]:
        """Oldest first (ids begin with a UTC time stamp)."""
        if not self.releases.is_dir():
            return []
        return sorted(p.name for p in self.releases.iterdir() if (p / "release.json").is_file())

    def info(self, release_id: str) -> dict:
        directory = self.releases / release_id
        release = json.loads((directory / "release.json").read_text())
        health = directory / "health.json"
        release["health"] = json.loads(health.read_text()) if health.is_file() else None
        return release

    def switch(self, release_id: str | None) -> None:
        """Point `current` at a release (None removes it) with one atomic rename."""
        if release_id is None:
            self.current_link.unlink(missing_ok=True)
            return
        temporary = self.path / f".current-{os.getpid()}"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(Path("releases") / release_id)
        os.replace(temporary, self.current_link)

    def previous_healthy(self, before: str | None) -> str | None:
        """The newest release older than `before` whose last health check passed."""
        for release_id in reversed(self.release_ids()):
            if before is not None and release_id >= before:
                continue
            health = self.info(release_id)["health"]
            if health and health.get("ok"):
                return release_id
        return None

    def prune(self, keep: int) -> list[str]:
        """Keep the newest `keep` releases and the current one; drop venvs nobody links to.
        Returns what was removed, for the log."""
        current, removed = self.current(), []
        for release_id in self.release_ids()[:-keep] if keep > 0 else []:
            if release_id != current:
                shutil.rmtree(self.releases / release_id)
                removed.append(f"release {release_id}")
        used = {os.readlink(self.releases / r / "venv").rsplit("/", 1)[-1]
                for r in self.release_ids()}
        for venv in self.venvs.iterdir() if self.venvs.is_dir() else []:
            if venv.name not in used:
                shutil.rmtree(venv)
                removed.append(f"unused venv {venv.name}")
        return removed


def same_as_current(prefix: Prefix, package: Path, release: dict, unit: str) -> bool:
    """The current release is healthy and has this package's whole bundle (its manifest, which
    hashes every file, and its signature), wheels, unit (`unit`: as it would be installed) and
    keys: installing it again would change nothing (for Ansible's "ok" instead of "changed").
    A release from before bundle_sha256 was recorded is never the same."""
    current = prefix.current()
    if current is None or current not in prefix.release_ids():
        return False
    info, directory = prefix.info(current), prefix.releases / current
    keys = ("model_sha256", "bundle_sha256", "wheelhouse_sha256", "metrics")
    read = (lambda path: path.read_bytes() if path.is_file() else None)
    return (info["health"] or {}).get("ok") and release.get("bundle_sha256") is not None and \
        all(info.get(k) == release.get(k) for k in keys) and \
        read(directory / UNIT_NAME) == unit.encode() and \
        all(read(directory / f) == read(package / f)
            for f in (ALLOWED_SIGNERS_FILE, f"{ALLOWED_SIGNERS_FILE}.sig"))
