"""What the operator's page and the webhook cost the daemon:

    python -m edge_ids.benchmarks.detection.operator_load [--records 200000]   (about 12 min)

The smart-home test days' flows from 1,000 simulated devices (each a new device with its own
MAC and IP: more new_device pushes than a webhook queue holds, within the storm limit), through `edge-ids run
--input file:` pinned to one core (benchmarks/harness/process.py), alternating, 3 times each:

- throughput with incidents alone, against the same with `--webhook` at a target that is down
  (a port nobody listens on: refused) and at one that never answers (a listening socket that
  never accepts: every attempt waits for its timeout); the bar is >= 95 %, drops counted;
- throughput with `--ui` while a client fetches the page every 0.2 s;
- with the same 1,000 devices held by a running daemon (`--input unix:`): its peak RSS with and
  without the page after 20 fetches (the bar: <= 3 MB more) and the page's answer times (the
  bar: < 100 ms);
- how long the page holds the detection's lock with 16,384 devices, as it did and as it does;
- 500 idle and slow connections from 250 other loopback sources against the page, in 9 rounds
  of the daemon without and with them over --crowd-records records (page_load.py): throughput
  (the bar: >= 95 %), an authorised request's answer time under them (< 1 s), and how long
  the page held any of them (its deadline: 2 s).

The bundle is the incidents benchmark's seed-0 bundle. Writes OUT/operator.json and
operator.md (benchmarks/results/incidents/).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from ..harness import site_scenarios as scenarios
from . import page_load
from ..harness.process import daemon_core, edge_ids_command, pinned, throughput
from ...train.paths import data_dir
from ..harness.site_runs import HOME_NET_OPTIONS as HOME_NET, INCIDENT_RESULTS as OUT, \
    flow_lines, repeated, seed_bundle, write_named_results as write_results

REPEATS = 3
DEVICES = 1_000
FETCHES = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(url: str, stop: threading.Event, every: float = 0.2) -> None:
    while not stop.wait(every):
        try:
            urllib.request.urlopen(url, timeout=5).read()
        except OSError:
            pass


def webhook_counts(log: Path) -> dict:
    found = re.findall(r"webhook: (.+)", log.read_text(errors="replace"))
    return {name: int(n.replace(",", "")) for n, name in
            re.findall(r"(\d[\d,]*) (\w+)", found[-1])} if found else {}


def throughputs(bundle: Path, records: Path, n: int, work: Path) -> dict:
    silent = socket.socket()  # listens, never accepts: a target that never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    runs: dict[str, list] = {}
    cpus, cpu = os.sched_getaffinity(0), daemon_core()
    base = ("--emit", "both", *HOME_NET)
    try:
        for _ in range(REPEATS):
            ui = free_port()
            for name, options in [
                    ("incidents", base),
                    ("webhook refused", (*base, "--webhook", f"http://127.0.0.1:{free_port()}/")),
                    ("webhook never answers",
                     (*base, "--webhook", f"http://127.0.0.1:{silent.getsockname()[1]}/")),
                    ("page fetched every 0.2 s", (*base, "--ui", f"127.0.0.1:{ui}"))]:
                stop = threading.Event()
                if "--ui" in options:
                    threading.Thread(target=poll, args=(f"http://127.0.0.1:{ui}/", stop),
                                     daemon=True).start()
                log = work / "daemon.log"
                try:
                    r = throughput(bundle, records, n, cpu, work, options, log=log)
                finally:
                    stop.set()
                runs.setdefault(name, []).append(r | {"webhook": webhook_counts(log)})
    finally:
        os.sched_setaffinity(0, cpus)
        silent.close()
    out = {}
    for name, rs in runs.items():
        out[name] = {"records_per_second": statistics.median(r["records_per_second"]
                                                             for r in rs),
                     "each": [round(r["records_per_second"]) for r in rs],
                     "webhook": rs[-1]["webhook"]}
    for name, r in out.items():
        r["ratio"] = r["records_per_second"] / out["incidents"]["records_per_second"]
    return out


def status_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def private_kib(pid: int) -> int:
    """What a process has of its own (not shared with others: the interpreter's library is)."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return sum(int(n) for n in re.findall(r"^Private_(?:Clean|Dirty):\s+(\d+) kB", text, re.M))


def held(bundle: Path, records: Path, n: int, work: Path, page: bool) -> dict:
    """A daemon holding the devices; with the page, FETCHES answers timed."""
    sock, metrics = work / "in.sock", free_port()
    ui = free_port()
    args = ["run", "--bundle", str(bundle), "--input", f"unix:{sock}", "--alerts",
            str(work / "held.json"), "--metrics", f"127.0.0.1:{metrics}", "--emit", "both",
            *HOME_NET] + (["--ui", f"127.0.0.1:{ui}"] if page else [])
    process = subprocess.Popen(edge_ids_command() + args, stderr=subprocess.DEVNULL,
                               preexec_fn=pinned(daemon_core()))
    try:
        deadline = time.monotonic() + 120
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            s.sendall(records.read_bytes())
        url = f"http://127.0.0.1:{metrics}/metrics"
        while time.monotonic() < deadline + 600:
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            done = re.search(r"^edge_ids_records_total (\S+)", text, re.M)
            if done and float(done.group(1)) >= n:
                break
            time.sleep(0.5)
        times = []
        for _ in range(FETCHES if page else 0):
            started = time.perf_counter()
            body = urllib.request.urlopen(f"http://127.0.0.1:{ui}/", timeout=10).read()
            times.append(time.perf_counter() - started)
        out = {"peak_rss_kib": status_kib(process.pid, "VmHWM"),
               "rss_kib": status_kib(process.pid, "VmRSS"),
               "page_ms": [round(1000 * t, 1) for t in times],
               "page_bytes": len(body) if page else None}
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        if page:  # the page's own process (page_server.py): its memory counts with the page's
            child = int(children[0])
            out |= {"page_process_peak_rss_kib": status_kib(child, "VmHWM"),
                    "page_process_private_kib": private_kib(child)}
        return out
    finally:
        process.terminate()
        process.wait(timeout=60)


def measure(bundle: Path, records: int, work: Path, crowd_records: int,
            crowd_only: bool = False) -> dict:
    site = scenarios.site(data_dir(), OUT / "runs" / "captures")
    names, lines = flow_lines(bundle, site["test"], work)
    lock = page_load.lock_hold()
    longer = repeated(lines, crowd_records, work / "crowd.csv", names, DEVICES)
    crowd = page_load.measure(bundle, longer, crowd_records, work,
                              ("--emit", "both", *HOME_NET))
    if crowd_only:
        return {"crowd": crowd, "lock": lock}
    many = repeated(lines, records, work / "devices.csv", names, DEVICES)
    out = {"records": records, "devices": DEVICES, "repeats": REPEATS, "bundle": str(bundle),
           "throughput": throughputs(bundle, many, records, work)}
    memory = {"without page": [], "with page": []}
    for _ in range(REPEATS):
        for name in memory:
            memory[name].append(held(bundle, many, records, work, name == "with page"))
    out["memory"] = memory
    peak = {k: statistics.median(r["peak_rss_kib"] + r.get("page_process_peak_rss_kib", 0)
                                 for r in v) for k, v in memory.items()}
    out["page_rss_growth_mb"] = (peak["with page"] - peak["without page"]) * 1024 / 1e6
    daemon = {k: statistics.median(r["peak_rss_kib"] for r in v) for k, v in memory.items()}
    out["daemon_rss_growth_mb"] = (daemon["with page"] - daemon["without page"]) * 1024 / 1e6
    out["page_process_private_mb"] = statistics.median(
        r["page_process_private_kib"] for r in memory["with page"]) * 1024 / 1e6
    out["page_process_peak_rss_mb"] = statistics.median(
        r["page_process_peak_rss_kib"] for r in memory["with page"]) * 1024 / 1e6
    out["page_memory_mb"] = out["daemon_rss_growth_mb"] + out["page_process_private_mb"]
    answers = [t for r in memory["with page"] for t in r["page_ms"]]
    out["page_ms"] = {"median": statistics.median(answers), "max": max(answers)}
    out["crowd"], out["lock"] = crowd, lock
    return out


def markdown(r: dict) -> str:
    t = r["throughput"]
    lines = ["# The operator's page and the webhook: what they cost the daemon", "",
             f"`python -m edge_ids.benchmarks.detection.operator_load`: {r['records']:,} flow "
             f"records of the smart-home test days from {r['devices']:,} simulated new devices, "
             f"`edge-ids run --input file:` on one core, {r['repeats']} alternating runs each, "
             "medians.", "", "| run | records/s | of incidents alone | each run | webhook |",
             "|---|---|---|---|---|"]
    for name, x in t.items():
        hook = ", ".join(f"{n:,} {k}" for k, n in x["webhook"].items() if n) or "-"
        lines.append(f"| {name} | {x['records_per_second']:,.0f} | {100 * x['ratio']:.1f} % | "
                     f"{', '.join(f'{v:,}' for v in x['each'])} | {hook} |")
    worst = min(t["webhook refused"]["ratio"], t["webhook never answers"]["ratio"])
    lines += ["", f"- With the webhook target down: **{100 * worst:.1f} %** of the throughput "
                  f"(the worse of refused and never answers; target ≥ 95 %: "
                  f"{'met' if worst >= 0.95 else 'MISSED'}); what did not fit the queue is "
                  "counted as dropped.",
              f"- The page with {r['devices']:,} devices: the memory it adds **"
              f"{r['page_memory_mb']:.2f} MB**, the daemon's peak RSS "
              f"{r['daemon_rss_growth_mb']:+.2f} MB against the same daemon without it and the "
              f"page's process {r['page_process_private_mb']:.2f} MB of its own (target ≤ 3 MB, "
              f"set when the page was a thread of the daemon: "
              f"{'met' if r['page_memory_mb'] <= 3 else 'MISSED'}; the process's RSS with the "
              f"interpreter's shared library: {r['page_process_peak_rss_mb']:.1f} MB); "
              f"answers in **{r['page_ms']['median']:.0f} ms** median, "
              f"{r['page_ms']['max']:.0f} ms at most over {FETCHES * r['repeats']} fetches "
              f"(target < 100 ms: {'met' if r['page_ms']['max'] < 100 else 'MISSED'}).", ""]
    return "\n".join(lines + page_load.lock_markdown(r["lock"]) + page_load.markdown(r["crowd"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--crowd-records", type=int, default=600_000,
                        help="records per run of the crowd's rounds (long enough for several "
                             "of the page's deadlines)")
    parser.add_argument("--crowd-only", action="store_true",
                        help="only the crowd's rounds, printed (nothing written)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    bundle = seed_bundle(args.bundle)
    with tempfile.TemporaryDirectory(prefix="edge-ids-operator-") as tmp:
        result = measure(bundle, args.records, Path(tmp), args.crowd_records, args.crowd_only)
    if args.crowd_only:
        print(json.dumps({k: v for k, v in result["crowd"].items() if k != "runs"}, indent=1))
        for name, runs in result["crowd"]["runs"].items():
            for r in runs:
                print(name, {k: v for k, v in r.items() if k != "answer_ms"})
        print("\n".join(page_load.lock_markdown(result["lock"])
                        + page_load.markdown(result["crowd"])))
        return 0
    write_results(args.out, "operator", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
