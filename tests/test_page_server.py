"""The page's server against idle, slow, crowding and rebinding clients, on real sockets on
127.0.0.1 (other sources are 127.0.0.2-254, which Linux lets a client bind on lo), in this
process and in a real daemon: its deadline, caps, Host check, head cap, TLS and the device
snapshot taken off the detection lock."""
from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from daemon_process import DaemonProcess
from edge_ids.benchmarks.detection.page_load import TimedLock, crowded_tracker
from edge_ids.edge_runtime.operator_page import MAKE_CERTIFICATE, OperatorView, PageServer
from edge_ids.edge_runtime.page_render import MAX_DEVICES_SHOWN
from edge_ids.edge_runtime.page_server import HEAD_BYTES, HEAD_SECONDS, PER_SOURCE, TOTAL, \
    YOUNG_SECONDS, PageHttp, frame, frames

from edge_ids.cli import main

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


@pytest.fixture
def page():
    served = Served()
    yield served, served.port
    served.close()


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


def test_idle_and_slow_connections_are_dropped_at_the_head_deadline(page):
    _, port = page
    idle = [connect(port, f"127.0.0.{i}") for i in range(2, 6)]
    opened = time.monotonic()
    slow = connect(port, "127.0.0.6")
    slow.sendall(b"GET / HTTP/1.1\r\n")
    dropped = None
    while time.monotonic() - opened < HEAD_SECONDS + 2:
        try:  # a byte of a header every 0.2 s: progress, but the head never ends
            slow.sendall(b"X")
        except OSError:
            dropped = time.monotonic() - opened
            break
        time.sleep(0.2)
    assert dropped is not None and HEAD_SECONDS - 0.1 <= dropped <= HEAD_SECONDS + 0.6
    assert len(closed(idle, 0.5, every=True)) == len(idle)
    for s in idle + [slow]:
        s.close()


def test_connections_are_capped_per_source_and_in_all(page):
    server, port = page
    crowd = [connect(port, f"127.0.1.{i}") for i in range(1, TOTAL - PER_SOURCE + 1)]
    time.sleep(YOUNG_SECONDS + 0.1)
    busy = [connect(port, "127.0.0.2") for _ in range(PER_SOURCE)]  # one source, 8: its cap
    assert refused(port, "127.0.0.2")
    assert closed(crowd + busy, 0.1) == []
    assert len(server.http.connections) == TOTAL
    # full: a newcomer takes the place of the oldest of the busiest source, among the
    # connections old enough (the busy source's are young yet: one of the crowd goes)
    first = connect(port, "127.0.0.3")
    assert closed(crowd[:1], 1.0) == crowd[:1]
    assert closed(crowd[1:] + busy + [first], 0.1) == []
    time.sleep(YOUNG_SECONDS)  # now all are old: the busiest source's oldest goes
    second = connect(port, "127.0.0.4")
    assert closed([busy[0]], 1.0) == [busy[0]]
    assert closed(crowd[1:] + busy[1:] + [first, second], 0.1) == []
    assert len(server.http.connections) == TOTAL
    assert server.http.counts["refused: per source"] == 1
    assert server.http.counts["evicted"] == 2
    for s in crowd + busy + [first, second]:
        s.close()


def test_sources_whose_connections_end_without_a_request_are_pushed_out_first():
    served = Served(total=4, per_source=4)
    try:
        x = [connect(served.port, f"127.0.3.{i}") for i in range(1, 5)]
        time.sleep(0.1)  # read once: clean sources alike, the oldest goes for a newcomer
        y = connect(served.port, "127.0.3.5")
        assert closed(x, 1.0) == [x[0]]
        y.close()  # ended without a request: a strike for 127.0.3.5, and a place free
        time.sleep(0.1)
        z = connect(served.port, "127.0.3.1")  # x[0]'s source, struck, let into that place
        assert closed(x[1:] + [z], 0.2) == []
        w = connect(served.port, "127.0.3.6")  # full: the struck source's goes, the newest
        assert closed(x[1:] + [z, w], 1.0) == [z]
        assert served.http.strikes == {"127.0.3.1": 2, "127.0.3.5": 1}
        # a newcomer from a struck source takes no clean connection's place: it is refused
        assert refused(served.port, "127.0.3.5")
        assert closed(x[1:] + [w], 0.2) == []
        assert served.http.counts["refused: full"] == 1
        for s in x + [y, z, w]:
            s.close()
    finally:
        served.close()


def test_a_rebinding_host_gets_403_and_loopback_names_pass(page):
    _, port = page
    for host in ("evil.example", "evil.example:9109", "localhost.evil.example",
                 "127.0.0.1.nip.io:9109", "192.168.1.10:9109", "[::1]evil", ""):
        assert status(ask(port, authorised(host))) == 403, host
    no_host = f"GET / HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    assert status(ask(port, no_host)) == 403
    for host in ("localhost:8080", "localhost", "LOCALHOST:80", "127.0.0.1:9109",
                 "127.0.0.2", "[::1]:9109", "[::1]"):
        assert status(ask(port, authorised(host))) == 200, host
    # the Host is checked before the token: a rebound browser learns nothing either way
    assert status(ask(port, b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n")) == 403
    two = f"GET / HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n".encode()
    assert status(ask(port, two)) == 400


def padded(size: int) -> bytes:
    """An authorised, well-formed request head of `size` bytes (blank line included)."""
    head = authorised()[:-2]
    return head + b"X-Pad: " + b"a" * (size - len(head) - len(b"X-Pad: \r\n\r\n")) + b"\r\n\r\n"


def test_a_head_over_the_cap_is_refused_without_being_parsed(page):
    server, port = page
    # authorised and well formed, but 1 byte over: refused, its request never looked at
    assert len(padded(HEAD_BYTES + 1)) == HEAD_BYTES + 1
    assert status(ask(port, padded(HEAD_BYTES + 1))) == 431
    assert status(ask(port, padded(HEAD_BYTES))) == 200
    # a head that never ends: refused as soon as the cap is reached, not at the deadline
    with connect(port) as s:
        started = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nX-Long: " + b"a" * (2 * HEAD_BYTES))
        s.settimeout(HEAD_SECONDS)
        assert s.recv(100).startswith(b"HTTP/1.1 431 ")
        assert time.monotonic() - started < 1.0
    assert server.http.counts["head too large"] == 2


def crowd_of(port: int, n: int = 500) -> list:
    """n connections from 250 sources, less those the page refused at once."""
    crowd = []
    for i in range(n):
        try:
            crowd.append(connect(port, f"127.0.0.{2 + i % 250}"))
        except ConnectionResetError:
            pass
    return crowd


def test_an_authorised_request_is_answered_while_500_idle_connections_are_open(page):
    server, port = page
    crowd = crowd_of(port)
    try:
        for _ in range(6):  # across the idle ones' deadline and the churn it starts
            started = time.monotonic()
            answer = ask(port, authorised())
            assert status(answer) == 200 and time.monotonic() - started < 1.0
            assert len(server.http.connections) <= TOTAL
            time.sleep(0.5)
        assert len(closed(crowd, HEAD_SECONDS + 0.5, every=True)) == len(crowd)
    finally:
        for s in crowd:
            s.close()


def test_the_page_copies_16384_devices_off_the_detection_lock():
    tracker = crowded_tracker()
    view = OperatorView("model")
    view.tracker, view.lock = tracker, TimedLock()
    for _ in range(3):
        state = view.state()
    assert min(view.lock.held) < 0.005  # the rows used to be built under it: about 50 ms
    expected = tracker.snapshot()  # what the page showed, built under the lock
    expected.sort(key=lambda d: (d["incident"] is None, not d["new"], -d["last_seen"]))
    assert state["devices"] == expected[:MAX_DEVICES_SHOWN]
    assert sum(1 for d in expected if d["incident"] is not None) == 50
    assert state["device_count"] == 16384 and state["new_count"] == 16384
    assert any(d["timeline"] for d in state["devices"])


# -- TLS, the command line, a real daemon -----------------------------------------------------

def certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed pair made by the command the refusal and the docs give (CN sensor-1)."""
    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command")
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(MAKE_CERTIFICATE.split(), cwd=folder, check=True, capture_output=True)
    return folder / "page.crt", folder / "page.key"


def fetch_tls(port: int, cafile: Path, head: bytes = authorised()) -> bytes:
    context = ssl.create_default_context(cafile=str(cafile))
    with connect(port) as raw, context.wrap_socket(raw, server_hostname="sensor-1") as s:
        s.sendall(head)
        answer = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ssl.SSLEOFError:  # closed without close_notify, after the whole answer
                break
            if not chunk:
                break
            answer += chunk
    return answer


def test_a_tls_page_answers_over_tls_only(tmp_path):
    cert, key = certificate(tmp_path)
    server = PageServer(OperatorView("model"), "127.0.0.1:0", token=TOKEN, tls=(cert, key))
    _, port = server.start()
    try:
        answer = fetch_tls(port, cert)
        assert status(answer) == 200 and b"<!doctype html>" in answer
        assert status(fetch_tls(port, cert, authorised("evil.example"))) == 403
        with pytest.raises(ssl.SSLCertVerificationError):  # a client that checks the name
            with connect(port) as raw:
                ssl.create_default_context(cafile=str(cert)).wrap_socket(
                    raw, server_hostname="other-host")
        try:  # cleartext HTTP to the TLS port: no page
            plain = ask(port, authorised())
        except ConnectionResetError:
            plain = b""
        assert b"200 OK" not in plain and TOKEN.encode() not in plain
    finally:
        server.stop()


def run_page(bundle: Path, *options: str):
    return CliRunner().invoke(main, ["run", "--bundle", str(bundle), "--input",
                                     "file:/dev/null", *options])


def test_a_page_off_loopback_needs_a_token_and_tls_else_exit_2(small_pipeline, tmp_path):
    bundle = small_pipeline[0] / "bundle"
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    result = run_page(bundle, "--ui", "0.0.0.0:9109")
    assert result.exit_code == 2 and "--ui-token-file FILE" in result.output
    assert not re.search(r"--ui-token\b(?!-file)", result.output)  # no such option
    result = run_page(bundle, "--ui", "0.0.0.0:9109", "--ui-token-file", str(token))
    assert result.exit_code == 2 and "cleartext" in result.output
    assert "--ui-cert FILE --ui-key FILE" in result.output and "openssl req" in result.output
    cert, key = certificate(tmp_path / "pair")
    result = run_page(bundle, "--ui", "127.0.0.1:0", "--ui-cert", str(cert))
    assert result.exit_code == 2 and "both --ui-cert FILE and --ui-key FILE" in result.output
    result = run_page(bundle, "--ui", "127.0.0.1:0", "--ui-cert", str(cert), "--ui-key",
                      str(token))  # a key file that is no key: the file is unusable
    assert result.exit_code == 5 and "not a usable certificate and key" in result.output


def daemon_with_page(tmp: Path, bundle: Path, *options: str) -> tuple[DaemonProcess, str]:
    token = tmp / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)  # a token file others may open is refused
    daemon = DaemonProcess(tmp, "--bundle", str(bundle), "--input", f"unix:{tmp / 'in.sock'}",
                           "--alerts", str(tmp / "alerts.json"), "--ui-token-file", str(token),
                           *options)
    found = re.search(r"operator page on (https?://\S+/)", daemon.log_text())
    return daemon, found.group(1)


def proc_counts(pid: int) -> tuple[int, int]:
    """(threads, open file descriptors) of a process."""
    threads = int(re.search(r"^Threads:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(),
                            re.M).group(1))
    return threads, len(os.listdir(f"/proc/{pid}/fd"))


def page_process(daemon: DaemonProcess) -> int:
    children = Path(f"/proc/{daemon.process.pid}/task/{daemon.process.pid}/children")
    pids = children.read_text().split()
    assert len(pids) == 1, pids  # the page's process, the daemon's only child here
    return int(pids[0])


def wait_log(daemon: DaemonProcess, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in daemon.log_text():
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{daemon.log_text()}"
        time.sleep(0.05)


def test_500_idle_connections_take_no_thread_of_the_daemon(small_pipeline, tmp_path):
    daemon, url = daemon_with_page(tmp_path, small_pipeline[0] / "bundle", "--ui",
                                   "127.0.0.1:0")
    port = int(url.rsplit(":", 1)[1].strip("/"))
    try:
        page = page_process(daemon)
        assert status(ask(port, authorised())) == 200  # the page's process is up
        before = proc_counts(daemon.process.pid), proc_counts(page)
        crowd = crowd_of(port)
        time.sleep(0.5)
        during = proc_counts(daemon.process.pid), proc_counts(page)
        assert during[0][0] == before[0][0] and during[0][1] <= before[0][1] + 2  # none here
        assert during[1][0] == 1 and during[1][1] <= before[1][1] + TOTAL  # the page, at most 64
        started = time.monotonic()
        assert status(ask(port, authorised())) == 200
        assert time.monotonic() - started < 1.0
        assert len(closed(crowd, HEAD_SECONDS + 0.5, every=True)) == len(crowd)
        for s in crowd:
            s.close()
    finally:
        daemon.stop()


def test_the_pages_process_loads_the_standard_library_only_and_never_sees_the_token_argv(
        tmp_path):
    server = PageServer(OperatorView("model"), "127.0.0.1:0", token=TOKEN)
    _, port = server.start()
    try:
        assert status(ask(port, authorised())) == 200  # it runs, with the token
        pid = server.process.pid
        mapped = Path(f"/proc/{pid}/maps").read_text()
        assert "numpy" not in mapped and "litert" not in mapped.lower()
        assert "libpython" in mapped or "python" in Path(f"/proc/{pid}/exe").resolve().name
        assert TOKEN.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert TOKEN.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
    finally:
        server.stop()
    assert server.process.poll() is not None  # it ended with the page


def test_the_pages_process_is_started_again_if_it_ends():
    server = PageServer(OperatorView("model"), "127.0.0.1:0", token=TOKEN)
    _, port = server.start()
    try:
        first = server.process
        first.kill()
        deadline = time.monotonic() + 10
        while server.process is first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.process is not first
        assert status(ask(port, authorised())) == 200  # the same port, a new process
    finally:
        server.stop()


def test_ipv6_loopback_page_is_served(small_pipeline, tmp_path):
    daemon, url = daemon_with_page(tmp_path, small_pipeline[0] / "bundle", "--ui", "[::1]:0")
    try:
        assert url.startswith("http://[::1]:")
        port = int(url.rsplit(":", 1)[1].strip("/"))
        with socket.create_connection(("::1", port), timeout=10) as s:
            s.sendall(authorised(f"[::1]:{port}"))
            assert s.recv(100).startswith(b"HTTP/1.1 200 ")
    finally:
        daemon.stop()


def test_sighup_reloads_the_certificate_and_a_broken_one_is_not_taken(small_pipeline, tmp_path):
    cert, key = certificate(tmp_path / "first")
    served_cert, served_key = tmp_path / "page.crt", tmp_path / "page.key"
    shutil.copy(cert, served_cert)
    shutil.copy(key, served_key)
    daemon, url = daemon_with_page(tmp_path, small_pipeline[0] / "bundle", "--ui",
                                   "127.0.0.1:0", "--ui-cert", str(served_cert), "--ui-key",
                                   str(served_key))
    port = int(url.rsplit(":", 1)[1].strip("/"))
    try:
        assert url.startswith("https://")
        assert status(fetch_tls(port, cert)) == 200
        renewed, renewed_key = certificate(tmp_path / "second")
        shutil.copy(renewed, served_cert)
        shutil.copy(renewed_key, served_key)
        daemon.signal(signal.SIGHUP)
        wait_log(daemon, "certificate was reloaded")
        assert status(fetch_tls(port, renewed)) == 200
        with pytest.raises(ssl.SSLCertVerificationError):  # the first one is gone
            fetch_tls(port, cert)
        served_key.write_text("not a key\n")
        daemon.signal(signal.SIGHUP)
        wait_log(daemon, "certificate was not reloaded, the old one stays")
        assert status(fetch_tls(port, renewed)) == 200
    finally:
        daemon.stop()
