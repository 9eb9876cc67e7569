"""Finished runs of a reproduction grid, kept so that an interrupted grid resumes.

A paper-budget grid takes hours on two cores; a session end or a reboot should not cost the
runs already finished. Each (method, seed) is written to OUT/runs/ as soon as it ends, with
the settings it ran under; `reproduce --resume` reuses a run only when those settings match.
Seeds of one grid can also run as separate processes (one `--seeds` each, in parallel) and a
final `--resume` over all seeds assembles the tables. Pickle, because the runs hold numpy
score arrays and this folder is only ever read by the code that wrote it (it is git-ignored).
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path


class RunCache:
    def __init__(self, folder: Path, settings: dict):
        self.folder = Path(folder)
        self.settings = settings  # paper, protocol, budget, quick: what makes runs comparable

    def _path(self, method: str, seed: int) -> Path:
        return self.folder / f"{re.sub(r'[^A-Za-z0-9]+', '-', method).strip('-')}-seed{seed}.pkl"

    def load(self, method: str, seed: int) -> tuple[dict, dict] | None:
        """(run, scores) of a finished run under the same settings, else None."""
        path = self._path(method, seed)
        try:
            saved = pickle.loads(path.read_bytes())
        except (OSError, pickle.UnpicklingError, EOFError):
            return None
        if saved.get("settings") != self.settings:
            return None
        return saved["run"], saved["scores"]

    def save(self, method: str, seed: int, run: dict, scores: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(method, seed)
        partial = path.with_suffix(".tmp")
        partial.write_bytes(pickle.dumps({"settings": self.settings, "run": run,
                                          "scores": scores}))
        partial.replace(path)  # a run is there whole or not at all
