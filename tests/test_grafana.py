"""The Grafana dashboard in docs/ queries only metrics a running daemon serves."""
from __future__ import annotations

import json
import re
import urllib.request

from conftest import REPO
from daemon_process import DaemonProcess, send

DASHBOARD = REPO / "docs" / "grafana" / "edge-ids.json"
SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def queried(dashboard: dict) -> set[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) == len(dashboard["panels"]) >= 10
    return {name for e in exprs for name in re.findall(r"\b((?:edge_ids|process)_\w+)", e)}


def test_every_metric_the_dashboard_queries_is_on_a_running_daemons_page(learned_nsl_kdd,
                                                                        kdd_test_lines,
                                                                        tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    names = queried(dashboard)
    daemon = DaemonProcess(tmp_path, "--bundle", str(learned_nsl_kdd["hybrid"]), "--input",
                           f"unix:{tmp_path / 'in.sock'}", "--alerts", str(tmp_path / "a.json"),
                           "--metrics", "127.0.0.1:0")
    try:  # records with attacks among them: the alert counters get their first children
        send(tmp_path / "in.sock", b"".join(kdd_test_lines[:500]))
        daemon.wait_metric("edge_ids_records_total", 500)
        page = urllib.request.urlopen(daemon.metrics_url, timeout=10).read().decode()
    finally:
        daemon.stop()
    served = {line.split("{")[0].split(" ")[0] for line in page.splitlines()
              if line and not line.startswith("#")}
    missing = sorted(n for n in names if n not in served)
    assert not missing, missing
    assert {"edge_ids_incidents_total", "edge_ids_webhook_events_total",
            "edge_ids_devices"} <= names
    # a control: a misspelt metric is caught
    assert "edge_ids_incident_total" not in served
