"""`edge-ids run` as a real process for the tests: started with a real NOTIFY_SOCKET (a UNIX
datagram socket the test owns), its stderr in a file, its metrics read over HTTP.

Each sd_notify datagram is time-stamped by the kernel when the daemon sends it (SO_TIMESTAMPNS:
for a UNIX socket the stamp is taken in the sender's sendmsg), so intervals between messages
are the daemon's, not the test's reading schedule."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


SO_TIMESTAMPNS = 35  # Linux asm-generic/socket.h (SO_TIMESTAMPNS_OLD); Python does not name it


class DaemonProcess:
    def __init__(self, tmp: Path, *args: str, env: dict | None = None, wait_ready: bool = True):
        self.tmp = tmp
        self.notify_path = tmp / f"notify-{time.monotonic_ns()}.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.notify.bind(str(self.notify_path))
        self.messages: list[tuple[float, str]] = []
        self.terminated = False
        self.log = tmp / f"daemon-{time.monotonic_ns()}.log"
        self._log_file = open(self.log, "wb")
        env = os.environ | {"NOTIFY_SOCKET": str(self.notify_path)} | (env or {})
        self.process = subprocess.Popen([sys.executable, "-m", "edge_ids", "run", *args],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self._log_file, env=env)
        if wait_ready:
            self.wait_message("READY=1")

    def wait_message(self, text: str, timeout: float = 60) -> str:
        """The next sd_notify datagram containing `text` (all are kept in self.messages)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.notify.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                sent, message = self._receive()
            except socket.timeout:
                break
            self.messages.append((sent, message))
            if text in message:
                return message
            if self.process.poll() is not None and text != "STOPPING=1":
                break
        raise AssertionError(f"no {text!r} from the daemon; log:\n{self.log_text()}")

    def listen(self, seconds: float) -> None:
        """Receive (and time-stamp) sd_notify datagrams for this long."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.notify.settimeout(left)
            try:
                self.messages.append(self._receive())
            except socket.timeout:
                return

    def _receive(self) -> tuple[float, str]:
        """(when the daemon sent it, by the kernel's clock; the message)."""
        data, ancillary, _, _ = self.notify.recvmsg(4096, socket.CMSG_SPACE(16))
        stamps = [struct.unpack("qq", d[:16]) for level, kind, d in ancillary
                  if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS]
        assert stamps, "the kernel gave no send time stamp"
        return stamps[0][0] + stamps[0][1] / 1e9, data.decode()

    def log_text(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(errors="replace")

    @property
    def metrics_url(self) -> str:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = re.search(r"metrics on (http://\S+/metrics)", self.log_text())
            if found:
                return found.group(1)
            time.sleep(0.05)
        raise AssertionError(f"the daemon did not say where its metrics are:\n{self.log_text()}")

    def metrics(self) -> dict:
        """{(name, frozenset(labels)): value} from the page, read by Prometheus' own parser."""
        page = urllib.request.urlopen(self.metrics_url, timeout=10).read().decode()
        samples = {}
        for family in text_string_to_metric_families(page):
            for s in family.samples:
                samples[(s.name, frozenset(s.labels.items()))] = s.value
        return samples

    def metric(self, name: str, **labels) -> float:
        return self.metrics().get((name, frozenset(labels.items())), 0.0)

    def wait_metric(self, name: str, value: float, timeout: float = 60, **labels) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.metric(name, **labels) >= value:
                return
            time.sleep(0.05)
        raise AssertionError(f"{name}{labels} stayed at {self.metric(name, **labels)}, "
                             f"expected {value}; log:\n{self.log_text()}")

    def signal(self, signum=signal.SIGTERM) -> None:
        self.terminated |= signum == signal.SIGTERM
        self.process.send_signal(signum)

    def wait(self, timeout: float = 120) -> int:
        """Until it exits by itself (the input ended)."""
        try:
            return self.process.wait(timeout)
        finally:
            self.close()

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None and not self.terminated:
            self.signal(signal.SIGTERM)  # once, as systemd does
        try:
            return self.process.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream:
                stream.close()
        self._log_file.close()
        self.notify.close()
        self.notify_path.unlink(missing_ok=True)


def read_alerts(path: Path) -> list[dict]:
    """Every line of an alert file, each one required to be whole JSON."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "the alert file ends in half a line"
    return [json.loads(line) for line in data.splitlines()]


def send(path: Path, data: bytes) -> None:
    """One writer on the daemon's UNIX socket input."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        s.sendall(data)
