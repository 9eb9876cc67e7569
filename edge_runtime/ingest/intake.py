"""Lines from the reader thread to the classifying loop, grouped into micro-batches.

A batch is handed over when `max_batch` lines are waiting or when its oldest line has waited
`max_delay` seconds, whichever comes first: under load, batches are full and throughput is
high; when records trickle in, none waits longer than `max_delay`. The intake is bounded in
bytes, so a fast writer is slowed down (the reader blocks) instead of filling memory.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass
class Batch:
    lines: list[bytes]
    first_number: int  # intake sequence number (1-based) of lines[0]
    oldest_arrival: float  # time.monotonic() when lines[0] arrived


class Intake:
    def __init__(self, max_batch: int = 256, max_delay: float = 0.005,
                 capacity_bytes: int = 1 << 20, on_wait=None):
        """`on_wait(seconds)` is told how long each put() waited on a full intake: the time the
        input's writers were held back because the classifier was behind."""
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.capacity_bytes = capacity_bytes
        self.on_wait = on_wait
        self._lines: list[bytes] = []
        self._arrivals: deque[list] = deque()  # [lines still waiting, arrival time] per put()
        self._bytes = 0
        self._taken = 0  # lines handed over so far
        self._closed = False
        self._cond = threading.Condition(threading.Lock())

    @property
    def waiting(self) -> int:
        """Lines accepted and not yet handed over."""
        with self._cond:
            return len(self._lines)

    @property
    def accepted(self) -> int:
        """Lines accepted so far (handed over or waiting)."""
        with self._cond:
            return self._taken + len(self._lines)

    def put(self, lines: list[bytes]) -> None:
        """Accept lines (reader thread); waits while the intake is full."""
        if not lines:
            return
        size = sum(map(len, lines))
        waited = 0.0
        with self._cond:
            if self._bytes >= self.capacity_bytes:  # full: wait until half empty, so the
                started = time.monotonic()  # reader wakes for big reads, not every batch
                while self._bytes > self.capacity_bytes // 2 and not self._closed:
                    self._cond.wait()
                waited = time.monotonic() - started
            was = len(self._lines)
            self._lines.extend(lines)
            self._arrivals.append([len(lines), time.monotonic()])
            self._bytes += size
            if was == 0 or len(self._lines) >= self.max_batch:
                self._cond.notify_all()
        if waited and self.on_wait:
            self.on_wait(waited)

    def close(self) -> None:
        """No more lines will come; what is waiting is still handed over."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self, timeout: float) -> Batch | None:
        """The next batch; an empty batch if nothing is due within `timeout`; None once the
        intake is closed and empty."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._lines and (len(self._lines) >= self.max_batch or self._closed):
                    return self._hand_over()
                if not self._lines and self._closed:
                    return None
                now = time.monotonic()
                due = self._arrivals[0][1] + self.max_delay if self._lines else deadline
                if self._lines and now >= due:
                    return self._hand_over()
                if now >= deadline:
                    return Batch([], self._taken + 1, now)
                self._cond.wait(min(due, deadline) - now)

    def _hand_over(self) -> Batch:
        n = min(len(self._lines), self.max_batch)
        lines = self._lines[:n]
        del self._lines[:n]
        batch = Batch(lines, self._taken + 1, self._arrivals[0][1])
        left = n
        while left:
            put = self._arrivals[0]
            taken = min(put[0], left)
            put[0] -= taken
            left -= taken
            if not put[0]:
                self._arrivals.popleft()
        self._bytes -= sum(map(len, lines))
        self._taken += n
        if self._bytes <= self.capacity_bytes // 2:
            self._cond.notify_all()
        return batch
