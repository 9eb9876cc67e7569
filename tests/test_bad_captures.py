"""Bad and truncated captures are handled like bad and truncated record files: exit 5 with a
plain message (not argus's libpcap error), and what was read before a cut is kept."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from edge_ids.cli import main
from edge_ids.edge_runtime.ingest.pcapfile import BadCapture, check_capture

HAS_ARGUS = bool(shutil.which("argus", path="/usr/sbin:/usr/bin") and shutil.which("ra"))
needs_argus = pytest.mark.skipif(not HAS_ARGUS, reason="needs Debian's argus-server and "
                                                       "argus-client (apt-get install ...)")


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def cut(captures, tmp_path):
    """The Hue capture cut in the middle of a packet."""
    path = tmp_path / "cut.pcap"
    path.write_bytes(captures["honeypot"].read_bytes()[:500_000])
    return path


def test_the_check_tells_whole_cut_and_not_a_capture(captures, cut, tmp_path):
    assert check_capture(captures["honeypot"]) is None
    assert "is cut in the middle of packet 2410" in check_capture(cut)
    (tmp_path / "text.pcap").write_text("hello\n")
    (tmp_path / "empty.pcap").write_bytes(b"")
    with pytest.raises(BadCapture, match="is not a packet capture"):
        check_capture(tmp_path / "text.pcap")
    with pytest.raises(BadCapture, match="is empty"):
        check_capture(tmp_path / "empty.pcap")


@needs_argus
def test_capture_of_a_file_that_is_no_capture_exits_5_with_a_plain_message(net_bundle,
                                                                          tmp_path):
    for name, content, said in (("text.pcap", b"hello\n", "is not a packet capture"),
                                ("empty.pcap", b"", "is empty")):
        (tmp_path / name).write_bytes(content)
        result = cli("capture", "--pcap", tmp_path / name, "--bundle", net_bundle,
                     "--alerts", tmp_path / "alerts.json")
        assert result.exit_code == 5 and said in result.output, result.output
        assert "pcap_open_offline" not in result.output  # argus's own words never reach it


@needs_argus
def test_a_capture_cut_mid_packet_is_read_to_the_cut_then_exits_5(net_bundle, cut, tmp_path):
    alerts = tmp_path / "alerts.json"
    result = cli("capture", "--pcap", cut, "--bundle", net_bundle, "--alerts", alerts,
                 "--emit", "all")
    assert result.exit_code == 5, result.output
    assert "is cut in the middle of packet 2410" in result.output
    classified = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert len(classified) > 500  # what was read before the cut is kept
    said = int(result.output.split(" records before it were classified")[0].split()[-1]
               .replace(",", ""))
    assert said == sum(e["event_type"] in ("alert", "ml") for e in classified)


@needs_argus
def test_learn_refuses_a_cut_capture_and_writes_nothing(cut, tmp_path):
    result = cli("learn", "--pcap", cut, "--out", tmp_path / "site")
    assert result.exit_code == 5 and "learn from whole captures only" in result.output
    assert not (tmp_path / "site").exists()


@needs_argus
@pytest.mark.skipif(not shutil.which("mergecap"), reason="apt-get install wireshark-common")
def test_a_pcapng_of_two_link_types_is_refused_with_how_to_split_it(net_bundle, captures,
                                                                    tmp_path):
    """libpcap stops at an interface unlike the first, and argus says nothing of it."""
    import subprocess

    cooked, mixed = tmp_path / "cooked.pcap", tmp_path / "mixed.pcapng"
    subprocess.run(["editcap", "-T", "linux-sll", "-r", captures["honeypot"], cooked, "1-50"],
                   check=True)
    subprocess.run(["mergecap", "-w", mixed, captures["honeypot"], cooked], check=True)
    with pytest.raises(BadCapture, match=r"link types \[1, 113\].*split it by interface"):
        check_capture(mixed)
    result = cli("capture", "--pcap", mixed, "--bundle", net_bundle, "--alerts",
                 tmp_path / "alerts.json")
    assert result.exit_code == 5 and "split it by interface" in result.output, result.output
    alerts = tmp_path / "alerts.json"
    assert not alerts.exists() or not alerts.read_text()  # nothing was classified
