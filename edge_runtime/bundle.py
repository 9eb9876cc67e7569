"""Load a model bundle and refuse it, with a clear message, unless it is exactly what it claims.

A bundle is a directory (or a .tar.gz of one) holding model.tflite, features.json and
manifest.json; docs/bundle.md documents the schema. The manifest records the SHA-256 of the
other two files and a schema version; anything that does not match is a `BundleError`.
"""
from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .features import FEATURE_SPEC_VERSION

BUNDLE_SCHEMA_VERSION = 1
MODEL_FILE, FEATURES_FILE, MANIFEST_FILE = "model.tflite", "features.json", "manifest.json"


class BundleError(Exception):
    """The bundle is missing, corrupt, tampered with, or of a schema this version cannot read."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict
    spec: dict
    model: bytes  # the .tflite flatbuffer

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def model_sha256(self) -> str:
        return self.manifest["files"][MODEL_FILE]["sha256"]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_bundle(path: str | Path) -> Bundle:
    """Read and verify a bundle directory or .tar.gz; raise BundleError saying what is wrong."""
    path = Path(path)
    files = bundle_files(path)
    try:
        manifest = json.loads(files[MANIFEST_FILE])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: {MANIFEST_FILE} is not valid JSON ({e})") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != BUNDLE_SCHEMA_VERSION:
        raise BundleError(f"{path}: bundle schema version {version!r}, but this edge-ids reads "
                          f"version {BUNDLE_SCHEMA_VERSION}; rebuild the bundle with a matching "
                          f"edge-ids or upgrade edge-ids on this device")
    for name in (MODEL_FILE, FEATURES_FILE):
        expected = manifest.get("files", {}).get(name, {}).get("sha256")
        actual = sha256_bytes(files[name])
        if expected != actual:
            raise BundleError(f"{path}: {name} was modified or corrupted, refusing to load "
                              f"it: its SHA-256 is {actual}, the manifest says {expected}"
                              f"{_first_difference(actual, expected)}. Copy the bundle again "
                              f"from where it was built, or rebuild it")
    spec = json.loads(files[FEATURES_FILE])
    if spec.get("spec_version") != FEATURE_SPEC_VERSION:
        raise BundleError(f"{path}: feature spec version {spec.get('spec_version')!r}, this "
                          f"edge-ids reads version {FEATURE_SPEC_VERSION}")
    return Bundle(path, manifest, spec, files[MODEL_FILE])


def _first_difference(actual: str, expected) -> str:
    """Where two hex digests part, so that a change in the last digit is not missed."""
    if not isinstance(expected, str):
        return ""
    i = next((i for i, (a, b) in enumerate(zip(actual, expected)) if a != b), None)
    return "" if i is None else f" (they differ from character {i + 1} on)"


def bundle_files(path: str | Path) -> dict[str, bytes]:
    """The three files' bytes, unverified (load_bundle verifies; deploy copies them as they are)."""
    path = Path(path)
    return _read_tar(path) if path.is_file() else _read_dir(path)


def _read_dir(path: Path) -> dict[str, bytes]:
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle directory or .tar.gz file")
    files = {}
    for name in (MANIFEST_FILE, MODEL_FILE, FEATURES_FILE):
        try:
            files[name] = (path / name).read_bytes()
        except FileNotFoundError:
            raise BundleError(f"{path}: {name} is missing; a bundle holds "
                              f"{MODEL_FILE}, {FEATURES_FILE} and {MANIFEST_FILE}") from None
    return files


def _read_tar(path: Path) -> dict[str, bytes]:
    """Read the three files from a .tar.gz (top level or one folder deep) without extracting."""
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers()
                       if m.isfile() and len(Path(m.name).parts) <= 2}
            files = {}
            for name in (MANIFEST_FILE, MODEL_FILE, FEATURES_FILE):
                if name not in members:
                    raise BundleError(f"{path}: {name} is missing from the archive")
                files[name] = tar.extractfile(members[name]).read()
            return files
    except tarfile.TarError:
        raise BundleError(f"{path}: not a bundle. A bundle is a folder (or a .tar.gz of one) "
                          f"holding {MODEL_FILE}, {FEATURES_FILE} and {MANIFEST_FILE}"
                          + (f"; give the folder {path.parent}" if path.name in
                             (MODEL_FILE, FEATURES_FILE, MANIFEST_FILE) else "")) from None
