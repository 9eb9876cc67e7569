"""The unit carries the page and the webhook: `systemd-analyze verify` passes, and `systemd-analyze
security` rates it as without them while everything stays on loopback."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_ids.devices.profiles import load_profile
from edge_ids.devices.unit import render_unit

pytestmark = pytest.mark.skipif(not shutil.which("systemd-analyze"),
                                reason="systemd-analyze not installed")


def rating(unit: Path) -> str:
    rated = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                           capture_output=True, text=True)
    return re.search(r"Overall exposure level for edge-ids.service: ([\d.]+ \w+)",
                     rated.stdout).group(1)


def verified(text: str, tmp_path: Path) -> Path:
    folder = tmp_path / str(len(list(tmp_path.iterdir())))
    folder.mkdir()
    unit = folder / "edge-ids.service"
    unit.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, cwd=folder)
    assert done.returncode == 0 and "edge-ids.service" not in done.stderr, done.stderr
    return unit


def test_page_and_webhook_on_loopback_keep_the_units_rating(tmp_path):
    prefix = tmp_path / "opt"  # verify checks that ExecStart's program exists
    (prefix / "current/venv/bin").mkdir(parents=True)
    (prefix / "current/venv/bin/edge-ids").symlink_to(Path(sys.executable).with_name("edge-ids"))
    pi4 = load_profile("pi4")
    plain = verified(render_unit(pi4, str(prefix)), tmp_path)
    text = render_unit(pi4, str(prefix), ui="127.0.0.1:9109",
                       webhook="http://127.0.0.1:8080/edge-ids", webhook_min_severity="high")
    assert "--ui 127.0.0.1:9109 --webhook http://127.0.0.1:8080/edge-ids " \
           "--webhook-min-severity high" in text
    assert "IPAddressDeny=any\nIPAddressAllow=localhost 127.0.0.1\n" in text
    assert rating(verified(text, tmp_path)) == rating(plain)
    lan = render_unit(pi4, str(prefix), webhook="http://192.168.1.10:8080/hook")
    assert "IPAddressAllow=localhost 192.168.1.10\n" in lan
    named = render_unit(pi4, str(prefix), webhook="https://ntfy.example.org/edge-ids")
    assert "IPAddressDeny" not in named  # a host name may resolve anywhere: the policy is lifted
    verified(named, tmp_path)


def test_a_page_off_loopback_needs_a_token_and_tls_handed_over_as_credentials(tmp_path):
    prefix = tmp_path / "opt"
    (prefix / "current/venv/bin").mkdir(parents=True)
    (prefix / "current/venv/bin/edge-ids").symlink_to(Path(sys.executable).with_name("edge-ids"))
    pi4 = load_profile("pi4")
    with pytest.raises(ValueError, match="not a loopback address"):
        render_unit(pi4, ui="0.0.0.0:9109")
    # a token page without TLS (what a device may serve today): refused, saying what to do
    with pytest.raises(ValueError, match="in cleartext.*Nothing was installed.*--ui-cert "
                                         "/etc/edge-ids/page.crt --ui-key /etc/edge-ids/page.key"):
        render_unit(pi4, ui="0.0.0.0:9109", ui_token_file="/etc/edge-ids/ui-token")
    with pytest.raises(ValueError, match="absolute path"):
        render_unit(pi4, ui="0.0.0.0:9109", ui_token_file="/etc/edge-ids/ui-token",
                    ui_cert_file="page.crt", ui_key_file="/etc/edge-ids/page.key")
    text = render_unit(pi4, str(prefix), ui="0.0.0.0:9109",
                       ui_token_file="/etc/edge-ids/ui-token",
                       ui_cert_file="/etc/edge-ids/page.crt", ui_key_file="/etc/edge-ids/page.key")
    assert ("LoadCredential=ui-token:/etc/edge-ids/ui-token\n"
            "LoadCredential=ui-cert:/etc/edge-ids/page.crt\n"
            "LoadCredential=ui-key:/etc/edge-ids/page.key\n") in text
    assert ("--ui 0.0.0.0:9109 --ui-token-file ${CREDENTIALS_DIRECTORY}/ui-token --ui-cert "
            "${CREDENTIALS_DIRECTORY}/ui-cert --ui-key ${CREDENTIALS_DIRECTORY}/ui-key") in text
    # browsers of the home networks only (the daemon's defaults), not the whole Internet
    assert ("IPAddressDeny=any\nIPAddressAllow=localhost 10.0.0.0/8 172.16.0.0/12 "
            "192.168.0.0/16 fc00::/7 fe80::/10\n") in text
    verified(text, tmp_path)
    own = render_unit(pi4, str(prefix), ui="0.0.0.0:9109", ui_token_file="/etc/edge-ids/ui-token",
                      ui_cert_file="/etc/edge-ids/page.crt", ui_key_file="/etc/edge-ids/page.key",
                      extra_options=("--home-net", "100.64.0.0/10", "--home-net=2001:db8::/32"),
                      webhook="https://192.168.1.2/hook")
    assert "IPAddressAllow=localhost 100.64.0.0/10 2001:db8::/32 192.168.1.2\n" in own
    lifted = re.sub(r"IPAddress(Deny|Allow)=.*\n", "", text)  # what a LAN page had before
    exposure = [float(rating(verified(unit, tmp_path)).split()[0]) for unit in (text, lifted)]
    assert exposure[0] < exposure[1], exposure  # systemd-analyze security rates it better
    with pytest.raises(ValueError, match="quotes"):
        render_unit(pi4, webhook="http://127.0.0.1/$(reboot)")
