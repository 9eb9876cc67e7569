"""The daemon's state directory (`--state-dir DIR`; the unit's StateDirectory, /var/lib/edge-ids):
what the device watch remembers (incident_state.py), kept across restarts and deploys.

- **One daemon a directory**: it holds an exclusive lock on DIR/lock for its life; a second one
  is refused, naming the first one's pid.
- **Atomic**: written to a temporary file, fsync'd, renamed over the last one, and the directory
  fsync'd; a kill -9 or a power cut at any moment leaves the new state or the previous one.
- **Versioned and bounded**: gzip'd JSON with a schema number (the tracker's memory is
  bounded: 16,384 devices, 32 services a window); a state that cannot be read (damaged, cut,
  another schema) is moved aside as DIR/state.json.gz.unreadable-TIME with a warning that names
  it, and the daemon starts fresh: a state never stops the daemon.
- **Light on the detection path**: the daemon streams its state through gzip into a temporary
  file (no copy of the whole state is held), at most every SAVE_SECONDS and never more often
  than keeps that under 1 % of its time, and when it stops; a thread of its own makes it
  durable (fsync, rename), so a slow SD card never holds the detection.

Standard library only (json, gzip, fcntl, os).
"""
from __future__ import annotations

import fcntl
import gzip
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Iterable

from .incident_state import SCHEMA

log = logging.getLogger("edge_ids.state")
STATE_FILE = "state.json.gz"
LOCK_FILE = "lock"
SAVE_SECONDS = 60.0  # the daemon hands a copy over at most this often (wall clock)


class StateError(OSError):
    """The state directory cannot be used (the message says why; nothing was changed)."""


def check_directory(path: Path) -> Path:
    """The state directory, made if absent; StateError if it is no directory or not writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StateError(f"--state-dir {path}: not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StateError(f"--state-dir {path}: cannot make it ({e.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StateError(f"--state-dir {path}: not writable by this user (uid {os.getuid()})")
    return path


class StateStore:
    """The state directory of one running daemon (locked while it lives)."""

    def __init__(self, directory: Path):
        self.directory = check_directory(directory)
        self.path = self.directory / STATE_FILE
        self._lock = open(self.directory / LOCK_FILE, "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "?"
            self._lock.close()
            raise StateError(f"--state-dir {directory} is in use by another edge-ids (pid "
                             f"{holder}); one daemon a state directory") from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(f"{os.getpid()}\n")
        self._lock.flush()
        self._pending: Path | None = None  # written, to be made durable (fsync, rename)
        self._wake = threading.Condition()
        self._closing = self._syncing = False
        self._written = 0  # temporary files made (their names are unique)
        self.saved = self.failed = 0
        self.seconds = 0.0  # what the last write took on the detection thread
        self._writer = threading.Thread(target=self._sync_all, daemon=True,
                                        name="edge-ids-state")
        self._writer.start()

    def load(self) -> dict | None:
        """The state saved last, or None (none yet, or set aside because it was unreadable)."""
        if not self.path.exists():
            return None
        try:
            with gzip.open(self.path, "rt", encoding="utf-8") as f:
                state = json.load(f)
            if not isinstance(state, dict) or state.get("schema") != SCHEMA:
                raise ValueError(f"schema {state.get('schema') if isinstance(state, dict) else '?'}"
                                 f", this edge-ids reads {SCHEMA}")
        except (OSError, EOFError, ValueError, UnicodeDecodeError) as e:
            self.set_aside(f"unreadable ({e})")
            return None
        return state

    def set_aside(self, why: str) -> Path:
        """Move the state file aside (kept for a look, never read again)."""
        aside = self.path.with_name(f"{STATE_FILE}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(self.path, aside)
        log.warning("state %s is %s: moved aside to %s; starting fresh", self.path, why, aside)
        return aside

    def save(self, fragments: Iterable[str]) -> None:
        """Write a state (its JSON text in pieces: incident_state.fragments) to a temporary file
        now, streamed through gzip so that no copy of the whole state is ever held, and hand it
        over to be made durable (fsync, rename over the last one) by the writer's thread."""
        started = time.monotonic()
        self._written += 1
        tmp = self.path.with_name(f".{STATE_FILE}.{os.getpid()}.{self._written}.tmp")
        try:
            with open(tmp, "wb") as raw:
                with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as f:
                    for piece in fragments:
                        f.write(piece.encode())
        except OSError as e:  # a full disk must not stop the detection
            self._failed(e, tmp)
            return
        finally:
            self.seconds = time.monotonic() - started
        with self._wake:
            if self._pending is not None:  # a newer state: the older one is not needed
                self._pending.unlink(missing_ok=True)
            self._pending = tmp
            self._wake.notify()

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until what was handed over is durable."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while (self._pending is not None or self._syncing) and \
                    time.monotonic() < deadline:
                self._wake.wait(0.05)

    def save_now(self, fragments: Iterable[str]) -> None:
        """Write it and make it durable before returning (the daemon stops)."""
        self.save(fragments)
        self.flush()

    def _sync_all(self) -> None:
        while True:
            with self._wake:
                while self._pending is None and not self._closing:
                    self._wake.wait()
                if self._pending is None:
                    return
                tmp, self._pending = self._pending, None
                self._syncing = True
            try:
                self._sync(tmp)
            finally:
                with self._wake:
                    self._syncing = False
                    self._wake.notify_all()

    def _sync(self, tmp: Path) -> None:
        try:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            directory = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
            self.saved += 1
        except OSError as e:
            self._failed(e, tmp)

    def _failed(self, error: OSError, tmp: Path) -> None:
        self.failed += 1
        tmp.unlink(missing_ok=True)
        log.error("writing the state to %s failed (detection goes on): %s", self.path, error)

    def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._writer.join(timeout=60)
        for old in self.directory.glob(f".{STATE_FILE}.*.tmp"):  # (left by a kill -9)
            old.unlink(missing_ok=True)
        self._lock.close()  # (releases the lock)
