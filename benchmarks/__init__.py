"""Benchmarks: `edge-ids bench` (bench.py, device.py, measure.py, runtimes.py, report.py), the
compression study, the daemon benchmark, the network-only study and packets to alerts (capture.py).
Each writes its figures beside a markdown table in benchmarks/results/."""
from __future__ import annotations

import json
from pathlib import Path


def write_results(out: Path, results: dict, text: str, markdown_name: str = "README.md") -> None:
    """OUT/results.json and the markdown table, which is also printed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / markdown_name).write_text(text)
    print(text)
