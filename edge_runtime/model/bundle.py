"""Load a model bundle and refuse it, with a clear message, unless it is exactly what it claims.

A bundle is a directory (or a .tar.gz of one); docs/bundle.md documents the schema. It holds a
classifier (model.tflite + features.json), an anomaly model (anomaly.tflite + anomaly.json, its
own feature spec over the same raw records), or both (a hybrid), and manifest.json with the
SHA-256 of every other file, a schema version and, with an anomaly model, its threshold.
It may carry manifest.json.sig, an OpenSSH signature over the manifest (signature.py), checked
first against the device's trust policy. Anything missing, mismatched, untrusted or inconsistent
is a `BundleError`.
"""
from __future__ import annotations

import hashlib
import json
import math
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from .features import READABLE_SPEC_VERSIONS
from ..site.incident_settings import IncidentSettings, SettingsError, read_settings
from .signature import SIGNATURE_FILE, SignatureError, Signer, TrustPolicy, check_signature

BUNDLE_SCHEMA_VERSION = 2  # 2 added the anomaly model (hybrid and anomaly-only bundles)
READABLE_SCHEMA_VERSIONS = (1, 2)
MODEL_FILE, FEATURES_FILE, MANIFEST_FILE = "model.tflite", "features.json", "manifest.json"
ANOMALY_MODEL_FILE, ANOMALY_FEATURES_FILE = "anomaly.tflite", "anomaly.json"
CLASSIFIER, HYBRID, ANOMALY = "classifier", "hybrid", "anomaly"  # manifest "detector"
DETECTOR_FILES = {CLASSIFIER: (MODEL_FILE, FEATURES_FILE),
                  ANOMALY: (ANOMALY_MODEL_FILE, ANOMALY_FEATURES_FILE),
                  HYBRID: (MODEL_FILE, FEATURES_FILE, ANOMALY_MODEL_FILE, ANOMALY_FEATURES_FILE)}
ALL_FILES = (MANIFEST_FILE, MODEL_FILE, FEATURES_FILE, ANOMALY_MODEL_FILE, ANOMALY_FEATURES_FILE,
             SIGNATURE_FILE)
SCORE_MSE = "mean_squared_error"  # the one anomaly score the runtime computes


class BundleError(Exception):
    """The bundle is missing, corrupt, tampered with, or of a schema this version cannot read."""


@dataclass(frozen=True)
class AnomalyPart:
    """The anomaly model: its feature spec, its .tflite, and the operating point it ships with."""

    spec: dict
    model: bytes
    threshold: float  # a record whose score is above this is anomalous
    settings: dict  # the manifest's "anomaly" object (budget, validation rate, ...)


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict
    spec: dict | None  # the classifier's feature spec (None in an anomaly-only bundle)
    model: bytes | None  # the classifier's .tflite flatbuffer
    anomaly: AnomalyPart | None = None
    signer: Signer | None = None  # who signed the manifest (None: unsigned)
    incidents: IncidentSettings | None = None  # devices and incidents (a bundle of `learn`)
    # The bytes that were verified, by file name: what a copy of the bundle must write (reading
    # the files again could pick up a change made after the check).
    files: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def content_sha256(self) -> str:
        """The whole signed content: the manifest (which hashes every other file) and its
        signature. Two bundles with the same content hash are the same bundle."""
        from .signature import SIGNATURE_FILE as sig
        return sha256_bytes(sha256_bytes(self.files.get(MANIFEST_FILE, b"")).encode()
                            + sha256_bytes(self.files.get(sig, b"")).encode())

    @property
    def detector(self) -> str:
        return self.manifest.get("detector", CLASSIFIER)

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def raw(self) -> dict:
        """The raw record layout (both feature specs of a hybrid share it)."""
        return (self.spec or self.anomaly.spec)["raw"]

    @property
    def normal_threshold(self) -> float:
        """The classifier names an attack only when P(normal class) is below this (1: argmax)."""
        return float(self.manifest.get("classifier", {}).get("normal_threshold", 1.0))

    @property
    def model_sha256(self) -> str:
        """What alerts, metrics and deploy call the model. A classifier bundle: model.tflite's
        SHA-256. With an anomaly model: the SHA-256 of the decision itself (every model file's
        hash and both thresholds), so a new threshold is a new model too."""
        files = self.manifest["files"]
        if self.anomaly is None:
            return files[MODEL_FILE]["sha256"]
        decision = {name: files[name]["sha256"] for name in (MODEL_FILE, ANOMALY_MODEL_FILE)
                    if name in files}
        decision |= {"anomaly_threshold": self.anomaly.threshold,
                     "normal_threshold": self.normal_threshold}
        if self.incidents is not None:  # each device's threshold and the incident threshold
            decision |= {"devices": self.manifest["devices"],
                         "incidents": {k: v for k, v in self.manifest["incidents"].items()
                                       if k != "validation"}}
        return sha256_bytes(json.dumps(decision, sort_keys=True).encode())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_bundle(path: str | Path, trust: TrustPolicy = TrustPolicy()) -> Bundle:
    """Read and verify a bundle directory or .tar.gz (its signature first, under `trust`);
    raise BundleError saying what is wrong."""
    path = Path(path)
    files = bundle_files(path)
    try:
        signer = check_signature(files[MANIFEST_FILE], files.get(SIGNATURE_FILE), trust)
    except SignatureError as e:
        raise BundleError(f"{path}: refused: {e}") from None
    try:
        manifest = json.loads(files[MANIFEST_FILE])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: {MANIFEST_FILE} is not valid JSON ({e})") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version not in READABLE_SCHEMA_VERSIONS:
        raise BundleError(f"{path}: bundle schema version {version!r}, but this edge-ids reads "
                          f"versions {', '.join(map(str, READABLE_SCHEMA_VERSIONS))}; rebuild "
                          f"the bundle with a matching edge-ids or upgrade edge-ids on this "
                          f"device")
    detector = manifest.get("detector", CLASSIFIER) if version > 1 else CLASSIFIER
    if detector not in DETECTOR_FILES:
        raise BundleError(f"{path}: unknown detector {detector!r} in {MANIFEST_FILE}; expected "
                          f"one of {', '.join(DETECTOR_FILES)}")
    for name in DETECTOR_FILES[detector]:
        if name not in files:
            raise BundleError(f"{path}: a {detector} bundle holds "
                              f"{', '.join(DETECTOR_FILES[detector])}, but {name} is missing")
        _check_hash(path, name, files[name], manifest)
    specs = {name: _spec(path, name, files[name]) for name in (FEATURES_FILE,
                                                                 ANOMALY_FEATURES_FILE)
             if name in DETECTOR_FILES[detector]}
    anomaly = None
    if ANOMALY_FEATURES_FILE in specs:
        anomaly = AnomalyPart(specs[ANOMALY_FEATURES_FILE], files[ANOMALY_MODEL_FILE],
                              _threshold(path, manifest), manifest["anomaly"])
        classifier_spec = specs.get(FEATURES_FILE)
        if classifier_spec is not None and classifier_spec["raw"] != anomaly.spec["raw"]:
            raise BundleError(f"{path}: {FEATURES_FILE} and {ANOMALY_FEATURES_FILE} describe "
                              f"different raw record layouts; both models must read the same "
                              f"records")
    try:
        incidents = read_settings(manifest, anomaly.threshold if anomaly else None)
    except SettingsError as e:
        raise BundleError(f"{path}: inconsistent incident settings in {MANIFEST_FILE}: {e}") \
            from None
    kept = {name: files[name] for name in (MANIFEST_FILE, SIGNATURE_FILE,
                                           *DETECTOR_FILES[detector]) if name in files}
    return Bundle(path, manifest, specs.get(FEATURES_FILE), files.get(MODEL_FILE)
                  if FEATURES_FILE in specs else None, anomaly, signer, incidents, kept)


def _check_hash(path: Path, name: str, data: bytes, manifest: dict) -> None:
    expected = manifest.get("files", {}).get(name, {}).get("sha256")
    actual = sha256_bytes(data)
    if expected != actual:
        raise BundleError(f"{path}: {name} was modified or corrupted, refusing to load it: "
                          f"its SHA-256 is {actual}, the manifest says {expected}"
                          f"{_first_difference(actual, expected)}. Copy the bundle again from "
                          f"where it was built, or rebuild it")


def _spec(path: Path, name: str, data: bytes) -> dict:
    try:
        spec = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: {name} is not valid JSON ({e})") from None
    if spec.get("spec_version") not in READABLE_SPEC_VERSIONS:
        raise BundleError(f"{path}: {name}: feature spec version {spec.get('spec_version')!r}, "
                          f"this edge-ids reads versions "
                          f"{', '.join(map(str, READABLE_SPEC_VERSIONS))}")
    return spec


def _threshold(path: Path, manifest: dict) -> float:
    """The anomaly threshold: present, a finite number, and for the score the runtime knows."""
    settings = manifest.get("anomaly")
    if not isinstance(settings, dict):
        raise BundleError(f"{path}: the bundle has an anomaly model but {MANIFEST_FILE} has no "
                          f"\"anomaly\" object with its threshold; rebuild it with edge-ids learn")
    threshold = settings.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or \
            not math.isfinite(threshold) or threshold < 0:
        raise BundleError(f"{path}: anomaly threshold {threshold!r} is not a finite number >= 0; "
                          f"rebuild the bundle with edge-ids learn")
    if settings.get("score") != SCORE_MSE:
        raise BundleError(f"{path}: anomaly score {settings.get('score')!r}; this edge-ids "
                          f"computes {SCORE_MSE!r}")
    return float(threshold)


def _first_difference(actual: str, expected) -> str:
    """Where two hex digests part, so that a change in the last digit is not missed."""
    if not isinstance(expected, str):
        return ""
    i = next((i for i, (a, b) in enumerate(zip(actual, expected)) if a != b), None)
    return "" if i is None else f" (they differ from character {i + 1} on)"


def bundle_files(path: str | Path) -> dict[str, bytes]:
    """The bundle's files' bytes, unverified (load_bundle verifies; deploy copies them)."""
    path = Path(path)
    return _read_tar(path) if path.is_file() else _read_dir(path)


def _read_dir(path: Path) -> dict[str, bytes]:
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle directory or .tar.gz file")
    files = {name: (path / name).read_bytes() for name in ALL_FILES if (path / name).is_file()}
    _require_manifest(path, files)
    return files


def _read_tar(path: Path) -> dict[str, bytes]:
    """Read the bundle's files from a .tar.gz (top level or one folder deep), not extracting."""
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers()
                       if m.isfile() and len(Path(m.name).parts) <= 2}
            files = {name: tar.extractfile(members[name]).read() for name in ALL_FILES
                     if name in members}
    except tarfile.TarError:
        raise BundleError(f"{path}: not a bundle. A bundle is a folder (or a .tar.gz of one) "
                          f"holding {MANIFEST_FILE} with {MODEL_FILE} and {FEATURES_FILE} (a "
                          f"classifier) and/or {ANOMALY_MODEL_FILE} and {ANOMALY_FEATURES_FILE} "
                          f"(an anomaly model)"
                          + (f"; give the folder {path.parent}" if path.name in ALL_FILES
                             else "")) from None
    _require_manifest(path, files)
    return files


def _require_manifest(path: Path, files: dict) -> None:
    if MANIFEST_FILE not in files:
        raise BundleError(f"{path}: {MANIFEST_FILE} is missing; a bundle holds {MANIFEST_FILE} "
                          f"with {MODEL_FILE} and {FEATURES_FILE} (a classifier), "
                          f"{ANOMALY_MODEL_FILE} and {ANOMALY_FEATURES_FILE} (an anomaly model), "
                          f"or all four (a hybrid)")
