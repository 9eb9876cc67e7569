"""`edge-ids deploy`, `status` and `rollback` against a real sshd on 127.0.0.1 (tests/sshd.py),
into a temporary prefix. The machine has no running systemd, so deploy takes its no-systemd
path: the health check is the unit's own ExecStart classifying probe records."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_ids.cli import main
from edge_ids.devices.install import exec_start
from edge_ids.edge_runtime import load_bundle

import sshd
from daemon_process import read_alerts, send
from test_daemon import expected_classes

pytestmark = pytest.mark.skipif(not sshd.available(), reason="needs openssh-server and client")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A running sshd, and where the daemon's files go on the 'device'."""
    root = tmp_path_factory.mktemp("device")
    server = sshd.SSHServer(root / "ssh")
    yield server, root
    server.stop()


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def device_args(site) -> list[str]:
    server, root = site
    return [*server.ssh_args(), "--device", "x86_64", "--prefix", str(root / "opt"),
            "--input", f"unix:{root / 'records.sock'}", "--alerts", str(root / "alerts.json"),
            "--metrics", f"127.0.0.1:{sshd.free_port()}", "--timeout", "60"]


def current(site) -> str:
    return os.readlink(site[1] / "opt" / "current").split("/")[-1]


@pytest.fixture(scope="module")
def first(site, small_pipeline):
    """The first deploy: wheels built here for the target, installed offline over ssh."""
    bundle = small_pipeline[0] / "bundle"
    result = cli("deploy", *device_args(site), "--bundle", str(bundle))
    assert result.exit_code == 0, result.output
    return current(site), result.output, bundle


def test_deploy_puts_everything_in_place_and_the_venv_imports(site, first):
    release_id, output, bundle = first
    opt = site[1] / "opt"
    for step in ("[1/6] check the bundle", "[2/6] ask edge-test", "[3/6] build the package",
                 "[4/6] copy it", "[5/6] install under", "[6/6] report"):
        assert step in output
    assert "x86_64, Python 3." in output and "no running systemd" in output
    release = opt / "releases" / release_id
    for name in ("model.tflite", "features.json", "manifest.json"):
        assert (release / "bundle" / name).read_bytes() == (bundle / name).read_bytes()
    info = json.loads((release / "release.json").read_text())
    assert info["model_sha256"] == load_bundle(bundle).model_sha256
    assert json.loads((release / "health.json").read_text())["ok"] is True
    python = opt / "current" / "venv" / "bin" / "python"
    imported = subprocess.run([python, "-c", "import edge_ids, numpy, ai_edge_litert; "
                               "print(edge_ids.__file__)"], capture_output=True, text=True,
                              cwd=site[1])  # not this checkout's folder
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(str(opt))  # the device's venv, not this checkout
    assert "/site-packages/edge_ids/" in imported.stdout
    assert not list(Path("/tmp").glob("edge-ids-deploy.*/" + release_id))  # package removed


def test_the_installed_unit_passes_systemd_analyze_verify(site, first):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    unit = site[1] / "opt" / "current" / "edge-ids.service"
    text = unit.read_text()
    assert f"ExecStart={site[1] / 'opt'}/current/venv/bin/edge-ids run" in text
    copy = site[1] / "edge-ids.service"  # verify wants the unit name as the file name
    copy.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", copy], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_units_execstart_classifies_records_and_status_counts_them(
        site, first, kdd_test_lines):
    server, root = site
    argv = exec_start((root / "opt" / "current" / "edge-ids.service").read_text())
    assert f"{root / 'opt'}/current" in argv[0]
    sock, alerts = root / "records.sock", root / "alerts.json"
    alerts.unlink(missing_ok=True)
    lines = kdd_test_lines[:1000]
    daemon = subprocess.Popen(argv, stderr=subprocess.PIPE, cwd=root)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists() and time.monotonic() < deadline and daemon.poll() is None:
            time.sleep(0.1)
        send(sock, b"".join(lines))
        status = {}
        while time.monotonic() < deadline:
            result = cli("status", *server.ssh_args(), "--prefix", str(root / "opt"), "--json")
            assert result.exit_code == 0, result.output
            status = json.loads(result.output)
            if status["counters"] and status["counters"]["records"] == len(lines):
                break
            time.sleep(0.5)
        assert status["counters"]["records"] == len(lines), status
        assert status["current"] == first[0] and status["releases"][-1]["current"]
        expected = [c for c in expected_classes(first[2], lines) if c != "Normal"]
        got = read_alerts(alerts)
        assert [a["ml"]["class"] for a in got] == expected and len(expected) > 100
        assert sum(status["counters"]["alerts"].values()) == len(expected)
        text = cli("status", *server.ssh_args(), "--prefix", str(root / "opt")).output
        assert f"{len(lines):,} records" in text and "healthy" in text
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0, daemon.stderr.read().decode()


def broken_copy(bundle: Path, dest: Path) -> Path:
    """A bundle that loads (its manifest hashes match) but whose model no interpreter runs."""
    shutil.copytree(bundle, dest)
    model = b"this is not a TFLite flatbuffer " * 64
    (dest / "model.tflite").write_bytes(model)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["files"]["model.tflite"] = {"sha256": hashlib.sha256(model).hexdigest(),
                                         "bytes": len(model)}
    (dest / "manifest.json").write_text(json.dumps(manifest))
    load_bundle(dest)
    return dest


def test_a_failed_health_check_restores_the_previous_release(site, first, tmp_path):
    assert current(site) == first[0]
    broken = broken_copy(first[2], tmp_path / "b")
    result = cli("deploy", *device_args(site), "--bundle", str(broken))
    assert result.exit_code == 1
    assert "failed its health check and was rolled back to " + first[0] in result.output
    assert "the daemon cannot start" in result.output
    assert current(site) == first[0]
    failed = [r for r in (site[1] / "opt" / "releases").iterdir() if r.name != first[0]]
    assert len(failed) == 1
    assert json.loads((failed[0] / "health.json").read_text())["ok"] is False
    assert "venv: reusing" in result.output  # same wheels: the venv was not rebuilt


def test_rollback_switches_back_to_the_previous_healthy_release(site, first, other_bundle):
    assert current(site) == first[0]
    result = cli("deploy", *device_args(site), "--bundle", str(other_bundle))
    assert result.exit_code == 0, result.output
    second = current(site)
    assert second != first[0]
    result = cli("rollback", *site[0].ssh_args(), "--prefix", str(site[1] / "opt"))
    assert result.exit_code == 0, result.output
    assert current(site) == first[0]
    assert f"current -> releases/{first[0]} (was {second})" in result.output
    status = json.loads(cli("status", *site[0].ssh_args(), "--prefix", str(site[1] / "opt"),
                            "--json").output)
    assert [r["id"] for r in status["releases"] if r["current"]] == [first[0]]


def test_a_changed_host_key_stops_the_deploy_before_anything_happens(site, first, tmp_path):
    server, root = site
    other_key = tmp_path / "other"
    public = sshd.keygen(other_key)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{server.port} {public}\n")
    config = tmp_path / "ssh_config"
    config.write_text(server.config.read_text().replace(str(server.known_hosts),
                                                        str(known_hosts)))
    before = sorted(p.name for p in (root / "opt" / "releases").iterdir())
    args = device_args(site)
    args[args.index("--ssh-config") + 1] = str(config)
    result = cli("deploy", *args, "--bundle", str(first[2]))
    assert result.exit_code == 1
    assert "does not match your known_hosts" in result.output
    assert "never turns host-key checking off" in result.output
    assert sorted(p.name for p in (root / "opt" / "releases").iterdir()) == before

    known_hosts.write_text("")  # an unknown host, and no terminal to ask on
    result = cli("deploy", *args, "--bundle", str(first[2]))
    assert result.exit_code == 1 and "not in your known_hosts" in result.output


def test_dry_run_prints_the_steps_and_touches_nothing(small_pipeline, tmp_path):
    prefix = tmp_path / "opt"
    result = cli("deploy", "--device", "pi4", "--host", "pi@sensor-1", "--bundle",
                 str(small_pipeline[0] / "bundle"), "--prefix", str(prefix), "--dry-run")
    assert result.exit_code == 0, result.output
    manifest = load_bundle(small_pipeline[0] / "bundle").manifest
    assert "[1/6] check the bundle" in result.output
    sha = manifest["files"]["model.tflite"]["sha256"]
    assert f"checked, nsl-kdd classifier model {sha[:12]}" in result.output
    assert "[2/6] would ask" in result.output
    assert "ssh pi@sensor-1 'python3 -' < probe.py" in result.output
    assert "manylinux_2_36_aarch64" in result.output and "the edge-ids wheel built from" \
        in result.output
    assert f"ExecStart={prefix}/current/venv/bin/edge-ids run" in result.output
    assert not prefix.exists()


def test_dry_run_fails_where_the_deploy_would(small_pipeline, bundle_copy, tmp_path):
    """A tampered bundle, a wheelhouse without edge-ids, a model Argus cannot feed: the dry
    run refuses each as the real deploy does at its first step (exit 5), and prints no step."""
    prefix = tmp_path / "opt"
    model = bytearray((bundle_copy / "model.tflite").read_bytes())
    model[10] ^= 1
    (bundle_copy / "model.tflite").write_bytes(bytes(model))
    bundle = str(small_pipeline[0] / "bundle")
    (tmp_path / "wheels").mkdir()
    for extra, said in (([ "--bundle", str(bundle_copy)], "modified or corrupted"),
                        (["--bundle", bundle, "--wheelhouse", str(tmp_path / "wheels")],
                         "no edge_ids-"),
                        (["--bundle", bundle, "--capture", "eth0"], "Argus does not measure")):
        result = cli("deploy", "--host", "pi@sensor-1", "--prefix", str(prefix), "--dry-run",
                     *extra)
        assert result.exit_code == 5 and said in result.output, result.output
        assert "would" not in result.output
    assert not prefix.exists()


def test_output_writes_a_package_to_carry_by_hand(small_pipeline, tmp_path):
    out = tmp_path / "pi4.tar.gz"
    result = cli("deploy", "--device", "pi4", "--bundle", str(small_pipeline[0] / "bundle"),
                 "--output", str(out))
    assert result.exit_code == 0, result.output
    with tarfile.open(out) as tar:
        names = tar.getnames()
    top = names[0].split("/")[0]
    for name in ("install.py", "release.json", "edge-ids.service", "probe.csv",
                 "bundle/model.tflite"):
        assert f"{top}/{name}" in names
    wheels = [n.split("/")[-1] for n in names if n.endswith(".whl")]
    assert any(w.startswith("ai_edge_litert-") and "aarch64" in w for w in wheels)
    assert any(w.startswith("numpy-") and "cp311" in w and "aarch64" in w for w in wheels)
    assert any(w.startswith("edge_ids-") for w in wheels) and any(w.startswith("pip-")
                                                                  for w in wheels)
    assert f"sudo python3 {top}/install.py install" in result.output


def test_bad_device_and_missing_target_are_clear_errors(small_pipeline):
    bundle = str(small_pipeline[0] / "bundle")
    result = cli("deploy", "--device", "pi9", "--host", "x", "--bundle", bundle, "--dry-run")
    assert result.exit_code == 2 and "known devices: generic-aarch64" in result.output
    result = cli("deploy", "--bundle", bundle)
    assert result.exit_code == 2 and "give --host" in result.output


def test_bench_over_ssh_measures_on_the_device_with_its_installed_runtime(
        site, first, small_pipeline, data_dir, tmp_path):
    """The same report, measured by the device's own venv (no TensorFlow there), brought back."""
    server, root = site
    out = tmp_path / "bench"
    result = cli("bench", *server.ssh_args(), "--prefix", str(root / "opt"),
                 "--bundle", str(small_pipeline[0] / "bundle"), "--out", str(out),
                 "--data-dir", str(data_dir), "--records", "3000", "--latency-records", "100",
                 "--batches", "1,64", "--seconds", "0.05", "--device", "pi4")
    assert result.exit_code == 0, result.output
    assert "[2/3] measure on edge-test" in result.output and "copying" in result.output
    report = json.loads((out / "bench.json").read_text())
    assert report["where"] == "edge-test" and report["device_profile"] == "pi4"
    assert report["profile_mismatch"] == "profile pi4 is aarch64, but this ran on x86_64"
    assert "**warning: profile pi4 is aarch64" in (out / "report.md").read_text()
    cores = report["machine"]["cores"]  # pi4 has 4: 1, 2, 4 asked, capped at the cores here
    assert report["plan"]["threads"] == [t for t in (1, 2, 4) if t <= cores]
    assert "tensorflow-cpu" not in report["machine"]["versions"]  # the device's venv ran it
    runtimes = report["runtimes"]
    assert not runtimes["keras"]["available"]
    assert "keras is not installed here" in runtimes["keras"]["reason"]
    for name in ("litert-float", "litert-int8"):
        r = runtimes[name]
        assert r["available"] and r["latency_us"]["raw"]["n"] == 100
        assert r["startup_seconds"] > 0 and r["ready_rss_bytes"] > 0
    assert report["accuracy_loss"]["float"] == "litert-float"
    assert report["daemon"]["records"] == 3000 and report["daemon"]["records_per_second"] > 0
    for name in ("report.md", "latency.png", "accuracy_size.png", "latency_us.json"):
        assert (out / name).is_file()
    assert "Not measured here: Keras" in (out / "report.md").read_text()
    remote_dir = result.output.split(f"to {sshd.HOST_ALIAS}:")[1].split()[0]
    assert remote_dir.startswith("/tmp/edge-ids-bench.") and not Path(remote_dir).exists()


def test_bench_over_ssh_without_a_runtime_says_deploy_first(site, small_pipeline, data_dir,
                                                             tmp_path):
    result = CliRunner().invoke(main, ["bench", *site[0].ssh_args(), "--prefix",
                                       str(site[1] / "nothing"), "--bundle",
                                       str(small_pipeline[0] / "bundle"), "--out",
                                       str(tmp_path / "out"), "--data-dir", str(data_dir)])
    assert result.exit_code == 1
    assert "has no edge-ids runtime" in result.output and "edge-ids deploy" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not shutil.which("argus", path="/usr/sbin:/usr/bin"),
                    reason="apt-get install argus-server argus-client")
def test_deploy_with_capture_installs_the_capture_unit_and_it_captures(site, net_bundle,
                                                                       captures, small_pipeline):
    server, root = site
    refused = cli("deploy", *device_args(site), "--bundle", str(small_pipeline[0] / "bundle"),
                  "--capture", "lo")
    assert refused.exit_code == 5 and "--capture: the model reads duration" in refused.output
    result = cli("deploy", *device_args(site), "--bundle", str(net_bundle), "--capture", "lo")
    assert result.exit_code == 0, result.output
    assert "health: the daemon classified 2 probe records" in result.output
    text = (root / "opt" / "current" / "edge-ids.service").read_text()
    assert "edge-ids capture --interface lo --flow-report 5 --bundle" in text
    assert "AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN" in text
    argv = exec_start(text)  # the unit's own command, on a capture file instead of lo
    argv[argv.index("--interface"):argv.index("--interface") + 2] = ["--pcap",
                                                                      str(captures["mirai-irc"])]
    alerts = root / "capture-alerts.json"
    argv[argv.index("--alerts") + 1] = str(alerts)
    argv[argv.index("--metrics") + 1] = "127.0.0.1:0"
    done = subprocess.run(argv + ["--emit", "all"], capture_output=True, text=True, timeout=300,
                          cwd=root)
    assert done.returncode == 0, done.stderr
    assert len(read_alerts(alerts)) > 1000 and " 0 rejected" in done.stderr


@pytest.mark.parametrize("kind, files", [
    ("hybrid", ("model.tflite", "features.json", "anomaly.tflite", "anomaly.json")),
    ("anomaly", ("anomaly.tflite", "anomaly.json"))])
def test_hybrid_and_anomaly_only_bundles_deploy_and_pass_the_health_check(
        site, first, learned_nsl_kdd, kind, files):
    """Every model and the threshold travel; the health check's model hash is the bundle's
    (the decision's hash, which covers the threshold), and its daemon classifies the probe
    records with it."""
    path = learned_nsl_kdd[kind]
    before = current(site)
    result = cli("deploy", *device_args(site), "--bundle", str(path))
    assert result.exit_code == 0, result.output
    bundle = load_bundle(path)
    assert f"nsl-kdd {kind} model {bundle.model_sha256[:12]}" in result.output
    assert f"health: the daemon classified 2 probe records with model " \
           f"{bundle.model_sha256[:12]}" in result.output
    release = site[1] / "opt" / "releases" / current(site)
    for name in (*files, "manifest.json"):
        assert (release / "bundle" / name).read_bytes() == (path / name).read_bytes()
    assert json.loads((release / "release.json").read_text())["model_sha256"] == \
        bundle.model_sha256
    assert json.loads((release / "health.json").read_text())["ok"] is True
    rolled = cli("rollback", *site[0].ssh_args(), "--prefix", str(site[1] / "opt"), "--to",
                 before)
    assert rolled.exit_code == 0, rolled.output
    assert current(site) == before


def test_a_device_that_trusts_keys_refuses_unsigned_releases_until_root_removes_them(
        site, first, other_bundle, tmp_path):
    """Keys are installed once (the trust anchor): a deploy without keys keeps them, so an
    unsigned bundle fails its health check; --allow-unsigned is refused, nothing placed; root
    on the device removes the anchor (the documented way), then --allow-unsigned works."""
    kind, public = sshd.keygen(tmp_path / "release").split()[:2]
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'releases@example.org namespaces="edge-ids-bundle" {kind} {public}\n')
    signed = Path(shutil.copytree(other_bundle, tmp_path / "signed"))
    assert cli("sign", "--key", str(tmp_path / "release"), str(signed)).exit_code == 0
    assert cli("deploy", *device_args(site), "--bundle", str(signed), "--allowed-signers",
               str(allowed)).exit_code == 0
    trusting = current(site)
    result = cli("deploy", *device_args(site), "--bundle", str(first[2]))
    assert result.exit_code == 1 and "failed its health check" in result.output
    assert "the bundle is not signed" in result.output and current(site) == trusting
    releases = sorted(os.listdir(site[1] / "opt" / "releases"))
    result = cli("deploy", *device_args(site), "--bundle", str(first[2]), "--allow-unsigned")
    assert result.exit_code == 1 and "refused release" in result.output
    assert f"still runs {trusting}" in result.output and "a release cannot turn that off" \
        in result.output
    assert (current(site), sorted(os.listdir(site[1] / "opt" / "releases"))) == (trusting, releases)
    (site[1] / "opt" / "trust" / "allowed_signers").unlink()  # root, out of band
    result = cli("deploy", *device_args(site), "--bundle", str(first[2]), "--allow-unsigned")
    assert result.exit_code == 0 and current(site) != trusting, result.output
    assert "--allowed-signers" not in (site[1] / "opt" / "current" / "edge-ids.service").read_text()
