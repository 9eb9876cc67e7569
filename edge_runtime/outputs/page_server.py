"""The operator page's HTTP server, in a process of its own (operator_page.PageServer starts
it: `python -I -c BOOT`, which imports this file and page_wire.py by their path and nothing
else of the package: the standard library only). In the
daemon's process the page's thread waited for the interpreter lock at every system call while
the detection computed: under 500 connections it enforced a 2 s deadline after 3-4 s and let
some authorised requests be pushed out. Here it has its own lock and its own scheduling.

One selector for every connection, and nothing a client sends is kept before it is bounded:

- The request's head (request line and headers) must end within HEAD_BYTES and within
  HEAD_SECONDS of the connection (a TLS handshake included): past the cap it is refused (431)
  without being parsed, past the deadline the connection is dropped.
- Then, before anything else is read from it: the Host (a page bound to loopback answers only
  loopback names and addresses, whatever the port: a DNS-rebound browser sends the attacker's
  name) and the token (`Authorization: Bearer`, or `?token=`).
- At most PER_SOURCE connections from one address (an IPv6 /64), TOTAL in all. A newcomer past
  TOTAL takes the place of an unanswered connection no better than itself: first of the
  sources whose connections have most often ended without a request lately (strikes, halved
  every STRIKE_HALF_LIFE), then one the page has looked at already, then one older than
  YOUNG_SECONDS, then of the source holding the most, its oldest (_victim). A crowd of idle
  connections cannot keep the operator out, nor push out a request that has just come in
  (under 500 connections reopened each second, 4 of 264 authorised requests were, before the
  strikes; 1 of 203 before this rule).
- One request per connection; an answer that makes no progress for SEND_SECONDS is dropped.

The page itself comes from the daemon over `feed` (a UNIX socket pair), at most once every
RENDER_SECONDS however many ask: frames of a kind byte, a 4-byte length and a payload. From the
daemon: T (the token, first), P (a page), H (read the certificate again). To it: R (a page).
"""
from __future__ import annotations

import hmac
import logging
import selectors
import signal
import socket
import ssl
import struct
import sys
import time
from collections import Counter
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from .page_wire import frame, frames, loopback_host, source_of, tls_context

HEAD_BYTES = 8192  # the request line and every header, with the blank line that ends them
HEAD_SECONDS = 2.0  # from the connection to the end of the head, TLS handshake included
SEND_SECONDS = 10.0  # an answer that makes no progress (or a page not made) for this long
LINGER_SECONDS = 1.0  # after an answer, what the client still sends is read and thrown away
YOUNG_SECONDS = 0.5  # while older ones are there, a connection this young is not pushed out
PER_SOURCE = 8  # connections from one address (a browser opens up to 6)
TOTAL = 64
STRIKE_HALF_LIFE = 60.0  # seconds
STRIKE_SOURCES = 4096  # sources remembered with their strikes (the oldest forgotten first)
RENDER_SECONDS = 1.0  # a page is made at most this often; requests in between get the last
HEADERS = ("Cache-Control: no-store\r\n"
           # nothing on the page may run or load anything: no script, no frames, no fetches
           "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; "
           "img-src data:; frame-ancestors 'none'; form-action 'none'\r\n"
           "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n"
           "Connection: close\r\nServer: edge-ids\r\n")
TEXT, HTML = "text/plain; charset=utf-8", "text/html; charset=utf-8"
HANDSHAKE, HEAD, WAIT, SEND, LINGER = range(5)  # WAIT: for a page from the daemon
log = logging.getLogger("edge_ids.page")


def reply(status: int, body: bytes, kind: str = TEXT, head_only: bool = False) -> bytes:
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\n{HEADERS}\r\n").encode() + \
        (b"" if head_only else body)


class _Connection:
    __slots__ = ("sock", "source", "opened", "deadline", "state", "buffer", "out", "sent",
                 "head_only")

    def __init__(self, sock, source: str, now: float, state: int):
        self.sock, self.source, self.opened, self.state = sock, source, now, state
        self.deadline = now + HEAD_SECONDS
        self.buffer = bytearray()
        self.out, self.sent, self.head_only = memoryview(b""), 0, False


class PageHttp:
    """Serves the page on a listening socket, with pages from the daemon over `feed`; run()
    returns when the daemon closes the feed. The TLS context may be replaced between rounds."""

    def __init__(self, listener: socket.socket, feed: socket.socket, token: str | None = None,
                 context: ssl.SSLContext | None = None, check_host: bool = True,
                 per_source: int = PER_SOURCE, total: int = TOTAL, reload=None):
        self.listener, self.feed, self.token, self.context = listener, feed, token, context
        self.check_host, self.per_source, self.total = check_host, per_source, total
        self.reload = reload  # called on H: returns the new context, or None to keep the old
        self.counts = Counter()  # what became of connections: answered, refused, evicted, ...
        self.connections: dict[_Connection, None] = {}  # oldest first
        self.sources: dict[str, int] = {}
        self.strikes: dict[str, float] = {}  # source -> connections ended without a request
        self._ranked: list | None = None  # this round's candidates to push out (_victim)
        self.polled = 0.0  # when this round's select() began: what was let in before, it saw
        self.halved = time.monotonic()
        self.longest = 0.0  # the longest a connection was held without a request, seconds
        self.page, self.made, self.asked = b"", -RENDER_SECONDS, None
        self.incoming = bytearray()
        listener.setblocking(False)
        feed.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, "listener")
        self.selector.register(feed, selectors.EVENT_READ, "feed")

    def run(self) -> None:
        while True:
            now = time.monotonic()
            self._ranked, self.polled = None, now
            first = min((c.deadline for c in self.connections), default=now + 1.0)
            events = self.selector.select(min(1.0, max(0.0, first - now)))
            # the connections let in first, newcomers after: an operator's request that has
            # arrived is answered before a crowd of connections can push it out
            for key, _ in sorted(events, key=lambda e: e[0].data == "listener"):
                if key.data == "listener":
                    self._accept()
                elif key.data == "feed":
                    if not self._from_daemon():
                        return
                elif key.data in self.connections:  # (not dropped earlier in this round)
                    self._step(key.data)
            now = time.monotonic()
            for conn in [c for c in self.connections if c.deadline <= now]:
                self._drop(conn, "timed out" if conn.state != LINGER else "done")
            if self.asked is not None and now - self.asked > SEND_SECONDS:
                self.asked = None  # the daemon did not answer: ask again when asked
            if now - self.halved > STRIKE_HALF_LIFE:
                self.halved = now
                self.strikes = {k: v / 2 for k, v in self.strikes.items() if v > 0.1}

    def summary(self) -> str:
        c = self.counts
        return (f"{c['accepted']:,} connections let in, {c['answers']:,} answered, "
                f"{c['evicted']:,} pushed out, {c['timed out']:,} timed out; refused "
                f"{c['refused: per source']:,} over the per-source cap and {c['refused: full']:,} "
                f"with no room; longest held without a request {self.longest:.2f} s")

    def close(self) -> None:
        for conn in list(self.connections):
            self._drop(conn, "stopped")
        self.selector.close()

    # -- the daemon's side ---------------------------------------------------------------------

    def _from_daemon(self) -> bool:
        try:
            data = self.feed.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        if not data:
            return False  # the daemon is gone, or stopping
        self.incoming += data
        for kind, payload in frames(self.incoming):
            if kind == b"P":
                self.page, self.made, self.asked = payload, time.monotonic(), None
                for conn in [c for c in self.connections if c.state == WAIT]:
                    self._respond(conn, reply(200, payload, HTML, conn.head_only))
            elif kind == b"H" and self.reload is not None:
                self.context = self.reload() or self.context
        return True

    def _page(self, conn: _Connection, head_only: bool) -> bytes | None:
        """The page if a recent one is there; else the daemon is asked and conn waits."""
        if time.monotonic() - self.made < RENDER_SECONDS:
            return reply(200, self.page, HTML, head_only)
        conn.state, conn.head_only = WAIT, head_only
        conn.deadline = time.monotonic() + SEND_SECONDS
        self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
        if self.asked is None:
            self.asked = time.monotonic()
            self.feed.send(frame(b"R"))  # 5 bytes: the socket's buffer always has room
        return None

    # -- connections ---------------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(TOTAL):  # at most this many per round: what was let in is served between
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
            victim = self._victim(self.strikes.get(source, 0.0))
            if victim is None:  # no place held by a connection worse than this one
                self.counts["refused: full"] += 1
                return _reset(sock)
            self._drop(victim, "evicted")
        sock.setblocking(False)
        if self.context is not None:
            try:
                sock = self.context.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
            except (OSError, ValueError):
                return _reset(sock)
        conn = _Connection(sock, source, time.monotonic(), HANDSHAKE if self.context else HEAD)
        self.connections[conn] = None
        self.sources[source] = self.sources.get(source, 0) + 1
        self.selector.register(sock, selectors.EVENT_READ, conn)
        self.counts["accepted"] += 1

    def _victim(self, strikes_of_newcomer: float) -> _Connection | None:
        """The place a newcomer takes, if it is held by a connection no better than it: of
        the unanswered connections, those with the most strikes, then those the page has looked
        at (let in before this round's select(): had a request come with one, it would have been
        read before any newcomer of this round), then those older than YOUNG_SECONDS,
        then of the source holding the most, the oldest. A newcomer never takes the place of
        a connection with fewer strikes than its source, nor of one with as many the page has
        not read yet. Ranked once a round (a crowd comes by the dozen), taken in order after."""
        for fresh in (self._ranked is None, True):
            if fresh:
                old, strikes, sources = (time.monotonic() - YOUNG_SECONDS, self.strikes,
                                         self.sources)
                newest_first = [c for c in reversed(self.connections)
                                if c.state not in (WAIT, SEND)]
                # a stable sort: among equals the oldest is last, and taken first
                self._ranked = sorted(newest_first, key=lambda c: (
                    strikes.get(c.source, 0.0), c.opened < self.polled, c.opened <= old,
                    sources[c.source]))
            while self._ranked:
                conn = self._ranked[-1]
                if conn not in self.connections or conn.state in (WAIT, SEND):
                    self._ranked.pop()
                    continue
                strikes = self.strikes.get(conn.source, 0.0)
                if strikes > strikes_of_newcomer or (strikes == strikes_of_newcomer
                                                     and conn.opened < self.polled):
                    return self._ranked.pop()
                return None  # the best candidate is no worse than the newcomer
        return None

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
        if conn.state in (HANDSHAKE, HEAD) and why != "stopped":  # ended without a request
            self.longest = max(self.longest, time.monotonic() - conn.opened)
            self.strikes[conn.source] = self.strikes.pop(conn.source, 0.0) + 1  # newest last
            if len(self.strikes) > STRIKE_SOURCES:
                del self.strikes[next(iter(self.strikes))]
        if why == "done":  # answered, and the client has closed (or had a second to)
            conn.sock.close()
        else:
            _reset(conn.sock)

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
            elif conn.state in (LINGER, WAIT):  # what a client sends after its head: away
                while conn.sock.recv(65536):
                    pass
                self._drop(conn, "done" if conn.state == LINGER else "closed by the client")
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
                answer = self._decide(conn, bytes(buffer[:end]))
                return None if answer is None else self._respond(conn, answer)
            if len(buffer) > HEAD_BYTES:
                self.counts["head too large"] += 1
                return self._respond(conn, reply(431, f"the request's head is limited to "
                                                      f"{HEAD_BYTES} bytes\n".encode()))

    def _decide(self, conn: _Connection, head: bytes) -> bytes | None:
        """The answer to a whole head: the Host and the token first, then the request; None
        when it waits for a page."""
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
        method, url = words[0], urlsplit(words[1])
        head_only = method == "HEAD"
        if self.check_host and not loopback_host(fields.get("host")):
            self.counts["refused: host"] += 1
            return reply(403, b"this page answers only to localhost or a loopback address "
                              b"in the Host header\n", head_only=head_only)
        if self.token is not None and not self._allowed(fields.get("authorization", ""),
                                                        url.query):
            self.counts["refused: token"] += 1
            return reply(401, b"a token is needed: Authorization: Bearer TOKEN or "
                              b"?token=TOKEN\n", head_only=head_only)
        if method not in ("GET", "HEAD"):
            return reply(405, b"read-only\n")
        if url.path == "/healthz":
            return reply(200, b"ok\n", head_only=head_only)
        if url.path != "/":
            return reply(404, b"not found\n", head_only=head_only)
        return self._page(conn, head_only)

    def _allowed(self, authorization: str, query: str) -> bool:
        given = authorization[7:] if authorization.startswith("Bearer ") else \
            (parse_qs(query).get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _respond(self, conn: _Connection, data: bytes) -> None:
        conn.state, conn.out, conn.sent = SEND, memoryview(data), 0
        conn.deadline = time.monotonic() + SEND_SECONDS
        self.selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        self._step(conn)

    def _send(self, conn: _Connection) -> None:
        while conn.sent < len(conn.out):
            conn.sent += conn.sock.send(conn.out[conn.sent:conn.sent + 65536])
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


def child_main(argv: list[str]) -> int:
    """The page's process: LISTEN_FD FEED_FD host|any [CERT KEY]; the token comes first on the
    feed. Ends when the daemon closes the feed (the daemon's signals are the daemon's)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="edge-ids: %(levelname)s %(message)s")
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    listener, feed = socket.socket(fileno=int(argv[0])), socket.socket(fileno=int(argv[1]))
    tls = argv[3:5] or None

    def reload() -> ssl.SSLContext | None:
        try:
            context = tls_context(*tls)
        except (OSError, ValueError) as e:
            log.error("the page's certificate was not reloaded, the old one stays: %s", e)
            return None
        log.info("the page's certificate was reloaded from %s", tls[0])
        return context

    incoming = bytearray()
    while not (first := next(frames(incoming), None)):
        data = feed.recv(4096)
        if not data:
            return 0
        incoming += data
    http = PageHttp(listener, feed, first[1].decode() or None,
                    tls_context(*tls) if tls else None, argv[2] == "host",
                    reload=reload if tls else None)
    http.incoming = incoming
    try:
        http.run()
    finally:
        log.info("the page: %s", http.summary())
        http.close()
    return 0
