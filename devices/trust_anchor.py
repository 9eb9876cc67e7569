"""The device's trust anchor: the keys its daemon checks every bundle against, kept outside the
releases at PREFIX/trust/allowed_signers (with allowed_signers.sig beside it once keys have been
rotated), like apt's keyring. The unit reads it there; a release never brings its own.

Standard library and ssh-keygen only: it travels with install.py (a device script). The rules,
applied by install.py before anything is placed:
  - no anchor and no keys on the device: a release with keys installs them (trust on first
    install: whoever makes the first keyed deploy chooses the keys);
  - a device installed before the anchor existed (its current release has allowed_signers, and
    there is no anchor): the *running* release's keys become the anchor, then the incoming
    release is judged against them as below;
  - with an anchor, a release without keys, or with the same file, leaves it as it is; a release
    with other keys is accepted only with allowed_signers.sig made by `edge-ids rotate-keys`
    with a key of the anchor, over a file whose serial line is newer than the anchor's (an old
    signed list cannot be replayed to bring back a revoked key); anything else is refused;
  - with an anchor, the unit always reads it (its --allowed-signers is set to the anchor) and a
    unit that lets unsigned bundles in (--allow-unsigned) is refused.
Only root on the device changes the anchor otherwise (docs/fleet.md, "Revoking a key").
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

if __package__:
    from .release_prefix import ALLOWED_SIGNERS_FILE, TRUST_ANCHOR, UNIT_NAME, Prefix
else:
    from release_prefix import ALLOWED_SIGNERS_FILE, TRUST_ANCHOR, UNIT_NAME, Prefix

SIGNATURE_FILE = ALLOWED_SIGNERS_FILE + ".sig"
NAMESPACE = "edge-ids-bundle"  # as edge_runtime/model/signature.py: the keys' lines allow only it
# The first line of a rotated key list: what a device compares, and what keeps a key list and a
# bundle manifest (JSON) from ever being the same signed bytes.
SERIAL_LINE = re.compile(rb"\A# edge-ids trust serial (\d{8}T\d{6}Z)\n")


def serial_of(data: bytes | None) -> str:
    """The key list's serial (a UTC time stamp), "" for a list that has none."""
    found = SERIAL_LINE.match(data or b"")
    return found.group(1).decode() if found else ""


class Anchor:
    """PREFIX/trust/allowed_signers and its signature, replaced atomically."""

    def __init__(self, prefix: Prefix):
        self.file = prefix.path / TRUST_ANCHOR
        self.signature = self.file.with_name(SIGNATURE_FILE)

    def read(self) -> tuple[bytes | None, bytes | None]:
        return _read(self.file), _read(self.signature)

    def write(self, data: bytes | None, signature: bytes | None) -> None:
        """Put these keys (None: no anchor) in place, each file by one rename."""
        self.file.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.file.parent.chmod(0o755)  # the service's DynamicUser reads it
        for path, content in ((self.signature, signature), (self.file, data)):
            if content is None:
                path.unlink(missing_ok=True)
                continue
            temporary = path.with_name(f".{path.name}.{os.getpid()}")
            temporary.write_bytes(content)
            temporary.chmod(0o644)
            os.replace(temporary, path)


@dataclass
class Plan:
    """What a release does to the anchor: refused (why), or the unit to install and the new
    anchor (None: unchanged) with a line for the log."""

    unit: str = ""
    new: tuple[bytes, bytes | None] | None = None
    note: str | None = None
    refusal: str | None = None


def adopt_running_keys(prefix: Prefix) -> str | None:
    """The upgrade path: a device installed before the anchor existed (its running unit reads
    the keys inside its release, PREFIX/current/allowed_signers) gets that release's keys as
    its anchor, never the incoming release's. A unit that reads the anchor's place is from
    after: there, no anchor means root removed it on purpose."""
    anchor, current = Anchor(prefix), prefix.current()
    if anchor.file.exists() or current is None:
        return None
    running = prefix.releases / current / ALLOWED_SIGNERS_FILE
    unit = prefix.releases / current / UNIT_NAME
    argv = _exec_start(unit.read_text() if unit.is_file() else "").split()
    reads = argv[argv.index("--allowed-signers") + 1] if "--allowed-signers" in argv[:-1] \
        else None
    if not running.is_file() or reads in (None, str(anchor.file)):
        return None
    anchor.write(running.read_bytes(), None)
    return (f"trust: this device had no trust anchor; the keys of its running release "
            f"{current} are now its anchor, {anchor.file}")


def plan(prefix: Prefix, package: Path, release: dict, unit: str) -> Plan:
    """How the release's keys and unit meet the device's anchor (module docstring)."""
    anchor, release_id = Anchor(prefix), release["id"]
    trusted, _ = anchor.read()
    offered = _read(package / ALLOWED_SIGNERS_FILE)
    signature = _read(package / SIGNATURE_FILE)
    result = Plan()
    if trusted is None:
        if offered is None:
            return Plan(unit=unit)  # no keys here, none brought: no signatures checked
        result = Plan(new=(offered, signature), note=(
            f"trust: first keys on this device (trust on first install): {anchor.file}"))
    elif offered is not None and offered != trusted:
        why, principal = rotation_refusal(anchor, trusted, offered, signature)
        if why:
            return Plan(refusal=f"release {release_id} brings other trusted keys than this "
                                f"device's {anchor.file}, {why}")
        result = Plan(new=(offered, signature), note=(
            f"trust: keys rotated to serial {serial_of(offered)}, signed by {principal}, "
            f"a key this device trusted: {anchor.file}"))
    if "--allow-unsigned" in _exec_start(unit).split() or release.get("unsigned_on_purpose"):
        return Plan(refusal=(
            f"release {release_id} lets unsigned bundles load (--allow-unsigned), but this "
            f"device checks every bundle against the keys in {anchor.file}: a release cannot "
            f"turn that off; as root on the device, remove that file to stop checking "
            f"signatures (docs/fleet.md, \"Revoking a key\")"))
    result.unit = anchored_unit(unit, anchor.file)
    return result


def rotation_refusal(anchor: Anchor, trusted: bytes, offered: bytes,
                     signature: bytes | None) -> tuple[str | None, str | None]:
    """(why the offered key list may not replace the trusted one, None) or (None, signer)."""
    how = ("sign the new list with a key the device trusts: `edge-ids rotate-keys --key KEY "
           "FILE` (docs/fleet.md, \"Rotating keys\")")
    if signature is None:
        return f"and they are not signed ({SIGNATURE_FILE} is missing): {how}", None
    serial, now = serial_of(offered), serial_of(trusted)
    if not serial:
        return (f"and they have no serial line (`# edge-ids trust serial ...`): {how}"), None
    if serial <= now:
        return (f"with serial {serial}, not newer than the device's {now}: an older key list "
                f"is never taken back (a replayed one could bring back a revoked key)"), None
    if shutil.which("ssh-keygen") is None:
        return ("and ssh-keygen is not on the device to check their signature (apt install "
                "openssh-client)"), None
    principal = signed_by(offered, signature, anchor.file)
    if principal is None:
        return (f"and {SIGNATURE_FILE} is not a signature of that list by any key in it: "
                f"{how}"), None
    return None, principal


def signed_by(data: bytes, signature: bytes, allowed_signers: Path) -> str | None:
    """The principal of allowed_signers whose key signed `data` (ssh-keygen -Y verify), or None."""
    with tempfile.TemporaryDirectory(prefix="edge-ids-trust-") as tmp:
        path = Path(tmp) / SIGNATURE_FILE
        path.write_bytes(signature)
        found = subprocess.run(["ssh-keygen", "-Y", "find-principals", "-s", str(path), "-f",
                                str(allowed_signers)], capture_output=True, timeout=30)
        for principal in found.stdout.decode(errors="replace").split() if found.returncode == 0 \
                else []:
            checked = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed_signers),
                                      "-I", principal, "-n", NAMESPACE, "-s", str(path)],
                                     input=data, capture_output=True, timeout=30)
            if checked.returncode == 0:
                return principal
    return None


def anchored_unit(unit: str, anchor: Path) -> str:
    """The unit with its daemon's --allowed-signers set to the anchor (added if missing)."""
    line = _exec_start(unit)
    if re.search(r" --allowed-signers \S+", line):
        fixed = re.sub(r" --allowed-signers \S+", f" --allowed-signers {anchor}", line)
    else:
        fixed = f"{line} --allowed-signers {anchor}"
    return unit.replace(line, fixed, 1)


def _exec_start(unit: str) -> str:
    found = re.search(r"^ExecStart=.*$", unit, re.MULTILINE)
    return found.group(0) if found else ""


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def apply(prefix: Prefix, trust: Plan, say) -> Callable[[], None]:
    """Put the plan's new anchor in place (if any); returns what puts the old one back."""
    anchor = Anchor(prefix)
    before = anchor.read()
    if trust.new is None:
        return lambda: None
    anchor.write(*trust.new)
    say(trust.note)

    def undo() -> None:
        anchor.write(*before)
        say(f"trust: {anchor.file} restored to the keys before this release")
    return undo
