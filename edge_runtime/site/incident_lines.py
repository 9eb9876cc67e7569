"""What an incident's and a new device's EVE lines say (incidents.py keeps the state)."""
from __future__ import annotations

from .devices import device_label, is_mac
from .lan import locally_administered


def new_device_event(device, t: float, flow, follows: str | None = None) -> dict:
    """`follows`: the randomised MAC whose address this randomised MAC took (a rotation?)."""
    src, sport, dst, dport, proto = flow
    body = {"time": t, "event_type": "new_device",
            "device": device_label(device.key, device.ip),
            "new_device": {"first_flow": t, "flow": {"src_ip": src, "src_port": sport,
                                                     "dest_ip": dst, "dest_port": dport,
                                                     "proto": proto},
                           # a private (randomised) MAC: a phone or laptop, maybe one seen before
                           "randomised_mac": is_mac(device.key) and
                           locally_administered(device.key)}}
    if follows is not None:
        body["new_device"]["follows"] = follows
    return body


def normal_event(device, change: dict, t: float, normals) -> dict:
    """A device's normal changed (normals.py): graduated, or moved at its bounded rate."""
    normal, fallback = device.normal, normals.fallback
    body = {"change": change["change"], "stage": normal.stage,
            "threshold": None if normal.ratio is None else normal.ratio * fallback,
            "threshold_ratio": None if normal.ratio is None else round(normal.ratio, 4),
            "services": normals.service_names(normal.services or ()),
            "new_service_bits": round(normal.bits, 3), "flows": change["flows"],
            "since": change["since"]}
    if "incident_bits" in change:  # its own incident threshold (None: the bundle's)
        body["incident_threshold_bits"] = None if change["incident_bits"] is None else round(
            change["incident_bits"], 3)
    if "was_ratio" in change:
        body["was_threshold"] = change["was_ratio"] * fallback
        body["proposed_threshold"] = change["proposed_ratio"] * fallback
    if change.get("services_added"):
        body["services_added"] = normals.service_names(change["services_added"])
    return {"time": t, "event_type": "device_normal",
            "device": device_label(device.key, device.ip), "device_normal": body}


def incident_event(device, episode, state: str, t: float, threshold_bits: float, features,
                   reason: str | None = None) -> dict:
    body = {"id": episode.incident, "state": state, "new_device": device.new,
            "opened": episode.opened, "first_flow": episode.first,
            "last_flow": episode.last, "flows_flagged": episode.flagged,
            "flows_seen": episode.seen, "evidence_bits": round(episode.evidence, 3),
            "peak_bits": round(episode.peak, 3),
            "threshold_bits": round(threshold_bits, 3),
            "max_score_ratio": round(episode.max_ratio, 3),
            "peers": top(episode.peers, "ip"), "ports": top(episode.ports, "port"),
            "why": why(episode, features)}
    if episode.why_since is not None:  # the model changed under it: "why" counts since
        body["why_since"] = episode.why_since
    if reason:
        body["reason"] = reason
    return {"time": t, "event_type": "incident", "device": device_label(device.key, device.ip),
            "incident": body}


def why(episode, features) -> list[dict]:
    """The raw columns whose features the model reconstructed worst, by share of the
    evidence-weighted squared error, with the direction of the difference."""
    if episode.errors is None or not episode.errors[0].sum() > 0:
        return []
    by_column: dict[str, list] = {}
    for (column, one_hot, *_), error, sign in zip(features, episode.errors[0].tolist(),
                                                  episode.errors[1].tolist()):
        entry = by_column.setdefault(column, [0.0, 0.0, one_hot])
        entry[0] += error
        entry[1] += sign
    total = sum(e[0] for e in by_column.values())
    ranked = sorted(by_column.items(), key=lambda kv: -kv[1][0])[:3]
    return [{"feature": column, "share": round(error / total, 3),
             "direction": "unusual value" if one_hot else
             ("higher" if sign > 0 else "lower") + " than normal"}
            for column, (error, sign, one_hot) in ranked]


def top(counter: dict, name: str) -> list[dict]:
    return [{name: k, "flows": v} for k, v in sorted(counter.items(), key=lambda kv: -kv[1])[:5]]
