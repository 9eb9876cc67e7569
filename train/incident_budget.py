"""Each device's operating point and the incident threshold, from the held-out tail of the
learning period (never from test days or attacks).

1. **Devices' own thresholds.** A device with enough validation flows for the per-flow budget
   to be measured (MIN_FALSE_ALARMS / budget, e.g. 500 at 0.01) gets its own threshold: the
   score that exactly the budget's share of its own validation flows exceeds (after those its
   classifier already names, as for the site). A device with fewer gets the threshold whose
   false-alarm rate's 90 % upper bound is the budget (at 0.01, from 231 flows: none over it),
   as the incident budget is held; quieter devices use the site's threshold, as new devices
   do.
2. **Devices' services**: the services each used while learning, and the evidence a flow to
   any other adds, log2(budget / P(new)), with P(new) = (services seen once + 1) / (flows + 1)
   (Good-Turing, smoothed): the probability the learning period gives a new service.
3. **The most one flow may say**: log2(budget x validation flows) bits, the resolution of the
   held-out tail (a score beyond every held-out flow is not measurably more unusual).
4. **The incident threshold** is in the operator's unit, false incidents per device per week.
   The validation tail is replayed, in time order, through the daemon's own device watch with
   no incident threshold; every episode's peak evidence is kept (an incident is exactly an
   episode whose peak crosses the threshold, incidents.py). The rate of episodes above a level,
   per device-week of validation, is the false-incident rate that level would give. The budget
   is a limit, so the rate's upper 90 % confidence bound must fit it, not the estimate: when
   the tail is long enough for that with MEASURED_INCIDENTS episodes above the level, the
   level is read off the peaks; otherwise the top episodes' exponential tail (peaks over a
   threshold, the standard extreme-value estimate, with the bound on its scale) is
   extrapolated to the budget. The threshold is never below what one flow's score may say (an
   incident needs more than one odd flow).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..edge_runtime.model.detector import Detector
from ..edge_runtime.site.devices import DeviceMap
from ..edge_runtime.site.incident_settings import (CLOSE_AFTER_SECONDS, HALF_LIFE_SECONDS,
                                              UPDATE_EVERY_SECONDS, IncidentSettings)
from ..edge_runtime.site.services import services_of
from ..edge_runtime.watch import FLOW_COLUMNS, DeviceWatch, anomaly_features, flow_times
from .operating_point import MIN_FALSE_ALARMS

WEEK = 7 * 86400.0
MEASURED_INCIDENTS = 5  # fewer allowed on the tail than this: extrapolate instead of reading
CONFIDENCE = 0.9  # the budget holds at this confidence, not only on average
TAIL_EPISODES = 10  # the highest episodes the exponential tail is fitted to
MIN_TAIL_EPISODES = 3
REPLAY_BATCH = 256  # as the daemon's default --max-batch
MAX_SERVICES = 256  # a device that used more is too varied for a new one to be evidence
PARTS = ("thresholds", "services")  # what a device's own normal is made of


@dataclass
class DeviceFlows:
    """The devices of a set of records (attributed in time order, as the daemon would)."""

    owners: list  # per record: ((key, ip), ...)
    times: np.ndarray  # per record: flow end
    services: list  # per record: its service ("tcp/443")
    initiators: list | None = None  # per record: the key of the device that initiated it, or
    # None (the daemon judges a flow for its initiator only); None: each of its devices

    def initiated(self):
        """(key, record) for each record and the device(s) whose flow it is."""
        for r, devices in enumerate(self.owners):
            if self.initiators is None:
                for key, _ in devices:
                    yield key, r
            elif self.initiators[r] is not None:
                yield self.initiators[r], r


def attribute(device_map: DeviceMap, records, order: np.ndarray) -> DeviceFlows:
    """The devices of each record, attributed in `order` (time order) as the daemon would."""
    owners, initiators = [()] * len(records), [None] * len(records)
    for start in range(0, len(order), REPLAY_BATCH):
        rows = order[start:start + REPLAY_BATCH]
        found, by = device_map.initiators({c: v[rows] for c, v in records.columns.items()})
        for r, devices, initiator in zip(rows.tolist(), found, by):
            owners[r], initiators[r] = devices, initiator
    n = len(records)
    proto, sport, dport = (np.full(n, "") if c is None else records.columns[c] for c in (
        _column(records, FLOW_COLUMNS[4]), _column(records, FLOW_COLUMNS[1]),
        _column(records, FLOW_COLUMNS[3])))
    services = services_of(proto, sport, dport).tolist()
    return DeviceFlows(owners, flow_times(records)[0], services, initiators)


def _column(records, names) -> str | None:
    return next((c for c in names if c in records.columns), None)


def services_used(flows_sets) -> dict[str, tuple[list[str], float | None]]:
    """key -> Counter of the services of the flows it initiated, over these DeviceFlows."""
    from collections import Counter

    used: dict[str, Counter] = {}
    for flows in flows_sets:
        for key, r in flows.initiated():
            used.setdefault(key, Counter())[flows.services[r]] += 1
    return used


def new_service_bits(counts, max_fpr: float) -> float:
    """log2(budget / P(new service)): 0 when a new service is no rarer than a flagged flow."""
    if len(counts) > MAX_SERVICES:
        return 0.0
    n, once = sum(counts.values()), sum(1 for c in counts.values() if c == 1)
    return max(0.0, math.log2(max_fpr * (n + 1) / (once + 1)))


def with_services(settings: IncidentSettings, used: dict, max_fpr: float) -> IncidentSettings:
    from dataclasses import replace

    return replace(settings, services={k: frozenset(c) for k, c in used.items()
                                       if len(c) <= MAX_SERVICES},
                   service_bits={k: new_service_bits(c, max_fpr) for k, c in used.items()})


def device_thresholds(flows: DeviceFlows, scores: np.ndarray, by_classifier: np.ndarray,
                      max_fpr: float) -> dict[str, tuple[float | None, int]]:
    """key -> (its own threshold, or None for the site's; its validation flows)."""
    rows: dict[str, list[int]] = {}
    for key, r in flows.initiated():  # (a device's threshold judges the flows it initiates)
        rows.setdefault(key, []).append(r)
    out = {}
    for key, mine in rows.items():
        mine = np.array(mine)
        out[key] = (own_threshold(scores[mine], by_classifier[mine], max_fpr), len(mine))
    return out


def own_threshold(scores: np.ndarray, by_classifier: np.ndarray, max_fpr: float
                  ) -> float | None:
    """As the site's operating point, on one device's validation flows; None if too few.

    With fewer flows than MIN_FALSE_ALARMS / budget, the share over a threshold cannot be
    measured, so the budget is held as the incident budget is: the threshold is the lowest
    whose false-alarm rate's CONFIDENCE upper bound (Poisson) is the budget. With none over it
    that needs budget x flows >= 2.3 (231 flows at 1 %); fewer, and the device uses the site's.
    """
    n = len(scores)
    allowed = int(math.floor(max_fpr * n)) if n * max_fpr >= MIN_FALSE_ALARMS else \
        most_events_within(max_fpr * n)
    rest = np.sort(scores[~by_classifier])[::-1]
    left = allowed - int(by_classifier.sum())
    if not len(rest) or left < 0:
        return None
    return float(rest[min(left, len(rest) - 1)])


def upper_bound(events: int) -> float:
    """The CONFIDENCE upper bound of a Poisson count of which `events` were seen."""
    from scipy.stats import chi2

    return chi2.ppf(CONFIDENCE, 2 * events + 2) / 2


def most_events_within(allowed: float) -> int:
    """The most events seen whose count's upper bound still fits `allowed` (-1: not even
    none)."""
    most = -1
    while upper_bound(most + 1) <= allowed:
        most += 1
    return most


def min_validation_flows(max_fpr: float) -> int:
    """The fewest validation flows that give a device its own threshold."""
    return math.ceil(upper_bound(0) / max_fpr)


def known_devices(fit: DeviceFlows, val: DeviceFlows, own: dict, max_fpr: float,
                  services: bool = True, priors: dict | None = None,
                  site: float | None = None) -> dict:
    """Every device of the learning period, for the bundle; with `priors` (what devices learned
    on the device, `prior_normals`), their services join, a device without a threshold of its
    own here takes the one it learned there, and one absent from this period is kept."""
    known: dict[str, dict] = {}
    for flows in (fit, val):
        for devices, t in zip(flows.owners, flows.times.tolist()):
            for key, ip in devices:
                entry = known.setdefault(key, {"ip": ip, "flows": 0, "first_seen": t,
                                               "last_seen": t})
                entry["flows"] += 1
                entry["first_seen"] = min(entry["first_seen"], t)
                entry["last_seen"] = max(entry["last_seen"], t)
                if ip is not None:
                    entry["ip"] = ip
    # the services of the fit part, as the calibration replays them (one calibration: the
    # held-out tail's new services are what set the incident threshold, and the device's
    # living normal takes them in once they are its normal)
    used = services_used((fit,)) if services else {}
    for key, entry in known.items():
        threshold, n = own.get(key, (None, 0))
        counts = used.get(key, {})
        entry |= {"validation_flows": n, "threshold": threshold,
                  "services": sorted(counts) if len(counts) <= MAX_SERVICES else [],
                  "new_service_bits": round(new_service_bits(counts, max_fpr), 4)
                  if counts else 0.0}
    for key, prior in (priors or {}).items():
        threshold = None if prior["ratio"] is None or site is None else prior["ratio"] * site
        entry = known.get(key)
        if entry is None:
            known[key] = {"ip": prior["ip"], "flows": 0, "first_seen": prior["first_seen"],
                          "last_seen": prior["last_seen"], "validation_flows": 0,
                          "threshold": threshold, "services": prior["services"][:MAX_SERVICES],
                          "new_service_bits": round(prior["bits"], 4),
                          "prior": "learned on the device"}
            continue
        if entry["threshold"] is None and threshold is not None:
            entry |= {"threshold": threshold, "prior": "learned on the device"}
        merged = sorted(set(entry["services"]) | set(prior["services"]))
        if entry["services"] and len(merged) <= MAX_SERVICES:
            entry["services"] = merged
    return known


def prior_normals(state: dict) -> dict:
    """What each device learned on the device (a daemon's state file, state.py): its threshold
    as a multiple of the site's, its services and their bits. Devices on probation taught
    nothing yet, and a muted device's normal stood still."""
    priors = {}
    for device in state.get("devices", []):
        normal = device["normal"]
        if normal["stage"] == "probation" or normal["services"] is None and \
                normal["ratio"] is None:
            continue
        priors[device["key"]] = {"ratio": normal["ratio"], "services": normal["services"] or [],
                                 "bits": float(normal["bits"]), "ip": device["ip"],
                                 "first_seen": device["first_seen"],
                                 "last_seen": device["last_seen"]}
    return priors


def replay(bundle, settings: IncidentSettings, records, order: np.ndarray,
           record_peaks: bool = False) -> DeviceWatch:
    """The validation tail through the daemon's detector and device watch, in batches."""
    detector = Detector(bundle)
    watch = DeviceWatch(settings, detector.schema.names, anomaly_features(bundle.anomaly.spec),
                        record_peaks=record_peaks, normal_threshold=bundle.normal_threshold,
                        normal_index=detector.normal_index)
    for start in range(0, len(order), REPLAY_BATCH):
        batch = records.take(order[start:start + REPLAY_BATCH])
        owners, thresholds = watch.devices(batch)
        watch.observe(batch, detector.detect(batch, thresholds, explain=True), owners)
    watch.finish()
    return watch


def tail_rule_tables() -> dict:
    """What the daemon needs to apply the tail rule to a device's own episodes without scipy
    (edge_runtime/site/normal_rule.TailRule)."""
    from scipy.stats import chi2

    return {"upper_bounds": [upper_bound(k) for k in range(TAIL_EPISODES + 2)],
            "scale_quantiles": [float(chi2.ppf(1 - CONFIDENCE, 2 * k))
                                for k in range(1, TAIL_EPISODES + 1)]}


def incident_threshold(peaks: list[float], device_weeks: float, budget: float,
                       max_flow_bits: float = 0.0) -> tuple[float, dict]:
    """(threshold in bits, how it was set) for `budget` false incidents per device-week, never
    below `max_flow_bits` (what one flow's score may say)."""
    threshold, report = _tail_threshold(peaks, device_weeks, budget)
    if threshold <= max_flow_bits:
        return max_flow_bits * (1 + 1e-9), report | {
            "method": report["method"] + f"; raised to what one flow's score may say "
                                         f"({max_flow_bits:.3g} bits)"}
    return threshold, report


def _tail_threshold(peaks: list[float], device_weeks: float, budget: float
                    ) -> tuple[float, dict]:
    """The lowest level whose false-incident rate is at most `budget` with CONFIDENCE: the
    operator's budget is a limit, and a few dozen episodes measure it loosely, so the upper
    confidence bound of the rate must fit (Poisson for counts, chi-squared for the tail's
    scale)."""
    from scipy.stats import chi2

    peaks = np.sort(np.asarray([p for p in peaks if p > 0], dtype=np.float64))[::-1]
    allowed = budget * device_weeks  # incidents the budget allows on the validation tail
    report = {"episodes": int(len(peaks)), "allowed_on_validation": round(allowed, 3),
              "confidence": CONFIDENCE,
              "highest_peak_bits": float(peaks[0]) if len(peaks) else 0.0}
    # the most validation incidents whose rate's upper bound still fits the budget
    c = min(most_events_within(allowed), len(peaks))
    if MEASURED_INCIDENTS <= c < len(peaks):
        return float(peaks[c]), report | {
            "method": f"measured: {c} validation episodes above it, whose rate's "
                      f"{CONFIDENCE:.0%} upper bound is the budget"}
    if len(peaks) < MIN_TAIL_EPISODES + 1:
        threshold = 2.0 * float(peaks[0]) if len(peaks) else 2.0 * HALF_LIFE_SECONDS / 60
        return threshold, report | {"method": f"too few episodes ({len(peaks)}) to fit a tail: "
                                              f"twice the highest seen"}
    k = min(TAIL_EPISODES, len(peaks) - 1)
    level = float(peaks[k])
    scale = max(float(np.mean(peaks[:k] - level)), 1e-9)
    scale_bound = 2 * k * scale / chi2.ppf(1 - CONFIDENCE, 2 * k)
    rate_bound = upper_bound(k) / device_weeks  # episodes over `level`
    fitted = level + scale_bound * math.log(max(rate_bound / budget, 1.0))
    floor_level = float(peaks[c]) if 0 <= c < len(peaks) else float(peaks[0])
    threshold = max(fitted, floor_level * (1 + 1e-9))
    return threshold, report | {
        "method": f"extrapolated: exponential tail of the top {k} episodes over {level:.3g} "
                  f"bits (scale {scale:.3g}, {CONFIDENCE:.0%} bound {scale_bound:.3g}), the "
                  f"rate's {CONFIDENCE:.0%} upper bound set to the budget", "tail_scale_bits":
        scale, "tail_scale_bound_bits": scale_bound, "tail_level_bits": level,
        "fitted_bits": fitted}


def calibrate(bundle, val, max_fpr: float, budget: float, home_net: tuple[str, ...],
              fit_flows: DeviceFlows, val_flows: DeviceFlows, order: np.ndarray,
              own: dict, echo, services: bool = True, priors: dict | None = None
              ) -> tuple[dict, dict, list[str]]:
    """(manifest "devices", manifest "incidents", warnings) for a bundle with its site
    operating point already set."""
    site = bundle.anomaly.threshold
    known = known_devices(fit_flows, val_flows, own, max_fpr, services, priors, site)
    max_flow_bits = math.log2(max(max_fpr * len(val), 2.0))
    settings = IncidentSettings(math.inf, site, {k: v["threshold"] for k, v in known.items()},
                                home_net, known_ips={k: v["ip"] for k, v in known.items()},
                                max_flow_bits=max_flow_bits)
    # On the held-out tail, a service is new if the fit part never used it
    if services:
        settings = with_services(settings, services_used((fit_flows,)), max_fpr)
    peaks = replay(bundle, settings, val, order, record_peaks=True).tracker.episode_peaks
    end, start, _ = flow_times(val)
    hours = max(float(end.max() - start.min()), 0.0) / 3600 if len(val) else 0.0
    active = {k for devices in val_flows.owners for k, _ in devices}
    device_weeks = hours * 3600 * len(active) / WEEK
    warnings = []
    if not active or hours <= 0:
        raise ValueError("the validation flows belong to no device of the home networks "
                         f"{', '.join(home_net)}: give the networks the devices are on "
                         f"(--home-net CIDR)")
    threshold, how = incident_threshold(peaks, device_weeks, budget, max_flow_bits)
    counted = replay(bundle, settings.with_threshold(threshold), val, order).tracker.opened
    if budget * device_weeks < 1:
        warnings.append(
            f"the validation tail ({hours:.1f} h, {len(active)} devices: "
            f"{device_weeks:.2f} device-weeks) is too short to measure {budget:g} false "
            f"incident(s) per device per week; the incident threshold is extrapolated from its "
            f"{how['episodes']} evidence episodes and set above every one of them. Learn from "
            f"a longer period for a measured budget.")
    own_count = sum(1 for v in known.values() if v["threshold"] is not None)
    echo(f"      devices: {len(known)} in the learning period, {own_count} with their own "
         f"threshold (≥ {min_validation_flows(max_fpr):,} validation flows), the rest "
         f"on the site's; incident threshold {threshold:.3g} bits ({how['episodes']} episodes "
         f"over {hours:.1f} h; {counted} incident(s) on the validation tail)")
    devices = {"home_net": list(home_net), "min_validation_flows":
               min_validation_flows(max_fpr), "fallback_threshold": site,
               "rule": {"max_fpr": max_fpr, "min_false_alarms": MIN_FALSE_ALARMS,
                        "upper_bounds": [upper_bound(k) for k in range(MIN_FALSE_ALARMS)]},
               "known": known}
    incidents = {"threshold_bits": threshold, "max_flow_bits": max_flow_bits,
                 "evidence": "per device and minute, the strongest flow's log2(score / device "
                 "threshold) (at most max_flow_bits) plus the new-service bits of a service "
                 "the device never used; decaying", "half_life_seconds": HALF_LIFE_SECONDS,
                 "close_after_seconds": CLOSE_AFTER_SECONDS,
                 "update_every_seconds": UPDATE_EVERY_SECONDS, "max_per_device_week": budget,
                 "tail_rule": tail_rule_tables(),
                 "validation": how | {"hours": round(hours, 3), "devices": len(active),
                                      "device_weeks": round(device_weeks, 4),
                                      "incidents_at_threshold": counted,
                                      "rate_per_device_week": round(counted / device_weeks, 4)
                                      if device_weeks else None},
                 "warnings": warnings}
    return devices, incidents, warnings


def device_settings(bundle, fit, val, val_scores: np.ndarray, normal_probability,
                    attack_named, point: dict, max_fpr: float, budget: float,
                    home_net: tuple[str, ...], echo, parts=PARTS, priors: dict | None = None
                    ) -> tuple[dict, dict, list[str]]:
    """learn's step after the site operating point: the devices of the learning period (fit,
    then validation, in time order), their own thresholds, the incident threshold. `parts`
    leaves out per-device thresholds or services (the benchmark measures what each brings)."""
    from ..edge_runtime.site.devices import HomeNet
    from ..edge_runtime.ingest.records import RawSchema

    device_map = DeviceMap(HomeNet(home_net), RawSchema.from_spec(bundle.raw).names)
    if not device_map.usable:
        raise ValueError("the flows' layout has no SrcAddr/DstAddr: devices cannot be told "
                         "apart")
    fit_order = np.argsort(flow_times(fit)[0], kind="stable")
    val_order = np.argsort(flow_times(val)[0], kind="stable")
    for records, order in ((fit, fit_order), (val, val_order)):  # learn the address -> MAC
        attribute(device_map, records, order)                    # bindings first, then give
    device_map.forget()                                          # every flow to its device
    fit_flows = attribute(device_map, fit, fit_order)
    val_flows = attribute(device_map, val, val_order)
    by_classifier = np.zeros(len(val), dtype=bool) if normal_probability is None else (
        attack_named & (normal_probability < point["normal_threshold"]))
    own = device_thresholds(val_flows, np.asarray(val_scores), by_classifier, max_fpr) \
        if "thresholds" in parts else {}
    if priors:
        echo(f"      priors: {len(priors)} devices' normals learned on the device")
    return calibrate(bundle, val, max_fpr, budget, home_net, fit_flows, val_flows, val_order,
                     own, echo, "services" in parts, priors)
