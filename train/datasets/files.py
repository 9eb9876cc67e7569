"""Find dataset files through --data-dir or EDGE_IDS_DATA_DIR, and the error every loader raises."""
from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "EDGE_IDS_DATA_DIR"


class DataError(Exception):
    """A dataset file is missing or malformed; the message names the file (and line)."""


def find_data_file(filename: str, data_dir: str | os.PathLike | None, subdir: str) -> Path:
    """Look for FILE or FILE.gz in DIR and in DIR/SUBDIR (DIR: the argument, else the env var)."""
    root = data_dir or os.environ.get(DATA_DIR_ENV)
    if not root:
        raise DataError(f"no data directory: pass --data-dir DIR or set {DATA_DIR_ENV} "
                        f"(looking for {filename})")
    root = Path(root)
    candidates = [d / f for d in (root, root / subdir) for f in (filename, filename + ".gz")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DataError(f"{filename} not found: looked for {', '.join(map(str, candidates))}")
