"""Clients for the page's tests (test_page_server.py, test_page_process.py): raw requests from
any source address on 127.0.0.0/8, and the page's server in a thread of the test's process."""
from __future__ import annotations

import select
import socket
import threading
import time

from edge_ids.edge_runtime.outputs.page_server import PageHttp, frame, frames

TOKEN = "s3cret-token-for-the-page"


class Served:
    """PageHttp on 127.0.0.1 in a thread of this process (as in the page's process), its pages
    from a thread playing the daemon: what it holds can be looked at."""

    def __init__(self, **caps):
        listener = socket.create_server(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        self.daemon_end, page_end = socket.socketpair()
        self.http = PageHttp(listener, page_end, TOKEN, **caps)
        self.threads = [threading.Thread(target=self.http.run, daemon=True),
                        threading.Thread(target=self._pages, daemon=True)]
        for t in self.threads:
            t.start()

    def _pages(self) -> None:
        incoming = bytearray()
        while data := self.daemon_end.recv(4096):
            incoming += data
            for _ in frames(incoming):
                self.daemon_end.sendall(frame(b"P", b"<!doctype html><p>the page</p>"))

    def close(self) -> None:
        self.daemon_end.shutdown(socket.SHUT_RDWR)  # run() returns
        for t in self.threads:
            t.join(timeout=5)
        self.http.close()
        self.http.listener.close()
        self.daemon_end.close()


def connect(port: int, source: str = "127.0.0.1", host: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection((host, port), timeout=10, source_address=(source, 0))


def ask(port: int, head: bytes, source: str = "127.0.0.1") -> bytes:
    """Send a raw request head; everything the server answers before it closes."""
    with connect(port, source) as s:
        s.sendall(head)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def authorised(host: str = "localhost:9109") -> bytes:
    return (f"GET / HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
            .encode())


def closed(sockets: list, seconds: float, every: bool = False) -> list:
    """Those of `sockets` the server closed (or reset) having answered nothing: the first found
    within `seconds`, or with `every`, all that it closed by then (returning once all are)."""
    found, waiting = [], list(sockets)
    deadline = time.monotonic() + seconds
    while waiting:
        ready = select.select(waiting, [], [], max(0.0, deadline - time.monotonic()))[0]
        for s in ready:
            try:
                if s.recv(1) != b"":
                    continue  # it answered something
            except ConnectionResetError:
                pass
            found.append(s)
            waiting.remove(s)
        if not ready or not every or time.monotonic() >= deadline:
            break
    return found


def refused(port: int, source: str) -> bool:
    """A connection is closed at once (the reset may even beat connect() to its result)."""
    try:
        s = connect(port, source)
    except ConnectionResetError:
        return True
    with s:
        return closed([s], 1.0) == [s]



def crowd_of(port: int, n: int = 500) -> list:
    """n connections from 250 sources, less those the page refused at once."""
    crowd = []
    for i in range(n):
        try:
            crowd.append(connect(port, f"127.0.0.{2 + i % 250}"))
        except ConnectionResetError:
            pass
    return crowd
