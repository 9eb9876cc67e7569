"""The part of `edge-ids bench` that runs where the model runs (this machine, or the device over
SSH with the installed runtime's python):

    python -m edge_ids.benchmarks.bench.device WORK

WORK/plan.json says what to measure (written by benchmarks/bench.py with the models, the
feature spec and the records beside it). Each runtime is measured in its own process
(benchmarks/measure.py): start-up to a loaded model, and its peak RSS from the kernel's
accounting of that process. Then the real daemon (`edge-ids run`) classifies the records: its
start-up to READY=1, records/s and peak RSS (benchmarks/daemon.py). Progress goes to stderr, the
figures to WORK/device.json. numpy and the standard library only.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from ..harness.process import throughput as daemon_throughput
from .runtimes import RUNTIMES


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_worker(work: Path, runtime: str, plan: dict, extra: list[str] = ()) -> dict:
    """Start benchmarks.measure for one runtime; its figures plus start-up and peak RSS."""
    command = [sys.executable, "-m", "edge_ids.benchmarks.bench.measure", runtime, str(work),
               "--latency-records", str(plan["latency_records"]),
               "--batches", ",".join(map(str, plan["batches"])),
               "--threads", ",".join(map(str, plan["threads"])),
               "--seconds", str(plan["seconds"]), *extra]
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1",
                        "OPENBLAS_NUM_THREADS": "1"}
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = process.stdout.readline()
    ready = time.perf_counter()
    rest = process.stdout.read()
    stderr = process.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    if first.strip() != b"ready" or status != 0:
        raise RuntimeError(f"measuring {runtime} failed (exit status {status}):\n"
                           f"{stderr.strip()[-2000:]}")
    result = json.loads(rest.decode().strip().splitlines()[-1])
    result["startup_seconds"] = ready - started
    result["peak_rss_bytes"] = usage.ru_maxrss * 1024
    return result


def virtualization() -> dict:
    """Whether this is a virtual or emulated machine: its timings are then not the hardware's.

    systemd-detect-virt knows the hypervisors; a qemu `virt` board without it still names
    itself in the device tree (linux,dummy-virt).
    """
    kind = "none"
    try:
        found = subprocess.run(["systemd-detect-virt", "--vm"], capture_output=True,
                               text=True, timeout=10)
        kind = found.stdout.strip() or "none"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        board = Path("/proc/device-tree/compatible").read_bytes()
    except OSError:
        board = b""
    qemu_virt = b"linux,dummy-virt" in board
    if kind == "none" and qemu_virt:
        kind = "qemu"
    return {"kind": kind, "virtual": kind != "none", "emulated": kind == "qemu",
            "qemu_virt_machine": qemu_virt}


def machine() -> dict:
    """What this is measured on: enough to tell a Pi 4 from a laptop in the report."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                cpu = value.strip()
    except OSError:
        pass
    versions = {}
    for dist in ("edge-ids", "numpy", "ai-edge-litert", "onnxruntime", "tensorflow-cpu", "keras"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {"hostname": platform.node(), "architecture": platform.machine(), "cpu": cpu,
            "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "kernel": platform.release(), "versions": versions,
            "virtualization": virtualization()}


def run(work: Path) -> dict:
    plan = json.loads((work / "plan.json").read_text())
    here = machine()  # thread counts above the cores this process may use are dropped
    plan["threads"] = [t for t in plan["threads"] if t <= here["cores"]] or [1]
    detectors = plan.get("detectors", {})  # a hybrid bundle: it and its classifier alone
    steps = len(plan["runtimes"]) + len(plan["compare"]) + len(detectors) + 1
    out = {"machine": here, "plan": plan, "runtimes": {}, "compare": {}, "detectors": {}}
    for i, name in enumerate(plan["runtimes"], 1):
        missing = RUNTIMES[name].missing(work)
        if missing:
            progress(f"[{i}/{steps}] {name}: skipped, {missing}")
            out["runtimes"][name] = {"available": False, "reason": missing}
            continue
        progress(f"[{i}/{steps}] {name} ...")
        started = time.monotonic()
        out["runtimes"][name] = {"available": True} | run_worker(work, name, plan)
        progress(f"[{i}/{steps}] {name} done in {time.monotonic() - started:.1f} s")
    for j, folder in enumerate(plan["compare"], len(plan["runtimes"]) + 1):
        progress(f"[{j}/{steps}] litert-int8 on {folder} ...")
        started = time.monotonic()
        out["compare"][folder] = run_worker(
            work, "litert-int8", plan | {"batches": [1, 256], "threads": [1]},
            ["--model", str(work / folder / "model.tflite"),
             "--spec", str(work / folder / "features.json")])
        progress(f"[{j}/{steps}] litert-int8 on {folder} done in "
                 f"{time.monotonic() - started:.1f} s")
    for k, (name, folder) in enumerate(detectors.items(), len(plan["runtimes"])
                                       + len(plan["compare"]) + 1):
        progress(f"[{k}/{steps}] the edge runtime with the {name} ({folder}) ...")
        started = time.monotonic()
        out["detectors"][name] = run_worker(work, "detector", plan | {"threads": [1]},
                                            ["--model", str(work / folder)])
        progress(f"[{k}/{steps}] the edge runtime with the {name} done in "
                 f"{time.monotonic() - started:.1f} s")
    progress(f"[{steps}/{steps}] the daemon (edge-ids run) over the records ...")
    started = time.monotonic()
    cpu = sorted(os.sched_getaffinity(0))[-1]
    n = sum(1 for _ in open(work / "records.csv", "rb"))
    out["daemon"] = daemon_throughput(work / "bundle", work / "records.csv", n, cpu, work)
    if "classifier" in detectors:  # the same daemon with the hybrid's classifier alone
        out["daemon_classifier"] = daemon_throughput(work / detectors["classifier"],
                                                     work / "records.csv", n, cpu, work)
    progress(f"[{steps}/{steps}] the daemon done in {time.monotonic() - started:.1f} s")
    (work / "device.json").write_text(json.dumps(out) + "\n")
    progress("figures written")
    return out


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        raise SystemExit(__doc__)
    run(Path(argv[0]))


if __name__ == "__main__":
    main()
