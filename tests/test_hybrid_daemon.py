"""The daemon with hybrid and anomaly-only bundles: Unknown alerts that name the score and the
threshold, alerts counted by verdict, the anomaly-score histogram, and SIGHUP between a
classifier, a hybrid and a hybrid whose threshold is missing."""
from __future__ import annotations

import json
import shutil
import signal

import numpy as np

from daemon_process import DaemonProcess, read_alerts, send
from edge_ids.edge_runtime import Detector, load_bundle
from edge_ids.edge_runtime.ingest.records import parse_lines
from test_daemon import point


def _verdicts(bundle_path, lines):
    detector = Detector(load_bundle(bundle_path))
    records = parse_lines(lines, detector.schema)[0]
    v = detector.detect(records)
    return np.asarray(detector.verdict_names)[v.verdicts].tolist(), v.anomaly_scores


def test_hybrid_alerts_name_the_verdict_the_score_and_the_threshold(learned_nsl_kdd,
                                                                   kdd_test_lines, tmp_path):
    bundle = learned_nsl_kdd["hybrid"]
    lines = kdd_test_lines[:3000]
    sock, alerts = tmp_path / "in.sock", tmp_path / "alerts.json"
    daemon = DaemonProcess(tmp_path, "--bundle", str(bundle), "--input", f"unix:{sock}",
                           "--alerts", str(alerts), "--metrics", "127.0.0.1:0")
    try:
        send(sock, b"".join(lines))
        daemon.wait_metric("edge_ids_records_total", 3000)
        metrics = daemon.metrics()
    finally:
        daemon.stop()
    verdicts, scores = _verdicts(bundle, lines)
    threshold = load_bundle(bundle).anomaly.threshold
    events = read_alerts(alerts)
    expected = [i + 1 for i, v in enumerate(verdicts) if v != "Normal"]
    assert [e["flow_id"] for e in events] == expected  # every alarm, nothing else
    unknown = [e for e in events if e["ml"]["class"] == "Unknown"]
    assert len(unknown) > 10
    for e in events:
        i = e["flow_id"] - 1
        assert e["ml"]["class"] == verdicts[i] == e["alert"]["category"]
        assert abs(e["ml"]["anomaly_score"] - scores[i]) <= 1e-5 * scores[i] + 1e-12
        if e["ml"]["class"] == "Unknown":
            assert e["ml"]["anomaly_threshold"] == threshold < e["ml"]["anomaly_score"]
            assert e["alert"]["signature"] == "edge-ids ml: Unknown"
        else:
            assert "anomaly_threshold" not in e["ml"] and 0 < e["ml"]["score"] <= 1

    def sample(name, **labels):
        return metrics.get((name, frozenset(labels.items())), 0.0)

    for verdict in ("DoS", "Probe", "R2L", "U2R", "Unknown"):
        assert sample("edge_ids_alerts_total", **{"class": verdict}) == verdicts.count(verdict)
    assert sample("edge_ids_anomaly_threshold") == threshold
    ratio = scores / threshold
    assert sample("edge_ids_anomaly_score_ratio_count") == 3000
    assert sample("edge_ids_anomaly_score_ratio_bucket", le="1.0") == np.sum(ratio <= 1.0)
    assert sample("edge_ids_anomaly_score_ratio_bucket", le="0.1") == np.sum(ratio <= 0.1)
    assert sample("edge_ids_anomaly_score_ratio_bucket", le="+Inf") == 3000
    assert abs(sample("edge_ids_anomaly_score_ratio_sum") - ratio.sum()) < 1e-3 * ratio.sum()


def test_sighup_switches_classifier_to_hybrid_and_keeps_it_over_a_missing_threshold(
        small_pipeline, learned_nsl_kdd, kdd_test_lines, tmp_path):
    classifier, hybrid = small_pipeline[0] / "bundle", learned_nsl_kdd["hybrid"]
    broken = shutil.copytree(hybrid, tmp_path / "broken")
    manifest = json.loads((broken / "manifest.json").read_text())
    del manifest["anomaly"]["threshold"]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    current, sock, alerts = tmp_path / "current", tmp_path / "in.sock", tmp_path / "alerts.json"
    point(current, classifier)
    daemon = DaemonProcess(tmp_path, "--bundle", str(current), "--input", f"unix:{sock}",
                           "--alerts", str(alerts), "--emit", "all", "--metrics", "127.0.0.1:0")
    lines = kdd_test_lines[:300]
    try:
        send(sock, b"".join(lines))
        daemon.wait_metric("edge_ids_records_total", 300)
        point(current, hybrid)
        daemon.signal(signal.SIGHUP)
        daemon.wait_metric("edge_ids_reloads_total", 1, result="ok")
        assert "reloaded: nsl-kdd hybrid model" in daemon.log_text()
        send(sock, b"".join(lines))
        daemon.wait_metric("edge_ids_records_total", 600)
        point(current, broken)
        daemon.signal(signal.SIGHUP)
        daemon.wait_metric("edge_ids_reloads_total", 1, result="failed")
        assert "anomaly threshold None is not a finite number" in daemon.log_text()
        send(sock, b"".join(lines))
        daemon.wait_metric("edge_ids_records_total", 900)
    finally:
        assert daemon.stop() == 0
    events = read_alerts(alerts)
    assert [e["flow_id"] for e in events] == list(range(1, 901))
    hybrid_sha = load_bundle(hybrid).model_sha256
    shas = [e["ml"]["model_sha256"] for e in events]
    assert shas == [load_bundle(classifier).model_sha256] * 300 + [hybrid_sha] * 600
    assert all("anomaly_score" not in e["ml"] for e in events[:300])
    assert all("anomaly_score" in e["ml"] for e in events[300:])
    expected, _ = _verdicts(hybrid, lines)
    assert [e["ml"]["class"] for e in events[300:600]] == expected
    assert [e["ml"]["class"] for e in events[600:]] == expected  # still the hybrid


def test_anomaly_only_bundle_serves_normal_and_unknown(learned_nsl_kdd, kdd_test_lines,
                                                      tmp_path):
    bundle = learned_nsl_kdd["anomaly"]
    daemon = DaemonProcess(tmp_path, "--bundle", str(bundle), "--input", "-", "--alerts", "-",
                           "--emit", "all")
    out, _ = daemon.process.communicate(b"".join(kdd_test_lines[:500]), timeout=60)
    daemon.close()
    events = [json.loads(line) for line in out.splitlines()]
    verdicts, _ = _verdicts(bundle, kdd_test_lines[:500])
    assert [e["ml"]["class"] for e in events] == verdicts
    assert {e["event_type"] for e in events if e["ml"]["class"] == "Normal"} == {"ml"}
    assert all("score" not in e["ml"] and "anomaly_score" in e["ml"] for e in events)
