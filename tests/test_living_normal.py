"""A normal that lives with the network (edge_runtime/site/normal_rule.py, normals.py, incidents.py):
devices on probation graduate with learn's own rule, normals change at their stated rate, an
incident never teaches a device that it is normal, and how batches were cut changes nothing.
Synthetic flows whose times, scores and services the test chooses."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edge_ids.edge_runtime.site.incident_settings import IncidentSettings
from edge_ids.edge_runtime.outputs.operator_page import snapshot
from edge_ids.edge_runtime.site.incidents import IncidentTracker
from edge_ids.edge_runtime.site.normal_rule import TOP_SCORES, NormalRule, Window
from edge_ids.edge_runtime.site.normals import (DAY, NEW_SERVICES_A_DAY, THRESHOLD_RATE)

T0 = 1_615_600_000.0
CAM, HUB, NEW = "f4:b8:5e:ff:2b:1b", "24:6f:28:d9:a7:64", "02:00:00:00:00:01"
RULE = NormalRule(max_fpr=0.01)


def settings(**changes) -> IncidentSettings:
    base = dict(threshold_bits=6.0, fallback_threshold=1.0, known={CAM: None, HUB: 0.5},
                services={CAM: frozenset({"tcp/443", "udp/53"}), HUB: frozenset({"tcp/1883"})},
                service_bits={CAM: 0.5, HUB: 7.0}, max_flow_bits=5.0, join_grace_minutes=2)
    return IncidentSettings(**(base | changes))


def feed(tracker, flows, size=1):
    """flows: (time, key, score, service), cut into batches of `size`."""
    events = []
    for k in range(0, len(flows), size):
        part = flows[k:k + size]
        events += tracker.observe(
            [f[0] for f in part], [f[0] - 1 for f in part], [((f[1], "192.168.1.9"),)
                                                              for f in part],
            [f[2] for f in part], None, None,
            lambda r, part=part: ("192.168.1.9", "40000", "52.1.1.1",
                                  part[r][3].split("/")[-1], part[r][3].split("/")[0]),
            [f[3] for f in part])
    return events


def of(events, kind):
    return [e for e in events if e["event_type"] == kind]


def opened(events):
    return [e for e in of(events, "incident") if e["incident"]["state"] == "open"]


def test_the_rule_on_the_device_is_learns_own_rule():
    """The threshold a device learns on the device is the one learn would set on the same
    scores (train/incident_budget.own_threshold, with scipy), up to TOP_SCORES kept."""
    from edge_ids.train.incident_budget import own_threshold, upper_bound

    assert RULE.upper_bounds == pytest.approx([upper_bound(k) for k in range(5)], rel=1e-6)
    assert RULE.graduate_flows == 231
    rng = np.random.default_rng(0)
    for n in (100, 230, 231, 300, 400, 499, 500, 1000, 3000):
        scores = rng.lognormal(size=n)
        window = Window(T0)
        for s in scores:
            window.add(float(s), 7)
        expected = own_threshold(scores, np.zeros(n, bool), 0.01)
        got = RULE.threshold(window)
        assert (got is None) == (expected is None), n
        if expected is not None:
            assert got == pytest.approx(expected, rel=1e-6), n
    window = Window(T0)  # past TOP_SCORES over the budget, the lowest kept: a higher threshold
    scores = rng.lognormal(size=5000)
    for s in scores:
        window.add(float(s), 7)
    assert RULE.threshold(window) == pytest.approx(np.sort(scores)[-TOP_SCORES], rel=1e-6)
    assert RULE.threshold(window) > own_threshold(scores, np.zeros(5000, bool), 0.01)


def test_a_window_counts_merges_and_comes_back_from_its_state():
    window, other = Window(T0), Window(T0)
    for i in range(100):
        window.add(i / 10, i % 3)
        other.add(100 + i, 5)
    window.merge(other)
    assert window.flows == 200 and len(window.top) == TOP_SCORES
    assert list(window.top) == sorted(window.top) and window.top[0] == 100 + 100 - TOP_SCORES
    assert window.services == {0: 34, 1: 33, 2: 33, 5: 100}
    halved = Window.from_state(window.to_state(str), int)
    halved.forget(60)  # a random half of its flows, twice: every other highest score
    assert halved.flows == 50 and list(halved.top) == list(window.top)[3::4]
    assert halved.top[-1] == window.top[-1] and halved.services == {0: 8, 1: 8, 2: 8, 5: 25}
    once = Window(T0)
    for service in (1, 2, 2, 3, 3, 3):
        once.add(0.1, service)
    once.forget(3)  # a service used once goes: the window may count new ones again
    assert once.services == {2: 1, 3: 1} and once.flows == 3
    names = {0: "tcp/1", 1: "tcp/2", 2: "udp/3", 5: "icmp"}
    back = Window.from_state(window.to_state(names.get), {v: k for k, v in names.items()}.get)
    assert (back.flows, list(back.top), back.services) == (200, list(window.top),
                                                           window.services)


def day_of_flows(key, start, n, score, services, jitter=None):
    """n flows spread over a day from `start`, each `score` (or score x jitter[i])."""
    return [(start + i * DAY / n, key, score * (1 if jitter is None else jitter[i]),
             services[i % len(services)]) for i in range(n)]


def test_a_new_device_graduates_on_a_measured_day_then_is_watched_as_known():
    tracker = IncidentTracker(settings())
    rng = np.random.default_rng(1)
    flows = day_of_flows(NEW, T0, 600, 0.2, ["tcp/443", "udp/53"], rng.uniform(0.5, 1.5, 600))
    events = feed(tracker, flows)
    assert of(events, "device_normal") == []  # not a day yet
    events = feed(tracker, [(T0 + DAY + 60, NEW, 0.1, "tcp/443")])
    learned = of(events, "device_normal")
    assert len(learned) == 1 and learned[0]["device_normal"]["change"] == "learned"
    body = learned[0]["device_normal"]
    grace = flows[0][0] + 120  # its set-up minutes taught nothing
    taught = [f[2] for f in flows if f[0] >= grace]
    expected = NormalRule().threshold(_window(taught))
    assert body["threshold"] == pytest.approx(expected, rel=1e-6) and body["flows"] == len(taught)
    assert body["services"] == ["tcp/443", "udp/53"] and body["stage"] == "learned"
    assert tracker.normals.threshold(NEW) == pytest.approx(expected, rel=1e-6)
    # now a flow to a service it never used is evidence, and its own threshold holds it
    assert tracker.normals.service_bits(NEW) > 0
    trouble = [(T0 + DAY + 120 + 20 * i, NEW, expected * 30, "tcp/6667") for i in range(12)]
    assert len(opened(feed(tracker, trouble))) == 1


def _window(scores):
    window = Window(T0)
    for s in scores:
        window.add(float(s), 0)
    return window


def test_a_known_quiet_device_graduates_too_and_keeps_its_services():
    tracker = IncidentTracker(settings())
    assert tracker.normals.threshold(CAM) == 1.0  # the site's, from the bundle
    events = feed(tracker, day_of_flows(CAM, T0, 600, 0.3, ["tcp/443"]) +
                  [(T0 + DAY + 10, CAM, 0.3, "tcp/443")])
    learned = of(events, "device_normal")
    assert [e["device_normal"]["change"] for e in learned] == ["learned"]
    assert learned[0]["device_normal"]["services"] == ["tcp/443", "udp/53"]
    assert tracker.normals.threshold(CAM) == pytest.approx(0.3)


def test_a_normal_changes_at_a_bounded_rate_and_at_most_once_a_day():
    plug = "02:00:00:00:00:99"  # known, its own threshold 0.5, a service worth 0.5 bits
    tracker = IncidentTracker(settings(known={CAM: None, HUB: 0.5, plug: 0.5},
                                       services={plug: frozenset({"tcp/443"})},
                                       service_bits={plug: 0.5}))
    flows = day_of_flows(plug, T0, 600, 0.2, ["tcp/443"])  # lower: it may fall by √2 at most
    # the next day: twenty odd flows (flagged, alone: episodes without incident) and ten new
    # services, three flows each (half a bit each: no incident either); the window holds both
    # days (1,250 flows: the 13th highest score is the rule's)
    day2 = day_of_flows(plug, T0 + DAY + 1, 600, 0.3, ["tcp/443"])
    day2 += [(T0 + DAY + 3000 + 4000 * k, plug, 1.0, "tcp/443") for k in range(20)]
    day2 += [(T0 + DAY + 5000 + 2500 * k + 600 * j, plug, 0.3, f"tcp/{9000 + k}")
             for k in range(10) for j in range(3)]
    events = feed(tracker, flows + sorted(day2) + [(T0 + 2 * DAY + 10, plug, 0.2, "tcp/443")])
    assert opened(events) == []
    changes = [e["device_normal"] for e in of(events, "device_normal")]
    assert len(changes) == 2 and all(c["change"] == "updated" for c in changes)
    first, second = changes
    assert first["threshold"] == pytest.approx(0.5 / THRESHOLD_RATE)  # it wanted 0.2
    assert first["proposed_threshold"] == pytest.approx(0.2)
    assert second["threshold"] == pytest.approx(0.5)  # it wanted 1.0: at most x√2 a day
    assert second["proposed_threshold"] == pytest.approx(1.0)
    assert len(second["services_added"]) == NEW_SERVICES_A_DAY
    assert set(second["services_added"]) < {f"tcp/{9000 + k}" for k in range(10)}
    times = [e["time"] for e in of(events, "device_normal")]
    assert times[1] - times[0] >= DAY


def test_an_incidents_flows_never_feed_the_normal_and_an_infected_device_never_graduates():
    tracker = IncidentTracker(settings())
    benign = [(T0 + 600 + 300 * i, NEW, 0.2, "tcp/443") for i in range(400)]  # 33 h
    bot = [(T0 + 600 + 30 * i, NEW, 50.0, "tcp/6667") for i in range(4000)]  # 33 h, 2 a minute
    events = feed(tracker, sorted(benign + bot))
    assert len(opened(events)) == 1  # one incident, open while the bot runs
    assert of(events, "device_normal") == []  # it never graduated
    device = tracker.devices[NEW]
    assert device.normal.window.flows == len([f for f in benign if f[0] >= T0 + 600 + 120])
    assert max(device.normal.window.top) < 1.0  # none of the bot's scores


@pytest.mark.parametrize("size", [2, 7, 64, 1000])
def test_graduation_and_changes_fall_on_the_same_flows_however_batches_are_cut(size):
    rng = np.random.default_rng(2)
    flows = day_of_flows(NEW, T0, 600, 0.3, ["tcp/443", "udp/53"], rng.uniform(.5, 2, 600))
    flows += day_of_flows(NEW, T0 + DAY, 600, 0.3, ["tcp/443", "tcp/80"],
                          rng.uniform(.5, 1.2, 600))
    flows += [(T0 + 2 * DAY + 5 * i, NEW, 30.0, "tcp/6667") for i in range(60)]
    flows += day_of_flows(NEW, T0 + 2 * DAY + 400, 300, 0.3, ["tcp/443"])

    def run(n):
        tracker = IncidentTracker(settings())
        events = feed(tracker, flows, n) + tracker.finish()
        return [(e["event_type"], e["time"], e.get("device_normal", {}).get("threshold"),
                 e.get("incident", {}).get("state")) for e in events  # (updates: at the batch
                if e.get("incident", {}).get("state") != "update"]  # clock, a bounded rate)

    one = run(1)
    kinds = [e[0] for e in one]
    assert kinds.count("device_normal") == 2 and ("incident", T0 + 2 * DAY, None,
                                                  "open") in one
    assert run(size) == one


def test_a_relearn_keeps_what_the_devices_learned_on_the_device():
    """learn --prior-state: a device quiet in the new period keeps the threshold it learned on
    the device (as a multiple of the new site threshold), its services join, and a device
    absent from the new period stays known."""
    from edge_ids.train.incident_budget import DeviceFlows, known_devices, prior_normals

    gone = "02:00:00:00:00:77"
    state = {"devices": [
        {"key": CAM, "ip": "192.168.1.129", "first_seen": T0, "last_seen": T0 + 9e5,
         "normal": {"stage": "learned", "ratio": 3.0, "services": ["tcp/443", "udp/123"],
                    "bits": 2.5}},
        {"key": gone, "ip": "192.168.1.77", "first_seen": T0, "last_seen": T0 + 9e5,
         "normal": {"stage": "learned", "ratio": 2.0, "services": ["tcp/8883"], "bits": 4.0}},
        {"key": NEW, "ip": "192.168.1.7", "first_seen": T0, "last_seen": T0 + 10,
         "normal": {"stage": "probation", "ratio": None, "services": None, "bits": 0.0}}]}
    priors = prior_normals(state)
    assert set(priors) == {CAM, gone}  # a device on probation taught nothing yet
    flows = DeviceFlows([((CAM, "192.168.1.129"),)] * 20, np.arange(20.0) + T0, ["tcp/443"] * 20)
    empty = DeviceFlows([], np.array([]), [])
    known = known_devices(flows, empty, {}, 0.01, True, priors, site=0.5)
    assert known[CAM]["threshold"] == pytest.approx(1.5)  # 3 x the new site's
    assert known[CAM]["services"] == ["tcp/443", "udp/123"]
    assert known[gone]["threshold"] == pytest.approx(1.0) and known[gone]["services"] == \
        ["tcp/8883"] and known[gone]["prior"] == "learned on the device"
    assert known_devices(flows, empty, {}, 0.01)[CAM]["threshold"] is None  # without priors


def test_a_devices_own_incident_threshold_is_learns_tail_rule_on_its_own_episodes():
    """The tail rule on the device (tables, no scipy) gives what learn's gives (scipy), and a
    device on probation that keeps brushing against the incident threshold gets its own, above
    the bundle's (at first at most twice it, then rising at most by √2 a day), in its line."""
    from edge_ids.edge_runtime.site.normal_rule import POISSON_90, TailRule
    from edge_ids.train.incident_budget import _tail_threshold, upper_bound

    assert POISSON_90 == pytest.approx([upper_bound(k) for k in range(12)], rel=1e-6)
    rng = np.random.default_rng(3)
    rule = TailRule()
    for n, weeks in ((6, 0.5), (12, 1.0), (30, 2.0), (40, 12.0)):
        peaks = list(rng.exponential(1.5, n))
        expected, _ = _tail_threshold(peaks, weeks, 1.0)
        got, _ = rule.threshold(sorted(peaks, reverse=True)[:rule.peaks_kept], weeks, 1.0)
        assert got == pytest.approx(expected, rel=1e-5), (n, weeks)
    tracker = IncidentTracker(settings())
    # every 40 minutes two odd flows a minute apart: episodes peaking at 5 to 5.9 bits,
    # under the bundle's 6, again and again
    extra = rng.uniform(0.6, 1.5, 80)
    flows = [(T0 + 2400 * i + dt, CAM, score, "tcp/443") for i in range(80)
             for dt, score in ((0, 32.0), (61, 2 ** extra[i]))]
    events = feed(tracker, flows)
    assert opened(events) == []
    changes = [e["device_normal"] for e in of(events, "device_normal")]
    own = [c["incident_threshold_bits"] for c in changes if "incident_threshold_bits" in c]
    assert own and 6.0 < own[0] <= 2 * 6.0 + 1e-3  # the first: one step, at most doubling
    assert all(b <= a * THRESHOLD_RATE + 1e-3 for a, b in zip(own, own[1:]))
    assert tracker.open_threshold(tracker.devices[CAM]) == pytest.approx(own[-1], abs=1e-3)


@pytest.mark.parametrize("size", [3, 16, 200])
def test_its_own_incident_threshold_falls_on_the_same_flow_however_batches_are_cut(size):
    """Episodes ending inside a batch add peaks that may make the device's daily check due:
    the check, and so its own incident threshold, falls on the same flow for any cut."""
    rng = np.random.default_rng(4)
    extra = rng.uniform(0.6, 1.5, 120)
    flows = [(T0 + 2400 * i + dt, CAM, score, "tcp/443") for i in range(120)
             for dt, score in ((0, 32.0), (61, 2 ** extra[i]))]
    flows += [(T0 + 2400 * i + 900, HUB, 0.1, "tcp/1883") for i in range(120)]  # a clock
    flows.sort()

    def run(n):
        tracker = IncidentTracker(settings())
        events = feed(tracker, flows, n)
        return [(e["time"], e["device_normal"].get("incident_threshold_bits"))
                for e in of(events, "device_normal")]

    one = run(1)
    assert len(one) >= 2 and run(size) == one


def test_the_page_shows_each_devices_stage_its_last_change_and_a_mute():
    from edge_ids.edge_runtime.outputs.page_render import render

    tracker = IncidentTracker(settings())
    rng = np.random.default_rng(1)
    feed(tracker, day_of_flows(NEW, T0, 600, 0.2, ["tcp/443"], rng.uniform(.5, 1.5, 600))
         + [(T0 + DAY + 60, NEW, 0.1, "tcp/443"), (T0 + DAY + 70, CAM, 0.1, "tcp/443")])
    tracker.devices[CAM].normal.muted = T0 + 3 * DAY
    page = render({"devices": snapshot(tracker), "incidents": [], "now": tracker.clock,
                   "model": "m"})
    rows = {line.split("data-device='")[1].split("'")[0]: line
            for line in page.splitlines() if "<tr class='device" in line}
    assert "learned here" in rows[NEW] and "normal changed 2021-03-14" in rows[NEW]
    assert "on probation" in rows[CAM] and "muted until 2021-03-16" in rows[CAM]


def test_a_late_flow_resuming_an_episode_finds_none_of_its_flows_learned():
    """The clock (another device's flow) ends the cam's episode; a late flow of the cam resumes
    it and it becomes an incident: its flows never fed the normal, whatever the batches."""
    t = T0 + 10 * 3600
    flows = [(t, CAM, 3.0, "tcp/443"), (t + 1900, HUB, 0.1, "tcp/1883"),
             (t + 100, CAM, 3.5, "tcp/443")]
    flows += [(t + 120 + 60 * i, CAM, 32.0, "tcp/443") for i in range(6)]

    def run(size):
        tracker = IncidentTracker(settings())
        events = feed(tracker, flows, size)
        normal = tracker.devices[CAM].normal
        return (len(opened(events)), normal.window.flows, list(normal.window.top),
                list(normal.peaks))

    assert run(1) == run(len(flows)) == (1, 0, [], [])
