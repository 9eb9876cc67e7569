"""Every input source honours one contract: the lines written to it come out whole and in
order, a 1 MB line comes out cut to the limit (so the parser rejects it without holding it),
a half-written last line comes out as it is, and `stop` ends a source that would wait forever."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from edge_ids.edge_runtime.ingest.records import MAX_LINE_BYTES
from edge_ids.edge_runtime.ingest.inputs import open_source
from edge_ids.edge_runtime.ingest.sources import (FollowSource, LineSplitter, StreamSource,
                                           UnixSocketSource)

GOOD = [f"{i},tcp,http,SF,{i * 7}\n".encode() for i in range(2000)]
HUGE = b"9" * (1 << 20) + b"\n"
PAYLOAD = GOOD[:1000] + [HUGE] + GOOD[1000:] + [b"1,tcp,ht"]  # ends in a half line
# what comes out: lines without their newline, the huge one cut to one byte over the limit
EXPECTED = [line.rstrip(b"\n") for line in GOOD[:1000]] + [HUGE[:MAX_LINE_BYTES + 1]] + [
    line.rstrip(b"\n") for line in GOOD[1000:]] + [b"1,tcp,ht"]


def bare(lines: list[bytes]) -> list[bytes]:
    return [line.rstrip(b"\n") for line in lines]


def collect(source, n, timeout=20.0):
    """Run the source in a thread until it has given n lines (or ended), then stop it."""
    stop, got = threading.Event(), []

    def run():
        for line in source.lines(stop):
            got.append(line)
            if len(got) >= n:
                stop.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, stop, got


def finish(thread, stop, got, n, timeout=20.0, waiting=False):
    """Wait for n lines, then stop the source; `waiting`: it must still be running by then."""
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.01)
    assert thread.is_alive() or not waiting, "the source ended (or crashed) instead of waiting"
    stop.set()
    thread.join(5)
    assert not thread.is_alive(), "the source did not stop"
    return got


def test_splitter_keeps_lines_whole_across_chunks_and_bounds_long_ones():
    splitter = LineSplitter()
    data = b"".join(PAYLOAD)
    lines = []
    for i in range(0, len(data), 777):
        lines += splitter.feed(data[i:i + 777])
    lines.append(splitter.flush())
    assert lines == EXPECTED and splitter.flush() is None


def test_file_source(tmp_path):
    path = tmp_path / "records.csv"
    path.write_bytes(b"".join(PAYLOAD))
    source = open_source(f"file:{path}")
    assert isinstance(source, StreamSource)
    assert list(source.lines(threading.Event())) == EXPECTED
    source.close()


def test_stdin_source_and_stop_while_idle():
    script = ("import sys, threading; from edge_ids.edge_runtime.ingest.inputs import open_source\n"
              "n = sum(1 for _ in open_source('-').lines(threading.Event()))\nprint(n)")
    done = subprocess.run([sys.executable, "-c", script], input=b"".join(PAYLOAD),
                          capture_output=True, timeout=60)
    assert done.stdout.decode().strip() == str(len(EXPECTED)), done.stderr.decode()
    # an idle stdin (a pipe nobody writes to) still notices stop
    read, write = os.pipe()
    saved = os.dup(0)
    os.dup2(read, 0)
    try:
        source = StreamSource("-")
        thread, stop, got = collect(source, 1)
        time.sleep(0.3)
        assert finish(thread, stop, got, 0, waiting=True) == []
    finally:
        os.dup2(saved, 0)
        for fd in (read, write, saved):
            os.close(fd)


def test_follow_source_across_rotation_and_truncation(tmp_path):
    """Each step waits for the source to have done the last (its lines out, its file opened
    or reopened, seen in /proc/self/fdinfo) instead of sleeping a guessed time: under load a
    fixed sleep against the 0.1 s poll could lose a line, and nothing waits for a line that
    never comes."""
    path = tmp_path / "flows.csv"
    path.write_bytes(b"old,line,before,start\n")  # before the daemon: not replayed
    source = FollowSource(str(path))
    thread, stop, got = collect(source, 5)
    wait_until(lambda: reading_at(path) == path.stat().st_size)  # opened, at its end
    with open(path, "ab") as f:
        f.write(GOOD[0] + GOOD[1] + b"half,")
    wait_until(lambda: len(got) == 2)
    os.rename(path, tmp_path / "flows.csv.1")  # logrotate: rename, then a new file
    path.write_bytes(GOOD[2])
    wait_until(lambda: len(got) == 4)  # the half line, once its file is left behind; GOOD[2]
    with open(path, "r+b") as f:  # copytruncate
        f.truncate(0)
    wait_until(lambda: reading_at(path) == 0)  # reopened at the start
    with open(path, "ab") as f:
        f.write(GOOD[3])
    lines = finish(thread, stop, got, 5)
    source.close()
    assert lines == bare([GOOD[0], GOOD[1], b"half,", GOOD[2], GOOD[3]])


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def reading_at(path) -> int | None:
    """The offset at which this process reads `path` (its open descriptor's pos), if it does."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                info = open(f"/proc/self/fdinfo/{fd}").read()
                return int(info.split("pos:")[1].split()[0])
        except OSError:
            continue
    return None


def test_follow_source_waits_for_the_file(tmp_path):
    path = tmp_path / "later.csv"
    source = open_source(f"follow:{path}")
    thread, stop, got = collect(source, 2)
    time.sleep(0.3)
    path.write_bytes(GOOD[0] + GOOD[1])
    assert finish(thread, stop, got, 2) == bare(GOOD[:2])
    source.close()


def test_unix_socket_source_with_several_writers(tmp_path):
    path = tmp_path / "in.sock"
    source = open_source(f"unix:{path}")
    assert isinstance(source, UnixSocketSource) and path.is_socket()
    thread, stop, got = collect(source, 2 * len(EXPECTED))

    def writer(tag: bytes):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(path))
            data = b"".join(tag + line for line in PAYLOAD[:-1]) + tag + PAYLOAD[-1]
            for i in range(0, len(data), 4093):  # small writes: lines arrive in pieces
                s.sendall(data[i:i + 4093])

    writers = [threading.Thread(target=writer, args=(t,)) for t in (b"a", b"b")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(30)
    lines = finish(thread, stop, got, 2 * len(EXPECTED))
    source.close()
    assert not path.exists()
    for tag in (b"a", b"b"):
        mine = [l for l in lines if l.startswith(tag)]
        expected = [(tag + l)[:MAX_LINE_BYTES + 1] for l in EXPECTED]
        assert mine == expected  # whole, in order, never mixed with the other writer's


def test_bad_input_spec():
    with pytest.raises(ValueError, match="file:PATH"):
        open_source("tcp:1234")
