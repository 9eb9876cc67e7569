"""results.json, results.md and timeline.png of the living-normal benchmark (living.py).

results.json: {"seeds": {SEED: {"injections": [...], "infected": [...], "slow": [...],
"joins": {JOINER: {KEY: {"first_day", "after", "weeks_after", "named", "learned"}}},
"checks": [...], "timelines": {...}, "grace_study": {...}}}, "summary": {...}, ...}.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..harness.site_runs import poisson_upper
from .living_study import BAR_SECONDS


def summary(results: dict) -> dict:
    seeds = results["seeds"]
    injections = [i for s in seeds.values() for i in s["injections"]]
    detected = [i for i in injections if i["detected"]]
    times = sorted(i["seconds"] for i in detected)
    infected = [i for s in seeds.values() for i in s["infected"]]
    joiners = {}  # the smart-home devices that joined: false incidents after their first day
    setups = {"first_day": 0, "joins": 0, "after": 0, "weeks": 0.0}
    first_day = {}
    for seed, s in seeds.items():
        hits = joins = 0
        for joiner, table in s["joins"].items():
            mac = results["devices"][joiner]
            for key, row in table.items():
                joins += 1
                hits += row["first_day"] > 0
                if key == mac:
                    entry = joiners.setdefault(joiner, {"after": [], "weeks": row["weeks_after"],
                                                        "first_day": []})
                    entry["after"].append(row["after"])
                    entry["first_day"].append(row["first_day"])
                else:
                    setups["first_day"] += row["first_day"] > 0
                    setups["joins"] += 1
                    setups["after"] += row["after"]
                    setups["weeks"] += row["weeks_after"]
        first_day[seed] = hits / max(joins, 1)
    after = sum(sum(v["after"]) for v in joiners.values())
    weeks = sum(v["weeks"] * len(v["after"]) for v in joiners.values())
    distinct_weeks = sum(v["weeks"] for v in joiners.values())  # seeds replay the same days
    per_seed_max = max((max(v["after"]) / v["weeks"] for v in joiners.values() if v["weeks"]),
                       default=0.0)
    checks = [c for s in seeds.values() for c in s["checks"]]
    slow = [i for s in seeds.values() for i in s["slow"]]
    return {
        "injections": len(injections), "detected": len(detected),
        "detected_share": len(detected) / max(len(injections), 1),
        "median_seconds": statistics.median(times) if times else None,
        "latest_seconds": max(times) if times else None,
        "infected": len(infected),
        "infected_in_time": sum(1 for i in infected if i["detected"] and
                                i["seconds"] <= BAR_SECONDS),
        "infected_graduated": sum(1 for i in infected if i["graduated_while_bot_ran"]),
        "joiner_false_after_first_day": after, "joiner_device_weeks": weeks,
        "joiner_rate": after / weeks if weeks else None,
        "joiner_rate_bound_distinct": poisson_upper(
            round(after / max(len(seeds), 1)), distinct_weeks),
        "joiner_worst_device_seed": per_seed_max,
        "setups": setups,
        "first_day_share": {seed: round(v, 4) for seed, v in first_day.items()},
        "first_day_share_worst": max(first_day.values(), default=None),
        "runs": len(checks), "runs_failed": sum(1 for c in checks if any(c["codes"])),
        "announced_twice": sum(len(c["announced_twice"]) for c in checks),
        "ids_reused": sum(1 for c in checks if not c.get("ids_keep_counting", True)),
        "identical_before_reload": [c["identical_before_reload"] for c in checks
                                    if "identical_before_reload" in c],
        "slow": _slow(slow)}


def _slow(slow: list[dict]) -> dict:
    out = {}
    for i in slow:
        out.setdefault(f"{i['attack']}, learned on the {i['learned_on']}", []).append(
            None if i["seconds"] is None else round(i["seconds"]))
    return out


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def markdown(results: dict) -> str:
    s = results["summary"]
    seeds = ", ".join(results["seeds"])
    med, last = s["median_seconds"], s["latest_seconds"]
    lines = [
        "# A normal that lives with the network", "",
        f"`python -m edge_ids.benchmarks.detection.living` ({results['seconds'] // 60} min, "
        f"seeds {seeds}). Each smart-home device in turn joins a site learned on the other "
        f"three's first four days; {results['joins']} IoT Sentinel set-ups join too; every "
        f"replay goes through the real daemon with a restart after "
        f"{results['settings']['restart_days']:g} days and a reload to a bundle re-learned "
        f"with all four devices after {results['settings']['reload_days']:g} (benchmarks/"
        f"detection/living.py says how).", "",
        "## Acceptance", "", "| figure | result | target | |", "|---|---|---|---|",
        f"| bots injected a day or more after joining that open an incident for that device "
        f"(in the injection's time, naming its peer) | {s['detected']}/{s['injections']} "
        f"({100 * s['detected_share']:.1f} %) | ≥ 95 % | {verdict(s['detected_share'] >= .95)} |",
        f"| median / latest time from the first injected packet | "
        f"{'-' if med is None else round(med)} s / {'-' if last is None else round(last)} s | "
        f"≤ 120 s / ≤ 300 s | {verdict(med is not None and med <= 120 and last <= 300)} |",
        f"| infected on joining: reported within 5 minutes | {s['infected_in_time']}/"
        f"{s['infected']} | all | {verdict(s['infected_in_time'] == s['infected'])} |",
        f"| infected on joining: graduated while the bot ran | {s['infected_graduated']} | 0 "
        f"| {verdict(s['infected_graduated'] == 0)} |",
        f"| benign joined devices (smart-home): false incidents per device-week after their "
        f"first day, pooled | {s['joiner_false_after_first_day']} in "
        f"{s['joiner_device_weeks']:.2f} device-weeks = "
        f"{_rate(s['joiner_rate'])}; 90 % bound on the distinct traffic "
        f"{s['joiner_rate_bound_distinct']:.2f} | ≤ 1 | "
        f"{verdict(s['joiner_rate'] is not None and s['joiner_rate'] <= 1)} (bound: "
        f"{verdict(s['joiner_rate_bound_distinct'] <= 1)}) |",
        f"| joins with an incident on their first day (worst seed) | "
        f"{100 * s['first_day_share_worst']:.1f} % | ≤ 25 % | "
        f"{verdict(s['first_day_share_worst'] <= .25)} |",
        f"| replays that stopped the daemon / devices announced twice / incident ids used "
        f"twice | {s['runs_failed']} of {s['runs']} / {s['announced_twice']} / "
        f"{s['ids_reused']} | 0 / 0 / 0 | "
        f"{verdict(not s['runs_failed'] and not s['announced_twice'] and not s['ids_reused'])} |",
        f"| events before the reload identical to a replay without restart or reload | "
        f"{sum(s['identical_before_reload'])}/{len(s['identical_before_reload'])} | all | "
        f"{verdict(all(s['identical_before_reload']))} |", ""]
    lines += ["## Injections", "",
              "| seed | joiner | attack | into | days after joining | its stage | detected | "
              "seconds |", "|---|---|---|---|---|---|---|---|"]
    for seed, r in results["seeds"].items():
        for i in r["injections"]:
            lines.append(f"| {seed} | {i['joiner']} | {i['attack']} | {i['device']} | "
                         f"{i['days']:g} | {i['stage']} | {'yes' if i['detected'] else 'no'} | "
                         f"{'-' if i['seconds'] is None else round(i['seconds'])} |")
    lines += ["", "## Infected on joining", "", "| seed | device | attack | seconds | "
              "graduated while the bot ran |", "|---|---|---|---|---|"]
    for seed, r in results["seeds"].items():
        for i in r["infected"]:
            lines.append(f"| {seed} | {i['joiner']} | {i['attack']} | "
                         f"{'-' if i['seconds'] is None else round(i['seconds'])} | "
                         f"{'yes' if i['graduated_while_bot_ran'] else 'no'} |")
    lines += ["", "## A bot that starts slowly", "",
              "One flow a minute, rising to the attack's own rate over a day, from 4.5 days "
              "after the device joined; seconds to its incident per joining device and seed.",
              "", "| attack, device learned ... | seconds |", "|---|---|"]
    lines += [f"| {k} | {', '.join('-' if x is None else str(x) for x in v)} |"
              for k, v in s["slow"].items()]
    lines += ["", "## Benign joins", "", "| seed | joiner | its first-day incidents | "
              "incidents after its first day | device-weeks after | graduated | set-ups with a "
              "first-day incident |", "|---|---|---|---|---|---|---|"]
    for seed, r in results["seeds"].items():
        for joiner, table in r["joins"].items():
            mine = table[results["devices"][joiner]]
            setups = [v for k, v in table.items() if k != results["devices"][joiner]]
            lines.append(f"| {seed} | {joiner} | {mine['first_day']} | {mine['after']} | "
                         f"{mine['weeks_after']:.2f} | {'yes' if mine['learned'] else 'no'} | "
                         f"{sum(v['first_day'] > 0 for v in setups)}/{len(setups)} |")
    lines += ["", "## A joining device's set-up grace, chosen with one bot left out", "",
              "In-process replays (the daemon's detector and watch) of each joining device "
              "infected from its first flow, per grace (minutes), and the share of benign joins "
              "in the first day with an incident.", ""]
    for seed, r in results["seeds"].items():
        b = r["grace_study"]
        lines.append(f"- seed {seed}: " + "; ".join(
            f"{grace} min: " + ", ".join(f"{attack} worst "
                                         f"{_worst(b['times'][attack][grace])}"
                                         for attack in b["times"])
            + f", benign joins {100 * b['benign_first_day'][grace]:.0f} %"
            for grace in b["benign_first_day"]))
        choice = r["grace_choice"]
        lines.append("  " + "; ".join(
            f"chosen on {kept}: {f['chosen_minutes']} min, checked on "
            + ", ".join(f"{o} (worst {v['worst_seconds']}, {verdict(v['met'])})"
                        for o, v in f["left_out"].items())
            for kept, f in choice["folds"].items()))
    lines += ["", "## Files", "", "`results.json` (layout in benchmarks/detection/"
              "living_report.py), `timeline.png`: per joining device (seed 0), its flagged "
              "flows per day, when its normal graduated or changed, its incidents, the restart "
              "and the reload.", ""]
    return "\n".join(lines)


def _rate(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _worst(times: list) -> str:
    if any(t is None for t in times):
        return "missed"
    return f"{max(times):.0f} s"


def picture(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed = next(iter(results["seeds"]))
    timelines = results["seeds"][seed]["timelines"]
    fig, axes = plt.subplots(len(timelines), 1, figsize=(9, 2.2 * len(timelines)),
                             sharex=True, squeeze=False)
    for ax, (joiner, t) in zip(axes[:, 0], timelines.items()):
        flows = {int(d): n for d, n in t.get("flows_per_day", {}).items()}
        flagged = {int(d): n for d, n in t["flagged_per_day"].items()}
        days = sorted(d for d in flows if d >= 0)
        ax.bar([d + 0.5 for d in days], [100 * flagged.get(d, 0) / flows[d] for d in days],
               width=0.8, color="#e07000", label="flagged share a day, %")
        for at, change in t["changes"]:
            ax.axvline(at / 86400, color="#1a7f37" if change == "learned" else "#8fd19e",
                       lw=2 if change == "learned" else 1)
        for at in t["incidents"]:
            ax.plot(at / 86400, 0, marker="^", color="#b00020", ms=9, clip_on=False)
        for at, what in ((t["restart"], "restart"), (t["reload"], "reload")):
            ax.axvline(at / 86400, color="#555", ls="--", lw=1)
            ax.text(at / 86400, ax.get_ylim()[1] * 0.9, f" {what}", fontsize=8)
        ax.set_ylabel(f"{joiner}\nflagged %", fontsize=8)
    axes[-1, 0].set_xlabel("days since the device joined: the share of its flows flagged each "
                           "day (green: its normal learned on the device, light: a daily "
                           "change; red: incidents)", fontsize=8)
    fig.suptitle(f"Devices that joined after learning (seed {seed})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict, out: Path) -> None:
    from .living_study import choose_grace

    for r in results["seeds"].values():
        r["grace_choice"] = choose_grace({a: {int(b): v for b, v in times.items()}
                                          for a, times in r["grace_study"]["times"].items()})
    results["summary"] = summary(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "results.md").write_text(markdown(results))
    picture(json.loads((out / "results.json").read_text()), out / "timeline.png")
