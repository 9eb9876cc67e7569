"""The operator's page, served by the daemon (`run`/`capture --ui 127.0.0.1:9109`): devices,
open and recent incidents with their why, and each device's last day, read-only.

A page for one person over `ssh -L` needs no framework: page_server.py is a small bounded HTTP
server in one thread. Safe by construction: it binds loopback (and answers only a loopback
Host) unless given a token and a certificate (then every request must carry the token, over
TLS), it answers GET and HEAD on two exact paths and 404 on anything else (no files are served,
so no path can escape), and its answers are bounded (page_render.MAX_DEVICES_SHOWN,
RECENT_INCIDENTS). The classifying thread only appends events under a lock; the page copies
references to the devices under it and reads them after, so a request costs the classification
a list copy (0.1 ms for 16,384 devices, where building every row under the lock took 50 ms).
"""
from __future__ import annotations

import heapq
import ipaddress
import logging
import ssl
import threading
import time
from collections import OrderedDict
from pathlib import Path

from .devices import device_label
from .page_render import MAX_DEVICES_SHOWN, render
from .page_server import PageHttp, Request

DEFAULT_UI = "127.0.0.1:9109"
RECENT_INCIDENTS = 200  # the newest incidents kept for the page, open or closed
RENDER_SECONDS = 1.0  # a page is made at most this often; requests in between get the last


# a self-signed pair for a page on the LAN (the browser is told once to trust it)
MAKE_CERTIFICATE = ("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                    "-days 825 -subj /CN=sensor-1 -addext subjectAltName=DNS:sensor-1,"
                    "IP:192.168.1.10 -keyout page.key -out page.crt")
log = logging.getLogger("edge_ids.daemon")


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


def check_page(address: str, token: str | None, tls: tuple | None) -> None:
    """A page off loopback needs a token and TLS (the token must not cross the network in
    cleartext); PageError says what to give instead."""
    host, port = parse_address(address)
    if tls is not None and None in tls:
        raise PageError("give both --ui-cert FILE and --ui-key FILE (a certificate and its key)")
    if is_loopback(host):
        return
    instead = (f"or keep --ui 127.0.0.1:{port} and reach it with "
               f"`ssh -L {port}:127.0.0.1:{port} DEVICE`")
    if token is None:
        raise PageError(f"--ui {address} is not a loopback address: the page shows your "
                        f"network's devices, so it needs --ui-token-file FILE and TLS "
                        f"(--ui-cert FILE --ui-key FILE); {instead}")
    if tls is None:
        raise PageError(f"--ui {address} is not a loopback address: its token would cross the "
                        f"network in cleartext, so give --ui-cert FILE --ui-key FILE (a "
                        f"certificate and its key; a self-signed pair: `{MAKE_CERTIFICATE}`); "
                        f"{instead}")


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The page's TLS (OSError or ssl.SSLError if the files cannot be used)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


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
        """What the page shows. Under the lock only references are copied; the devices' fields
        are read after it (the classifying thread may move a counter meanwhile: the page is a
        glance, not an audit), and rows are built for the devices shown only."""
        with self.lock:
            tracker = self.tracker
            devices = list(tracker.devices.values()) if tracker is not None else []
            incidents = [dict(i) for i in reversed(self.incidents.values())]
            now = tracker.clock if tracker is not None and devices else 0.0
        # newest first, as snapshot() lists them, so that ties keep the order they had
        shown = heapq.nsmallest(MAX_DEVICES_SHOWN, reversed(devices), key=_order)
        incidents.sort(key=lambda i: (i["state"] == "closed", -i["opened"]))
        return {"devices": [device_row(d) for d in shown], "device_count": len(devices),
                "new_count": sum(1 for d in devices if d.new), "incidents": incidents,
                "now": now, "model": self.model}


def _order(device) -> tuple:
    """Devices with an open incident first, then new ones, then the most recently seen."""
    episode = device.episode
    return (episode is None or episode.incident is None, not device.new, -device.last_seen)


def device_row(device) -> dict:
    """One device as IncidentTracker.snapshot() gives it (tests/test_page_server.py compares
    them), read without the lock: each field is read once, the timeline copied in one step."""
    episode, timeline = device.episode, device.timeline
    return {"device": device_label(device.key, device.ip), "new": device.new,
            "first_seen": device.first_seen, "last_seen": device.last_seen,
            "flows": device.flows, "flagged": device.flagged,
            "incident": None if episode is None else episode.incident,
            "timeline": dict(timeline) if timeline else {}}


class PageServer:
    """The page on its server (page_server.PageHttp); start() returns the bound address."""

    def __init__(self, view: OperatorView, address: str, token: str | None = None,
                 tls: tuple[Path, Path] | None = None):
        host, port = parse_address(address)
        check_page(address, token, tls)
        self.view, self.token, self.tls = view, token, tls
        self._cached = (-RENDER_SECONDS, b"")
        self.http = PageHttp(host, port, self.answer, token,
                             tls_context(*tls) if tls else None, check_host=is_loopback(host))

    def body(self) -> bytes:
        """The page, rendered at most once a second however many ask: each render takes
        the classification's core for a few milliseconds per hundred devices."""
        made, body = self._cached
        if time.monotonic() - made >= RENDER_SECONDS:
            body = render(self.view.state()).encode()
            self._cached = (time.monotonic(), body)
        return body

    def answer(self, request: Request) -> tuple[int, bytes, str]:
        """After the server has checked the Host and the token."""
        if request.method not in ("GET", "HEAD"):
            return 405, b"read-only\n", "text/plain; charset=utf-8"
        if request.path == "/":
            return 200, self.body(), "text/html; charset=utf-8"
        if request.path == "/healthz":
            return 200, b"ok\n", "text/plain; charset=utf-8"
        return 404, b"not found\n", "text/plain; charset=utf-8"

    def start(self) -> tuple[str, int]:
        return self.http.start()

    def stop(self) -> None:
        self.http.stop()

    def reload(self) -> bool:
        """SIGHUP: read the certificate and key again (renewed); if they cannot be used, the
        old ones stay."""
        if self.tls is None:
            return False
        try:
            self.http.context = tls_context(*self.tls)
        except (OSError, ValueError) as e:
            log.error("the page's certificate was not reloaded, the old one stays: %s", e)
            return False
        log.info("the page's certificate was reloaded from %s", self.tls[0])
        return True
