"""What the anomaly channel costs the daemon: `edge-ids run` with the classifier-only bundle and
with the hybrid (classifier + autoencoder) over the same KDDTest+ records, pinned to one core,
alternating so that the machine's neighbours hit both alike (benchmarks/daemon.py's method).

    python -m edge_ids.benchmarks.detection.hybrid_throughput SEED_DIR DATA_DIR RECORDS   (prints JSON)

Run as its own process by benchmarks/hybrid.py: a parent that has loaded TensorFlow would show
its own size in the daemons' peak RSS (it is counted from fork, before exec)."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..harness.process import daemon_core, kdd_lines, throughput, write_records

REPEATS = 3


def throughput_comparison(seed_dir: Path, data_dir: Path, records: int,
                          budget: str = "0.01") -> dict:
    bundles = {"classifier": seed_dir / "classifier" / "bundle",
               "hybrid": seed_dir / f"hybrid@{budget}"}
    cpus = os.sched_getaffinity(0)
    cpu = daemon_core()
    runs = {name: [] for name in bundles}
    try:
        with tempfile.TemporaryDirectory(prefix="edge-ids-hybrid-") as tmp:
            path = write_records(kdd_lines(data_dir), records, Path(tmp) / "records.csv")
            for _ in range(REPEATS):
                for name, bundle in bundles.items():
                    runs[name].append(throughput(bundle, path, records, cpu, Path(tmp)))
    finally:
        os.sched_setaffinity(0, cpus)
    out = {"records": records, "repeats": REPEATS, "cpu": cpu}
    for name, rs in runs.items():
        out[name] = {"records_per_second": float(np.median([r["records_per_second"]
                                                           for r in rs])),
                     "peak_rss_mib": float(np.median([r["peak_rss_bytes"] for r in rs]) / 2**20),
                     "runs": [r["records_per_second"] for r in rs]}
    out["ratio"] = out["hybrid"]["records_per_second"] / out["classifier"]["records_per_second"]
    return out


def measure_apart(seed_dir: Path, data_dir: Path, records: int) -> dict:
    """throughput_comparison in a fresh, small process."""
    import subprocess

    result = subprocess.run([sys.executable, "-m", __name__, str(seed_dir), str(data_dir),
                             str(records)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


if __name__ == "__main__":
    print(json.dumps(throughput_comparison(Path(sys.argv[1]), Path(sys.argv[2]),
                                           int(sys.argv[3]))))
