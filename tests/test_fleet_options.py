"""The role's page, webhook, token, state and extra-option variables reach the unit when they are
set in an inventory (issue 39, point 3): the role used to build its options in a task-level
`vars:` named edge_ids_options, which Ansible ranks above the inventory, so the documented
inventory setting was discarded and a rollout dropped the page and the webhook.

Fast: the role's own options step (tasks/options.yml) through ansible-playbook with host_vars and
group_vars, its argv given to the real `edge-ids unit`. Slow: a real rollout (`fleet deploy`) to
a "device" (sshd on 127.0.0.1), its unit read there."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import sshd
from edge_ids.cli import main
from edge_ids.devices.fleet import ROLES_DIR
from edge_ids.devices.install import exec_start
from test_operator_unit import verified

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(not (BIN / "ansible-playbook").is_file(),
                                reason="needs ansible-core (the host extra)")
HOOK = "https://ntfy.example.org/edge-ids"
UI_TOKEN, WEBHOOK_TOKEN = "ui-5b0e7c2a9d14f836", "wh-c41f8a09e27d3b65"


def write_inventory(folder: Path, hosts: str, files: dict[str, dict]) -> Path:
    """An inventory folder as operators keep one: hosts.ini, and {"group_vars/sensors.yml":
    variables, "host_vars/HOST.yml": variables}."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts.ini").write_text(hosts)
    for name, values in files.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(yaml.safe_dump(values))
    return folder


def role_options(inventory: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """Run the role's options step for every host; HOST.json in `out` holds its argv."""
    playbook = out / "options.yml"
    playbook.write_text(f"""\
- name: The options the role gives fleet package
  hosts: all
  gather_facts: false
  tasks:
    - name: The role's options step
      ansible.builtin.include_role:
        name: edge_ids
        tasks_from: options
    - name: Keep them
      ansible.builtin.copy:
        content: "{{{{ __edge_ids_package_options | to_json }}}}"
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        mode: "0600"
      delegate_to: localhost
""")
    return subprocess.run([BIN / "ansible-playbook", "-i", inventory, playbook, *extra],
                          capture_output=True, text=True, timeout=300,
                          env=os.environ | {"ANSIBLE_ROLES_PATH": str(ROLES_DIR),
                                            "ANSIBLE_NOCOLOR": "1"})


HOSTS = f"""\
[sensors]
sensor-1
sensor-2
[all:vars]
ansible_connection=local
ansible_python_interpreter={sys.executable}
"""


def test_the_inventorys_page_and_webhook_reach_the_package_command(tmp_path):
    inventory = write_inventory(tmp_path / "inventory", HOSTS, {
        "group_vars/sensors.yml": {"edge_ids_webhook": HOOK,
                                   "edge_ids_webhook_token_file": "/etc/edge-ids/webhook-token",
                                   "edge_ids_webhook_min_severity": "medium"},
        "host_vars/sensor-1.yml": {"edge_ids_ui": "127.0.0.1:9109",
                                   "edge_ids_ui_token_file": "/etc/edge-ids/ui-token",
                                   "edge_ids_ui_cert_file": "/etc/edge-ids/page.crt",
                                   "edge_ids_ui_key_file": "/etc/edge-ids/page.key",
                                   "edge_ids_state_dir": "/var/lib/edge-ids",
                                   "edge_ids_extra_options": ["--emit", "incidents"]}})
    done = role_options(inventory, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    first = json.loads((tmp_path / "sensor-1.json").read_text())
    assert first == ["--ui", "127.0.0.1:9109", "--ui-token-file", "/etc/edge-ids/ui-token",
                     "--ui-cert", "/etc/edge-ids/page.crt", "--ui-key", "/etc/edge-ids/page.key",
                     "--webhook", HOOK, "--webhook-min-severity", "medium",
                     "--webhook-token-file", "/etc/edge-ids/webhook-token",
                     "--state-dir", "/var/lib/edge-ids",
                     "--extra-option=--emit", "--extra-option=incidents"]
    second = json.loads((tmp_path / "sensor-2.json").read_text())
    assert second == ["--webhook", HOOK, "--webhook-min-severity", "medium",
                      "--webhook-token-file", "/etc/edge-ids/webhook-token",
                      "--state-dir", "/var/lib/edge-ids"]  # the role's default
    # what `fleet deploy --webhook-min-severity high --webhook-insecure` passes: extra vars
    done = role_options(inventory, tmp_path, "-e", '{"edge_ids_webhook_min_severity": "high", '
                                                   '"edge_ids_webhook_insecure": true}')
    assert done.returncode == 0, done.stdout[-3000:]
    again = json.loads((tmp_path / "sensor-2.json").read_text())
    assert again[again.index("--webhook-min-severity") + 1] == "high"
    assert "--webhook-insecure" in again

    # the same argv makes the unit (fleet package takes the options of `edge-ids unit`)
    prefix = tmp_path / "opt"
    (prefix / "current/venv/bin").mkdir(parents=True)
    (prefix / "current/venv/bin/edge-ids").symlink_to(BIN / "edge-ids")
    result = CliRunner().invoke(main, ["unit", "--device", "x86_64", "--prefix", str(prefix),
                                       *first])
    assert result.exit_code == 0, result.output
    unit = result.output
    if shutil.which("systemd-analyze"):
        verified(unit, tmp_path)
    argv = exec_start(unit)
    assert argv[argv.index("--ui") + 1] == "127.0.0.1:9109"
    assert argv[argv.index("--webhook") + 1] == HOOK
    assert argv[argv.index("--webhook-token-file") + 1] == \
        "${CREDENTIALS_DIRECTORY}/webhook-token"
    assert "LoadCredential=webhook-token:/etc/edge-ids/webhook-token\n" in unit
    assert "LoadCredential=ui-token:/etc/edge-ids/ui-token\n" in unit
    assert "LoadCredential=ui-cert:/etc/edge-ids/page.crt\n" in unit
    assert "LoadCredential=ui-key:/etc/edge-ids/page.key\n" in unit
    assert argv[argv.index("--ui-cert") + 1] == "${CREDENTIALS_DIRECTORY}/ui-cert"
    assert argv[-2:] == ["--emit", "incidents"]


def test_what_the_role_cannot_use_stops_the_host_with_the_reason(tmp_path):
    """edge_ids_options, which the docs once told operators to set, was never read: now it
    says so instead of dropping the page. An extra option systemd would split is refused."""
    inventory = write_inventory(tmp_path / "old", HOSTS, {
        "group_vars/sensors.yml": {"edge_ids_options": ["--ui", "127.0.0.1:9109"]}})
    done = role_options(inventory, tmp_path)
    assert done.returncode != 0
    assert "edge_ids_options is not a variable of the edge_ids role" in done.stdout
    assert "edge_ids_ui" in done.stdout
    inventory = write_inventory(tmp_path / "spaces", HOSTS, {
        "group_vars/sensors.yml": {"edge_ids_extra_options": ["--home-net 10.0.0.0/8"]}})
    done = role_options(inventory, tmp_path)
    assert done.returncode != 0
    assert "edge_ids_extra_options must be a list of single arguments" in done.stdout


def device_inventory(folder: Path, server, device: Path, **variables) -> Path:
    """One device on sshd: hosts.ini with the connection, host_vars/dev1.yml with the role's
    variables (the inventory, not extra vars)."""
    hosts = (f"[sensors]\ndev1 ansible_host=127.0.0.1 ansible_port={server.port} "
             f"ansible_user=root ansible_ssh_private_key_file={server.dir}/client_key\n"
             f"[all:vars]\nansible_python_interpreter=/usr/bin/python3\n"
             f"ansible_ssh_common_args='-o UserKnownHostsFile={server.known_hosts} "
             f"-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes "
             f"-o IdentitiesOnly=yes'\n")
    base = {"edge_ids_device": "x86_64", "edge_ids_prefix": f"{device}/opt",
            "edge_ids_alerts": f"{device}/alerts.json", "edge_ids_input": f"unix:{device}/in.sock",
            "edge_ids_metrics": f"127.0.0.1:{sshd.free_port()}"}
    return write_inventory(folder, hosts, {"host_vars/dev1.yml": base | variables})


@pytest.mark.slow  # three rollouts to one device: `pytest -m slow tests/test_fleet_options.py`
@pytest.mark.skipif(not sshd.available(), reason="needs openssh-server and client")
def test_a_rollout_puts_the_inventorys_page_and_webhook_into_the_unit(small_pipeline, tmp_path):
    device = tmp_path / "dev1"
    server = sshd.SSHServer(device / "ssh")
    try:
        ui_token, webhook_token = device / "ui-token", device / "webhook-token"
        for path, token in ((ui_token, UI_TOKEN), (webhook_token, WEBHOOK_TOKEN)):
            path.write_text(token + "\n")
            path.chmod(0o600)
        port = sshd.free_port()
        inventory = device_inventory(
            tmp_path / "inventory", server, device, edge_ids_ui=f"127.0.0.1:{port}",
            edge_ids_ui_token_file=str(ui_token), edge_ids_webhook="https://127.0.0.1:9/hook",
            edge_ids_webhook_token_file=str(webhook_token),
            edge_ids_webhook_min_severity="medium", edge_ids_state_dir=f"{device}/state",
            edge_ids_extra_options=["--emit", "incidents"])
        bundle = small_pipeline[0] / "bundle"

        def rollout(*options) -> str:
            result = CliRunner().invoke(main, ["fleet", "deploy", "-i", str(inventory),
                                               "--bundle", str(bundle), *options])
            print(result.output[-3000:])
            return result

        result = rollout()
        assert result.exit_code == 0, result.output[-3000:]
        unit = (device / "opt" / "current" / "edge-ids.service").read_text()  # on the device
        argv = exec_start(unit)
        assert argv[argv.index("--ui") + 1] == f"127.0.0.1:{port}"
        assert argv[argv.index("--ui-token-file") + 1] == "${CREDENTIALS_DIRECTORY}/ui-token"
        assert argv[argv.index("--webhook") + 1] == "https://127.0.0.1:9/hook"
        assert argv[argv.index("--webhook-min-severity") + 1] == "medium"
        assert argv[argv.index("--webhook-token-file") + 1] == \
            "${CREDENTIALS_DIRECTORY}/webhook-token"
        assert argv[argv.index("--state-dir") + 1] == f"{device}/state"
        assert argv[-2:] == ["--emit", "incidents"]
        assert f"LoadCredential=ui-token:{ui_token}\n" in unit
        assert f"LoadCredential=webhook-token:{webhook_token}\n" in unit
        assert UI_TOKEN not in unit and WEBHOOK_TOKEN not in unit
        first = os.readlink(device / "opt" / "current")
        health = json.loads((device / "opt" / "current" / "health.json").read_text())
        assert health["ok"] is True  # the probe ran the unit's command without page and push

        # the command line overrides the inventory for every host (extra vars)
        result = rollout("--webhook-min-severity", "high")
        assert result.exit_code == 0, result.output[-3000:]
        argv = exec_start((device / "opt" / "current" / "edge-ids.service").read_text())
        assert argv[argv.index("--webhook-min-severity") + 1] == "high"
        second = os.readlink(device / "opt" / "current")
        assert second != first

        # a token file others may open refuses the release; the device keeps its own
        webhook_token.chmod(0o644)
        result = rollout("--webhook-min-severity", "low")
        assert result.exit_code == 1
        assert "refused release" in result.output and \
            f"which group or others may open (mode 0644): chmod 600 {webhook_token}" in \
            result.output
        assert os.readlink(device / "opt" / "current") == second
    finally:
        server.stop()
