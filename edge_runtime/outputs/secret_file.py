"""A bearer token read from a file (the webhook's, the page's), never from the command line or a
URL: those end up in `ps`, the journal and the world-readable unit file.

A file that group or others may open is refused, as ssh refuses such a private key: whoever can
read the token can push to the operator's phone or read the page. A systemd credential
(LoadCredential=, under $CREDENTIALS_DIRECTORY) is exempt: systemd makes it 0400 and grants the
service's DynamicUser read through an ACL entry, whose mask stat() shows as group bits.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path


class SecretFileError(ValueError):
    """The token file cannot be used (the message says why and what to do)."""


def _systemd_credential(path: Path) -> bool:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return False
    try:
        return path.resolve().is_relative_to(Path(directory).resolve())
    except OSError:
        return False


def check_private(path: Path, option: str) -> None:
    """SecretFileError unless `path` is a regular file only its owner may open."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise SecretFileError(f"{option} {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        raise SecretFileError(f"{option} {path}: not a regular file")
    if mode & 0o077 and not _systemd_credential(path):
        raise SecretFileError(f"{option} {path}: group or others may open it (mode "
                              f"{stat.S_IMODE(mode):04o}); a token must be private to its "
                              f"owner: chmod 600 {path}")


def read_secret(path: Path | str, option: str) -> str:
    """The token in `path` (surrounding whitespace stripped): one word of printable
    characters, from a file only its owner may open; SecretFileError otherwise."""
    path = Path(path)
    check_private(path, option)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise SecretFileError(f"{option} {path}: cannot read it: {e}") from None
    if not token:
        raise SecretFileError(f"{option} {path}: the file is empty")
    if not all(c.isprintable() and not c.isspace() for c in token):
        raise SecretFileError(f"{option} {path}: the token must be one line without spaces "
                              f"or control characters")
    return token
