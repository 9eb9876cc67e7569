"""What made a cached result: the code, the settings and the data files, hashed.

A benchmark or a grid keeps finished runs so that it can resume, but a cache is only worth
its keys: a run made by other code, other settings or other data must never be reused as if
it were this one. `Stamp` writes key.json into a run's folder and, when a later run asks for
the folder, keeps it only if the key is the same, else empties it and says why.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from functools import lru_cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # the repository's folders that make edge_ids
# What a trained model or a replay depends on (the benchmarks' own reporting code does not
# change their results, so editing a table's layout does not invalidate hours of runs).
MODEL_CODE = ("edge_ids", "train", "compress", "edge_runtime")


@lru_cache(maxsize=8)
def code_version(folders: tuple[str, ...] = MODEL_CODE, extra: tuple[str, ...] = ()) -> str:
    """SHA-256 (16 hex digits) of the .py files in these folders of edge-ids (and `extra`
    files, relative to the repository), by relative path."""
    digest = hashlib.sha256()
    paths = [p for folder in folders for p in (PACKAGE / folder).rglob("*.py")]
    for path in sorted(set(paths) | {PACKAGE / e for e in extra}):
        digest.update(str(path.relative_to(PACKAGE)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def file_hash(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def files_fingerprint(paths) -> str:
    """SHA-256 (16 hex digits) over the files' names and contents."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(f"{path.name}\0{file_hash(path)}\0".encode())
    return digest.hexdigest()[:16]


class Stamp:
    """key.json in a folder: the settings (with the code version and data fingerprint) that
    made what is in it."""

    def __init__(self, folder: Path, key: dict):
        self.folder = Path(folder)
        self.key = json.loads(json.dumps(key, sort_keys=True, default=str))

    def saved(self) -> dict | None:
        try:
            return json.loads((self.folder / "key.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def ensure(self, echo=print) -> bool:
        """Keep the folder if it was made under this key (True); otherwise empty it, say
        why, stamp it anew and return False."""
        saved = self.saved()
        if saved == self.key:
            return True
        if self.folder.exists() and any(self.folder.iterdir()):
            changed = sorted(k for k in set(self.key) | set(saved or {})
                             if (saved or {}).get(k) != self.key.get(k))
            echo(f"      {self.folder}: made under other {', '.join(changed) or 'settings'}; "
                 f"made again")
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "key.json").write_text(json.dumps(self.key, indent=1) + "\n")
        return False
