"""`edge-ids fleet` through real ansible-playbook against three "devices": three sshd on
127.0.0.1 (tests/sshd.py), each on its own port, with its own host key and install prefix. No
systemd runs here, so each install takes deploy's no-systemd path (the health check is the
unit's own ExecStart classifying probe records)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import sshd
from daemon_process import send
from edge_ids.cli import main
from edge_ids.devices.fleet import ANSIBLE_DIR, ROLES_DIR
from edge_ids.devices.install import exec_start
from edge_ids.edge_runtime import load_bundle
from edge_ids.edge_runtime.model.signature import NAMESPACE

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(not sshd.available() or not (BIN / "ansible-playbook").is_file(),
                                reason="needs openssh-server and client, and ansible-core")
HOSTS = ("dev1", "dev2", "dev3")


def cli(*args) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    """{host: (SSHServer, its folder)} and an inventory: dev1 alone in the canary group."""
    root = tmp_path_factory.mktemp("fleet")
    servers = {h: sshd.SSHServer(root / h / "ssh") for h in HOSTS}
    yield root, {h: (s, root / h) for h, s in servers.items()}
    for server in servers.values():
        server.stop()


def inventory(devices, path: Path, **per_host: dict) -> Path:
    """An INI inventory of the three devices; `per_host` adds variables to one host."""
    root, hosts = devices
    known_hosts = root / "known_hosts"
    known_hosts.write_text("".join(s.known_hosts.read_text() for s, _ in hosts.values()))
    lines = []
    for group, names in (("canary", HOSTS[:1]), ("sensors", HOSTS[1:])):
        lines.append(f"[{group}]")
        for host in names:
            server, folder = hosts[host]
            extra = " ".join(f"{k}={v}" for k, v in per_host.get(host, {}).items())
            lines.append(f"{host} ansible_port={server.port} ansible_ssh_private_key_file="
                         f"{server.dir}/client_key edge_ids_prefix={folder}/opt "
                         f"edge_ids_alerts={folder}/alerts.json edge_ids_input=unix:{folder}/in.sock "
                         f"edge_ids_metrics=127.0.0.1:{sshd.free_port()} {extra}")
    lines += ["[all:vars]", "ansible_host=127.0.0.1", "ansible_user=root",
              "ansible_python_interpreter=/usr/bin/python3", "edge_ids_device=x86_64",
              f"ansible_ssh_common_args='-o UserKnownHostsFile={known_hosts} "
              f"-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes "
              f"-o IdentitiesOnly=yes'"]
    path.write_text("\n".join(lines) + "\n")
    return path


def current(folder: Path) -> str | None:
    try:
        return os.readlink(folder / "opt" / "current").split("/")[-1]
    except OSError:
        return None


def releases(folder: Path) -> list[str]:
    directory = folder / "opt" / "releases"
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    return sshd.release_keys(tmp_path_factory.mktemp("keys"), NAMESPACE)


@pytest.fixture(scope="module")
def signed_bundle(small_pipeline, keys, tmp_path_factory) -> Path:
    bundle = Path(shutil.copytree(small_pipeline[0] / "bundle",
                                  tmp_path_factory.mktemp("signed") / "bundle"))
    assert cli("sign", "--key", keys["key"], bundle).exit_code == 0
    return bundle


@pytest.fixture(scope="module")
def rolled_out(devices, signed_bundle, keys, tmp_path_factory):
    """The first rollout: a signed bundle to all three, signatures required on every host."""
    hosts_ini = inventory(devices, tmp_path_factory.mktemp("inv") / "hosts.ini")
    started = time.monotonic()
    result = cli("fleet", "deploy", "-i", hosts_ini, "--bundle", signed_bundle, "--canary", 1,
                 "--batch", 2, "--allowed-signers", keys["allowed"], "--require-signature")
    print(result.output)
    assert result.exit_code == 0, result.output
    return hosts_ini, result.output, time.monotonic() - started


@pytest.mark.slow  # the rollout to three devices, ~1-2 min: `pytest -m slow tests/test_fleet.py`
def test_fleet_deploy_installs_on_three_devices_and_status_shows_them(
        rolled_out, devices, signed_bundle, keys, kdd_test_lines):
    hosts_ini, output, seconds = rolled_out
    print(f"fleet deploy to 3 devices: {seconds:.0f} s")
    hosts = devices[1]
    ids = {h: current(folder) for h, (_, folder) in hosts.items()}
    assert None not in ids.values() and len(set(ids.values())) == 1  # one package, one id
    model = load_bundle(signed_bundle).model_sha256
    assert "packages built: 1 (x86_64-py3.11-glibc2.36) for 3 hosts reached" in output
    for host, (_, folder) in hosts.items():
        assert f"{host}  ok       installed, release {ids[host]}" in output
        release = folder / "opt" / "releases" / ids[host]
        assert json.loads((release / "health.json").read_text())["ok"] is True
        info = json.loads((release / "release.json").read_text())
        assert info["model_sha256"] == model and info["device"] == "x86_64"
        unit = (release / "edge-ids.service").read_text()  # this host's own unit
        assert f"--input unix:{folder}/in.sock --bundle {folder}/opt/current/bundle" in unit
        assert f"--allowed-signers {folder}/opt/trust/allowed_signers --state-dir " \
               f"/var/lib/edge-ids\n" in unit
        assert (release / "allowed_signers").read_bytes() == keys["allowed"].read_bytes()
        assert (folder / "opt" / "trust" / "allowed_signers").read_bytes() == \
            keys["allowed"].read_bytes()  # the trust anchor, outside the releases
        assert (release / "bundle" / "manifest.json.sig").is_file()
    # the role and playbooks are package data of the edge-ids wheel (inert YAML, so they also
    # reach the device inside it); ansible-core itself never goes there
    site = list((hosts["dev1"][1] / "opt" / "venvs").glob("*/lib/python3*/site-packages"))
    assert len(site) == 1 and not list(site[0].glob("ansible*"))
    installed = [site[0] / "edge_ids" / "devices" / "ansible"]
    shipped = sorted(str(p.relative_to(ANSIBLE_DIR)) for p in ANSIBLE_DIR.rglob("*.yml"))
    assert sorted(str(p.relative_to(installed[0])) for p in installed[0].rglob("*.yml")) \
        == shipped and "roles/edge_ids/tasks/main.yml" in shipped
    # the canary batch came first, alone
    assert output.index("PLAY [Roll out edge-ids]") < output.index("dev1") < output.index("dev2")

    # one device runs its daemon (started by hand: no systemd here) and gets records
    _, folder = hosts["dev2"]
    argv = exec_start((folder / "opt" / "current" / "edge-ids.service").read_text())
    daemon = subprocess.Popen(argv, stderr=subprocess.PIPE, cwd=folder)
    lines = kdd_test_lines[:500]
    try:
        deadline = time.monotonic() + 60
        while not (folder / "in.sock").exists() and time.monotonic() < deadline:
            assert daemon.poll() is None, daemon.stderr.read().decode()
            time.sleep(0.1)
        send(folder / "in.sock", b"".join(lines))
        rows = {}
        while time.monotonic() < deadline:
            result = cli("fleet", "status", "-i", hosts_ini, "--json")
            assert result.exit_code == 0, result.output
            rows = {r["host"]: r for r in json.loads(result.output)}
            if rows["dev2"]["records"] == len(lines):
                break
            time.sleep(0.5)
        table = cli("fleet", "status", "-i", hosts_ini, "--quiet").output
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    assert set(rows) == set(HOSTS)
    for host in HOSTS:
        assert rows[host]["release"] == ids[host] and rows[host]["model"] == model
        assert rows[host]["health"] == "healthy" and rows[host]["error"] is None
    assert rows["dev2"]["records"] == 500 and rows["dev2"]["alerts"] > 50
    assert rows["dev2"]["daemon"] == "running (no systemd)"
    assert rows["dev1"]["daemon"] == "not running (no systemd)" and rows["dev1"]["records"] is None
    header, *body = table.strip().splitlines()
    assert header.split() == ["HOST", "RELEASE", "MODEL", "DAEMON", "RECORDS", "ALERTS", "HEALTH"]
    assert len(body) == 3 and all(ids["dev1"] in line and model[:12] in line for line in body)
    assert "500" in next(line for line in body if line.startswith("dev2"))


@pytest.mark.slow  # the rollout to three devices, ~1-2 min: `pytest -m slow tests/test_fleet.py`
def test_a_bundle_that_differs_only_in_features_json_is_installed(rolled_out, devices,
                                                                  signed_bundle, keys, tmp_path):
    """The review's case: a corrected features.json with the same model.tflite (the same
    model_sha256) is a new bundle. The role always passes --skip-unchanged; "unchanged" means
    the whole signed content (manifest and signature), so dev2 gets it installed."""
    _, folder = devices[1]["dev2"]
    before = current(folder)
    corrected = Path(shutil.copytree(signed_bundle, tmp_path / "bundle"))
    spec = json.loads((corrected / "features.json").read_text())
    spec["kept"][0]["max"] = spec["kept"][0]["max"] * 1.5 + 1  # a corrected scale
    (corrected / "features.json").write_text(json.dumps(spec))
    manifest = json.loads((corrected / "manifest.json").read_text())
    manifest["files"]["features.json"]["sha256"] = hashlib.sha256(
        (corrected / "features.json").read_bytes()).hexdigest()
    (corrected / "manifest.json").write_text(json.dumps(manifest, indent=1))
    assert cli("sign", "--key", keys["key"], corrected).exit_code == 0
    assert load_bundle(corrected).model_sha256 == load_bundle(signed_bundle).model_sha256
    result = cli("fleet", "deploy", "-i", rolled_out[0], "--bundle", corrected, "--limit",
                 "dev2", "--allowed-signers", keys["allowed"])
    assert result.exit_code == 0, result.output
    assert "dev2  ok       installed, release " in result.output, result.output
    assert current(folder) != before
    installed = folder / "opt" / "current" / "bundle" / "features.json"
    assert installed.read_bytes() == (corrected / "features.json").read_bytes()
    # back to the first bundle, as the first rollout put it (new to dev2 again: installed), so
    # that the playbook test below finds every host on it and changes nothing (changed=0)
    again = cli("fleet", "deploy", "-i", rolled_out[0], "--bundle", signed_bundle, "--limit",
                "dev2", "--allowed-signers", keys["allowed"], "--require-signature")
    assert again.exit_code == 0 and "dev2  ok       installed, release " in again.output, \
        again.output


@pytest.mark.slow  # a third rollout costs minutes; `pytest -m slow tests/test_fleet.py`
def test_your_own_playbook_with_the_role_changes_nothing_the_second_time(
        rolled_out, devices, signed_bundle, keys, tmp_path):
    """A user's playbook includes the shipped role (ANSIBLE_ROLES_PATH from `fleet path`), in
    two batches and without a package folder of its own: the role makes one for the run (kept
    across the batches), and a rollout of what is already installed changes nothing."""
    before = {h: releases(folder) for h, (_, folder) in devices[1].items()}
    roles = cli("fleet", "path").output.splitlines()[0].removeprefix("roles: ")
    playbook = tmp_path / "sensors.yml"
    playbook.write_text(f"""\
- name: My sensors
  hosts: all
  serial: [1, 2]
  max_fail_percentage: 0
  gather_facts: false
  roles:
    - role: edge_ids
      edge_ids_bundle: {signed_bundle}
      edge_ids_allowed_signers: {keys["allowed"]}
      edge_ids_require_signature: true
      edge_ids_command: [{sys.executable}, -m, edge_ids]
""")
    packages = set(Path(tempfile.gettempdir()).glob("edge-ids-packages.*"))
    done = subprocess.run([BIN / "ansible-playbook", "-i", rolled_out[0], playbook],
                          capture_output=True, text=True, env=os.environ | {
                              "ANSIBLE_ROLES_PATH": roles, "ANSIBLE_NOCOLOR": "1"})
    made = set(Path(tempfile.gettempdir()).glob("edge-ids-packages.*")) - packages
    for folder in made:
        shutil.rmtree(folder)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert len(made) == 1  # one package folder for both batches
    for host in HOSTS:
        assert re.search(rf"^{host}\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0",
                         done.stdout, re.M), done.stdout[-2000:]
    assert done.stdout.count("unchanged: the current release") == 3
    assert {h: releases(folder) for h, (_, folder) in devices[1].items()} == before


@pytest.mark.slow  # a second rollout attempt, about a minute: `pytest -m slow tests/test_fleet.py`
def test_a_canary_that_fails_its_health_check_stops_the_rollout(
        rolled_out, devices, other_bundle, keys, tmp_path):
    """dev1 (the canary) gets a health-check timeout no daemon can meet; the release fails
    there, dev1 goes back to its release, and dev2 and dev3 are never touched."""
    hosts = devices[1]
    before = {h: (current(folder), releases(folder)) for h, (_, folder) in hosts.items()}
    hosts_ini = inventory(devices, tmp_path / "hosts.ini", dev1={"edge_ids_timeout": 0.05})
    other = Path(shutil.copytree(other_bundle, tmp_path / "other"))
    assert cli("sign", "--key", keys["key"], other).exit_code == 0
    result = cli("fleet", "deploy", "-i", hosts_ini, "--bundle", other, "--canary", 1,
                 "--batch", 1, "--allowed-signers", keys["allowed"])
    print(result.output)  # what a failed rollout looks like (README)
    assert result.exit_code == 1
    first = before["dev1"][0]
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("Error: the rollout stopped: dev1: release ")
    assert f"failed its health check, back on {first}: the daemon did not classify the " \
           f"probe records in 0.05 s" in message
    assert message.endswith("2 host(s) not reached, left as they were")
    assert "dev1  FAILED   release " in result.output
    for host in ("dev2", "dev3"):
        assert f"{host}  skipped  untouched: the rollout stopped before its batch" in result.output
    assert current(hosts["dev1"][1]) == first  # back on its previous release
    failed = set(releases(hosts["dev1"][1])) - set(before["dev1"][1])
    assert len(failed) == 1
    health = json.loads((hosts["dev1"][1] / "opt" / "releases" / failed.pop()
                         / "health.json").read_text())
    assert health["ok"] is False and "0.05 s" in health["reason"]
    for host in ("dev2", "dev3"):
        assert (current(hosts[host][1]), releases(hosts[host][1])) == before[host]


@pytest.mark.slow  # the rollout to three devices, ~1-2 min: `pytest -m slow tests/test_fleet.py`
def test_the_health_check_on_the_device_verifies_the_signature(rolled_out, devices,
                                                                signed_bundle, keys, tmp_path):
    """A package whose bundle was swapped after the host's own check (re-signed by another key,
    changed after signing, or its signature removed) fails the health check on the device:
    install.py probes with the unit's ExecStart, which carries --allowed-signers and
    --require-signature. The reason is named and the device is back on its release. (The
    package's install.py runs as deploy and the role run it on a device; the devices here are
    this machine, and dev1's venv is reused.)"""
    _, folder = devices[1]["dev1"]
    first = current(folder)
    package = tmp_path / "dev1.tar.gz"
    result = cli("deploy", "--device", "x86_64", "--bundle", signed_bundle, "--output", package,
                 "--prefix", folder / "opt", "--input", f"unix:{folder}/in.sock", "--alerts",
                 folder / "alerts.json", "--allowed-signers", keys["allowed"],
                 "--require-signature")
    assert result.exit_code == 0, result.output
    sshd.keygen(tmp_path / "stranger")

    def resign(bundle: Path):
        assert cli("sign", "--key", tmp_path / "stranger", bundle).exit_code == 0

    def edit(bundle: Path):
        manifest = json.loads((bundle / "manifest.json").read_text())
        (bundle / "manifest.json").write_text(json.dumps(manifest | {"dataset": "edited"}))

    def unsign(bundle: Path):
        (bundle / "manifest.json.sig").unlink()

    for swap, reason in ((resign, "which is not in the allowed-signers file"),
                         (edit, "the bundle was changed after signing"),
                         (unsign, "the bundle is not signed")):
        unpacked = tmp_path / swap.__name__
        unpacked.mkdir()
        shutil.unpack_archive(package, unpacked)
        [top] = unpacked.iterdir()
        swap(top / "bundle")
        done = subprocess.run(["/usr/bin/python3", top / "install.py", "install", "--prefix",
                               folder / "opt", "--systemd", "no", "--timeout", "120"],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 1, done.stdout + done.stderr
        outcome = json.loads(done.stdout.split("RESULT ")[-1])
        assert outcome["ok"] is False and outcome["rolled_back_to"] == first
        assert outcome["reason"].startswith("the daemon cannot start") and reason in \
            outcome["reason"], outcome["reason"]
        assert current(folder) == first


def test_status_says_which_hosts_it_cannot_read(devices, tmp_path):
    root, hosts = devices
    hosts_ini = inventory(devices, tmp_path / "hosts.ini")
    text = hosts_ini.read_text().replace(f"edge_ids_prefix={hosts['dev3'][1]}/opt",
                                         f"edge_ids_prefix={tmp_path}/nothing")
    hosts_ini.write_text(text)
    result = cli("fleet", "status", "-i", hosts_ini, "--limit", "dev3", "--quiet")
    assert result.exit_code == 1
    assert f"dev3  - (no edge-ids release under {tmp_path}/nothing" in result.output


def test_targets_for_prometheus_come_from_the_inventory(tmp_path):
    hosts_ini = tmp_path / "hosts.ini"
    hosts_ini.write_text("[ward_a]\nsensor-1 ansible_host=10.1.0.11\nsensor-2 ansible_host="
                         "10.1.0.12 edge_ids_metrics=10.1.0.12:9200\n"
                         "[ward_b]\nsensor-3 ansible_host=fd00::3 edge_ids_device=pi5\n"
                         "sensor-4 edge_ids_metrics=127.0.0.1:9108\n"
                         "[wards:children]\nward_a\nward_b\n"
                         "[wards:vars]\nedge_ids_metrics=0.0.0.0:9108\n")
    out = tmp_path / "edge-ids.json"
    result = CliRunner().invoke(main, ["fleet", "targets", "-i", str(hosts_ini),
                                                       "-o", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    targets = {t["labels"]["edge_ids_host"]: t for t in json.loads(out.read_text())}
    assert targets["sensor-1"]["targets"] == ["10.1.0.11:9108"]  # group var, ansible_host
    assert targets["sensor-2"]["targets"] == ["10.1.0.12:9200"]  # its own address
    assert targets["sensor-3"]["targets"] == ["[fd00::3]:9108"]
    assert targets["sensor-3"]["labels"] == {"edge_ids_host": "sensor-3", "edge_ids_device": "pi5",
                                             "edge_ids_groups": ",ward_b,wards,"}
    assert "sensor-4" not in targets  # loopback: Prometheus cannot reach it
    assert "sensor-4: metrics listen on 127.0.0.1:9108" in result.stderr
    assert "3 targets written" in result.stderr


def test_the_role_and_playbooks_pass_syntax_check_and_ansible_lint(tmp_path):
    hosts_ini = tmp_path / "hosts.ini"
    hosts_ini.write_text("sensor-1 ansible_host=192.0.2.1\n")
    env = os.environ | {"ANSIBLE_ROLES_PATH": str(ROLES_DIR)}
    for playbook in ("fleet.yml", "status.yml"):
        done = subprocess.run([BIN / "ansible-playbook", "-i", hosts_ini, "--syntax-check",
                               ANSIBLE_DIR / playbook], capture_output=True, text=True, env=env)
        assert done.returncode == 0 and f"playbook: {ANSIBLE_DIR / playbook}" in done.stdout, \
            done.stderr
    if not (BIN / "ansible-lint").is_file():
        pytest.skip("ansible-lint is not installed (the dev extra has it)")
    done = subprocess.run([BIN / "ansible-lint", "--offline", "--profile", "production",
                           "--nocolor", "."], capture_output=True, text=True, env=env,
                          cwd=ANSIBLE_DIR)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Profile 'production' was required, and it passed" in done.stderr + done.stdout


def test_fleet_deploy_without_hosts_or_with_a_bad_batch_is_a_clear_error(small_pipeline,
                                                                          tmp_path):
    hosts_ini = tmp_path / "hosts.ini"
    hosts_ini.write_text("[sensors]\n")
    bundle = small_pipeline[0] / "bundle"
    result = cli("fleet", "deploy", "-i", hosts_ini, "--bundle", bundle)
    assert result.exit_code == 1 and "no hosts in" in result.output
    result = cli("fleet", "deploy", "-i", hosts_ini, "--bundle", bundle, "--batch", "0")
    assert result.exit_code == 2 and "a number of hosts, or a percentage" in result.output
    broken = Path(shutil.copytree(bundle, tmp_path / "broken"))
    (broken / "features.json").write_text("{}")
    result = cli("fleet", "deploy", "-i", hosts_ini, "--bundle", broken)
    assert result.exit_code == 5 and "features.json was modified or corrupted" in result.output
    assert "PLAY" not in result.output  # stopped before Ansible started


def test_the_documented_vector_config_reads_the_daemons_alert_file():
    """Vector does not install here (not in Debian 12, not on PyPI), so its own `vector
    validate` cannot run: this checks only that the documented file is YAML and that it ships
    the file the daemon writes by default, dropping what is not JSON."""
    import re

    import yaml

    from edge_ids.devices.unit import DEFAULT_ALERTS

    text = (Path(__file__).parents[1] / "docs" / "fleet.md").read_text()
    section = text.split("## Shipping the alerts: Vector")[1].split("\n## ")[0]
    config = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    assert config["sources"]["edge_ids_alerts"]["include"] == [DEFAULT_ALERTS]
    remap = config["transforms"]["eve"]
    assert remap["inputs"] == ["edge_ids_alerts"] and "parse_json(.message)" in remap["source"]
    assert config["sinks"]["central"]["inputs"] == ["eve"]
    assert config["sinks"]["central"]["buffer"]["type"] == "disk"
