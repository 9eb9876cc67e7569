"""The controller's part of the Ansible role (ansible/roles/edge_ids): check one host against its
device profile and the bundle against the host's signature policy, as `deploy` does, and build
the release package once per (architecture, Python, glibc) with `deploy --output`'s own code.
Hosts of one batch ask at the same time; a lock makes one build and the others wait for it.
What differs per host (its unit, its release.json) is returned, not built: the role puts it into
the unpacked package on the device."""
from __future__ import annotations

import fcntl
import json
import tarfile
from dataclasses import replace
from importlib import resources
from pathlib import Path

from ..edge_runtime.model.bundle import load_bundle
from .deploy import DeployOptions, Steps, check_target, write_package
from .profiles import load_profile
from .unit import render_unit

ANSIBLE_DIR = Path(str(resources.files(__package__) / "ansible"))
ROLES_DIR = ANSIBLE_DIR / "roles"
FLEET_PLAYBOOK = ANSIBLE_DIR / "fleet.yml"
STATUS_PLAYBOOK = ANSIBLE_DIR / "status.yml"


def package_for_host(options: DeployOptions, probe: dict, directory: Path, log) -> dict:
    """{archive, id, release, unit}: the shared package for this host's kind of target (built
    if this run has none yet) and this host's own unit and release.json."""
    profile = load_profile(options.device)
    trust = options.trust(profile)  # raises when the profile requires keys that are not given
    target = check_target(profile, probe)
    load_bundle(options.bundle, trust)  # refused here as the device would refuse it
    directory.mkdir(parents=True, exist_ok=True)
    key = f"{target.architecture}-py{target.python}-glibc2.{target.glibc}"
    archive, described = directory / f"{key}.tar.gz", directory / f"{key}.json"
    with open(directory / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not described.is_file():
            # Host-independent: no keys inside (each host gets its own, or none), and the unit
            # and release.json are replaced per host below.
            shared = replace(options, output=archive, allowed_signers=None,
                             require_signature=False, python=target.python)
            shared.trust(profile)
            write_package(shared, profile, target, Steps(log, 3), log)
            described.write_text(json.dumps(_release_of(archive)))
    release = json.loads(described.read_text())
    release |= {"device": profile.name, "metrics": options.metrics,
                "unsigned_on_purpose": trust.allow_unsigned}
    return {"archive": str(archive), "id": release["id"], "release": release,
            "unit": render_unit(profile, **options.unit_options)}


def _release_of(archive: Path) -> dict:
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/release.json"))
        return json.loads(tar.extractfile(member).read())
