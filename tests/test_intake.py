"""Micro-batching: a batch goes when it is full or when its oldest line has waited max_delay;
nothing is lost or reordered; a full intake holds the writer back."""
from __future__ import annotations

import threading
import time

from edge_ids.edge_runtime.ingest.intake import Intake


def test_full_batches_under_load_and_order_kept():
    intake = Intake(max_batch=100, max_delay=10.0)
    lines = [b"%d" % i for i in range(1050)]
    for start in range(0, 1050, 70):
        intake.put(lines[start:start + 70])
    intake.close()
    batches = []
    while (batch := intake.take(1.0)) is not None:
        batches.append(batch)
    assert [len(b.lines) for b in batches] == [100] * 10 + [50]  # the last: closed, not full
    assert [line for b in batches for line in b.lines] == lines
    assert [b.first_number for b in batches] == list(range(1, 1051, 100))


def test_a_lone_line_waits_at_most_max_delay():
    intake = Intake(max_batch=1000, max_delay=0.05)
    intake.put([b"one"])
    begin = time.monotonic()
    batch = intake.take(5.0)
    waited = time.monotonic() - begin
    assert batch.lines == [b"one"]
    assert 0.03 < waited < 2.0  # held for the delay (not for the 5 s timeout, not full)
    assert intake.take(0.05).lines == []  # nothing due: an empty batch at the timeout


def test_a_full_intake_holds_the_writer_back():
    intake = Intake(max_batch=10, max_delay=0.0, capacity_bytes=100)
    intake.put([b"x" * 100])
    done = threading.Event()
    thread = threading.Thread(target=lambda: (intake.put([b"y"]), done.set()))
    thread.start()
    assert not done.wait(0.2)  # blocked while full
    assert intake.take(1.0).lines == [b"x" * 100]
    assert done.wait(5)
    assert intake.take(1.0).lines == [b"y"]
