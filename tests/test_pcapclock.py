"""A capture read with a clock (edge_runtime/ingest/pcapclock.py): the file's own packets, unchanged
and in order, with a tick in every silent second; and, through real argus, a device's records
that no longer change with the traffic merged around it, and that match what argus makes of
the same packets live (replayed on a veth pair into a network namespace this test creates).

The case is a real one, from the incidents benchmark: the Schlage deadbolt's MQTT connection,
idle for 107 s; read from the file alone, argus put its next status record's packets with the
previous timer's (out of order, jitter 5.3 s); read with a bot's day merged in, or live, it
reports a 421-byte gap and a jitter of 103 ms."""
from __future__ import annotations

import math
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from edge_ids.edge_runtime.ingest.argus import ArgusSource, argus_config, find_tools
from edge_ids.edge_runtime.ingest.pcapclock import LONGEST_SILENCE, TICK_FRAME, Ticker, with_clock
from edge_ids.edge_runtime.ingest.pcapfile import check_capture
from edge_ids.edge_runtime.ingest.records import RawSchema
from edge_ids.flows import default_flow_schema

DEADBOLT = ("smart-home-7day/pcaps/schlage-lock-01.pcap", "192.168.1.122")
WINDOW = (1615662700, 1615662840)  # its idle MQTT connection, and the record after it
BOT = ("iot-23-pcap/CTU-IoT-Malware-Capture-34-1/other-pcap/"
       "2018-12-21-15-50-14-192.168.1.195.irc.pcap")
BOT_START = 1615606756  # where the benchmark's first Mirai injection starts (its first day)
TOOLS = ("editcap", "mergecap", "capinfos", "tcprewrite")


def run(*argv) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture(scope="module")
def excerpt(data_dir, tmp_path_factory) -> dict[str, Path]:
    """The deadbolt's two minutes alone (pcapng and pcap), and with the bot merged in."""
    if not all(map(shutil.which, TOOLS)):
        pytest.skip("needs apt-get install wireshark-common tcpreplay")
    work = tmp_path_factory.mktemp("clock")
    alone = work / "alone.pcapng"
    run("editcap", "-A", WINDOW[0], "-B", WINDOW[1], data_dir / DEADBOLT[0], alone)
    run("editcap", "-F", "pcap", alone, work / "alone.pcap")
    first = float(run("capinfos", "-a", "-S", data_dir / BOT).split("time:")[-1])
    run("editcap", "-t", f"{BOT_START - first:.6f}", data_dir / BOT, work / "bot-day.pcap")
    run("editcap", "-A", WINDOW[0], "-B", WINDOW[1], work / "bot-day.pcap", work / "bot.pcap")
    run("tcprewrite", "-i", work / "bot.pcap", "-o", work / "bot-65535.pcap")  # one snaplen
    run("mergecap", "-w", work / "merged.pcapng", alone, work / "bot-65535.pcap")
    run("mergecap", "-w", work / "two-lengths.pcapng", alone, work / "bot.pcap")
    return {"pcapng": alone, "pcap": work / "alone.pcap", "merged": work / "merged.pcapng",
            "two-lengths": work / "two-lengths.pcapng"}


def packets(path: Path) -> list[tuple[float, bytes]]:
    """(time, frame) of every packet of a capture (editcap makes it a pcap to read)."""
    with tempfile.NamedTemporaryFile(suffix=".pcap") as flat:
        run("editcap", "-F", "pcap", path, flat.name)
        data = Path(flat.name).read_bytes()
    out, offset = [], 24
    while offset < len(data):
        seconds, micros, captured, _ = struct.unpack_from("<IIII", data, offset)
        out.append((seconds + micros / 1e6, data[offset + 16:offset + 16 + captured]))
        offset += 16 + captured
    return out


@pytest.mark.parametrize("form", ["pcapng", "pcap"])
def test_a_tick_fills_every_silent_second_and_the_packets_stay_as_they_were(excerpt, form,
                                                                          tmp_path):
    ticked = tmp_path / f"ticked.{form}"
    with open(excerpt[form], "rb") as f:
        ticked.write_bytes(b"".join(with_clock(f)))
    assert check_capture(ticked) is None  # a whole capture of its own format
    before, after = packets(excerpt[form]), packets(ticked)
    assert [p for p in after if p[1] != TICK_FRAME] == before
    ticks = [t for t, frame in after if frame == TICK_FRAME]
    seconds = {math.floor(t) for t, _ in before}
    expected = [s for s in range(math.floor(before[0][0]) + 1, math.floor(before[-1][0]) + 1)]
    assert ticks == expected  # one a second, on the second, from the first packet to the last
    assert all(abs(b[0] - a[0]) <= 1 for a, b in zip(after, after[1:]))
    assert len(seconds) < len(expected)  # the excerpt is mostly silence: the ticks matter


def test_the_clock_runs_on_past_the_last_packet_when_asked(excerpt, tmp_path):
    """So that argus reports the flow still open at the end by its status timer, every time,
    instead of only when its exit happens to come late enough."""
    ticked = tmp_path / "ticked.pcap"
    with open(excerpt["pcap"], "rb") as f:
        ticked.write_bytes(b"".join(with_clock(f, after=6.0)))
    after = packets(ticked)
    last = max(t for t, frame in after if frame != TICK_FRAME)
    assert after[-1][1] == TICK_FRAME and after[-1][0] == math.floor(last + 6.0)


def test_a_silence_of_months_is_an_hour_of_ticks_and_the_last_second():
    ticker = Ticker(1.0)
    assert list(ticker.due(10.5)) == [] and list(ticker.due(13.2)) == [11.0, 12.0, 13.0]
    months = list(ticker.due(1e9 + 0.3))
    assert months[:2] == [14.0, 15.0] and months[-1] == 1e9
    assert len(months) == LONGEST_SILENCE + 2  # not a billion
    assert list(ticker.due(1e9 + 2.5)) == [1e9 + 1, 1e9 + 2]  # back on the grid
    assert list(ticker.due(5.0)) == []  # a packet out of order ticks nothing


def deadbolt_records(source: ArgusSource, schema: RawSchema) -> list[tuple[str, ...]]:
    lines = [line.decode() for batch in source.batches(threading.Event()) for line in batch]
    source.close()
    columns = [schema.names.index(n) for n in ("StartTime", "Flgs", "SrcGap", "SrcJitter",
                                              "TotPkts", "SrcAddr", "Dport")]
    rows = [tuple(line.split(",")[i].strip() for i in columns) for line in lines]
    return [r for r in rows if r[-2] == DEADBOLT[1]]


def plain_argus(pcap: Path, schema: RawSchema) -> list[str]:
    """Argus reading the file itself, as edge-ids did before the clock."""
    argus, ra = find_tools()
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as conf:
        conf.write(argus_config(schema))
        conf.flush()
        return subprocess.run(f"{argus} -X -F {conf.name} -r {pcap} -w - | {ra} -r - -c , -n "
                              f"-u -s stime flgs sgap sjit - host {DEADBOLT[1]}", shell=True,
                              capture_output=True, text=True, check=True).stdout.splitlines()


def test_a_device_meters_alike_whatever_traffic_is_merged_around_it(excerpt):
    schema = default_flow_schema()
    alone = deadbolt_records(ArgusSource(schema, pcap=str(excerpt["pcapng"])), schema)
    merged = deadbolt_records(ArgusSource(schema, pcap=str(excerpt["merged"])), schema)
    assert alone == merged and len(alone) == 2
    assert alone[1][1:3] == ("M g", "421")  # the gap, as argus sees it live (below)
    # without the clock, the same packets meter differently (what this test guards against)
    assert plain_argus(excerpt["pcapng"], schema) != plain_argus(excerpt["merged"], schema)


def test_a_pcapng_of_two_snapshot_lengths_is_read_whole(excerpt):
    """mergecap keeps each file's snapshot length (here 65535 and 262144); libpcap then reads
    nothing, and argus exits 0 without a word. The clock's stream gives them one length."""
    schema = default_flow_schema()
    lines = [line.decode().split(",") for batch in
             ArgusSource(schema, pcap=str(excerpt["two-lengths"])).batches(threading.Event())
             for line in batch]
    hosts = {f[schema.names.index("SrcAddr")] for f in lines}
    assert {DEADBOLT[1], "192.168.1.195"} <= hosts  # the deadbolt's flows and the bot's
    argus, ra = find_tools()
    plain = subprocess.run(f"{argus} -r {excerpt['two-lengths']} -w - | {ra} -r - -n - not man",
                           shell=True, capture_output=True, text=True)
    assert not plain.stdout.strip()  # what it was before (ra exits 1: no records)


def shifted_first_packet(path: Path, out: Path, seconds: float) -> Path:
    """The pcap with its first packet stamped `seconds` later."""
    first = out.with_suffix(".first.pcap")
    rest = out.with_suffix(".rest.pcap")
    run("editcap", "-F", "pcap", "-r", path, first, "1")
    run("editcap", "-F", "pcap", "-t", f"{seconds}", first, first.with_suffix(".late.pcap"))
    run("editcap", "-F", "pcap", path, rest, "1")  # all but the first
    data = first.with_suffix(".late.pcap").read_bytes() + rest.read_bytes()[24:]
    out.write_bytes(data)
    return out


def test_one_packet_a_day_ahead_at_the_start_is_given_its_neighbours_time(excerpt, tmp_path):
    """Before, argus's clock went a day ahead with it, and every timer waited a day."""
    stray = shifted_first_packet(excerpt["pcap"], tmp_path / "stray.pcap", 86400)
    assert packets(stray)[0][0] == packets(excerpt["pcap"])[0][0] + 86400
    found: list = []
    with open(stray, "rb") as f:
        ticked = b"".join(with_clock(f, strays=found))
    clean = b"".join(with_clock(open(excerpt["pcap"], "rb")))
    before = packets(excerpt["pcap"])
    assert len(found) == 1 and found[0][1] == before[1][0]  # the next packet's time
    (tmp_path / "ticked.pcap").write_bytes(ticked)
    (tmp_path / "clean.pcap").write_bytes(clean)
    after = [p for p in packets(tmp_path / "ticked.pcap") if p[1] != TICK_FRAME]
    assert [f for _, f in after] == [f for _, f in before]
    assert [t for t, _ in after][1:] == [t for t, _ in before][1:]
    ticks = [t for t, f in packets(tmp_path / "ticked.pcap") if f == TICK_FRAME]
    assert ticks == [t for t, f in packets(tmp_path / "clean.pcap") if f == TICK_FRAME]
    schema = default_flow_schema()
    assert deadbolt_records(ArgusSource(schema, pcap=str(stray)), schema)[1:] == \
        deadbolt_records(ArgusSource(schema, pcap=str(excerpt["pcap"])), schema)[1:]


@pytest.mark.slow
def test_a_capture_meters_as_argus_meters_the_same_packets_live(excerpt, veth_pair):
    """Two minutes in real time: tcpreplay sends the excerpt at its own pace into a veth pair
    whose other end live argus reads."""
    here, there, namespace = veth_pair
    schema = default_flow_schema()
    source, stop, lines = ArgusSource(schema, interface=here), threading.Event(), []
    reader = threading.Thread(target=lambda: [lines.extend(b) for b in source.batches(stop)])
    reader.start()
    try:
        subprocess.run(["ip", "netns", "exec", namespace, "tcpreplay", "-i", there,
                        str(excerpt["pcap"])], check=True, capture_output=True, timeout=300)
        time.sleep(2 * 5 + 2)  # two status intervals: argus reports what is still open
    finally:
        stop.set()
        reader.join(30)
        source.close()
    flags, gap = schema.names.index("Flgs"), schema.names.index("SrcGap")
    address, packets_ = schema.names.index("SrcAddr"), schema.names.index("TotPkts")
    live = [(f[flags].strip(), f[gap], f[packets_]) for f in
            (line.decode().split(",") for line in lines) if f[address] == DEADBOLT[1]]
    from_file = [(r[1], r[2], r[4]) for r in
                 deadbolt_records(ArgusSource(schema, pcap=str(excerpt["pcap"])), schema)]
    assert live == from_file, (live, from_file)
