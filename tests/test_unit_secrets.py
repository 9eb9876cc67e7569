"""The unit carries the webhook's token and the state directory the way it carries the page's
token (issue 39): as LoadCredential= from a file on the device, never as text in the unit, which
anyone on the device may read; `systemd-analyze verify` passes. Refusals exit 2 from `unit` and
`deploy`; install.py refuses a credential file that others may open, and its health-check probe
leaves out the page, the webhook and the state (it runs beside the live daemon)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_ids.cli import main
from edge_ids.devices.install import exec_start, probe_command, unsafe_credentials, \
    with_options
from edge_ids.devices.profiles import load_profile
from edge_ids.devices.unit import render_unit
from test_operator_unit import verified

TOKEN = "wh-7e1d0c5b9a3f4e28-token"
HOOK = "https://ntfy.example.org/edge-ids"


def cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture
def prefix(tmp_path) -> Path:
    """An install prefix whose ExecStart program exists (verify checks it)."""
    prefix = tmp_path / "opt"
    (prefix / "current/venv/bin").mkdir(parents=True)
    (prefix / "current/venv/bin/edge-ids").symlink_to(Path(sys.executable).with_name("edge-ids"))
    return prefix


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_the_webhooks_token_is_a_credential_never_text_in_the_unit(prefix, tmp_path):
    token = tmp_path / "webhook-token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    text = render_unit(load_profile("pi4"), str(prefix), webhook=HOOK,
                       webhook_token_file=str(token), webhook_min_severity="medium",
                       ui="127.0.0.1:9109", ui_token_file="/etc/edge-ids/ui-token",
                       state_dir="/srv/edge-ids/state", extra_options=("--emit", "incidents"))
    verified(text, tmp_path)
    assert f"LoadCredential=webhook-token:{token}\n" in text
    assert "LoadCredential=ui-token:/etc/edge-ids/ui-token\n" in text
    argv = exec_start(text)
    assert argv[argv.index("--webhook-token-file") + 1] == \
        "${CREDENTIALS_DIRECTORY}/webhook-token"
    assert argv[argv.index("--webhook") + 1] == HOOK
    assert argv[argv.index("--state-dir") + 1] == "/srv/edge-ids/state"
    assert argv[-2:] == ["--emit", "incidents"]
    assert "ReadWritePaths=/srv/edge-ids/state\n" in text
    assert TOKEN not in text
    plain = render_unit(load_profile("pi4"), str(prefix))
    assert "LoadCredential" not in plain  # only when given
    assert " --state-dir /var/lib/edge-ids" in plain  # the unit's own StateDirectory by default
    assert "--state-dir" not in render_unit(load_profile("pi4"), str(prefix), state_dir="")
    assert "ReadWritePaths" not in render_unit(load_profile("pi4"), str(prefix),
                                               state_dir="/var/lib/edge-ids")


def test_unit_and_deploy_refuse_a_token_where_it_may_not_go(small_pipeline, tmp_path):
    for args, message in [
            (("--webhook", "http://192.168.1.10/hook", "--webhook-token-file", "/etc/t"),
             "a token is sent only over https"),
            (("--webhook", "https://ops:hunter2@ntfy.example.org/x"), "--webhook-token-file FILE"),
            (("--webhook", "https://gotify.example.org/message?token=hunter2"),
             "--webhook-token-file FILE"),
            (("--webhook-token-file", "/etc/t"), "--webhook-token-file needs --webhook"),
            (("--webhook", HOOK, "--webhook-token-file", "etc/t"), "absolute path"),
            (("--state-dir", "state"), "absolute path"),
            (("--extra-option=$(reboot)",), "without spaces, quotes, $"),
            (("--extra-option=--bundle", "--extra-option=/tmp/other"), "the unit sets --bundle"),
            (("--extra-option=--webhook-token-file=/etc/t",), "the unit sets")]:
        code, output = cli("unit", "--device", "pi4", *args)
        assert code == 2 and message in output, (args, output)
        assert "hunter2" not in output
        code, output = cli("deploy", "--device", "pi4", "--bundle",
                           small_pipeline[0] / "bundle", "--dry-run", *args)
        assert code == 2 and message in output, (args, output)
        assert "[1/" not in output  # refused before the first step
    code, output = cli("unit", "--device", "pi4", "--webhook", "http://192.168.1.10/hook",
                       "--webhook-token-file", "/etc/t", "--webhook-insecure")
    assert code == 0 and " --webhook-insecure" in output, output
    code, output = cli("deploy", "--device", "pi4", "--bundle", small_pipeline[0] / "bundle",
                       "--dry-run", "--webhook", HOOK, "--webhook-token-file", "/etc/t",
                       "--state-dir", "/var/lib/edge-ids")
    assert code == 0 and "LoadCredential=webhook-token:/etc/t\n" in output, output
    assert " --state-dir /var/lib/edge-ids" in output
    hosts = tmp_path / "hosts.ini"
    hosts.write_text("sensor-1 ansible_host=127.0.0.1 ansible_port=1\n")
    for args, message in [(("--state-dir", "state"), "--state-dir must be an absolute path"),
                          (("--webhook-token-file", "/etc/t $x"), "may not contain spaces"),
                          (("--webhook", "https://ops:hunter2@ntfy.example.org/"),
                           "--webhook-token-file FILE")]:
        code, output = cli("fleet", "deploy", "-i", hosts, "--bundle",
                           small_pipeline[0] / "bundle", *args)
        assert code == 2 and message in output and "PLAY" not in output, (args, output)


def test_install_refuses_a_credential_others_may_open(tmp_path):
    token = tmp_path / "token"
    unit = render_unit(load_profile("pi4"), webhook=HOOK, webhook_token_file=str(token))
    assert f"read from {token}: No such file or directory; put the token there first" in \
        unsafe_credentials(unit)
    token.write_text(TOKEN)
    for mode in (0o644, 0o640, 0o606):
        token.chmod(mode)
        assert f"may open (mode {mode:04o}): chmod 600 {token}" in unsafe_credentials(unit)
    token.chmod(0o600)
    assert unsafe_credentials(unit) is None
    assert unsafe_credentials(render_unit(load_profile("pi4"))) is None


def test_the_health_check_probe_leaves_out_the_page_the_webhook_and_the_state(tmp_path):
    """It runs the unit's ExecStart beside the daemon: the page's port is taken, a push would
    reach the operator, ${CREDENTIALS_DIRECTORY} is the service's, the state the daemon's."""
    unit = render_unit(load_profile("pi4"), ui="127.0.0.1:9109",
                       ui_token_file="/etc/edge-ids/ui-token", webhook="http://10.0.0.2/hook",
                       webhook_token_file="/etc/edge-ids/webhook-token", webhook_insecure=True,
                       webhook_min_severity="high", state_dir="/var/lib/edge-ids",
                       extra_options=("--emit", "incidents", "--home-net", "10.0.0.0/8"))
    argv = probe_command(unit, tmp_path / "probe.csv")
    for gone in ("--ui", "--ui-token-file", "--webhook", "--webhook-token-file",
                 "--webhook-min-severity", "--webhook-insecure", "--state-dir", "--metrics"):
        assert gone not in argv, gone
    assert not any("CREDENTIALS_DIRECTORY" in a for a in argv)
    assert argv[argv.index("--input") + 1] == f"file:{tmp_path / 'probe.csv'}"
    assert argv[argv.index("--emit") + 1] == "all" and argv.count("--emit") == 1
    assert argv[argv.index("--home-net") + 1] == "10.0.0.0/8"  # the rest is kept


def test_the_units_command_runs_with_its_credentials_and_state_dir(learned_site, prefix,
                                                                   tmp_path):
    """The unit's ExecStart as systemd runs it: ${CREDENTIALS_DIRECTORY} set and substituted,
    the credentials as systemd leaves them (0400; the DynamicUser's ACL entry shows as group
    bits, 0440 here), the state directory given. The daemon starts, keeps its state there, and
    stops; the same token file outside the credentials directory at 0440 is refused."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "webhook-token").write_text(TOKEN + "\n")
    (credentials / "webhook-token").chmod(0o440)
    unit = render_unit(load_profile("x86_64"), str(prefix), webhook="https://127.0.0.1:9/hook",
                       webhook_token_file="/etc/edge-ids/webhook-token",
                       state_dir=str(tmp_path / "state"))
    argv = [a.replace("${CREDENTIALS_DIRECTORY}", str(credentials)) for a in exec_start(unit)]
    argv = with_options(argv, {"--bundle": str(learned_site["bundle"]),
                               "--input": "file:/dev/null", "--alerts": "-"}, drop=("--metrics",))
    env = os.environ | {"CREDENTIALS_DIRECTORY": str(credentials)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "webhook: https://127.0.0.1:9/hook" in done.stderr
    assert any((tmp_path / "state").iterdir())  # the state was written there
    outside = tmp_path / "webhook-token"
    outside.write_text(TOKEN + "\n")
    outside.chmod(0o440)
    argv[argv.index("--webhook-token-file") + 1] = str(outside)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 5 and "chmod 600" in done.stderr, done.stderr
