"""Flood benchmark of `edge-ids run`: more records than one core classifies, for minutes.

    python -m edge_ids.benchmarks.harness.flood --bundle OUT/bundle --data-dir ../shared/datasets \\
        [--seconds 120] [--factors 2,10] [--inputs unix,stdin] [--out flood.json]

First one core's rate R is measured (file input, as `edge_ids.benchmarks.harness.daemon` does). Then,
for each input and factor F, the daemon (pinned to one core, alerts to a file, metrics on) is
offered F x R records/s of KDDTest+ lines by a writer on another core, for --seconds. The writer
paces itself and writes with blocking writes: when the daemon is behind, its writes wait
(back-pressure), and it is behind from then on. Reported for each run:

  offered     F x R records/s (what the writer tried to send)
  accepted    records/s the daemon's input took (the writer's completed writes)
  classified  records/s counted by edge_ids_records_total during the flood
  dropped     accepted but never classified, counted after the writer stops and the daemon
              drains (the daemon's own last count)
  blocked     share of the flood the daemon's input was held back
              (edge_ids_input_blocked_seconds_total)
  RSS         resident memory each second: after 10 s, at the end, and the peak (VmHWM)
  metrics     latency of GET /metrics each second: p50 / p99 / max
  alerts      the alert file grew in every second of the flood
  alive       running when the flood ended, and exited 0 after it
Nothing is asserted here (a benchmark); tests/test_flood.py asserts a short run of it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from ...train.paths import data_dir

from .process import daemon_core, edge_ids_command, kdd_lines, pinned, throughput, write_records

CHUNK_LINES = 512  # one write; the writer paces itself in these steps
SAMPLE_SECONDS = 1.0
ALERTS_KEEP_BYTES = 256 << 20  # the alert file is truncated past this (disk, not memory)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_core_rate(bundle: Path, lines: list[bytes], cpu: int, records: int = 200_000) -> float:
    """Records/s one core classifies (file input, default batching, READY to exit)."""
    with tempfile.TemporaryDirectory(prefix="edge-ids-flood-") as tmp:
        path = write_records(lines, records, Path(tmp) / "records.csv")
        return throughput(bundle, path, records, cpu, Path(tmp))["records_per_second"]


class Writer:
    """Offers `rate` records/s to the daemon's input with blocking writes, in chunks, until
    stopped or `limit` records are written."""

    def __init__(self, send, chunks: list[bytes], rate: float, limit: int | None = None):
        self.send, self.chunks, self.rate, self.limit = send, chunks, rate, limit
        self.written = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started, i = time.perf_counter(), 0
        try:
            while not self.stop.is_set() and (self.limit is None or self.written < self.limit):
                ahead = (self.written + CHUNK_LINES) / self.rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(min(ahead, 0.05))
                    continue
                self.send(self.chunks[i % len(self.chunks)])
                self.written += CHUNK_LINES
                i += 1
        except (BrokenPipeError, ConnectionError, OSError) as e:
            self.error = e


def sample_metrics(url: str) -> tuple[float, dict]:
    """(seconds GET /metrics took, {sample name: value} of the counters this reads)."""
    started = time.perf_counter()
    page = urllib.request.urlopen(url, timeout=10).read().decode()
    took = time.perf_counter() - started
    values = {}
    for name in ("edge_ids_records_total", "edge_ids_input_blocked_seconds_total",
                 "process_resident_memory_bytes"):
        found = re.search(rf"^{name} (\S+)$", page, re.MULTILINE)
        values[name] = float(found.group(1)) if found else 0.0
    values["alerts"] = sum(float(v) for v in re.findall(r"^edge_ids_alerts_total\{[^}]*\} (\S+)$",
                                                        page, re.MULTILINE))
    return took, values


def status_field(pid: int, field: str) -> int:
    """VmRSS / VmHWM of a process, in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1)) * 1024


class RunningDaemon:
    """`edge-ids run` pinned to `cpu`, reading stdin or a unix: socket, alerts to a file in
    `work`, metrics on a free port; `send(data)` writes to its input with blocking writes."""

    def __init__(self, bundle: Path, input_kind: str, cpu: int, work: Path):
        port, self.alerts = free_port(), work / f"alerts-{input_kind}.json"
        self.alerts.unlink(missing_ok=True)
        sock = work / f"in-{input_kind}.sock"
        spec = "-" if input_kind == "stdin" else f"unix:{sock}"
        self.log = work / f"daemon-{input_kind}.log"
        self.process = subprocess.Popen(
            edge_ids_command() + ["run", "--bundle", str(bundle), "--input", spec, "--alerts",
                           str(self.alerts), "--metrics", f"127.0.0.1:{port}",
                           "--log-rejects", "0"],
            stdin=subprocess.PIPE if input_kind == "stdin" else subprocess.DEVNULL,
            stderr=open(self.log, "wb"), preexec_fn=pinned(cpu))
        self.url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 60
        while True:  # ready: the metrics page answers (and, for unix:, the socket exists)
            try:
                sample_metrics(self.url)
                if input_kind == "stdin" or sock.exists():
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"the daemon did not start: {self.log_tail()}")
            time.sleep(0.1)
        self.connection = None
        if input_kind == "stdin":
            self.send = self._write_stdin
        else:
            self.connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.connection.connect(str(sock))
            self.send = self.connection.sendall

    def _write_stdin(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.process.stdin.fileno(), view):]

    def finish(self, written: int) -> tuple[int, float, int | None]:
        """End the input and let it drain: (exit code, seconds, records it says it classified)."""
        started = time.monotonic()
        if self.connection is not None:  # let it read what the socket holds, then stop it
            self.connection.close()
            while sample_metrics(self.url)[1]["edge_ids_records_total"] < written:
                if time.monotonic() - started > 60:
                    break
                time.sleep(0.05)
            self.process.terminate()
        else:
            self.process.stdin.close()  # the end of its input: it finishes by itself
        code = self.process.wait(120)
        final = re.findall(r"stopped: ([\d,]+) records", self.log_tail())
        return code, time.monotonic() - started, (int(final[-1].replace(",", "")) if final
                                                   else None)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def chunks_of(lines: list[bytes]) -> list[bytes]:
    """Writes of CHUNK_LINES lines each, cycling through `lines`."""
    return [b"".join(lines[(k * CHUNK_LINES + j) % len(lines)] for j in range(CHUNK_LINES))
            for k in range(len(lines) // CHUNK_LINES + 1)]


def flood(bundle: Path, lines: list[bytes], rate: float, seconds: float, input_kind: str,
          cpu: int, work: Path) -> dict:
    """One flood run; see the module's docstring for what is measured."""
    daemon = RunningDaemon(bundle, input_kind, cpu, work)
    process, alerts, url = daemon.process, daemon.alerts, daemon.url
    writer = Writer(daemon.send, chunks_of(lines), rate)
    samples = []
    started = time.monotonic()
    writer.thread.start()
    while (elapsed := time.monotonic() - started) < seconds:
        time.sleep(SAMPLE_SECONDS - (elapsed % SAMPLE_SECONDS))
        took, values = sample_metrics(url)
        size = alerts.stat().st_size if alerts.exists() else 0
        if size > ALERTS_KEEP_BYTES:
            os.truncate(alerts, 0)  # the daemon appends (O_APPEND): safe, like copytruncate
        samples.append({"t": time.monotonic() - started, "metrics_seconds": took,
                        "written": writer.written, "rss_bytes": status_field(process.pid,
                                                                            "VmRSS"),
                        "alert_bytes": size} | values)
    alive = process.poll() is None
    peak = status_field(process.pid, "VmHWM") if alive else None
    writer.stop.set()
    writer.thread.join(30)
    code, drained, classified_total = daemon.finish(writer.written)
    return summarize(input_kind, rate, seconds, samples, writer, alive, code, peak,
                     classified_total, drained)


def summarize(input_kind, rate, seconds, samples, writer, alive, code, peak, classified_total,
              drained) -> dict:
    span = samples[-1]["t"] - samples[0]["t"]
    first, last = samples[0], samples[-1]
    latency = np.array([s["metrics_seconds"] for s in samples])
    after_10s = next((s for s in samples if s["t"] >= 10), first)
    grew = [b["alerts"] > a["alerts"] for a, b in zip(samples, samples[1:])]
    return {
        "input": input_kind, "seconds": seconds, "offered_per_second": rate,
        "accepted_per_second": (last["written"] - first["written"]) / span,
        "classified_per_second": (last["edge_ids_records_total"]
                                  - first["edge_ids_records_total"]) / span,
        "written": writer.written, "classified_total": classified_total,
        "dropped": None if classified_total is None else writer.written - classified_total,
        "blocked_share": (last["edge_ids_input_blocked_seconds_total"]
                          - first["edge_ids_input_blocked_seconds_total"]) / span,
        "rss_after_10s_bytes": after_10s["rss_bytes"], "rss_end_bytes": last["rss_bytes"],
        "rss_peak_bytes": peak, "metrics_p50_seconds": float(np.percentile(latency, 50)),
        "metrics_p99_seconds": float(np.percentile(latency, 99)),
        "metrics_max_seconds": float(latency.max()), "metrics_answered": len(samples),
        "alerts_grew_every_second": all(grew), "alive_at_end": alive, "exit_code": code,
        "drain_seconds": drained, "writer_error": repr(writer.error) if writer.error else None,
        "samples": samples}


def row(r: dict, factor: float) -> str:
    mib = 2**20
    return (f"| {r['input']} | {factor:g}x | {r['offered_per_second']:,.0f} | "
            f"{r['accepted_per_second']:,.0f} | {r['classified_per_second']:,.0f} | "
            f"{r['dropped']} | {r['blocked_share']:.0%} | "
            f"{r['rss_after_10s_bytes'] / mib:.1f} / {r['rss_end_bytes'] / mib:.1f} / "
            f"{(r['rss_peak_bytes'] or 0) / mib:.1f} | {r['metrics_p50_seconds'] * 1e3:.1f} / "
            f"{r['metrics_p99_seconds'] * 1e3:.1f} / {r['metrics_max_seconds'] * 1e3:.1f} | "
            f"{'yes' if r['alerts_grew_every_second'] else 'NO'} | "
            f"{'yes' if r['alive_at_end'] and r['exit_code'] == 0 else 'NO'} |")


HEADER = ("| input | load | offered /s | accepted /s | classified /s | dropped | input held "
          "back | RSS MiB at 10 s / end / peak | GET /metrics ms p50 / p99 / max | alerts every "
          "second | alive, exit 0 |\n|---|---|---|---|---|---|---|---|---|---|---|")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--data-dir", type=Path, default=data_dir())
    parser.add_argument("--seconds", type=float, default=120, help="each flood lasts this long")
    parser.add_argument("--factors", default="2,10", help="offered load, in multiples of R")
    parser.add_argument("--inputs", default="unix,stdin")
    parser.add_argument("--rate", type=float, default=None,
                        help="one core's rate R (records/s); measured when not given")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    cpu = daemon_core()
    lines = kdd_lines(args.data_dir)
    rate = args.rate or one_core_rate(args.bundle, lines, cpu)
    print(f"one core (cpu {cpu}) classifies {rate:,.0f} records/s (file input)", flush=True)
    results = {"bundle": str(args.bundle), "cpu": cpu, "one_core_rate": rate, "runs": []}
    table = [HEADER]
    with tempfile.TemporaryDirectory(prefix="edge-ids-flood-") as tmp:
        for input_kind in args.inputs.split(","):
            for factor in map(float, args.factors.split(",")):
                print(f"flooding {input_kind} at {factor:g}x ({factor * rate:,.0f} records/s) "
                      f"for {args.seconds:g} s", flush=True)
                r = flood(args.bundle, lines, factor * rate, args.seconds, input_kind, cpu,
                          Path(tmp))
                r["factor"] = factor
                results["runs"].append(r)
                table.append(row(r, factor))
                print(table[-1], flush=True)
    print("\n".join(table))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
