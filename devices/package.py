"""The release package: everything a device needs, built on the host so the device needs no
internet. A directory (or a .tar.gz of one) holding the bundle, a wheelhouse for the device's
architecture and Python (the edge-ids wheel, its base dependencies at the versions tested here,
and pip itself), the rendered unit, a few probe records, release.json and install.py."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from .. import __version__
from ..edge_runtime.model.bundle import load_bundle
from ..edge_runtime.model.signature import TrustPolicy
from .release_prefix import ALLOWED_SIGNERS_FILE, DEVICE_SCRIPTS
from .profiles import DeviceProfile
from .unit import render_unit

HERE = Path(__file__).parent
PROBE_SCRIPT = HERE / "probe.py"  # sent alone on stdin: what the device is
# glibc of the Raspberry Pi OS (Debian) release that ships each Python: Bookworm 3.11, Trixie 3.13.
GLIBC_FOR_PYTHON = {"3.11": 36, "3.12": 39, "3.13": 41}


class PackageError(Exception):
    """The package cannot be built (no wheel for the device, no source tree, bad bundle)."""


class WheelhouseError(PackageError):
    """The --wheelhouse given lacks the edge-ids wheel of this version."""


def check_wheel_inputs(wheelhouse: Path | None) -> str:
    """What the wheelhouse will be made from, checked before anything else runs: the wheels
    of --wheelhouse (with this version's edge-ids wheel among them), or this source tree."""
    if wheelhouse is None:
        return f"the edge-ids wheel built from {source_tree()}"
    wheels = sorted(Path(wheelhouse).glob("*.whl"))
    if not any(w.name.startswith(f"edge_ids-{__version__}-") for w in wheels):
        raise WheelhouseError(f"--wheelhouse {wheelhouse}: no edge_ids-{__version__} wheel "
                              f"among its {len(wheels)} wheels; build it with `pip wheel "
                              f"--no-deps .` in the repository, or leave --wheelhouse out")
    return f"the {len(wheels)} wheels of {wheelhouse}"


@dataclass(frozen=True)
class Target:
    """What the wheels must fit: `uname -m`, the Python minor version and the glibc minor."""
    architecture: str
    python: str
    glibc: int

    @property
    def platforms(self) -> list[str]:
        """pip matches --platform tags exactly, so pass the whole manylinux ladder
        (TOOLCHAIN.md §4: one tag alone finds no ai-edge-litert, or an old one)."""
        return [f"manylinux2014_{self.architecture}"] + [
            f"manylinux_2_{minor}_{self.architecture}" for minor in range(17, self.glibc + 1)]


def pinned_requirements() -> list[str]:
    """edge-ids' base dependencies at the versions installed here (what the tests ran with),
    plus pip, which installs them on the device from its own wheel."""
    names = [r.split(";")[0].split("[")[0].strip() for r in metadata.requires("edge-ids") or []
             if "extra ==" not in r]
    names = [n.split(">")[0].split("<")[0].split("=")[0].split("!")[0].strip() for n in names]
    return [f"{n}=={metadata.version(n)}" for n in names + ["pip"]]


def source_tree() -> Path:
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise PackageError("this edge-ids was not installed from a source tree, so it cannot "
                           "build its own wheel; pass --wheelhouse DIR with the edge-ids wheel "
                           "and its dependencies for the device")
    return root


def build_wheelhouse(dest: Path, target: Target, log=print) -> list[Path]:
    """The edge-ids wheel (built from this source tree) and the pinned dependencies as binary
    wheels for the target (`pip download --platform ...`; needs the package index once)."""
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    log(f"building the edge-ids {__version__} wheel")
    _pip(pip + ["wheel", "--no-deps", "--quiet", "--wheel-dir", dest, source_tree()])
    requirements = pinned_requirements()
    log(f"downloading wheels for {target.architecture} CPython {target.python} "
        f"(glibc 2.{target.glibc}): {' '.join(requirements)}")
    # Their own dependencies too at the versions installed here, where this host has them.
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("".join(
            f"{d.metadata['Name']}=={d.version}\n" for d in metadata.distributions()
            if d.metadata["Name"] and d.metadata["Name"].lower() != "edge-ids"))
        _pip(pip + ["download", "--quiet", "--only-binary=:all:", "--implementation", "cp",
                    "--constraint", constraints, "--python-version", target.python,
                    "--dest", dest, *[a for p in target.platforms for a in ("--platform", p)],
                    *requirements])
    return sorted(dest.glob("*.whl"))


def _pip(argv: list) -> None:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    if result.returncode != 0:
        raise PackageError(f"pip failed: {result.stderr.strip()[-1500:]}")


def wheelhouse_sha256(wheels: list[Path]) -> str:
    """A hash of what the wheels install (their RECORD files), not of the zip bytes: a rebuilt
    edge-ids wheel with the same code has new time stamps but the same hash, so a model-only
    release reuses the device's venv."""
    digest = hashlib.sha256()
    for wheel in sorted(wheels, key=lambda p: p.name):
        with zipfile.ZipFile(wheel) as archive:
            record = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
            digest.update(wheel.name.encode() + b"\0" + archive.read(record))
    return digest.hexdigest()


def probe_records(spec: dict) -> list[str]:
    """Records that exercise every raw column: numeric columns at their training minimum, then
    maximum; categorical ones at their first and last known value (health check input)."""
    low, high = {}, {}
    for feature in spec["kept"]:
        if "value" not in feature:
            low[feature["column"]], high[feature["column"]] = feature["min"], feature["max"]
    lines = []
    for bound, pick in ((low, 0), (high, -1)):
        fields = []
        for column in spec["raw"]["columns"]:
            name = column["name"]
            if column["type"] == "categorical":
                fields.append(str((spec["one_hot"].get(name) or ["x"])[pick]))
            else:
                fields.append(repr(float(bound.get(name, 0.0))))
        lines.append(",".join(fields))
    return lines


def build_package(parent: Path, profile: DeviceProfile, bundle_path: Path, target: Target,
                  unit_options: dict, wheelhouse: Path | None = None, log=print,
                  allowed_signers: Path | None = None,
                  trust: TrustPolicy = TrustPolicy()) -> tuple[dict, Path]:
    """Write the package into parent/<release id>; returns its release.json and its path.
    `allowed_signers` (the keys the device is to trust) goes into the package beside the unit,
    with FILE.sig when `edge-ids rotate-keys` made one (trust_anchor.py decides on them). The
    bundle is verified under `trust` (the device's policy) and the bytes verified are the bytes
    written."""
    bundle = load_bundle(bundle_path, trust)
    if target.architecture != profile.architecture:
        raise PackageError(f"profile {profile.name} is {profile.architecture}, the target "
                           f"is {target.architecture}")
    created = datetime.now(timezone.utc)
    release_id = f"{created:%Y%m%dT%H%M%SZ}-{bundle.model_sha256[:8]}"
    dest = parent / release_id
    dest.mkdir(parents=True)
    (dest / "bundle").mkdir()
    for name, data in bundle.files.items():
        (dest / "bundle" / name).write_bytes(data)
    wheels_dir = dest / "wheels"
    check_wheel_inputs(wheelhouse)
    if wheelhouse is None:
        wheels = build_wheelhouse(wheels_dir, target, log)
    else:
        wheels_dir.mkdir()
        wheels = [Path(shutil.copy2(w, wheels_dir)) for w in sorted(wheelhouse.glob("*.whl"))]
        log(f"wheelhouse: {len(wheels)} wheels from {wheelhouse}")
    if not any(w.name.startswith(f"edge_ids-{__version__}-") for w in wheels):
        raise PackageError(f"no edge_ids-{__version__} wheel in the wheelhouse")
    (dest / "edge-ids.service").write_text(render_unit(profile, **unit_options))
    (dest / "probe.csv").write_text("\n".join(probe_records(bundle.spec or bundle.anomaly.spec)) + "\n")
    for name in DEVICE_SCRIPTS:  # install.py and the two modules it imports
        shutil.copy2(HERE / name, dest / name)
    if allowed_signers is not None:
        shutil.copyfile(allowed_signers, dest / ALLOWED_SIGNERS_FILE)
        signature = allowed_signers.with_name(allowed_signers.name + ".sig")
        if signature.is_file():
            shutil.copyfile(signature, dest / f"{ALLOWED_SIGNERS_FILE}.sig")
    release = {
        "id": release_id,
        "created_utc": created.isoformat(timespec="seconds"),
        "device": profile.name, "architecture": target.architecture, "python": target.python,
        "edge_ids_version": __version__, "dataset": bundle.manifest.get("dataset"),
        "model_sha256": bundle.model_sha256,
        # the manifest (hashing every file) and its signature: any change to the bundle
        "bundle_sha256": bundle.content_sha256,
        "metrics": unit_options.get("metrics"),
        # --allow-unsigned: install.py refuses it on a device with a trust anchor
        "unsigned_on_purpose": trust.allow_unsigned,
        "wheels": [w.name for w in wheels], "wheelhouse_sha256": wheelhouse_sha256(wheels)}
    (dest / "release.json").write_text(json.dumps(release, indent=1) + "\n")
    return release, dest


def write_archive(package: Path, output: Path) -> None:
    """package/ as OUTPUT.tar.gz with one top folder (the release id)."""
    with tarfile.open(output, "w:gz") as tar:
        tar.add(package, arcname=package.name)
