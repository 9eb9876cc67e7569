"""A replay of the learned site for the daemon's tests: a window of its test days with Mirai in
the hub and a HueSwitch joining, as the flows `capture --record` writes them (in the bundle's
layout). test_operator_page.py and test_site_state.py take it with their own windows."""
from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from edge_ids.benchmarks.harness import site_scenarios as scenarios
from edge_ids.benchmarks.harness.site_runs import flow_lines

HAS_ARGUS = bool(shutil.which("argus", path="/usr/sbin:/usr/bin") and shutil.which("ra"))


def utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def bot_and_joiner(learned_site: dict, smart_home: dict, data_dir: Path, work: Path,
                   before: float, after: float, joins: float) -> dict:
    """From `before` seconds before the bot starts to `after` seconds after, the HueSwitch
    joining `joins` seconds after the bot starts (negative: before): the hub, the bot, the
    joiner, the layout's column names and the flow lines."""
    hub = next(d for d in smart_home["devices"] if d.name == "lockly-hub-01")
    bot = scenarios.infection(data_dir, smart_home["work"], smart_home["site"], "mirai", hub, 1)
    window = work / "window.pcap"
    scenarios.run("editcap", "-A", utc(bot.start - before), "-B", utc(bot.start + after),
                  bot.pcap, window)
    joined, part = scenarios.join(scenarios.setup_captures(data_dir, ("HueSwitch",))[0], 0,
                                  bot.start + joins, work)
    merged = work / "replay.pcap"
    scenarios.run("mergecap", "-w", merged, window, part)
    names, lines = flow_lines(learned_site["bundle"], merged, work)
    return {"hub": hub, "bot": bot, "joined": joined, "names": names,
            "lines": [f"{line}\n".encode() for line in lines]}
