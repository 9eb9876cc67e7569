"""The operator's word (`edge-ids site ...`): decisions the daemon applies between batches, each
one an audit line (`event_type: "decision"`) and each one undoable.

- `accept ID`: that incident's behaviour is this device's normal. Its peers are accepted (a flow
  with them is never evidence for it again, whatever its score, and feeds its normal), its
  services join its services, and the incident closes ("accepted by the operator"). Flows
  with other peers are held to its threshold as before: accepting never raises a threshold.
- `mute KEY SECONDS`: no incident opens for the device for that long (flow time), an open one
  closes ("muted by the operator"), no push; its flow alerts stay, its normal stands still.
- `unmute KEY`, `forget KEY` (the device is no longer remembered: if it comes back it is new
  again, announced and on probation), `probation KEY` (its own threshold goes, and it learns
  one again on the device), `undo DECISION`.
"""
from __future__ import annotations

from .devices import device_label
from .normals import MAX_NORMAL_SERVICES, MAX_PEERS, Normal

MAX_DECISIONS = 256  # decisions remembered (for undo and `site list`)
MAX_MUTE_SECONDS = 366 * 86400.0  # a mute lasts at most a year (flow time)
ACTIONS = ("accept", "mute", "unmute", "forget", "probation", "undo")


class DecisionError(ValueError):
    """The decision cannot be taken (an unknown incident or device...): nothing changed."""


class Decisions:
    """The decisions taken, newest last (bounded), and how to take one."""

    def __init__(self, log: list | None = None):
        self.log: list[dict] = [d for d in (log if isinstance(log, list) else [])
                                if _well_formed(d)][-MAX_DECISIONS:]

    def take(self, tracker, request: dict) -> list[dict]:
        """Apply a request ({"action", "target", "seconds", "by"}); the events it makes (its
        audit line first). DecisionError, and nothing changed, if it cannot be taken."""
        action = request.get("action")
        if action not in ACTIONS:
            raise DecisionError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
        target = str(request.get("target", ""))
        events: list = []
        if action == "undo":
            undo, key, detail = self._undo(tracker, target, events)
        else:
            undo, key, detail = getattr(self, f"_{action}")(tracker, target, request, events)
        decision = {"id": self.log[-1]["id"] + 1 if self.log else 1, "action": action,
                    "target": target, "device": key, "time": _now(tracker),
                    "by": str(request.get("by") or "?")[:64], "undo": undo, "undone": False}
        decision |= detail
        self.log.append(decision)
        del self.log[:-MAX_DECISIONS]
        device = tracker.devices.get(key)
        line = {k: v for k, v in decision.items() if k not in ("undo", "device", "undone")}
        return [{"time": decision["time"], "event_type": "decision",
                 "device": device_label(key, device.ip if device else None),
                 "decision": line}] + events

    # -- the actions ----------------------------------------------------------------------------

    def _accept(self, tracker, target, request, events):
        key, peers, ports = _incident(tracker, target)
        device = _device(tracker, key)
        normal = device.normal
        new_peers = [p for p in peers if p not in normal.peers and p not in ("other", "?")]
        normal.peers = normal.peers | frozenset(new_peers[:max(0, MAX_PEERS - len(normal.peers))])
        added = []
        if normal.services is not None:
            numbers = [tracker.index.number(p) for p in ports if p != "other"]
            room = max(0, MAX_NORMAL_SERVICES - len(normal.services))
            added = [n for n in numbers if n >= 0 and n not in normal.services][:room]
            normal.services = normal.services | frozenset(added)
        tracker.normals.adopt(key, normal)
        if device.episode is not None and device.episode.incident == int(target):
            tracker._end(device, events, "accepted by the operator")
        return ({"peers": sorted(normal.peers & frozenset(new_peers)),
                 "services": [tracker.index.name(n) for n in added]}, key,
                {"incident": int(target), "peers": new_peers,
                 "services": [tracker.index.name(n) for n in added]})

    def _mute(self, tracker, target, request, events):
        device = _device(tracker, target)
        seconds = request.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or \
                not 0 < seconds <= MAX_MUTE_SECONDS:
            raise DecisionError(f"mute needs a duration of at most a year (e.g. --for 7d), "
                                f"not {seconds!r}")
        was = device.normal.muted
        until = _now(tracker) + float(seconds)
        _set_mute(tracker, device, until, events)
        return {"muted": was}, target, {"until": until}

    def _unmute(self, tracker, target, request, events):
        device = _device(tracker, target)
        if device.normal.muted is None:
            raise DecisionError(f"{target} is not muted")
        was = device.normal.muted
        _set_mute(tracker, device, None, events)
        return {"muted": was}, target, {}

    def _forget(self, tracker, target, request, events):
        from .incident_state import _device as dump_device

        device = _device(tracker, target)
        if device.episode is not None:
            tracker._end(device, events, "forgotten by the operator")
        saved = dump_device(device, tracker.index.name)
        del tracker.devices[target]
        for table in (tracker.active, tracker.resumable, tracker.muted, tracker.evicted_new):
            table.pop(target, None)
        tracker.normals.forget(target)
        return {"device": saved}, target, {}

    def _probation(self, tracker, target, request, events):
        from .incident_state import _normal as dump_normal

        device = _device(tracker, target)
        before = dump_normal(device.normal, tracker.index.name)
        fresh = tracker.normals.start(target, _now(tracker))
        if fresh.stage != "probation":  # known to the bundle: its own threshold goes too
            fresh.stage, fresh.ratio = "probation", None
        fresh.joined = device.normal.joined
        fresh.muted, fresh.peers = device.normal.muted, device.normal.peers
        device.normal = fresh
        tracker.normals.adopt(target, fresh)
        return {"normal": before}, target, {}

    def _undo(self, tracker, target, events):
        from .incident_state import _device_from, _normal_from

        decision = next((d for d in self.log if str(d["id"]) == target), None)
        if decision is None:
            raise DecisionError(f"no decision {target} (see `edge-ids site list`)")
        if decision["undone"] or decision["action"] == "undo":
            raise DecisionError(f"decision {target} cannot be undone (already undone, or an "
                                f"undo itself)")
        key, undo, action = decision["device"], decision["undo"], decision["action"]
        if action == "forget":
            if key in tracker.devices:
                raise DecisionError(f"{key} came back since it was forgotten")
            device = _device_from(undo["device"], tracker.index.number)
            device.episode = device.ended = None
            tracker.devices[key] = device
            tracker.normals.adopt(key, device.normal)
        else:
            device = _device(tracker, key)
            normal: Normal = device.normal
            if action == "accept":
                normal.peers = normal.peers - frozenset(undo["peers"])
                if normal.services is not None:
                    normal.services = normal.services - frozenset(
                        tracker.index.number(s) for s in undo["services"])
            elif action in ("mute", "unmute"):
                _set_mute(tracker, device, undo["muted"], events)
            elif action == "probation":
                device.normal = _normal_from(undo["normal"], tracker.index.number)
            tracker.normals.adopt(key, device.normal)
        _sync_mute(tracker, tracker.devices[key])
        decision["undone"] = True
        return None, key, {"undoes": decision["id"], "undone_action": action}


def _now(tracker) -> float:
    import math
    import time

    return tracker.clock if math.isfinite(tracker.clock) else time.time()


def _device(tracker, key: str):
    device = tracker.devices.get(key)
    if device is None:
        raise DecisionError(f"no device {key!r} is remembered (see `edge-ids site list`)")
    return device


def _incident(tracker, target: str) -> tuple[str, list, list]:
    """(device key, peers, services) of an open or recent incident."""
    try:
        number = int(target)
    except ValueError:
        raise DecisionError(f"an incident id is a number, not {target!r}") from None
    for device in tracker.active.values():
        if device.episode.incident == number:
            return device.key, list(device.episode.peers), list(device.episode.ports)
    recent = tracker.recent.get(number)
    if recent is None:
        raise DecisionError(f"no incident {number} is open or recent (see `edge-ids site "
                            f"list`)")
    return recent


def _sync_mute(tracker, device) -> None:
    """The tracker's table of mutes says what the device's normal says (after a restore)."""
    if device.normal.muted is None:
        tracker.muted.pop(device.key, None)
    else:
        tracker.muted[device.key] = device.normal.muted


def _well_formed(decision) -> bool:
    """A decision as Decisions.take writes it (a state file's may be anything)."""
    return isinstance(decision, dict) and isinstance(decision.get("id"), int) and \
        decision.get("action") in ACTIONS and isinstance(decision.get("target"), str) and \
        isinstance(decision.get("device"), (str, type(None))) and \
        isinstance(decision.get("undone"), bool) and isinstance(decision.get("time"),
                                                                  (int, float)) and \
        isinstance(decision.get("undo"), (dict, type(None)))


def _set_mute(tracker, device, until: float | None, events: list) -> None:
    device.normal.muted = until
    if until is None:
        tracker.muted.pop(device.key, None)
        return
    tracker.muted[device.key] = until
    if device.episode is not None and device.episode.incident is not None:
        tracker._end(device, events, "muted by the operator")
