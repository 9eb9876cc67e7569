"""Devices and incidents on the device side (edge_runtime/site/devices.py, incidents.py, watch.py):
which device a flow belongs to, and how flagged flows become one incident per device, with
synthetic flows whose times and scores the test chooses."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edge_ids.edge_runtime.outputs.alerts import event_lines, iso
from edge_ids.edge_runtime.site.devices import DeviceMap, HomeNet, parse_home_net, unicast_mac
from edge_ids.edge_runtime.site.incident_settings import IncidentSettings, SettingsError, \
    read_settings
from edge_ids.edge_runtime.site.incidents import IncidentTracker
from edge_ids.edge_runtime.ingest.records import RawSchema, parse_lines
from edge_ids.edge_runtime.site.services import service_of
from edge_ids.edge_runtime.model.detector import Verdicts
from edge_ids.edge_runtime.watch import WATCH_RECORDS, DeviceWatch, Stacked

T0 = 1_615_600_000.0
CAM, HUB, NEW = "f4:b8:5e:ff:2b:1b", "24:6f:28:d9:a7:64", "02:00:00:00:00:01"


def test_home_net_holds_the_private_ranges_and_never_multicast_or_broadcast():
    net = HomeNet()
    assert net.classify("192.168.1.129") == net.classify("10.1.2.3") == "local"
    assert net.classify("fe80::1") == net.classify("fd00::5") == "local"
    assert net.classify("8.8.8.8") == net.classify("2001:db8::1") == "public"  # the internet
    assert net.classify("169.254.3.4") is None and net.classify("127.0.0.1") is None
    for address in ("224.0.0.251", "239.255.255.250", "255.255.255.255", "192.168.1.255",
                    "ff02::1"):
        assert net.classify(address) is None, address
    assert net.classify("0.0.0.0") == "unspecified"
    assert net.classify("f4:b8:5e:ff:2b:1b") is None  # a MAC in Argus's address column
    assert HomeNet(["192.168.1.0/24"]).classify("192.168.2.7") is None
    with pytest.raises(ValueError, match=r"--home-net '192\.168\.1\.300/24' is not a network"):
        parse_home_net(["192.168.1.300/24"])


def test_unicast_macs_only():
    assert unicast_mac("F4:B8:5E:FF:2B:1B") == CAM
    assert unicast_mac("Broadcast") is None and unicast_mac("ff:ff:ff:ff:ff:ff") is None
    assert unicast_mac("01:00:5e:7f:ff:fa") is None and unicast_mac("") is None


def columns(*flows):
    """(src, src mac, dst, dst mac) rows as the parser's text columns."""
    names = ("SrcAddr", "SrcMac", "DstAddr", "DstMac")
    return {n: np.array([f[i] for f in flows]) for i, n in enumerate(names)}


def test_a_flow_belongs_to_its_local_endpoints_by_mac():
    devices = DeviceMap(HomeNet(), ("SrcAddr", "DstAddr", "SrcMac", "DstMac"))
    owners = devices.attribute(columns(
        ("192.168.1.129", CAM, "52.70.158.224", "00:1c:7f:53:d0:28"),  # to the internet
        ("192.168.1.129", CAM, "192.168.1.1", "00:1c:7f:53:d0:28"),  # to the router: both
        ("192.168.1.129", CAM, "192.168.1.1", "Broadcast"),  # ARP: the router by its MAC
        ("0.0.0.0", CAM, "255.255.255.255", "Broadcast"),  # DHCP: the client by its MAC
        (CAM, CAM, "Broadcast", "Broadcast"),  # LLC: no IP, no device
        ("192.168.1.77", "", "8.8.8.8", "")))  # no MACs in this layout: by address
    assert owners[0] == ((CAM, "192.168.1.129"),)
    assert owners[1] == ((CAM, "192.168.1.129"), ("00:1c:7f:53:d0:28", "192.168.1.1"))
    assert owners[2] == owners[1]
    assert owners[3] == ((CAM, None),)
    assert owners[4] == ()
    assert owners[5] == (("192.168.1.77", "192.168.1.77"),)



def test_the_parsers_key_fields_give_each_flow_the_devices_found_one_flow_at_a_time():
    """The daemon's batch path (key fields from the parser, answers remembered by number,
    a binding learned mid-batch) against the same flows resolved one by one."""
    names = ("SrcAddr", "SrcMac", "DstAddr", "DstMac", "Dur")
    schema = RawSchema.of(names, ignored=names[:4])
    flows = [("192.168.1.50", "", "8.8.8.8", ""),  # no MAC yet: by its address
             ("192.168.1.129", CAM, "52.70.158.224", "00:1c:7f:53:d0:28"),
             (" 192.168.1.50", "02:00:00:00:00:50 ", "8.8.8.8", "00:1c:7f:53:d0:28"),  # binds
             ("192.168.1.50", "", "8.8.8.8", ""),  # now by that MAC
             ("192.168.1.129", CAM, "192.168.1.50", "Broadcast"),  # both, one by binding
             ("0.0.0.0", CAM, "255.255.255.255", "Broadcast")]
    lines = [",".join(f + ("1.5",)).encode() + b"\n" for f in flows]
    lines.insert(3, b"192.168.1.9,,8.8.8.8,,not-a-number\n")  # rejected: fields stay aligned
    devices, alone = DeviceMap(HomeNet(), names), DeviceMap(HomeNet(), names)
    parse = (lambda batch: parse_lines(batch, schema, keep_text=names[:4],
                                       keep_fields=devices.key_columns))
    devices.owners(parse(lines[:1])[0])  # remembered by its address, until the binding
    alone.attribute(columns(flows[0]))
    records, rejected = parse(lines)
    assert [x.record for x in rejected] == [4] and len(records.fields[1]) == len(flows)
    assert records.fields[1][2] == flows[2]  # the raw texts, as the line has them
    owners = devices.owners(records)
    expected = [alone.attribute(columns(f))[0] for f in flows]
    assert list(owners) == expected
    assert expected[0] == (("192.168.1.50", "192.168.1.50"),)
    assert expected[3] == (("02:00:00:00:00:50", "192.168.1.50"),)
    assert expected[4] == ((CAM, "192.168.1.129"), ("02:00:00:00:00:50", "192.168.1.50"))
    firsts = [owners.codes.tolist().index(c) for c in range(len(owners.tuples))]
    assert firsts == sorted(firsts)  # numbered in the order they first appear
    assert list(devices.owners(records.take(np.array([4, 0])))) == [expected[4], expected[3]]

def settings(**changes) -> IncidentSettings:
    base = dict(threshold_bits=6.0, fallback_threshold=1.0, known={CAM: None, HUB: 0.5},
                services={CAM: frozenset({"tcp/443", "udp/53"}), HUB: frozenset({"tcp/1883"})},
                service_bits={CAM: 0.5, HUB: 7.0}, max_flow_bits=5.0)
    return IncidentSettings(**(base | changes))


def feed(tracker, flows):
    """flows: (time, device key, score, service); one flow per batch, like a quiet network."""
    events = []
    for t, key, score, service in flows:
        flow = ("192.168.1.9", "40000", "185.244.25.235", service.split("/")[-1],
                service.split("/")[0])
        events += tracker.observe([t], [t - 1], [((key, "192.168.1.9"),)], [score], None, None,
                                  lambda r: flow, [service])
    return events


def opened(events):
    return [e for e in events if e["event_type"] == "incident" and
            e["incident"]["state"] == "open"]


def test_sustained_anomalies_open_one_incident_updated_and_closed():
    tracker = IncidentTracker(settings())
    # a flow at 8x the threshold (3 bits) every 30 s for 40 minutes, then silence
    flows = [(T0 + 30 * i, CAM, 8.0, "tcp/443") for i in range(80)]
    events = feed(tracker, flows)
    # later, normal: it closed (two records: one alone, an hour ahead, could be a stray stamp)
    events += feed(tracker, [(T0 + 7200, CAM, 0.1, "tcp/443"), (T0 + 7210, CAM, 0.1, "tcp/443")])
    states = [e["incident"]["state"] for e in events if e["event_type"] == "incident"]
    assert states[0] == "open" and states[-1] == "closed" and states.count("open") == 1
    assert 1 <= states.count("update") <= 40 / 10  # at most one every ten minutes
    first = opened(events)[0]["incident"]
    # 3 bits a minute, decaying with a 5-minute half-life, crosses 6 bits in the third minute
    assert T0 + 60 <= first["opened"] <= T0 + 180
    assert first["peers"] == [{"ip": "185.244.25.235", "flows": first["flows_flagged"]}]
    assert first["ports"][0]["port"] == "tcp/443" and math.isclose(first["max_score_ratio"], 8)
    closed = [e for e in events if e.get("incident", {}).get("state") == "closed"][0]
    assert closed["incident"]["reason"] == "no flagged flow for 30 min"
    assert closed["time"] >= T0 + 79 * 30 + 1800


def test_one_odd_flow_never_opens_an_incident_however_high_its_score():
    tracker = IncidentTracker(settings())
    events = feed(tracker, [(T0, CAM, 1e6, "tcp/443"), (T0 + 3600, CAM, 1e6, "tcp/443")])
    assert opened(events) == []  # capped at max_flow_bits (5) < the threshold (6)
    # within one minute only the strongest flow counts: a burst is one observation
    burst = feed(tracker, [(T0 + 9000 + s, CAM, 1e3, "tcp/443") for s in range(0, 50, 5)])
    assert opened(burst) == []


def test_a_new_service_adds_the_devices_own_evidence():
    tracker = IncidentTracker(settings())
    # the hub never used tcp/6667: 7 bits for that alone, plus 1 bit (2x its threshold 0.5)
    events = feed(tracker, [(T0, HUB, 1.0, "tcp/6667")])
    assert len(opened(events)) == 1
    assert feed(IncidentTracker(settings()), [(T0, HUB, 1.0, "tcp/1883")]) == []
    # a flow that looks normal (0.1 < 0.5) to a new service says at most max_flow_bits (5):
    # never an incident alone, however chatty the hub was while learning
    assert opened(feed(IncidentTracker(settings()), [(T0, HUB, 0.1, "tcp/6667")])) == []


def test_a_device_with_an_open_incident_never_opens_a_second():
    tracker = IncidentTracker(settings())
    events = feed(tracker, [(T0 + 20 * i, HUB, 100.0, "tcp/6667") for i in range(200)])
    assert len(opened(events)) == 1


def test_a_new_device_is_named_once_and_stays_watched():
    """Named once; its set-up (its first minutes) is no evidence; never blind afterwards:
    trouble later opens incidents again."""
    tracker = IncidentTracker(settings())
    noisy = [(T0 + 20 * i, NEW, 50.0, "tcp/80") for i in range(100)]  # 33 minutes at the cap
    later = [(T0 + 20000 + 20 * i, NEW, 50.0, "tcp/80") for i in range(100)]
    events = feed(tracker, noisy) + feed(tracker, later)
    assert [e["event_type"] for e in events].count("new_device") == 1
    new = [e for e in events if e["event_type"] == "new_device"][0]
    assert new["device"]["mac"] == NEW and new["time"] == T0
    incidents = opened(events)
    assert len(incidents) == 2 and all(i["incident"]["new_device"] for i in incidents)
    grace = 60 * settings().join_grace_minutes
    # 5 bits a minute crosses 6 in the second minute after the grace, counted from there
    assert T0 + grace + 60 <= incidents[0]["incident"]["opened"] <= T0 + grace + 120
    assert incidents[0]["incident"]["first_flow"] >= T0 + grace - 1
    # a burst as long as the grace, right after joining: nothing; the same burst later: one
    burst = [(T0 + 30 * i, "02:00:00:00:00:02", 50.0, "tcp/80") for i in range(4)]
    later = [(T0 + 9000 + 30 * i, "02:00:00:00:00:02", 50.0, "tcp/80") for i in range(4)]
    assert opened(feed(tracker, burst)) == []
    assert len(opened(feed(tracker, later))) == 1


def test_a_late_flow_resumes_its_episode_instead_of_starting_anew():
    """Argus reports a flow late (another device moved the clock on): it still belongs to the
    episode it happened in, so the evidence is the same as in time order."""
    def run(order):
        tracker = IncidentTracker(settings(threshold_bits=math.inf), record_peaks=True)
        for t, key in order:  # the cam's flows are flagged, the hub's is normal
            feed(tracker, [(t, key, 8.0, "tcp/443") if key == CAM else (t, key, 0.1,
                                                                            "tcp/1883")])
        tracker.finish()
        return sorted(tracker.episode_peaks)
    cam = [(T0 + 60 * i, CAM) for i in (0, 1, 2)]
    in_order = run(cam + [(T0 + 4000, HUB)])
    late = run(cam[:2] + [(T0 + 2100, HUB), cam[2]])  # the hub's flow moved the clock first
    assert late == in_order and len(late) == 1


def test_a_devices_incidents_do_not_depend_on_how_its_flows_were_batched():
    """The cam's flows in their order, some of them also the router's (DHCP, DNS): cut into
    batches of any size, the same incidents. Grouped by a flow's devices, a batch once took the
    cam's flows with the router after its own later ones, and its evidence moved with where
    the batches were cut (how much else the network did)."""
    router = ("00:1c:7f:53:d0:28", "192.168.1.1")
    flows = [(T0 + 50 * i + (i % 3), 0.1 if i % 5 == 0 else 8.0 if i % 4 else 30.0, i % 2 == 0)
             for i in range(60)]  # every fifth not flagged: counted as seen, in its place

    def run(size):
        tracker, events = IncidentTracker(settings(threshold_bits=4.0), record_peaks=True), []
        for k in range(0, len(flows), size):
            part = flows[k:k + size]
            owners = [((CAM, "192.168.1.129"),) + ((router,) if both else ())
                      for _, _, both in part]
            events += tracker.observe([t for t, _, _ in part], [t - 1 for t, _, _ in part],
                                      owners, [s for _, s, _ in part], None, None,
                                      lambda r: ("192.168.1.129", "68", "192.168.1.1", "67",
                                                 "udp"),
                                      ["udp/53" if s < 1 else "udp/67" for _, s, _ in part])
        events += tracker.finish()
        return [(e["incident"]["state"], e["incident"]["opened"], e["incident"]["peak_bits"],
                 e["incident"]["flows_seen"], e["incident"]["flows_flagged"])
                for e in events if e["event_type"] == "incident"
                and e["incident"]["state"] != "update"], tracker.episode_peaks

    one_by_one = run(1)
    assert one_by_one[0] and all(run(size) == one_by_one for size in (2, 3, 7, 60))


def test_every_structure_stays_within_its_bound_after_100000_new_macs():
    """A host spoofing MACs (100,000 in flow time, each odd and then gone) through the daemon's
    watch: every structure the tracker and the device map keep stays within its bound. An
    evicted device used to go back into the resumable episodes, which every batch scans."""
    from edge_ids.benchmarks.detection.churn import churn_watch, feed
    from edge_ids.edge_runtime.site import devices as d, incidents as i, roster

    watch = churn_watch(max_devices=1000)
    tracker, dmap = watch.tracker, watch.map
    largest = dict.fromkeys(("devices", "active", "resumable", "muted", "recent", "own",
                             "bits", "indexed", "bindings", "memo"), 0)
    for k in range(100):  # 1,000 MACs a batch, a hundred a second (benchmarks/.../churn.py)
        feed(watch, k)
        sizes = {"devices": len(tracker.devices), "active": len(tracker.active),
                 "resumable": len(tracker.resumable), "muted": len(tracker.muted),
                 "recent": len(tracker.recent), "own": len(tracker.normals.own),
                 "bits": len(tracker.normals.bits), "indexed": len(tracker.index.devices),
                 "bindings": len(dmap.bindings()), "memo": len(dmap._memo)}
        largest = {n: max(largest[n], sizes[n]) for n in largest}
    # each named once (but x.x.x.255: a broadcast address, never a device)
    assert tracker.new_devices == sum(1 for n in range(100_000) if n % 256 != 255)
    assert largest["devices"] == 1000 and largest["resumable"] <= 1000
    assert largest["active"] <= i.MAX_EPISODES and largest["recent"] <= i.RECENT_INCIDENTS
    assert max(largest["own"], largest["bits"], largest["indexed"], largest["muted"]) <= 1000
    assert largest["bindings"] <= d.BINDINGS_LIMIT and largest["memo"] <= d.MEMO_LIMIT
    assert len(tracker.evicted_new) <= roster.NEW_DEVICES_REMEMBERED


def test_services_are_the_protocol_and_the_responders_port():
    assert service_of("tcp", "48986", "6667") == "tcp/6667"  # the responder's (Argus: dst)
    assert service_of("icmp", "", "0xd841") == "icmp" and service_of("arp", "", "") == "arp"


def test_event_lines_carry_the_flows_own_times():
    tracker = IncidentTracker(settings())
    events = feed(tracker, [(T0 + 20 * i, HUB, 100.0, "tcp/6667") for i in range(3)])
    line = event_lines(events, {"model_sha256": "x", "dataset": "flows"})
    assert line.endswith("\n") and '"timestamp":"2021-03-13T01:46:40.000000+0000"' in line
    assert '"event_type":"incident"' in line and '"src_mac":"24:6f:28:d9:a7:64"' in line
    assert iso(T0 + 0.25) == "2021-03-13T01:46:40.250000+0000"


def manifest(**changes):
    devices = {"home_net": ["192.168.0.0/16"], "fallback_threshold": 0.01, "known": {
        CAM: {"ip": "192.168.1.129", "threshold": None, "services": ["tcp/443"],
              "new_service_bits": 1.5}}}
    incidents = {"threshold_bits": 8.0, "max_flow_bits": 5.0, "half_life_seconds": 300,
                 "close_after_seconds": 1800, "update_every_seconds": 600}
    return {"devices": devices | changes.get("devices", {}),
            "incidents": incidents | changes.get("incidents", {})}


def test_the_bundles_settings_are_read_and_checked():
    read = read_settings(manifest(), 0.01)
    assert read.threshold(CAM) == 0.01 and read.new_service_bits(CAM, "udp/1") == 1.5
    assert read_settings({}, 0.01) is None  # a bundle that knows no devices
    bad = [({"devices": {"fallback_threshold": 0.02}}, "is not the anomaly threshold"),
           ({"incidents": {"threshold_bits": float("nan")}}, "not a finite number"),
           ({"incidents": {"half_life_seconds": 0}}, r"not a finite number > 0"),
           ({"devices": {"home_net": ["nonsense"]}}, "is not a network")]
    for change, message in bad:
        with pytest.raises(SettingsError, match=message):
            read_settings(manifest(**change), 0.01)
    with pytest.raises(SettingsError, match="no \"incidents\" object"):
        read_settings({"devices": manifest()["devices"]}, 0.01)


def test_a_quiet_devices_own_threshold_holds_the_budget_at_90_percent_confidence():
    from edge_ids.train.incident_budget import own_threshold

    rng = np.random.default_rng(0)
    scores, nobody = rng.random(1000), np.zeros(1000, bool)
    busy = own_threshold(scores, nobody, 0.01)  # 10 expected: the budget's share exactly
    assert (scores > busy).sum() == 10
    quiet = own_threshold(scores[:300], nobody[:300], 0.01)  # 3 expected: not measurable
    assert quiet == scores[:300].max() and (scores[:300] > quiet).sum() == 0
    assert (scores[:400] > own_threshold(scores[:400], nobody[:400], 0.01)).sum() == 1
    assert own_threshold(scores[:230], nobody[:230], 0.01) is None  # too few: the site's
    named = nobody[:300].copy()
    named[0] = True  # one flow the classifier names already spends more than the bound allows
    assert own_threshold(scores[:300], named, 0.01) is None


def test_under_a_backlog_the_watch_observes_batches_together_and_loses_none():
    """`later` (more lines waiting): batches wait until WATCH_RECORDS records do, and are then
    observed as one batch would be; finish() observes what still waits."""
    names = ("SrcAddr", "Sport", "DstAddr", "Dport", "Proto", "SrcMac", "DstMac", "LastTime",
             "StartTime", "Dur")
    schema = RawSchema.of(names, ignored=names[:9])
    n, half = WATCH_RECORDS + 200, WATCH_RECORDS // 2
    lines = [f"192.168.1.129,40000,185.244.25.235,{443 if i < 100 else 23},tcp,{CAM},"
             f"00:1c:7f:53:d0:28,{T0 + i / 2},{T0 + i / 2 - 1},1".encode() for i in range(n)]
    scores = np.where(np.arange(n) < 100, 0.1, 8.0)  # a flow every 0.5 s, odd from the 100th

    def observe(watch, rows, later=False):
        records, _ = parse_lines(lines[rows], schema, keep_text=watch.text_columns,
                                 keep_fields=watch.key_columns)
        owners, _ = watch.devices(records)
        verdicts = Verdicts(np.zeros(len(records), np.intp), {}, anomaly_scores=scores[rows])
        return watch.observe(records, verdicts, owners, later=later)

    chunks = DeviceWatch(settings(), names)
    first = observe(chunks, slice(0, WATCH_RECORDS))
    rest = observe(chunks, slice(WATCH_RECORDS, n))
    last = chunks.finish()
    assert [e["incident"]["state"] for e in first + rest + last] == ["open", "closed"]
    waiting = DeviceWatch(settings(), names)
    got = [observe(waiting, rows, later=True)
           for rows in (slice(0, half), slice(half, WATCH_RECORDS), slice(WATCH_RECORDS, n))]
    assert got == [[], first, []]  # the first half waits; with the second, both are observed
    assert waiting.finish() == rest + last  # what waits at the end is not lost


def test_batches_waiting_together_are_read_row_by_row_as_one_array():
    parts = [np.arange(3), np.arange(3, 4), np.arange(4, 9).reshape(5, 1)[:, 0]]
    stacked = Stacked(parts)
    assert [int(stacked[r]) for r in range(9)] == list(range(9))
    assert [stacked.locate(r) for r in (0, 3, 8)] == [(0, 0), (1, 0), (2, 4)]
