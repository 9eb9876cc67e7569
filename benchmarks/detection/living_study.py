"""What the living-normal benchmark measures in a replay's events (living.py), and the choice of
a joining device's set-up grace with one bot left out (in-process replays: the daemon's own
detector and device watch, fed the same lines in batches as the daemon is).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from datetime import datetime
from pathlib import Path

DAY, WEEK = 86400.0, 7 * 86400.0
CLOSE_AFTER = 1800.0  # an episode's window (incidents.py): a detection may open this late
GRACES = (1, 2, 3, 4)  # set-up graces, in minutes, the study tries
CHOICE_SECONDS = 240.0  # a grace is chosen if the bot left in is reported within 4 minutes
BAR_SECONDS = 300.0  # ... and checked against the 5 minutes on the bot left out


def seconds(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def opened(events: list[dict], key: str | None = None) -> list[dict]:
    return [e for e in events if e["event_type"] == "incident"
            and e["incident"]["state"] == "open" and (key is None or e["device"]["key"] == key)]


def injection(events: list[dict], key: str, start: float, end: float, peers: list[str]) -> dict:
    """Did an incident open for the infected device inside the injection's time (from its first
    packet to an episode's window after its last) naming one of the attack's peers; when."""
    hits = [e for e in opened(events, key)
            if start - 1 <= seconds(e["incident"]["opened"]) <= end + CLOSE_AFTER
            and any(p["ip"] in peers for p in e["incident"]["peers"])]
    first = hits[0] if hits else None
    already = [e for e in events if e["event_type"] == "incident" and e["device"]["key"] == key
               and seconds(e["incident"]["opened"]) < start <= seconds(e["incident"]["last_flow"])
               + CLOSE_AFTER and any(p["ip"] in peers for p in e["incident"]["peers"])]
    return {"detected": first is not None, "already_open": bool(already) and first is None,
            "seconds": None if first is None else seconds(first["incident"]["opened"]) - start,
            "incident": None if first is None else first["incident"]["id"]}


def stage_at(events: list[dict], key: str, t: float) -> str:
    """The device's stage at flow time t, from its device_normal lines."""
    stage = "probation"
    for e in events:
        if e["event_type"] == "device_normal" and e["device"]["key"] == key and \
                seconds(e["timestamp"]) <= t:
            stage = e["device_normal"]["stage"]
    return stage


def graduated_before(events: list[dict], key: str, t: float) -> bool:
    return any(e["event_type"] == "device_normal" and e["device"]["key"] == key
               and e["device_normal"]["change"] == "learned" and seconds(e["timestamp"]) <= t
               for e in events)


def joins(events: list[dict], joined: dict[str, float], ends: dict[str, float]) -> dict:
    """Per joined device: incidents opened in its first day and after it (with the
    device-weeks after it), and how many new_device lines named it."""
    named = Counter(e["device"]["key"] for e in events if e["event_type"] == "new_device")
    out = {}
    for key, t in joined.items():
        times = [seconds(e["incident"]["opened"]) for e in opened(events, key)]
        out[key] = {"first_day": sum(t <= x < t + DAY for x in times),
                    "after": sum(x >= t + DAY for x in times),
                    "weeks_after": max(0.0, ends[key] - t - DAY) / WEEK,
                    "named": named.get(key, 0),
                    "learned": graduated_before(events, key, math.inf)}
    return out


def identical_before(a: list[dict], b: list[dict], t: float) -> bool:
    """The same device events before flow time t: their times, kinds, devices and states
    (not updates, whose time is the batch's clock, and not the incident ids, which count in
    the order devices came in a batch: two incidents opening in one batch may swap them)."""
    def kept(events):
        return sorted((e["timestamp"], e["event_type"], e["device"]["key"],
                       e.get("incident", {}).get("state") or "")
                      for e in events if seconds(e["timestamp"]) < t
                      and e.get("incident", {}).get("state") != "update")
    return kept(a) == kept(b)


def ids_keep_counting(events: list[dict]) -> bool:
    """Every incident opened has an id of its own (a restart does not count from 1 again)."""
    ids = [e["incident"]["id"] for e in opened(events)]
    return len(ids) == len(set(ids))


# -- the set-up grace, chosen with one bot left out -------------------------------------------

def in_process(bundle_path: Path, lines: list[str], home_net, grace: float) -> list[dict]:
    """The lines through the daemon's detector and device watch (batches of 256), with the
    set-up grace set to `grace` minutes; the device events."""
    from ...edge_runtime.outputs.alerts import event_lines
    from ...edge_runtime.model.bundle import load_bundle
    from ...edge_runtime.model.detector import Detector
    from ...edge_runtime.ingest.records import parse_lines
    from ...edge_runtime.watch import DeviceWatch, anomaly_features

    import json

    bundle = load_bundle(bundle_path)
    detector = Detector(bundle)
    settings = replace(bundle.incidents.with_home_net(home_net), join_grace_minutes=grace)
    watch = DeviceWatch(settings, detector.schema.names, anomaly_features(bundle.anomaly.spec),
                        normal_threshold=bundle.normal_threshold,
                        normal_index=detector.normal_index)
    keep = tuple(dict.fromkeys((*watch.text_columns, "LastTime", "StartTime")))
    events = []
    for i in range(0, len(lines), 256):
        records, _ = parse_lines([line.encode() for line in lines[i:i + 256]], detector.schema,
                                 keep_text=keep, keep_fields=watch.key_columns)
        owners, thresholds = watch.devices(records)
        verdicts = detector.detect(records, thresholds, explain=True)
        events += watch.observe(records, verdicts, owners)
    events += watch.finish()
    return [json.loads(line) for line in event_lines(events, {}).splitlines()]


def choose_grace(times: dict[str, dict[int, list]]) -> dict:
    """times[bot][grace]: seconds to report each infected-on-joining replay (None: missed).
    Per bot left in: the longest grace that reports it within CHOICE_SECONDS every time, then
    that grace on the bot left out against BAR_SECONDS."""
    folds = {}
    bots = sorted(times)
    for kept in bots:
        fits = [g for g in GRACES if all(s is not None and s <= CHOICE_SECONDS
                                         for s in times[kept][g])]
        chosen = max(fits) if fits else min(GRACES)
        out = {}
        for other in bots:
            if other != kept:
                got = times[other][chosen]
                out[other] = {"worst_seconds": max((s for s in got if s is not None),
                                                   default=None),
                              "missed": sum(s is None for s in got),
                              "met": all(s is not None and s <= BAR_SECONDS for s in got)}
        folds[kept] = {"chosen_minutes": chosen, "left_out": out}
    return {"folds": folds, "shipped_minutes": min(f["chosen_minutes"]
                                                   for f in folds.values())}
