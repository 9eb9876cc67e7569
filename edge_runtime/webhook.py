"""A push to the operator when an incident opens or closes and when a new device joins: a JSON
POST to a URL they give (ntfy, Gotify, a chat webhook, their own receiver).

The daemon must never wait for it: events go into a bounded queue (what does not fit is dropped
and counted) and one sender thread posts them, retrying with back-off. A device in trouble for
hours pushes once per kind of event per throttle window (by the flows' own time, so a replayed
capture throttles as the live traffic would). Standard library only (urllib): the device side
stays numpy + LiteRT; the payload is documented in docs/operator.md.
"""
from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from .alerts import iso

log = logging.getLogger("edge_ids.webhook")

SEVERITIES = ("low", "medium", "high")  # closed, new device, opened
RESULTS = ("sent", "failed", "dropped", "throttled", "below_floor")


@dataclass(frozen=True)
class WebhookOptions:
    url: str
    min_severity: str = "low"  # push events at or above this
    throttle_seconds: float = 300.0  # per device and kind of event, in flow time
    queue_size: int = 100
    retries: int = 3
    backoff_seconds: float = 1.0  # doubled after each failed attempt
    timeout_seconds: float = 5.0
    token: str | None = None  # sent as Authorization: Bearer (Gotify, ntfy access tokens)


def kind_of(event: dict) -> str | None:
    """incident_opened, incident_closed, new_device, or None for updates (never pushed)."""
    if event["event_type"] == "new_device":
        return "new_device"
    state = event["incident"]["state"]
    return {"open": "incident_opened", "closed": "incident_closed"}.get(state)


SEVERITY_OF = {"incident_opened": "high", "new_device": "medium", "incident_closed": "low"}


def payload(event: dict, kind: str, host: str, ml: dict) -> dict:
    """The body of one push: a short title and message for chat tools, and the whole event."""
    device = event["device"]
    name = device.get("mac") or device.get("ip") or "?"
    detail = event.get("incident") or event.get("new_device") or {}
    if kind == "new_device":
        title, message = f"New device {name}", f"{name} ({device.get('ip')}) joined the network"
    else:
        verb = "opened" if kind == "incident_opened" else "closed"
        why = ", ".join(w["feature"] for w in detail.get("why", [])) or "unusual flows"
        title = f"Incident {detail.get('id')} {verb} on {name}"
        message = (f"{detail.get('flows_flagged')} of {detail.get('flows_seen')} flows flagged; "
                   f"why: {why}; peers: "
                   + (", ".join(p["ip"] for p in detail.get("peers", [])[:3]) or "-"))
    return {"event": kind, "severity": SEVERITY_OF[kind], "title": title, "message": message,
            "time": iso(event["time"]), "host": host, "device": device,
            "detail": event.get("incident") or event.get("new_device"),
            "model_sha256": ml.get("model_sha256")}


class Webhook:
    """offer() from the classifying thread (never blocks); a sender thread posts."""

    def __init__(self, options: WebhookOptions, count=lambda result: None, ml: dict | None = None):
        self.counts = dict.fromkeys(RESULTS, 0)
        self._count = count
        if options.min_severity not in SEVERITIES:
            raise ValueError(f"webhook severity {options.min_severity!r}: one of "
                             f"{', '.join(SEVERITIES)}")
        self.options, self.ml = options, ml or {}
        self.host = socket.gethostname()
        self.floor = SEVERITIES.index(options.min_severity)
        self.queue: queue.Queue = queue.Queue(maxsize=options.queue_size)
        self.last_push: dict[tuple, float] = {}  # (device, kind) -> flow time of its last push
        self._stop = threading.Event()
        self.answering = False  # the last push went out (then stopping waits for the queue)
        self.thread = threading.Thread(target=self._send_all, daemon=True,
                                       name="edge-ids-webhook")
        self.thread.start()

    def count(self, result: str) -> None:
        self.counts[result] += 1
        self._count(result)

    def offer(self, events: list[dict]) -> None:
        for event in events:
            kind = kind_of(event)
            if kind is None:
                continue
            if SEVERITIES.index(SEVERITY_OF[kind]) < self.floor:
                self.count("below_floor")
                continue
            key = (event["device"].get("mac") or event["device"].get("ip"), kind)
            last = self.last_push.get(key)
            if last is not None and event["time"] - last < self.options.throttle_seconds:
                self.count("throttled")
                continue
            try:
                self.queue.put_nowait(payload(event, kind, self.host, self.ml))
            except queue.Full:
                self.count("dropped")
                continue
            self.last_push[key] = event["time"]
            if len(self.last_push) > 4 * 10_000:  # bounded: forget the oldest pushes
                for old in list(self.last_push)[:10_000]:
                    del self.last_push[old]

    def _send_all(self) -> None:
        while not self._stop.is_set():
            try:
                body = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            sent = self._send(body)
            self.answering = sent
            self.count("sent" if sent else "failed")

    def _send(self, body: dict) -> bool:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "edge-ids",
                   "Title": " ".join(body["title"].encode("ascii", "replace").decode().split())}
        if self.options.token:
            headers["Authorization"] = f"Bearer {self.options.token}"
        wait = self.options.backoff_seconds
        for attempt in range(self.options.retries + 1):
            try:
                request = urllib.request.Request(self.options.url, data=data, headers=headers,
                                                 method="POST")
                with urllib.request.urlopen(request, timeout=self.options.timeout_seconds):
                    return True
            except (urllib.error.URLError, OSError, ValueError) as e:
                if attempt == self.options.retries or self._stop.is_set():
                    log.warning("webhook: %s not delivered after %d attempts: %s",
                                body["event"], attempt + 1, e)
                    return False
                self._stop.wait(wait)
                wait *= 2
        return False

    def close(self, drain_seconds: float = 2.0) -> None:
        """Give queued pushes a moment to go out if the target is answering (none if it is
        not: stopping must not wait for it), then stop; what is still queued is dropped."""
        deadline = time.monotonic() + drain_seconds
        while not self.queue.empty() and self.answering and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self.thread.join(timeout=0.2)  # a daemon thread: one stuck in a request dies with us
        for _ in range(self.queue.qsize()):
            self.count("dropped")
        log.info("webhook: %s", ", ".join(f"{n:,} {r}" for r, n in self.counts.items()))
