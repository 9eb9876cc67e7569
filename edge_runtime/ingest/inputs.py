"""The daemon's --input, from its spec to a source: the line sources (sources.py) and flows
from packets (argus.py), which this module alone knows both of (so neither imports the other).
"""
from __future__ import annotations

from .argus import ArgusSource
from .records import RawSchema
from .sources import FollowSource, LineSource, StreamSource, UnixSocketSource

KINDS = ("file", "follow", "unix", "argus", "pcap")


def open_source(spec: str, follow_from_start: bool = False,
                schema: RawSchema | None = None, flow_report_seconds: int = 5) -> LineSource:
    """'-', 'file:PATH', 'follow:PATH', 'unix:PATH', or flows that Argus makes from packets:
    'argus:INTERFACE' or 'pcap:FILE' (these need the bundle's `schema`); a clear ValueError
    otherwise."""
    if spec == "-":
        return StreamSource("-")
    kind, _, path = spec.partition(":")
    if not path or kind not in KINDS:
        raise ValueError(f"unknown input {spec!r}: use -, file:PATH, follow:PATH, unix:PATH, "
                         f"argus:INTERFACE or pcap:FILE")
    if kind == "file":
        return StreamSource(path)
    if kind == "follow":
        return FollowSource(path, from_start=follow_from_start)
    if kind in ("argus", "pcap"):
        return ArgusSource(schema, **{"interface" if kind == "argus" else "pcap": path},
                           status_seconds=flow_report_seconds)
    return UnixSocketSource(path)
