"""`edge-ids run` reads its input whatever kind of file descriptor it is given: stdin as a
regular file (`< records.csv`, which epoll refuses), a pipe, /dev/null, a socket and a terminal;
file: on a FIFO (opened without waiting for its writer, stopped by SIGTERM while idle); and the
clear refusals (follow: on a FIFO, unix: on a path that is not a socket, a closed stdin). A
unix: input takes at most its cap of writers at once and survives running out of descriptors.
"""
from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from daemon_process import DaemonProcess, read_alerts
from edge_ids.edge_runtime.ingest.sources import UnixSocketSource
from test_daemon import expected_classes

RUN = [sys.executable, "-m", "edge_ids", "run"]


@pytest.fixture(scope="module")
def bundle(small_pipeline) -> Path:
    return small_pipeline[0] / "bundle"


@pytest.fixture(scope="module")
def records(kdd_test_lines, tmp_path_factory) -> tuple[Path, list[bytes]]:
    lines = kdd_test_lines[:1500]
    path = tmp_path_factory.mktemp("inputs") / "records.csv"
    path.write_bytes(b"".join(lines))
    return path, lines


def classes_out(stdout: bytes) -> list[str]:
    return [json.loads(line)["ml"]["class"] for line in stdout.splitlines()]


def run_with_stdin(bundle: Path, stdin, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(RUN + ["--bundle", str(bundle), "--input", "-", "--alerts", "-",
                                 "--emit", "all"], stdin=stdin, capture_output=True,
                          timeout=120, **kwargs)


def test_stdin_redirected_from_a_regular_file(bundle, records):
    path, lines = records
    with open(path, "rb") as f:
        done = run_with_stdin(bundle, f)
    assert done.returncode == 0, done.stderr.decode()
    assert classes_out(done.stdout) == expected_classes(bundle, lines)  # every one, in order


def test_stdin_from_a_pipe_and_from_dev_null(bundle, records):
    path, lines = records
    done = run_with_stdin(bundle, None, input=path.read_bytes())  # a pipe
    assert done.returncode == 0, done.stderr.decode()
    assert classes_out(done.stdout) == expected_classes(bundle, lines)
    done = run_with_stdin(bundle, subprocess.DEVNULL)
    assert done.returncode == 0 and done.stdout == b"", done.stderr.decode()
    assert "0 records" in done.stderr.decode()
    # the same character device named as a file: opened by descriptor, a FileIO without read1
    done = subprocess.run(RUN + ["--bundle", str(bundle), "--input", "file:/dev/null",
                                 "--alerts", "-"], capture_output=True, timeout=120)
    assert done.returncode == 0 and done.stdout == b"", done.stderr.decode()


def test_stdin_from_a_socket(bundle, records):
    path, lines = records
    ours, theirs = socket.socketpair()
    process = subprocess.Popen(RUN + ["--bundle", str(bundle), "--input", "-", "--alerts", "-",
                                      "--emit", "all"], stdin=theirs, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    theirs.close()
    ours.sendall(path.read_bytes())
    ours.shutdown(socket.SHUT_WR)
    out, err = process.communicate(timeout=120)
    ours.close()
    assert process.returncode == 0, err.decode()
    assert classes_out(out) == expected_classes(bundle, lines)


def test_stdin_from_a_terminal(bundle, records):
    """A pty, as an operator typing (or pasting) records; Ctrl-D ends the input."""
    _, lines = records
    lines = lines[:50]
    master, slave = pty.openpty()
    attributes = termios.tcgetattr(slave)
    attributes[3] &= ~termios.ECHO  # nobody reads the echo here
    termios.tcsetattr(slave, termios.TCSANOW, attributes)
    process = subprocess.Popen(RUN + ["--bundle", str(bundle), "--input", "-", "--alerts", "-",
                                      "--emit", "all"], stdin=slave, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    os.close(slave)
    for line in lines:
        os.write(master, line)
    os.write(master, b"\x04")  # end of input at the start of a line
    out, err = process.communicate(timeout=120)
    os.close(master)
    assert process.returncode == 0, err.decode()
    assert classes_out(out) == expected_classes(bundle, lines)


def test_a_closed_stdin_is_a_clear_error(bundle):
    done = subprocess.run(RUN + ["--bundle", str(bundle), "--input", "-", "--alerts", "-"],
                          stdin=None, capture_output=True, timeout=120,
                          preexec_fn=lambda: os.close(0))
    assert done.returncode == 1
    assert "stdin is closed" in done.stderr.decode()


def test_file_input_on_a_fifo(bundle, records, tmp_path):
    """Opened without waiting for a writer (READY=1 comes at once); read until the writer
    leaves; and while nobody writes, SIGTERM still stops it."""
    path, lines = records
    fifo = tmp_path / "records.fifo"
    os.mkfifo(fifo)
    alerts = tmp_path / "alerts.json"
    daemon = DaemonProcess(tmp_path, "--bundle", str(bundle), "--input", f"file:{fifo}",
                           "--alerts", str(alerts), "--emit", "all")
    with open(fifo, "wb") as writer:
        writer.write(path.read_bytes())
    assert daemon.wait(60) == 0
    assert [e["ml"]["class"] for e in read_alerts(alerts)] == expected_classes(bundle, lines)

    idle = DaemonProcess(tmp_path, "--bundle", str(bundle), "--input", f"file:{fifo}",
                         "--alerts", str(tmp_path / "idle.json"))
    started = time.monotonic()
    assert idle.stop(30) == 0  # nobody ever opened the FIFO for writing
    assert time.monotonic() - started < 5


def test_inputs_that_cannot_work_are_refused_at_start(bundle, tmp_path):
    fifo, plain = tmp_path / "f.fifo", tmp_path / "plain.txt"
    os.mkfifo(fifo)
    plain.write_text("not a socket\n")
    for spec, said in ((f"follow:{fifo}", "is not a regular file; for a pipe or FIFO use"),
                       (f"unix:{plain}", "exists and is not a socket")):
        done = subprocess.run(RUN + ["--bundle", str(bundle), "--input", spec, "--alerts", "-"],
                              capture_output=True, timeout=120)
        assert done.returncode == 1 and said in done.stderr.decode(), done.stderr.decode()
    assert plain.read_text() == "not a socket\n"  # left alone


def _collect(source, stop, got):
    thread = threading.Thread(target=lambda: [got.append(line) for line in source.lines(stop)],
                              daemon=True)
    thread.start()
    return thread


def _wait(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_unix_input_takes_at_most_its_cap_of_writers_and_the_rest_wait(tmp_path):
    path = tmp_path / "in.sock"
    source = UnixSocketSource(str(path), max_writers=2)
    stop, got = threading.Event(), []
    thread = _collect(source, stop, got)
    writers = []
    try:
        for tag in (b"a", b"b", b"c"):
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(path))  # the third waits in the listen queue, not refused
            s.sendall(tag + b",1\n")
            writers.append(s)
        assert _wait(lambda: len(got) >= 2) and not _wait(lambda: len(got) > 2, 0.5)
        assert sorted(got) == [b"a,1", b"b,1"]
        writers[0].close()  # one leaves: the waiting one is taken
        assert _wait(lambda: len(got) == 3) and got[2] == b"c,1"
    finally:
        for s in writers:
            s.close()
        stop.set()
        thread.join(5)
        source.close()


def test_unix_input_out_of_descriptors_keeps_serving(tmp_path):
    """With 40 descriptors and 60 writers, accepting pauses (and says so once), the connected
    writers are read, and every writer's line arrives as others leave."""
    script = f"""
import resource, socket, sys, threading, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from edge_ids.edge_runtime.ingest.sources import UnixSocketSource
resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))
source = UnixSocketSource({str(tmp_path / 'in.sock')!r}, backlog=128, max_writers=1000)
stop, got = threading.Event(), []
threading.Thread(target=lambda: [got.append(l) for l in source.lines(stop)], daemon=True).start()
print("listening", flush=True)
sys.stdin.readline()
deadline = time.monotonic() + 30
while len(got) < 60 and time.monotonic() < deadline:
    time.sleep(0.05)
stop.set()
print(len(got), len(set(got)), flush=True)
"""
    process = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "listening"
    writers = []
    for i in range(60):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(tmp_path / "in.sock"))
        s.sendall(f"{i},x\n".encode())
        writers.append(s)
    process.stdin.write("go\n")
    process.stdin.flush()
    time.sleep(1)
    for s in writers:  # leaving frees descriptors in the reader: the rest are taken
        s.close()
    out, err = process.communicate(timeout=60)
    assert out.split() == ["60", "60"], err
    assert err.count("cannot take another writer now") >= 1
    assert "Too many open files" in err
