"""The tracker's clock: flow time, kept from one bad time stamp.

Incidents close, update and forget by a clock, and the clock is the flows' own time (so a
replay's events never depend on the machine's speed). Taken as the largest time ever seen, one
record stamped a day ahead (a Pi without a real-time clock stepping back, a `follow:` file with
days concatenated) would close every episode at once with a false reason, and the days after it
would wait a day to close anything. So, as Zeek notices a step in packet time:

- a record more than JUMP_SECONDS ahead of the clock moves it only if the record after it is
  ahead too (the input really moved on: a capture's gap, a new day); a lone one is a stray,
  taken at the clock's time and counted;
- a record more than JUMP_SECONDS behind it, followed by another, steps the clock back to them
  (the sender's clock stepped back); a lone late record is only late (Argus reports some flows
  late) and keeps its own time without moving the clock.

So a record's fate needs the next one: the watch keeps a batch that ends in such a record until
the next batch comes (watch.py); at the end of input, or fed directly, a last record is taken as
it is. The rule goes record by record, so that where the batches were cut changes nothing; a batch
without any such record (nearly all) is handled with numpy at once. A live input's clock also
moves by the wall time that passed while no record came (`advance`), so that an incident
closes on time on a quiet night; a replay's clock moves only with its records.
"""
from __future__ import annotations

import math

import numpy as np

JUMP_SECONDS = 600.0  # argus reports a flow at most a few status intervals late; a step is more


class FlowClock:
    def __init__(self, jump: float = JUMP_SECONDS):
        self.jump = jump
        self.now = -math.inf
        self.strays = 0  # records taken at the clock's time instead of their own
        self.steps = 0  # times the clock jumped ahead or stepped back

    def admit(self, times, final: bool = True) -> np.ndarray | None:
        """The batch's times as the tracker takes them (a stray's replaced by the clock's),
        the clock moved past them; None, and nothing changed, if the last record's fate needs
        the next one and the input may still bring it (`final` False)."""
        planned = self._plan(np.asarray(times, dtype=np.float64), final)
        if planned is None:
            return None
        out, self.now, strays, steps = planned
        self.strays += strays
        self.steps += steps
        return out

    def _plan(self, times: np.ndarray, final: bool):
        """(times taken, the clock after, strays, steps), or None (see `admit`)."""
        if not len(times):
            return times, self.now, 0, 0
        before = np.maximum.accumulate(np.concatenate(([self.now], times[:-1])))
        if math.isfinite(self.now) and not np.any(np.abs(times - before) > self.jump):
            return times, max(self.now, float(times.max())), 0, 0  # (nearly every batch)
        now, strays, steps = self.now, 0, 0
        out = times.copy()
        values = times.tolist()
        for i, t in enumerate(values):
            after = values[i + 1] if i + 1 < len(values) else None
            if not math.isfinite(now):
                now = t
            elif t > now + self.jump:
                if after is None and not final:
                    return None
                if after is None or after > now + self.jump:
                    now, steps = t, steps + 1  # the input moved on
                else:
                    out[i], strays = now, strays + 1
            elif t < now - self.jump:
                if after is None and not final:
                    return None
                if after is not None and after < now - self.jump:
                    now, steps = t, steps + 1  # the sender's clock stepped back
            else:
                now = max(now, t)
        return out, now, strays, steps

    def advance(self, seconds: float) -> None:
        """A live input was idle for this long (wall time): its flow time moved on as much."""
        if seconds > 0 and math.isfinite(self.now):
            self.now += seconds
