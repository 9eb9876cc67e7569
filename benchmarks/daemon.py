"""Benchmark of `edge-ids run` end to end: raw KDDTest+ lines in, EVE alert lines out.

    python -m edge_ids.benchmarks.daemon --bundle OUT/bundle --data-dir ../shared/datasets

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
import gzip
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

DEFAULT_BATCH, DEFAULT_DELAY = 256, 0.005


def kdd_lines(data_dir: Path) -> list[bytes]:
    with gzip.open(data_dir / "nsl-kdd" / "KDDTest+.txt.gz", "rb") as f:
        return f.readlines()


def write_records(lines: list[bytes], n: int, path: Path) -> Path:
    with open(path, "wb") as f:
        for start in range(0, n, len(lines)):
            f.writelines(lines[:min(len(lines), n - start)])
    return path


def _pinned(cpu: int):
    return lambda: os.sched_setaffinity(0, {cpu})


def _edge_ids() -> list[str]:
    return [sys.executable, "-m", "edge_ids"]


def throughput(bundle: Path, records: Path, n: int, cpu: int, work: Path,
               options: tuple[str, ...] = ()) -> dict:
    """Run the daemon over a file (with more `options`); seconds from READY to exit, and the
    process's peak RSS."""
    notify = work / f"notify-{n}.sock"
    notify.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify))
        alerts = work / f"alerts-{n}.json"
        alerts.unlink(missing_ok=True)
        started = time.perf_counter()
        process = subprocess.Popen(
            _edge_ids() + ["run", "--bundle", str(bundle), "--input", f"file:{records}",
                           "--alerts", str(alerts), *options],
            env=os.environ | {"NOTIFY_SOCKET": str(notify)}, preexec_fn=_pinned(cpu),
            stderr=subprocess.DEVNULL)
        listener.settimeout(120)
        while b"READY=1" not in listener.recv(4096):
            pass
        ready = time.perf_counter()
        _, status, usage = os.wait4(process.pid, 0)
        done = time.perf_counter()
    if status != 0:
        raise RuntimeError(f"the daemon exited with status {status}")
    with open(alerts, "rb") as f:
        alert_lines = sum(1 for _ in f)
    alerts.unlink()
    return {"records": n, "start_seconds": ready - started, "serve_seconds": done - ready,
            "records_per_second": n / (done - ready), "alert_lines": alert_lines,
            "peak_rss_bytes": usage.ru_maxrss * 1024}


def latency(bundle: Path, lines: list[bytes], n: int, rate: float, max_batch: int,
            max_delay: float, cpu: int) -> dict:
    """Records at a steady `rate` into stdin; seconds from each write to its line on stdout."""
    process = subprocess.Popen(
        _edge_ids() + ["run", "--bundle", str(bundle), "--input", "-", "--alerts", "-",
                       "--emit", "all", "--max-batch", str(max_batch),
                       "--max-delay", str(max_delay)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        preexec_fn=_pinned(cpu))
    sent = np.zeros(n)
    received = np.full(n, np.nan)

    def read():
        for line in process.stdout:
            arrived = time.perf_counter()
            flow_id = int(line[line.index(b'"flow_id":') + 10:line.index(b',"event_type"')])
            received[flow_id - 1 - warmup] = arrived if flow_id > warmup else np.nan

    warmup = 200
    for line in lines[:warmup]:  # the first batches also pay for lazy initialisation
        process.stdin.write(line)
    process.stdin.flush()
    time.sleep(1.0)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    interval = 1.0 / rate
    begin = time.perf_counter()
    for i in range(n):
        due = begin + i * interval
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        sent[i] = time.perf_counter()
        process.stdin.write(lines[(warmup + i) % len(lines)])
        process.stdin.flush()
    process.stdin.close()
    process.wait(timeout=60)
    reader.join(timeout=10)
    seconds = received - sent
    ok = seconds[np.isfinite(seconds)]
    return {"max_batch": max_batch, "max_delay": max_delay, "rate": rate, "records": n,
            "answered": int(ok.size), "p50_seconds": float(np.percentile(ok, 50)),
            "p99_seconds": float(np.percentile(ok, 99)), "max_seconds": float(ok.max())}


def daemon_core(cpu: int | None = None) -> int:
    """The core the daemon under test is pinned to (default the last one); this process (the
    feeder, the reader, the sampling) moves off it so that it does not compete with what it
    measures. os.sched_setaffinity(0, all cores) gives the core back."""
    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[-1] if cpu is None else cpu
    if len(cpus) > 1:
        os.sched_setaffinity(0, set(cpus) - {cpu})
    return cpu


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get(
        "EDGE_IDS_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "datasets")))
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--latency-records", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=500.0,
                        help="records per second offered in the latency runs")
    parser.add_argument("--cpu", type=int, default=None, help="core the daemon is pinned to")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
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
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
