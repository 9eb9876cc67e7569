"""What reaches the operator, measured the way the network will be attacked:

    python -m edge_ids.benchmarks.detection.incidents --data-dir ../shared/datasets   (about 25 min)

Per seed: `edge-ids learn --pcap` on the first four days of the four smart-home devices as one
site (`--home-net 192.168.0.0/16`, every other option its default), then `edge-ids capture
--pcap` (the real argus | ra | daemon path) on

- the test days alone: false incidents per device per week, and each device's flagged share;
- each attack capture injected into each device at three start times (incident_scenarios.py):
  whether an incident opens for the infected device, how long after the first injected packet,
  and incidents opened for any other device that the test days alone did not have;
- all 282 IoT Sentinel set-ups joining the site: new_device lines and incidents per join.

Thresholds come from the learning period only (`learn`'s own held-out tail). Writes OUT/
results.json, results.md and timeline.png (benchmarks/results/incidents/ by default; the layout
is in results.md). Captures and runs are kept in OUT/runs/ and reused only when the data files,
the settings and the code that made them are the same (key.json in each folder; else they are
made again, saying why).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from ...train.fingerprint import PACKAGE, Stamp, code_version, files_fingerprint
from ..harness import site_scenarios as scenarios
from ..harness.site_runs import INCIDENT_RESULTS, SHIPPED, VARIANTS, edge_ids, learn
from ...train.paths import data_dir as default_data_dir

OUT = INCIDENT_RESULTS
SEEDS = (0, 1, 2)
WEEK = 7 * 86400.0
SAME_INCIDENT_SECONDS = 1800  # an episode's window (incidents.py: close after 30 min)


def capture(bundle: Path, pcap: Path, out: Path, emit: str = "both") -> list[dict]:
    """The daemon on a capture; its EVE lines (cached per capture)."""
    if not out.is_file():
        tmp = out.with_suffix(".part")
        tmp.unlink(missing_ok=True)
        done = edge_ids("capture", "--pcap", pcap, "--bundle", bundle, "--alerts", tmp,
                        "--emit", emit)
        if done.returncode != 0:
            raise RuntimeError(f"capture {pcap} failed ({done.returncode}): "
                               f"{done.stderr[-2000:]}")
        tmp.rename(out)
    return [json.loads(line) for line in out.read_text().splitlines()]


def iso_seconds(text: str) -> float:
    from datetime import datetime

    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def opened(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event_type"] == "incident"
            and e["incident"]["state"] == "open"]


def benign(events: list[dict], site: dict, known: dict) -> dict:
    """False incidents and flagged shares per device on the test days (--emit all)."""
    from ...edge_runtime.site.devices import DeviceMap, HomeNet

    weeks = (site["test_end"] - site["test_start"]) / WEEK
    device_map = DeviceMap(HomeNet(scenarios.HOME_NET), ("SrcAddr", "DstAddr"))
    device_map.seed({k: v["ip"] for k, v in known.items()})
    import numpy as np

    flows = [e for e in events if e["event_type"] in ("alert", "ml")]
    owners = device_map.attribute({"SrcAddr": np.array([e.get("src_ip", "") for e in flows]),
                                   "DstAddr": np.array([e.get("dest_ip", "") for e in flows])})
    seen, flagged = Counter(), Counter()
    for e, devices in zip(flows, owners):
        for key, _ in devices:
            seen[key] += 1
            flagged[key] += e["event_type"] == "alert"
    incidents = Counter(e["device"]["key"] for e in opened(events))
    out = {}
    for device in scenarios.devices(Path(site["data_dir"])):
        n = incidents.get(device.mac, 0)
        out[device.name] = {"incidents": n, "per_week": n / weeks,
                            "flows": seen[device.mac], "flagged": flagged[device.mac],
                            "flagged_share": flagged[device.mac] / max(seen[device.mac], 1)}
    others = {k: v for k, v in incidents.items()
              if k not in {d.mac for d in scenarios.devices(Path(site["data_dir"]))}}
    return {"devices": out, "other_devices": dict(others), "weeks": weeks}


def injected(events: list[dict], injection, baseline: list[dict], macs: dict) -> dict:
    """Did an incident open for the infected device, when, and for whom else."""
    target = macs[injection.device]
    # the test days' own incidents, which the merge may open a little earlier or later (Argus
    # reports the same flows in another order): the same device within an episode's window
    before = [(e["device"]["key"], iso_seconds(e["incident"]["opened"]))
              for e in opened(baseline)]
    same = (lambda e: any(key == e["device"]["key"] and abs(iso_seconds(
        e["incident"]["opened"]) - t) < SAME_INCIDENT_SECONDS for key, t in before))
    mine = [e for e in opened(events) if e["device"]["key"] == target
            and iso_seconds(e["incident"]["opened"]) >= injection.start - 1]
    already = [e for e in events if e["event_type"] == "incident"
               and e["device"]["key"] == target and e["incident"]["state"] != "open"
               and iso_seconds(e["incident"]["opened"]) < injection.start
               and iso_seconds(e["incident"]["last_flow"]) >= injection.start]
    extra = [e for e in opened(events) if e["device"]["key"] != target and not same(e)]
    first = mine[0] if mine else None
    return {"attack": injection.attack, "device": injection.device, "start": injection.start,
            "detected": first is not None,
            "already_open": bool(already) and first is None,
            "seconds_to_incident": None if first is None else
            iso_seconds(first["incident"]["opened"]) - injection.start,
            "why": None if first is None else first["incident"]["why"],
            "incidents_for_other_devices": len(extra),
            "other_devices": sorted({e["device"]["key"] for e in extra})}


def joined(events: list[dict], table: list[dict]) -> dict:
    new = Counter(e["device"]["key"] for e in events if e["event_type"] == "new_device")
    incidents = Counter(e["device"]["key"] for e in opened(events))
    macs = {row["mac"] for row in table}
    lines = [new.get(row["mac"], 0) for row in table]
    per_join = [incidents.get(row["mac"], 0) for row in table]
    return {"joins": len(table), "new_device_lines": Counter(lines).most_common(),
            "exactly_one_line": sum(n == 1 for n in lines),
            "incidents_per_join": Counter(per_join).most_common(),
            "joins_with_an_incident": sum(n > 0 for n in per_join),
            "most_incidents_for_one_join": max(per_join, default=0),
            "other_new_devices": sorted(k for k in new if k not in macs)}


def captures_version(data_dir: Path) -> dict:
    """What the made captures depend on: the data files and the code that makes them (the
    cache of captures is made again when either changed)."""
    made_by = Path(scenarios.__file__).resolve().relative_to(PACKAGE)
    return {"data": files_fingerprint(scenarios.sources(data_dir)),
            "code": code_version((), (str(made_by),))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    args = parser.parse_args(argv)
    missing = scenarios.missing_tools()
    if missing:
        parser.error(missing)
    data_dir, work = args.data_dir.resolve(), args.out / "runs"
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.monotonic()
    echo = (lambda text: print(text, flush=True))
    echo("[1/3] Captures: the site, infections, joins (tcprewrite, editcap, mergecap)")
    captures_key = captures_version(data_dir)
    Stamp(work / "captures", captures_key).ensure(echo)  # made again if either changed
    site = scenarios.site(data_dir, work / "captures") | {"data_dir": str(data_dir)}
    infections = scenarios.infections(data_dir, work / "captures", site)
    joins_pcap, join_table = scenarios.joins(data_dir, work / "captures", site)
    macs = {d.name: d.mac for d in scenarios.devices(data_dir)}
    results = {"seeds": {}, "site": {k: (str(v) if isinstance(v, Path) else v)
                                     for k, v in site.items()},
               "devices": {d.name: {"ip": d.ip, "mac": d.mac}
                           for d in scenarios.devices(data_dir)},
               "injections": [{"attack": i.attack, "device": i.device, "start": i.start}
                              for i in infections], "joins": join_table}
    for seed in seeds:
        echo(f"[2/3] Seed {seed}: learn, then {2 + len(infections)} captures through the daemon")
        run = work / f"seed-{seed}"
        Stamp(run, {"seed": seed, "code": code_version(), "captures": captures_key,
                    "variants": VARIANTS}).ensure(echo)
        report = learn(site, run / "learned", seed, echo)
        bundle = run / "learned" / "bundle"
        baseline = capture(bundle, site["test"], run / "benign.json", emit="all")
        per_seed = {"learn": {"incidents": report["incidents"],
                              "devices": {k: {x: v[x] for x in ("flows", "validation_flows",
                                                                "threshold", "ip")}
                                          for k, v in report["devices"]["known"].items()},
                              "operating_point": report["operating_point"]},
                    "benign": benign(baseline, site, report["devices"]["known"]),
                    "benign_incidents": [e["incident"] | {"device": e["device"]["key"]}
                                         for e in opened(baseline)]}
        per_seed["injections"] = []
        for injection in infections:
            name = injection.pcap.stem
            events = capture(bundle, injection.pcap, run / f"{name}.json")
            per_seed["injections"].append(injected(events, injection, baseline, macs))
        per_seed["joins"] = joined(capture(bundle, joins_pcap, run / "joins.json"), join_table)
        echo(f"      {summary_line(per_seed)}")
        per_seed["variants"] = {SHIPPED: variant_summary(per_seed)}
        for variant, parts in list(VARIANTS.items())[1:]:
            echo(f"      variant: {variant}")
            folder = run / "-".join(parts or ("site",))
            report = learn(site, folder / "learned", seed, echo, parts)
            other = folder / "learned" / "bundle"
            base = capture(other, site["test"], folder / "benign.json", emit="all")
            outcome = {"benign": benign(base, site, report["devices"]["known"]),
                       "injections": [injected(capture(other, i.pcap, folder /
                                                       f"{i.pcap.stem}.json"), i, base, macs)
                                      for i in infections],
                       "threshold_bits": report["incidents"]["threshold_bits"]}
            per_seed["variants"][variant] = variant_summary(outcome)
        results["seeds"][str(seed)] = per_seed
    echo("[3/3] Report")
    from .incident_report import write_report
    results["seconds"] = round(time.monotonic() - started)
    write_report(results, args.out, work)
    echo(f"wrote {args.out}/results.json, results.md, timeline.png "
         f"({results['seconds']} s)")
    return 0


def variant_summary(outcome: dict) -> dict:
    devices = outcome["benign"]["devices"]
    times = [i["seconds_to_incident"] for i in outcome["injections"] if i["detected"]]
    return {"false_incidents": {k: v["incidents"] for k, v in devices.items()},
            "per_week": {k: v["per_week"] for k, v in devices.items()},
            "flagged_share": {k: v["flagged_share"] for k, v in devices.items()},
            "detected": sum(i["detected"] for i in outcome["injections"]),
            "injections": len(outcome["injections"]), "seconds": sorted(times),
            "threshold_bits": outcome.get("threshold_bits",
                                          outcome.get("learn", {}).get("incidents", {})
                                          .get("threshold_bits"))}


def summary_line(per_seed: dict) -> str:
    b = per_seed["benign"]["devices"]
    inj = per_seed["injections"]
    times = sorted(i["seconds_to_incident"] for i in inj if i["detected"])
    median = round(times[len(times) // 2]) if times else None
    per_device = ", ".join(f"{k}: {v['incidents']}" for k, v in b.items())
    return (f"benign incidents {sum(d['incidents'] for d in b.values())} ({per_device}); "
            f"injections detected {sum(i['detected'] for i in inj)}/{len(inj)}, median "
            f"{median} s; joins: {per_seed['joins']['exactly_one_line']}/"
            f"{per_seed['joins']['joins']} one new_device line")


if __name__ == "__main__":
    sys.exit(main())
