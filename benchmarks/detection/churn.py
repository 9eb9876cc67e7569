"""A host making up MACs: 100,000 new devices, each odd and then gone, through the daemon's
device watch (the tracker and the device map, bounded to 1,000 devices as a small sensor's):
the time per batch and the resident memory in the first and the last minute of it. Unbounded
state (an evicted device kept among the resumable episodes that every batch scans) showed as a
last minute slower and larger than the first.

    python -m edge_ids.benchmarks.detection.churn      (about a minute; writes churn.json)
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import numpy as np

from ...edge_runtime.ingest.records import RawSchema, parse_lines
from ...edge_runtime.model.detector import Verdicts
from ...edge_runtime.site.incident_settings import IncidentSettings
from ...edge_runtime.watch import DeviceWatch

NAMES = ("SrcAddr", "Sport", "DstAddr", "Dport", "Proto", "SrcMac", "DstMac", "LastTime",
         "StartTime", "Dur")
T0 = 1_615_600_000.0
PER_BATCH = 1000  # new MACs a batch, a hundred a second of flow time
OUT = Path(__file__).resolve().parents[1] / "results" / "incidents" / "churn.json"


def new_macs(k: int) -> list[bytes]:
    """Batch k's flows: a new MAC (and address) each, to the internet."""
    return [f"10.{n // 65536}.{n // 256 % 256}.{n % 256},40000,185.244.25.235,80,tcp,"
            f"02:00:00:{n // 65536:02x}:{n // 256 % 256:02x}:{n % 256:02x},00:1c:7f:53:d0:28,"
            f"{T0 + n / 100},{T0 + n / 100 - 1},1".encode()
            for n in range(PER_BATCH * k, PER_BATCH * (k + 1))]


def churn_watch(max_devices: int = 1000) -> DeviceWatch:
    settings = IncidentSettings(threshold_bits=6.0, fallback_threshold=1.0, known={},
                                services={}, service_bits={}, max_flow_bits=5.0)
    return DeviceWatch(settings, NAMES, max_devices=max_devices)


def feed(watch: DeviceWatch, k: int) -> None:
    """Batch k through the watch as the daemon gives it (every flow flagged)."""
    records, _ = parse_lines(new_macs(k), RawSchema.of(NAMES, ignored=NAMES[:9]),
                             keep_text=watch.text_columns, keep_fields=watch.key_columns)
    owners, _ = watch.devices(records)
    watch.observe(records, Verdicts(np.zeros(len(records), np.intp), {},
                                    anomaly_scores=np.full(len(records), 50.0)), owners)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--macs", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    watch, batches = churn_watch(), args.macs // PER_BATCH
    per_minute = int(60 / (PER_BATCH / 100))  # batches in a minute of flow time (6)
    times, memory = [], []
    for k in range(batches):
        started = time.perf_counter()
        feed(watch, k)
        times.append(time.perf_counter() - started)
        memory.append(rss_mib())
        if k % 10 == 0:
            print(f"  {PER_BATCH * (k + 1):,} MACs: {1000 * times[-1]:.1f} ms a batch, "
                  f"{memory[-1]:.1f} MiB", flush=True)
    first, last = slice(0, per_minute), slice(batches - per_minute, batches)
    result = {"macs": args.macs, "max_devices": 1000, "per_batch": PER_BATCH,
              "ms_per_batch_first_minute": round(1000 * statistics.median(times[first]), 2),
              "ms_per_batch_last_minute": round(1000 * statistics.median(times[last]), 2),
              "rss_mib_first_minute": round(max(memory[first]), 1),
              "rss_mib_last_minute": round(max(memory[last]), 1),
              "resumable_at_end": len(watch.tracker.resumable),
              "devices_at_end": len(watch.tracker.devices)}
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
