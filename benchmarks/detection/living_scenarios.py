"""The flows the living-normal benchmark replays (living.py), made from real captures with
tcpreplay's and Wireshark's tools and argus, never by hand, each piece once (cached):

- each smart-home device's seven days (argus | ra, the learned bundles' layout);
- every IoT Sentinel set-up joining the site (incident_scenarios.join: its own MAC and address,
  the set-up network's gateway made the site's, spread over the test days), merged, one argus;
- each attack capture's infected host rewritten (tcprewrite) into each device that may be
  infected: the four smart-home devices and the first set-up to join.

A replay is pieces merged by their flows' end time, with two rewrites at the flow level, both
translations that argus does not see: a piece's times moved (a device's days moved to follow
the learning period, an attack moved to its start), and a "slow" attack thinned to one flow a
minute rising to its full rate over a day (whole records kept or left, none altered).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..harness import site_scenarios as scenarios

LEARN_DAYS = scenarios.LEARN_DAYS
DAY = 86400.0
HOME_NET = scenarios.HOME_NET


@dataclass(frozen=True)
class Piece:
    """Flow lines (CSV in the layout) and the column places of their times."""

    lines: list[str]
    start: int
    end: int

    def times(self) -> list[float]:
        return [float(line.split(",")[self.end]) for line in self.lines]

    def first(self) -> float:
        return min(float(line.split(",")[self.start]) for line in self.lines)

    def last(self) -> float:
        return max(self.times())

    def shifted(self, seconds: float) -> "Piece":
        out = []
        for line in self.lines:
            fields = line.split(",")
            for i in (self.start, self.end):
                fields[i] = f"{float(fields[i]) + seconds:.6f}"
            out.append(",".join(fields))
        return Piece(out, self.start, self.end)

    def where(self, keep) -> "Piece":
        """The lines whose (start time, end time) pass keep."""
        return Piece([line for line in self.lines if keep(*_times(line, self))], self.start,
                     self.end)

    def slow(self, full_per_minute: float) -> "Piece":
        """Thinned: in minute m after its first flow at most 1 + (full - 1) x min(1, m / day)
        flows, taken in time order (a bot that starts slowly, at its full rate after a day)."""
        lines = sorted(self.lines, key=lambda line: _times(line, self)[1])
        first = _times(lines[0], self)[1] if lines else 0.0
        kept, taken = [], {}
        for line in lines:
            minute = int((_times(line, self)[1] - first) // 60)
            allowed = 1 + (full_per_minute - 1) * min(1.0, minute * 60 / DAY)
            if taken.get(minute, 0) < allowed:
                taken[minute] = taken.get(minute, 0) + 1
                kept.append(line)
        return Piece(kept, self.start, self.end)


def _times(line: str, piece: Piece) -> tuple[float, float]:
    fields = line.split(",")
    return float(fields[piece.start]), float(fields[piece.end])


def merged(pieces: list[Piece]) -> list[str]:
    """The pieces' lines in the order of their flows' end times (as argus reports them)."""
    keyed = [(t, line) for piece in pieces for t, line in zip(piece.times(), piece.lines)]
    keyed.sort(key=lambda pair: pair[0])
    return [line for _, line in keyed]


class Flows:
    """Argus flows of captures in the learned bundles' layout, made once (cached in work/)."""

    def __init__(self, data_dir: Path, work: Path):
        from ...flows import default_flow_schema

        self.data_dir, self.work = data_dir, work
        work.mkdir(parents=True, exist_ok=True)
        self.schema = default_flow_schema()
        names = list(self.schema.names)
        self.start, self.end = names.index("StartTime"), names.index("LastTime")

    def of_pcap(self, pcap: Path, name: str) -> Piece:
        cached = self.work / f"{name}.csv"
        if not cached.is_file():
            from ...flows import read_pcaps

            lines = read_pcaps([pcap], self.schema, 5, lambda _: None)
            tmp = cached.with_suffix(".part")
            tmp.write_bytes(b"".join(line + b"\n" for line in lines))
            tmp.rename(cached)
        return Piece(cached.read_text().splitlines(), self.start, self.end)

    def device(self, device: scenarios.Device) -> Piece:
        return self.of_pcap(self.data_dir / "smart-home-7day" / "pcaps" / f"{device.name}.pcap",
                            f"device-{device.name}")

    def joins(self, start: float, end: float) -> tuple[Piece, list[dict]]:
        """Every IoT Sentinel set-up as a device joining between start and end: the flows and
        a row per join (capture, mac, ip, start)."""
        captures = scenarios.setup_captures(self.data_dir)
        table_path = self.work / "joins.json"
        span = end - start
        table = [scenarios.join(c, i, round(start + (i + 0.5) * span / len(captures)),
                                self.work, make=False)[0] for i, c in enumerate(captures)]
        pcap = self.work / "joins.pcap"
        if not (self.work / "joins.csv").is_file() and not pcap.is_file():
            parts = [scenarios.join(c, i, row["start"], self.work)[1]
                     for i, (c, row) in enumerate(zip(captures, table))]
            scenarios.run("mergecap", "-w", pcap, *parts)
            for part in parts:
                part.unlink(missing_ok=True)
        piece = self.of_pcap(pcap, "joins")
        pcap.unlink(missing_ok=True)
        table_path.write_text(json.dumps(table, indent=1) + "\n")
        return piece, table

    def attack(self, attack: str, ip: str, mac: str) -> tuple[Piece, list[str]]:
        """The attack capture's infected host rewritten to (ip, mac), its peer's MAC to the
        site's gateway, at its own times; and its peers' addresses."""
        path, host, host_mac, peer_mac = scenarios.ATTACKS[attack]
        name = f"{attack}-as-{mac.replace(':', '')}"
        pcap = self.work / f"{name}.pcap"
        if not (self.work / f"{name}.csv").is_file():
            scenarios.run("tcprewrite", "-i", self.data_dir / path, "-o", pcap,
                          f"--pnat={host}/32:{ip}/32", f"--enet-subsmac={host_mac},{mac}",
                          f"--enet-subsmac={peer_mac},{scenarios.SITE_GATEWAY[1]}",
                          "--fixcsum")
        piece = self.of_pcap(pcap, name)
        pcap.unlink(missing_ok=True)
        names = list(self.schema.names)
        src, dst = names.index("SrcAddr"), names.index("DstAddr")
        peers = sorted({f.split(",")[dst] if f.split(",")[src] == ip else f.split(",")[src]
                        for f in piece.lines})
        return piece, peers


def learning_flows(pieces: dict[str, Piece], names, cut: float, header: str, path: Path
                   ) -> Path:
    """A flow file for `edge-ids learn --flows`: these devices' flows that began before the
    cut (the learning period), with the layout's header."""
    if not path.is_file():
        lines = merged([pieces[n].where(lambda start, end: start < cut) for n in names])
        tmp = path.with_suffix(".part")
        tmp.write_text(header + "\n" + "\n".join(lines) + "\n")
        tmp.rename(path)
    return path


def sources(data_dir: Path) -> list[Path]:
    return scenarios.sources(data_dir)


def packet_span(data_dir: Path) -> tuple[float, float]:
    """The smart-home site's first packet and its learning cut (LEARN_DAYS later)."""
    first = min(scenarios.packet_times(p)[0] for p in
                sorted((data_dir / "smart-home-7day" / "pcaps").glob("*.pcap")))
    return first, first + LEARN_DAYS * DAY
