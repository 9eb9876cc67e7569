"""`edge-ids sign`, host side: put an OpenSSH signature of the manifest into a bundle directory or
.tar.gz. The bundle is checked first (a broken bundle is never signed) and again after (the new
signature must match). The device side is edge_runtime/model/signature.py. `edge-ids rotate-keys`:
sign a new list of trusted keys with a key the devices trust (devices/trust_anchor.py)."""
from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .edge_runtime.model.bundle import MANIFEST_FILE, BundleError, bundle_files, load_bundle
from .devices.trust_anchor import SERIAL_LINE, serial_of
from .edge_runtime.model.signature import (NAMESPACE, SIGNATURE_FILE, SignatureError, Signer,
                                     TrustPolicy, check_signature, sign_manifest)


def sign_bundle(path: Path, key: Path) -> Signer:
    """Sign the bundle at `path` in place (a signature already there is replaced)."""
    files = bundle_files(path)
    files.pop(SIGNATURE_FILE, None)
    _check_unsigned(path, files)
    signature = sign_manifest(files[MANIFEST_FILE], key)
    signer = check_signature(files[MANIFEST_FILE], signature)
    if path.is_dir():
        temporary = path / f".{SIGNATURE_FILE}.{os.getpid()}"
        temporary.write_bytes(signature)
        os.replace(temporary, path / SIGNATURE_FILE)
    else:
        _rewrite_archive(path, signature)
    load_bundle(path)  # the bundle as a device reads it: hashes and the new signature match
    return signer


def allowed_signers_line(key: Path, principal: str) -> str | None:
    """The line that makes a device trust this key (ssh-keygen(1), ALLOWED SIGNERS), from the
    public key beside the private one; None when there is no .pub to read."""
    public = key if key.suffix == ".pub" else key.with_name(key.name + ".pub")
    try:
        kind, blob = public.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return f'{principal} namespaces="{NAMESPACE}" {kind} {blob}'


def _check_unsigned(path: Path, files: dict[str, bytes]) -> None:
    """load_bundle on these files without any signature: hashes, schema, detector files."""
    with tempfile.TemporaryDirectory(prefix="edge-ids-sign-") as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        try:
            load_bundle(tmp)
        except BundleError as e:
            raise BundleError(f"{path}: not signed, the bundle itself is refused: "
                              f"{str(e).removeprefix(tmp + ': ')}") from None


def _rewrite_archive(path: Path, signature: bytes) -> None:
    """The same .tar.gz with the signature beside manifest.json (replacing an old one),
    written to a temporary file and renamed over the original."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        with tarfile.open(path, "r:*") as source, tarfile.open(temporary, "w:gz") as target:
            manifest = next(m for m in source.getmembers()
                            if m.isfile() and Path(m.name).name == MANIFEST_FILE)
            for member in source.getmembers():
                if Path(member.name).name == SIGNATURE_FILE:
                    continue
                data = source.extractfile(member) if member.isfile() else None
                target.addfile(member, data)
            entry = tarfile.TarInfo(str(Path(manifest.name).with_name(SIGNATURE_FILE)))
            entry.size, entry.mtime, entry.mode = len(signature), manifest.mtime, 0o644
            target.addfile(entry, io.BytesIO(signature))
        shutil.copymode(path, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def sign_key_list(path: Path, key: Path, trusted: Path | None = None) -> tuple[str, Signer]:
    """Sign a new allowed-signers file for devices that trust `key` now (trust_anchor.py): a
    serial line (the UTC time, newer than one already there) goes on top of the file and
    FILE.sig beside it. With `trusted` (what the devices trust now) the signature is checked
    against it first, and nothing is written when the devices would refuse it."""
    body = SERIAL_LINE.sub(b"", path.read_bytes(), count=1)
    if not any(line.strip() and not line.lstrip().startswith(b"#")
               for line in body.splitlines()):
        raise ValueError(f"{path} lists no key: devices given it would refuse every bundle")
    serial = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    old = serial_of(path.read_bytes())
    if serial <= old:  # twice in one second, or a clock set back: still newer than the last
        serial = (datetime.strptime(old, "%Y%m%dT%H%M%SZ") + timedelta(seconds=1)).strftime(
            "%Y%m%dT%H%M%SZ")
    data = f"# edge-ids trust serial {serial}\n".encode() + body
    signature = sign_manifest(data, key)
    try:
        signer = check_signature(data, signature, TrustPolicy(trusted))
    except SignatureError as e:
        raise ValueError(f"not written: devices that trust {trusted} would refuse the new "
                          f"list: {str(e).replace('manifest.json', 'the key list')}") from None
    for target, content in ((path, data), (path.with_name(path.name + ".sig"), signature)):
        temporary = target.with_name(f".{target.name}.{os.getpid()}")
        temporary.write_bytes(content)
        os.replace(temporary, target)
    return serial, signer
