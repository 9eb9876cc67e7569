"""Signed bundles, with the real ssh-keygen: `edge-ids sign`, the device's check before every
load (the loader, the daemon at start and on SIGHUP, under the unit's own sandbox), and each
refusal naming its reason."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import sshd
import unit_sandbox
from daemon_process import DaemonProcess, send
from edge_ids.cli import main
from edge_ids.devices.profiles import load_profile
from edge_ids.devices.unit import render_unit
from edge_ids.edge_runtime.model.bundle import BundleError, load_bundle
from edge_ids.edge_runtime.model.signature import NAMESPACE, SIGNATURE_FILE, TrustPolicy
from test_daemon import point

pytestmark = pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="needs ssh-keygen")


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    """A release key the devices trust, another key they do not, and their allowed-signers."""
    folder = tmp_path_factory.mktemp("keys")
    keys = {name: folder / name for name in ("release", "stranger")}
    for key in keys.values():
        sshd.keygen(key)
    public = (folder / "release.pub").read_text().split()
    keys["allowed"] = folder / "allowed_signers"
    keys["allowed"].write_text(f'releases@example.org namespaces="{NAMESPACE}" '
                               f'{public[0]} {public[1]}\n')
    return keys


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def signed(source: Path, dest: Path, key: Path) -> Path:
    shutil.copytree(source, dest)
    result = cli("sign", "--key", key, dest)
    assert result.exit_code == 0, result.output
    return dest


@pytest.fixture
def trusted(small_pipeline, keys, tmp_path) -> Path:
    return signed(small_pipeline[0] / "bundle", tmp_path / "trusted", keys["release"])


@pytest.fixture
def signed_hybrid(learned_nsl_kdd, keys, tmp_path) -> Path:
    return signed(learned_nsl_kdd["hybrid"], tmp_path / "hybrid", keys["release"])


def required(keys) -> TrustPolicy:
    """A device given trusted keys: signatures are required (no opt-out)."""
    return TrustPolicy(keys["allowed"])


def test_sign_then_a_device_that_trusts_the_key_loads_it(trusted, keys, small_pipeline):
    signature = (trusted / SIGNATURE_FILE).read_text()
    assert signature.startswith("-----BEGIN SSH SIGNATURE-----")
    bundle = load_bundle(trusted, required(keys))
    assert bundle.signer.principal == "releases@example.org"
    assert bundle.signer.key.startswith("ED25519 key SHA256:")
    # signing adds a file and changes nothing the model is known by
    assert bundle.model_sha256 == load_bundle(small_pipeline[0] / "bundle").model_sha256
    result = cli("verify", "--allowed-signers", keys["allowed"], "--require-signature", trusted)
    assert result.exit_code == 0 and "signed by releases@example.org (ED25519" in result.output


def test_sign_prints_the_allowed_signers_line_that_makes_a_device_trust_it(bundle_copy, keys,
                                                                          tmp_path):
    result = cli("sign", "--key", keys["release"], "--principal", "ops@site", bundle_copy)
    assert result.exit_code == 0, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f'ops@site namespaces="{NAMESPACE}" ssh-ed25519 ')
    (tmp_path / "printed").write_text(line + "\n")
    assert load_bundle(bundle_copy, TrustPolicy(tmp_path / "printed")).signer.principal \
        == "ops@site"


def test_unsigned_is_refused_on_a_device_given_trusted_keys(bundle_copy, keys):
    """Trusted keys mean signatures are required; only the explicit opt-out loads it."""
    with pytest.raises(BundleError, match=r"refused: the bundle is not signed \(manifest\.json"
                                          r"\.sig is missing\) and this device trusts only"):
        load_bundle(bundle_copy, required(keys))
    assert load_bundle(bundle_copy, TrustPolicy(keys["allowed"], allow_unsigned=True)
                       ).signer is None
    assert load_bundle(bundle_copy, TrustPolicy()).signer is None  # no keys: unsigned loads
    for flags in ((), ("--require-signature",)):
        result = cli("verify", "--allowed-signers", keys["allowed"], *flags, bundle_copy)
        assert result.exit_code == 5 and "not signed" in result.output  # a bad input file
    result = cli("verify", "--allowed-signers", keys["allowed"], "--allow-unsigned",
                 bundle_copy)
    assert result.exit_code == 0 and "not signed" in result.output


@pytest.mark.parametrize("tamper", ["delete the signature", "features.json", "manifest.json",
                                    "model.tflite"])
def test_a_signed_classifier_tampered_in_any_way_is_refused(trusted, keys, tamper):
    _tamper(trusted, tamper)
    with pytest.raises(BundleError, match=r"refused|modified or corrupted"):
        load_bundle(trusted, required(keys))


@pytest.mark.parametrize("tamper", ["delete the signature", "anomaly.json", "manifest.json",
                                    "model.tflite", "features.json", "anomaly.tflite"])
def test_a_signed_hybrid_tampered_in_any_way_is_refused(signed_hybrid, keys, tamper):
    _tamper(signed_hybrid, tamper)
    with pytest.raises(BundleError, match=r"refused|modified or corrupted"):
        load_bundle(signed_hybrid, required(keys))


def _tamper(bundle: Path, how: str) -> None:
    """The review's attack: rename a class to the normal one (and delete the signature), or
    change one byte of a file."""
    if how == "delete the signature":
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["class_names"] = [manifest["normal_class"] if c != manifest["normal_class"]
                                   else c for c in manifest["class_names"]]
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        (bundle / SIGNATURE_FILE).unlink()
    elif how == "manifest.json":
        text = (bundle / how).read_text()
        (bundle / how).write_text(text.replace('"normal_class": "', '"normal_class": "x', 1)
                                  if '"normal_class": "' in text else text + " ")
    else:
        data = bytearray((bundle / how).read_bytes())
        data[len(data) // 2] ^= 1
        (bundle / how).write_bytes(bytes(data))


def test_the_daemon_refuses_a_tampered_bundle_whose_signature_was_deleted(trusted, keys,
                                                                            tmp_path):
    """Black box, as the review did it: sign, rename DoS to the normal class, delete the .sig,
    start `run --allowed-signers` without --require-signature: refused, exit 5."""
    _tamper(trusted, "delete the signature")
    (tmp_path / "none.csv").write_text("")
    done = subprocess.run([sys.executable, "-m", "edge_ids", "run", "--bundle", str(trusted),
                           "--input", f"file:{tmp_path / 'none.csv'}", "--allowed-signers",
                           str(keys["allowed"])], capture_output=True, text=True, timeout=120)
    assert done.returncode == 5, done.stderr
    assert "refused: the bundle is not signed" in done.stderr


def test_a_key_the_device_does_not_trust_is_refused_even_when_not_required(
        small_pipeline, keys, tmp_path):
    stranger = signed(small_pipeline[0] / "bundle", tmp_path / "b", keys["stranger"])
    for policy in (required(keys), TrustPolicy(keys["allowed"], allow_unsigned=True)):
        with pytest.raises(BundleError, match=r"refused: it is signed by ED25519 key SHA256:\S+, "
                                              r"which is not in the allowed-signers file"):
            load_bundle(stranger, policy)


def test_a_manifest_changed_after_signing_is_refused(trusted, keys):
    manifest = json.loads((trusted / "manifest.json").read_text())
    manifest["anomaly"] = {"note": "edited after signing"}  # hashes of the files still match
    (trusted / "manifest.json").write_text(json.dumps(manifest))
    for policy in (required(keys), TrustPolicy()):  # also with no trusted keys configured
        with pytest.raises(BundleError, match="signature does not match manifest.json: the "
                                              "bundle was changed after signing"):
            load_bundle(trusted, policy)


@pytest.mark.parametrize("bundle, model", [("trusted", "model.tflite"),
                                           ("signed_hybrid", "anomaly.tflite")])
def test_a_model_changed_after_signing_is_refused(request, keys, bundle, model):
    """A classifier's model.tflite, or a hybrid's anomaly.tflite (schema 2)."""
    bundle = request.getfixturevalue(bundle)
    data = bytearray((bundle / model).read_bytes())
    data[-100] ^= 1
    (bundle / model).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{model} was modified or corrupted, refusing to "
                                          rf"load it: its SHA-256 is "):
        load_bundle(bundle, required(keys))


def test_a_signature_for_another_purpose_is_refused(bundle_copy, keys):
    """ssh-keygen -Y sign under another namespace (say, a git commit's) never fits a bundle."""
    made = subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", keys["release"], "-n", "git"],
                          input=(bundle_copy / "manifest.json").read_bytes(),
                          capture_output=True, check=True)
    (bundle_copy / SIGNATURE_FILE).write_bytes(made.stdout)
    with pytest.raises(BundleError, match="not an edge-ids bundle signature .*namespace"):
        load_bundle(bundle_copy, required(keys))


def test_a_hybrid_bundle_is_signed_and_checked_like_a_classifier(signed_hybrid, keys,
                                                                 kdd_test_lines, tmp_path):
    """Schema 2 with anomaly.tflite: the signature covers the anomaly model and its threshold
    (both in the manifest), the daemon serves it signed, and a raised threshold is refused."""
    bundle = load_bundle(signed_hybrid, required(keys))
    assert (bundle.detector, bundle.manifest["schema_version"]) == ("hybrid", 2)
    assert bundle.signer.principal == "releases@example.org"
    records = tmp_path / "records.csv"
    records.write_bytes(b"".join(kdd_test_lines[:200]))
    done = subprocess.run([sys.executable, "-m", "edge_ids", "run", "--bundle", str(signed_hybrid),
                           "--input", f"file:{records}", "--alerts", "-", "--emit", "all",
                           "--allowed-signers", str(keys["allowed"]), "--require-signature"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 200 and lines[0]["ml"]["model_sha256"] == bundle.model_sha256
    assert "signed by releases@example.org" in done.stderr

    manifest = json.loads((signed_hybrid / "manifest.json").read_text())
    manifest["anomaly"]["threshold"] *= 10  # fewer Unknown alerts: what an attacker would want
    (signed_hybrid / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="the bundle was changed after signing"):
        load_bundle(signed_hybrid, required(keys))
    result = cli("verify", "--allowed-signers", keys["allowed"], signed_hybrid)
    assert result.exit_code == 5 and "changed after signing" in result.output


def test_requiring_signatures_without_an_allowed_signers_file_is_a_usage_error(trusted,
                                                                              tmp_path):
    for command in (("verify", "--require-signature", trusted),
                    ("run", "--bundle", trusted, "--input", "-", "--require-signature")):
        result = cli(*command)
        assert result.exit_code == 2 and "needs --allowed-signers FILE" in result.output
    assert not TrustPolicy(None).required  # no keys: nothing to require them against


def test_a_tar_gz_bundle_carries_its_signature(small_pipeline, keys, tmp_path):
    archive = tmp_path / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(small_pipeline[0] / "bundle", arcname="bundle")
    for key in ("stranger", "release"):  # signing again replaces the signature
        result = cli("sign", "--key", keys[key], archive)
        assert result.exit_code == 0, result.output
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names.count(f"bundle/{SIGNATURE_FILE}") == 1 and "bundle/model.tflite" in names
    assert load_bundle(archive, required(keys)).signer.principal == "releases@example.org"


def test_a_broken_bundle_is_not_signed(bundle_copy, keys):
    (bundle_copy / "features.json").write_text("{}")
    result = cli("sign", "--key", keys["release"], bundle_copy)
    assert result.exit_code == 5 and "not signed, the bundle itself is refused" in result.output
    assert not (bundle_copy / SIGNATURE_FILE).exists()


def test_sighup_to_a_bad_signature_keeps_the_old_model_and_counts_the_failure(
        small_pipeline, other_bundle, keys, kdd_test_lines, tmp_path):
    good = signed(small_pipeline[0] / "bundle", tmp_path / "good", keys["release"])
    stranger = signed(other_bundle, tmp_path / "stranger", keys["stranger"])
    unsigned = Path(shutil.copytree(other_bundle, tmp_path / "unsigned"))
    changed = signed(other_bundle, tmp_path / "changed", keys["release"])
    manifest = json.loads((changed / "manifest.json").read_text())
    (changed / "manifest.json").write_text(json.dumps(manifest | {"dataset": "edited"}))
    next_good = signed(other_bundle, tmp_path / "next", keys["release"])
    current, sock = tmp_path / "current", tmp_path / "in.sock"
    point(current, good)
    old_sha = load_bundle(good).model_sha256
    daemon = DaemonProcess(tmp_path, "--bundle", str(current), "--input", f"unix:{sock}",
                           "--alerts", str(tmp_path / "alerts.json"), "--metrics", "127.0.0.1:0",
                           "--allowed-signers", str(keys["allowed"]), "--require-signature")
    lines = kdd_test_lines[:300]
    try:
        assert "signed by releases@example.org (ED25519 key" in daemon.log_text()
        for failures, bundle, reason in ((1, stranger, "which is not in the allowed-signers"),
                                         (2, unsigned, "the bundle is not signed"),
                                         (3, changed, "the bundle was changed after signing")):
            point(current, bundle)
            daemon.signal(signal.SIGHUP)
            daemon.wait_metric("edge_ids_reloads_total", failures, result="failed")
            assert f"reload failed, still serving nsl-kdd model {old_sha[:12]}" in \
                daemon.log_text() and reason in daemon.log_text()
            send(sock, b"".join(lines))
            daemon.wait_metric("edge_ids_records_total", len(lines) * failures)
            assert serving(daemon) == old_sha
        point(current, next_good)
        daemon.signal(signal.SIGHUP)
        daemon.wait_metric("edge_ids_reloads_total", 1, result="ok")
        assert serving(daemon) == load_bundle(next_good).model_sha256
    finally:
        assert daemon.stop() == 0


def serving(daemon: DaemonProcess) -> str:
    """The model hash on the daemon's build_info gauge."""
    [labels] = [dict(k[1]) for k in daemon.metrics() if k[0] == "edge_ids_build_info"]
    return labels["model_sha256"]


def test_the_daemon_refuses_to_start_on_a_bundle_it_does_not_trust(small_pipeline, keys,
                                                                   tmp_path):
    stranger = signed(small_pipeline[0] / "bundle", tmp_path / "b", keys["stranger"])
    done = subprocess.run([sys.executable, "-m", "edge_ids", "run", "--bundle", str(stranger),
                           "--input", "file:/dev/null", "--allowed-signers", str(keys["allowed"])],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 5  # the bundle given is refused: exit 5 by the table
    assert "cannot start" in done.stderr and "not in the allowed-signers file" in done.stderr


def test_a_profile_that_requires_signatures_sets_the_policy_and_needs_trusted_keys(keys):
    """[signatures] require = true in a device profile: deploy refuses to go on without keys,
    and with them the unit requires signatures; --allow-unsigned overrides the profile, and
    keys alone (the shipped profiles) already require signatures."""
    from dataclasses import replace

    from edge_ids.devices.deploy import DeployOptions, NoTrustedKeys

    profile = replace(load_profile("pi4"), require_signature=True)
    with pytest.raises(NoTrustedKeys, match="device profile pi4 requires signed bundles: give "
                                            "--allowed-signers FILE"):
        DeployOptions("pi4", Path("b")).trust(profile)
    options = DeployOptions("pi4", Path("b"), allowed_signers=keys["allowed"])
    assert options.trust(profile) == TrustPolicy(keys["allowed"])
    assert options.trust(profile).required and not options.unit_options["allow_unsigned"]
    assert options.unit_options["allowed_signers"] == "/opt/edge-ids/trust/allowed_signers"
    assert DeployOptions("pi4", Path("b"), require_signature=False).trust(profile) == \
        TrustPolicy(None, allow_unsigned=True)
    shipped = DeployOptions("pi4", Path("b"), allowed_signers=keys["allowed"])
    assert shipped.trust(load_profile("pi4")).required  # keys, no opt-out: required
    opted_out = DeployOptions("pi4", Path("b"), allowed_signers=keys["allowed"],
                              require_signature=False)
    assert not opted_out.trust(load_profile("pi4")).required
    assert opted_out.unit_options["allow_unsigned"] is True


def test_the_unit_carries_the_signature_policy():
    signers = "/opt/edge-ids/trust/allowed_signers"
    unit = render_unit(load_profile("pi4"), allowed_signers=signers)
    assert f"--threads 1 --allowed-signers {signers} --state-dir /var/lib/edge-ids\n" in unit
    # (keys: signatures required, nothing that would let unsigned bundles in)
    assert f"--allowed-signers {signers} --allow-unsigned --state-dir " in render_unit(
        load_profile("pi4"), allowed_signers=signers, allow_unsigned=True)
    assert "--allowed-signers" not in render_unit(load_profile("pi4"))


@pytest.mark.skipif(unit_sandbox.missing() is not None, reason=str(unit_sandbox.missing()))
def test_ssh_keygen_checks_signatures_inside_the_units_sandbox(small_pipeline, keys,
                                                                kdd_test_lines):
    """As the unit's user (nobody here) and under its system-call filter, the daemon runs
    ssh-keygen: a trusted bundle is served, an untrusted one refused for that reason (and not
    for a denied system call)."""
    folder = Path(tempfile.mkdtemp())
    try:
        signed(small_pipeline[0] / "bundle", folder / "trusted", keys["release"])
        signed(small_pipeline[0] / "bundle", folder / "stranger", keys["stranger"])
        shutil.copy(keys["allowed"], folder / "allowed_signers")
        (folder / "records.csv").write_bytes(b"".join(kdd_test_lines[:200]))
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        unit = render_unit(load_profile("pi4"), allowed_signers=str(folder / "allowed_signers"))
        edge_ids = str(Path(sys.executable).with_name("edge-ids"))
        runs = {name: subprocess.run(unit_sandbox.sandboxed(
            [edge_ids, "run", "--bundle", str(folder / name), "--input",
             f"file:{folder / 'records.csv'}", "--alerts", "-", "--emit", "all",
             "--allowed-signers", str(folder / "allowed_signers"), "--require-signature"],
            unit), capture_output=True, text=True, timeout=120, cwd="/")
            for name in ("trusted", "stranger")}
    finally:
        shutil.rmtree(folder)
    assert runs["trusted"].returncode == 0, runs["trusted"].stderr
    assert len(runs["trusted"].stdout.splitlines()) == 200
    assert "signed by releases@example.org" in runs["trusted"].stderr
    assert runs["stranger"].returncode == 5
    assert "not in the allowed-signers file" in runs["stranger"].stderr


def test_deploy_installs_the_trusted_keys_and_refuses_early_what_the_device_would_refuse(
        trusted, bundle_copy, keys, tmp_path):
    """deploy checks the bundle under the device's policy in its first step (nothing is built
    or copied for a bundle the device would refuse), and the package carries the keys."""
    base = ["deploy", "--device", "pi4", "--output", tmp_path / "pi4.tar.gz"]
    result = cli(*base, "--bundle", trusted, "--require-signature")
    assert result.exit_code == 2  # a usage mistake
    assert "--require-signature requires signed bundles: give --allowed-signers FILE" in \
        result.output
    result = cli(*base, "--bundle", bundle_copy, "--allowed-signers", keys["allowed"],
                 "--require-signature")
    assert result.exit_code == 5 and "refused: the bundle is not signed" in result.output
    assert "[2/3]" not in result.output and not (tmp_path / "pi4.tar.gz").exists()
    result = cli(*base, "--bundle", trusted, "--allowed-signers", keys["allowed"],
                 "--require-signature")
    assert result.exit_code == 0, result.output
    assert "signed by releases@example.org (ED25519 key SHA256:" in result.output
    with tarfile.open(tmp_path / "pi4.tar.gz") as tar:
        top = tar.getnames()[0].split("/")[0]
        read = (lambda name: tar.extractfile(f"{top}/{name}").read())
        assert read("allowed_signers") == keys["allowed"].read_bytes()
        assert read("bundle/manifest.json.sig") == (trusted / SIGNATURE_FILE).read_bytes()
        assert b" --allowed-signers /opt/edge-ids/trust/allowed_signers --state-dir " \
               b"/var/lib/edge-ids\n" in read("edge-ids.service")
