"""Who made this bundle: an OpenSSH signature over its manifest, checked before every load.

The manifest holds the SHA-256 of every other file, so a signature over manifest.json covers the
whole bundle. `edge-ids sign` makes it with `ssh-keygen -Y sign` under NAMESPACE and stores it
as manifest.json.sig; the device checks it with `ssh-keygen -Y verify` against an
allowed-signers file (ssh-keygen(1), ALLOWED SIGNERS). OpenSSH does the cryptography: it is on
every Raspberry Pi OS and every host that deploys over ssh, so the device needs no new Python
dependency. This module is the standard library and the ssh-keygen binary only.

The policy (`TrustPolicy`, from the daemon's --allowed-signers and --allow-unsigned):
  - a device given trusted keys (an allowed-signers file) requires signatures: an unsigned
    bundle is refused, and a signed one must be signed by one of those keys and match;
  - `allow_unsigned` is the explicit, documented opt-out: with it, unsigned bundles load on a
    device that has keys (a signed one is still checked against them);
  - without an allowed-signers file: a signed bundle's signature must still match the manifest
    (who signed is unchecked), and an unsigned bundle loads.
A device that was given trusted keys never falls back to "unsigned is fine" by itself.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

NAMESPACE = "edge-ids-bundle"  # ssh-keygen -n: a signature made for something else never fits
SIGNATURE_FILE = "manifest.json.sig"
SSH_KEYGEN_TIMEOUT = 30


class SignatureError(Exception):
    """The bundle's signature is missing, untrusted or does not match; the text says which."""


@dataclass(frozen=True)
class TrustPolicy:
    """What the device configuration says about signatures."""

    allowed_signers: Path | None = None
    allow_unsigned: bool = False  # the explicit opt-out: unsigned bundles load despite keys

    @property
    def required(self) -> bool:
        """Trusted keys mean signatures are required, unless explicitly opted out."""
        return self.allowed_signers is not None and not self.allow_unsigned


@dataclass(frozen=True)
class Signer:
    key: str  # e.g. "ED25519 key SHA256:HgW9..."
    principal: str | None = None  # None: the signature matched, but no allowed-signers file

    def __str__(self) -> str:
        if self.principal is None:
            return f"{self.key} (not checked against an allowed-signers file)"
        return f"{self.principal} ({self.key})"


def check_signature(manifest: bytes, signature: bytes | None,
                    policy: TrustPolicy = TrustPolicy()) -> Signer | None:
    """The signer of this manifest under the policy; None for an unsigned bundle that the
    policy allows. SignatureError names the reason otherwise."""
    if policy.allowed_signers is not None and not Path(policy.allowed_signers).is_file():
        raise SignatureError(f"the allowed-signers file {policy.allowed_signers} does not exist")
    if signature is None:
        if policy.required:
            raise SignatureError(f"the bundle is not signed ({SIGNATURE_FILE} is missing) and "
                                 f"this device trusts only the keys in "
                                 f"{policy.allowed_signers}: sign it with `edge-ids sign --key "
                                 f"KEY BUNDLE` (or, to run unsigned bundles here, opt out "
                                 f"explicitly with --allow-unsigned)")
        return None
    if shutil.which("ssh-keygen") is None:
        raise SignatureError("the bundle is signed but ssh-keygen is not installed to check it "
                             "(Debian/Raspberry Pi OS: apt install openssh-client)")
    with tempfile.TemporaryDirectory(prefix="edge-ids-sig-") as tmp:
        signature_path = Path(tmp) / SIGNATURE_FILE  # ssh-keygen reads the signature by name
        signature_path.write_bytes(signature)
        key = _matching_key(manifest, signature_path)
        if policy.allowed_signers is None:
            return Signer(key)
        principals = _principals(signature_path, policy.allowed_signers)
        if not principals:
            raise SignatureError(f"it is signed by {key}, which is not in the allowed-signers "
                                 f"file {policy.allowed_signers}: not a key this device trusts")
        errors = []
        for principal in principals:
            result = _ssh_keygen(["-Y", "verify", "-f", str(policy.allowed_signers),
                                  "-I", principal, "-n", NAMESPACE, "-s", str(signature_path)],
                                 manifest)
            if result.returncode == 0:
                return Signer(key, principal)
            errors.append(_last_line(result.stderr))
        raise SignatureError(f"it is signed by {key} ({', '.join(principals)} in "
                             f"{policy.allowed_signers}), but ssh-keygen refuses it: "
                             f"{'; '.join(errors)}")


def _matching_key(manifest: bytes, signature_path: Path) -> str:
    """The signing key's fingerprint, if the signature fits these manifest bytes at all."""
    result = _ssh_keygen(["-Y", "check-novalidate", "-n", NAMESPACE, "-s", str(signature_path)],
                         manifest)
    found = re.search(r"with (\S+ key \S+)", result.stdout)
    if result.returncode != 0 or not found:
        raise SignatureError(f"its signature does not match manifest.json: the bundle was "
                             f"changed after signing, or the signature is damaged or not an "
                             f"edge-ids bundle signature (ssh-keygen: "
                             f"{_last_line(result.stderr or result.stdout)})")
    return found.group(1)


def _principals(signature_path: Path, allowed_signers: Path) -> list[str]:
    result = _ssh_keygen(["-Y", "find-principals", "-s", str(signature_path),
                          "-f", str(allowed_signers)], b"")
    return result.stdout.split() if result.returncode == 0 else []


def sign_manifest(manifest: bytes, key: Path) -> bytes:
    """The armoured signature of manifest bytes with a private key (or a public key whose private
    half is in ssh-agent); ssh-keygen asks for a passphrase on the terminal if it needs one."""
    if shutil.which("ssh-keygen") is None:
        raise SignatureError("ssh-keygen is not installed (apt install openssh-client)")
    result = subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", NAMESPACE],
                            input=manifest, capture_output=True)
    if result.returncode != 0 or b"BEGIN SSH SIGNATURE" not in result.stdout:
        raise SignatureError(f"ssh-keygen could not sign with {key}: "
                             f"{_last_line(result.stderr.decode(errors='replace'))}")
    return result.stdout


def _ssh_keygen(arguments: list[str], data: bytes) -> subprocess.CompletedProcess:
    result = subprocess.run(["ssh-keygen", *arguments], input=data, capture_output=True,
                            timeout=SSH_KEYGEN_TIMEOUT)
    if b"No user exists for uid" in result.stderr:  # the machine, not the bundle (the virtual Pi)
        raise SignatureError(
            f"ssh-keygen cannot run as uid {os.getuid()}, which has no passwd entry, so no "
            f"signature can be checked here: under systemd's DynamicUser= the entry comes from "
            f"libnss-systemd (apt install libnss-systemd)")
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode(errors="replace"),
                                       result.stderr.decode(errors="replace"))


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
