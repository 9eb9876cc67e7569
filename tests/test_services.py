"""The batch-at-once parts of the incident path (services.py, devices.Owners): each must give,
for a whole batch, exactly what the one-flow-at-a-time rule gives."""
from __future__ import annotations

import random

import numpy as np
import pytest

from edge_ids.edge_runtime.site.devices import Owners
from edge_ids.edge_runtime.site.services import ServiceIndex, service_of, services_of

CAM, HUB = "f4:b8:5e:ff:2b:1b", "24:6f:28:d9:a7:64"


def _flows(seed: int) -> list[tuple[str, str, str]]:
    """Flows' (proto, sport, dport) texts: the odd ones Argus writes, and many plain ones."""
    rng = random.Random(seed)
    flows = [("tcp", "48986", "6667"), ("tcp", "6667", "48986"), ("udp", "53", "53"),
             ("tcp", "9", "10"), ("tcp", "100", "99"), ("icmp", "", "0xd841"), ("arp", "", ""),
             ("", "", ""), ("", "80", "8080"), ("?", "", ""), ("ipv6-icmp", "0x0087", "0x0000"),
             ("tcp", "99999", "100000"), ("tcp", "0", "7"), ("udp", "080", "443"),
             ("tcp", "4a", "80"), ("udp", "\u0663", "80"), ("gre", "1", "2")]
    flows += [(rng.choice(["tcp", "udp"]), str(rng.randrange(65536)), str(rng.randrange(65536)))
              for _ in range(500)]
    return flows


def test_a_flows_service_is_its_protocol_and_the_responders_port():
    """Argus writes initiator -> responder: the destination port, whichever is lower (an
    inbound connection from a low port, UDP between two high ports)."""
    assert service_of("tcp", "48986", "6667") == "tcp/6667"
    assert service_of("tcp", "443", "51000") == "tcp/51000"  # answered on its port 51000
    assert service_of("udp", "40000", "50000") == "udp/50000"
    assert service_of("icmp", "", "0xd841") == "icmp" and service_of("arp", "", "") == "arp"
    assert service_of("tcp", "100000", "80") == "tcp" and service_of("udp", "080", "443") == \
        "udp/443"
    assert service_of("", "", "") == "?" and service_of("", "80", "8080") == "/8080"
    flows = _flows(0)
    proto, sport, dport = (np.array(c) for c in zip(*flows))
    names = services_of(proto, sport, dport).tolist()
    assert names == [f"{p}/{int(d)}" if n.count("/") else n for (p, _, d), n in zip(flows, names)]
    assert services_of(np.array([], str), np.array([], str), np.array([], str)).size == 0


def test_a_batch_s_service_numbers_are_those_of_its_flows_names():
    flows = _flows(1)
    learned = {CAM: frozenset(service_of(*f) for f in flows[::2]),
               HUB: frozenset({"?", "/80", "tcp/443", "gre"})}
    index = ServiceIndex(learned)
    proto, sport, dport = (np.array(c) for c in zip(*flows))
    numbers = index.numbers(proto, sport, dport)
    assert numbers.tolist() == [index.number(service_of(*f)) for f in flows]
    names = {service_of(*f) for f in flows}
    assert len({index.number(n) for n in names}) == len(names)  # one number a service
    assert all(index.name(index.number(n)) == n for n in names)  # and back
    assert index.number("sctp/9") != index.number("sctp") >= 0  # numbered when first seen
    assert index.numbered(np.array([service_of(*f) for f in flows])).tolist() == numbers.tolist()
    fresh = ServiceIndex(None)  # no device has services yet: the numbers are the same rule's
    assert fresh.numbers(proto, sport, dport).tolist() == \
        [fresh.number(service_of(*f)) for f in flows]


def test_protocols_are_bounded_and_devices_services_can_change():
    from edge_ids.edge_runtime.site.services import MAX_PROTOCOLS

    index = ServiceIndex({CAM: frozenset({"tcp/443"})})
    keys, devices = [CAM, HUB], np.array([0, 0, 1])
    services = index.numbered(np.array(["tcp/443", "udp/53", "udp/53"]))
    assert index.unused(keys, devices, services).tolist() == [False, True, False]
    index.set(HUB, [index.number("tcp/443")])
    index.set(CAM, [index.number("udp/53")])
    assert index.unused(keys, devices, services).tolist() == [True, False, True]
    index.drop(CAM)
    assert index.unused(keys, devices, services).tolist() == [False, False, True]
    assert index.services(CAM) is None and index.services(HUB) == {index.number("tcp/443")}
    made_up = np.array([f"p{i}" for i in range(2 * MAX_PROTOCOLS)])
    numbers = index.numbers(made_up, np.full(len(made_up), ""), np.full(len(made_up), ""))
    assert (numbers >= 0).sum() == MAX_PROTOCOLS - 2 and (numbers == -1).sum() > 0
    assert index.number("sctp/9") == -1  # no room: never a learned service, always unused


def test_unused_services_are_those_a_known_device_never_used():
    index = ServiceIndex({CAM: frozenset({"tcp/443", "udp/53"}), HUB: frozenset()})
    keys = [CAM, HUB, "02:00:00:00:00:01"]  # the last is not known: no services on record
    devices = np.array([0, 0, 0, 1, 2])
    services = np.array(["tcp/443", "udp/53", "tcp/8883", "tcp/443", "tcp/443"])
    assert index.unused(keys, devices, index.numbered(services)).tolist() == \
        [False, False, True, True, False]
    assert not ServiceIndex(None).unused(keys, devices, index.numbered(services)).any()


def test_unused_services_of_many_devices_are_what_the_rule_says_pair_by_pair():
    rng = random.Random(1)
    names = [f"{p}/{port}" for p in ("tcp", "udp") for port in (53, 80, 123, 443, 8883)] + \
        ["icmp", "arp", "?"]
    learned = {f"02:00:00:00:00:{d:02x}": frozenset(rng.sample(names, rng.randrange(4)))
               for d in range(40)}
    index = ServiceIndex(learned)
    keys = list(learned)[::3] + [f"02:00:00:00:01:{d:02x}" for d in range(5)]  # some unknown
    devices = np.array([rng.randrange(len(keys)) for _ in range(2000)])
    services = np.array([rng.choice(names + ["tcp/9999", "gre"]) for _ in range(2000)])
    expected = [keys[d] in learned and s not in learned[keys[d]]
                for d, s in zip(devices.tolist(), services.tolist())]
    assert index.unused(keys, devices, index.numbered(services)).tolist() == expected


def test_pairs_take_devices_in_the_order_they_appear_and_flows_in_record_order():
    router = ("00:1c:7f:53:d0:28", "192.168.1.1")
    cam, hub, cam_dhcp = (CAM, "192.168.1.129"), (HUB, "192.168.1.122"), (CAM, None)
    records = [(hub,), (cam, router), (), (cam,), (cam_dhcp,), (router, hub), (hub,)]
    owners = Owners(records)
    pairs = owners.pairs()
    assert pairs.keys == [HUB, CAM, router[0]]
    by_device = [(pairs.keys[d], r) for d, r in zip(pairs.devices.tolist(), pairs.rows.tolist())]
    expected = [(key, r) for key in pairs.keys for r, devices in enumerate(records)
                if any(k == key for k, _ in devices)]
    assert by_device == expected
    assert [owners.ip(r, s) for r, s in zip(pairs.rows.tolist(), pairs.slots.tolist())] == \
        [ip for key in pairs.keys for devices in records for k, ip in devices if k == key]
    assert pairs.has_ip.tolist() == [owners.ip(r, s) is not None for r, s in
                                     zip(pairs.rows.tolist(), pairs.slots.tolist())]
    assert pairs.bounds.tolist() == [0, 3, 6, 8]
    assert [owners[r] for r in range(len(records))] == records


@pytest.mark.parametrize("changed", [3, 300])
def test_devices_whose_services_change_are_looked_up_by_their_new_ones(changed):
    """A few devices changed or many (a reload): after the sorted pairs are rebuilt, each
    pair's answer is what the rule says."""
    rng = random.Random(changed)
    names = [f"tcp/{p}" for p in range(20)] + ["udp/53", "icmp"]
    learned = {f"02:00:00:00:{d // 256:02x}:{d % 256:02x}": frozenset(rng.sample(names, 3))
               for d in range(400)}
    index = ServiceIndex(learned)
    keys = list(learned)
    index.unused(keys, np.array([0]), index.numbered(np.array(["udp/53"])))  # sorted now
    for key in rng.sample(keys, changed):
        learned[key] = frozenset(rng.sample(names, 4))
        index.set(key, [index.number(n) for n in learned[key]])
    gone = keys[0]
    index.drop(gone)
    devices = np.array([rng.randrange(len(keys)) for _ in range(3000)])
    services = np.array([rng.choice(names) for _ in range(3000)])
    expected = [keys[d] != gone and s not in learned[keys[d]]
                for d, s in zip(devices.tolist(), services.tolist())]
    assert index.unused(keys, devices, index.numbered(services)).tolist() == expected
