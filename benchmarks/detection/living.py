"""A normal that lives with the network, measured the way a network changes:

    python -m edge_ids.benchmarks.detection.living --data-dir ../shared/datasets   (slow set)

Per seed and per smart-home device in turn as the device that joins: `edge-ids learn` on the
other three's first four days (--home-net 192.168.0.0/16, every other option its default), and
on all four's (the bundle re-learned with another device included, that a reload switches to).
The joining device's seven days follow the learning period (it joins at its end); the others
replay their days 5-7; all 282 IoT Sentinel set-ups join over those days. Through the real
daemon (living_replay.py), each replay with a restart (state kept) after 2 days and a reload to
the re-learned bundle after 4.25 (the joining device's days 1-4 are what that bundle learned of
it: after the reload it replays days it never saw):

- benign: joins' incidents in their first day and after it, per device-week; restart and reload
  checks (no device announced twice, every run exits 0, events before the reload identical to
  a replay without restart or reload);
- Mirai C&C and Muhstik injected into the joining device and into the first set-up to join at
  1.5, 3 and 5.5 days after they joined (the joiner's stage then: on probation, learned on the
  device, or known after the reload), and into the joining device from its first flow
  (infected on joining: reported within 5 minutes, and never graduating while the bot runs);
- a bot that starts slowly (one flow a minute, rising to its full rate over a day) 4.5 days
  after joining, in the device learned on the device and in the same device learned on the host;
- a joining device's set-up grace chosen with one bot left out and checked on it
  (living_study).

Thresholds come from the learning period and the devices' own earlier flows only. Writes OUT/
results.json, results.md and timeline.png (benchmarks/results/living/); learned bundles and
replays are kept in OUT/runs/ and reused only when the data, settings and code are the same.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ...train.fingerprint import PACKAGE, Stamp, code_version, files_fingerprint
from ...train.paths import RESULTS, data_dir as default_data_dir
from ..harness import site_scenarios as scenarios
from . import living_scenarios as pieces_of
from . import living_study as study
from .living_replay import replay

OUT = RESULTS / "living"
SEEDS = (0, 1, 2)
DAY = study.DAY
RESTART_DAYS, RELOAD_DAYS = 2.0, 4.25  # after the learning cut
INJECT_DAYS = (1.5, 3.0, 5.5)  # after joining
SLOW_DAYS = 4.5
HOME_NET = pieces_of.HOME_NET
WORKERS = 2  # replays at once (each daemon is one thread)


def learn(flows: Path, out: Path, seed: int, echo) -> Path:
    if not (out / "bundle" / "manifest.json").is_file():
        done = subprocess.run([sys.executable, "-m", "edge_ids", "learn", "--flows", str(flows),
                               "--out", str(out), "--seed", str(seed),
                               *[a for net in HOME_NET for a in ("--home-net", net)]],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"learn failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")
        echo(f"      learned {out.name}: " + done.stdout.strip().splitlines()[-1][:120])
    return out / "bundle"


def plan(seed_dir: Path, site: dict, joiner, bundles: dict) -> list[dict]:
    """The replays of one seed and joining device: name, lines, bundle, restart, reload."""
    cut, pieces, joins = site["cut"], site["pieces"], site["joins"]
    known = [pieces[d.name].where(lambda s, e: s >= cut) for d in site["devices"]
             if d.name != joiner.name]
    mine = pieces[joiner.name].shifted(cut - pieces[joiner.name].first())
    base = known + [mine, joins]
    loo, full = bundles[joiner.name], bundles["all"]
    setup = site["table"][0]
    out = []

    def add(name, extra, bundle=loo, reload=True, **meta):
        lines = pieces_of.merged(base + extra)
        times = [float(line.split(",")[mine.end]) for line in lines]
        at = (lambda days: next((i for i, t in enumerate(times) if t >= cut + days * DAY),
                                len(lines)))
        out.append({"name": name, "folder": seed_dir / joiner.name / name, "lines": lines,
                    "bundle": bundle, "restart": at(RESTART_DAYS),
                    "reload": at(RELOAD_DAYS) if reload else None,
                    "reload_to": full if reload else None, "meta": meta,
                    "reload_time": cut + RELOAD_DAYS * DAY if reload else None})

    per_day = {}
    for t in mine.times():
        day = int((t - cut) // DAY)
        per_day[day] = per_day.get(day, 0) + 1
    add("benign", [], flows_per_day=per_day)
    add("control", [], reload=False, control=True)
    out[-1]["restart"] = None
    for k, days in enumerate(INJECT_DAYS):
        for first, second in (("mirai", "muhstik"), ("muhstik", "mirai")):
            injections = []
            extra = []
            for attack, target, joined in ((first, joiner.mac, cut),
                                           (second, setup["mac"], setup["start"])):
                piece, peers = site["attacks"][(attack, target)]
                start = cut + days * DAY
                extra.append(piece.shifted(start - piece.first()))
                injections.append({"attack": attack, "target": target, "start": start,
                                   "end": start + piece.last() - piece.first(), "peers": peers,
                                   "joined": joined, "days": days,
                                   "device": joiner.name if target == joiner.mac else
                                   f"set-up {setup['capture']}"})
            add(f"inject-{first}-{k}", extra, injections=injections)
    for attack in ("mirai", "muhstik"):  # infected on joining: from its very first flow
        piece, peers = site["attacks"][(attack, joiner.mac)]
        shifted = piece.shifted(cut - piece.first())
        add(f"infected-{attack}", [shifted], infected={
            "attack": attack, "target": joiner.mac, "start": cut, "peers": peers,
            "end": cut + piece.last() - piece.first()})
    for attack in ("mirai", "muhstik"):  # slow start, learned on the device or on the host
        piece, peers = site["attacks"][(attack, joiner.mac)]
        rate = len(piece.lines) / max(1.0, (piece.last() - piece.first()) / 60)
        slow = piece.slow(rate)
        start = cut + SLOW_DAYS * DAY
        shifted = slow.shifted(start - slow.first())
        for where, bundle in (("device", loo), ("host", full)):
            add(f"slow-{attack}-{where}", [shifted], bundle=bundle, reload=False, slow={
                "attack": attack, "target": joiner.mac, "start": start, "peers": peers,
                "end": start + slow.last() - slow.first(), "learned_on": where,
                "full_per_minute": round(rate, 2)})
    return out


def site_of(data_dir: Path, work: Path, echo) -> dict:
    flows = pieces_of.Flows(data_dir, work / "flows")
    devices = scenarios.devices(data_dir)
    echo("[1/4] Flows: each device's days, the set-ups joining, each attack in each device "
         "(argus, once)")
    pieces = {d.name: flows.device(d) for d in devices}
    first = min(p.first() for p in pieces.values())
    cut = first + pieces_of.LEARN_DAYS * DAY
    end = max(p.last() for p in pieces.values())
    joins, table = flows.joins(cut, end)
    attacks = {}
    for attack in scenarios.ATTACKS:
        for ip, mac in [(d.ip, d.mac) for d in devices] + [(table[0]["ip"], table[0]["mac"])]:
            attacks[(attack, mac)] = flows.attack(attack, ip, mac)
    return {"flows": flows, "devices": devices, "pieces": pieces, "cut": cut, "end": end,
            "joins": joins, "table": table, "attacks": attacks,
            "header": ",".join(flows.schema.names)}


def run_seed(seed: int, site: dict, work: Path, echo) -> dict:
    seed_dir = work / f"seed-{seed}"
    Stamp(seed_dir, {"seed": seed, "code": code_version(), "data": site["fingerprint"],
                     "scenarios": code_version((), tuple(_own_files()))}).ensure(echo)
    names = [d.name for d in site["devices"]]
    bundles = {"all": learn(pieces_of.learning_flows(
        site["pieces"], names, site["cut"], site["header"], seed_dir / "learn-all.csv"),
        seed_dir / "all", seed, echo)}
    for joiner in site["devices"]:
        others = [n for n in names if n != joiner.name]
        bundles[joiner.name] = learn(pieces_of.learning_flows(
            site["pieces"], others, site["cut"], site["header"],
            seed_dir / f"learn-no-{joiner.name}.csv"), seed_dir / f"no-{joiner.name}", seed,
            echo)
    runs = [r | {"joiner": j} for j in site["devices"] for r in plan(seed_dir, site, j, bundles)]
    echo(f"      seed {seed}: {len(runs)} replays through the daemon ({WORKERS} at a time)")

    def one(r):
        cached = r["folder"] / "result.json"
        if cached.is_file():
            return json.loads(cached.read_text())
        result = replay(r["folder"], r["lines"], r["bundle"], HOME_NET, r["restart"],
                        r["reload"], r["reload_to"])
        (r["folder"] / "result.json").write_text(json.dumps(result))
        return result

    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(one, runs))
    study_times = grace_study(site, bundles, echo)
    return measure(site, runs, results) | {"grace_study": study_times}


def grace_study(site: dict, bundles: dict, echo) -> dict:
    """Per joining device and bot (infected on joining) and per grace: seconds to report it;
    and the share of benign joins (the set-ups and the joiner) with a first-day incident."""
    times = {attack: {g: [] for g in study.GRACES} for attack in scenarios.ATTACKS}
    benign = {g: [0, 0] for g in study.GRACES}
    cut = site["cut"]
    for joiner in site["devices"]:
        mine = site["pieces"][joiner.name].shifted(cut - site["pieces"][joiner.name].first())
        day = mine.where(lambda s, e: e < cut + DAY)
        benign_lines = pieces_of.merged([day, site["joins"].where(lambda s, e: e < cut + DAY)])
        for grace in study.GRACES:
            events = study.in_process(bundles[joiner.name], benign_lines, HOME_NET, grace)
            joined = {joiner.mac: cut} | {row["mac"]: row["start"] for row in site["table"]
                                          if row["start"] < cut + DAY / 2}
            found = study.joins(events, joined, {k: cut + DAY for k in joined})
            benign[grace][0] += sum(1 for v in found.values() if v["first_day"])
            benign[grace][1] += len(found)
            for attack in scenarios.ATTACKS:
                piece, peers = site["attacks"][(attack, joiner.mac)]
                bot = piece.shifted(cut - piece.first()).where(lambda s, e: e < cut + 3600)
                lines = pieces_of.merged([mine.where(lambda s, e: e < cut + 3600), bot])
                got = study.injection(study.in_process(bundles[joiner.name], lines, HOME_NET,
                                                       grace), joiner.mac, cut, cut + 3600,
                                      peers)
                times[attack][grace].append(got["seconds"])
    return {"times": times, "benign_first_day": {b: v[0] / max(v[1], 1)
                                                 for b, v in benign.items()}}


def measure(site: dict, runs: list[dict], results: list[dict]) -> dict:
    out = {"injections": [], "infected": [], "slow": [], "joins": {}, "checks": [],
           "timelines": {}}
    by_name = {(r["joiner"].name, r["name"]): res for r, res in zip(runs, results)}
    cut = site["cut"]
    for r, res in zip(runs, results):
        events, joiner = res["events"], r["joiner"]
        named = {}
        for e in events:
            if e["event_type"] == "new_device":
                named[e["device"]["key"]] = named.get(e["device"]["key"], 0) + 1
        check = {"joiner": joiner.name, "replay": r["name"], "codes": res["codes"],
                 "announced_twice": sorted(k for k, n in named.items() if n > 1),
                 "ids_keep_counting": study.ids_keep_counting(events)}
        if r["name"] == "benign":
            control = by_name[(joiner.name, "control")]["events"]
            check["identical_before_reload"] = study.identical_before(events, control,
                                                                      r["reload_time"])
            joined = {joiner.mac: cut} | {row["mac"]: row["start"] for row in site["table"]}
            ends = {joiner.mac: cut + 7 * DAY} | {row["mac"]: site["end"]
                                                  for row in site["table"]}
            out["joins"][joiner.name] = study.joins(events, joined, ends)
            out["timelines"][joiner.name] = timeline(res, joiner, cut, r)
        out["checks"].append(check)
        for injection in r["meta"].get("injections", []):
            got = study.injection(events, injection["target"], injection["start"],
                                  injection["end"], injection["peers"])
            stage = study.stage_at(events, injection["target"], injection["start"])
            if injection["target"] == joiner.mac and r["reload_time"] and \
                    injection["start"] >= r["reload_time"]:
                stage = "known (after the reload)"
            out["injections"].append({k: v for k, v in injection.items() if k != "peers"}
                                     | got | {"stage": stage, "joiner": joiner.name})
        for kind in ("infected", "slow"):
            if kind in r["meta"]:
                m = r["meta"][kind]
                got = study.injection(events, m["target"], m["start"], m["end"], m["peers"])
                extra = {"graduated_while_bot_ran": study.graduated_before(
                    events, m["target"], m["end"])} if kind == "infected" else \
                    {"stage": study.stage_at(events, m["target"], m["start"])}
                out[kind].append({k: v for k, v in m.items() if k != "peers"} | got | extra
                                 | {"joiner": joiner.name})
    return out


def timeline(result: dict, joiner, cut: float, run: dict) -> dict:
    """The joining device's flagged flows per day, its normal's changes and its incidents."""
    ip = next((e["device"]["ip"] for e in result["events"] if e["device"]["key"] == joiner.mac
               and e["device"]["ip"]), joiner.ip)
    flagged = {}
    for src, dst, when in result["flagged"]:
        if ip in (src, dst):
            day = int((study.seconds(when) - cut) // DAY)
            flagged[day] = flagged.get(day, 0) + 1
    mine = [e for e in result["events"] if e["device"]["key"] == joiner.mac]
    return {"flagged_per_day": flagged, "flows_per_day": run["meta"].get("flows_per_day", {}),
            "changes": [[study.seconds(e["timestamp"]) - cut, e["device_normal"]["change"]]
                        for e in mine if e["event_type"] == "device_normal"],
            "incidents": [study.seconds(e["incident"]["opened"]) - cut
                          for e in study.opened(mine)],
            "restart": RESTART_DAYS * DAY, "reload": RELOAD_DAYS * DAY}


def _own_files() -> list[str]:
    here = Path(__file__).resolve().parent
    return [str((here / f).resolve().relative_to(PACKAGE)) for f in
            ("living_scenarios.py", "living_replay.py", "../harness/site_scenarios.py")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    args = parser.parse_args(argv)
    missing = scenarios.missing_tools()
    if missing:
        parser.error(missing)
    echo = (lambda text: print(text, flush=True))
    started = time.monotonic()
    data_dir, work = args.data_dir.resolve(), args.out / "runs"
    fingerprint = files_fingerprint(pieces_of.sources(data_dir))
    Stamp(work / "flows", {"data": fingerprint, "code": code_version((), tuple(
        _own_files()))}).ensure(echo)
    site = site_of(data_dir, work, echo) | {"fingerprint": fingerprint}
    results = {"seeds": {}, "cut": site["cut"], "end": site["end"],
               "devices": {d.name: d.mac for d in site["devices"]},
               "joins": len(site["table"]), "settings": {
                   "restart_days": RESTART_DAYS, "reload_days": RELOAD_DAYS,
                   "inject_days": INJECT_DAYS, "slow_days": SLOW_DAYS}}
    for seed in [int(s) for s in args.seeds.split(",")]:
        echo(f"[2/4] Seed {seed}: learn (each device left out, and all four), replays")
        results["seeds"][str(seed)] = run_seed(seed, site, work, echo)
    echo("[3/4] Burst study and figures")
    from .living_report import write_report

    results["seconds"] = round(time.monotonic() - started)
    write_report(results, args.out)
    echo(f"[4/4] wrote {args.out}/results.json, results.md, timeline.png "
         f"({results['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
