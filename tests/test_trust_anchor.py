"""The device's trust anchor (devices/trust_anchor.py): the keys are installed once, outside the
releases, at PREFIX/trust/allowed_signers; a release that brings other keys is refused unless
the new list is signed by a key the device already trusts (`edge-ids rotate-keys`); an older
signed list is never taken back; a device installed before the anchor existed adopts its
running release's keys. Real sshd on 127.0.0.1 (tests/sshd.py), real ssh-keygen, the real
install.py; no systemd runs here, so the health check is the unit's own ExecStart."""
from __future__ import annotations

import os
import shutil
import sys
import tarfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import sshd
from edge_ids.cli import main
from edge_ids.devices.install import exec_start
from edge_ids.devices.release_prefix import Prefix
from edge_ids.devices.trust_anchor import plan, serial_of, signed_by
from edge_ids.edge_runtime.model.signature import NAMESPACE
from test_deploy import broken_copy

pytestmark = pytest.mark.skipif(not sshd.available(), reason="needs openssh-server and client")


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    """Keys A (trusted first), B (rotated in) and S (a stranger's), and one-key lists."""
    folder = tmp_path_factory.mktemp("anchor-keys")
    out = {}
    for name in ("a", "b", "s"):
        kind, blob = sshd.keygen(folder / name).split()[:2]
        out[name] = folder / name
        out[f"only_{name}"] = folder / f"only_{name}"
        out[f"only_{name}"].write_text(f'{name}@example.org namespaces="{NAMESPACE}" '
                                       f'{kind} {blob}\n')
    return out


def signed(source: Path, dest: Path, key: Path) -> Path:
    shutil.copytree(source, dest)
    assert cli("sign", "--key", key, dest).exit_code == 0
    return dest


def key_list(folder: Path, name: str, *lists: Path) -> Path:
    """A new allowed-signers file made of these one-key lists."""
    path = folder / name
    path.write_text("".join(p.read_text() for p in lists))
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("anchor-device")
    server = sshd.SSHServer(root / "ssh")
    yield server, root
    server.stop()


@pytest.fixture(scope="module")
def wheelhouse(small_pipeline, tmp_path_factory) -> Path:
    """The wheels built once (deploy --output), so that every deploy below reuses them."""
    folder = tmp_path_factory.mktemp("anchor-wheels")
    result = cli("deploy", "--device", "x86_64", "--bundle", small_pipeline[0] / "bundle",
                 "--output", folder / "p.tar.gz")
    assert result.exit_code == 0, result.output
    with tarfile.open(folder / "p.tar.gz") as tar:
        tar.extractall(folder, filter="data")
    [wheels] = folder.glob("*/wheels")
    return wheels


def deploy(site, wheelhouse, prefix: Path, bundle: Path, *extra):
    server, root = site
    return cli("deploy", *server.ssh_args(), "--device", "x86_64", "--prefix", prefix,
               "--input", f"unix:{root / 'records.sock'}", "--alerts", root / "alerts.json",
               "--metrics", f"127.0.0.1:{sshd.free_port()}", "--timeout", 120,
               "--wheelhouse", wheelhouse, "--bundle", bundle, *extra)


def reads(prefix: Path) -> str:
    """The allowed-signers file the current unit's daemon checks bundles against."""
    argv = exec_start((prefix / "current" / "edge-ids.service").read_text())
    assert "--allow-unsigned" not in argv
    return argv[argv.index("--allowed-signers") + 1]


def current(prefix: Path) -> str:
    return os.readlink(prefix / "current").split("/")[-1]


def test_swapped_keys_are_refused_and_keys_rotated_by_a_trusted_signature_accepted(
        site, wheelhouse, small_pipeline, keys, tmp_path):
    prefix, anchor = site[1] / "opt", site[1] / "opt" / "trust" / "allowed_signers"
    source = small_pipeline[0] / "bundle"
    by = {k: signed(source, tmp_path / f"by_{k}", keys[k]) for k in ("a", "b", "s")}

    # the first deploy with keys installs them as the anchor, and the unit reads it there
    result = deploy(site, wheelhouse, prefix, by["a"], "--allowed-signers", keys["only_a"])
    assert result.exit_code == 0, result.output
    assert "trust: first keys on this device (trust on first install)" in result.output
    assert anchor.read_bytes() == keys["only_a"].read_bytes()
    first = current(prefix)
    assert reads(prefix) == str(anchor)

    def refused(result, *words):
        assert result.exit_code == 1, result.output  # the device refused: nothing changed
        assert "refused release" in result.output and f"still runs {first}" in result.output
        for words_ in words:
            assert words_ in result.output, result.output
        assert current(prefix) == first and sorted(os.listdir(prefix / "releases")) == [first]
        assert anchor.read_bytes() == keys["only_a"].read_bytes()

    # whoever can push a release swaps the keys with it: refused
    refused(deploy(site, wheelhouse, prefix, by["s"], "--allowed-signers", keys["only_s"]),
            f"brings other trusted keys than this device's {anchor}",
            "not signed (allowed_signers.sig is missing)")
    # ... also with a signature, made by the stranger's own key
    swapped = key_list(tmp_path, "swapped", keys["only_s"])
    assert cli("rotate-keys", "--key", keys["s"], swapped).exit_code == 0
    refused(deploy(site, wheelhouse, prefix, by["s"], "--allowed-signers", swapped),
            "allowed_signers.sig is not a signature of that list by any key in it")
    # ... or with the same keys and a unit that lets unsigned bundles in
    refused(deploy(site, wheelhouse, prefix, source, "--allowed-signers", keys["only_a"],
                   "--allow-unsigned"), "a release cannot turn that off")

    # A revokes itself: the list {B}, signed by A, checked against what the devices trust now
    rotated = key_list(tmp_path, "rotated", keys["only_b"])
    result = cli("rotate-keys", "--key", keys["a"], "--trusted", keys["only_a"], rotated)
    assert result.exit_code == 0 and "signed by a@example.org" in result.output, result.output
    assert serial_of(rotated.read_bytes()) and rotated.with_name("rotated.sig").is_file()
    # with a release that fails its health check, the keys before it come back with the
    # release before it (whose bundle was checked against them)
    broken = broken_copy(source, tmp_path / "broken")
    assert cli("sign", "--key", keys["b"], broken).exit_code == 0
    result = deploy(site, wheelhouse, prefix, broken, "--allowed-signers", rotated)
    assert result.exit_code == 1 and "failed its health check and was rolled back to " \
        f"{first}" in result.output, result.output
    assert "trust: keys rotated to serial" in result.output and "restored" in result.output
    assert current(prefix) == first and anchor.read_bytes() == keys["only_a"].read_bytes()
    assert not anchor.with_name("allowed_signers.sig").exists()
    # signed by B, the rotation is accepted: the anchor is the new list and its signature
    result = deploy(site, wheelhouse, prefix, by["b"], "--allowed-signers", rotated)
    assert result.exit_code == 0, result.output
    assert "trust: keys rotated to serial" in result.output
    assert anchor.read_bytes() == rotated.read_bytes()
    assert anchor.with_name("allowed_signers.sig").read_bytes() == \
        rotated.with_name("rotated.sig").read_bytes()
    rotated_release = current(prefix)
    # a later deploy needs no keys: the anchor stays, the unit reads it, A is no longer trusted
    result = deploy(site, wheelhouse, prefix, by["a"])
    assert result.exit_code == 1 and "failed its health check" in result.output
    assert "not in the allowed-signers file" in result.output, result.output
    assert current(prefix) == rotated_release and anchor.read_bytes() == rotated.read_bytes()
    time.sleep(1)  # a new release id (they have one-second time stamps)
    result = deploy(site, wheelhouse, prefix, by["b"])
    assert result.exit_code == 0, result.output
    assert reads(prefix) == str(anchor)
    assert not (prefix / "current" / "allowed_signers").exists()

    # the device from before the anchor (its keys only in its running release, which its unit
    # reads): its first deploy adopts the running release's keys, and judges the swap by them
    shutil.rmtree(prefix / "trust")
    shutil.copy(rotated, prefix / "current" / "allowed_signers")
    unit = (prefix / "current" / "edge-ids.service").resolve()
    unit.write_text(unit.read_text().replace(str(anchor), f"{prefix}/current/allowed_signers"))
    running = current(prefix)
    result = deploy(site, wheelhouse, prefix, by["s"], "--allowed-signers", keys["only_s"])
    assert result.exit_code == 1 and f"still runs {running}" in result.output, result.output
    assert f"the keys of its running release {running} are now its anchor" in result.output
    assert anchor.read_bytes() == rotated.read_bytes() and current(prefix) == running


def _package(folder: Path, keys: bytes | None, signature: bytes | None = None) -> Path:
    folder.mkdir()
    for name, data in (("allowed_signers", keys), ("allowed_signers.sig", signature)):
        if data is not None:
            (folder / name).write_bytes(data)
    return folder


UNIT = "[Service]\nExecStart=/opt/edge-ids/current/venv/bin/edge-ids run --input -\n"


def test_an_older_signed_list_is_never_taken_back(keys, tmp_path):
    """Replay: {A, B} was signed by A once; later the anchor became {A, S} (a newer serial).
    The old list, still signed by a trusted key, would bring B back: refused by its serial."""
    older = key_list(tmp_path, "older", keys["only_a"], keys["only_b"])
    assert cli("rotate-keys", "--key", keys["a"], "--trusted", keys["only_a"], older
               ).exit_code == 0
    time.sleep(1.1)
    newer = key_list(tmp_path, "newer", keys["only_a"], keys["only_s"])
    assert cli("rotate-keys", "--key", keys["a"], "--trusted", older, newer).exit_code == 0
    assert serial_of(newer.read_bytes()) > serial_of(older.read_bytes())
    prefix = Prefix(str(tmp_path / "opt"))
    (tmp_path / "opt" / "trust").mkdir(parents=True)
    (tmp_path / "opt" / "trust" / "allowed_signers").write_bytes(newer.read_bytes())
    replay = _package(tmp_path / "replay", older.read_bytes(),
                      older.with_name("older.sig").read_bytes())
    assert signed_by(older.read_bytes(), older.with_name("older.sig").read_bytes(),
                     prefix.path / "trust" / "allowed_signers") == "a@example.org"
    refusal = plan(prefix, replay, {"id": "R1"}, UNIT).refusal
    assert refusal and "not newer than the device's" in refusal
    # the same list as the anchor changes nothing, and the unit is made to read the anchor
    same = plan(prefix, _package(tmp_path / "same", newer.read_bytes()), {"id": "R2"}, UNIT)
    assert same.refusal is None and same.new is None
    assert same.unit.endswith(f" --allowed-signers {prefix.path}/trust/allowed_signers\n")


def test_a_signed_list_without_a_serial_or_edited_after_signing_is_refused(keys, tmp_path):
    prefix = Prefix(str(tmp_path / "opt"))
    (tmp_path / "opt" / "trust").mkdir(parents=True)
    shutil.copy(keys["only_a"], tmp_path / "opt" / "trust" / "allowed_signers")
    body = keys["only_b"].read_bytes()
    no_serial = _package(tmp_path / "p1", body, _ssh_sign(keys["a"], body))
    assert "no serial line" in plan(prefix, no_serial, {"id": "R"}, UNIT).refusal
    rotated = key_list(tmp_path, "rotated", keys["only_b"])
    assert cli("rotate-keys", "--key", keys["a"], rotated).exit_code == 0
    edited = rotated.read_bytes() + keys["only_s"].read_bytes()  # S slipped in afterwards
    tampered = _package(tmp_path / "p2", edited, rotated.with_name("rotated.sig").read_bytes())
    assert "is not a signature of that list by any key in it" in \
        plan(prefix, tampered, {"id": "R"}, UNIT).refusal
    good = _package(tmp_path / "p3", rotated.read_bytes(),
                    rotated.with_name("rotated.sig").read_bytes())
    assert plan(prefix, good, {"id": "R"}, UNIT).new == (rotated.read_bytes(),
                                                 rotated.with_name("rotated.sig").read_bytes())


def _ssh_sign(key: Path, data: bytes) -> bytes:
    import subprocess

    return subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", key, "-n", NAMESPACE],
                          input=data, capture_output=True, check=True).stdout


def test_rotate_keys_writes_nothing_when_the_devices_would_refuse_it(keys, tmp_path):
    rotated = key_list(tmp_path, "rotated", keys["only_b"])
    before = rotated.read_bytes()
    result = cli("rotate-keys", "--key", keys["s"], "--trusted", keys["only_a"], rotated)
    assert result.exit_code == 5 and "not written: devices that trust" in result.output
    assert "which is not in the allowed-signers file" in result.output
    assert rotated.read_bytes() == before and not rotated.with_name("rotated.sig").exists()
    empty = tmp_path / "empty"
    empty.write_text("# nobody\n")
    result = cli("rotate-keys", "--key", keys["a"], empty)
    assert result.exit_code == 5 and "lists no key" in result.output


@pytest.mark.slow  # three rollouts to one device, about two minutes
@pytest.mark.skipif(not (Path(sys.executable).parent / "ansible-playbook").is_file(),
                    reason="needs ansible-core")
def test_the_fleet_role_carries_a_rotation_and_its_hosts_refuse_a_swap(
        site, wheelhouse, small_pipeline, keys, tmp_path):
    """The role copies FILE.sig beside the keys: a rotation signed by a trusted key reaches the
    host's anchor through `fleet deploy`, and a swapped list is refused there."""
    server, root = site
    prefix, anchor = root / "fleet-opt", root / "fleet-opt" / "trust" / "allowed_signers"
    hosts = tmp_path / "hosts.ini"
    hosts.write_text(
        f"dev ansible_host=127.0.0.1 ansible_port={server.port} ansible_user=root "
        f"ansible_ssh_private_key_file={server.dir}/client_key edge_ids_prefix={prefix} "
        f"edge_ids_alerts={root}/fleet-alerts.json edge_ids_input=unix:{root}/fleet.sock "
        f"edge_ids_metrics=127.0.0.1:{sshd.free_port()} edge_ids_device=x86_64 "
        f"ansible_python_interpreter=/usr/bin/python3 ansible_ssh_common_args='-o "
        f"UserKnownHostsFile={server.known_hosts} -o GlobalKnownHostsFile=/dev/null -o "
        f"StrictHostKeyChecking=yes -o IdentitiesOnly=yes'\n")
    by = {k: signed(small_pipeline[0] / "bundle", tmp_path / f"by_{k}", keys[k])
          for k in ("a", "b", "s")}

    def roll(bundle: Path, signers: Path):
        return cli("fleet", "deploy", "-i", hosts, "--bundle", bundle, "--allowed-signers",
                   signers, "--wheelhouse", wheelhouse)

    result = roll(by["a"], keys["only_a"])
    assert result.exit_code == 0, result.output
    assert anchor.read_bytes() == keys["only_a"].read_bytes()
    rotated = key_list(tmp_path, "rotated", keys["only_a"], keys["only_b"])
    assert cli("rotate-keys", "--key", keys["a"], "--trusted", keys["only_a"], rotated
               ).exit_code == 0
    result = roll(by["b"], rotated)
    assert result.exit_code == 0 and "dev   ok       installed" in result.output, result.output
    assert anchor.read_bytes() == rotated.read_bytes()
    assert anchor.with_name("allowed_signers.sig").read_bytes() == \
        rotated.with_name("rotated.sig").read_bytes()
    running = current(prefix)
    result = roll(by["s"], keys["only_s"])
    assert result.exit_code == 1, result.output
    assert "refused release" in result.output and f"still runs {running}" in result.output
    assert "brings other trusted keys" in result.output
    assert anchor.read_bytes() == rotated.read_bytes() and current(prefix) == running
