"""Where the daemon's raw record lines come from. One interface, `LineSource.batches(stop)`:
lists of complete lines as bytes (what one read delivered), in arrival order per writer, until
the source ends or `stop` is set. Lists, not single lines, so that the hand-over to the
classifying thread costs one lock per read rather than one per record.

    -            stdin: a pipe, a regular file (`< records.csv`), /dev/null, a tty, a socket
    file:PATH    a file (plain or .gz), read once; a FIFO too
    follow:PATH  a regular file being appended to and rotated, like `tail -F` (starts at its
                 end unless from_start)
    unix:PATH    a UNIX stream socket that several writers may connect to at once

Every source splits bytes into lines through `LineSplitter`, which never holds more than
MAX_LINE_BYTES + 1 bytes of one line: a 1 MB line reaches the parser cut short (and is rejected
as too long) instead of filling memory. A writer that disconnects, or a file that ends, in the
middle of a line yields that half line; the parser rejects it with a reason.

None of them drops a line when the daemon is behind: the reader waits while the intake is full
(intake.py), so a pipe's, socket's or FIFO's writer waits in its write(), and a file is read
later. docs/daemon.md ("Under a flood") has what that means for each input.
"""
from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import stat
import sys
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterator

from .records import MAX_LINE_BYTES, open_input

POLL_SECONDS = 0.1  # how often a waiting source looks at `stop` (and a followed file)
READ_BYTES = 1 << 16
MAX_WRITERS = 64  # writers connected at once to a unix: input; more wait to connect
log = logging.getLogger("edge_ids.daemon")


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
    """stdin or file:PATH, read to its end, whatever kind of file it is. A pipe, FIFO, tty or
    socket is polled, so that `stop` is seen while it is idle; a regular file or /dev/null is
    read straight (epoll refuses them with EPERM, and they never block). A FIFO is opened
    without waiting for its writer. `.gz` is recognised in regular files."""

    def __init__(self, path: str):
        self.path = path
        self._stream = _open_stdin() if path == "-" else _open_path(path)

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
        with selectors.DefaultSelector() as selector:
            try:
                selector.register(self._stream.fileno(), selectors.EVENT_READ)
                pollable = True
            except PermissionError:  # a regular file or /dev/null: always readable
                pollable = False
            # FileIO (a character device opened by descriptor) has no read1, and needs none
            read = getattr(self._stream, "read1", self._stream.read)
            while not stop.is_set():
                if pollable:
                    if not selector.select(POLL_SECONDS):
                        continue
                    try:  # by descriptor: no Python-level buffer between polls
                        data = os.read(self._stream.fileno(), READ_BYTES)
                    except BlockingIOError:  # a FIFO opened non-blocking, raced empty
                        continue
                    except OSError as e:  # a terminal that hung up: the end of its input
                        if e.errno == errno.EIO and os.isatty(self._stream.fileno()):
                            return
                        raise
                else:
                    # read1, not read: a damaged .gz then hands over what it decompressed
                    # before the damage (read would drop the whole buffer it was filling)
                    data = read(READ_BYTES)
                if not data:
                    return
                yield data

    def close(self) -> None:
        self._stream.close()


def _open_stdin():
    if sys.stdin is None:  # Python found descriptor 0 closed at start
        raise ValueError("--input -: stdin is closed; give the daemon records on its stdin, "
                         "or read file:PATH or unix:PATH")
    return open(0, "rb", closefd=False)


def _open_path(path: str):
    """A regular file (plain or .gz) as usual; anything else (a FIFO, a character device) by
    descriptor, non-blocking, so that opening a FIFO does not wait for its writer."""
    if stat.S_ISREG(os.stat(path).st_mode):
        return open_input(path)
    return open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb", buffering=0)


class FollowSource(LineSource):
    """A file that grows and is rotated (renamed and recreated, or truncated), like `tail -F`.
    A file that does not exist yet is waited for. The half line at the end of a rotated-away
    file is yielded once its file is left behind."""

    def __init__(self, path: str, from_start: bool = False):
        self.path = Path(path)
        self.from_start = from_start
        self._file = None
        if self.path.exists():
            _regular_file(self.path)

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
            if self._rotated():  # the rest of the old file (a chunk at a time: it may be
                while not stop.is_set() and (data := self._file.read(READ_BYTES)):  # large
                    if lines := splitter.feed(data):  # when the daemon was behind)
                        yield lines
                rest = splitter.flush()
                if rest is not None:
                    yield [rest]
                self._file.close()
                self._file = None
                continue
            stop.wait(POLL_SECONDS)

    def _open(self, at_end: bool) -> bool:
        try:
            _regular_file(self.path)
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


def _regular_file(path: Path) -> None:
    """follow: reads by position and watches the size; a pipe has neither (and opening a FIFO
    would wait for a writer): say so instead of hanging."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError(f"follow:{path} is not a regular file; for a pipe or FIFO use "
                         f"file:{path} or -")


class UnixSocketSource(LineSource):
    """A listening UNIX stream socket; each connected writer has its own line buffer, so lines
    from several writers never mix. The socket file is created (mode 0660) and removed.

    At most `max_writers` are connected at once; more wait in the listen queue until one
    leaves (their connect() waits), so memory stays bounded (one unfinished line each). When the
    process is out of descriptors, accepting pauses for a moment instead of failing."""

    def __init__(self, path: str, backlog: int = 16, max_writers: int = MAX_WRITERS):
        self.path = Path(path)
        self.max_writers = max_writers
        if self.path.exists() and self.path.is_socket():
            self.path.unlink()  # a stale socket from a previous run
        elif self.path.exists():
            raise ValueError(f"unix:{path}: {path} exists and is not a socket")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.path))
        os.chmod(self.path, 0o660)
        self._server.listen(backlog)
        self._server.setblocking(False)
        self._listening = False
        self._accept_failing = False

    def batches(self, stop: threading.Event) -> Iterator[list[bytes]]:
        with selectors.DefaultSelector() as selector:
            paused_until = 0.0
            try:
                while not stop.is_set():
                    writers = len(selector.get_map()) - self._listening
                    self._listen(selector, writers < self.max_writers
                                 and time.monotonic() >= paused_until)
                    for key, _ in selector.select(POLL_SECONDS):
                        if key.data is None:
                            if not self._accept(selector):
                                paused_until = time.monotonic() + POLL_SECONDS
                            continue
                        yield from self._read(key.fileobj, key.data, selector)
            finally:
                for key in list(selector.get_map().values()):
                    if key.data is not None:
                        key.fileobj.close()

    def _listen(self, selector, on: bool) -> None:
        if on and not self._listening:
            selector.register(self._server, selectors.EVENT_READ, None)
        elif self._listening and not on:
            selector.unregister(self._server)
        self._listening = on

    def _accept(self, selector) -> bool:
        """Take one waiting writer; False when the process cannot now (out of descriptors)."""
        try:
            connection, _ = self._server.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return True
        except OSError as e:  # EMFILE, ENFILE, ENOBUFS, ENOMEM: the writer waits its turn
            if not self._accept_failing:
                log.warning("unix:%s: cannot take another writer now (%s); the ones "
                            "connected are still read, new ones wait", self.path, e.strerror)
            self._accept_failing = True
            return False
        self._accept_failing = False
        connection.setblocking(False)
        selector.register(connection, selectors.EVENT_READ, LineSplitter())
        return True

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
