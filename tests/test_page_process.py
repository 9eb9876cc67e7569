"""The page as the daemon serves it: in a process of its own (the standard library only, the
token never on its command line, started again if it ends), over TLS with a certificate made by
the command the docs give and read again on SIGHUP, on [::1], refused off loopback without a
token and TLS (exit 2), and 500 idle connections that take nothing of the daemon's."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from daemon_process import DaemonProcess
from page_clients import TOKEN, ask, authorised, closed, connect, crowd_of, status
from edge_ids.edge_runtime.outputs.operator_page import MAKE_CERTIFICATE, OperatorView, PageServer
from edge_ids.edge_runtime.outputs.page_server import HEAD_SECONDS, TOTAL

from edge_ids.cli import main


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
