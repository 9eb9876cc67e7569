"""The page's server against idle, slow, crowding and rebinding clients, on real sockets on
127.0.0.1 (other sources are 127.0.0.2-254, which Linux lets a client bind on lo), run in a
thread of this process so that what it holds can be looked at: its deadline, caps, who is
pushed out, Host check and head cap; and the device rows taken off the detection lock."""
from __future__ import annotations

import time

import pytest
from page_clients import TOKEN, Served, ask, authorised, closed, connect, crowd_of, refused, \
    status
from edge_ids.benchmarks.detection.page_load import TimedLock, crowded_tracker
from edge_ids.edge_runtime.outputs.operator_page import OperatorView, snapshot
from edge_ids.edge_runtime.outputs.page_render import MAX_DEVICES_SHOWN
from edge_ids.edge_runtime.outputs.page_server import HEAD_BYTES, HEAD_SECONDS, PER_SOURCE, TOTAL, \
    YOUNG_SECONDS


@pytest.fixture
def page():
    served = Served()
    yield served, served.port
    served.close()


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
    expected = snapshot(tracker)  # what the page showed, built under the lock
    expected.sort(key=lambda d: (d["incident"] is None, not d["new"], -d["last_seen"]))
    assert state["devices"] == expected[:MAX_DEVICES_SHOWN]
    assert sum(1 for d in expected if d["incident"] is not None) == 50
    assert state["device_count"] == 16384 and state["new_count"] == 16384
    assert any(d["timeline"] for d in state["devices"])


# -- TLS, the command line, a real daemon -----------------------------------------------------
