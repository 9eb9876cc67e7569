"""`edge-ids run` as a real process: alerts, metrics through Prometheus' parser, sd_notify on a
real datagram socket, SIGHUP reload (good and corrupt bundles), SIGTERM drain, logrotate, and a
SIGKILL that must not leave half a line."""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import struct
import termios
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from daemon_process import DaemonProcess, read_alerts, send
from edge_ids.edge_runtime import Classifier, load_bundle
from edge_ids.edge_runtime.outputs.alerts import AlertWriter
from edge_ids.edge_runtime.ingest.records import parse_lines
from edge_ids.edge_runtime.systemd import Notifier

EVE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+0000$")


@pytest.fixture(scope="module")
def bundle(small_pipeline) -> Path:
    return small_pipeline[0] / "bundle"


def expected_classes(bundle: Path, lines: list[bytes]) -> list[str]:
    classifier = Classifier(load_bundle(bundle))
    records, rejected = parse_lines(lines, classifier.schema)
    assert not rejected
    return [classifier.bundle.class_names[c] for c in classifier.classify(records).classes]


def test_file_input_every_record_as_the_runtime_classifies_it(bundle, kdd_test_lines, tmp_path):
    lines = kdd_test_lines[:3000]
    records = tmp_path / "records.csv"
    records.write_bytes(b"".join(lines))
    for emit in ("all", "attacks"):
        alerts = tmp_path / f"alerts-{emit}.json"
        daemon = DaemonProcess(tmp_path, "--bundle", str(bundle), "--input", f"file:{records}",
                               "--alerts", str(alerts), "--emit", emit)
        assert daemon.wait() == 0  # the input ended: exit 0
        events = read_alerts(alerts)
        classes = expected_classes(bundle, lines)
        attacks = [i + 1 for i, c in enumerate(classes) if c != "Normal"]
        if emit == "all":
            assert [e["flow_id"] for e in events] == list(range(1, 3001))
            assert [e["ml"]["class"] for e in events] == classes
        else:
            assert [e["flow_id"] for e in events] == attacks
        manifest = load_bundle(bundle).manifest
        for e in events:
            assert EVE_TIME.match(e["timestamp"])
            assert e["proto"] in ("tcp", "udp", "icmp")
            assert e["ml"]["model_sha256"] == manifest["files"]["model.tflite"]["sha256"]
            assert e["ml"]["dataset"] == "nsl-kdd" and 0 < e["ml"]["score"] <= 1
            if e["ml"]["class"] == "Normal":
                assert e["event_type"] == "ml" and "alert" not in e
            else:
                assert e["event_type"] == "alert" and e["alert"]["category"] == e["ml"]["class"]


def test_metrics_page_counts_what_happened(bundle, kdd_test_lines, tmp_path):
    sock, alerts = tmp_path / "in.sock", tmp_path / "alerts.json"
    daemon = DaemonProcess(tmp_path, "--bundle", str(bundle), "--input", f"unix:{sock}",
                           "--alerts", str(alerts), "--metrics", "127.0.0.1:0")
    try:
        assert daemon.metrics_url.startswith("http://127.0.0.1:")
        good = kdd_test_lines[:1000]
        bad = [b"1,2,3\n", b"\n", b"\xff\xfe,oops\n"]
        send(sock, b"".join(good[:500] + bad + good[500:]))
        daemon.wait_metric("edge_ids_records_total", 1000)
        m = daemon.metrics()
        classes = expected_classes(bundle, good)
        for name in set(classes) - {"Normal"}:
            assert m[("edge_ids_alerts_total", frozenset({("class", name)}))] == classes.count(name)
        assert len(read_alerts(alerts)) == sum(c != "Normal" for c in classes)
        rejected = {dict(k[1])["reason"]: v for k, v in m.items()
                    if k[0] == "edge_ids_records_rejected_total"}
        assert rejected["wrong_field_count"] == 1 and rejected["empty_line"] == 1
        assert rejected["invalid_utf8"] == 1 and sum(rejected.values()) == 3
        assert m[("edge_ids_batch_size_sum", frozenset())] == 1003
        assert m[("edge_ids_inference_seconds_count", frozenset())] >= 1
        batches = m[("edge_ids_batch_size_count", frozenset())]
        latency = {k: v for k, v in m.items() if k[0].startswith("edge_ids_record_latency")}
        count = latency[("edge_ids_record_latency_seconds_count", frozenset())]
        assert count == batches >= 1  # one wait per batch: its oldest record's
        assert latency[("edge_ids_record_latency_seconds_bucket", frozenset({("le", "+Inf")}))] \
            == count
        assert 0 < latency[("edge_ids_record_latency_seconds_sum", frozenset())] < 60 * count
        assert daemon.log_text().count(" rejected (") == 3  # under --log-rejects' 60 a minute
        info = [dict(k[1]) for k in m if k[0] == "edge_ids_build_info"]
        sha = load_bundle(bundle).model_sha256
        assert len(info) == 1 and info[0]["model_sha256"] == sha
        assert info[0]["dataset"] == "nsl-kdd" and info[0]["version"]
        assert m[("process_resident_memory_bytes", frozenset())] > 10e6
    finally:
        assert daemon.stop() == 0
    assert not sock.exists()


def test_sd_notify_ready_watchdog_status_stopping(bundle, tmp_path):
    sock = tmp_path / "in.sock"
    daemon = DaemonProcess(tmp_path, "--bundle", str(bundle), "--input", f"unix:{sock}",
                           "--alerts", str(tmp_path / "a.json"), env={"WATCHDOG_USEC": "200000"})
    try:
        ready = daemon.messages[-1][1]
        assert "READY=1" in ready and "STATUS=0 records" in ready and "nsl-kdd" in ready
        daemon.listen(1.2)
        daemon.signal(signal.SIGHUP)  # a reload says so, then READY again
        reloading = daemon.wait_message("RELOADING=1")
        ready_again = daemon.wait_message("READY=1")
    finally:
        daemon.signal(signal.SIGTERM)
        stopping = daemon.wait_message("STOPPING=1")
        assert daemon.stop() == 0
    assert "STATUS=" in stopping and "READY=1" not in reloading and "STATUS=" in ready_again
    pings = [t for t, m in daemon.messages if m == "WATCHDOG=1"]
    assert len(pings) >= 4  # every 0.1 s (half of 0.2 s) for 1.2 s
    # spacing as sent (kernel send stamps, not when the test read them): never faster than
    # half the interval (with slack)
    assert min(np.diff(pings)) > 0.05


def test_notifier_is_a_no_op_outside_systemd_and_respects_watchdog_pid():
    assert not Notifier({}).active
    Notifier({}).ready("x")  # nothing to send to, nothing raised
    assert Notifier({"WATCHDOG_USEC": "1000000"}).watchdog_interval == 0.5
    assert Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({"NOTIFY_SOCKET": "@abstract"}).address == "\0abstract"


def test_notifier_never_blocks_on_a_listener_that_does_not_read(tmp_path):
    """Found by the long fuzz: its test never read the datagrams, the queue filled, and the
    daemon's main loop hung in sendto(). A notification may be lost; the daemon must not be."""
    import socket

    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        started = time.monotonic()
        for i in range(1000):  # far more than a datagram queue holds
            notifier.status(f"{i} records")
        assert time.monotonic() - started < 5
        assert listener.recv(100) == b"STATUS=0 records"  # the first ones did arrive


def corrupt_copy(bundle: Path, where: Path) -> Path:
    shutil.copytree(bundle, where)
    model = bytearray((where / "model.tflite").read_bytes())
    model[len(model) // 2] ^= 0xFF
    (where / "model.tflite").write_bytes(bytes(model))
    return where


def point(link: Path, target: Path) -> None:
    """Switch a `current` link atomically, as deploy does."""
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    os.replace(tmp, link)


def test_sighup_reload_refuses_a_corrupt_bundle_and_switches_to_a_good_one(
        bundle, other_bundle, kdd_test_lines, tmp_path):
    current, sock, alerts = tmp_path / "current", tmp_path / "in.sock", tmp_path / "alerts.json"
    point(current, bundle)
    old_sha, new_sha = load_bundle(bundle).model_sha256, load_bundle(other_bundle).model_sha256
    daemon = DaemonProcess(tmp_path, "--bundle", str(current), "--input", f"unix:{sock}",
                           "--alerts", str(alerts), "--emit", "all", "--metrics", "127.0.0.1:0")
    lines = kdd_test_lines[:400]
    try:
        send(sock, b"".join(lines))
        point(current, corrupt_copy(bundle, tmp_path / "corrupt"))
        daemon.signal(signal.SIGHUP)
        daemon.wait_metric("edge_ids_reloads_total", 1, result="failed")
        assert "reload failed, still serving" in daemon.log_text()
        assert "SHA-256" in daemon.log_text()
        send(sock, b"".join(lines))
        daemon.wait_metric("edge_ids_records_total", 800)
        assert daemon.metric("edge_ids_build_info", version=_version(daemon),
                             model_sha256=old_sha, dataset="nsl-kdd") == 1

        # a good new bundle while a writer keeps sending: the switch loses nothing
        point(current, other_bundle)
        stop = threading.Event()
        sent = []

        def writer():
            while not stop.is_set():
                send(sock, b"".join(lines[:50]))
                sent.append(50)
                time.sleep(0.01)

        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(0.3)
        daemon.signal(signal.SIGHUP)
        daemon.wait_metric("edge_ids_reloads_total", 1, result="ok")
        time.sleep(0.3)
        stop.set()
        thread.join()
        total = 800 + sum(sent)
        daemon.wait_metric("edge_ids_records_total", total)
    finally:
        assert daemon.stop() == 0
    events = read_alerts(alerts)
    assert [e["flow_id"] for e in events] == list(range(1, total + 1))  # none lost, none twice
    shas = [e["ml"]["model_sha256"] for e in events]
    assert set(shas[:800]) == {old_sha}  # the corrupt bundle never served
    switch = shas.index(new_sha)
    assert 800 < switch < total and set(shas[switch:]) == {new_sha}
    assert "reloaded:" in daemon.log_text()


def _version(daemon: DaemonProcess) -> str:
    return next(dict(k[1])["version"] for k in daemon.metrics() if k[0] == "edge_ids_build_info")


def repeated(lines: list[bytes], times: int, where: Path) -> Path:
    """A records file of `lines` over and over: input that outlasts the test."""
    path = where / "records.csv"
    with open(path, "wb") as f:
        for _ in range(times):
            f.writelines(lines)
    return path


def test_sigterm_classifies_every_line_it_took_from_its_input(bundle, kdd_test_lines, tmp_path):
    """Counted independently of the daemon's own words: the test writes K whole lines to the
    daemon's stdin, waits until the kernel's pipe is empty (the daemon has taken every byte),
    and sends SIGTERM while a backlog is still unclassified (one record a batch keeps it
    slow). Every one of the K lines must come out, in order, and the exit status is 0."""
    lines = (kdd_test_lines * 2)[:12_000]
    alerts = tmp_path / "alerts.json"
    daemon = DaemonProcess(tmp_path, "--bundle", str(bundle), "--input", "-", "--alerts",
                           str(alerts), "--emit", "all", "--max-batch", "1")
    pipe = daemon.process.stdin
    writer = threading.Thread(target=lambda: (pipe.write(b"".join(lines)), pipe.flush()))
    writer.start()
    writer.join(120)
    assert not writer.is_alive(), "the daemon stopped reading its input"
    deadline = time.monotonic() + 60
    while unread(pipe) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert unread(pipe) == 0, "the daemon did not take the whole input"
    daemon.signal(signal.SIGTERM)
    written_at_sigterm = len(alerts.read_bytes().splitlines())
    assert daemon.stop() == 0
    assert written_at_sigterm < len(lines) - 500  # a real backlog was there to drain
    assert [e["flow_id"] for e in read_alerts(alerts)] == list(range(1, len(lines) + 1))
    assert "stopping: classifying the" in daemon.log_text()


def unread(pipe) -> int:
    """Bytes written to a pipe that its reader has not taken yet (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(pipe.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def test_rejected_lines_are_all_counted_and_logged_at_most_log_rejects_times(bundle, tmp_path):
    sock = tmp_path / "in.sock"
    daemon = DaemonProcess(tmp_path, "--bundle", str(bundle), "--input", f"unix:{sock}",
                           "--alerts", str(tmp_path / "a.json"), "--metrics", "127.0.0.1:0",
                           "--log-rejects", "2")
    try:
        send(sock, b"1,2,3\n" * 10)
        daemon.wait_metric("edge_ids_records_rejected_total", 10, reason="wrong_field_count")
    finally:
        assert daemon.stop() == 0  # stopped by SIGTERM: 0 whatever was rejected
    assert daemon.log_text().count("rejected (wrong_field_count)") == 2


def test_a_bare_metrics_port_listens_on_loopback_only(bundle, tmp_path):
    """127.0.0.2 is loopback too, but a socket bound to 127.0.0.1 does not answer there; one
    bound to 0.0.0.0 does (the control)."""
    reached = {}
    for address in ("0", "0.0.0.0:0"):
        daemon = DaemonProcess(tmp_path, "--bundle", str(bundle), "--input",
                               f"unix:{tmp_path / 'in.sock'}", "--alerts",
                               str(tmp_path / "a.json"), "--metrics", address)
        try:
            port = int(daemon.metrics_url.rsplit(":", 1)[1].split("/")[0])
            reached[address] = [connects(host, port) for host in ("127.0.0.1", "127.0.0.2")]
        finally:
            assert daemon.stop() == 0
    assert reached == {"0": [True, False], "0.0.0.0:0": [True, True]}


def connects(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
        return True
    except OSError:
        return False


def test_alert_file_reopened_on_sighup_for_logrotate(bundle, kdd_test_lines, tmp_path):
    sock, alerts = tmp_path / "in.sock", tmp_path / "alerts.json"
    daemon = DaemonProcess(tmp_path, "--bundle", str(bundle), "--input", f"unix:{sock}",
                           "--alerts", str(alerts), "--emit", "all", "--metrics", "127.0.0.1:0")
    try:
        send(sock, b"".join(kdd_test_lines[:100]))
        daemon.wait_metric("edge_ids_records_total", 100)
        os.rename(alerts, tmp_path / "alerts.json.1")
        daemon.signal(signal.SIGHUP)
        daemon.wait_metric("edge_ids_reloads_total", 1, result="ok")
        send(sock, b"".join(kdd_test_lines[100:150]))
        daemon.wait_metric("edge_ids_records_total", 150)
    finally:
        assert daemon.stop() == 0
    assert [e["flow_id"] for e in read_alerts(tmp_path / "alerts.json.1")] == list(range(1, 101))
    assert [e["flow_id"] for e in read_alerts(alerts)] == list(range(101, 151))


def test_sigkill_never_leaves_half_a_line(bundle, kdd_test_lines, tmp_path):
    records = repeated(kdd_test_lines, 20, tmp_path)
    alerts = tmp_path / "alerts.json"
    daemon = DaemonProcess(tmp_path, "--bundle", str(bundle), "--input", f"file:{records}",
                           "--alerts", str(alerts), "--emit", "all")
    time.sleep(0.7)
    daemon.signal(signal.SIGKILL)
    daemon.process.wait(30)
    daemon.close()
    AlertWriter(str(alerts)).close()  # what the next start does first: a kill can tear a write
    events = read_alerts(alerts)  # every line whole JSON, the file ends with a newline
    assert events and [e["flow_id"] for e in events] == list(range(1, len(events) + 1))


def test_opening_an_alert_file_cuts_a_torn_last_line_back(tmp_path):
    alerts = tmp_path / "alerts.json"
    whole = b"".join(b'{"flow_id":%d}\n' % i for i in range(1, 5001))
    alerts.write_bytes(whole + b'{"flow_id":50')
    AlertWriter(str(alerts)).close()
    assert alerts.read_bytes() == whole  # 5,000 whole lines kept, more than one read block
    alerts.write_bytes(b'{"flow_id":1')
    AlertWriter(str(alerts)).close()
    assert alerts.read_bytes() == b""
    alerts.write_bytes(whole)
    writer = AlertWriter(str(alerts))
    writer.write('{"flow_id":5001}\n')
    writer.close()
    assert alerts.read_bytes() == whole + b'{"flow_id":5001}\n'  # a whole file is left alone


def test_a_broken_bundle_stops_the_start_with_a_clear_message(bundle, tmp_path):
    broken = corrupt_copy(bundle, tmp_path / "broken")
    daemon = DaemonProcess(tmp_path, "--bundle", str(broken), "--input", "-", "--alerts", "-",
                           wait_ready=False)
    assert daemon.wait() == 5  # the exit-status table: a file given is unusable
    assert "cannot start" in daemon.log_text() and "SHA-256" in daemon.log_text()
    assert not any("READY=1" in m for _, m in daemon.messages)
