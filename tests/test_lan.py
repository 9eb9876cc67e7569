"""Who a device is on a real network (edge_runtime/site/devices.py, lan.py) and how many lines a
storm of new devices may write (announce.py, the webhook's queue): an ARP sweep, a routed
subnet, dual-stack IPv6, randomised MACs, a MAC flood."""
from __future__ import annotations

import numpy as np

from edge_ids.edge_runtime.ingest.records import RawSchema, parse_lines
from edge_ids.edge_runtime.model.detector import Verdicts
from edge_ids.edge_runtime.site.announce import NEW_DEVICE_LINES
from edge_ids.edge_runtime.site.devices import DeviceMap, HomeNet
from edge_ids.edge_runtime.site.incident_settings import IncidentSettings
from edge_ids.edge_runtime.site.lan import locally_administered
from edge_ids.edge_runtime.outputs.webhook import PushQueue
from edge_ids.edge_runtime.watch import DeviceWatch

T0 = 1_615_600_000.0
CAM, HUB, ROUTER = "f4:b8:5e:ff:2b:1b", "24:6f:28:d9:a7:64", "00:1c:7f:53:d0:28"
BROADCAST = "ff:ff:ff:ff:ff:ff"
NAMES = ("SrcAddr", "Sport", "DstAddr", "Dport", "Proto", "SrcMac", "DstMac", "LastTime",
         "StartTime", "Dur")


def owners(*flows):
    """Each (src, src MAC, dst, dst MAC) flow's devices, resolved in order as the daemon does."""
    names = ("SrcAddr", "SrcMac", "DstAddr", "DstMac")
    devices = DeviceMap(HomeNet(), names)
    return devices.attribute({n: np.array([f[i] for f in flows]) for i, n in enumerate(names)})


def watch_events(flows, known=(CAM, HUB, ROUTER), score=0.1, services=None):
    """The device events of (time, src, src MAC, dst, dst MAC, proto, dport) flows, each of this
    anomaly score, through the daemon's watch."""
    services = services or {}
    settings = IncidentSettings(threshold_bits=6.0, fallback_threshold=1.0,
                                known=dict.fromkeys(known), max_flow_bits=5.0,
                                services={k: frozenset(v) for k, v in services.items()},
                                service_bits={k: 7.0 for k in services})
    watch = DeviceWatch(settings, NAMES)
    lines = [f"{s},40000,{d},{port},{proto},{sm},{dm},{t},{t - 1},1".encode()
             for t, s, sm, d, dm, proto, port in flows]
    records, _ = parse_lines(lines, RawSchema.of(NAMES, ignored=NAMES[:9]),
                             keep_text=watch.text_columns, keep_fields=watch.key_columns)
    found, _ = watch.devices(records)
    verdicts = Verdicts(np.zeros(len(records), np.intp), {},
                        anomaly_scores=np.full(len(records), score))
    return watch.observe(records, verdicts, found) + watch.finish(), watch


def test_an_arp_sweep_of_a_24_announces_no_address_that_never_sent():
    sweep = [(T0 + i / 10, "192.168.1.129", CAM, f"192.168.1.{i}", BROADCAST, "arp", "")
             for i in range(1, 255)]
    # two addresses answer (their own MAC): those are devices
    answers = [(T0 + 30, "192.168.1.40", "3c:71:bf:00:00:40", "192.168.1.129", CAM, "arp", ""),
               (T0 + 31, "192.168.1.41", "3c:71:bf:00:00:41", "192.168.1.129", CAM, "arp", "")]
    events, watch = watch_events(sweep + answers)
    named = sorted(e["device"]["ip"] for e in events if e["event_type"] == "new_device")
    assert named == ["192.168.1.40", "192.168.1.41"]
    assert set(watch.tracker.devices) == {CAM, "3c:71:bf:00:00:40", "3c:71:bf:00:00:41"}
    # an address without any MAC in the layout (a capture without Ethernet) is still a device
    assert owners(("192.168.1.77", "", "8.8.8.8", ""))[0] == (("192.168.1.77", "192.168.1.77"),)


def test_two_hosts_on_a_routed_subnet_are_two_devices_and_the_router_keeps_its_mac():
    found = owners(("192.168.1.129", CAM, "192.168.1.1", ROUTER),  # DNS to the router
                   ("192.168.1.77", HUB, "192.168.1.1", ROUTER),
                   ("10.0.50.5", ROUTER, "192.168.1.129", CAM),  # a VLAN's hosts, routed
                   ("10.0.50.6", ROUTER, "192.168.1.129", CAM),
                   ("10.0.50.5", ROUTER, "192.168.1.129", CAM),
                   ("192.168.1.129", CAM, "192.168.1.1", ROUTER))
    assert found[4] == (("10.0.50.5", "10.0.50.5"), (CAM, "192.168.1.129"))
    assert found[3] == (("10.0.50.6", "10.0.50.6"), (CAM, "192.168.1.129"))
    assert found[5] == ((CAM, "192.168.1.129"), (ROUTER, "192.168.1.1"))
    # a device that renews its lease in its own subnet is no router
    moved = owners(("192.168.1.129", CAM, "192.168.1.1", ROUTER),
                   ("192.168.1.130", CAM, "192.168.1.1", ROUTER))
    assert moved[1][0] == (CAM, "192.168.1.130")


def test_a_dual_stack_devices_global_ipv6_flows_are_its_own_and_never_the_gateways():
    found = owners(("192.168.1.129", CAM, "52.70.158.224", ROUTER),  # the gateway: public IPv4
                   ("2001:db8:1::129", CAM, "2606:4700::1111", ROUTER),
                   ("2606:4700::1111", ROUTER, "2001:db8:1::129", CAM),
                   ("2001:db8:7::5", "3c:71:bf:00:00:05", "2606:4700::1111", ROUTER))
    assert found[1] == found[2] == ((CAM, "2001:db8:1::129"),)
    assert found[3] == ()  # a MAC never seen with a home-net address: not known to be the LAN's
    # without public IPv4 (IPv6 only), the gateway shows by the many prefixes it carries; the
    # cam's own privacy addresses, rotating in its /64 for months, never make it one
    flows = [("fd00::129", CAM, "fd00::1", ROUTER)] + [
        (f"2001:db8:1::{i:x}", CAM, f"2606:{i:x}::1", ROUTER) for i in range(1, 200)]
    found = owners(*flows)
    assert all(o == ((CAM, f"2001:db8:1::{i:x}"),) for i, o in enumerate(found[40:], 40))
    # a dual-stack device's own ULA addresses (two, no other MAC there yet) stay its own
    ula = owners(("192.168.1.129", CAM, "192.168.1.1", ROUTER),
                 ("192.168.1.77", HUB, "192.168.1.1", ROUTER),
                 ("fd00::129", CAM, "fd00::1", ROUTER), ("fd00::12a", CAM, "fd00::1", ROUTER))
    assert ula[3][0] == (CAM, "fd00::12a")


def test_randomised_macs_are_said_so_and_a_rotation_names_the_mac_it_follows():
    assert locally_administered("da:a1:19:00:00:01") and not locally_administered(CAM)
    # a phone taking a new private MAC every 50 minutes, keeping its address
    phone = [(T0 + 3000 * i, "192.168.1.60", f"da:a1:19:00:00:{i:02x}", "192.168.1.1", ROUTER,
              "udp", "53") for i in range(20)]
    events, _ = watch_events(phone)
    lines = [e["new_device"] for e in events if e["event_type"] == "new_device"]
    assert len(lines) == 20 and all(n["randomised_mac"] for n in lines)  # a line an address
    assert "follows" not in lines[0] and [n["follows"] for n in lines[1:]] == \
        [f"da:a1:19:00:00:{i:02x}" for i in range(19)]  # each names the MAC it follows
    # devices that join with randomised MACs of their own addresses are each announced
    joins = [(T0 + 900 * i, f"192.168.1.{100 + i}", f"02:00:00:00:00:{i:02x}", "192.168.1.1",
              ROUTER, "udp", "53") for i in range(40)]
    events, _ = watch_events(joins)
    assert len([e for e in events if e["event_type"] == "new_device"]) == 40


def test_a_storm_of_new_macs_writes_a_bounded_number_of_lines_and_one_summary():
    hour = 3600 * (T0 // 3600 + 1)  # (limits count by the clock's hours)
    storm = [(hour + i, f"10.9.{i // 256}.{i % 256}", f"3c:71:bf:00:{i // 256:02x}:{i % 256:02x}",
              "192.168.1.1", ROUTER, "udp", "53") for i in range(1, 900)]
    events, watch = watch_events(storm)
    lines = [e for e in events if e["event_type"] == "new_device"]
    held = [e for e in events if e["event_type"] == "new_devices_held"]
    assert len(lines) == NEW_DEVICE_LINES and not lines[0]["new_device"]["randomised_mac"]
    assert len(held) == 1 and held[0]["new_devices_held"]["devices"] == \
        len([s for s in storm if not s[1].endswith(".255")]) - NEW_DEVICE_LINES
    assert watch.tracker.announcements.held == held[0]["new_devices_held"]["devices"]


def test_a_full_webhook_queue_keeps_incident_pushes_ahead_of_new_devices():
    pushes = PushQueue(3)
    assert [pushes.put({"event": "new_device", "n": i}) for i in range(4)] == [0, 0, 0, 1]
    assert pushes.put({"event": "incident_opened", "n": 9}) == 1  # the newest device's goes
    assert pushes.get(0.1)["event"] == "incident_opened"
    assert [pushes.get(0.1)["n"] for _ in range(2)] == [0, 1]
    assert pushes.get(0.01) is None


def test_a_scan_against_the_router_is_the_scanners_evidence_never_the_routers():
    """The cam scans the router's ports (odd flows, services neither uses): the cam's incident;
    the router, which only answered, has none. Before, both endpoints were charged."""
    scan = [(T0 + i, "192.168.1.129", CAM, "192.168.1.1", ROUTER, "tcp", str(1 + i))
            for i in range(600)]
    events, _ = watch_events(scan, score=8.0, services={CAM: {"tcp/443"},
                                                          ROUTER: {"udp/53"}})
    opened = [e["device"]["key"] for e in events if e["event_type"] == "incident"
              and e["incident"]["state"] == "open"]
    assert opened == [CAM]
    # the same flows the other way (the router scans the cam): the router's
    back = [(t, d, dm, s, sm, proto, port) for t, s, sm, d, dm, proto, port in scan]
    events, _ = watch_events(back, score=8.0, services={CAM: {"tcp/443"}, ROUTER: {"udp/53"}})
    assert [e["device"]["key"] for e in events if e["event_type"] == "incident"
            and e["incident"]["state"] == "open"] == [ROUTER]
