"""Where the daemon's raw record lines come from. One interface, `LineSource.batches(stop)`:
lists of complete lines as bytes (what one read delivered), in arrival order per writer, until
the source ends or `stop` is set. Lists, not single lines, so that the hand-over to the
classifying thread costs one lock per read rather than one per record.

    -            stdin
    file:PATH    a file (plain or .gz), read once
    follow:PATH  a file being appended to and rotated, like `tail -F` (starts at its end
                 unless from_start)
    unix:PATH    a UNIX stream socket that several writers may connect to at once

Every source splits bytes into lines through `LineSplitter`, which never holds more than
MAX_LINE_BYTES + 1 bytes of one line: a 1 MB line reaches the parser cut short (and is rejected
as too long) instead of filling memory. A writer that disconnects, or a file that ends, in the
middle of a line yields that half line; the parser rejects it with a reason.
"""
from __future__ import annotations

import os
import selectors
import socket
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterator

from .records import MAX_LINE_BYTES, RawSchema, open_input

POLL_SECONDS = 0.1  # how often a waiting source looks at `stop` (and a followed file)
READ_BYTES = 1 << 16


class LineSplitter:
    """Bytes in, complete lines out (without their newline); an over-long line is cut to
    MAX_LINE_BYTES + 1 bytes, which the parser rejects as too long."""

    def __init__(self):
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> list[bytes]:
        pieces = data.split(b"\n")  # the first continues the kept part, the last is kept
        if len(pieces) == 1:
            self._keep(data)
            return []
        self._keep(pieces[0])
        lines = [self._take()]
        lines += pieces[1:-1]
        self._keep(pieces[-1])
        if max(map(len, lines)) > MAX_LINE_BYTES:
            lines = [line[:MAX_LINE_BYTES + 1] for line in lines]
        return lines

    def flush(self) -> bytes | None:
        """The unfinished last line, if any (the writer went away in the middle of it)."""
        return self._take() if self._size else None

    def _keep(self, piece: bytes) -> None:
        room = MAX_LINE_BYTES + 1 - self._size
        piece = piece[:max(room, 0)]
        if piece:
            self._parts.append(piece)
            self._size += len(piece)

    def _take(self) -> bytes:
        line = b"".join(self._parts)
        self._parts, self._size = [], 0
        return line


class LineSource(ABC):
    @abstractmethod
    def batches(self, stop: threading.Event) -> Iterator[list[bytes]]:
        """Lists of complete lines until the source ends or `stop` is set."""

    def lines(self, stop: threading.Event) -> Iterator[bytes]:
        """The same lines one at a time."""
        for batch in self.batches(stop):
            yield from batch

    def close(self) -> None:
        """Release files and sockets (idempotent)."""


class StreamSource(LineSource):
    """stdin or a file read once. stdin is polled so that `stop` is seen while it is idle."""

    def __init__(self, path: str):
        self.path = path
        # stdin by descriptor: it is polled, and read with os.read (no Python-level buffer)
        self._stream = open(0, "rb", closefd=False) if path == "-" else open_input(path)

    def batches(self, stop: threading.Event) -> Iterator[list[bytes]]:
        splitter = LineSplitter()
        for data in self._chunks(stop):
            lines = splitter.feed(data)
            if lines:
                yield lines
        rest = splitter.flush()
        if rest is not None:
            yield [rest]

    def _chunks(self, stop: threading.Event) -> Iterator[bytes]:
        pollable = self.path == "-"
        with selectors.DefaultSelector() as selector:
            if pollable:
                selector.register(self._stream, selectors.EVENT_READ)
            while not stop.is_set():
                if pollable and not selector.select(POLL_SECONDS):
                    continue
                # read1, not read: a damaged .gz then hands over what it decompressed before
                # the damage (read would drop the whole buffer it was filling)
                data = (os.read(self._stream.fileno(), READ_BYTES) if pollable
                        else self._stream.read1(READ_BYTES))
                if not data:
                    return
                yield data

    def close(self) -> None:
        self._stream.close()


class FollowSource(LineSource):
    """A file that grows and is rotated (renamed and recreated, or truncated), like `tail -F`.
    A file that does not exist yet is waited for. The half line at the end of a rotated-away
    file is yielded once its file is left behind."""

    def __init__(self, path: str, from_start: bool = False):
        self.path = Path(path)
        self.from_start = from_start
        self._file = None

    def batches(self, stop: threading.Event) -> Iterator[list[bytes]]:
        splitter = LineSplitter()
        first = True  # only a file there at start is skipped to its end; a later one is new
        while not stop.is_set():
            if self._file is None:
                opened = self._open(at_end=first and not self.from_start)
                first = False
                if not opened:
                    stop.wait(POLL_SECONDS)
                    continue
            data = self._file.read(READ_BYTES)
            if data:
                lines = splitter.feed(data)
                if lines:
                    yield lines
                continue
            if self._rotated():
                lines = splitter.feed(self._file.read())  # whatever came before the switch
                rest = splitter.flush()
                if lines or rest is not None:
                    yield lines + ([rest] if rest is not None else [])
                self._file.close()
                self._file = None
                continue
            stop.wait(POLL_SECONDS)

    def _open(self, at_end: bool) -> bool:
        try:
            self._file = open(self.path, "rb")
        except FileNotFoundError:
            return False
        if at_end:
            self._file.seek(0, os.SEEK_END)
        return True

    def _rotated(self) -> bool:
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return True
        mine = os.fstat(self._file.fileno())
        return (now.st_ino, now.st_dev) != (mine.st_ino, mine.st_dev) or now.st_size < (
            self._file.tell())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class UnixSocketSource(LineSource):
    """A listening UNIX stream socket; each connected writer has its own line buffer, so lines
    from several writers never mix. The socket file is created (mode 0660) and removed."""

    def __init__(self, path: str, backlog: int = 16):
        self.path = Path(path)
        if self.path.exists() and self.path.is_socket():
            self.path.unlink()  # a stale socket from a previous run
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.path))
        os.chmod(self.path, 0o660)
        self._server.listen(backlog)
        self._server.setblocking(False)

    def batches(self, stop: threading.Event) -> Iterator[list[bytes]]:
        with selectors.DefaultSelector() as selector:
            selector.register(self._server, selectors.EVENT_READ, None)
            try:
                while not stop.is_set():
                    for key, _ in selector.select(POLL_SECONDS):
                        if key.data is None:
                            connection, _ = self._server.accept()
                            connection.setblocking(False)
                            selector.register(connection, selectors.EVENT_READ, LineSplitter())
                            continue
                        yield from self._read(key.fileobj, key.data, selector)
            finally:
                for key in list(selector.get_map().values()):
                    if key.data is not None:
                        key.fileobj.close()

    @staticmethod
    def _read(connection, splitter: LineSplitter, selector) -> Iterator[list[bytes]]:
        try:
            data = connection.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            lines = splitter.feed(data)
            if lines:
                yield lines
            return
        selector.unregister(connection)
        connection.close()
        rest = splitter.flush()
        if rest is not None:
            yield [rest]

    def close(self) -> None:
        if self._server.fileno() >= 0:
            self._server.close()
            self.path.unlink(missing_ok=True)


def open_source(spec: str, follow_from_start: bool = False,
                schema: RawSchema | None = None, flow_report_seconds: int = 5) -> LineSource:
    """'-', 'file:PATH', 'follow:PATH', 'unix:PATH', or flows that Argus makes from packets:
    'argus:INTERFACE' or 'pcap:FILE' (these need the bundle's `schema`); a clear ValueError
    otherwise."""
    if spec == "-":
        return StreamSource("-")
    kind, _, path = spec.partition(":")
    if not path or kind not in ("file", "follow", "unix", "argus", "pcap"):
        raise ValueError(f"unknown input {spec!r}: use -, file:PATH, follow:PATH, unix:PATH, "
                         f"argus:INTERFACE or pcap:FILE")
    if kind == "file":
        return StreamSource(path)
    if kind == "follow":
        return FollowSource(path, from_start=follow_from_start)
    if kind in ("argus", "pcap"):
        from .argus import ArgusSource

        return ArgusSource(schema, **{"interface" if kind == "argus" else "pcap": path},
                           status_seconds=flow_report_seconds)
    return UnixSocketSource(path)
