"""The daemon harness that daemon.py, flood.py, soak.py and the studies share: `edge-ids run` as
its own process pinned to a core, fed from a file or its stdin, timed from READY=1 (a real
NOTIFY_SOCKET) to exit, with its peak RSS."""
from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
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


def pinned(cpu: int):
    return lambda: os.sched_setaffinity(0, {cpu})


def edge_ids_command() -> list[str]:
    return [sys.executable, "-m", "edge_ids"]


def throughput(bundle: Path, records: Path, n: int, cpu: int, work: Path,
               options: tuple[str, ...] = (), log: Path | None = None,
               on_ready=None) -> dict:
    """Run the daemon over a file (with more `options`); seconds from READY to exit, and the
    process's peak RSS. Its log goes to `log` if given; `on_ready(process)` is called at READY
    (what should load the daemon while it serves)."""
    notify = work / f"notify-{n}.sock"
    notify.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify))
        alerts = work / f"alerts-{n}.json"
        alerts.unlink(missing_ok=True)
        started = time.perf_counter()
        process = subprocess.Popen(
            edge_ids_command() + ["run", "--bundle", str(bundle), "--input", f"file:{records}",
                           "--alerts", str(alerts), *options],
            env=os.environ | {"NOTIFY_SOCKET": str(notify)}, preexec_fn=pinned(cpu),
            stderr=open(log, "wb") if log else subprocess.DEVNULL)
        listener.settimeout(120)
        while b"READY=1" not in listener.recv(4096):
            pass
        ready = time.perf_counter()
        if on_ready is not None:
            on_ready(process)
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
        edge_ids_command() + ["run", "--bundle", str(bundle), "--input", "-", "--alerts", "-",
                       "--emit", "all", "--max-batch", str(max_batch),
                       "--max-delay", str(max_delay)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        preexec_fn=pinned(cpu))
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
