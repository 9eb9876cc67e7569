"""The operator's page, served by the daemon (`run`/`capture --ui 127.0.0.1:9109`): devices,
open and recent incidents with their why, and each device's last day, read-only.

Standard library HTTP (http.server in its own threads): a page for one person over `ssh -L`
needs no framework. Safe by construction: it binds loopback unless given a token (then every
request must carry it: `Authorization: Bearer`, or `?token=` for a browser), it answers GET and
HEAD on two exact paths and 404 on anything else (no files are served, so no path can escape),
and its answers are bounded (page_render.MAX_DEVICES_SHOWN, RECENT_INCIDENTS). The classifying
thread only appends events under a lock; the page copies what it shows under the same lock, so a
request costs the classification one short copy, never a render.
"""
from __future__ import annotations

import hmac
import ipaddress
import threading
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .page_render import render

DEFAULT_UI = "127.0.0.1:9109"
RECENT_INCIDENTS = 200  # the newest incidents kept for the page, open or closed
RENDER_SECONDS = 1.0  # a page is made at most this often; requests in between get the last


class PageError(ValueError):
    """--ui cannot be served as asked (the message says why)."""


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
        if not 0 <= number < 65536:
            raise ValueError
        ipaddress.ip_address(host)
    except ValueError:
        raise PageError(f"--ui {text!r}: give ADDRESS:PORT, e.g. {DEFAULT_UI}") from None
    return host, number


def is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


def read_token(token: str | None, token_file: Path | None) -> str | None:
    if token_file is not None:
        token = Path(token_file).read_text().strip()
        if not token:
            raise PageError(f"--ui-token-file {token_file}: the file is empty")
    if token is not None and len(token) < 16:
        raise PageError("the page's token must have at least 16 characters")
    return token


class OperatorView:
    """What the page shows, fed by the daemon's classifying thread."""

    def __init__(self, model: str = ""):
        self.lock = threading.Lock()
        self.model = model
        self.tracker = None  # the device watch's IncidentTracker, when the bundle has one
        self.incidents: OrderedDict[int, dict] = OrderedDict()  # id -> its latest state

    def record(self, events: list[dict]) -> None:
        """Called with the lock held (the daemon holds it around each batch's device watch)."""
        for event in events:
            if event["event_type"] != "incident":
                continue
            body = event["incident"]
            row = self.incidents.pop(body["id"], None) or {}
            row |= body | {"device": event["device"]}
            if body["state"] == "closed":
                row["closed"] = event["time"]
            self.incidents[body["id"]] = row
            while len(self.incidents) > RECENT_INCIDENTS:
                self.incidents.popitem(last=False)

    def state(self) -> dict:
        with self.lock:
            tracker = self.tracker
            devices = tracker.snapshot() if tracker is not None else []
            incidents = [dict(i) for i in reversed(self.incidents.values())]
            now = tracker.clock if tracker is not None and devices else 0.0
        devices.sort(key=lambda d: (d["incident"] is None, not d["new"], -d["last_seen"]))
        incidents.sort(key=lambda i: (i["state"] == "closed", -i["opened"]))
        return {"devices": devices, "incidents": incidents, "now": now, "model": self.model}


class PageServer:
    """The page's HTTP server in its own threads; start() returns the bound address."""

    def __init__(self, view: OperatorView, address: str, token: str | None = None):
        host, port = parse_address(address)
        if not is_loopback(host) and token is None:
            raise PageError(f"--ui {address} is not a loopback address: the page shows your "
                            "network's devices, so give --ui-token-file FILE (or --ui-token) "
                            "for it, or use 127.0.0.1 and `ssh -L 9109:127.0.0.1:9109 DEVICE`")
        self.view, self.token = view, token
        self._cached = (-RENDER_SECONDS, b"")
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="edge-ids-page")

    def body(self) -> bytes:
        """The page, rendered at most once a second however many ask: each render takes
        the classification's core for a few milliseconds per hundred devices."""
        made, body = self._cached
        if time.monotonic() - made >= RENDER_SECONDS:
            body = render(self.view.state()).encode()
            self._cached = (time.monotonic(), body)
        return body

    def start(self) -> tuple[str, int]:
        self.thread.start()
        return self.server.server_address[:2]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        page = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "edge-ids"
            sys_version = ""

            def log_message(self, *args) -> None:  # the daemon's log is for the traffic
                pass

            def _reply(self, status: int, body: bytes, kind: str = "text/plain; charset=utf-8",
                       head: bool = False) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                # nothing on the page may run or load anything: no script, no frames, no fetches
                self.send_header("Content-Security-Policy", "default-src 'none'; "
                                 "style-src 'unsafe-inline'; img-src data:; frame-ancestors "
                                 "'none'; form-action 'none'")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Referrer-Policy", "no-referrer")
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _allowed(self, query: dict) -> bool:
                if page.token is None:
                    return True
                given = self.headers.get("Authorization", "")
                given = given[7:] if given.startswith("Bearer ") else \
                    (query.get("token") or [""])[0]
                return hmac.compare_digest(given.encode(), page.token.encode())

            def do_GET(self, head: bool = False) -> None:
                url = urlsplit(self.path)
                if not self._allowed(parse_qs(url.query)):
                    return self._reply(401, b"a token is needed: Authorization: Bearer TOKEN "
                                            b"or ?token=TOKEN\n", head=head)
                if url.path == "/":
                    return self._reply(200, page.body(), "text/html; charset=utf-8", head)
                if url.path == "/healthz":
                    return self._reply(200, b"ok\n", head=head)
                return self._reply(404, b"not found\n", head=head)

            def do_HEAD(self) -> None:
                self.do_GET(head=True)

            def _read_only(self) -> None:
                self._reply(405, b"read-only\n")

            do_POST = do_PUT = do_DELETE = do_PATCH = _read_only

        return Handler
