"""`edge-ids deploy`, `status` and `rollback`, host side: check the bundle, ask the target what
it is, build the release package for it, copy it over SSH and run its install.py there (which
installs offline, switches `current`, restarts the unit, checks health and rolls back).
Every step is reported as it runs; `dry_run` reports them without doing them."""
from __future__ import annotations

import json
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from prometheus_client.parser import text_string_to_metric_families

from ..edge_runtime.ingest.argus import CaptureError, ra_fields
from ..edge_runtime.model.bundle import Bundle, BundleError, load_bundle
from ..edge_runtime.ingest.records import RawSchema
from ..edge_runtime.model.signature import TrustPolicy
from .release_prefix import TRUST_ANCHOR, UNIT_NAME
from .package import GLIBC_FOR_PYTHON, PROBE_SCRIPT, PackageError, Target, build_package
from .package import check_wheel_inputs, pinned_requirements, write_archive
from .profiles import DeviceProfile, load_profile
from .ssh import Remote, SSHError, ssh_command
from .unit import DEFAULT_ALERTS, DEFAULT_INPUT, DEFAULT_METRICS, DEFAULT_PREFIX, render_unit

Log = Callable[[str], None]

class DeployError(Exception):
    """The deploy stopped; the message says at which step and why."""


class NoTrustedKeys(DeployError):
    """Signatures are required but no allowed-signers file was given (a usage mistake)."""


@dataclass
class DeployOptions:
    device: str
    bundle: Path
    host: str | None = None
    output: Path | None = None
    prefix: str = DEFAULT_PREFIX
    input: str = DEFAULT_INPUT
    metrics: str = DEFAULT_METRICS
    alerts: str = DEFAULT_ALERTS
    capture: str | None = None  # an interface: the capture unit instead of --input
    allowed_signers: Path | None = None  # trusted keys: the device's anchor (trust_anchor.py)
    # True: signatures required (keys needed); False: the explicit opt-out (unsigned bundles
    # load although keys are installed); None: as the device profile says. Keys given without
    # the opt-out always mean signatures are required.
    require_signature: bool | None = None
    python: str | None = None  # for --output/--dry-run; otherwise the target says
    wheelhouse: Path | None = None
    ssh_config: Path | None = None
    ssh_options: tuple[str, ...] = ()
    timeout: float = 60
    keep: int = 3
    dry_run: bool = False
    operator: dict = field(default_factory=dict)  # the page and the webhook (render_unit)
    unit_options: dict = field(init=False)

    def __post_init__(self):
        self.unit_options = {"prefix": self.prefix, "input_": self.input,
                             "metrics": self.metrics, "alerts": self.alerts,
                             "capture": self.capture, "allowed_signers": None,
                             "allow_unsigned": False} | {
                                 k: v for k, v in self.operator.items() if v is not None}

    def trust(self, profile: DeviceProfile) -> TrustPolicy:
        """The signature policy the device will apply (also set in the unit's options)."""
        required = profile.require_signature if self.require_signature is None \
            else self.require_signature
        if required and self.allowed_signers is None:
            who = ("--require-signature" if self.require_signature
                   else f"device profile {profile.name}")
            raise NoTrustedKeys(f"{who} requires signed bundles: give --allowed-signers FILE "
                              f"(the keys the device trusts)")
        allow_unsigned = self.require_signature is False or (
            self.require_signature is None and profile.allow_unsigned)
        self.unit_options |= {"allow_unsigned": allow_unsigned, "allowed_signers": (
            f"{self.prefix.rstrip('/')}/{TRUST_ANCHOR}"
            if self.allowed_signers else None)}
        return TrustPolicy(self.allowed_signers, allow_unsigned)


class Steps:
    """Numbered step lines with the time each took."""

    def __init__(self, log: Log, total: int):
        self.log, self.total, self.number = log, total, 0

    def __call__(self, title: str) -> "Steps":
        self.number += 1
        self.log(f"[{self.number}/{self.total}] {title}")
        self.started = time.monotonic()
        return self

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None:
            self.log(f"      done in {time.monotonic() - self.started:.1f} s")

    def detail(self, text: str) -> None:
        self.log(f"      {text}")


def check_target(profile: DeviceProfile, facts: dict) -> Target:
    """The target as the profile expects it, or a DeployError saying what differs."""
    arch = facts["architecture"]
    if arch != profile.architecture:
        hint = (" (32-bit Raspberry Pi OS: ai-edge-litert has no 32-bit wheels; install the "
                "64-bit Raspberry Pi OS)" if arch.startswith("arm") else "")
        raise DeployError(f"the target is {arch}{hint}, but device profile {profile.name} is "
                          f"{profile.architecture}; pick another --device")
    if facts["python"] not in profile.python:
        raise DeployError(f"the target has Python {facts['python_full']}; profile "
                          f"{profile.name} supports {', '.join(profile.python)}")
    libc, version = facts["libc"]
    if libc != "glibc":
        raise DeployError(f"the target's C library is {libc or 'unknown'}; the wheels need glibc")
    if not facts["sudo"]:
        raise DeployError("the SSH user is not root and has no passwordless sudo; deploy as "
                          "root or allow `sudo -n` (Raspberry Pi OS's first user has it)")
    return Target(arch, facts["python"], int(version.split(".")[1]))


def check_bundle(options: DeployOptions, trust: TrustPolicy) -> Bundle:
    """The verified bundle, refused here as the device would refuse it (hashes, signature);
    with --capture, one whose columns Argus can measure (a model that reads others would never
    see a record). BundleError otherwise."""
    bundle = load_bundle(options.bundle, trust)
    if options.capture:
        try:
            ra_fields(RawSchema.from_spec(bundle.raw))
        except CaptureError as e:
            raise BundleError(f"{options.bundle}: --capture: {e}") from None
    return bundle


def describe(bundle: Bundle) -> str:
    models = [m for m in (bundle.model, bundle.anomaly and bundle.anomaly.model) if m]
    return (f"{bundle.manifest.get('dataset')} {bundle.detector} model "
            f"{bundle.model_sha256[:12]}, {sum(map(len, models)):,} bytes, "
            + (f"signed by {bundle.signer}" if bundle.signer else "not signed"))


def deploy(options: DeployOptions, log: Log = print) -> dict:
    """Run the deploy (or, with --output, write the package); returns install.py's result.
    Everything that can be checked here (profile, bundle, wheel inputs) is checked first,
    and a dry run checks the same."""
    profile = load_profile(options.device)
    trust = options.trust(profile)
    if options.dry_run:
        return dry_run(options, profile, trust, log)
    steps = Steps(log, 3 if options.output else 6)
    with steps(f"check the bundle {options.bundle}"):
        bundle = check_bundle(options, trust)
        steps.detail(describe(bundle))
        steps.detail(f"wheelhouse from {check_wheel_inputs(options.wheelhouse)}")
    if options.output:
        return write_package(options, profile, assumed_target(options, profile), steps, log)
    remote = Remote(options.host, options.ssh_config, options.ssh_options)
    try:
        with steps(f"ask {options.host} what it is"):
            facts = probe_target(remote)
            target = check_target(profile, facts)
            steps.detail(f"{facts['architecture']}, Python {facts['python_full']}, glibc "
                         f"{facts['libc'][1]}, "
                         f"{'systemd running' if facts['systemd'] else 'no running systemd'}, "
                         f"uid {facts['uid']}")
        return install_remote(options, profile, target, facts, remote, steps)
    finally:
        remote.close()


def assumed_target(options: DeployOptions, profile: DeviceProfile) -> Target:
    """The target when it is not asked (--output, --dry-run): --python or the profile's first."""
    python = options.python or profile.python[0]
    if python not in GLIBC_FOR_PYTHON:
        raise DeployError(f"--python {python}: choose one of {', '.join(GLIBC_FOR_PYTHON)}")
    return Target(profile.architecture, python, GLIBC_FOR_PYTHON[python])


def package_step(options, profile, target: Target, steps: Steps, tmp: str) -> tuple[dict, Path]:
    with steps(f"build the package for {target.architecture} CPython {target.python}"):
        release, package = build_package(Path(tmp), profile, options.bundle, target,
                                         options.unit_options, options.wheelhouse, steps.detail,
                                         options.allowed_signers, options.trust(profile))
        steps.detail(f"release {release['id']}: {len(release['wheels'])} wheels, "
                     f"{_size(package) / 1e6:.1f} MB")
    return release, package


def install_remote(options, profile, target, facts, remote: Remote, steps: Steps) -> dict:
    with tempfile.TemporaryDirectory(prefix="edge-ids-package-") as tmp:
        release, package = package_step(options, profile, target, steps, tmp)
        with steps(f"copy it to {options.host}"):
            remote_tmp = remote.run("mktemp -d /tmp/edge-ids-deploy.XXXXXX").stdout.strip()
            try:
                remote.upload(package, remote_tmp)
            except SSHError:
                remote.run(f"rm -rf {remote_tmp}", check=False)
                raise
    sudo = "" if facts["uid"] == 0 else "sudo -n "
    command = (f"{sudo}python3 {remote_tmp}/{release['id']}/install.py install "
               f"--prefix {shlex.quote(options.prefix)} --timeout {options.timeout:g} "
               f"--keep {options.keep}")
    try:
        with steps(f"install under {options.prefix}, start and check it"):
            result = run_install_script(remote, command, steps.detail)
    finally:
        remote.run(f"rm -rf {remote_tmp}", check=False)
    if result.get("refused"):
        raise DeployError(f"{options.host} refused release {result['refused']} and still runs "
                          f"{result.get('release')}: {result.get('reason')}")
    if not result.get("ok"):
        back = result.get("rolled_back_to")
        raise DeployError(f"release {release['id']} failed its health check and was rolled "
                          f"back{f' to {back}' if back else ' (no earlier release)'}: "
                          f"{result.get('reason')}")
    with steps("report"):
        steps.detail(f"{options.host}: {options.prefix}/current -> releases/{release['id']}")
        for note in report_notes(result):
            steps.detail(note)
    return result


def report_notes(result: dict) -> list[str]:
    """What the operator must know about the device install.py reported on."""
    if not result["systemd"]:
        return ["no running systemd there: start the daemon by hand (command above)"]
    if not result["memory_cgroup"]:
        return ["MemoryMax= is ignored there: the memory cgroup is off; add "
                "cgroup_enable=memory to /boot/firmware/cmdline.txt and reboot"]
    return []


def probe_target(remote: Remote) -> dict:
    """probe.py, sent on stdin: the device-side facts come from one place (install.py reads
    them from it too)."""
    result = remote.run("python3 -", input=PROBE_SCRIPT.read_text(), check=False)
    if result.returncode == 127:
        raise DeployError(f"{remote.host} has no python3 (Raspberry Pi OS ships it)")
    last = (result.stdout.strip().splitlines() or [""])[-1]
    if result.returncode != 0 or not last.startswith("RESULT "):
        raise DeployError(f"probing {remote.host} failed: "
                          f"{(result.stderr or result.stdout).strip()[-500:]}")
    return json.loads(last.removeprefix("RESULT "))


def run_install_script(remote: Remote, command: str, detail: Log) -> dict:
    """Run install.py remotely, echoing its lines; its last line is `RESULT {json}`."""
    result: dict = {"ok": False, "reason": "install.py gave no result"}

    def on_line(line: str) -> None:
        nonlocal result
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
        else:
            detail(line)
    remote.stream(command, on_line)
    return result


def write_package(options, profile, target: Target, steps: Steps, log: Log) -> dict:
    with tempfile.TemporaryDirectory(prefix="edge-ids-package-") as tmp:
        release, package = package_step(options, profile, target, steps, tmp)
        with steps(f"write {options.output}"):
            write_archive(package, options.output)
            steps.detail(f"{options.output.stat().st_size / 1e6:.1f} MB, release {release['id']}")
    name = options.output.name
    log(f"Install it on the device (no internet needed there):\n"
        f"  scp {name} pi@DEVICE: && ssh pi@DEVICE 'tar -xzf {name} && sudo python3 "
        f"{release['id']}/install.py install --prefix {options.prefix}'")
    return {"ok": True, "release": release["id"], "output": str(options.output)}


def dry_run(options: DeployOptions, profile: DeviceProfile, trust: TrustPolicy,
            log: Log) -> dict:
    """Every check that touches nothing (bundle, profile, --python, the wheelhouse's inputs)
    run for real and failing as the deploy would; then every other step, with the commands
    it would run, and the unit it would install."""
    bundle = check_bundle(options, trust)
    wheels_from = check_wheel_inputs(options.wheelhouse)
    target = assumed_target(options, profile)
    typed = ssh_command(options.ssh_config, options.ssh_options) + [options.host or "DEVICE"]

    def ssh(command: str) -> str:
        return shlex.join(typed + [command])
    tmp = "/tmp/edge-ids-deploy.XXXXXX"
    planned = [
        f"check the bundle {options.bundle} (hashes, schema): checked, {describe(bundle)}",
        f"ask the target what it is: {ssh('python3 -')} < probe.py (architecture, Python, glibc, "
        f"systemd, sudo) and check it against profile {profile.name}",
        f"build the wheelhouse for {target.architecture} CPython {target.python} (glibc "
        f"2.{target.glibc} assumed until the target says) from {wheels_from}"
        + ("" if options.wheelhouse else
           f" and {' '.join(pinned_requirements())} via `pip download --only-binary=:all: "
           f"--platform {target.platforms[0]} ... --platform {target.platforms[-1]}`"),
        f"copy the package: {ssh(f'mktemp -d {tmp}')}, then a tar stream into it",
        f"install: {ssh(f'python3 {tmp}/ID/install.py install --prefix {options.prefix}')}"
        f" (prefixed with `sudo -n` when not root): venv from the wheels offline, "
        f"{options.prefix}/releases/ID, `current` switched atomically, probe records "
        f"classified by the unit's ExecStart; under systemd the unit goes to "
        f"/etc/systemd/system/{UNIT_NAME}, daemon-reload, enable, restart, and the metrics page "
        f"must name the new model within {options.timeout:g} s; else roll back",
        f"remove the package: {ssh(f'rm -rf {tmp}')}"]
    if options.output:
        planned = [planned[0], planned[2], f"write {options.output} (package + install.py)"]
    for number, text in enumerate(planned, 1):
        log(f"[{number}/{len(planned)}] {'' if number == 1 else 'would '}{text}")
    log("The unit it would install:")
    log(render_unit(profile, **options.unit_options))
    return {"ok": True, "dry_run": True}


def remote_script(remote: Remote, prefix: str, arguments: str, log: Log, root: bool) -> dict:
    """Run the install.py that the last deploy left under the prefix."""
    sudo = "" if not root or remote.run("id -u").stdout.strip() == "0" else "sudo -n "
    script = shlex.quote(f"{prefix}/install.py")
    exists = remote.run(f"test -f {script}", check=False).returncode == 0
    if not exists:
        raise DeployError(f"no edge-ids release under {prefix} on {remote.host}")
    return run_install_script(remote, f"{sudo}python3 {script} {arguments} "
                                      f"--prefix {shlex.quote(prefix)}", log)


def status(remote: Remote, prefix: str, log: Log = print) -> dict:
    result = remote_script(remote, prefix, "status", log, root=False)
    if result.get("ok") is False:
        raise DeployError(result["reason"])
    return result | {"counters": counters(result["metrics"]) if result["metrics"] else None}


def rollback(remote: Remote, prefix: str, to: str | None, timeout: float,
             log: Log = print) -> dict:
    arguments = "rollback" + (f" --to {shlex.quote(to)}" if to else "") + f" --timeout {timeout:g}"
    result = remote_script(remote, prefix, arguments, log, root=True)
    if not result.get("ok"):
        raise DeployError(f"rollback failed: {result.get('reason')}")
    return result


def counters(metrics_text: str) -> dict:
    """The daemon's counters from its metrics page, summed per label value."""
    wanted = {"edge_ids_records": None, "edge_ids_records_rejected": "reason",
              "edge_ids_alerts": "class", "edge_ids_reloads": "result",
              "edge_ids_unknown_category": "column"}
    out: dict = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name in wanted:
            label = wanted[family.name]
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = family.name.removeprefix("edge_ids_")
                    if label is None:
                        out[key] = int(sample.value)
                    else:
                        out.setdefault(key, {})[sample.labels[label]] = int(sample.value)
    return out


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


__all__ = ["DeployError", "DeployOptions", "PackageError", "SSHError", "deploy", "rollback",
           "status"]
