"""The operator's page, served by the daemon (`run`/`capture --ui 127.0.0.1:9109`): devices,
open and recent incidents with their why, and each device's last day, read-only.

A page for one person over `ssh -L` needs no framework: page_server.py is a small bounded HTTP
server, in a process of its own (it says why). Safe by construction: it binds loopback (and
answers only a loopback Host) unless given a token and a certificate (then every request must
carry the token, over TLS), it answers GET and HEAD on two exact paths and 404 on anything else
(no files are served, so no path can escape), and its answers are bounded
(page_render.MAX_DEVICES_SHOWN, RECENT_INCIDENTS). The classifying thread only appends events
under a lock; the page copies references to the devices under it and reads them after, so a
page costs the classification a list copy (0.1 ms for 16,384 devices, where building every
row under the lock took 50 ms) and a render, at most once a second.
"""
from __future__ import annotations

import heapq
import ipaddress
import logging
import socket
import subprocess
import sys
import threading
from collections import OrderedDict
from pathlib import Path

from ..site.devices import device_label
from .page_render import MAX_DEVICES_SHOWN, render
from .page_wire import frame, frames, tls_context

DEFAULT_UI = "127.0.0.1:9109"
BACKLOG = 1024  # (the kernel caps it at net.core.somaxconn: 4096 since Linux 5.4)
RECENT_INCIDENTS = 200  # the newest incidents kept for the page, open or closed
# The page's process imports page_server.py and page_wire.py from this folder as a package of
# their own, in an isolated interpreter: the standard library only, not this package (whose
# __init__ loads numpy and LiteRT).
BOOT = ("import importlib, sys, types; p = types.ModuleType('edge_ids_page'); "
        "p.__path__ = [sys.argv[1]]; sys.modules['edge_ids_page'] = p; "
        "sys.exit(importlib.import_module('edge_ids_page.page_server').child_main(sys.argv[2:]))")

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
            fallback = tracker.normals.fallback if tracker is not None else None
            incidents = [dict(i) for i in reversed(self.incidents.values())]
            now = tracker.clock if tracker is not None and devices else 0.0
        # newest first, as snapshot() lists them, so that ties keep the order they had
        shown = heapq.nsmallest(MAX_DEVICES_SHOWN, reversed(devices), key=_order)
        incidents.sort(key=lambda i: (i["state"] == "closed", -i["opened"]))
        return {"devices": [device_row(d, fallback) for d in shown],
                "device_count": len(devices), "new_count": sum(1 for d in devices if d.new),
                "incidents": incidents, "now": now, "model": self.model}


def _order(device) -> tuple:
    """Devices with an open incident first, then new ones, then the most recently seen."""
    episode = device.episode
    return (episode is None or episode.incident is None, not device.new, -device.last_seen)


def snapshot(tracker) -> list[dict]:
    """Every device the tracker remembers, newest first, as rows (under the lock: what the
    page did before `OperatorView.state`; tests and the page benchmark compare with it)."""
    return [device_row(d, tracker.normals.fallback) for d in reversed(tracker.devices.values())]


def device_row(device, fallback: float) -> dict:
    """One device as the page shows it, read without the lock: each object is read once, the
    timeline copied in one step."""
    episode, normal, timeline = device.episode, device.normal, device.timeline
    return {"device": device_label(device.key, device.ip), "new": device.new,
            "first_seen": device.first_seen, "last_seen": device.last_seen,
            "flows": device.flows, "flagged": device.flagged,
            "incident": None if episode is None else episode.incident,
            "stage": normal.stage, "muted": normal.muted,
            "threshold": None if normal.ratio is None else normal.ratio * fallback,
            "changed": normal.changed if normal.changed > device.first_seen else None,
            "timeline": dict(timeline) if timeline else {}}


class PageServer:
    """The page: its own process serves HTTP (page_server.py, started again if it ends); a
    thread here makes the page when that process asks, at most once a second. start() returns
    the bound address (bound here, so that a busy port fails the daemon's start)."""

    def __init__(self, view: OperatorView, address: str, token: str | None = None,
                 tls: tuple[Path, Path] | None = None):
        host, port = parse_address(address)
        check_page(address, token, tls)
        if tls is not None:
            tls_context(*tls)  # files that cannot be used fail the start, not the page's process
        self.view, self.token, self.tls, self.check_host = view, token, tls, is_loopback(host)
        self.listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((host, port))
            # a burst of connections waits in the kernel's queue rather than being dropped
            # (a dropped SYN is retried after 1 s: with 128, an operator's took 1.09 s)
            self.listener.listen(BACKLOG)
        except OSError:
            self.listener.close()
            raise
        self.process: subprocess.Popen | None = None
        self._feed: socket.socket | None = None
        self._send = threading.Lock()  # the feed thread's pages and reload()'s H frames
        self._stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True, name="edge-ids-page")

    def start(self) -> tuple[str, int]:
        self._spawn()
        self.thread.start()
        return self.listener.getsockname()[:2]

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        fds = (self.listener.fileno(), theirs.fileno())
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-c", BOOT, str(Path(__file__).parent), *map(str, fds),
             "host" if self.check_host else "any", *map(str, self.tls or ())],
            pass_fds=fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # (--alerts -)
        theirs.close()
        ours.sendall(frame(b"T", (self.token or "").encode()))  # never on its command line
        self._feed = ours

    def body(self) -> bytes:
        """The page as it is now: the devices copied off the detection lock, then rendered
        (a few milliseconds per hundred devices, here at most once a second)."""
        try:
            return render(self.view.state()).encode()
        except Exception:  # noqa: BLE001 - a fault in the page must never reach detection
            log.exception("the operator's page failed")
            return b"<!doctype html><p>the page failed: the daemon's log says why</p>"

    def _serve(self) -> None:
        """Pages for the page's process; if it ends, it is started again a second later."""
        while True:
            incoming = bytearray()
            try:
                while data := _recv(self._feed):
                    incoming += data
                    for kind, _ in frames(incoming):
                        if kind == b"R":
                            page = frame(b"P", self.body())
                            with self._send:
                                self._feed.sendall(page)
            except OSError:  # the page's process is gone: as at the end of its feed
                pass
            if self._stopping.is_set():
                return
            status = self.process.wait()
            log.error("the page's process ended (status %s): starting it again", status)
            if self._stopping.wait(1.0):
                return
            try:
                self._spawn()
            except OSError as e:
                log.error("the page's process could not start: %s", e)

    def reload(self) -> None:
        """SIGHUP: the page's process reads the certificate and key again (renewed); if they
        cannot be used, it keeps the old ones and logs why."""
        if self.tls is not None and self._feed is not None:
            try:
                with self._send:
                    self._feed.sendall(frame(b"H"))
            except OSError as e:
                log.error("the page's process did not get the reload: %s", e)

    def stop(self) -> None:
        self._stopping.set()
        if self._feed is not None:
            try:
                self._feed.shutdown(socket.SHUT_RDWR)  # the page's process ends on this
            except OSError:
                pass
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        if self._feed is not None:
            self._feed.close()
        self.listener.close()


def _recv(feed: socket.socket) -> bytes:
    try:
        return feed.recv(65536)
    except OSError:
        return b""
