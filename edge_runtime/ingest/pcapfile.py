"""Is a capture file whole? Checked before argus reads it, because argus says neither: a file
that is not a capture gets a raw libpcap message, and a capture cut in the middle of a packet
is read to the cut without a word.

Written by hand (the standard library's struct): the two formats' framing is a few fields
(libpcap: a 24-byte header, then a 16-byte header before each packet; pcapng: blocks that
start and end with their length), and walking it is all that is needed, not a packet parser.
"""
from __future__ import annotations

import mmap
import struct
from pathlib import Path

PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",  # microseconds
              b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}  # nanoseconds
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


class BadCapture(ValueError):
    """The file is not a packet capture (the message says what it is instead)."""


def check_capture(path: str | Path) -> str | None:
    """None if the capture is whole; a sentence saying where it was cut otherwise. BadCapture
    if it is empty or not a pcap/pcapng file at all."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise BadCapture(f"{path} is empty: not a packet capture")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        magic = data[:4]
        if magic in PCAP_MAGIC:
            return _pcap_cut(data, PCAP_MAGIC[magic], path)
        if magic == PCAPNG_MAGIC:
            return _pcapng_cut(data, path)
        start = data[:8].hex(" ")
    raise BadCapture(f"{path} is not a packet capture (pcap or pcapng): it starts with "
                     f"{start}; give a file written by tcpdump, tshark or Wireshark")


def _pcap_cut(data, order: str, path: Path) -> str | None:
    if len(data) < 24:
        return f"{path} is cut inside its file header ({len(data)} of 24 bytes)"
    offset, packets = 24, 0
    header = struct.Struct(order + "IIII")
    while offset < len(data):
        if len(data) - offset < 16:
            return (f"{path} is cut inside the header of packet {packets + 1} (byte "
                    f"{offset:,} of {len(data):,}); the {packets:,} packets before it were read")
        captured = header.unpack_from(data, offset)[2]
        if offset + 16 + captured > len(data):
            return (f"{path} is cut in the middle of packet {packets + 1} (byte {offset:,} of "
                    f"{len(data):,}); the {packets:,} packets before it were read")
        offset += 16 + captured
        packets += 1
    return None


def _pcapng_cut(data, path: Path) -> str | None:
    if len(data) < 12:
        return f"{path} is cut inside its first block ({len(data)} bytes)"
    order, link_types = "<", set()
    offset, blocks = 0, 0
    while offset < len(data):
        if len(data) - offset < 12:
            return (f"{path} is cut inside block {blocks + 1} (byte {offset:,} of "
                    f"{len(data):,}); the {blocks:,} blocks before it were read")
        if data[offset:offset + 4] == PCAPNG_MAGIC:  # a section: its own byte order
            order = "<" if data[offset + 8:offset + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        kind, length = struct.unpack_from(order + "II", data, offset)
        if length < 12 or offset + length > len(data):
            return (f"{path} is cut in the middle of block {blocks + 1} (byte {offset:,} of "
                    f"{len(data):,}); the {blocks:,} blocks before it were read")
        if kind == 1 and length >= 20:  # an interface
            link_types.add(struct.unpack_from(order + "H", data, offset + 8)[0])
        offset += length
        blocks += 1
    if len(link_types) > 1:  # libpcap stops at the first interface unlike the others
        raise BadCapture(f"{path} has interfaces of link types {sorted(link_types)}, and argus "
                         f"reads one link type per file: split it by interface first (tshark "
                         f"-r {path.name} -Y 'frame.interface_id == 0' -w part0.pcapng)")
    return None
