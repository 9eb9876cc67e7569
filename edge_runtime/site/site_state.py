"""The daemon's side of its state directory (`--state-dir`): the device watch's memory restored at
start, handed over to be written every SAVE_SECONDS, after a decision and at stop, and the
operator's decisions (operator_word.py) taken from DIR/requests/, where `edge-ids site` leaves
them, with an answer left in DIR/answers/ for the command to read.

A request is a small JSON file written whole (a temporary name, then renamed); the daemon looks
at most every CHECK_SECONDS, takes at most MAX_REQUESTS a look, and reads at most 4 KiB of each:
whoever may write into the state directory (root, or the daemon's own user) may decide, nobody
else.
"""
from __future__ import annotations

import json
import logging
import os
import stat
import time
from pathlib import Path

from .incident_state import fragments, load
from .operator_word import DecisionError, Decisions
from .state import SAVE_SECONDS, StateStore

log = logging.getLogger("edge_ids.state")
REQUESTS, ANSWERS = "requests", "answers"
CHECK_SECONDS = 1.0
MAX_REQUESTS = 16
MAX_REQUEST_BYTES = 4096
ANSWERS_KEPT_SECONDS = 600.0


class SiteMemory:
    def __init__(self, directory: Path):
        self.store = StateStore(directory)  # StateError if in use or not writable
        self.directory = self.store.directory
        for name in (REQUESTS, ANSWERS):
            (self.directory / name).mkdir(mode=0o750, exist_ok=True)
        self.state = self.store.load()
        self.decisions = Decisions(self.state.get("decisions") if self.state else None)
        self._saved_at = time.monotonic()
        self._interval = SAVE_SECONDS  # longer when a save takes long: under 1 % of the time
        self._checked_at = 0.0
        self._asked = False  # `edge-ids site` asked for the state now
        self._waiting_save: list[str] = []  # its requests, answered once it is written

    def restore(self, make_watch, model_sha256: str):
        """A watch (make_watch()) holding what the state kept, or a fresh one if the state
        does not fit (set aside, with a warning)."""
        watch = make_watch()
        if watch is None or self.state is None:
            return watch
        try:
            n = load(watch, self.state, model_sha256)
        except Exception as e:  # noqa: BLE001 - whatever a state file holds, never a crash
            self.store.set_aside(f"not a state this edge-ids can use ({type(e).__name__}: {e})")
            self.decisions = Decisions()
            return make_watch()
        log.info("state: %d devices, incident ids from %d, from %s", n, watch.tracker.next_id,
                 self.store.path)
        return watch

    def due(self, now: float) -> bool:
        """Is there anything to do now (a look at the requests, or a save)?"""
        return now - self._checked_at >= CHECK_SECONDS or now - self._saved_at >= self._interval

    def tick(self, watch, model_sha256: str, now: float) -> list[dict]:
        """Between batches: the operator's decisions waiting (their events), and a save when
        it is due."""
        events: list = []
        if now - self._checked_at >= CHECK_SECONDS:
            self._checked_at = now
            events = self._take_requests(watch)
        if events or self._asked or now - self._saved_at >= self._interval:
            self._asked = False
            if watch is not None:
                self.save(watch, model_sha256, now)
            if self._waiting_save:
                self.store.flush()  # (written before the command is answered)
                for name in self._waiting_save:
                    self._answer(name, {"ok": True, "message": "saved"})
                self._waiting_save = []
        return events

    def save(self, watch, model_sha256: str, now: float | None = None) -> None:
        self._saved_at = time.monotonic() if now is None else now
        self.store.save(self._pieces(watch, model_sha256))
        self._interval = max(SAVE_SECONDS, 100 * self.store.seconds)

    def stop(self, watch, model_sha256: str) -> None:
        """Written before returning (the daemon stops); the directory is unlocked."""
        try:
            if watch is not None:
                self.store.save_now(self._pieces(watch, model_sha256))
        finally:
            self.store.close()

    def _pieces(self, watch, model_sha256: str):
        return fragments(watch, model_sha256, {"decisions": self.decisions.log})

    def _take_requests(self, watch) -> list[dict]:
        events: list = []
        try:
            with os.scandir(self.directory / ANSWERS) as entries:  # nobody came for them
                for entry in entries:
                    if entry.name.endswith(".json") and \
                            time.time() - entry.stat(follow_symlinks=False).st_mtime > \
                            ANSWERS_KEPT_SECONDS:
                        os.unlink(entry.path)
            waiting = []
            with os.scandir(self.directory / REQUESTS) as entries:
                for entry in entries:
                    if not entry.name.endswith(".json"):
                        continue
                    if entry.is_file(follow_symlinks=False):
                        waiting.append(entry.path)
                    else:  # a link, a pipe: no request `site` writes; never read, removed
                        log.warning("removing %s: not a regular file", entry.path)
                        os.unlink(entry.path)
            waiting.sort()
        except OSError:
            return events
        for path in waiting[:MAX_REQUESTS]:
            name = os.path.basename(path)[:-5]
            try:
                request = _read_request(path)
                if request.get("action") == "save":  # `site list`: the state as it is now
                    self._asked = True
                    self._waiting_save.append(name)
                    continue
                if watch is None:
                    raise DecisionError("this daemon's bundle watches no devices")
                taken = self.decisions.take(watch.tracker, request)
                events += taken
                answer = {"ok": True, "decision": self.decisions.log[-1]["id"],
                          "message": _describe(taken[0])}
            except DecisionError as e:
                answer = {"ok": False, "message": str(e)}
            except Exception as e:  # noqa: BLE001 - a request may hold anything: never a crash
                answer = {"ok": False, "message": f"unusable request: {type(e).__name__}: {e}"}
            finally:
                try:
                    os.unlink(path)
                except OSError as e:
                    log.error("cannot remove the request %s: %s", path, e)
            self._answer(name, answer)
        return events

    def _answer(self, name: str, answer: dict) -> None:
        target = self.directory / ANSWERS / f"{name}.json"
        tmp = target.with_name(f".{name}.tmp")
        try:
            tmp.write_text(json.dumps(answer) + "\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except OSError as e:
            log.error("cannot answer the request %s: %s", name, e)


def _read_request(path: str) -> dict:
    """A request file's JSON object: a regular file, read without following a link or
    waiting on a pipe, at most MAX_REQUEST_BYTES."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        request = json.loads(os.read(fd, MAX_REQUEST_BYTES))
    finally:
        os.close(fd)
    if not isinstance(request, dict):
        raise ValueError("not a JSON object")
    return request


def _describe(event: dict) -> str:
    decision = event["decision"]
    what = {"accept": f"incident {decision.get('incident')} accepted",
            "mute": f"muted until flow time {decision.get('until', 0):.0f}",
            "undo": f"decision {decision.get('undoes')} undone"}.get(
        decision["action"], decision["action"])
    return f"decision {decision['id']}: {decision['target']}: {what}"
