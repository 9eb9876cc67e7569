"""Live flows: Argus reads packets (an interface or a pcap), `ra` prints its flow records as
CSV, and this source hands them to the daemon in the bundle's raw layout.

    argus -X -F CONF (-i IF | -r -) -w -  |  ra -r - -c , -n -u -L -1 -s FIELDS - not man

(-u: StartTime and LastTime as Unix seconds, which order flows across midnight.) A pcap file
reaches argus on its standard input with a clock that keeps going (pcapclock.py), so that it
meters as argus meters the live interface; ra drops the clock's own records.

Argus and the WUSTL datasets name their columns alike (`ra -s sjit` prints `SrcJitter`), so the
bundle's raw column names pick the `ra` fields, and the fields pick what argus must generate
(jitter, packet sizes, MACs, ...). Columns Argus cannot measure (a patient's sensors, a record
number) must be ones the model ignores; they are left empty. A field Argus leaves empty for a
flow is filled by the bundle's own rule (`raw.missing` in the feature spec), in the parser.
"""
from __future__ import annotations

import logging
import os
import selectors
import shutil
import subprocess
import tempfile
import threading
import time
from operator import itemgetter
from typing import Iterator

from .pcapclock import TICK_FILTER, TICK_SECONDS, with_clock
from .pcapfile import check_capture
from .records import RawSchema, TruncatedInput
from .sources import READ_BYTES, POLL_SECONDS, LineSource, LineSplitter

log = logging.getLogger("edge_ids.daemon")

# Raw column name -> the `ra -s` field that prints it (ra's own column titles; a test checks
# this table against ra's header).
RA_FIELDS = {
    "Dir": "dir", "Flgs": "flgs", "Proto": "proto", "SrcAddr": "saddr", "DstAddr": "daddr",
    "Sport": "sport", "Dport": "dport", "StartTime": "stime", "LastTime": "ltime",
    "Dur": "dur", "Trans": "trans", "Mean": "mean", "Sum": "sum", "Min": "min", "Max": "max",
    "RunTime": "runtime", "IdleTime": "idle", "SrcPkts": "spkts", "DstPkts": "dpkts",
    "TotPkts": "pkts", "SrcBytes": "sbytes", "DstBytes": "dbytes", "TotBytes": "bytes",
    "SAppBytes": "sappbytes", "DAppBytes": "dappbytes", "TotAppByte": "appbytes",
    "SrcLoad": "sload", "DstLoad": "dload", "Load": "load", "SrcRate": "srate",
    "DstRate": "drate", "Rate": "rate", "SrcLoss": "sloss", "DstLoss": "dloss", "Loss": "loss",
    "pLoss": "ploss", "pSrcLoss": "sploss", "pDstLoss": "dploss", "SrcGap": "sgap",
    "DstGap": "dgap", "SIntPkt": "sintpkt", "DIntPkt": "dintpkt", "SIntPktAct": "sintpktact",
    "DIntPktAct": "dintpktact", "SrcJitter": "sjit", "DstJitter": "djit",
    "SrcJitAct": "sjitact", "DstJitAct": "djitact", "sMaxPktSz": "smaxsz",
    "dMaxPktSz": "dmaxsz", "sMinPktSz": "sminsz", "dMinPktSz": "dminsz", "SrcMac": "smac",
    "DstMac": "dmac", "TcpRtt": "tcprtt", "SynAck": "synack", "sTtl": "sttl", "dTtl": "dttl",
    "sTos": "stos", "sDSb": "sdsb", "sIpId": "sipid", "dIpId": "dipid",
}
# argus.conf switches, and the columns that are empty without them.
GENERATORS = {
    "ARGUS_GENERATE_JITTER_DATA": ("SrcJitter", "DstJitter", "SrcJitAct", "DstJitAct",
                                   "SIntPkt", "DIntPkt", "SIntPktAct", "DIntPktAct"),
    "ARGUS_GENERATE_PACKET_SIZE": ("sMaxPktSz", "dMaxPktSz", "sMinPktSz", "dMinPktSz"),
    "ARGUS_GENERATE_MAC_DATA": ("SrcMac", "DstMac"),
    "ARGUS_GENERATE_APPBYTE_METRIC": ("SAppBytes", "DAppBytes", "TotAppByte"),
    "ARGUS_GENERATE_TCP_PERF_METRIC": ("TcpRtt", "SynAck", "SrcLoss", "DstLoss", "Loss",
                                       "pLoss", "pSrcLoss", "pDstLoss"),
}
INSTALL = "apt-get install argus-server argus-client"
STATUS_SECONDS = 5  # a long flow is reported every this many seconds (argus's own default: 60)
START_SECONDS = 5.0  # longest a live start waits for argus to say the interface is up


class CaptureError(OSError):
    """Argus cannot run here; the message says why and what to do."""


def ra_fields(schema: RawSchema) -> tuple[list[str], list[int]]:
    """The `ra -s` fields to print, and for each schema column the index of its field in a
    printed line (-1: Argus cannot measure it; left empty). CaptureError if the model reads a
    column Argus cannot measure."""
    unmeasured = [n for n, t in zip(schema.names, schema.types)
                  if n not in RA_FIELDS and t != "ignored"]
    if unmeasured:
        raise CaptureError(
            f"the model reads {', '.join(unmeasured[:6])}{' …' if unmeasured[6:] else ''}, which "
            f"Argus does not measure: capture needs a model of flow columns only (for "
            f"WUSTL-EHMS, train it on the dataset wustl-ehms-net)")
    fields = [RA_FIELDS[n] for n in schema.names if n in RA_FIELDS]
    order, k = [], 0
    for name in schema.names:
        order.append(k if name in RA_FIELDS else -1)
        k += name in RA_FIELDS
    return fields, order


def argus_config(schema: RawSchema, status_seconds: int = STATUS_SECONDS) -> str:
    """The argus.conf that makes every column of the schema that Argus can fill."""
    lines = ["# written by edge-ids capture for this bundle's columns",
             f"ARGUS_FLOW_STATUS_INTERVAL={status_seconds}", "ARGUS_MAR_STATUS_INTERVAL=60",
             "ARGUS_GO_PROMISCUOUS=yes", "ARGUS_CAPTURE_DATA_LEN=0"]
    for switch, columns in GENERATORS.items():
        needed = any(c in schema.names for c in columns)
        lines.append(f"{switch}={'yes' if needed else 'no'}")
    return "\n".join(lines) + "\n"


def find_tools(argus: str = "argus", ra: str = "ra") -> tuple[str, str]:
    found = shutil.which(argus, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"), \
        shutil.which(ra)
    missing = [name for name, path in zip((argus, ra), found) if path is None]
    if missing:
        raise CaptureError(f"{' and '.join(missing)} not found: install Argus first "
                           f"({INSTALL})")
    return found


class ArgusSource(LineSource):
    """Flow records from argus | ra, one line per flow (or per status interval of a long one),
    in the schema's column order. Ends when argus ends (a pcap read to its end)."""

    def __init__(self, schema: RawSchema, interface: str | None = None,
                 pcap: str | None = None, status_seconds: int = STATUS_SECONDS):
        if (interface is None) == (pcap is None):
            raise ValueError("give an interface or a pcap file")
        if pcap is not None and not os.path.isfile(pcap):
            raise CaptureError(f"no pcap file {pcap}")
        # a file that is no capture is refused here (BadCapture); one cut in the middle of a
        # packet is read to the cut, and then the source says so (TruncatedInput)
        self.cut = check_capture(pcap) if pcap is not None else None
        if interface is not None and not os.path.exists(f"/sys/class/net/{interface}"):
            present = ", ".join(sorted(os.listdir("/sys/class/net"))) or "none"
            raise CaptureError(f"no network interface {interface!r} (here: {present})")
        argus, ra = find_tools()
        fields, order = ra_fields(schema)
        self._pick = itemgetter(*order) if len(order) > 1 else (lambda f: (f[order[0]],))
        self._config = tempfile.NamedTemporaryFile("w", prefix="edge-ids-argus-",
                                                   suffix=".conf")
        self._config.write(argus_config(schema, status_seconds))
        self._config.flush()
        source = ["-i", interface] if interface else ["-r", "-"]
        self.command = [argus, "-X", "-F", self._config.name, *source, "-w", "-"]
        self._argus = subprocess.Popen(self.command, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE,
                                       stdin=subprocess.DEVNULL if interface else subprocess.PIPE)
        records = "not man" if interface else f"not man and {TICK_FILTER}"
        self._ra = subprocess.Popen([ra, "-r", "-", "-c", ",", "-n", "-u", "-L", "-1", "-s",
                                     *fields, "-", records], stdin=self._argus.stdout,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._argus.stdout.close()  # ra holds it now: argus sees EPIPE if ra goes away
        if pcap is not None:
            threading.Thread(target=self._feed, args=(pcap, status_seconds),
                             daemon=True).start()
        self._errors: list[bytes] = []  # the last lines either wrote to stderr
        for stream in (self._argus.stderr, self._ra.stderr):
            threading.Thread(target=self._drain, args=(stream,), daemon=True).start()
        if interface is not None:
            self._check_started(interface)

    def _feed(self, pcap: str, status_seconds: int) -> None:
        """The capture, with its clock, into argus (which ends at the end of it); the clock
        runs on past the last packet until argus has reported every flow still open."""
        strays: list = []
        try:
            with open(pcap, "rb") as f, self._argus.stdin as into:
                for chunk in with_clock(f, after=status_seconds + TICK_SECONDS, strays=strays):
                    into.write(chunk)
        except (BrokenPipeError, ValueError, OSError):
            pass  # argus went away (closed, or failed: _check_ended says why)
        if strays:
            was, now = strays[0]
            log.warning("%s: %d packet(s) stamped far from the packets around them were given "
                        "their neighbour's time (the first: %.0f s off)", pcap, len(strays),
                        was - now)

    def _drain(self, stream) -> None:
        for line in stream:
            self._errors = (self._errors + [line])[-20:]

    def _check_started(self, interface: str) -> None:
        """Wait until argus says the interface is up. One that cannot open it warns and exits
        (with status 0) about a second later: say why, and how to fix it."""
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline and self._argus.poll() is None:
            said = b"".join(self._errors)
            if b"ArgusOpenInterface" in said or b" is up" in said:
                break
            time.sleep(0.02)
        said = b"".join(self._errors).decode(errors="replace").strip()
        if self._argus.poll() is not None or "ArgusOpenInterface" in said:
            self.close()
            hint = ""
            if "ArgusOpenInterface" in said and ("ermission" in said or "not permitted" in said):
                hint = (" Capturing needs CAP_NET_RAW and CAP_NET_ADMIN: run as root, under the "
                        "capture unit (edge-ids deploy --capture IF), or grant them to argus "
                        "with: setcap cap_net_raw,cap_net_admin+eip " + self.command[0])
            raise CaptureError(f"argus could not capture on {interface}: "
                               f"{said[-400:] or 'it exited without a message'}.{hint}")

    def batches(self, stop: threading.Event) -> Iterator[list[bytes]]:
        splitter = LineSplitter()
        self._flows = 0
        stream = self._ra.stdout
        with selectors.DefaultSelector() as selector:
            selector.register(stream, selectors.EVENT_READ)
            while not stop.is_set():
                if not selector.select(POLL_SECONDS):
                    continue
                data = os.read(stream.fileno(), READ_BYTES)
                if not data:
                    break
                lines = splitter.feed(data)
                if lines:
                    self._flows += len(lines)
                    yield [self._reorder(line) for line in lines]
        rest = splitter.flush()
        if rest is not None and not stop.is_set():
            yield [self._reorder(rest)]
        if not stop.is_set():
            self._check_ended()
            if self.cut:
                raise TruncatedInput(self.cut)

    def _reorder(self, line: bytes) -> bytes:
        fields = line.split(b",")
        fields.append(b"")  # what index -1 picks: a column Argus does not measure
        return b",".join(self._pick(fields))

    def _check_ended(self) -> None:
        """The stream ended: fine if argus read its pcap to the end; an error otherwise."""
        argus_code, ra_code = self._argus.wait(), self._ra.wait()
        if argus_code == 0 and ra_code and not self._flows and not self._errors:
            return  # a capture without a single flow: argus writes nothing, and ra says so
        if argus_code or ra_code:
            time.sleep(0.05)  # the rest of what they said
            said = b"".join(self._errors).decode(errors="replace")
            raise CaptureError(f"argus exited {argus_code}, ra {ra_code}: {said.strip()[-400:]}")

    def close(self) -> None:
        for process in (self._argus, self._ra):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for stream in (self._ra.stdout, self._ra.stderr, self._argus.stderr):
            stream.close()
        self._config.close()
