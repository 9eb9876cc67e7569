"""sd_notify(3) by hand: a datagram to $NOTIFY_SOCKET. Fifteen lines of standard library do what
the `sdnotify` package (unmaintained since 2019) or libsystemd would, and outside systemd (no
NOTIFY_SOCKET) every call is a no-op.

    READY=1       the model is loaded and records are being read
    RELOADING=1   SIGHUP received, the bundle is being loaded again (then READY=1)
    STOPPING=1    SIGTERM received, draining
    WATCHDOG=1    every half of $WATCHDOG_USEC (if that is meant for this process)
    STATUS=...    a one-line summary shown by `systemctl status`
"""
from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self, environ=None):
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # the abstract namespace
        self.address = address or None
        self.watchdog_interval = None  # seconds between WATCHDOG=1, half of WatchdogSec
        usec, pid = environ.get("WATCHDOG_USEC"), environ.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2e6
        self._last_ping = float("-inf")

    @property
    def active(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> None:
        if not self.address:
            return
        message = "\n".join(assignments).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            try:  # never wait: a listener that does not read must not stop the daemon
                s.sendto(message, socket.MSG_DONTWAIT, self.address)
            except OSError:
                pass  # systemd went away or is not reading; nothing useful to do about it

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str) -> None:
        self.notify("STOPPING=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def watchdog_if_due(self, now: float) -> None:
        """Send WATCHDOG=1 when half of the watchdog interval has passed since the last one."""
        if self.watchdog_interval is not None and now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.notify("WATCHDOG=1")
