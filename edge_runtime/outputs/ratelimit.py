"""A log that speaks at a bounded rate (bad input must not flood the journal)."""
from __future__ import annotations

import logging
import time

log = logging.getLogger("edge_ids.daemon")


class RateLimitedLog:
    """At most `per_minute` messages a minute (bursts of up to that many); the rest counted and
    mentioned with the next message that gets through."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._tokens = float(per_minute)
        self._last = time.monotonic()
        self.suppressed = 0

    def warning(self, message: str) -> None:
        now = time.monotonic()
        self._tokens = min(self.per_minute, self._tokens + (now - self._last) * self.per_minute / 60)
        self._last = now
        if self._tokens < 1:
            self.suppressed += 1
            return
        self._tokens -= 1
        if self.suppressed:
            message += f" ({self.suppressed:,} more rejections not logged)"
            self.suppressed = 0
        log.warning(message)
