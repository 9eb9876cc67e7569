"""`edge-ids fleet`: deploy, status and Prometheus targets for many devices, through Ansible."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import exit_codes
from .cli_operator import unit_operator_options
from .cli_options import bundle_option
from .exit_codes import BadInput, Failed

inventory_option = click.option(
    "-i", "--inventory", required=True, type=click.Path(exists=True, path_type=Path),
    help="An Ansible inventory (INI or YAML file, or a folder with group_vars/ and host_vars/). "
         "Per host or group: edge_ids_device, edge_ids_prefix, edge_ids_input, "
         "edge_ids_capture, edge_ids_metrics, edge_ids_alerts, edge_ids_allowed_signers, "
         "edge_ids_ui, edge_ids_ui_token_file, edge_ids_ui_cert_file, edge_ids_ui_key_file, "
         "edge_ids_webhook, edge_ids_webhook_token_file, "
         "edge_ids_webhook_min_severity, edge_ids_webhook_insecure, edge_ids_state_dir, "
         "edge_ids_extra_options (docs/fleet.md).")
limit_option = click.option("--limit", metavar="PATTERN",
                            help="Only these hosts or groups (ansible-playbook --limit).")
ansible_arg_option = click.option(
    "--ansible-arg", "ansible_args", multiple=True, metavar="ARG",
    help="Passed on to ansible-playbook (repeatable), e.g. --ansible-arg=--ask-vault-pass.")


def _fail(error: Exception):
    raise Failed(str(error)) from None


def _check_device_paths(given: dict) -> None:
    """Paths on the devices given here are absolute and safe in a unit (exit 2 if not); how
    they combine with each host's own variables is checked per host (fleet package)."""
    from .devices.unit import device_file

    for name, option in (("ui_token_file", "--ui-token-file"), ("ui_cert_file", "--ui-cert"),
                         ("ui_key_file", "--ui-key"), ("webhook_token_file", "--webhook-token-file"),
                         ("state_dir", "--state-dir")):
        if given.get(name):
            try:
                device_file(given[name], option)
            except ValueError as e:
                raise click.UsageError(str(e)) from None


@click.group(epilog=exit_codes.epilog())
def fleet():
    """Many devices through Ansible: rolling deploys, status, Prometheus targets.

    An inventory lists the devices (ansible_host, ansible_user, ansible_port, ...) and, per host
    or group, the role's variables. The shipped role (edge-ids fleet path) installs a release
    exactly as `edge-ids deploy` does; use it in your own playbooks, or let these commands run
    the shipped playbooks. Needs the host extra (ansible-core); nothing Ansible-related goes to
    the devices (they need python3, as for deploy).
    """


@fleet.command(epilog=exit_codes.epilog())
@inventory_option
@bundle_option(help="The model to roll out: a bundle folder or .tar.gz.")
@click.option("--canary", type=click.IntRange(1), default=1, show_default=True,
              help="Hosts in the first batch (the first hosts of the inventory).")
@click.option("--batch", default="25%", show_default=True, metavar="N|P%",
              help="Hosts in each later batch: a number, or a percentage of all hosts.")
@limit_option
@click.option("--allowed-signers", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="FILE", help="Trusted keys for every host (overrides the inventory's "
                                   "edge_ids_allowed_signers); FILE.sig goes too. A host with "
                                   "other keys in its trust anchor takes them only signed by "
                                   "one of its keys (`edge-ids rotate-keys`).")
@click.option("--require-signature/--allow-unsigned", default=None,
              help="Hosts given trusted keys refuse unsigned bundles anyway; "
                   "--require-signature also refuses hosts without keys, --allow-unsigned is "
                   "the explicit opt-out, refused by hosts with a trust anchor (default: the "
                   "inventory's edge_ids_require_signature, else the device profile's "
                   "[signatures]).")
@click.option("--wheelhouse", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Wheels for the devices instead of downloading them (a host without "
                   "internet).")
@click.option("--timeout", type=click.FloatRange(1), help="Seconds each health check waits "
                                                          "(default: the inventory's, else 60).")
@click.option("--keep", type=click.IntRange(1), help="Releases kept on each device.")
@ansible_arg_option
@unit_operator_options(extra=False)
def deploy(inventory, bundle, canary, batch, limit, allowed_signers, require_signature,
           wheelhouse, timeout, keep, ansible_args, **operator):
    """Roll a bundle out: a canary batch, then the rest in batches.

    Each host goes through deploy's steps (probe, package built once per architecture and
    Python, copy, install, health check; rollback on failure). A batch in which any host
    fails is the last one: that host is back on its previous release, later batches are not
    touched, and the command exits 1 naming the host and the reason. A host whose current
    release already has this bundle (manifest and signature), wheels, unit and keys is left
    alone ("unchanged").

    The page, the webhook and the state directory are role variables set per host or group in
    the inventory (edge_ids_ui, edge_ids_webhook, ...); --ui, --webhook, --state-dir and the
    others here override them for every host. Token files are paths on the devices.

    \b
    Example:
      edge-ids fleet deploy -i hosts.ini --bundle out/nsl-kdd/bundle \\
          --canary 1 --batch 5
    """
    from .edge_runtime.model.bundle import BundleError
    from .fleet import FleetError, FleetOptions, deploy_fleet

    if not (batch.isdigit() and int(batch) > 0 or batch.endswith("%")
            and batch[:-1].isdigit() and 0 < int(batch[:-1]) <= 100):
        raise click.BadParameter("a number of hosts, or a percentage such as 25%",
                                 param_hint="--batch")
    given = {k: v for k, v in operator.items() if v is not None}
    _check_device_paths(given)
    options = FleetOptions(inventory=inventory, bundle=bundle, canary=canary, batch=batch,
                           limit=limit, allowed_signers=allowed_signers,
                           require_signature=require_signature, wheelhouse=wheelhouse,
                           timeout=timeout, keep=keep, ansible_args=ansible_args,
                           operator=given)
    try:
        deploy_fleet(options, click.echo)
    except BundleError as e:
        raise BadInput(str(e)) from None
    except FleetError as e:
        _fail(e)


@fleet.command(epilog=exit_codes.epilog())
@inventory_option
@limit_option
@ansible_arg_option
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Only the table (not Ansible's output).")
def status(inventory, limit, ansible_args, as_json, quiet):
    """One table of every host: release, model, daemon state, records, alerts, health.

    Exits 1 when a host could not be read (unreachable, or no edge-ids release there).
    """
    from .fleet import FleetError, fleet_status, format_status

    log = (lambda _: None) if quiet or as_json else (lambda line: click.echo(line, err=True))
    try:
        rows = fleet_status(inventory, limit, ansible_args, log)
    except FleetError as e:
        _fail(e)
    click.echo(json.dumps(rows, indent=1) if as_json else format_status(rows))
    if any(r["error"] for r in rows):
        sys.exit(exit_codes.FAILED)


@fleet.command(epilog=exit_codes.epilog())
@inventory_option
@limit_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the file_sd JSON here (default stdout).")
def targets(inventory, limit, output):
    """Prometheus file_sd targets: every device's metrics page, from the inventory.

    Each host's edge_ids_metrics must listen beyond loopback (0.0.0.0:9108 or the device's
    address) for a central Prometheus to reach it; hosts on 127.0.0.1 are left out with a
    warning.

    \b
    Point Prometheus at the file:
      scrape_configs:
        - job_name: edge-ids
          file_sd_configs: [{files: [/etc/prometheus/edge-ids.json]}]
    """
    from .fleet import FleetError, prometheus_targets

    try:
        entries, warnings = prometheus_targets(inventory, limit)
    except FleetError as e:
        _fail(e)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    text = json.dumps(entries, indent=1) + "\n"
    if output:
        output.write_text(text)
        click.echo(f"{len(entries)} targets written to {output}", err=True)
    else:
        click.echo(text, nl=False)


@fleet.command(epilog=exit_codes.epilog())
def path():
    """Where the shipped Ansible role and playbooks are (for your own playbooks).

    \b
    Make the role findable:
      export ANSIBLE_ROLES_PATH="$(edge-ids fleet path | sed -n 's/^roles: //p')"
    then, in your playbook:
      - hosts: sensors
        roles: [{role: edge_ids, edge_ids_bundle: out/nsl-kdd/bundle}]
    """
    from .devices.fleet import FLEET_PLAYBOOK, ROLES_DIR, STATUS_PLAYBOOK

    click.echo(f"roles: {ROLES_DIR}\nplaybook: {FLEET_PLAYBOOK}\nstatus playbook: "
               f"{STATUS_PLAYBOOK}")


@fleet.command(name="package", epilog=exit_codes.epilog())
@click.option("--device", required=True, help="The host's device profile.")
@click.option("--bundle", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False,
                                                                   path_type=Path),
              help="Where this run's packages are kept (one per architecture/Python/glibc).")
@click.option("--probe", required=True, metavar="JSON",
              help="The host's facts: install.py probe's RESULT object.")
@click.option("--prefix", default="/opt/edge-ids", show_default=True)
@click.option("--input", "input_", default="unix:/run/edge-ids/records.sock", show_default=True)
@click.option("--capture", metavar="IF")
@click.option("--metrics", default="127.0.0.1:9108", show_default=True)
@click.option("--alerts", default="/var/log/edge-ids/alerts.json", show_default=True)
@click.option("--allowed-signers", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--require-signature/--allow-unsigned", default=None)
@click.option("--wheelhouse", type=click.Path(exists=True, file_okay=False, path_type=Path))
@unit_operator_options
def package(device, bundle, directory, probe, prefix, input_, capture, metrics, alerts,
            allowed_signers, require_signature, wheelhouse, **operator):
    """The role's controller step for one host (not needed by hand).

    Checks the host's facts against its profile and the bundle against its signature policy,
    builds this run's package for its kind of target if there is none yet (`deploy --output`),
    and prints one JSON line: the package, and this host's unit and release.json.
    """
    from .devices.deploy import DeployError, DeployOptions, NoTrustedKeys, PackageError
    from .devices.fleet import package_for_host
    from .devices.profiles import ProfileError
    from .edge_runtime.model.bundle import BundleError

    try:
        facts = json.loads(probe)
        options = DeployOptions(device=device, bundle=bundle, prefix=prefix, input=input_,
                                capture=capture, metrics=metrics, alerts=alerts,
                                allowed_signers=allowed_signers,
                                require_signature=require_signature, wheelhouse=wheelhouse,
                                operator=operator)
        result = package_for_host(options, facts, directory,
                                  lambda line: click.echo(line, err=True))
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint="--probe") from None
    except BundleError as e:
        raise BadInput(str(e)) from None
    except NoTrustedKeys as e:
        raise click.UsageError(str(e)) from None
    except (DeployError, PackageError, ProfileError, ValueError) as e:
        _fail(e)
    click.echo(json.dumps(result))
