"""One replay of the living-normal benchmark through the real daemon (`edge-ids run`), with a
restart and a reload in the middle, each at a record count so that runs compare:

    records [0, restart)        run --input file:PART1 --state-dir S          (ends: state kept)
    records [restart, reload)   run --input - --state-dir S                   (a new process)
    at record `reload`          the bundle's path now leads to another bundle; SIGHUP, once the
                                daemon has classified every record before it (its metrics)
    records [reload, end)       the same process, on the other bundle

Events are the daemon's incident, new-device, device-normal and decision lines (--emit both:
the flow alerts are kept apart, for each device's flagged share).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DEVICE_EVENTS = ("incident", "new_device", "device_normal", "decision")


def replay(folder: Path, lines: list[str], bundle: Path, home_net: tuple[str, ...],
           restart: int | None = None, reload: int | None = None,
           reload_to: Path | None = None) -> dict:
    """The daemon over `lines` in `folder` (made anew): its device events, its flow alerts'
    keys and times, and how each process ended."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*"):
        if old.is_file() or old.is_symlink():
            old.unlink()
    link = folder / "bundle"
    link.symlink_to(Path(bundle).resolve())
    state = folder / "state"
    alerts = folder / "alerts.json"
    options = ["--bundle", str(link), "--alerts", str(alerts), "--emit", "both",
               *[a for net in home_net for a in ("--home-net", net)]]
    codes = []
    start = 0
    if restart is not None:
        options += ["--state-dir", str(state)]
        first = folder / "part1.csv"
        first.write_text("\n".join(lines[:restart]) + "\n")
        codes.append(_run(options + ["--input", f"file:{first}"], folder / "part1.log"))
        first.unlink()
        start = restart
    codes.append(_fed(options, lines[start:], folder / "part2.log",
                      None if reload is None else reload - start, link, reload_to))
    return {"codes": codes, **read_events(alerts)}


def read_events(alerts: Path) -> dict:
    events, flagged = [], []
    for line in alerts.read_text().splitlines():
        event = json.loads(line)
        if event["event_type"] in DEVICE_EVENTS:
            events.append(event)
        elif event["event_type"] == "alert":
            flagged.append((event.get("src_ip"), event.get("dest_ip"),
                            event["flow"]["end"] if "flow" in event else event["timestamp"]))
    return {"events": events, "flagged": flagged}


def _command() -> list[str]:
    return [sys.executable, "-m", "edge_ids", "run"]


def _run(options: list[str], log: Path) -> int:
    with open(log, "wb") as err:
        return subprocess.run(_command() + options, stderr=err, stdout=subprocess.DEVNULL,
                              timeout=1800).returncode


def _fed(options: list[str], lines: list[str], log: Path, reload_after: int | None,
         link: Path, reload_to: Path | None) -> int:
    """The daemon on its stdin; with reload_after, SIGHUP to `reload_to` after that many
    records were classified."""
    metrics = ["--metrics", "127.0.0.1:0"] if reload_after is not None else []
    with open(log, "wb") as err:
        process = subprocess.Popen(_command() + options + metrics + ["--input", "-"],
                                   stdin=subprocess.PIPE, stderr=err, stdout=subprocess.DEVNULL)
        try:
            head = lines if reload_after is None else lines[:reload_after]
            process.stdin.write(("\n".join(head) + "\n").encode() if head else b"")
            process.stdin.flush()
            if reload_after is not None:
                url = _metrics_url(log)
                _wait_for(url, "edge_ids_records_total", len(head))
                tmp = link.with_name(".bundle.new")
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(Path(reload_to).resolve())
                os.replace(tmp, link)
                process.send_signal(signal.SIGHUP)
                _wait_for(url, 'edge_ids_reloads_total{result="ok"}', 1,
                          failed='edge_ids_reloads_total{result="failed"}')
                rest = lines[reload_after:]
                process.stdin.write(("\n".join(rest) + "\n").encode() if rest else b"")
            process.stdin.close()
            return process.wait(timeout=1800)
        finally:
            if process.poll() is None:
                process.kill()


def _metrics_url(log: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(rb"metrics on (http://[\d.:]+/metrics)", log.read_bytes())
        if found:
            return found.group(1).decode()
        time.sleep(0.05)
    raise RuntimeError(f"the daemon did not start: {log.read_text()[-800:]}")


def _wait_for(url: str, name: str, value: float, failed: str | None = None,
              timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        found = _metric(text, name)
        if found is not None and found >= value:
            return
        if failed is not None and (_metric(text, failed) or 0) > 0:
            raise RuntimeError(f"the reload failed ({url})")
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not reach {value} in {timeout} s")


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None
