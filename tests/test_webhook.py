"""The webhook against HTTP(S) servers on 127.0.0.1: throttling per device and kind, the
severity floor, retries with back-off, a bounded queue that drops (and counts) rather than make
the daemon wait; and its token (issue 39): never sent where a redirect points, only over https
unless asked, from a file only its owner may read, read again on SIGHUP by a real daemon."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from daemon_process import DaemonProcess, send
from webhook_receiver import WebhookReceiver, self_signed
from edge_ids.edge_runtime.outputs.webhook import Webhook, WebhookOptions

TOKEN = "tok-3f9c2a7d51e84b06-secret"


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


def test_lines_other_than_incidents_and_new_devices_are_never_pushed():
    """A device's normal changing (device_normal) or the operator's word (decision) is not an
    incident: such a line once stopped the daemon (KeyError in the webhook)."""
    server = WebhookReceiver()
    hook = Webhook(WebhookOptions(server.url))
    try:
        device = {"mac": "02:00:00:00:00:04", "ip": "10.0.0.9"}
        hook.offer([{"time": 1000, "event_type": "device_normal", "device": device,
                     "device_normal": {"stage": "learned"}},
                    {"time": 1000, "event_type": "decision", "device": device,
                     "decision": {"action": "mute"}},
                    event("02:00:00:00:00:04", 1001)])
        assert wait(lambda: len(server.bodies) == 1)
    finally:
        hook.close()
        server.close()
    assert [b["event"] for b in server.bodies] == ["incident_opened"]


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


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failed_push_and_the_token_goes_nowhere(code, tls, monkeypatch, caplog):
    """The issue's reproduction: an https target answers a redirect to another receiver (on
    http, so the token would also cross in cleartext). urllib's own handler followed 301-303
    with a GET carrying Authorization, and the push counted as sent."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls[0]))  # the client trusts the test's certificate
    elsewhere = WebhookReceiver()
    target = WebhookReceiver(answers=(code,) * 5, location=elsewhere.url + "collect", tls=tls)
    hook = Webhook(WebhookOptions(target.url, token=TOKEN, retries=2, backoff_seconds=0.05))
    try:
        with caplog.at_level(logging.WARNING, logger="edge_ids.webhook"):
            hook.offer([event("02:00:00:00:00:01", 1000)])
            assert wait(lambda: hook.counts["failed"] + hook.counts["sent"] == 1)
    finally:
        hook.close()
        target.close()
        elsewhere.close()
    assert target.seen == [{"method": "POST", "path": "/", "authorization": f"Bearer {TOKEN}"}]
    assert elsewhere.seen == []  # no request at all: no token, no GET
    assert hook.counts["failed"] == 1 and hook.counts["sent"] == 0
    assert f"answered {code}, a redirect to '{elsewhere.url}collect', which is never " \
           f"followed" in caplog.text


def test_the_push_metric_tells_sent_failed_and_dropped_apart(tmp_path):
    """Through the daemon's own wiring (OperatorOutputs into its Prometheus counters): a 2xx is
    sent, a redirect and a 500 are failed, what the full queue cannot take is dropped."""
    from edge_ids.edge_runtime.outputs.metrics import Metrics
    from edge_ids.edge_runtime.outputs.operator import OperatorOutputs

    elsewhere, hold = WebhookReceiver(), threading.Event()
    target = WebhookReceiver(answers=(204, 302, 500), location=elsewhere.url, hold=hold)
    metrics = Metrics()
    outputs = OperatorOutputs(metrics, {}, "test", webhook=WebhookOptions(
        target.url, queue_size=2, retries=0))
    hook = outputs.webhook
    try:
        outputs.publish([event("02:00:00:00:02:00", 1000)])
        assert target.arrived.wait(10)  # the sender holds the first push: the queue is empty
        outputs.publish([event(f"02:00:00:00:02:{i:02x}", 1000 + i) for i in range(1, 8)])
        hold.set()
        assert wait(lambda: hook.counts["sent"] + hook.counts["failed"] == 3)
    finally:
        outputs.close()
        target.close()
        elsewhere.close()

    def sample(result):
        return metrics.registry.get_sample_value("edge_ids_webhook_events_total",
                                                 {"result": result})
    assert (hook.counts["sent"], hook.counts["failed"], hook.counts["dropped"]) == (1, 2, 5)
    assert {r: sample(r) for r in ("sent", "failed", "dropped")} == \
        {"sent": 1, "failed": 2, "dropped": 5}
    assert target.requests == 3 and elsewhere.requests == 0


def edge_ids(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real command line, as a user or systemd runs it."""
    return subprocess.run([sys.executable, "-m", "edge_ids", *map(str, args)],
                          capture_output=True, text=True, timeout=120,
                          env=os.environ | (env or {}))


def token_file(path: Path, token: str = TOKEN, mode: int = 0o600) -> Path:
    path.write_text(token + "\n")
    path.chmod(mode)
    return path


def test_a_token_goes_only_over_https_and_never_inside_the_url(learned_site, tmp_path):
    run = ("run", "--bundle", learned_site["bundle"], "--input", "file:/dev/null",
           "--alerts", tmp_path / "alerts.json")
    secret = token_file(tmp_path / "token")
    done = edge_ids(*run, "--webhook", "http://127.0.0.1:9/hook", "--webhook-token-file", secret)
    assert done.returncode == 2, done.stderr
    assert "a token is sent only over https" in done.stderr and "--webhook-insecure" in \
        done.stderr
    done = edge_ids(*run, "--webhook", "http://127.0.0.1:9/hook", "--webhook-token-file", secret,
                    "--webhook-insecure")
    assert done.returncode == 0, done.stderr  # the explicit opt-out starts
    done = edge_ids(*run, "--webhook", "https://127.0.0.1:9/hook", "--webhook-token-file",
                    secret)
    assert done.returncode == 0, done.stderr
    for url in ("https://ops:hunter2-secret@127.0.0.1:9/hook",
                "https://127.0.0.1:9/message?token=hunter2-secret"):
        done = edge_ids(*run, "--webhook", url)
        assert done.returncode == 2, done.stderr
        assert "--webhook-token-file FILE" in done.stderr, done.stderr
        assert "hunter2" not in done.stderr  # the refusal does not echo the secret


def test_a_token_file_others_may_read_is_refused(learned_site, tmp_path):
    run = ("run", "--bundle", learned_site["bundle"], "--input", "file:/dev/null",
           "--alerts", tmp_path / "alerts.json", "--webhook", "https://127.0.0.1:9/hook")
    for mode in (0o644, 0o640, 0o604):
        secret = token_file(tmp_path / f"token-{mode:o}", mode=mode)
        done = edge_ids(*run, "--webhook-token-file", secret)
        assert done.returncode == 5, done.stderr
        assert f"group or others may open it (mode {mode:04o})" in done.stderr
        assert f"chmod 600 {secret}" in done.stderr
    empty = token_file(tmp_path / "empty", "")
    done = edge_ids(*run, "--webhook-token-file", empty)
    assert done.returncode == 5 and "the file is empty" in done.stderr, done.stderr
    private = token_file(tmp_path / "private")
    assert edge_ids(*run, "--webhook-token-file", private).returncode == 0
    # capture shares the daemon's options: refused before argus is started
    done = edge_ids("capture", "--bundle", learned_site["bundle"], "--pcap", private,
                    "--webhook", "https://127.0.0.1:9/hook", "--webhook-token-file",
                    token_file(tmp_path / "capture-token", mode=0o644))
    assert done.returncode == 5 and "chmod 600" in done.stderr, done.stderr
    done = edge_ids("capture", "--bundle", learned_site["bundle"], "--pcap", private,
                    "--webhook", "http://127.0.0.1:9/hook", "--webhook-token-file", private)
    assert done.returncode == 2 and "only over https" in done.stderr, done.stderr
    # the page's token file gets the same check
    page = ("run", "--bundle", learned_site["bundle"], "--input", "file:/dev/null",
            "--ui", "127.0.0.1:0", "--ui-token-file")
    done = edge_ids(*page, token_file(tmp_path / "ui", mode=0o644))
    assert done.returncode == 5 and "--ui-token-file" in done.stderr and "chmod 600" in \
        done.stderr, done.stderr
    assert edge_ids(*page, token_file(tmp_path / "ui-private")).returncode == 0


def new_device_line(names: tuple[str, ...], number: int, t: float) -> bytes:
    """One flow from a device the learning period never saw (a new_device push each)."""
    values = dict.fromkeys(names, "0") | {
        "Dir": "->", "Flgs": "e", "Proto": "udp", "SrcAddr": f"192.168.1.{200 + number}",
        "SrcMac": f"02:00:00:00:07:{number:02x}", "DstAddr": "8.8.8.8", "Sport": "40000",
        "Dport": "53", "SrcBytes": "80", "DstBytes": "120", "TotPkts": "2", "TotBytes": "200",
        "Dur": "1", "StartTime": f"{t:.6f}", "LastTime": f"{t + 1:.6f}"}
    return (",".join(values[n] for n in names) + "\n").encode()


def test_sighup_reads_the_token_again(learned_site, tls, tmp_path):
    """A real daemon pushes with the token in its file; the operator replaces it and reloads
    (systemctl reload: SIGHUP); the next push carries the new one. A file made readable by
    others on the way is refused at the reload and the token read before stays in use."""
    from edge_ids.edge_runtime import load_bundle
    from edge_ids.edge_runtime.ingest.records import RawSchema

    names = RawSchema.from_spec(load_bundle(learned_site["bundle"]).raw).names
    receiver = WebhookReceiver(path="/hook", tls=tls)
    secret = token_file(tmp_path / "token", "first-token-0123456789")
    sock = tmp_path / "flows.sock"
    daemon = DaemonProcess(tmp_path, "--bundle", str(learned_site["bundle"]), "--input",
                           f"unix:{sock}", "--alerts", str(tmp_path / "alerts.json"),
                           "--metrics", "127.0.0.1:0", "--webhook", receiver.url,
                           "--webhook-token-file", str(secret),
                           env={"SSL_CERT_FILE": str(tls[0])})
    t = 1_615_600_000.0
    try:
        def push(number: int) -> str:
            send(sock, new_device_line(names, number, t + 60 * number))
            daemon.wait_metric("edge_ids_webhook_events_total", number, result="sent")
            return receiver.seen[number - 1]["authorization"]

        def reload(reloads: int) -> None:
            daemon.signal(signal.SIGHUP)
            daemon.wait_metric("edge_ids_reloads_total", reloads, result="ok")

        assert push(1) == "Bearer first-token-0123456789"
        token_file(secret, "second-token-9876543210")
        reload(1)
        assert push(2) == "Bearer second-token-9876543210"
        token_file(secret, "third-token-readable-by-all", mode=0o644)
        reload(2)
        assert push(3) == "Bearer second-token-9876543210"  # refused: the last good one stays
    finally:
        assert daemon.stop() == 0
        receiver.close()
    log = daemon.log_text()
    assert "token read again from" in log and "(changed)" in log
    assert "still sending the token read before" in log and "chmod 600" in log
    assert "third-token" not in log and "second-token" not in log  # never logged
    assert [s["method"] for s in receiver.seen] == ["POST"] * 3
