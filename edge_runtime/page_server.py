"""The operator page's HTTP server: one thread and one selector for every connection, so that
no client, authorised or not, holds a thread of the daemon, and nothing a client sends is
trusted or kept before it has been bounded.

- The request's head (request line and headers) must end within HEAD_BYTES and within
  HEAD_SECONDS of the connection (a TLS handshake included): past the cap it is refused (431)
  without being parsed, past the deadline the connection is dropped.
- Then, before anything else is read from it: the Host (a page bound to loopback answers only
  loopback names and addresses, whatever the port: a DNS-rebound browser sends the attacker's
  name) and the token (`Authorization: Bearer`, or `?token=`).
- At most PER_SOURCE connections from one address (an IPv6 /64), TOTAL in all. A newcomer past
  TOTAL takes the place of the oldest unanswered connection of the source that holds the most,
  so a crowd of idle connections cannot keep the operator out.
- One request per connection; an answer that makes no progress for SEND_SECONDS is dropped.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import selectors
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from http import HTTPStatus
from typing import Callable, NamedTuple
from urllib.parse import parse_qs, urlsplit

HEAD_BYTES = 8192  # the request line and every header, with the blank line that ends them
HEAD_SECONDS = 2.0  # from the connection to the end of the head, TLS handshake included
SEND_SECONDS = 10.0  # an answer that makes no progress for this long is dropped
LINGER_SECONDS = 1.0  # after an answer, what the client still sends is read and thrown away
PER_SOURCE = 8  # connections from one address (a browser opens up to 6)
TOTAL = 64
HEADERS = ("Cache-Control: no-store\r\n"
           # nothing on the page may run or load anything: no script, no frames, no fetches
           "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; "
           "img-src data:; frame-ancestors 'none'; form-action 'none'\r\n"
           "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n"
           "Connection: close\r\nServer: edge-ids\r\n")
TLS_WAIT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)
HANDSHAKE, HEAD, SEND, LINGER = range(4)
log = logging.getLogger("edge_ids.daemon")


class Request(NamedTuple):
    method: str
    path: str


Answer = Callable[[Request], tuple[int, bytes, str]]  # (status, body, content type)


def source_of(address: str) -> str:
    """What the per-source cap counts: the address, or its /64 for IPv6 (one host has many)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if not ip.is_loopback:
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def loopback_host(value: str | None) -> bool:
    """A Host header naming this machine's loopback: localhost or a loopback address, with any
    port (`ssh -L 8080:127.0.0.1:9109` makes the browser send localhost:8080)."""
    if not value:
        return False
    if value.startswith("["):
        name, _, port = value[1:].partition("]")
        port = port.removeprefix(":") if port.startswith(":") or not port else "x"
    else:
        name, _, port = value.partition(":")
    if port and not port.isdigit():
        return False
    name = name.lower().removesuffix(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def reply(status: int, body: bytes, kind: str = "text/plain; charset=utf-8",
          head_only: bool = False) -> bytes:
    phrase = HTTPStatus(status).phrase
    return (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: {kind}\r\nContent-Length: "
            f"{len(body)}\r\n{HEADERS}\r\n").encode() + (b"" if head_only else body)


class _Connection:
    __slots__ = ("sock", "source", "opened", "deadline", "state", "buffer", "out", "sent")

    def __init__(self, sock, source: str, now: float, state: int):
        self.sock, self.source, self.opened, self.state = sock, source, now, state
        self.deadline = now + HEAD_SECONDS
        self.buffer = bytearray()
        self.out, self.sent = memoryview(b""), 0


class PageHttp:
    """Serves `answer` on (host, port) from its own thread; start() returns the bound address.
    `context` (an ssl.SSLContext) may be replaced at any time: new connections use the new one."""

    def __init__(self, host: str, port: int, answer: Answer, token: str | None = None,
                 context: ssl.SSLContext | None = None, check_host: bool = True,
                 per_source: int = PER_SOURCE, total: int = TOTAL):
        self.answer, self.token, self.context = answer, token, context
        self.check_host, self.per_source, self.total = check_host, per_source, total
        self.counts = Counter()  # what became of connections: answered, refused, evicted, ...
        self.listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind((host, port))
            self.listener.listen(128)
        except OSError:
            self.listener.close()
            raise
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self.connections: dict[_Connection, None] = {}  # oldest first
        self.sources: dict[str, int] = {}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="edge-ids-page")

    def start(self) -> tuple[str, int]:
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.selector.register(self._wake_in, selectors.EVENT_READ, "wake")
        self.thread.start()
        return self.listener.getsockname()[:2]

    def stop(self) -> None:
        self._stop.set()
        self._wake_out.send(b"x")
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        for conn in list(self.connections):
            self._drop(conn, "stopped")
        self.selector.close()
        self.listener.close()
        self._wake_in.close()
        self._wake_out.close()

    # -- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            first = min((c.deadline for c in self.connections), default=now + 1.0)
            for key, _ in self.selector.select(min(1.0, max(0.0, first - now))):
                if key.data is None:
                    self._accept()
                elif key.data == "wake":
                    self._wake_in.recv(64)
                elif key.data in self.connections:  # (not dropped earlier in this round)
                    self._step(key.data)
            now = time.monotonic()
            for conn in [c for c in self.connections if c.deadline <= now]:
                self._drop(conn, "timed out" if conn.state != LINGER else "done")

    def _accept(self) -> None:
        for _ in range(self.total):  # at most this many per wake: deadlines are checked too
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of file descriptors: the kernel keeps them queued
                self.counts["accept failed"] += 1
                return
            self._admit(sock, source_of(address[0]))

    def _admit(self, sock: socket.socket, source: str) -> None:
        if self.sources.get(source, 0) >= self.per_source:
            self.counts["refused: per source"] += 1
            return _reset(sock)
        if len(self.connections) >= self.total:
            victim = self._victim()
            if victim is None:  # every place is taken by an answer being sent
                self.counts["refused: full"] += 1
                return _reset(sock)
            self._drop(victim, "evicted")
        sock.setblocking(False)
        now = time.monotonic()
        if self.context is not None:
            try:
                sock = self.context.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
            except (OSError, ValueError):
                return _reset(sock)
        conn = _Connection(sock, source, now, HANDSHAKE if self.context else HEAD)
        self.connections[conn] = None
        self.sources[source] = self.sources.get(source, 0) + 1
        self.selector.register(sock, selectors.EVENT_READ, conn)
        self.counts["accepted"] += 1

    def _victim(self) -> _Connection | None:
        """The oldest unanswered connection of the source with the most unanswered ones."""
        waiting: dict[str, list] = {}
        for conn in self.connections:  # oldest first
            if conn.state in (HANDSHAKE, HEAD, LINGER):
                waiting.setdefault(conn.source, []).append(conn)
        if not waiting:
            return None
        return max(waiting.values(), key=lambda c: (len(c), -c[0].opened))[0]

    def _drop(self, conn: _Connection, why: str) -> None:
        self.connections.pop(conn, None)
        left = self.sources.get(conn.source, 1) - 1
        if left:
            self.sources[conn.source] = left
        else:
            self.sources.pop(conn.source, None)
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        self.counts[why] += 1
        if why == "done":  # answered, and the client has closed (or had a second to)
            conn.sock.close()
        else:
            _reset(conn.sock)

    # -- one connection ------------------------------------------------------------------------

    def _step(self, conn: _Connection) -> None:
        try:
            if conn.state == HANDSHAKE:
                conn.sock.do_handshake()
                conn.state = HEAD
                self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
            if conn.state == HEAD:
                self._read_head(conn)
            elif conn.state == SEND:
                self._send(conn)
            elif conn.state == LINGER:
                while conn.sock.recv(65536):
                    pass
                self._drop(conn, "done")
        except ssl.SSLWantReadError:
            self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
        except ssl.SSLWantWriteError:
            self.selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        except (BlockingIOError, InterruptedError):
            pass
        except (OSError, ValueError):  # reset, a broken handshake (ssl.SSLError is an OSError)
            if conn in self.connections:
                self._drop(conn, "failed" if conn.state != LINGER else "done")

    def _read_head(self, conn: _Connection) -> None:
        buffer = conn.buffer
        while True:  # until the socket (or TLS) has nothing more for now
            chunk = conn.sock.recv(HEAD_BYTES + 1 - len(buffer))
            if not chunk:
                return self._drop(conn, "closed by the client")
            start = max(0, len(buffer) - 3)
            buffer += chunk
            end = buffer.find(b"\r\n\r\n", start, HEAD_BYTES)
            if end >= 0:
                return self._respond(conn, self._decide(bytes(buffer[:end])))
            if len(buffer) > HEAD_BYTES:
                self.counts["head too large"] += 1
                return self._respond(conn, reply(431, f"the request's head is limited to "
                                                      f"{HEAD_BYTES} bytes\n".encode()))

    def _decide(self, head: bytes) -> bytes:
        """The answer to a whole head: the Host and the token first, then the request."""
        lines = head.decode("latin-1").split("\r\n")
        words = lines[0].split(" ")
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            return reply(400, b"bad request line\n")
        fields: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            name = name.lower()
            if not colon or not name or name != name.strip():
                return reply(400, b"bad header line\n")
            if name in ("host", "authorization"):
                if name in fields:
                    return reply(400, f"more than one {name} header\n".encode())
                fields[name] = value.strip()
        method, target = words[0], words[1]
        head_only = method == "HEAD"
        if self.check_host and not loopback_host(fields.get("host")):
            self.counts["refused: host"] += 1
            return reply(403, b"this page answers only to localhost or a loopback address "
                              b"in the Host header\n", head_only=head_only)
        url = urlsplit(target)
        if self.token is not None and not self._allowed(fields.get("authorization", ""),
                                                        url.query):
            self.counts["refused: token"] += 1
            return reply(401, b"a token is needed: Authorization: Bearer TOKEN or "
                              b"?token=TOKEN\n", head_only=head_only)
        try:
            status, body, kind = self.answer(Request(method, url.path))
        except Exception:  # noqa: BLE001 - a fault in the page must not stop the server
            log.exception("the operator's page failed")
            status, body, kind = 500, b"the page failed; the daemon's log says why\n", \
                "text/plain; charset=utf-8"
        return reply(status, body, kind, head_only)

    def _allowed(self, authorization: str, query: str) -> bool:
        given = authorization[7:] if authorization.startswith("Bearer ") else \
            (parse_qs(query).get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _respond(self, conn: _Connection, data: bytes) -> None:
        conn.state, conn.out, conn.sent = SEND, memoryview(data), 0
        conn.deadline = time.monotonic() + SEND_SECONDS
        self.selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        self._send(conn)

    def _send(self, conn: _Connection) -> None:
        while conn.sent < len(conn.out):
            sent = conn.sock.send(conn.out[conn.sent:conn.sent + 65536])
            conn.sent += sent
            conn.deadline = time.monotonic() + SEND_SECONDS
        conn.state, conn.deadline = LINGER, time.monotonic() + LINGER_SECONDS
        conn.out = memoryview(b"")
        self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
        self.counts["answers"] += 1
        try:
            socket.socket.shutdown(conn.sock, socket.SHUT_WR)  # the plain socket's, also with TLS
        except OSError:
            pass


def _reset(sock: socket.socket) -> None:
    """Close at once, with a reset: nothing of a refused or dropped connection stays behind
    (no TIME_WAIT, no lingering buffer)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
