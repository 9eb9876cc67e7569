"""`edge-ids fleet`: many devices through Ansible. The shipped playbooks (devices/ansible/) do
the work; this module runs ansible-playbook with them, then reads what each host reported
(one HOST.json per host, written by the role on the controller) into a summary or a table.
Prometheus targets come from the inventory itself (`ansible-inventory --list`)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .devices.deploy import counters
from .devices.fleet import FLEET_PLAYBOOK, ROLES_DIR, STATUS_PLAYBOOK
from .edge_runtime.model.bundle import load_bundle
from .edge_runtime.outputs.metrics import parse_address
from .edge_runtime.model.signature import TrustPolicy

Log = Callable[[str], None]
LOOPBACK = ("127.0.0.1", "::1", "localhost")
DEFAULT_METRICS = "127.0.0.1:9108"


class FleetError(Exception):
    """Ansible is missing, the inventory is unreadable, or the rollout stopped."""


@dataclass
class FleetOptions:
    inventory: Path
    bundle: Path
    canary: int = 1
    batch: str = "25%"  # hosts per later batch: a number or a percentage of the hosts
    limit: str | None = None
    allowed_signers: Path | None = None
    require_signature: bool | None = None
    wheelhouse: Path | None = None
    timeout: float | None = None
    keep: int | None = None
    ansible_args: tuple[str, ...] = ()
    # the page, the webhook, the state directory: the role's edge_ids_<name> for every host
    operator: dict = field(default_factory=dict)


def ansible_tool(name: str) -> str:
    """ansible-playbook / ansible-inventory beside this Python (the host extra installs them),
    else on PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        raise FleetError(f"{name} not found: install the host extra (pip install "
                         f"'edge-ids[host]', which brings ansible-core)")
    return found


def ansible_env() -> dict:
    """The user's environment, with the shipped role findable and no .retry files left behind;
    their own Ansible configuration (host-key checking, vault, ...) stays in force."""
    roles = os.pathsep.join(filter(None, [str(ROLES_DIR), os.environ.get("ANSIBLE_ROLES_PATH")]))
    return os.environ | {"ANSIBLE_ROLES_PATH": roles, "ANSIBLE_RETRY_FILES_ENABLED": "false"}


def play_hosts(inventory: Path, limit: str | None, playbook: Path = FLEET_PLAYBOOK) -> list[str]:
    """The play's hosts in rollout order (`ansible-playbook --list-hosts`)."""
    argv = [ansible_tool("ansible-playbook"), "-i", str(inventory), str(playbook),
            "--list-hosts"] + (["--limit", limit] if limit else [])
    done = subprocess.run(argv, capture_output=True, text=True, env=ansible_env())
    if done.returncode != 0:
        raise FleetError(f"ansible cannot read the inventory {inventory}: "
                         f"{(done.stderr or done.stdout).strip()[-800:]}")
    lines = done.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("hosts (")), None)
    return [] if start is None else [line.strip() for line in lines[start + 1:] if line.strip()]


def run_playbook(playbook: Path, inventory: Path, extra_vars: dict, limit: str | None,
                 ansible_args: tuple[str, ...], log: Log) -> int:
    """ansible-playbook, its output passed on line by line; returns its exit status."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="edge-ids-vars-") as variables:
        json.dump(extra_vars, variables)
        variables.flush()
        argv = [ansible_tool("ansible-playbook"), "-i", str(inventory), str(playbook),
                "-e", f"@{variables.name}", *(["--limit", limit] if limit else []),
                *ansible_args]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, env=ansible_env())
        for line in process.stdout:
            log(line.rstrip("\n"))
        return process.wait()


def read_results(directory: Path) -> dict[str, dict]:
    results = {}
    for path in sorted(directory.glob("*.json")):
        try:
            results[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError:
            results[path.stem] = {"host": path.stem, "state": "started"}
    return results


def deploy_fleet(options: FleetOptions, log: Log) -> list[dict]:
    """Roll the bundle out; one outcome per host (in rollout order). FleetError names the hosts
    that failed and why, and how many were not reached, when the rollout stopped."""
    # a broken bundle (BundleError) stops here, not on the canary; each host's own policy is
    # checked again there
    load_bundle(options.bundle, TrustPolicy(options.allowed_signers,
                                            options.require_signature is False))
    hosts = play_hosts(options.inventory, options.limit)
    if not hosts:
        raise FleetError(f"no hosts in {options.inventory}" +
                         (f" match --limit {options.limit}" if options.limit else ""))
    batch = int(options.batch) if options.batch.isdigit() else options.batch
    with tempfile.TemporaryDirectory(prefix="edge-ids-fleet-") as tmp:
        results_dir = Path(tmp) / "results"
        results_dir.mkdir()
        extra = {"edge_ids_bundle": str(options.bundle.resolve()),
                 "edge_ids_batches": [options.canary, batch],
                 "edge_ids_package_dir": str(Path(tmp) / "packages"),
                 "edge_ids_results_dir": str(results_dir),
                 "edge_ids_command": [sys.executable, "-m", "edge_ids"]}
        # Only what was given on the command line overrides the inventory's host/group vars.
        for name, value in (("allowed_signers", options.allowed_signers),
                            ("require_signature", options.require_signature),
                            ("wheelhouse", options.wheelhouse), ("timeout", options.timeout),
                            ("keep", options.keep), *options.operator.items()):
            if value is not None:
                extra[f"edge_ids_{name}"] = str(value.resolve()) if isinstance(value, Path) \
                    else value
        log(f"rolling out to {len(hosts)} hosts: a canary batch of {options.canary}, then "
            f"batches of {options.batch}; a failed host stops the rollout after its batch")
        code = run_playbook(FLEET_PLAYBOOK, options.inventory, extra, options.limit,
                            options.ansible_args, log)
        results = read_results(results_dir)
        built = sorted(p.name.removesuffix(".tar.gz")
                       for p in (Path(tmp) / "packages").glob("*.tar.gz"))
    # in the play's own order (the role notes it), which --list-hosts does not keep
    order = next((r["play_hosts"] for r in results.values() if "play_hosts" in r), hosts)
    outcomes = [outcome(host, results.get(host)) for host in order]
    reached = sum(o["state"] != "not reached" for o in outcomes)
    log("")
    log(f"packages built: {len(built)} ({', '.join(built) or 'none'}) for {reached} "
        f"host{'s' if reached != 1 else ''} reached")
    log(format_outcomes(outcomes))
    failed = [o for o in outcomes if o["state"] in ("failed", "started")]
    if code != 0 or failed:
        skipped = sum(o["state"] == "not reached" for o in outcomes)
        reasons = "; ".join(f"{o['host']}: {o['summary']}" for o in failed) or \
            f"ansible-playbook exited with {code}"
        raise FleetError(f"the rollout stopped: {reasons}"
                         + (f"; {skipped} host(s) not reached, left as they were" if skipped
                            else ""))
    return outcomes


def outcome(host: str, result: dict | None) -> dict:
    if result is None:
        return {"host": host, "state": "not reached", "summary": "untouched: the rollout "
                                                                 "stopped before its batch"}
    state = result.get("state")
    if state == "started":
        return result | {"summary": "stopped before a result: unreachable? (see Ansible's "
                                    "output above)"}
    if result.get("ok"):
        what = ("installed" if result.get("changed") else "unchanged") + \
            f", release {result.get('release')}"
        return result | {"state": "ok", "summary": what}
    if result.get("refused"):
        summary = (f"refused release {result['refused']}, still runs {result.get('release')}: "
                   f"{result.get('reason')}")
    elif result.get("reason") and result.get("release"):
        back = result.get("rolled_back_to")
        summary = (f"release {result['release']} failed its health check, back on "
                   f"{back or 'no earlier release'}: {result['reason']}")
    else:
        summary = f"{result.get('task', 'failed')}: {result.get('reason', 'failed')}"
    return result | {"state": "failed", "summary": summary}


def format_outcomes(outcomes: list[dict]) -> str:
    width = max(len(o["host"]) for o in outcomes + [{"host": "HOST"}])
    states = {"ok": "ok", "failed": "FAILED", "started": "FAILED", "not reached": "skipped"}
    return "\n".join([f"{'HOST':<{width}}  {'OUTCOME':<7}  DETAIL"] + [
        f"{o['host']:<{width}}  {states[o['state']]:<7}  {o['summary']}" for o in outcomes])


def fleet_status(inventory: Path, limit: str | None, ansible_args: tuple[str, ...],
                 log: Log) -> list[dict]:
    """One row per host: release, model, daemon state, records, alerts, health."""
    hosts = play_hosts(inventory, limit, STATUS_PLAYBOOK)
    with tempfile.TemporaryDirectory(prefix="edge-ids-fleet-") as tmp:
        run_playbook(STATUS_PLAYBOOK, inventory, {"edge_ids_results_dir": tmp}, limit,
                     ansible_args, log)
        results = read_results(Path(tmp))
    return [status_row(host, results.get(host)) for host in hosts]


def status_row(host: str, status: dict | None) -> dict:
    row = {"host": host, "release": None, "model": None, "daemon": None, "records": None,
           "alerts": None, "health": None, "error": None}
    if status is None:
        return row | {"error": "unreachable (see Ansible's output)"}
    if status.get("ok") is False:
        return row | {"error": status.get("reason")}
    current = next((r for r in status["releases"] if r["current"]), None)
    metrics = counters(status["metrics"]) if status.get("metrics") else None
    if status.get("systemd"):
        daemon = status.get("service") or "unknown"
    else:
        daemon = "running (no systemd)" if metrics is not None else "not running (no systemd)"
    health = current and current.get("health")
    return row | {
        "release": current and current["id"],
        "model": current and current["model_sha256"],
        "daemon": daemon,
        "records": metrics and metrics.get("records", 0),
        "alerts": metrics and sum(metrics.get("alerts", {}).values()),
        "health": None if health is None else "healthy" if health.get("ok")
        else f"FAILED: {health.get('reason')}",
        "error": None if current else f"no current release under {status.get('prefix')}"}


def format_status(rows: list[dict]) -> str:
    header = ("HOST", "RELEASE", "MODEL", "DAEMON", "RECORDS", "ALERTS", "HEALTH")
    table = [header]
    for r in rows:
        if r["error"] and not r["release"]:
            table.append((r["host"], f"- ({r['error']})", "", "", "", "", ""))
            continue
        table.append((r["host"], r["release"], (r["model"] or "")[:12], r["daemon"],
                      "-" if r["records"] is None else f"{r['records']:,}",
                      "-" if r["alerts"] is None else f"{r['alerts']:,}", r["health"] or "-"))
    widths = [max(len(str(row[i])) for row in table if row[2] or i == 0)
              for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in table)


def prometheus_targets(inventory: Path, limit: str | None) -> tuple[list[dict], list[str]]:
    """file_sd entries (one per host whose metrics listen beyond loopback) and a warning for
    each host that Prometheus could not scrape."""
    argv = [ansible_tool("ansible-inventory"), "-i", str(inventory), "--list"] + \
        (["--limit", limit] if limit else [])
    done = subprocess.run(argv, capture_output=True, text=True, env=ansible_env())
    if done.returncode != 0:
        raise FleetError(f"ansible-inventory cannot read {inventory}: "
                         f"{(done.stderr or done.stdout).strip()[-800:]}")
    inventory_data = json.loads(done.stdout)
    hostvars = inventory_data.get("_meta", {}).get("hostvars", {})
    groups = _groups_of(inventory_data)
    targets, warnings = [], []
    for host in play_hosts(inventory, limit):
        variables = hostvars.get(host, {})
        address = str(variables.get("edge_ids_metrics", DEFAULT_METRICS))
        listen, port = parse_address(address)
        if listen in LOOPBACK:
            warnings.append(f"{host}: metrics listen on {address}, which Prometheus cannot "
                            f"reach; set edge_ids_metrics to 0.0.0.0:{port} (or the device's "
                            f"address) and firewall the port to your Prometheus server")
            continue
        reach = variables.get("ansible_host", host) if listen in ("0.0.0.0", "::", "") \
            else listen
        reach = f"[{reach}]" if ":" in str(reach) else reach
        targets.append({"targets": [f"{reach}:{port}"], "labels": {
            "edge_ids_host": host, "edge_ids_device": str(variables.get("edge_ids_device",
                                                                        "pi4")),
            "edge_ids_groups": "," + ",".join(sorted(groups.get(host, []))) + ","}})
    return targets, warnings


def _groups_of(data: dict) -> dict[str, set[str]]:
    """host -> the groups it is in (ansible-inventory --list nests groups under `children`)."""
    member: dict[str, set[str]] = {}

    def walk(group: str, ancestors: tuple[str, ...]) -> None:
        node = data.get(group, {})
        names = ancestors + (() if group in ("all", "ungrouped") else (group,))
        for host in node.get("hosts", []):
            member.setdefault(host, set()).update(names)
        for child in node.get("children", []):
            walk(child, names)
    walk("all", ())
    return member
