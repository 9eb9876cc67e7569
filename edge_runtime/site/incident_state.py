"""The device watch's memory as plain JSON values, and back: what a restart must not forget
(state.py keeps it on disk), and the rules by which another bundle takes over what is
remembered (a reload, or a restart with a new bundle: a deploy).

Kept: every device remembered (least recently seen first), with its counts, its normal (the
stage, threshold, services and what its flows taught since its last change, the operator's
mute and accepted peers), its open episode or incident and the episode it may resume; the
devices announced and no longer remembered; incident ids; the tracker's clock; the address ->
MAC bindings. Services are kept by name (their numbers are one run's), times as flow times.

**Another bundle** (`rebase`): a device the new bundle knows takes the new bundle's normal (its
threshold, services and their bits), unless the bundle is the same model (then what the device
learned since stays); what it learned on the device that the bundle has not stays too: the
services it added, its threshold where the bundle has none of its own for it, what its flows
taught so far (its window). A device the new bundle does not know keeps the normal it has (one
the old bundle knew is now "learned": its normal is no bundle's); the operator's decisions
stay. When the model's inputs differ (another width
or vocabulary), the "why" of an open episode cannot go on adding errors of other features: it
starts again from the change, and its lines say since when (`why_since`).
"""
from __future__ import annotations

import json
import math
from array import array
from typing import Iterator

import numpy as np

from .episodes import Device, Episode
from .normal_rule import Window
from .normals import NO_PEAKS, Normal, Normals

SCHEMA = 1  # a state of another schema is set aside (state.py), never half read
# an episode's fields and how each is read back (a state file may hold anything: every value is
# converted, so that a wrong one fails here, at load, where it is set aside, never later)
EPISODE_FIELDS = {"evidence": float, "at": float, "first": float, "last": float,
                  "last_flagged": float, "flagged": int, "seen": int, "max_ratio": float,
                  "incident": int, "opened": float, "last_line": float, "lines_flagged": int,
                  "peak": float, "slot": int, "slot_bits": float, "first_flagged": float,
                  "why_since": float}
OPTIONAL = {"incident", "opened", "last_line", "slot", "why_since"}  # may be null
COUNTS = ("opened", "closed", "new_devices", "changes")


def dump(watch, model_sha256: str, extra: dict | None = None) -> dict:
    """The watch's memory now, as JSON values (for tests and small states: the daemon streams
    `fragments` instead)."""
    return json.loads("".join(fragments(watch, model_sha256, extra)))


def fragments(watch, model_sha256: str, extra: dict | None = None) -> Iterator[str]:
    """The watch's memory now as JSON text, in pieces (a device a piece): state.py streams
    them through gzip, so no copy of the whole state is ever held. Read them all before the
    watch moves on (the daemon does, under its lock)."""
    tracker = watch.tracker
    name = tracker.index.name
    head = {"schema": SCHEMA, "model_sha256": model_sha256,
            "clock": tracker.clock if math.isfinite(tracker.clock) else None,
            "next_id": tracker.next_id, "counts": {c: getattr(tracker, c) for c in COUNTS},
            "features": [list(f) for f in tracker.features]}
    yield json.dumps(head, separators=(",", ":"))[:-1] + ',"devices":['
    for i, device in enumerate(tracker.devices.values()):
        yield ("," if i else "") + json.dumps(_device(device, name), separators=(",", ":"))
    tail = {"announced": list(tracker.evicted_new),
            "recent": [[i, *v] for i, v in tracker.recent.items()],
            "bindings": [[ip, mac] for ip, mac in watch.map.bindings().items()]} | (extra or {})
    yield "]," + json.dumps(tail, separators=(",", ":"))[1:]


def load(watch, state: dict, model_sha256: str) -> int:
    """Put a state (dump's) back into a fresh watch; the current bundle decides what applies
    (rebase). Returns how many devices came back."""
    tracker = watch.tracker
    number = tracker.index.number
    tracker.clock = -math.inf if state["clock"] is None else _finite(float(state["clock"]),
                                                                      "clock")
    tracker.next_id = int(state["next_id"])
    for field in COUNTS:
        setattr(tracker, field, int(state["counts"][field]))
    for value in state["devices"]:
        device = _device_from(value, number)
        tracker.devices[device.key] = device
        if device.episode is not None:
            tracker.active[device.key] = device
        if device.ended is not None:
            tracker.resumable[device.key] = device
        if device.normal.muted is not None:
            tracker.muted[device.key] = device.normal.muted
    for key in state["announced"]:
        tracker.remember_announced(str(key))
    tracker.recent = {int(i): (str(k), list(peers), list(ports))
                      for i, k, peers, ports in state["recent"]}
    watch.map.restore({str(ip): str(mac) for ip, mac in state["bindings"]})
    saved_features = [tuple(f) for f in state["features"]]
    for device in tracker.devices.values():  # errors of the inputs they were saved with
        for episode in (device.episode, device.ended and device.ended[0]):
            if episode and episode.errors is not None and \
                    episode.errors.shape[1] != len(saved_features):
                raise ValueError(f"{device.key}'s episode has errors of "
                                 f"{episode.errors.shape[1]} inputs, not "
                                 f"{len(saved_features)}")
    rebase(tracker, tracker.settings, tracker.features, state["model_sha256"] == model_sha256,
           saved_features)
    while len(tracker.devices) > tracker.max_devices:  # a state made with room for more
        tracker._evict([])
    return len(tracker.devices)


def rebase(tracker, settings, features, same_model: bool, old_features=None) -> None:
    """Another bundle (or the same one) under the devices remembered: see the module's text."""
    old_features = [tuple(f) for f in (tracker.features if old_features is None
                                       else old_features)]
    normals = Normals(settings, settings.rule, tracker.normals.adapt, tracker.normals.index)
    tracker.normals = normals
    tracker.settings = settings
    tracker.features = list(features)
    frozen = not normals.adapt  # (--frozen-normal: nothing learned on the device applies)
    for key, device in tracker.devices.items():
        normal, known = device.normal, key in settings.known
        if frozen:
            fresh = normals.start(key, device.first_seen)
            fresh.muted, fresh.peers, fresh.joined = normal.muted, normal.peers, normal.joined
            device.normal = fresh
            normals.adopt(key, fresh)
        elif known and not same_model:
            fresh = normals.start(key, tracker.clock if math.isfinite(tracker.clock)
                                  else device.last_seen)
            fresh.muted, fresh.peers = normal.muted, normal.peers
            fresh.window, fresh.changed = normal.window, normal.changed
            fresh.since, fresh.peaks = normal.since, normal.peaks
            if fresh.stage != "known":
                fresh.incident_bits = normal.incident_bits
            if fresh.ratio is None and normal.ratio is not None:  # none of its own there
                fresh.stage, fresh.ratio = "learned", normal.ratio
            if fresh.services is not None and normal.services is not None:
                fresh.services = fresh.services | normal.services
            device.normal = fresh
            normals.adopt(key, fresh)
        else:
            if not known and normal.stage == "known":
                normal.stage = "learned"
            normals.adopt(key, normal)
        device.new = not known
    if [tuple(f) for f in features] != old_features:
        when = tracker.clock
        for device in tracker.devices.values():
            for episode in (device.episode, device.ended[0] if device.ended else None):
                if episode is not None:
                    episode.errors = np.zeros((2, len(features)), np.float32) if features \
                        else None
                    episode.why_since = when if math.isfinite(when) else episode.last


def _finite(value, what: str):
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} is {value}")
    return value


def _device(device: Device, name) -> dict:
    return {"key": device.key, "ip": device.ip, "new": device.new,
            "first_seen": device.first_seen, "last_seen": device.last_seen,
            "flows": device.flows, "flagged": device.flagged, "incidents": device.incidents,
            "timeline": None if device.timeline is None else [[k, v] for k, v in
                                                              device.timeline.items()],
            "normal": _normal(device.normal, name),
            "episode": None if device.episode is None else _episode(device.episode, name),
            "ended": None if device.ended is None else _episode(device.ended[0], name)}


def _device_from(value: dict, number) -> Device:
    device = Device(str(value["key"]), value["ip"], bool(value["new"]),
                    float(value["first_seen"]), _normal_from(value["normal"], number))
    device.last_seen = float(value["last_seen"])
    device.flows, device.flagged = int(value["flows"]), int(value["flagged"])
    device.incidents = int(value["incidents"])
    if value["timeline"] is not None:
        device.timeline = {int(k): int(v) for k, v in value["timeline"]}
    if value["episode"] is not None:
        device.episode = _episode_from(value["episode"], number)
    if value["ended"] is not None:
        device.ended = (_episode_from(value["ended"], number), None)
    return device


def _normal(normal: Normal, name) -> dict:
    return {"stage": normal.stage, "ratio": normal.ratio,
            "services": None if normal.services is None else sorted(map(name, normal.services)),
            "bits": normal.bits, "window": normal.window.to_state(name),
            "changed": normal.changed, "joined": normal.joined, "muted": normal.muted,
            "peers": sorted(normal.peers), "since": normal.since,
            "peaks": list(normal.peaks), "incident_bits": normal.incident_bits}


def _normal_from(value: dict, number) -> Normal:
    services = value["services"]
    normal = Normal(str(value["stage"]), None if value["ratio"] is None else float(value["ratio"]),
                    None if services is None else frozenset(number(str(s)) for s in services),
                    float(value["bits"]), float(value["changed"]),
                    None if value["joined"] is None else float(value["joined"]))
    if normal.stage not in ("known", "probation", "learned"):
        raise ValueError(f"a device's stage {normal.stage!r}")
    normal.window = Window.from_state(value["window"], number)
    normal.muted = None if value["muted"] is None else float(value["muted"])
    normal.peers = frozenset(map(str, value["peers"]))
    normal.since = float(value["since"])
    normal.peaks = array("f", sorted(float(p) for p in value["peaks"])) if value["peaks"] \
        else NO_PEAKS
    normal.incident_bits = None if value["incident_bits"] is None else \
        float(value["incident_bits"])
    return normal


def _episode(episode: Episode, name) -> dict:
    out = {field: getattr(episode, field) for field in EPISODE_FIELDS}
    out["peers"], out["ports"] = dict(episode.peers), dict(episode.ports)
    out["errors"] = None if episode.errors is None else episode.errors.tolist()
    out["pending"] = None if episode.pending is None else episode.pending.to_state(name)
    return out


def _episode_from(value: dict, number) -> Episode:
    errors = value["errors"]
    episode = Episode(float(value["first"]), 0)
    for field, kind in EPISODE_FIELDS.items():
        given = value[field]
        if given is None and field in OPTIONAL:
            setattr(episode, field, None)
        else:
            setattr(episode, field, _finite(kind(given), field))
    episode.peers = {str(k): int(v) for k, v in dict(value["peers"]).items()}
    episode.ports = {str(k): int(v) for k, v in dict(value["ports"]).items()}
    episode.errors = None if errors is None else np.array(errors, dtype=np.float32)
    if episode.errors is not None and (episode.errors.ndim != 2 or len(episode.errors) != 2):
        raise ValueError(f"an episode's errors of shape {episode.errors.shape}")
    episode.pending = None if value["pending"] is None else \
        Window.from_state(value["pending"], number)
    return episode
