"""Slow: the user's whole device path on a virtual Raspberry Pi (tests/virtual_pi.py): Debian
Trixie arm64 with its own 6.12 kernel, systemd as PID 1 and Python 3.13, under
qemu-system-aarch64 (-cpu cortex-a72), reached over SSH on a loopback port. Run as root:

    apt-get install -y qemu-system-arm qemu-user-static qemu-utils mmdebstrap
    .venv/bin/python -m pytest -m slow tests/test_virtual_pi.py -s

From a cold cache it first builds the image (about 15 min on 2 cores, cached in
~/.cache/edge-ids/virtual-pi/); a boot takes about a minute. The tests share one boot, in the
order a user would go: deploy a signed hybrid bundle, status, reload, a broken release rolled
back, the unit's own watchdog, MemoryMax, the system-call filter, the int8 bundle's predictions,
bench, the capture unit with a replay inside the guest, one fleet rollout. The emulator is this
test's child and is killed by its PID when the module ends, also after a failure."""
from __future__ import annotations

import json
import re
import shutil
import time
from functools import partial
from pathlib import Path

import pytest
import sshd
import virtual_pi
from click.testing import CliRunner, Result
from edge_ids.edge_runtime import load_bundle
from edge_ids.edge_runtime.model.signature import NAMESPACE
import systemd_site
from systemd_site import counter
from test_daemon import expected_classes
from test_deploy import broken_copy

from edge_ids.cli import main

# ssh into the emulator costs about a second a call: poll it gently
wait_until = partial(systemd_site.wait_until, every=2)

pytestmark = pytest.mark.slow
UNIT = "edge-ids.service"
PREFIX = "/opt/edge-ids"
ALERTS = "/var/log/edge-ids/alerts.json"
DROP_IN = f"/etc/systemd/system/{UNIT}.d/test.conf"
DYNAMIC_UIDS = range(61184, 65520)


def cli(*args) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def pi(tmp_path_factory):
    """One boot of the virtual Pi for the module; powered off and its emulator killed after."""
    why = virtual_pi.missing()
    if why:
        pytest.skip(why)
    if not virtual_pi.cached() and not virtual_pi.mirror_reachable():
        pytest.skip("no cached virtual Pi image and deb.debian.org is out of reach to build one")
    started = time.monotonic()
    image = virtual_pi.build()
    print(f"virtual Pi image ready after {time.monotonic() - started:.0f} s "
          f"({(image / 'ready').read_text().strip()} to build)")
    machine = virtual_pi.VirtualPi(tmp_path_factory.mktemp("virtual-pi"), image)
    try:
        machine.start()
        yield machine
    finally:
        machine.stop()
        assert machine.process.poll() is not None  # nothing left running
        print(f"virtual Pi: {time.monotonic() - started:.0f} s in all, emulator gone")


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    return sshd.release_keys(tmp_path_factory.mktemp("keys"), NAMESPACE)


@pytest.fixture(scope="module")
def signed(keys, tmp_path_factory):
    """A signed copy of a bundle, made once per bundle."""
    made: dict[Path, Path] = {}

    def sign(bundle: Path) -> Path:
        if bundle not in made:
            copy = tmp_path_factory.mktemp("signed") / "bundle"
            shutil.copytree(bundle, copy)
            assert cli("sign", "--key", keys["key"], copy).exit_code == 0
            made[bundle] = copy
        return made[bundle]
    return sign


def deploy(pi, bundle: Path, *extra) -> Result:
    started = time.monotonic()
    result = cli("deploy", "--device", "pi4", "--host", "vpi", "--ssh-config", pi.ssh_config,
                 "--bundle", bundle, "--timeout", "180", *extra)
    print(f"deploy {bundle.parent.name}/{bundle.name}: exit {result.exit_code} in "
          f"{time.monotonic() - started:.0f} s")
    return result


def show(pi, *properties: str) -> dict:
    out = pi.ssh(f"systemctl show {UNIT} " + " ".join(f"-p {p}" for p in properties)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def metrics(pi, port: int = 9108) -> str:
    return pi.ssh(f"python3 -c \"import urllib.request; print(urllib.request.urlopen("
                  f"'http://127.0.0.1:{port}/metrics', timeout=5).read().decode())\"",
                  check=False).stdout


def serving(pi) -> str | None:
    found = re.search(r'model_sha256="(\w+)"', metrics(pi))
    return found.group(1) if found else None


def with_drop_in(pi, text: str | None) -> None:
    """Put (or, with None, remove) a drop-in for the unit, and start it afresh."""
    if text is None:
        pi.ssh(f"rm -f {DROP_IN}")
    else:
        pi.ssh(f"mkdir -p {Path(DROP_IN).parent} && printf '[Service]\\n{text}\\n' > {DROP_IN}")
    pi.ssh(f"systemctl daemon-reload && systemctl reset-failed {UNIT}; "
           f"systemctl restart {UNIT}", check=text is None)


@pytest.fixture(scope="module")
def deployed(pi, learned_nsl_kdd, signed, keys):
    """The first deploy: the signed hybrid bundle, the device given the trusted key."""
    bundle = signed(learned_nsl_kdd["hybrid"])
    result = deploy(pi, bundle, "--allowed-signers", keys["allowed"])
    assert result.exit_code == 0, result.output
    return bundle, result.output


def test_the_virtual_pi_is_trixie_on_aarch64_with_its_own_kernel_and_systemd(pi):
    facts = pi.ssh("uname -m; uname -r; python3 -c 'import platform; "
                   "print(platform.python_version())'; . /etc/os-release; echo $VERSION_CODENAME;"
                   " systemctl is-system-running --wait; systemd-detect-virt; "
                   "cat /sys/fs/cgroup/cgroup.controllers", check=False).stdout.split("\n")
    print(f"virtual Pi: {facts[:6]}, SSH after {pi.boot_seconds:.0f} s")
    machine, kernel, python, codename, state, virt, controllers = facts[:7]
    assert machine == "aarch64" and kernel.startswith("6.")
    assert python.startswith("3.13") and codename == "trixie"
    assert state == "running" and virt == "qemu"
    assert "memory" in controllers.split()  # cgroup v2 with the memory controller


def test_deploy_of_a_signed_hybrid_bundle_serves_it_under_the_hardened_unit(pi, deployed, keys):
    bundle, output = deployed
    model = load_bundle(bundle).model_sha256
    assert "aarch64 CPython 3.13" in output and f"{UNIT} is active and serves model" in output
    assert serving(pi) == model
    state = show(pi, "MainPID", "ActiveState", "MemoryMax", "WatchdogUSec")
    assert state["ActiveState"] == "active" and state["MemoryMax"] == str(256 * 2**20)
    status = pi.ssh(f"grep -E '^(Uid|NoNewPrivs|Seccomp|Seccomp_filters):' "
                    f"/proc/{state['MainPID']}/status").stdout
    fields = dict(re.findall(r"^(\w+):\s+(\S+)", status, re.MULTILINE))
    assert int(fields["Uid"]) in DYNAMIC_UIDS and fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2" and int(fields["Seccomp_filters"]) >= 1
    rated = pi.ssh(f"systemd-analyze security {UNIT} --no-pager", check=False).stdout
    exposure = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", rated).group(1))
    print(f"on the guest: uid {fields['Uid']}, Seccomp 2 with {fields['Seccomp_filters']} "
          f"filters, systemd-analyze security {exposure}")
    assert exposure < 2.0  # the unit's own rating on the device, as on x86_64
    trusted = pi.ssh(f"cat {PREFIX}/trust/allowed_signers").stdout
    assert trusted == keys["allowed"].read_text()


def test_status_names_the_release_and_model_from_the_device(pi, deployed):
    result = cli("status", "--host", "vpi", "--ssh-config", pi.ssh_config, "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    current = [r for r in status["releases"] if r["current"]]
    assert len(current) == 1 and current[0]["model_sha256"] == load_bundle(deployed[0]).model_sha256
    text = cli("status", "--host", "vpi", "--ssh-config", pi.ssh_config)
    assert text.exit_code == 0 and "active" in text.output


def test_reload_serves_a_new_signed_bundle_and_refuses_an_unsigned_one(pi, deployed, signed,
                                                                       other_bundle):
    live = f"{PREFIX}/current/bundle"
    other = signed(other_bundle)
    new_model = load_bundle(other).model_sha256
    pid = show(pi, "MainPID")["MainPID"]
    pi.ssh("rm -rf /tmp/other && mkdir /tmp/other")
    for path in other.iterdir():
        pi.copy(path, f"/tmp/other/{path.name}")
    pi.ssh(f"rm -rf /tmp/kept && cp -a {live} /tmp/kept")
    try:
        pi.ssh(f"rm -f {live}/* && cp /tmp/other/* {live}/ && systemctl reload {UNIT}")
        wait_until(lambda: serving(pi) == new_model, 60, "the new model did not serve", pi)
        pi.ssh(f"rm {live}/manifest.json.sig && systemctl reload {UNIT}")
        wait_until(lambda: counter(metrics(pi), "edge_ids_reloads_total", result="failed") >= 1,
                   60, "the unsigned reload was not refused", pi)
        still = serving(pi)
        journal = pi.ssh(f"journalctl -u {UNIT} -n 30 --no-pager").stdout
    finally:
        pi.ssh(f"rm -f {live}/* && cp /tmp/kept/* {live}/ && systemctl reload {UNIT}")
    assert still == new_model  # refused the unsigned bundle, kept the signed one
    assert "reload failed, still serving" in journal
    assert show(pi, "MainPID")["MainPID"] == pid  # reloaded in place, never restarted
    wait_until(lambda: serving(pi) == load_bundle(deployed[0]).model_sha256, 60,
               "the first bundle did not come back", pi)


def test_a_broken_release_is_rolled_back_and_the_previous_serves(pi, deployed, signed, keys,
                                                                 learned_nsl_kdd, tmp_path):
    before = pi.ssh(f"readlink {PREFIX}/current").stdout.strip()
    broken = signed(broken_copy(learned_nsl_kdd["hybrid"], tmp_path / "broken"))
    result = deploy(pi, broken, "--allowed-signers", keys["allowed"])
    assert result.exit_code == 1, result.output
    assert "failed its health check and was rolled back to" in result.output
    assert pi.ssh(f"readlink {PREFIX}/current").stdout.strip() == before
    wait_until(lambda: serving(pi) == load_bundle(deployed[0]).model_sha256, 60,
               "the previous release did not serve again", pi)


def test_the_units_own_watchdog_restarts_a_stopped_daemon(pi, deployed):
    """WatchdogSec=30 as shipped (no drop-in): SIGSTOP, then systemd's SIGABRT and a restart."""
    before = show(pi, "MainPID", "NRestarts", "WatchdogUSec")
    assert before["WatchdogUSec"] == "30s"
    stopped = time.monotonic()
    pi.ssh(f"kill -STOP {before['MainPID']}")
    wait_until(lambda: int(show(pi, "NRestarts")["NRestarts"]) > int(before["NRestarts"]), 150,
               "the watchdog did not restart it", pi)
    wait_until(lambda: serving(pi) == load_bundle(deployed[0]).model_sha256, 120,
               "it did not serve again", pi)
    took = time.monotonic() - stopped
    journal = pi.ssh(f"journalctl -u {UNIT} -n 60 --no-pager").stdout
    print(f"SIGSTOP -> serving again after {took:.0f} s (WatchdogSec=30)")
    assert "Watchdog timeout (limit 30s)!" in journal
    assert "Failed with result 'watchdog'" in journal
    assert show(pi, "MainPID")["MainPID"] != before["MainPID"]


def test_memory_max_is_enforced_by_the_guest_kernel(pi, deployed):
    """cgroup v2: 20 MB is less than the daemon needs to load its model, the OOM killer ends it."""
    limit = pi.ssh(f"cat /sys/fs/cgroup/system.slice/{UNIT}/memory.max").stdout.strip()
    assert limit == str(256 * 2**20)
    since = pi.ssh("date +%s").stdout.strip()
    with_drop_in(pi, "MemoryMax=20M")
    try:
        def killed():  # Restart= soon sets Result back to success: the journal keeps it
            found = re.findall(r"Failed with result '([\w-]+)'", pi.ssh(
                f"journalctl -u {UNIT} --since @{since} --no-pager -o cat", check=False).stdout)
            return found[-1] if found else None
        result = wait_until(killed, 120, "it was not killed", pi)
        journal = pi.ssh(f"journalctl -u {UNIT} -n 40 --no-pager").stdout
    finally:
        with_drop_in(pi, None)
    print(f"MemoryMax=20M on the guest: result {result}")
    assert result == "oom-kill" and "oom-kill" in journal
    wait_until(lambda: serving(pi) == load_bundle(deployed[0]).model_sha256, 120,
               "it did not come back without the drop-in", pi)


def test_a_forbidden_system_call_is_refused_and_kills_without_the_error_number(pi, deployed):
    """The unit's sandbox and SystemCallFilter= around a probe calling setpriority (in
    @resources, denied): EPERM as shipped; killed (SIGSYS) once SystemCallErrorNumber= is gone,
    which shows the aarch64 kernel itself enforces the filter."""
    pi.ssh("printf 'import os\\nos.nice(1)\\nprint(\"niced\")\\n' > /opt/nice_probe.py")
    unit = pi.ssh(f"cat /etc/systemd/system/{UNIT}").stdout
    probe = re.sub(r"(?m)^(WatchdogSec|ExecReload|Restart|NotifyAccess)=.*\n", "", unit)
    probe = re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/usr/bin/python3 /opt/nice_probe.py", probe)
    probe = probe.replace("Type=notify", "Type=oneshot")
    results = {}
    for name, text in (("refused", probe),
                       ("killed", re.sub(r"(?m)^SystemCallErrorNumber=.*\n", "", probe))):
        pi.ssh(f"cat > /etc/systemd/system/edge-ids-{name}.service", input=text.encode())
        pi.ssh("systemctl daemon-reload")
        pi.ssh(f"systemctl start edge-ids-{name}.service", check=False)
        results[name] = (show_unit(pi, f"edge-ids-{name}.service"),
                         pi.ssh(f"journalctl -u edge-ids-{name}.service -o cat --no-pager").stdout)
        pi.ssh(f"rm /etc/systemd/system/edge-ids-{name}.service; systemctl daemon-reload; "
               f"systemctl reset-failed edge-ids-{name}.service", check=False)
    control = pi.ssh("setpriv --reuid=65534 --regid=65534 --clear-groups python3 "
                     "/opt/nice_probe.py").stdout
    print({k: v[0] for k, v in results.items()})
    assert control == "niced\n"  # nobody may lower its own priority outside the filter
    refused, killed = results["refused"], results["killed"]
    assert "PermissionError" in refused[1] and "niced" not in refused[1]
    assert killed[0]["Result"] == "signal" and killed[0]["ExecMainStatus"] == "31"  # SIGSYS
    assert "niced" not in killed[1]


def show_unit(pi, unit: str) -> dict:
    out = pi.ssh(f"systemctl show {unit} -p Result -p ExecMainStatus -p ExecMainCode").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_the_int8_bundle_on_the_guest_classifies_kddtest_like_the_host(pi, deployed,
                                                                       small_pipeline,
                                                                       kdd_test_lines, tmp_path):
    bundle = small_pipeline[0] / "bundle"
    records = tmp_path / "kddtest.csv"
    records.write_bytes(b"".join(kdd_test_lines))
    pi.ssh("rm -rf /tmp/int8 && mkdir /tmp/int8")
    for path in bundle.iterdir():
        pi.copy(path, f"/tmp/int8/{path.name}")
    pi.copy(records, "/tmp/kddtest.csv")
    started = time.monotonic()
    pi.ssh(f"{PREFIX}/current/venv/bin/edge-ids run --bundle /tmp/int8 --input "
           f"file:/tmp/kddtest.csv --alerts /tmp/eve.json --emit all --metrics 127.0.0.1:0")
    took = time.monotonic() - started
    lines = pi.ssh("cat /tmp/eve.json").stdout.splitlines()
    guest = [json.loads(line)["ml"]["class"] for line in lines]
    host = expected_classes(bundle, kdd_test_lines)
    print(f"KDDTest+ on the guest (Python 3.13, LiteRT aarch64, emulated): {len(guest)} records "
          f"in {took:.0f} s, {sum(a == b for a, b in zip(guest, host))} agree with the host")
    assert len(guest) == len(host) == 22544
    assert guest == host


def test_bench_on_the_guest_says_its_timings_are_not_the_hardwares(pi, deployed, small_pipeline,
                                                                   data_dir, tmp_path):
    out = tmp_path / "bench"
    result = cli("bench", "--host", "vpi", "--ssh-config", pi.ssh_config, "--device", "pi4",
                 "--data-dir", data_dir,
                 "--bundle", small_pipeline[0] / "bundle", "--records", 2000,
                 "--latency-records", 200, "--seconds", 0.1, "--batches", "1,256", "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "bench.json").read_text())
    machine = report["machine"]
    print(f"bench on the guest: {machine['architecture']} {machine['kernel']}, "
          f"{machine['virtualization']}")
    assert machine["architecture"] == "aarch64" and machine["virtualization"]["emulated"]
    assert machine["virtualization"]["kind"] == "qemu"
    text = (out / "report.md").read_text()
    assert "not the hardware's" in text and "qemu" in text
    assert report["accuracy_loss"]["int8_accuracy"] > 0.5  # accuracy on target still holds


def test_the_capture_unit_in_the_guest_reports_alerts_and_an_incident(pi, deployed, signed,
                                                                      keys, learned_site,
                                                                      smart_home, data_dir,
                                                                      tmp_path):
    """The learned smart-home bundle on a veth of the guest, argus from the guest's Debian, and
    the Mirai capture rewritten as the hub's, replayed by tcpreplay inside the guest."""
    from edge_ids.benchmarks.harness import site_scenarios as scenarios

    hub = next(d for d in smart_home["devices"] if d.name == "lockly-hub-01")
    bot = scenarios.infection(data_dir, smart_home["work"], smart_home["site"], "mirai", hub, 0)
    rewritten = smart_home["work"] / f"mirai-as-{hub.name}.pcap"
    assert rewritten.is_file() and bot.pcap.is_file()
    pi.ssh("ip link add vpi0 type veth peer name vpi1 && ip link set vpi0 up && "
           "ip link set vpi1 up")
    try:
        result = deploy(pi, signed(learned_site["bundle"]), "--capture", "vpi0",
                        "--allowed-signers", keys["allowed"])
        assert result.exit_code == 0, result.output
        pi.copy(rewritten, "/tmp/bot.pcap")
        pi.ssh(f"truncate -s 0 {ALERTS}", check=False)
        replay = pi.ssh("tcpreplay -i vpi1 --topspeed /tmp/bot.pcap", check=False)
        assert replay.returncode == 0, replay.stderr
        events = wait_until(lambda: [e for e in map(json.loads, pi.ssh(
            f"cat {ALERTS}", check=False).stdout.splitlines())
            if e["event_type"] == "incident"], 240, "no incident line", pi)
        lines = [json.loads(line) for line in pi.ssh(f"cat {ALERTS}").stdout.splitlines()]
        children = pi.ssh(f"ps -o comm= --ppid {show(pi, 'MainPID')['MainPID']}").stdout
    finally:
        pi.ssh("ip link del vpi0", check=False)
    alerts = [e for e in lines if e["event_type"] == "alert"]
    print(f"capture in the guest: {len(alerts)} alerts, {len(events)} incident lines")
    assert "argus" in children.split()
    assert alerts and all(a["ml"]["model_sha256"] == load_bundle(learned_site["bundle"])
                          .model_sha256 for a in alerts)
    assert events[0]["incident"]["state"] == "open"
    assert events[0]["device"]["mac"] == hub.mac and events[0]["src_ip"] == hub.ip
    assert any(p["ip"] == "185.244.25.235" for p in events[0]["incident"]["peers"])


def test_one_fleet_rollout_reaches_the_virtual_pi(pi, deployed, signed, small_pipeline, keys,
                                                  tmp_path):
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        "[sensors]\n"
        f"vpi ansible_host=127.0.0.1 ansible_port={pi.port} ansible_user=root "
        f"ansible_ssh_private_key_file={pi.image / 'id_ed25519'}\n"
        "[all:vars]\nansible_python_interpreter=/usr/bin/python3\nedge_ids_device=pi4\n"
        f"ansible_ssh_common_args='-o UserKnownHostsFile={pi.known_hosts} "
        f"-o HostKeyAlias={virtual_pi.ALIAS} -o GlobalKnownHostsFile=/dev/null "
        "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes'\n")
    bundle = signed(small_pipeline[0] / "bundle")
    started = time.monotonic()
    result = cli("fleet", "deploy", "-i", inventory, "--bundle", bundle,
                 "--allowed-signers", keys["allowed"], "--require-signature")
    print(f"fleet deploy to the virtual Pi: exit {result.exit_code} in "
          f"{time.monotonic() - started:.0f} s")
    assert result.exit_code == 0, result.output
    assert re.search(r"^vpi\s+ok\s+installed, release ", result.output, re.MULTILINE)
    assert pi.ssh(f"{PREFIX}/current/venv/bin/python -V").stdout.startswith("Python 3.13")
    assert serving(pi) == load_bundle(bundle).model_sha256
