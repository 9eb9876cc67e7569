"""The captures the incidents benchmark replays, made from real ones with tcpreplay's and
Wireshark's own tools (tcprewrite, editcap, mergecap), never by hand:

- the site: the four smart-home devices merged into one capture, cut after four days into the
  learning period and the test days;
- infections: an attack capture's infected host rewritten to one device's IP and MAC (its peer's
  MAC to the site's gateway), shifted so that it starts at a given moment of the test days, and
  merged with them;
- joins: every IoT Sentinel set-up capture, its device given a MAC and IP of its own in the
  site, the set-up network's gateway made the site's, spread over the test days and merged.

Start times follow one rule for every device (fixed fractions of the test days), chosen before
any result was seen; nothing is fitted to the captures.
"""
from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LEARN_DAYS = 4
START_FRACTIONS = (1 / 6, 1 / 2, 5 / 6)  # injections start at these fractions of the test days
SITE_GATEWAY = ("192.168.1.1", "00:1c:7f:53:d0:28")  # smart-home-7day's router (its flows)
SETUP_GATEWAY = ("10.10.10.1", "00:b5:6d:06:08:ba")  # the IoT Sentinel set-up network's
HOME_NET = ("192.168.0.0/16",)  # the site's LAN: the set-up app's phone (10.10.10.x) is outside
ATTACKS = {  # name -> (capture under the data folder, infected host IP, its MAC, its peer's MAC)
    "mirai": ("iot-23-pcap/CTU-IoT-Malware-Capture-34-1/other-pcap/"
              "2018-12-21-15-50-14-192.168.1.195.irc.pcap",
              "192.168.1.195", "b8:27:eb:58:91:d2", "78:8a:20:43:93:d5"),
    "muhstik": ("iot-23-pcap/CTU-IoT-Malware-Capture-3-1/test.pcap",
                "192.168.2.5", "b8:27:eb:c7:e9:c9", "a6:d1:8c:1f:ce:64"),
}
TOOLS = {"editcap": "wireshark-common", "mergecap": "wireshark-common",
         "capinfos": "wireshark-common", "tcprewrite": "tcpreplay"}


@dataclass(frozen=True)
class Device:
    name: str
    ip: str
    mac: str


@dataclass(frozen=True)
class Injection:
    attack: str
    device: str
    start: float  # the attack's first packet, in the test days (Unix s)
    end: float  # and its last
    pcap: Path


def sources(data_dir: Path) -> list[Path]:
    """Every data file the captures are made from (what their cache is keyed on)."""
    return [*sorted((data_dir / "smart-home-7day" / "pcaps").glob("*.pcap")),
            data_dir / "smart-home-7day" / "devices.json",
            *(data_dir / path for path, *_ in ATTACKS.values()),
            *sorted((data_dir / "iot-sentinel-setup" / "captures").glob("*/*"))]


def missing_tools() -> str | None:
    absent = sorted({package for tool, package in TOOLS.items() if not shutil.which(tool)})
    return f"needs apt-get install {' '.join(absent)}" if absent else None


def run(*argv) -> str:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed: {done.stderr.strip()[-400:]}")
    return done.stdout


def packet_times(pcap: Path) -> tuple[float, float]:
    """(first, last) packet time, Unix seconds (capinfos)."""
    text = run("capinfos", "-a", "-e", "-S", pcap)
    first = float(re.search(r"First packet time:\s+([\d.]+)", text).group(1))
    last = float(re.search(r"Last packet time:\s+([\d.]+)", text).group(1))
    return first, last


def devices(data_dir: Path) -> list[Device]:
    import json

    table = json.loads((data_dir / "smart-home-7day" / "devices.json").read_text())
    return [Device(name, d["address"], d["ether"].lower()) for name, d in sorted(table.items())]


def site(data_dir: Path, work: Path) -> dict:
    """The four devices as one site: learn.pcap (first four days) and test.pcap (the rest)."""
    work.mkdir(parents=True, exist_ok=True)
    merged, learn, test = work / "site.pcap", work / "learn.pcap", work / "test.pcap"
    if not test.is_file():
        run("mergecap", "-w", merged, *sorted((data_dir / "smart-home-7day" / "pcaps")
                                              .glob("*.pcap")))
        first, _ = packet_times(merged)
        cut = first + LEARN_DAYS * 86400
        run("editcap", "-B", f"{cut:.6f}", merged, learn)
        run("editcap", "-A", f"{cut:.6f}", merged, test)
        merged.unlink()
    first, last = packet_times(test)
    return {"learn": learn, "test": test, "test_start": first, "test_end": last,
            "learn_span": packet_times(learn)}


def infections(data_dir: Path, work: Path, test: dict) -> list[Injection]:
    """Every attack into every device at every start time, each merged with the test days."""
    return [infection(data_dir, work, test, attack, device, k)
            for attack in ATTACKS for device in devices(data_dir)
            for k in range(len(START_FRACTIONS))]


def infection(data_dir: Path, work: Path, test: dict, attack: str, device: Device,
              k: int) -> Injection:
    """One attack capture as `device`'s, starting at START_FRACTIONS[k] of the test days."""
    path, host, host_mac, peer_mac = ATTACKS[attack]
    source = data_dir / path
    first, last = packet_times(source)
    rewritten = work / f"{attack}-as-{device.name}.pcap"
    if not rewritten.is_file():
        run("tcprewrite", "-i", source, "-o", rewritten, f"--pnat={host}/32:{device.ip}/32",
            f"--enet-subsmac={host_mac},{device.mac}",
            f"--enet-subsmac={peer_mac},{SITE_GATEWAY[1]}", "--fixcsum")
    start = round(test["test_start"] + START_FRACTIONS[k] * (test["test_end"]
                                                            - test["test_start"]))
    merged = work / f"{attack}-{device.name}-{k}.pcap"
    if not merged.is_file():
        shifted = work / f"shifted-{attack}-{device.name}-{k}.pcap"
        run("editcap", "-t", f"{start - first:.6f}", rewritten, shifted)
        run("mergecap", "-w", merged, test["test"], shifted)
        shifted.unlink()
    return Injection(attack, device.name, start, start + last - first, merged)


def joins(data_dir: Path, work: Path, test: dict, kinds: tuple[str, ...] | None = None
          ) -> tuple[Path, list[dict]]:
    """All IoT Sentinel set-ups (or the first of each of `kinds`), each device new to the
    site, spread over the test days."""
    merged = work / ("joins.pcap" if kinds is None else f"joins-{'-'.join(kinds)}.pcap")
    captures = setup_captures(data_dir, kinds)
    span = test["test_end"] - test["test_start"]
    table, parts = [], []
    for i, capture in enumerate(captures):
        start = round(test["test_start"] + (i + 0.5) * span / len(captures))
        row, part = join(capture, i, start, work, make=not merged.is_file())
        table.append(row)
        parts += [part] if part else []
    if not merged.is_file():
        run("mergecap", "-w", merged, test["test"], *parts)
        for part in parts:
            part.unlink(missing_ok=True)
    return merged, table


def setup_captures(data_dir: Path, kinds: tuple[str, ...] | None = None) -> list[Path]:
    captures = sorted((data_dir / "iot-sentinel-setup" / "captures").glob("*/Setup-*.pcap"))
    if kinds is not None:
        captures = [next(c for c in captures if c.parent.name == kind) for kind in kinds]
    return captures


def join(capture: Path, i: int, start: float, work: Path, make: bool = True
         ) -> tuple[dict, Path | None]:
    """One set-up capture as the site's i-th new device (a locally administered MAC, an
    address on the site's LAN), its first packet at `start`: its table row and capture."""
    mac = (capture.parent / "_iotdevice-mac.txt").read_text().split()[0].strip().lower()
    new_mac = f"02:00:00:00:{i // 256:02x}:{i % 256:02x}"  # locally administered, unique
    new_ip = f"192.168.{2 + i // 250}.{2 + i % 250}"
    row = {"capture": f"{capture.parent.name}/{capture.name}", "mac": new_mac, "ip": new_ip,
           "start": start, "original_mac": mac}
    if not make:
        return row, None
    ip = device_ip(capture, mac)
    part = work / f"join-{i}-{capture.parent.name}.pcap"
    nat = ([f"--pnat={ip}/32:{new_ip}/32,{SETUP_GATEWAY[0]}/32:{SITE_GATEWAY[0]}/32"]
           if ip else [f"--pnat={SETUP_GATEWAY[0]}/32:{SITE_GATEWAY[0]}/32"])
    rewritten = part.with_suffix(".rw.pcap")
    run("tcprewrite", "-i", capture, "-o", rewritten, *nat, f"--enet-subsmac={mac},{new_mac}",
        f"--enet-subsmac={SETUP_GATEWAY[1]},{SITE_GATEWAY[1]}", "--fixcsum")
    first, _ = packet_times(rewritten)
    run("editcap", "-t", f"{start - first:.6f}", rewritten, part)
    rewritten.unlink()
    return row, part


def device_ip(capture: Path, mac: str) -> str | None:
    """The IPv4 address the device used in its set-up capture (argus's flows), if any."""
    import tempfile

    from ...edge_runtime.ingest.argus import find_tools

    argus, ra = find_tools()
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as conf:
        conf.write("ARGUS_GENERATE_MAC_DATA=yes\n")
        conf.flush()
        flows = subprocess.run(f"{argus} -X -F {conf.name} -r {capture} -w - 2>/dev/null | "
                               f"{ra} -r - -c , -n -s saddr smac daddr dmac - ip", shell=True,
                               capture_output=True, text=True).stdout
    for line in flows.splitlines():
        fields = line.split(",")
        for address, flow_mac in zip(fields[0::2], fields[1::2]):  # as source or destination
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                continue
            if flow_mac.strip().lower() == mac and ip.version == 4 and not ip.is_unspecified:
                return address
    return None
