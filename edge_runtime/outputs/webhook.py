"""A push to the operator when an incident opens or closes and when a new device joins: a JSON
POST to a URL they give (ntfy, Gotify, a chat webhook, their own receiver).

The daemon must never wait for it: events go into a bounded queue (what does not fit is dropped
and counted, new-device pushes before incident ones) and one sender thread posts them, retrying with back-off. A device in trouble for
hours pushes once per kind of event per throttle window (by the flows' own time, so a replayed
capture throttles as the live traffic would). Standard library only (urllib): the device side
stays numpy + LiteRT; the payload is documented in docs/operator.md.

The token is the operator's, so it goes to the URL they gave and nowhere else: no redirect is
followed (urllib's own handler re-sends to wherever the receiver points, turning the POST into
a GET and copying Authorization), a token needs https unless they say --webhook-insecure, and
it is read from a file (secret_file.py), again on SIGHUP, never from the URL.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from .alerts import iso
from .secret_file import SecretFileError, read_secret

log = logging.getLogger("edge_ids.webhook")

SEVERITIES = ("low", "medium", "high")  # closed, new device, opened
# The push metric's result label: sent (a 2xx answer), failed (anything else after the retries;
# a redirect at once), dropped (the queue was full, or held it at stop), throttled, below_floor.
RESULTS = ("sent", "failed", "dropped", "throttled", "below_floor")
# query parameters that carry a secret in common receivers (Gotify ?token=, ntfy ?auth=)
SECRET_QUERY = ("token", "auth", "access_token", "apikey", "api_key", "key", "password", "secret")
TOKEN_FILE_OPTION = "--webhook-token-file"


class WebhookError(ValueError):
    """The webhook cannot be used as configured (the message says what to do instead)."""


def check_target(url: str, token: bool = False, insecure: bool = False) -> None:
    """WebhookError unless `url` is an http(s) URL without a secret in it and, when a token is
    sent, https or explicitly --webhook-insecure. The URL is echoed only once it is known to
    hold no credentials."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError("--webhook: give an http:// or https:// URL with a host")
    if "@" in parts.netloc:
        raise WebhookError("--webhook: the URL carries credentials (user:password@host); a "
                           "secret in the URL ends up in the unit file, `ps` and the logs: put "
                           f"the token in a file only its owner can read and give "
                           f"{TOKEN_FILE_OPTION} FILE (sent as Authorization: Bearer)")
    named = sorted({k.lower() for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
                   & set(SECRET_QUERY))
    if named:
        raise WebhookError(f"--webhook: the URL carries a secret in its query ({named[0]}=); "
                           f"put the token in a file only its owner can read and give "
                           f"{TOKEN_FILE_OPTION} FILE (sent as Authorization: Bearer)")
    if token and parts.scheme != "https" and not insecure:
        raise WebhookError(f"--webhook {url}: a token is sent only over https (http:// carries "
                           f"it in cleartext across the network); give an https:// URL, or "
                           f"--webhook-insecure to send it anyway (a receiver on this host or "
                           f"a link you trust)")


def shown(location: str | None, limit: int = 200) -> str:
    """A Location header as it may be logged: printable, bounded."""
    if location is None:
        return "nowhere (no Location header)"
    text = "".join(c if c.isprintable() else "?" for c in location)
    return repr(text if len(text) <= limit else text[:limit] + "...")


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Every 3xx is an error: the token must not follow the receiver's pointer elsewhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, msg, headers, fp)


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
    token_file: Path | None = None  # where the token is read from (again on SIGHUP)
    insecure: bool = False  # --webhook-insecure: a token may go over http://


def kind_of(event: dict) -> str | None:
    """incident_opened, incident_closed, new_device, or None for updates and every other line
    (device_normal, decision: never pushed)."""
    if event["event_type"] == "new_device":
        return "new_device"
    if event["event_type"] != "incident":
        return None
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


class PushQueue:
    """The pushes waiting, bounded, incidents ahead of new devices: when it is full, an
    incident push takes the place of the newest new-device push (a storm of new devices must
    not drop the next incident), and any other push is dropped. (queue.PriorityQueue cannot
    drop its last item: a deque each, under one condition.)"""

    def __init__(self, size: int):
        self.size = size
        self._ready = threading.Condition()
        self._incidents: deque = deque()
        self._others: deque = deque()

    def put(self, body: dict) -> int:
        """Queue it; how many pushes were dropped for it (this one, or one it replaced)."""
        incident = body["event"] != "new_device"
        with self._ready:
            dropped = 0
            if len(self._incidents) + len(self._others) >= self.size:
                if not incident or not self._others:
                    return 1
                self._others.pop()
                dropped = 1
            (self._incidents if incident else self._others).append(body)
            self._ready.notify()
            return dropped

    def get(self, timeout: float) -> dict | None:
        with self._ready:
            if not self._ready.wait_for(lambda: self._incidents or self._others, timeout):
                return None
            return (self._incidents or self._others).popleft()

    def qsize(self) -> int:
        with self._ready:
            return len(self._incidents) + len(self._others)

    def empty(self) -> bool:
        return self.qsize() == 0


class Webhook:
    """offer() from the classifying thread (never blocks); a sender thread posts."""

    def __init__(self, options: WebhookOptions, count=lambda result: None, ml: dict | None = None):
        self.counts = dict.fromkeys(RESULTS, 0)
        self._count = count
        if options.min_severity not in SEVERITIES:
            raise ValueError(f"webhook severity {options.min_severity!r}: one of "
                             f"{', '.join(SEVERITIES)}")
        token = options.token
        if token is None and options.token_file is not None:
            token = read_secret(options.token_file, TOKEN_FILE_OPTION)
        check_target(options.url, token is not None, options.insecure)
        self.options, self.ml, self.token = options, ml or {}, token
        self._opener = urllib.request.build_opener(_RefuseRedirects)
        self.host = socket.gethostname()
        self.floor = SEVERITIES.index(options.min_severity)
        self.queue = PushQueue(options.queue_size)
        self.last_push: dict[tuple, float] = {}  # (device, kind) -> flow time of its last push
        self._stop = threading.Event()
        self.answering = False  # the last push went out (then stopping waits for the queue)
        self.thread = threading.Thread(target=self._send_all, daemon=True,
                                       name="edge-ids-webhook")
        self.thread.start()

    def count(self, result: str) -> None:
        self.counts[result] += 1
        self._count(result)

    def reload_token(self) -> None:
        """SIGHUP: read the token file again (a rotated token). A file that cannot be used now
        leaves the token read before in use, and says why."""
        if self.options.token_file is None:
            return
        try:
            token = read_secret(self.options.token_file, TOKEN_FILE_OPTION)
        except SecretFileError as e:
            log.error("webhook: still sending the token read before: %s", e)
            return
        changed, self.token = token != self.token, token
        log.info("webhook: token read again from %s (%s)", self.options.token_file,
                 "changed" if changed else "unchanged")

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
            body = payload(event, kind, self.host, self.ml)
            dropped = self.queue.put(body)
            if dropped:
                self.count("dropped")
            if dropped and body["event"] == "new_device":
                continue
            self.last_push[key] = event["time"]
            if len(self.last_push) > 4 * 10_000:  # bounded: forget the oldest pushes
                for old in list(self.last_push)[:10_000]:
                    del self.last_push[old]

    def _send_all(self) -> None:
        while not self._stop.is_set():
            body = self.queue.get(timeout=0.5)
            if body is None:
                continue
            sent = self._send(body)
            self.answering = sent
            self.count("sent" if sent else "failed")

    def _send(self, body: dict) -> bool:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "edge-ids",
                   "Title": " ".join(body["title"].encode("ascii", "replace").decode().split())}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        wait = self.options.backoff_seconds
        for attempt in range(self.options.retries + 1):
            try:
                request = urllib.request.Request(self.options.url, data=data, headers=headers,
                                                 method="POST")
                # only a 2xx answer returns; urllib raises HTTPError for every other status
                with self._opener.open(request, timeout=self.options.timeout_seconds):
                    return True
            except urllib.error.HTTPError as e:
                e.close()
                if 300 <= e.code < 400:  # not retried: it would answer the same
                    log.warning("webhook: %s not delivered: %s answered %d, a redirect to %s, "
                                "which is never followed; give the final URL", body["event"],
                                self.options.url, e.code, shown(e.headers.get("Location")))
                    return False
                error: Exception = e
            except (urllib.error.URLError, OSError, ValueError) as e:
                error = e
            if attempt == self.options.retries or self._stop.is_set():
                log.warning("webhook: %s not delivered after %d attempts: %s",
                            body["event"], attempt + 1, error)
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
