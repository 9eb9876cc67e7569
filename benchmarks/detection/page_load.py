"""What the page costs detection when many devices or many connections come (operator_load.py
runs both and writes their results beside the others).

How long a page holds the detection's lock with 16,384 devices (the most a tracker keeps):
building every device's row under it, as the page did, against copying the references under it
and reading them after, as it does (lock_hold: medians of 15).

What a crowd of idle and slow connections to the page costs the daemon:

500 connections from 250 other sources (127.0.0.2-127.0.0.251, two each: one that sends
nothing, one that sends its request line and then a byte of a header every second), reopened
every second when the page drops them, as slowloris keeps its count, against the page
(`--ui 127.0.0.1:PORT --ui-token-file`) of `edge-ids run --input file:` pinned to one core;
the same daemon without them, the two taking turns at going first, ROUNDS rounds. In both, an
authorised request (the token, from 127.0.0.1) every 0.5 s, timed. What the crowd sees is
recorded too: how long the page held each connection it accepted.

Only 127.0.0.0/8 is used: nothing leaves this machine.
"""
from __future__ import annotations

import json
import os
import re
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from ..harness.process import daemon_core, throughput
from ...edge_runtime.outputs.page_render import MAX_DEVICES_SHOWN

ROUNDS = 9
CONNECTIONS, SOURCES = 500, 250
REOPEN_SECONDS = 1.0
POLL_SECONDS = 0.5
TOKEN = "benchmark-token-for-the-page"


class Crowd:
    """CONNECTIONS connections to 127.0.0.1:port, odd ones slow, kept open from their sources:
    a dropped one is opened again at the next tick. Connects do not block (one selector for
    everything), so that each close is seen when it happens."""

    def __init__(self, port: int):
        self.port, self.stop = port, threading.Event()
        self.held: list[float] = []  # seconds from connected to closed by the page, each
        self.waited: list[float] = []  # seconds from connect() to connected, each
        self.opened = self.failed = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=10)

    def _open(self, selector, slot: int) -> None:
        s = socket.socket()
        s.setblocking(False)
        try:
            s.bind((f"127.0.0.{2 + slot % SOURCES}", 0))
            s.connect_ex(("127.0.0.1", self.port))
        except OSError:
            s.close()
            self.failed += 1
            return
        selector.register(s, selectors.EVENT_WRITE, [slot, time.monotonic(), None])

    def _event(self, selector, key, slots: dict) -> None:
        s, (slot, started, connected) = key.fileobj, key.data
        now = time.monotonic()
        if connected is None:  # the connect's result
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                self.opened += 1
                self.waited.append(now - started)
                selector.modify(s, selectors.EVENT_READ, [slot, started, now])
                slots[slot] = s
                if slot % 2:
                    try:
                        s.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                    except OSError:
                        pass  # pushed out already: the read side says so
                return
            self.failed += 1
        else:
            try:
                if s.recv(4096):
                    return  # (an answer: none is expected)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                pass
            self.held.append(now - connected)
        selector.unregister(s)
        s.close()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        slots: dict[int, socket.socket | None] = dict.fromkeys(range(CONNECTIONS))
        while not self.stop.is_set():
            tick = time.monotonic() + REOPEN_SECONDS
            busy = {key.data[0] for key in selector.get_map().values()}
            for slot in range(CONNECTIONS):
                s = slots[slot]
                if slot not in busy:
                    slots[slot] = None
                    self._open(selector, slot)
                elif s is not None and slot % 2:
                    try:
                        s.send(b"x")
                    except OSError:
                        pass  # closed by the page: the read side says so
            while (left := tick - time.monotonic()) > 0 and not self.stop.is_set():
                for key, _ in selector.select(left):
                    self._event(selector, key, slots)
        for key in list(selector.get_map().values()):
            key.fileobj.close()
        selector.close()


def crowded_tracker(n: int = 16384):
    """n devices seen in batches of 1,024 flows, every 7th flagged, 50 with incidents open."""
    from ...edge_runtime.site.incident_settings import IncidentSettings
    from ...edge_runtime.site.incidents import IncidentTracker

    tracker = IncidentTracker(IncidentSettings(threshold_bits=6.0, fallback_threshold=1.0,
                                               known={}))
    tracker.timelines = True
    keys = [f"02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}" for i in range(n)]
    flow = ("10.0.0.1", "40000", "185.244.25.235", "443", "tcp")
    t = 1.6e9
    for start in range(0, n, 1024):
        rows = range(start, min(n, start + 1024))
        t = 1.6e9 + start
        tracker.observe([t] * len(rows), [t - 1] * len(rows),
                        [((keys[i], f"10.{i >> 16}.{i >> 8 & 255}.{i & 255}"),) for i in rows],
                        [3.0 if i % 7 == 0 else 0.1 for i in rows], None, None,
                        lambda r: flow, ["tcp/443"] * len(rows))
    for _ in range(8):
        t += 1
        tracker.observe([t] * 50, [t - 1] * 50, [((keys[i], None),) for i in range(50)],
                        [100.0] * 50, None, None, lambda r: flow, ["tcp/443"] * 50)
    return tracker


class TimedLock:
    """A real lock that times how long each holder keeps it."""

    def __init__(self):
        self.lock, self.held = threading.Lock(), []

    def __enter__(self):
        self.lock.acquire()
        self.taken = time.perf_counter()

    def __exit__(self, *exc):
        self.held.append(time.perf_counter() - self.taken)
        self.lock.release()


def lock_hold(repeats: int = 15) -> dict:
    """Milliseconds the page holds the detection's lock with 16,384 devices, then and now."""
    from ...edge_runtime.outputs.operator_page import OperatorView, snapshot
    from ...edge_runtime.outputs.page_render import render

    tracker = crowded_tracker()
    view = OperatorView("model")
    view.tracker, view.lock = tracker, TimedLock()
    then, made, drawn = [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        with view.lock:
            snapshot(tracker)  # what the page built under the lock before
        then.append(time.perf_counter() - started)
        started = time.perf_counter()
        state = view.state()
        made.append(time.perf_counter() - started)
        started = time.perf_counter()
        render(state)
        drawn.append(time.perf_counter() - started)
    ms = lambda xs: round(1000 * statistics.median(xs), 3)  # noqa: E731
    return {"devices": len(tracker.devices), "repeats": repeats,
            "rows_under_the_lock_ms": ms(then), "references_under_the_lock_ms":
            ms(view.lock.held[-repeats:]), "state_ms": ms(made), "render_ms": ms(drawn)}


def crowd_process(port: int) -> None:
    """`python -m edge_ids.benchmarks.detection.page_load PORT`: a Crowd in a process of its
    own (its work must not delay the timed requests) until stdin closes, then its figures as
    JSON on stdout."""
    with Crowd(port) as crowd:
        sys.stdin.read()
    print(json.dumps({"held": crowd.held, "waited": crowd.waited, "opened": crowd.opened,
                      "failed": crowd.failed}))


def sample_cpu(daemon: int, stop: threading.Event, samples: list) -> None:
    """(time, CPU seconds) of the page's process (the daemon's child) every 0.25 s."""
    tick = os.sysconf("SC_CLK_TCK")
    while not stop.wait(0.25):
        try:
            child = Path(f"/proc/{daemon}/task/{daemon}/children").read_text().split()[0]
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return  # the daemon has ended
        samples.append((time.monotonic(), (int(fields[11]) + int(fields[12])) / tick))


def poll(url: str, stop: threading.Event, times: list, failures: list) -> None:
    """An authorised request every POLL_SECONDS, each timed (failures kept, with why)."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    while not stop.wait(POLL_SECONDS):
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                answer.read()
            times.append(time.perf_counter() - started)
        except OSError as e:
            failures.append((started, f"{type(e).__name__}: {e}"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(bundle: Path, records: Path, n: int, cpu: int, work: Path, options: tuple,
            crowd: bool) -> dict:
    port = free_port()
    token = work / "page-token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    stop, times, failures = threading.Event(), [], []
    started: list = []
    poller = threading.Thread(target=poll, args=(f"http://127.0.0.1:{port}/", stop, times,
                                                 failures), daemon=True)

    samples: list = []

    def ready(daemon) -> None:  # the page listens once READY=1 is sent
        threading.Thread(target=sample_cpu, args=(daemon.pid, stop, samples),
                         daemon=True).start()
        if crowd:
            started.append(subprocess.Popen([sys.executable, "-m", __name__, str(port)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        poller.start()

    log = work / "page-daemon.log"
    try:
        r = throughput(bundle, records, n, cpu, work, (*options, "--ui", f"127.0.0.1:{port}",
                                                       "--ui-token-file", str(token)),
                       log=log, on_ready=ready)
        ended = time.perf_counter()
    finally:
        stop.set()
        crowd_out = [json.loads(p.communicate(timeout=30)[0]) for p in started]
    poller.join(timeout=15)
    # a request begun in the daemon's last second may fail because the daemon ended: not counted
    failures = [why for began, why in failures if began < ended - 1.0]
    summary = re.findall(r"the page: (.*)", log.read_text(errors="replace"))[-1]
    numbers = [float(x.replace(",", "")) for x in re.findall(r"\d[\d,.]*", summary)]
    (t0, cpu0), (t1, cpu1) = samples[0], samples[-1]
    out = {"records_per_second": r["records_per_second"], "serve_seconds": r["serve_seconds"],
           "page_process_cpu": round((cpu1 - cpu0) / (t1 - t0), 4),
           "let_in_per_second": round(numbers[0] / r["serve_seconds"]),
           "answers": len(times), "failures": failures, "page": summary,
           "page_counts": dict(zip(("let in", "answered", "pushed out", "timed out",
                                    "refused per source", "refused full"), numbers)),
           "page_longest_held_s": numbers[-1],
           "answer_ms": [round(1000 * t, 1) for t in times]}
    if crowd_out:
        c = crowd_out[0]
        held = c["held"]
        out |= {"opened": c["opened"], "connect_failed": c["failed"], "dropped": len(held),
                "held_max_s": round(max(held, default=0.0), 3),
                "held_median_s": round(statistics.median(held), 3) if held else None,
                "dropped_at_once": sum(1 for h in held if h < 0.1),
                "connect_wait_max_s": round(max(c["waited"], default=0.0), 3)}
    return out


def measure(bundle: Path, records: Path, n: int, work: Path, options: tuple) -> dict:
    """ROUNDS rounds of (without the crowd, with it), each in turn going first."""
    cpus, cpu = os.sched_getaffinity(0), daemon_core()
    runs: dict[str, list] = {"without": [], "with": []}
    rounds = []
    try:
        for i in range(ROUNDS):
            order = ("without", "with") if i % 2 == 0 else ("with", "without")
            got = {name: one_run(bundle, records, n, cpu, work, options, name == "with")
                   for name in order}
            for name in order:
                runs[name].append(got[name])
            rounds.append(got["with"]["records_per_second"]
                          / got["without"]["records_per_second"])
    finally:
        os.sched_setaffinity(0, cpus)
    speed = {k: [r["records_per_second"] for r in v] for k, v in runs.items()}
    answers = [t for r in runs["with"] for t in r["answer_ms"]]
    base_answers = [t for r in runs["without"] for t in r["answer_ms"]]
    held = [r["held_max_s"] for r in runs["with"]]
    page_held = [r["page_longest_held_s"] for r in runs["with"]]
    return {
        "rounds": ROUNDS, "connections": CONNECTIONS, "sources": SOURCES, "records": n,
        "reopen_seconds": REOPEN_SECONDS, "cpu": cpu,
        "records_per_second": {k: statistics.median(v) for k, v in speed.items()},
        "each": {k: [round(x) for x in v] for k, v in speed.items()},
        "ratio": statistics.median(speed["with"]) / statistics.median(speed["without"]),
        "round_ratios": [round(x, 4) for x in rounds],
        "authorised_ms": {"median": statistics.median(answers), "max": max(answers),
                          "count": len(answers),
                          "failures": sum(len(r["failures"]) for r in runs["with"])},
        "authorised_ms_without": {"median": statistics.median(base_answers),
                                  "max": max(base_answers), "count": len(base_answers)},
        "held_max_s": max(held), "page_longest_held_s": max(page_held),
        "connect_wait_max_s": max(r["connect_wait_max_s"] for r in runs["with"]),
        "page_counts_per_run": [r["page_counts"] for r in runs["with"]],
        "page_process_cpu": {k: statistics.median(r["page_process_cpu"] for r in v)
                             for k, v in runs.items()},
        "let_in_per_second": statistics.median(r["let_in_per_second"] for r in runs["with"]),
        "runs": runs}


def lock_markdown(r: dict) -> list[str]:
    return ["## The detection's lock", "",
            f"With {r['devices']:,} devices (medians of {r['repeats']}), the page holds the "
            f"lock the detection takes around each batch **{r['references_under_the_lock_ms']:.2f}"
            f" ms** (references copied), where building every device's row under it took "
            f"{r['rows_under_the_lock_ms']:.1f} ms. Outside the lock, the state for the page "
            f"(rows for the {MAX_DEVICES_SHOWN:,} shown) takes {r['state_ms']:.1f} ms and the render "
            f"{r['render_ms']:.1f} ms, at most once a second.", ""]


def markdown(r: dict) -> list[str]:
    def spread(name: str) -> str:
        values = [c[name] for c in r["page_counts_per_run"]]
        return f"{min(values):,.0f}-{max(values):,.0f}"

    each = r["each"]
    ratio, rounds = r["ratio"], r["round_ratios"]
    a = r["authorised_ms"]
    return [
        "## 500 idle and slow connections against the page", "",
        f"{r['connections']} connections from {r['sources']} other sources (127.0.0.2-"
        f"127.0.0.{1 + r['sources']}, one idle and one slow each), reopened every "
        f"{r['reopen_seconds']:g} s when dropped, against `--ui` with a token; "
        f"{r['records']:,} records; {r['rounds']} rounds, each of the two going first in "
        "turn; an authorised request every 0.5 s in both.", "",
        "| run | records/s (median) | each run |", "|---|---|---|",
        f"| without the crowd | {r['records_per_second']['without']:,.0f} | "
        f"{', '.join(f'{v:,}' for v in each['without'])} |",
        f"| with the crowd | {r['records_per_second']['with']:,.0f} | "
        f"{', '.join(f'{v:,}' for v in each['with'])} |", "",
        f"- Throughput with the crowd: **{100 * ratio:.1f} %** of without it (ratio of the "
        f"medians; target ≥ 95 %: {'met' if ratio >= 0.95 else 'MISSED'}); each round's own "
        f"ratio {100 * min(rounds):.1f}-{100 * max(rounds):.1f} % (median "
        f"{100 * statistics.median(rounds):.1f} %).",
        f"- Authorised requests under the crowd: **{a['median']:.0f} ms** median, "
        f"**{a['max']:.0f} ms** at most over {a['count']} (target < 1 s: "
        f"{'met' if a['max'] < 1000 and not a['failures'] else 'MISSED'}; {a['failures']} "
        f"failed); without the crowd {r['authorised_ms_without']['median']:.0f} / "
        f"{r['authorised_ms_without']['max']:.0f} ms.",
        f"- The longest the page held a connection without a request, from its accept (its "
        f"own count, in the log): **{r['page_longest_held_s']:.2f} s** (the stated deadline: "
        f"2 s for the request's head); seen by the crowd, from its connect's completion: "
        f"{r['held_max_s']:.2f} s (the kernel completes a connection before the page accepts "
        f"it; with the listen queue full a connect waited up to "
        f"{r['connect_wait_max_s']:.2f} s).",
        f"- What the page did with them, per run: {spread('let in')} let in, "
        f"{spread('pushed out')} pushed out for a newcomer, {spread('timed out')} timed out, "
        f"{spread('refused per source')} refused over the per-source cap, "
        f"{spread('refused full')} with no room; {spread('answered')} authorised requests "
        f"answered. That is {r['let_in_per_second']:,.0f} new connections a second (median), "
        f"for which the page's process used {100 * r['page_process_cpu']['with']:.1f} % of "
        f"the daemon's core ({100 * r['page_process_cpu']['without']:.1f} % without the "
        "crowd).", ""]


if __name__ == "__main__":
    crowd_process(int(sys.argv[1]))
