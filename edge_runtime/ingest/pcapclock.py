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


def with_clock(stream: BinaryIO, every: float = TICK_SECONDS, after: float = 0.0
               ) -> Iterator[bytes]:
    """The capture's bytes, with tick frames inserted (pcap or pcapng; what is neither, or cut
    short, is passed on as it is: pcapfile.check_capture says what is wrong with it), and
    `after` seconds of them past the last packet: live, argus reports a flow still open at the
    end by its status timer, and so does argus here, instead of racing its own exit for it."""
    head = stream.read(4)
    if head in PCAP_MAGIC:
        yield from _pcap(stream, head, PCAP_MAGIC[head], every, after)
    elif head == PCAPNG_MAGIC:
        yield from _pcapng(stream, head, every, after)
    else:
        yield head
    while chunk := stream.read(CHUNK):
        yield chunk


def _pcap(stream: BinaryIO, magic: bytes, order: str, every: float, after: float
          ) -> Iterator[bytes]:
    header = magic + stream.read(20)
    yield header
    if len(header) < 24 or struct.unpack_from(order + "I", header, 20)[0] & 0xFFFF != ETHERNET:
        return
    fraction = 1e9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e6
    record = struct.Struct(order + "IIII")
    ticker = Ticker(every)

    def ticks(t: float) -> Iterator[bytes]:
        for tick in ticker.due(t):
            whole = math.floor(tick)
            yield record.pack(whole, round((tick - whole) * fraction), len(TICK_FRAME),
                              len(TICK_FRAME)) + TICK_FRAME

    while len(packet_header := stream.read(16)) == 16:
        seconds, part, captured, _ = record.unpack(packet_header)
        yield from ticks(seconds + part / fraction)
        yield packet_header + stream.read(captured)
    yield packet_header
    if not packet_header and ticker.next is not None:  # the file ended whole
        yield from ticks(ticker.last + after)


def _pcapng(stream: BinaryIO, magic: bytes, every: float, after: float) -> Iterator[bytes]:
    order, tick_interface, ticker = "<", None, Ticker(every)
    interfaces: list[float] = []  # per interface of the section: its time unit, in seconds

    def ticks(t: float) -> Iterator[bytes]:
        for tick in ticker.due(t):
            yield _tick_block(order, tick_interface, tick, interfaces[tick_interface])

    start = magic + stream.read(4)
    while len(start) == 8:
        if start[:4] == PCAPNG_MAGIC:  # a section: its byte order, and no interfaces yet
            rest = stream.read(4)
            order = "<" if rest == b"\x4d\x3c\x2b\x1a" else ">"
            length = struct.unpack(order + "I", start[4:8])[0]
            yield start + rest + stream.read(max(length - 12, 0))
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
            elif kind == 6 and tick_interface is not None and len(body) >= 20:  # a packet
                interface, high, low = struct.unpack_from(order + "III", body)
                if interface < len(interfaces):
                    yield from ticks(((high << 32) | low) * interfaces[interface])
            yield start + body
            if len(body) < length - 8:
                return  # cut short: argus reads to the cut, check_capture says where
        start = stream.read(8)
    yield start
    if not start and tick_interface is not None and ticker.next is not None:  # ended whole
        yield from ticks(ticker.last + after)


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
