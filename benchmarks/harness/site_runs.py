"""What the site benchmarks share (incidents.py, incident_load.py, operator_load.py, living.py
and the tests that replay the site): running edge-ids, learning a site's bundle as a user
would, the site's flows as the daemon reads them, and the Poisson bound on rare events.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from . import site_scenarios as scenarios
from ...train.paths import RESULTS, data_dir

INCIDENT_RESULTS = RESULTS / "incidents"
HOME_NET_OPTIONS = ("--home-net", "10.0.0.0/8", "--home-net", "192.168.0.0/16")


def edge_ids(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_ids", *map(str, args)],
                          capture_output=True, text=True)


# What a device's own normal is made of, and the variants that leave parts out (the same
# learning, calibrated the same way) to measure what each part brings.
VARIANTS = {"shipped: own thresholds and services": ("thresholds", "services"),
            "own thresholds, no services": ("thresholds",),
            "site-wide threshold, no services": ()}
SHIPPED = next(iter(VARIANTS))


def learn(site: dict, out: Path, seed: int, echo, parts=VARIANTS[SHIPPED]) -> dict:
    if not (out / "learn.json").is_file() and parts != VARIANTS[SHIPPED]:
        code = ("import sys; from pathlib import Path; from edge_ids.learn import LearnOptions, "
                "run_learn; run_learn(LearnOptions(out=Path(sys.argv[1]), pcaps=(sys.argv[2],),"
                " seed=int(sys.argv[3]), home_net=tuple(sys.argv[4].split(',')), "
                "device_parts=tuple(filter(None, sys.argv[5].split(',')))))")
        done = subprocess.run([sys.executable, "-c", code, out, site["learn"], str(seed),
                               ",".join(scenarios.HOME_NET), ",".join(parts)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"learn failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    if not (out / "learn.json").is_file():
        done = edge_ids("learn", "--pcap", site["learn"], "--out", out, "--seed", seed,
                        *[a for net in scenarios.HOME_NET for a in ("--home-net", net)])
        if done.returncode != 0:
            raise RuntimeError(f"learn failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        echo("  " + done.stdout.strip().splitlines()[-1])
    return json.loads((out / "learn.json").read_text())


def flow_lines(bundle: Path, pcap: Path, work: Path) -> tuple[list[str], list[str]]:
    """(the layout's column names, the capture's flows as CSV lines in that layout): recorded
    by `capture --record` (every Argus column, named in its header), then matched by name to
    the bundle's layout as `learn` does."""
    from ...edge_runtime.model.bundle import load_bundle
    from ...edge_runtime.ingest.records import RawSchema
    from ...flows import to_layout

    recorded = work / "flows.csv"
    done = edge_ids("capture", "--pcap", pcap, "--record", recorded)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-1000:])
    schema = RawSchema.from_spec(load_bundle(bundle).raw)
    lines, _ = to_layout(recorded.read_bytes().splitlines(), schema, recorded)
    return list(schema.names), [line.decode() for line in lines]


def repeated(lines: list[str], n: int, path: Path, names: list[str],
             devices: int | None = None) -> Path:
    """n records cycling through `lines`; with `devices`, record i comes from simulated device
    i % devices (its own MAC and IP inside 10.0.0.0/8)."""
    src, mac = names.index("SrcAddr"), names.index("SrcMac")
    with open(path, "w") as f:
        for i in range(n):
            line = lines[i % len(lines)]
            if devices:
                fields = line.split(",")
                j = i % devices
                fields[src] = f"10.{j >> 16 & 255}.{j >> 8 & 255}.{j & 255}"
                fields[mac] = f"02:00:00:{j >> 16 & 255:02x}:{j >> 8 & 255:02x}:{j & 255:02x}"
                line = ",".join(fields)
            f.write(line + "\n")
    return path


def seed_bundle(bundle: Path | None) -> Path:
    """The bundle given, or the incidents benchmark's seed-0 bundle (learned here if absent)."""
    bundle = bundle or INCIDENT_RESULTS / "runs" / "seed-0" / "learned" / "bundle"
    if not (bundle / "manifest.json").is_file():
        site = scenarios.site(data_dir(), INCIDENT_RESULTS / "runs" / "captures")
        learn(site, bundle.parent, 0, print)
    return bundle


def write_named_results(out: Path, name: str, result: dict, text: str) -> None:
    """OUT/NAME.json and NAME.md, and the table on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{name}.md").write_text(text)
    print(text)


def poisson_upper(count: int, exposure: float, confidence: float = 0.9) -> float:
    from scipy.stats import chi2

    return chi2.ppf(confidence, 2 * count + 2) / 2 / exposure if exposure > 0 else math.inf
