"""The webhook on its own, against HTTP servers on 127.0.0.1: throttling per device and kind,
the severity floor, retries with back-off, and a bounded queue that drops (and counts) rather
than make the daemon wait."""
from __future__ import annotations

import socket
import time

from webhook_receiver import WebhookReceiver
from edge_ids.edge_runtime.webhook import Webhook, WebhookOptions


def event(mac: str, t: float, kind: str = "open") -> dict:
    if kind == "new_device":
        return {"time": t, "event_type": "new_device", "device": {"mac": mac, "ip": "10.0.0.9"},
                "new_device": {"first_flow": t}}
    return {"time": t, "event_type": "incident", "device": {"mac": mac, "ip": "10.0.0.9"},
            "incident": {"id": int(t), "state": kind, "flows_flagged": 3, "flows_seen": 4,
                         "peers": [{"ip": "203.0.113.7", "flows": 3}], "why": []}}


def wait(condition, timeout=20):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_throttled_per_device_and_kind_in_flow_time_and_the_floor_holds():
    server = WebhookReceiver()
    hook = Webhook(WebhookOptions(server.url, min_severity="medium", throttle_seconds=300))
    try:
        hook.offer([event("02:00:00:00:00:01", 1000), event("02:00:00:00:00:01", 1100),
                    event("02:00:00:00:00:02", 1100), event("02:00:00:00:00:01", 1400),
                    event("02:00:00:00:00:01", 1500, "closed"),
                    event("02:00:00:00:00:03", 1500, "new_device"),
                    event("02:00:00:00:00:01", 1500, "update")])
        assert wait(lambda: len(server.bodies) == 4)
    finally:
        hook.close()
        server.close()
    kinds = [(b["event"], b["device"]["mac"]) for b in server.bodies]
    assert sorted(kinds) == sorted([("incident_opened", "02:00:00:00:00:01"),
                                    ("incident_opened", "02:00:00:00:00:02"),
                                    ("incident_opened", "02:00:00:00:00:01"),
                                    ("new_device", "02:00:00:00:00:03")])
    assert hook.counts["throttled"] == 1 and hook.counts["below_floor"] == 1  # the close
    assert hook.counts["sent"] == 4


def test_a_failing_target_is_retried_with_back_off():
    server = WebhookReceiver(failures=2)
    hook = Webhook(WebhookOptions(server.url, backoff_seconds=0.2, retries=3))
    try:
        hook.offer([event("02:00:00:00:00:01", 1000)])
        assert wait(lambda: hook.counts["sent"] == 1)
    finally:
        hook.close()
        server.close()
    assert server.requests == 3 and len(server.bodies) == 1
    assert server.bodies[0]["severity"] == "high" and "203.0.113.7" in server.bodies[0]["message"]


def test_a_target_that_never_answers_fills_the_queue_and_drops_are_counted():
    silent = socket.socket()  # accepts connections in its backlog, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    hook = Webhook(WebhookOptions(f"http://127.0.0.1:{silent.getsockname()[1]}/", queue_size=2,
                                  timeout_seconds=5, retries=1))
    try:
        started = time.monotonic()
        hook.offer([event(f"02:00:00:00:01:{i:02x}", 1000 + i) for i in range(20)])
        offered = time.monotonic() - started
        # the offer returned before even one attempt could time out: nobody waited for the target
        assert offered < hook.options.timeout_seconds
        assert hook.counts["dropped"] >= 20 - 2 - 1  # the queue, and the one being sent
    finally:
        hook.close()
        silent.close()
    assert hook.counts["sent"] == 0
    assert hook.counts["dropped"] + hook.counts["failed"] + hook.queue.qsize() >= 19
