"""Soak benchmark of `edge-ids run`: 10 million records through one daemon, its memory every
million.

    python -m edge_ids.benchmarks.harness.soak --bundle OUT/bundle --data-dir ../shared/datasets \\
        [--records 10000000] [--input unix] [--out soak.json]

The daemon runs as the unit runs it (unix: input, alerts to a file, metrics on), pinned to one
core; a writer on another core sends KDDTest+ lines as fast as the daemon takes them. Each time
edge_ids_records_total passes a million, the daemon's resident memory (VmRSS) is read; the
growth after the first million is the figure (target: at most 1 MB). The alert file is cut back
past 256 MB (disk, not the daemon's memory). Prints a table; nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from ...train.paths import data_dir
from .process import daemon_core, kdd_lines
from .flood import ALERTS_KEEP_BYTES, RunningDaemon, Writer, chunks_of, sample_metrics
from .flood import status_field

MILLION = 1_000_000


def soak(bundle: Path, lines: list[bytes], records: int, input_kind: str, cpu: int,
         work: Path, log=print) -> dict:
    daemon = RunningDaemon(bundle, input_kind, cpu, work)
    writer = Writer(daemon.send, chunks_of(lines), float("inf"), limit=records)
    started = time.monotonic()
    writer.thread.start()
    marks, next_mark = [], MILLION
    while next_mark <= records and daemon.process.poll() is None:
        time.sleep(0.05)
        _, values = sample_metrics(daemon.url)
        if values["edge_ids_records_total"] >= next_mark:
            mark = {"records": int(values["edge_ids_records_total"]),
                    "seconds": time.monotonic() - started,
                    "rss_bytes": status_field(daemon.process.pid, "VmRSS"),
                    "hwm_bytes": status_field(daemon.process.pid, "VmHWM")}
            marks.append(mark)
            log(f"{mark['records']:>11,} records  {mark['seconds']:7.1f} s  RSS "
                f"{mark['rss_bytes'] / 2**20:6.2f} MiB  (+{(mark['rss_bytes'] - marks[0]['rss_bytes']) / 2**20:.2f} since the first million)")
            next_mark += MILLION
            if daemon.alerts.exists() and daemon.alerts.stat().st_size > ALERTS_KEEP_BYTES:
                os.truncate(daemon.alerts, 0)
    writer.thread.join(60)
    end = {"records": None, "seconds": time.monotonic() - started,
           "rss_bytes": status_field(daemon.process.pid, "VmRSS"),
           "hwm_bytes": status_field(daemon.process.pid, "VmHWM")}
    code, _, classified = daemon.finish(writer.written)
    end["records"] = classified
    if not marks or marks[-1]["records"] < classified:
        marks.append(end)  # the last mark: where the run ended (the only one under a million)
    first, last = marks[0], marks[-1]
    growth = last["rss_bytes"] - first["rss_bytes"] if len(marks) > 1 else None
    return {"records": records, "input": input_kind, "written": writer.written,
            "classified": classified, "exit_code": code, "marks": marks,
            "rss_growth_after_first_million_bytes": growth,
            "peak_rss_bytes": max(m["hwm_bytes"] for m in marks),
            "records_per_second": (last["records"] - first["records"])
            / (last["seconds"] - first["seconds"]) if growth is not None else None}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--data-dir", type=Path, default=data_dir())
    parser.add_argument("--records", type=int, default=10 * MILLION)
    parser.add_argument("--input", choices=("unix", "stdin"), default="unix")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    cpu = daemon_core()
    with tempfile.TemporaryDirectory(prefix="edge-ids-soak-") as tmp:
        result = soak(args.bundle, kdd_lines(args.data_dir), args.records, args.input, cpu,
                      Path(tmp))
    growth = result["rss_growth_after_first_million_bytes"]
    rate = result["records_per_second"]  # None under a million: nothing after the first
    print(f"{result['classified']:,} of {result['written']:,} records classified "
          f"({f'{rate:,.0f} /s' if rate else 'no rate'} after the first million), exit "
          f"{result['exit_code']}; " + (
              f"RSS growth after the first million {growth / 2**20:+.2f} MiB "
              f"({growth / 1e6:+.2f} MB)" if growth is not None else
              "too few records for a growth after the first million") +
          f", peak {result['peak_rss_bytes'] / 2**20:.1f} MiB")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
