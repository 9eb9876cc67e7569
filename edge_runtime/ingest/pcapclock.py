"""A capture file read as a live sensor reads its interface: with a clock that keeps going.

Argus's timers (a flow's status report every few seconds, its idle timeout) run on its clock.
Live, the clock is the wall clock: argus reads it every few milliseconds while no packet comes
(ArgusGetPackets in argus/ArgusSource.c). Reading a file, the clock is the last packet's time,
so on a quiet network a timer due seconds ago fires only after the next packet, and that packet
lands in the record that should have closed without it: other jitter, a sequence gap where live
argus sees an out-of-order segment. The same packets then meter differently with and without
other traffic around them (the incidents benchmark found the deadbolt's records changed by a bot
merged into the capture, and the model's scores with them), and a learning period recorded to a
file would meter unlike what the sensor sees live. So a capture is handed to argus with a tick
frame wherever a second of packet time passed: argus's timers then fire on time, as they do live,
whatever else is in the file.

One packet stamped far from its neighbours (more than STRAY_SECONDS from the packet before it
and from the one after, which agree: a sensor whose clock stepped for a moment, a file spliced
from days) would move argus's clock with it: a day ahead at the start of a capture held every
flow's timers back by hours. Such a packet is given the time of the packet before it (a first
packet ahead of the next, that of the next), and counted; a capture in time order is never
changed.

A tick is an Ethernet frame of the IEEE 802 local experimental EtherType (0x88b5, which no
device ships) between two locally administered addresses; `ra` drops its records (TICK_FILTER).
Captures of other link types are passed through without ticks. A pcapng's interfaces are given
one snapshot length (libpcap reads nothing of a file whose interfaces differ in it).

Written by hand (the standard library's struct), as pcapfile.py is: only the framing of the two
formats is walked, a few fields, and no packet library is in the runtime's dependencies.
"""
from __future__ import annotations

import math
import struct
from typing import BinaryIO, Iterator

from .pcapfile import PCAP_MAGIC, PCAPNG_MAGIC

TICK_SECONDS = 1.0  # argus's status interval is seconds: a timer fires at most this late
TICK_ETHERTYPE = 0x88B5
TICK_FILTER = f"not ether proto 0x{TICK_ETHERTYPE:04x}"
TICK_FRAME = bytes.fromhex("020000000001" "020000000002") + TICK_ETHERTYPE.to_bytes(2, "big")
ETHERNET = 1  # the link type (DLT_EN10MB) that ticks are made for
MAX_SNAPLEN = 262144  # libpcap's largest snapshot length (MAXIMUM_SNAPLEN)
LONGEST_SILENCE = 3600.0  # seconds of ticks in one silence (see Ticker)
STRAY_SECONDS = 600.0  # a packet this far from both neighbours is a stray (site/clock.py's bound)
CHUNK = 1 << 16


class Ticker:
    """The tick times due before a packet at time t: every TICK_SECONDS of packet time, on a
    fixed grid (a tick in a busy second changes nothing; one in a silent second is the point).
    A silence longer than LONGEST_SILENCE gets its first hour of ticks and then its last one:
    by then every timer of argus has fired (its timeouts are minutes), and a file that joins
    captures months apart does not become billions of ticks."""

    def __init__(self, every: float = TICK_SECONDS):
        self.every, self.next, self.last = every, None, -math.inf

    def due(self, t: float) -> Iterator[float]:
        self.last = max(self.last, t)
        if self.next is None:
            self.next = math.floor(t / self.every) * self.every + self.every
        silence_ends = self.next + LONGEST_SILENCE
        while self.next <= t:
            yield self.next
            self.next += self.every
            if self.next > silence_ends:
                self.next = max(self.next, math.floor(t / self.every) * self.every)


class Unit:
    """A piece of the capture as read: its bytes; for a packet, its time and how to write it
    with another."""

    __slots__ = ("data", "time", "restamp", "tick")

    def __init__(self, data: bytes, time: float | None = None, restamp=None, tick=None):
        self.data, self.time, self.restamp, self.tick = data, time, restamp, tick


def with_clock(stream: BinaryIO, every: float = TICK_SECONDS, after: float = 0.0,
               strays: list | None = None) -> Iterator[bytes]:
    """The capture's bytes, with tick frames inserted (pcap or pcapng; what is neither, or cut
    short, is passed on as it is: pcapfile.check_capture says what is wrong with it), and
    `after` seconds of them past the last packet: live, argus reports a flow still open at the
    end by its status timer, and so does argus here, instead of racing its own exit for it.
    A stray packet's time is replaced (see above); `strays` gets each one's (was, now)."""
    head, cut = stream.read(4), []  # (cut: the reader found the capture cut short)
    if head in PCAP_MAGIC:
        units = _pcap(stream, head, PCAP_MAGIC[head], cut)
    elif head == PCAPNG_MAGIC:
        units = _pcapng(stream, head, cut)
    else:
        units = iter([Unit(head)])
    ticker, last_tick = Ticker(every), None
    for unit in steadied(units, strays if strays is not None else []):
        if unit.time is not None and unit.tick is not None:
            last_tick = unit.tick
            for tick in ticker.due(unit.time):
                yield unit.tick(tick)
        yield unit.data
    while chunk := stream.read(CHUNK):  # (what is neither format, or not Ethernet)
        yield chunk
    if not cut and last_tick is not None and ticker.next is not None:  # the file ended whole
        for tick in ticker.due(ticker.last + after):
            yield last_tick(tick)


def steadied(units: Iterator[Unit], strays: list, bound: float = STRAY_SECONDS
             ) -> Iterator[Unit]:
    """The units, a packet stamped more than `bound` from both its neighbours (which agree)
    given the time of the one before it (the first packet: of the one after it). A packet's
    fate needs the next packet: what follows it waits with it until then."""
    held: list[Unit] = []  # the packet being judged, and what came after it
    before = None  # the time of the last packet passed on
    for unit in units:
        if unit.time is None:
            if held:
                held.append(unit)
            else:
                yield unit
            continue
        if held:
            _judge(held[0], before, unit.time, bound, strays)
            before = held[0].time
            yield from held
        held = [unit]
    if held:
        yield from held


def _judge(packet: Unit, before: float | None, after: float, bound: float, strays: list
           ) -> None:
    t = packet.time
    if before is None:  # (ahead of the next only: a capture in time order is left as it is)
        stray, to = t - after > bound, after
    else:
        stray = abs(t - before) > bound and abs(after - t) > bound and \
            abs(after - before) <= bound
        to = before
    if stray and packet.restamp is not None:
        strays.append((t, to))
        packet.data, packet.time = packet.restamp(to), to


def _pcap(stream: BinaryIO, magic: bytes, order: str, cut: list) -> Iterator[Unit]:
    header = magic + stream.read(20)
    ethernet = len(header) == 24 and \
        struct.unpack_from(order + "I", header, 20)[0] & 0xFFFF == ETHERNET
    yield Unit(header)
    if not ethernet:
        return
    fraction = 1e9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e6
    record = struct.Struct(order + "IIII")

    def tick(t: float) -> bytes:
        whole = math.floor(t)
        return record.pack(whole, round((t - whole) * fraction), len(TICK_FRAME),
                           len(TICK_FRAME)) + TICK_FRAME

    while len(packet_header := stream.read(16)) == 16:
        seconds, part, captured, length = record.unpack(packet_header)
        body = stream.read(captured)

        def restamp(t: float, captured=captured, length=length, body=body) -> bytes:
            whole = math.floor(t)
            return record.pack(whole, round((t - whole) * fraction), captured, length) + body

        yield Unit(packet_header + body, seconds + part / fraction, restamp, tick)
    if packet_header:
        cut.append(True)
        yield Unit(packet_header)  # cut short: argus reads to the cut


def _pcapng(stream: BinaryIO, magic: bytes, cut: list) -> Iterator[Unit]:
    order, tick_interface = "<", None
    interfaces: list[float] = []  # per interface of the section: its time unit, in seconds
    start = magic + stream.read(4)
    while len(start) == 8:
        if start[:4] == PCAPNG_MAGIC:  # a section: its byte order, and no interfaces yet
            rest = stream.read(4)
            order = "<" if rest == b"\x4d\x3c\x2b\x1a" else ">"
            length = struct.unpack(order + "I", start[4:8])[0]
            yield Unit(start + rest + stream.read(max(length - 12, 0)))
            interfaces, tick_interface = [], None
        else:
            kind, length = struct.unpack(order + "II", start)
            body = stream.read(max(length - 8, 0))
            if kind == 1 and len(body) >= 8:  # an interface: link type, time unit
                if struct.unpack_from(order + "H", body)[0] == ETHERNET and tick_interface is None:
                    tick_interface = len(interfaces)
                interfaces.append(_time_unit(body, order))
                # libpcap reads nothing of a file whose interfaces differ in snapshot length
                # (mergecap keeps each file's), and argus says nothing: one length for all
                body = body[:4] + struct.pack(order + "I", MAX_SNAPLEN) + body[8:]
            if len(body) < length - 8:
                cut.append(True)
                yield Unit(start + body)
                return  # cut short: argus reads to the cut, check_capture says where
            if kind == 6 and tick_interface is not None and len(body) >= 20:  # a packet
                interface, high, low = struct.unpack_from(order + "III", body)
                if interface < len(interfaces):
                    yield _packet_block(start, body, order, interfaces[interface],
                                        (order, tick_interface, interfaces[tick_interface]))
                    start = stream.read(8)
                    continue
            yield Unit(start + body)
        start = stream.read(8)
    if start:
        cut.append(True)
        yield Unit(start)


def _packet_block(start: bytes, body: bytes, order: str, unit: float, ticks: tuple) -> Unit:
    """An enhanced packet block as a unit: its time, how to write it with another, ticks."""
    _, high, low = struct.unpack_from(order + "III", body)

    def restamp(t: float) -> bytes:
        stamp = round(t / unit)
        return start + body[:4] + struct.pack(order + "II", stamp >> 32, stamp & 0xFFFFFFFF) \
            + body[12:]

    return Unit(start + body, ((high << 32) | low) * unit, restamp,
                lambda t: _tick_block(ticks[0], ticks[1], t, ticks[2]))


def _time_unit(body: bytes, order: str) -> float:
    """An interface block's if_tsresol (option 9) in seconds; microseconds without it."""
    offset = 8  # link type, reserved, snap length; then the options
    while offset + 4 <= len(body) - 4:
        code, size = struct.unpack_from(order + "HH", body, offset)
        if code == 0:
            break
        if code == 9 and size >= 1:
            value = body[offset + 4]
            return 2.0 ** -(value & 0x7F) if value & 0x80 else 10.0 ** -value
        offset += 4 + (size + 3) // 4 * 4
    return 1e-6


def _tick_block(order: str, interface: int, t: float, unit: float) -> bytes:
    stamp = round(t / unit)
    body = struct.pack(order + "IIIII", interface, stamp >> 32, stamp & 0xFFFFFFFF,
                       len(TICK_FRAME), len(TICK_FRAME)) + TICK_FRAME
    body += bytes(-len(body) % 4)
    length = 8 + len(body) + 4
    return struct.pack(order + "II", 6, length) + body + struct.pack(order + "I", length)
