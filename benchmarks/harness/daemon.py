"""Benchmark of `edge-ids run` end to end: raw KDDTest+ lines in, EVE alert lines out.

    python -m edge_ids.benchmarks.harness.daemon --bundle OUT/bundle --data-dir ../shared/datasets

The daemon runs as its own process pinned to one core, exactly as a user starts it:
  throughput  file:PATH of KDDTest+ repeated to N records; records / second from READY=1 (sent
              on a real NOTIFY_SOCKET, so interpreter start-up and model loading are excluded
              and reported apart) to exit, with the default batching;
  latency     records written to its stdin one at a time at a steady rate, each alert line read
              back from its stdout (--emit all): time from writing a record to reading its
              line, at --max-batch 1 and at the default batching;
  memory      peak RSS (getrusage of the finished process) after 10,000 and after N records.
Figures are printed and written as JSON; nothing is asserted (a benchmark, not a test).
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
from pathlib import Path


from ...train.paths import RESULTS, data_dir

from .process import (DEFAULT_BATCH, DEFAULT_DELAY, daemon_core, kdd_lines, latency,
                      throughput, write_records)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--data-dir", type=Path, default=data_dir())
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--latency-records", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=500.0,
                        help="records per second offered in the latency runs")
    parser.add_argument("--cpu", type=int, default=None, help="core the daemon is pinned to")
    parser.add_argument("--out", type=Path, default=RESULTS / "daemon",
                        help="folder for daemon.json and daemon.md")
    args = parser.parse_args(argv)
    cpu = daemon_core(args.cpu)
    lines = kdd_lines(args.data_dir)
    results = {"bundle": str(args.bundle), "cpu": cpu, "throughput": [], "latency": []}
    with tempfile.TemporaryDirectory(prefix="edge-ids-bench-") as tmp:
        work = Path(tmp)
        for n in (10_000, args.records):
            path = write_records(lines, n, work / f"records-{n}.csv")
            r = throughput(args.bundle, path, n, cpu, work)
            path.unlink()
            results["throughput"].append(r)
            print(f"throughput  {n:>9,} records: {r['records_per_second']:>9,.0f} records/s "
                  f"(serve {r['serve_seconds']:.2f} s after {r['start_seconds']:.2f} s start-up),"
                  f" peak RSS {r['peak_rss_bytes'] / 2**20:.1f} MiB", flush=True)
    small, large = results["throughput"]
    results["rss_growth_bytes"] = large["peak_rss_bytes"] - small["peak_rss_bytes"]
    print(f"peak RSS growth 10,000 -> {args.records:,} records: "
          f"{results['rss_growth_bytes'] / 2**20:+.2f} MiB")
    for batch, delay in ((1, 0.0), (DEFAULT_BATCH, DEFAULT_DELAY)):
        r = latency(args.bundle, lines, args.latency_records, args.rate, batch, delay, cpu)
        results["latency"].append(r)
        print(f"latency at --max-batch {batch} --max-delay {delay}: p50 "
              f"{r['p50_seconds'] * 1e3:.2f} ms, p99 {r['p99_seconds'] * 1e3:.2f} ms, max "
              f"{r['max_seconds'] * 1e3:.2f} ms ({r['answered']:,}/{r['records']:,} records at "
              f"{r['rate']:.0f}/s)", flush=True)
    results["host_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "daemon.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "daemon.md").write_text(markdown(results))
    return results


def markdown(results: dict) -> str:
    small, large = results["throughput"]
    one, batched = results["latency"]
    ms = (lambda r: f"{r['p50_seconds'] * 1e3:.2f} / {r['p99_seconds'] * 1e3:.2f} ms")
    return "\n".join([
        "# The daemon end to end: `edge-ids run`", "",
        f"`python -m edge_ids.benchmarks.harness.daemon --bundle {results['bundle']}`: KDDTest+ rows "
        f"repeated, the daemon pinned to core {results['cpu']} as its own process.", "",
        "| figure | result |", "|---|---|",
        f"| throughput, {large['records']:,} records, raw line in -> alert line out | "
        f"{large['records_per_second']:,.0f} /s |",
        f"| throughput, {small['records']:,} records | {small['records_per_second']:,.0f} /s |",
        f"| latency at `--max-batch 1`, p50 / p99 ({one['rate']:.0f} records/s offered) | "
        f"{ms(one)} |",
        f"| latency at the default batching, p50 / p99 | {ms(batched)} |",
        f"| peak RSS after {small['records']:,} -> after {large['records']:,} records | "
        f"{small['peak_rss_bytes'] / 2**20:.1f} -> {large['peak_rss_bytes'] / 2**20:.1f} MiB "
        f"({results['rss_growth_bytes'] / 2**20:+.2f}) |",
        f"| start-up to READY=1 | {large['start_seconds']:.2f} s |", ""])


if __name__ == "__main__":
    main()
