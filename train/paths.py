"""Where results and data are, the same from whatever folder a command starts.

A source checkout keeps its committed results in <repository>/benchmarks/results and finds
the shared datasets beside the repository; `EDGE_IDS_DATA_DIR` overrides the data folder.
Every command and benchmark takes its defaults from here, so `edge-ids reproduce` started in
another folder still writes to the repository's results (and never makes a stray
benchmarks/results/ wherever it was started).
"""
from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "EDGE_IDS_DATA_DIR"
REPOSITORY = Path(__file__).resolve().parents[1]  # train/ is a folder of the repository
# An installed wheel has no repository: results go to a folder of the user's own. Never
# Path.home() at import: the daemon (a DynamicUser with no home) imports this too, and
# os.path.expanduser leaves "~" as it is where Path.home() would raise.
RESULTS = REPOSITORY / "benchmarks" / "results" if (REPOSITORY / "benchmarks").is_dir() \
    else Path(os.path.expanduser("~/edge-ids-results"))
OUT = REPOSITORY / "out" if (REPOSITORY / "pyproject.toml").is_file() \
    else Path(os.path.expanduser("~/edge-ids-out"))


def data_dir() -> Path:
    """$EDGE_IDS_DATA_DIR, else the shared datasets beside the repository."""
    return Path(os.environ.get(DATA_DIR_ENV) or REPOSITORY.parent / "shared" / "datasets")
