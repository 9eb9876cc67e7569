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
    def __init__(self, folder: Path, settings: dict, echo=None):
        self.folder = Path(folder)
        # paper, protocol, budget, quick, the code version and the data files' fingerprint
        # (train/fingerprint.py): what makes runs comparable; each run adds its method's own
        self.settings = settings
        self.echo = echo

    def _path(self, method: str, seed: int) -> Path:
        return self.folder / f"{re.sub(r'[^A-Za-z0-9]+', '-', method).strip('-')}-seed{seed}.pkl"

    def load(self, method: str, seed: int, definition: dict | None = None
             ) -> tuple[dict, dict] | None:
        """(run, scores) of a finished run under the same settings (and the same method
        `definition`), else None, saying what differed."""
        path = self._path(method, seed)
        try:
            saved = pickle.loads(path.read_bytes())
        except (OSError, pickle.UnpicklingError, EOFError):
            return None
        wanted = self.settings | ({"method": definition} if definition is not None else {})
        had = saved.get("settings") or {}
        if had != wanted:
            if self.echo:
                changed = sorted(k for k in set(had) | set(wanted) if had.get(k) != wanted.get(k))
                self.echo(f"      kept run made under other {', '.join(changed)}: run again")
            return None
        return saved["run"], saved["scores"]

    def save(self, method: str, seed: int, run: dict, scores: dict,
             definition: dict | None = None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(method, seed)
        partial = path.with_suffix(".tmp")
        settings = self.settings | ({"method": definition} if definition is not None else {})
        partial.write_bytes(pickle.dumps({"settings": settings, "run": run,
                                          "scores": scores}))
        partial.replace(path)  # a run is there whole or not at all
