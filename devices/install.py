"""Install, check, roll back and report an edge-ids release on the device itself.

It travels inside every release package with its siblings, probe.py (what the device is;
deploy sends that one alone on stdin first), release_prefix.py (the prefix's layout) and
trust_anchor.py (which keys a release may bring), and runs with the device's own python3
(standard library only: it must work before any venv exists, and when a venv is broken).
`edge-ids deploy` runs it over SSH; a package carried by hand runs it the same way.

Under the prefix: venvs/<wheelhouse hash>/ (one per set of wheels), releases/<id>/ (bundle,
unit, release.json, probe.csv, health.json, venv link), current -> releases/<id> (switched by
one rename), trust/allowed_signers (the keys the daemon trusts, outside every release) and
these four scripts (for `status` and `rollback`). docs/deploy.md has the details.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

if __package__:  # imported on the host, as edge_ids.devices.install
    from .probe import facts, has_systemd, memory_cgroup
    from .release_prefix import (ALLOWED_SIGNERS_FILE, DEFAULT_PREFIX, DEVICE_SCRIPTS, UNIT_NAME,
                                 Prefix, same_as_current)
    from .trust_anchor import SIGNATURE_FILE, adopt_running_keys, apply, plan
else:  # run as a script on the device: its siblings sit beside it (sys.path[0])
    from probe import facts, has_systemd, memory_cgroup
    from release_prefix import (ALLOWED_SIGNERS_FILE, DEFAULT_PREFIX, DEVICE_SCRIPTS, UNIT_NAME,
                                Prefix, same_as_current)
    from trust_anchor import SIGNATURE_FILE, adopt_running_keys, apply, plan
DEFAULT_UNIT_DIR = "/etc/systemd/system"
MEMORY_CGROUP_ADVICE = (
    "MemoryMax= is ignored here: the kernel has the memory cgroup off (Raspberry Pi kernels do "
    "by default). To enforce it, add cgroup_enable=memory to /boot/firmware/cmdline.txt "
    "(/boot/cmdline.txt before Bookworm) and reboot.")
# The probe runs the unit's ExecStart beside the running daemon, on a few rows, then exits: it
# serves no page (the daemon holds the port), pushes nothing to the operator, reads no credential
# (${CREDENTIALS_DIRECTORY} is the service's) and keeps no state.
PROBE_DROPS = ("--metrics", "--ui", "--ui-token-file", "--webhook", "--webhook-token-file",
               "--webhook-min-severity", "--webhook-throttle", "--state-dir")
PROBE_DROPPED_FLAGS = ("--webhook-insecure",)


class InstallError(Exception):
    """A step failed; the message says which and why."""


def say(message: str) -> None:
    print(message, flush=True)


def run(argv: list, timeout: float | None = None, check: bool = True
        ) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise InstallError(f"{shlex.join(str(a) for a in argv)} failed "
                           f"(exit {result.returncode}): {tail(result.stderr or result.stdout)}")
    return result


def tail(text: str, lines: int = 6) -> str:
    return " | ".join(line for line in text.strip().splitlines()[-lines:])


def exec_start(unit_text: str) -> list[str]:
    """The ExecStart command of a unit, as an argv."""
    match = re.search(r"^ExecStart=(.+)$", unit_text, re.MULTILINE)
    if not match:
        raise InstallError("the unit has no ExecStart= line")
    return shlex.split(match.group(1))


def with_options(argv: list[str], replace: dict[str, str], drop: tuple = (),
                 flags: tuple = ()) -> list[str]:
    """argv with some `--option value` pairs replaced (or added), some dropped, and some
    flags (options without a value) dropped."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in flags:
            i += 1
            continue
        if argv[i] in drop or argv[i] in replace:
            i += 2
            continue
        out.append(argv[i])
        i += 1
    for option, value in replace.items():
        out += [option, value]
    return out


def install_venv(prefix: Prefix, package: Path, release: dict) -> Path:
    """The venv for this wheelhouse, made offline from the package's wheels (pip runs from its
    own wheel, so the device needs neither internet nor Debian's python3-venv/ensurepip)."""
    venv = prefix.venvs / release["wheelhouse_sha256"][:16]
    if (venv / ".complete").is_file():
        say(f"venv: reusing {venv} (same wheels)")
        return venv
    shutil.rmtree(venv, ignore_errors=True)  # a half-made venv from an interrupted install
    say(f"venv: creating {venv} with Python {sys.version.split()[0]}")
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    wheels = package / "wheels"
    pip = glob.glob(str(wheels / "pip-*.whl"))
    if not pip:
        raise InstallError(f"no pip wheel in {wheels}")
    python = venv / "bin" / "python"
    say(f"venv: installing edge-ids {release['edge_ids_version']} and its dependencies "
        f"from {len(list(wheels.glob('*.whl')))} wheels (offline)")
    run([python, f"{pip[0]}/pip", "install", "--no-index", "--find-links", wheels,
         "--no-cache-dir", "--disable-pip-version-check", "--quiet",
         f"edge-ids=={release['edge_ids_version']}"], timeout=1800)
    run([python, "-c", "import numpy, ai_edge_litert.interpreter, edge_ids.edge_runtime.daemon"])
    (venv / ".complete").write_text(json.dumps(release["wheels"], indent=1))
    say("venv: numpy, ai_edge_litert and edge_ids.edge_runtime import")
    return venv


def place_release(prefix: Prefix, package: Path, release: dict, venv: Path, unit: str) -> Path:
    directory = prefix.releases / release["id"]
    if directory.exists():
        if prefix.current() == release["id"]:
            raise InstallError(f"release {release['id']} is already current")
        shutil.rmtree(directory)  # a failed attempt at this same release
    partial = prefix.releases / f".{release['id']}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shutil.copytree(package / "bundle", partial / "bundle")
    for name in ("release.json", "probe.csv", *DEVICE_SCRIPTS):
        shutil.copy2(package / name, partial / name)
    (partial / UNIT_NAME).write_text(unit)  # the package's, reading the trust anchor if any
    for name in (ALLOWED_SIGNERS_FILE, SIGNATURE_FILE):  # what it asked to trust, for the record
        if (package / name).is_file():
            shutil.copy2(package / name, partial / name)
    (partial / "venv").symlink_to(Path("..") / ".." / "venvs" / venv.name)
    partial.rename(directory)
    for name in DEVICE_SCRIPTS:
        shutil.copy2(package / name, prefix.path / name)
    say(f"release: {directory}")
    return directory


def probe_command(unit_text: str, probe_csv: Path) -> list[str]:
    """The unit's ExecStart made to classify the probe records once (metrics off, alerts to
    stdout, without what PROBE_DROPS names); a capture unit's model through `run`."""
    argv, drop = exec_start(unit_text), PROBE_DROPS
    if argv[1:2] == ["capture"]:  # probe records are rows, not packets: the same model via `run`
        argv, drop = [argv[0], "run", *argv[2:]], drop + ("--interface", "--flow-report")
    return with_options(argv, {"--input": f"file:{probe_csv}", "--alerts": "-", "--emit": "all",
                               "--log-rejects": "0"}, drop=drop, flags=PROBE_DROPPED_FLAGS)


def probe(release_dir: Path, release: dict, timeout: float) -> None:
    """Run the unit's own ExecStart on the probe records and demand one classified line per
    record from this release's model."""
    unit_text = (release_dir / UNIT_NAME).read_text()
    if exec_start(unit_text)[1:2] == ["capture"]:
        require_argus()
    argv = probe_command(unit_text, release_dir / "probe.csv")
    try:
        result = run(argv, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise InstallError(f"the daemon did not classify the probe records in {timeout:g} s")
    if result.returncode != 0:
        raise InstallError(f"the daemon cannot start (exit {result.returncode}): "
                           f"{tail(result.stderr)}")
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    expected = sum(1 for line in (release_dir / "probe.csv").read_text().splitlines() if line)
    hashes = {line.get("ml", {}).get("model_sha256") for line in lines}
    if len(lines) != expected or hashes != {release["model_sha256"]}:
        raise InstallError(f"the daemon classified {len(lines)} of {expected} probe records "
                           f"with model {sorted(map(str, hashes))}, not {release['model_sha256']}")
    say(f"health: the daemon classified {len(lines)} probe records with model "
        f"{release['model_sha256'][:12]}")


def unsafe_credentials(unit_text: str) -> str | None:
    """Why the unit's tokens cannot be handed over (LoadCredential=NAME:PATH): a file that is
    not there, or that group or others may open (any user of the device would have the token)."""
    for name, path in re.findall(r"^LoadCredential=([^:\n]+):(.+)$", unit_text, re.MULTILINE):
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            return (f"the unit's credential {name} is read from {path}: {e.strerror}; put the "
                    f"token there first (chmod 600)")
        if not stat.S_ISREG(mode):
            return f"the unit's credential {name} is read from {path}, which is not a file"
        if mode & 0o077:
            return (f"the unit's credential {name} is read from {path}, which group or others "
                    f"may open (mode {stat.S_IMODE(mode):04o}): chmod 600 {path}")
    return None


def require_argus() -> None:
    """The capture unit runs argus and ra: they must be on the device."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [tool for tool in ("argus", "ra") if not shutil.which(tool, path=path)]
    if missing:
        raise InstallError(f"{' and '.join(missing)} not found on the device, and the capture "
                           f"unit runs them: apt-get install argus-server argus-client")


def metrics_text(release: dict, timeout: float = 3) -> str:
    with urllib.request.urlopen(f"http://{release['metrics']}/metrics", timeout=timeout) as r:
        return r.read().decode()


def activate_unit(release_dir: Path, unit_dir: Path) -> None:
    """Install the release's unit, reload systemd, enable and (re)start the service."""
    unit = unit_dir / UNIT_NAME
    temporary = unit_dir / f".{UNIT_NAME}.{os.getpid()}"
    shutil.copy2(release_dir / UNIT_NAME, temporary)
    os.replace(temporary, unit)
    run(["systemctl", "daemon-reload"])
    run(["systemctl", "enable", "--quiet", UNIT_NAME])
    restart = run(["systemctl", "restart", UNIT_NAME], check=False)  # waits for READY=1
    if restart.returncode != 0:  # systemctl only says "see journalctl": say what it says
        raise InstallError(f"{UNIT_NAME} did not start (systemctl restart exit "
                           f"{restart.returncode}); journal: {journal_tail()}")
    say(f"systemd: {unit} installed; daemon-reload, enable, restart")


def service_check(release: dict, timeout: float) -> None:
    """The service is active and its metrics page names this release's model."""
    deadline, state, error = time.monotonic() + timeout, "unknown", "not asked yet"
    while time.monotonic() < deadline:
        state = run(["systemctl", "is-active", UNIT_NAME], check=False).stdout.strip()
        if state == "active":
            try:
                if f'model_sha256="{release["model_sha256"]}"' in metrics_text(release):
                    say(f"health: {UNIT_NAME} is active and serves model "
                        f"{release['model_sha256'][:12]} on http://{release['metrics']}/metrics")
                    return
                error = "the metrics page names another model"
            except OSError as e:
                error = f"metrics page: {e}"
        elif state == "failed":
            break
        time.sleep(0.5)
    raise InstallError(f"{UNIT_NAME} is {state} after {timeout:g} s ({error}); journal: "
                       f"{journal_tail()}")


def journal_tail(lines: int = 8) -> str:
    """The service's last log lines, for an error message."""
    journal = run(["journalctl", "-u", UNIT_NAME, "-n", str(lines), "--no-pager", "-q"],
                  check=False)
    return tail(journal.stdout, lines)


def check_health(prefix: Prefix, release_id: str, systemd: bool, unit_dir: Path,
                 timeout: float) -> None:
    """Probe the release, then (under systemd) restart the service on it and watch it come up.
    The verdict is kept in the release's health.json."""
    directory = prefix.releases / release_id
    release = prefix.info(release_id)
    verdict = {"ok": False, "checked_utc": datetime.now(timezone.utc).isoformat(),
               "systemd": systemd}
    try:
        probe(directory, release, timeout)
        if systemd:
            activate_unit(directory, unit_dir)
            service_check(release, timeout)
        verdict["ok"] = True
    except InstallError as e:
        verdict["reason"] = str(e)
        raise
    finally:
        (directory / "health.json").write_text(json.dumps(verdict, indent=1) + "\n")


def roll_back(prefix: Prefix, failed: str | None, systemd: bool, unit_dir: Path,
              timeout: float) -> str | None:
    """Switch back to the newest healthy release before `failed`, and restart on it."""
    previous = prefix.previous_healthy(failed)
    prefix.switch(previous)
    if previous is None:
        say("rollback: no earlier healthy release; `current` removed")
        if systemd:
            run(["systemctl", "disable", "--now", "--quiet", UNIT_NAME], check=False)
        return None
    say(f"rollback: current -> {previous}")
    if systemd:
        check_health(prefix, previous, systemd, unit_dir, timeout)
    return previous


def manual_command(prefix: Prefix) -> str:
    return shlex.join(exec_start((prefix.current_link / UNIT_NAME).read_text()))


def command_install(args) -> dict:
    package = Path(args.package or Path(__file__).parent).resolve()
    release = json.loads((package / "release.json").read_text())
    prefix = Prefix(args.prefix)
    prefix.path.mkdir(parents=True, exist_ok=True)
    systemd = has_systemd() if args.systemd == "auto" else args.systemd == "yes"
    before = prefix.current()
    for note in filter(None, [adopt_running_keys(prefix)]):  # devices from before the anchor
        say(note)
    trust = plan(prefix, package, release, (package / UNIT_NAME).read_text())
    if not trust.refusal and args.skip_unchanged and same_as_current(prefix, package, release,
                                                                     trust.unit):
        say(f"unchanged: the current release {before} has this bundle, wheels, unit and keys")
        return {"ok": True, "changed": False, "release": before, "previous": before,
                "systemd": systemd, "memory_cgroup": memory_cgroup()}
    refusal = trust.refusal or unsafe_credentials(trust.unit)
    if refusal:
        say(f"refused: {refusal}")
        return {"ok": False, "refused": release["id"], "reason": refusal, "release": before}
    venv = install_venv(prefix, package, release)
    place_release(prefix, package, release, venv, trust.unit)
    undo_trust = apply(prefix, trust, say)  # before the health check, which reads the anchor
    prefix.switch(release["id"])
    say(f"switch: current -> releases/{release['id']}" + (f" (was {before})" if before else ""))
    result = {"release": release["id"], "previous": before, "systemd": systemd,
              "memory_cgroup": memory_cgroup()}
    try:
        check_health(prefix, release["id"], systemd, Path(args.unit_dir), args.timeout)
    except InstallError as e:
        say(f"health: FAILED: {e}")
        undo_trust()  # the releases before it were checked against the keys before it
        result |= {"ok": False, "reason": str(e),
                   "rolled_back_to": roll_back(prefix, release["id"], systemd,
                                               Path(args.unit_dir), args.timeout)}
        return result
    for removed in prefix.prune(args.keep):
        say(f"prune: removed {removed}")
    if not systemd:
        say("systemd: not running on this device; the unit is in "
            f"{prefix.current_link / UNIT_NAME}. Start the daemon by hand with:")
        say(f"  {manual_command(prefix)}")
    elif not result["memory_cgroup"]:
        say(f"note: {MEMORY_CGROUP_ADVICE}")
    return result | {"ok": True, "changed": True, "command": manual_command(prefix)}


def command_rollback(args) -> dict:
    prefix = Prefix(args.prefix)
    systemd = has_systemd() if args.systemd == "auto" else args.systemd == "yes"
    current = prefix.current()
    target = args.to or prefix.previous_healthy(current)
    if target is None or target not in prefix.release_ids():
        raise InstallError(f"no release {args.to!r} under {prefix.path}" if args.to else
                           f"no healthy release before {current} under {prefix.path}")
    prefix.switch(target)
    say(f"rollback: current -> {target} (was {current})")
    check_health(prefix, target, systemd, Path(args.unit_dir), args.timeout)
    return {"ok": True, "release": target, "previous": current, "systemd": systemd}


def command_status(args) -> dict:
    prefix = Prefix(args.prefix)
    ids = prefix.release_ids()
    if not ids:
        raise InstallError(f"no edge-ids release under {prefix.path}")
    current = prefix.current()
    status = {"prefix": str(prefix.path), "current": current,
              "releases": [prefix.info(r) | {"current": r == current} for r in ids],
              "systemd": has_systemd(), "memory_cgroup": memory_cgroup(),
              "service": None, "metrics": None, "metrics_error": None}
    if status["systemd"]:
        status["service"] = run(["systemctl", "is-active", UNIT_NAME], check=False).stdout.strip()
    if current:
        try:
            status["metrics"] = metrics_text(prefix.info(current))
        except OSError as e:
            status["metrics_error"] = str(e)
    return status


def command_probe(args) -> dict:
    """What deploy checks against the device profile before it builds anything (probe.py)."""
    return facts()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("install", "rollback", "status"):  # each with --prefix
        sub = commands.add_parser(name)
        sub.add_argument("--prefix", default=DEFAULT_PREFIX)
        if name != "status":
            sub.add_argument("--systemd", choices=("auto", "yes", "no"), default="auto")
            sub.add_argument("--unit-dir", default=DEFAULT_UNIT_DIR)
            sub.add_argument("--timeout", type=float, default=60)
    commands.add_parser("probe")  # the facts of probe.py (deploy sends that file alone, on stdin)
    commands.choices["install"].add_argument("--package", default=None)
    commands.choices["install"].add_argument("--keep", type=int, default=3)
    commands.choices["install"].add_argument(
        "--skip-unchanged", action="store_true",
        help="do nothing when the current release has the same bundle (manifest and "
             "signature), wheels, unit and keys")
    commands.choices["rollback"].add_argument("--to", default=None)
    args = parser.parse_args(argv)
    handler = {"install": command_install, "rollback": command_rollback,
               "status": command_status, "probe": command_probe}[args.command]
    try:
        result = handler(args)
    except (InstallError, OSError, subprocess.SubprocessError, ValueError) as e:
        say(f"error: {e}")
        result = {"ok": False, "reason": str(e)}
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
