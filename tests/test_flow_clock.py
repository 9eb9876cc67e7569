"""The tracker's clock (edge_runtime/site/clock.py): one record stamped a day ahead, or a
sender's clock stepping back, changes no incident, however the records were batched."""
from __future__ import annotations

import numpy as np

from edge_ids.edge_runtime.ingest.records import RawSchema, parse_lines
from edge_ids.edge_runtime.model.detector import Verdicts
from edge_ids.edge_runtime.site.clock import JUMP_SECONDS, FlowClock
from edge_ids.edge_runtime.site.incident_settings import IncidentSettings
from edge_ids.edge_runtime.watch import DeviceWatch

T0 = 1_615_600_000.0
DAY = 86400.0
CAM, HUB = "f4:b8:5e:ff:2b:1b", "24:6f:28:d9:a7:64"
NAMES = ("SrcAddr", "Sport", "DstAddr", "Dport", "Proto", "SrcMac", "DstMac", "LastTime",
         "StartTime", "Dur")


def test_a_lone_record_far_ahead_is_a_stray_and_two_in_a_row_move_the_clock():
    clock = FlowClock()
    assert clock.admit([T0, T0 + 5]).tolist() == [T0, T0 + 5]
    # one record a day ahead between two of today: taken at the clock's time, counted
    assert clock.admit([T0 + DAY, T0 + 6]).tolist() == [T0 + 5, T0 + 6]
    assert (clock.now, clock.strays, clock.steps) == (T0 + 6, 1, 0)
    # the input moved on (a gap, a new day): the next record is ahead too
    assert clock.admit([T0 + DAY, T0 + DAY + 1]).tolist() == [T0 + DAY, T0 + DAY + 1]
    assert (clock.now, clock.steps) == (T0 + DAY + 1, 1)
    # one late record keeps its time and leaves the clock; two in a row step it back
    assert clock.admit([T0 + 7]).tolist() == [T0 + 7] and clock.now == T0 + DAY + 1
    clock.admit([T0 + 8, T0 + 9])
    assert (clock.now, clock.steps) == (T0 + 9, 2)


def test_a_batch_ending_in_a_record_whose_fate_needs_the_next_one_is_not_decided():
    clock = FlowClock()
    clock.admit([T0])
    assert clock.admit([T0 + 10, T0 + JUMP_SECONDS + 60], final=False) is None  # stray, or gap?
    assert clock.admit([T0 - JUMP_SECONDS - 60], final=False) is None  # late, or a step back?
    assert clock.now == T0 and clock.strays == clock.steps == 0  # refused: nothing changed
    assert clock.admit([T0 + 10, T0 + 20], final=False).tolist() == [T0 + 10, T0 + 20]
    assert clock.now == T0 + 20
    clock.advance(30.0)  # a live input, idle for 30 s
    assert clock.now == T0 + 50


def settings() -> IncidentSettings:
    return IncidentSettings(threshold_bits=6.0, fallback_threshold=1.0,
                            known={CAM: None, HUB: None},
                            services={CAM: frozenset({"tcp/443"}), HUB: frozenset({"tcp/443"})},
                            service_bits={CAM: 0.5, HUB: 0.5}, max_flow_bits=5.0)


def day_of_flows(stray: int | None = None, step_back: int | None = None):
    """Two devices, a flow every 20 s for a day and a half, the cam odd for an hour at three
    moments (an incident each); optionally one record stamped a day ahead (`stray`), or the
    sender's clock stepping back an hour for good (from record `step_back`)."""
    rows, scores = [], []
    for i in range(6000):
        t = T0 + 20 * i
        if step_back is not None and i >= step_back:
            t -= 3600
        if i == stray:
            t += DAY
        mac = CAM if i % 2 else HUB
        odd = mac == CAM and any(a <= i < a + 180 for a in (600, 2600, 5000))
        rows.append(f"192.168.1.{9 if mac == CAM else 7},40000,185.244.25.235,443,tcp,{mac},"
                    f"00:1c:7f:53:d0:28,{t},{t - 1},1".encode())
        scores.append(8.0 if odd else 0.1)
    return np.array(rows, dtype=object), np.array(scores)


def incidents(lines, scores, size: int) -> list[tuple]:
    """The incidents' lines through the daemon's watch, the records cut into batches of size."""
    schema = RawSchema.of(NAMES, ignored=NAMES[:9])
    watch, events = DeviceWatch(settings(), NAMES), []
    for k in range(0, len(lines), size):
        records, _ = parse_lines(list(lines[k:k + size]), schema, keep_text=watch.text_columns,
                                 keep_fields=watch.key_columns)
        owners, _ = watch.devices(records)
        verdicts = Verdicts(np.zeros(len(records), np.intp), {},
                            anomaly_scores=scores[k:k + size])
        events += watch.observe(records, verdicts, owners)
    events += watch.finish()
    return [(e["device"]["key"], e["incident"]["state"], e["incident"]["opened"],
             e["time"], e["incident"].get("reason")) for e in events
            if e["event_type"] == "incident" and e["incident"]["state"] != "update"]


def test_one_record_a_day_ahead_changes_no_incident_however_the_records_were_batched():
    lines, scores = day_of_flows()
    plain = incidents(lines, scores, 60)
    assert [s for _, s, *_ in plain] == ["open", "closed"] * 3
    for at in (601, 1000, 5001):  # inside the cam's incidents (their flagged flows), between
        lines, scores = day_of_flows(stray=at)
        got = incidents(lines, scores, 1)
        assert all(incidents(lines, scores, size) == got for size in (2, 3, 7, 60)), at
        # the same incidents, closed for the same reasons; the stray taken at the clock's time
        # (the record before it: 20 s earlier) may move an opening by as much
        assert [(k, s, r) for k, s, _, _, r in got] == [(k, s, r) for k, s, _, _, r in plain]
        assert all(abs(a[2] - b[2]) <= 60 and abs(a[3] - b[3]) <= 60
                   for a, b in zip(got, plain)), at


def test_a_clock_stepping_back_closes_nothing_falsely_however_the_records_were_batched():
    lines, scores = day_of_flows(step_back=2700)  # inside the second incident
    got = {size: incidents(lines, scores, size) for size in (1, 3, 60)}
    assert got[1] == got[3] == got[60]
    states = [s for _, s, *_ in got[1]]
    assert states == ["open", "closed"] * 3
    reasons = [r for *_, r in got[1] if r]
    assert all(r == "no flagged flow for 30 min" for r in reasons[:2])
