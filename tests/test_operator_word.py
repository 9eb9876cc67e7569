"""The operator's word (edge_runtime/site/operator_word.py): each decision does what it says, writes
an audit line, can be undone, and a decision that cannot be taken changes nothing."""
from __future__ import annotations

import copy

import pytest

from edge_ids.edge_runtime.site.incident_settings import IncidentSettings
from edge_ids.edge_runtime.site.incidents import IncidentTracker
from edge_ids.edge_runtime.site.operator_word import DecisionError, Decisions

T0 = 1_615_600_000.0
HUB, NEW = "24:6f:28:d9:a7:64", "02:00:00:00:00:01"
CLOUD, CNC = "52.1.1.1", "185.244.25.235"


def settings() -> IncidentSettings:
    return IncidentSettings(threshold_bits=6.0, fallback_threshold=1.0, known={HUB: 0.5},
                            services={HUB: frozenset({"tcp/1883"})}, service_bits={HUB: 3.0},
                            max_flow_bits=5.0, join_grace_minutes=2)


def feed(tracker, flows):
    """flows: (time, key, score, peer, service)."""
    events = []
    for t, key, score, peer, service in flows:
        proto, port = service.split("/")
        events += tracker.observe([t], [t - 1], [((key, "192.168.1.9"),)], [score], None,
                                  None, lambda r: ("192.168.1.9", "40000", peer, port, proto),
                                  [service])
    return events


def trouble(start, peer=CNC, service="tcp/6667", n=30, key=HUB):
    return [(start + 20 * i, key, 40.0, peer, service) for i in range(n)]


def states(events, key=HUB):
    return [e["incident"]["state"] for e in events if e["event_type"] == "incident"
            and e["device"]["key"] == key and e["incident"]["state"] != "update"]


def test_accept_makes_that_behaviour_the_devices_normal_and_closes_the_incident():
    tracker, decisions = IncidentTracker(settings()), Decisions()
    assert states(feed(tracker, trouble(T0))) == ["open"]
    incident = tracker.devices[HUB].episode.incident
    events = decisions.take(tracker, {"action": "accept", "target": str(incident),
                                      "by": "alice"})
    audit = events[0]
    assert audit["event_type"] == "decision" and audit["decision"]["action"] == "accept"
    assert audit["decision"]["incident"] == incident and audit["decision"]["by"] == "alice"
    assert audit["decision"]["peers"] == [CNC] and audit["decision"]["services"] == ["tcp/6667"]
    closed = [e for e in events if e["event_type"] == "incident"][0]["incident"]
    assert closed["state"] == "closed" and closed["reason"] == "accepted by the operator"
    # the same behaviour again: no incident; the same service with another peer, a higher
    # score than before: still evidence (accepting never raises a threshold)
    assert states(feed(tracker, trouble(T0 + 7200))) == []
    assert states(feed(tracker, trouble(T0 + 14400, peer="203.0.113.9"))) == ["open"]
    # undone: the accepted peer is evidence again
    undo = decisions.take(tracker, {"action": "undo", "target": "1"})
    assert undo[0]["decision"]["undoes"] == 1 and decisions.log[0]["undone"]
    assert CNC not in tracker.devices[HUB].normal.peers
    assert "tcp/6667" not in {tracker.index.name(n) for n in tracker.devices[HUB].normal.services}
    with pytest.raises(DecisionError, match="cannot be undone"):
        decisions.take(tracker, {"action": "undo", "target": "1"})


def test_mute_silences_a_device_for_a_while_in_flow_time_and_unmute_ends_it():
    tracker, decisions = IncidentTracker(settings()), Decisions()
    feed(tracker, trouble(T0))
    events = decisions.take(tracker, {"action": "mute", "target": HUB, "seconds": 3 * 3600})
    assert events[0]["decision"]["until"] == tracker.clock + 3 * 3600
    assert states(events) == ["closed"] and "muted by the operator" in str(events)
    window = tracker.devices[HUB].normal.window.flows
    assert states(feed(tracker, trouble(T0 + 3600))) == []  # muted: nothing opens
    assert tracker.devices[HUB].normal.window.flows == window  # and nothing is learned
    assert states(feed(tracker, trouble(T0 + 4 * 3600))) == ["open"]  # the mute ran out
    with pytest.raises(DecisionError, match="duration"):
        decisions.take(tracker, {"action": "mute", "target": HUB})
    decisions.take(tracker, {"action": "mute", "target": HUB, "seconds": 86400})
    decisions.take(tracker, {"action": "unmute", "target": HUB})
    assert tracker.devices[HUB].normal.muted is None and HUB not in tracker.muted


def test_forget_and_probation_and_their_undo():
    tracker, decisions = IncidentTracker(settings()), Decisions()
    first = feed(tracker, [(T0, NEW, 0.1, CLOUD, "tcp/443")])
    assert [e["event_type"] for e in first] == ["new_device"]
    decisions.take(tracker, {"action": "forget", "target": NEW})
    assert NEW not in tracker.devices
    again = feed(tracker, [(T0 + 60, NEW, 0.1, CLOUD, "tcp/443")])
    assert [e["event_type"] for e in again] == ["new_device"]  # new again: announced
    decisions.take(tracker, {"action": "forget", "target": NEW})
    decisions.take(tracker, {"action": "undo", "target": "2"})
    assert NEW in tracker.devices
    normal = tracker.devices[HUB] if HUB in tracker.devices else None
    feed(tracker, [(T0 + 120, HUB, 0.1, CLOUD, "tcp/1883")])
    assert tracker.normals.threshold(HUB) == 0.5
    decisions.take(tracker, {"action": "probation", "target": HUB})
    assert tracker.devices[HUB].normal.stage == "probation"
    assert tracker.normals.threshold(HUB) == 1.0  # the site's, until it learns its own again
    decisions.take(tracker, {"action": "undo", "target": str(decisions.log[-1]["id"])})
    assert tracker.devices[HUB].normal.stage == "known" and tracker.normals.threshold(HUB) == 0.5
    del normal


def test_a_decision_that_cannot_be_taken_changes_nothing():
    tracker, decisions = IncidentTracker(settings()), Decisions()
    feed(tracker, trouble(T0))
    before = copy.deepcopy((tracker.devices[HUB].normal.peers, tracker.muted, decisions.log))
    for request, message in (({"action": "accept", "target": "99"}, "no incident 99"),
                             ({"action": "accept", "target": "x"}, "is a number"),
                             ({"action": "mute", "target": "aa:bb:cc:dd:ee:ff",
                               "seconds": 60}, "no device"),
                             ({"action": "undo", "target": "7"}, "no decision 7"),
                             ({"action": "reboot", "target": HUB}, "unknown action")):
        with pytest.raises(DecisionError, match=message):
            decisions.take(tracker, request)
    assert (tracker.devices[HUB].normal.peers, tracker.muted, decisions.log) == before
    assert tracker.devices[HUB].episode.incident is not None  # still open


def test_accepted_peers_raise_no_threshold_a_mute_ends_at_its_own_time_and_writes_json():
    import json

    tracker, decisions = IncidentTracker(settings()), Decisions()
    feed(tracker, trouble(T0))
    incident = tracker.devices[HUB].episode.incident
    decisions.take(tracker, {"action": "accept", "target": str(incident)})
    before = list(tracker.devices[HUB].normal.window.top)
    feed(tracker, trouble(T0 + 7200, n=200))  # the accepted behaviour, high scores, for hours
    assert list(tracker.devices[HUB].normal.window.top) == before  # counted, not its scores
    assert tracker.devices[HUB].normal.window.flows >= 200
    # a mute ends at its own flow time, whatever the batch: one batch over its end opens
    events = decisions.take(tracker, {"action": "mute", "target": HUB, "seconds": 600})
    until = events[0]["decision"]["until"]
    after = [(until - 300 + 20 * i, HUB, 40.0, "203.0.113.5", "tcp/23") for i in range(60)]
    lines = tracker.observe([f[0] for f in after], [f[0] - 1 for f in after],
                            [((HUB, "192.168.1.9"),)] * len(after), [f[2] for f in after],
                            None, None, lambda r: ("192.168.1.9", "40000", "203.0.113.5",
                                                   "23", "tcp"), [f[4] for f in after])
    opened = [e for e in lines if e.get("incident", {}).get("state") == "open"]
    assert opened and opened[0]["incident"]["opened"] >= until
    from edge_ids.edge_runtime.outputs.alerts import event_lines
    json.loads(event_lines(lines, {}).splitlines()[0], parse_constant=lambda c: 1 / 0)


def test_undoing_a_probation_keeps_its_mute_expiring():
    tracker, decisions = IncidentTracker(settings()), Decisions()
    feed(tracker, [(T0, HUB, 0.1, CLOUD, "tcp/1883")])
    decisions.take(tracker, {"action": "mute", "target": HUB, "seconds": 600})
    decisions.take(tracker, {"action": "probation", "target": HUB})
    decisions.take(tracker, {"action": "undo", "target": "2"})
    assert tracker.muted.get(HUB) == tracker.devices[HUB].normal.muted
    assert states(feed(tracker, trouble(T0 + 86400))) == ["open"]  # the mute ran out
