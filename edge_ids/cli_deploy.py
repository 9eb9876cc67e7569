"""`edge-ids deploy`, `status` and `rollback`: a bundle onto a device over the system's ssh."""
from __future__ import annotations

import json
from pathlib import Path

import click

from . import exit_codes
from .cli_operator import unit_operator_options
from .cli_options import bundle_option, device_option
from .exit_codes import BadInput, Failed

ssh_config_option = click.option(
    "--ssh-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An ssh_config file for `ssh -F` (default: your ~/.ssh/config).")
ssh_option_option = click.option(
    "--ssh-option", "ssh_options", multiple=True, metavar="KEY=VALUE",
    help="Passed to ssh as -o KEY=VALUE (repeatable), e.g. Port=2222.")
prefix_option = click.option("--prefix", default="/opt/edge-ids", show_default=True,
                             help="Install prefix on the device.")


def _fail(error: Exception):
    raise Failed(str(error)) from None


def check_unit(device: str, unit_options: dict) -> None:
    """The unit these options make can be written (exit 2 saying why not: a token where it may
    not go, a relative path, an extra option the unit sets itself), before anything runs."""
    from .devices.profiles import load_profile
    from .devices.unit import render_unit

    try:
        render_unit(load_profile(device), **unit_options)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def _check_python(ctx, param, version):
    from .devices.package import GLIBC_FOR_PYTHON
    if version is not None and version not in GLIBC_FOR_PYTHON:
        raise click.BadParameter(f"choose one of {', '.join(GLIBC_FOR_PYTHON)}")
    return version


@click.command(epilog=exit_codes.epilog())
@device_option()
@click.option("--host", metavar="[USER@]ADDR",
              help="The device, as you would give it to ssh (a Host alias works).")
@bundle_option(help="The model to deploy: a bundle folder or .tar.gz (model.tflite, "
               "features.json, manifest.json).")
@prefix_option
@click.option("--input", "input_", default="unix:/run/edge-ids/records.sock", show_default=True,
              metavar="SRC", help="The daemon's --input on the device.")
@click.option("--capture", metavar="IF", help="Install the capture unit instead: `edge-ids "
              "capture` on this interface of the device (argus flows; needs argus-server and "
              "argus-client there; the unit grants CAP_NET_RAW and CAP_NET_ADMIN).")
@click.option("--metrics", default="127.0.0.1:9108", show_default=True, metavar="HOST:PORT",
              help="The daemon's --metrics on the device (the health check reads it).")
@click.option("--alerts", default="/var/log/edge-ids/alerts.json", show_default=True,
              metavar="FILE", help="The daemon's --alerts on the device.")
@click.option("--allowed-signers", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="FILE", help="The keys the device is to trust (ssh-keygen's "
              "allowed-signers format; `edge-ids sign` prints the line for your key). The first "
              "deploy with keys installs them as the device's trust anchor, "
              "PREFIX/trust/allowed_signers, outside the releases; a later deploy may bring "
              "another list only with FILE.sig from `edge-ids rotate-keys`, by a key the device "
              "trusts. The daemon refuses bundles signed by any other key, at start and on "
              "every reload.")
@click.option("--require-signature/--allow-unsigned", default=None,
              help="With --allowed-signers the device refuses unsigned bundles anyway; "
                   "--require-signature also refuses to deploy without keys, --allow-unsigned "
                   "is the explicit opt-out that lets unsigned bundles load, on a device "
                   "without a trust anchor only (a release cannot turn the anchor off: root on "
                   "the device removes it; docs/fleet.md). Default: the device profile's "
                   "[signatures].")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE.tar.gz", help="Write the package for carrying by hand instead of "
                                          "deploying (no --host needed).")
@click.option("--python", metavar="X.Y", callback=_check_python,
              help="The device's Python, for --output and --dry-run (default: the profile's "
                   "first; a real deploy asks the device).")
@click.option("--wheelhouse", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Use these wheels (edge-ids and its dependencies for the device) instead of "
                   "building them; for a host without internet.")
@ssh_config_option
@ssh_option_option
@click.option("--timeout", type=click.FloatRange(1), default=60, show_default=True,
              help="Seconds the health check waits for the daemon.")
@click.option("--keep", type=click.IntRange(1), default=3, show_default=True,
              help="Releases kept on the device (older ones are removed).")
@click.option("--dry-run", is_flag=True, help="Check what can be checked here (bundle, "
              "profile, wheelhouse inputs) and fail as the deploy would; print every other "
              "step and the unit; touch nothing.")
@unit_operator_options
def deploy(device, host, bundle, prefix, input_, capture, metrics, alerts, allowed_signers,
           require_signature, output, python, wheelhouse, ssh_config, ssh_options, timeout, keep,
           dry_run, **operator):
    """Install a bundle on a device as a systemd daemon, over SSH.

    Uses your ssh (keys, agent, ~/.ssh/config, known_hosts); host-key checking stays on.
    Steps: check the bundle; ask the device for its architecture and Python and check them
    against the profile; build a wheelhouse for it here (the device needs no internet); copy;
    on the device: a venv under PREFIX, the bundle in PREFIX/releases/ID, PREFIX/current
    switched atomically, the unit installed, daemon-reload, enable, restart. Health check:
    probe records are classified by the unit's own ExecStart and, under systemd, the metrics
    page names the new model within --timeout; otherwise the previous release comes back.
    Without systemd on the device, it prints the command that starts the daemon by hand.

    \b
    Examples:
      edge-ids deploy --device pi4 --host pi@sensor-1 --bundle out/nsl-kdd/bundle
      edge-ids deploy --device pi4 --bundle out/nsl-kdd/bundle \\
          --output pi4-release.tar.gz
      edge-ids deploy --device pi4 --host pi@sensor-1 \\
          --bundle out/ehms-net/bundle --capture eth0
    """
    from .devices.deploy import DeployError, DeployOptions, NoTrustedKeys, PackageError, SSHError
    from .devices.deploy import deploy as run_deploy
    from .devices.package import WheelhouseError
    from .edge_runtime.model.bundle import BundleError

    if not host and not output and not dry_run:
        raise click.UsageError("give --host to deploy, or --output FILE.tar.gz to write the "
                               "package")
    if host and output:
        raise click.UsageError("--host and --output exclude each other")
    check_page_options(operator)
    options = DeployOptions(device=device, bundle=bundle, host=host, output=output,
                            prefix=prefix, input=input_, capture=capture, metrics=metrics,
                            alerts=alerts, allowed_signers=allowed_signers,
                            require_signature=require_signature, python=python,
                            wheelhouse=wheelhouse, ssh_config=ssh_config,
                            ssh_options=ssh_options, timeout=timeout, keep=keep,
                            dry_run=dry_run, operator=operator)
    check_unit(device, options.unit_options)
    try:
        run_deploy(options, click.echo)
    except (BundleError, WheelhouseError) as e:
        raise BadInput(str(e)) from None
    except NoTrustedKeys as e:
        raise click.UsageError(str(e)) from None
    except (DeployError, PackageError, SSHError, ValueError) as e:
        _fail(e)


def check_page_options(operator: dict) -> None:
    """A page the daemon would refuse (off loopback without a token and TLS) is a usage error
    here, before the device is touched: not a unit that fails its health check and is rolled
    back. The message says how to make the certificate and what to add."""
    from .devices.unit import PageUnitError, page_arguments

    if operator.get("ui"):
        try:
            page_arguments(operator["ui"], operator.get("ui_token_file"),
                           operator.get("ui_cert_file"), operator.get("ui_key_file"))
        except PageUnitError as e:
            raise click.UsageError(str(e)) from None


@click.command(epilog=exit_codes.epilog())
@click.option("--host", required=True, metavar="[USER@]ADDR", help="The device.")
@prefix_option
@ssh_config_option
@ssh_option_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(host, prefix, ssh_config, ssh_options, as_json):
    """Show a device's release, model, daemon state and counters."""
    from .devices.deploy import DeployError, SSHError
    from .devices.deploy import status as remote_status
    from .devices.ssh import Remote

    try:
        remote = Remote(host, ssh_config, ssh_options)
        try:
            result = remote_status(remote, prefix, click.echo)
        finally:
            remote.close()
    except (DeployError, SSHError) as e:
        _fail(e)
    click.echo(json.dumps(result, indent=1) if as_json else format_status(host, result))


def format_status(host: str, status: dict) -> str:
    lines = [f"{host}: {status['prefix']}"]
    service = (f"systemd service {status['service']}" if status["systemd"]
               else "no running systemd (daemon started by hand, if at all)")
    lines.append(f"  daemon:   {service}")
    if status["metrics"] is None:
        lines.append(f"  counters: metrics page not reachable ({status['metrics_error']})")
    else:
        c = status["counters"]
        rejected = {k: v for k, v in c.get("records_rejected", {}).items() if v}
        alerts = {k: v for k, v in c.get("alerts", {}).items() if v}
        lines.append(f"  counters: {c.get('records', 0):,} records, "
                     f"{sum(rejected.values()):,} rejected {rejected or ''}, "
                     f"{sum(alerts.values()):,} alerts {alerts or ''}".replace("  ", " "))
    if status["systemd"] and not status["memory_cgroup"]:
        lines.append("  note:     the memory cgroup is off, so MemoryMax= is ignored")
    lines.append("  releases:")
    for release in reversed(status["releases"]):
        health = release["health"]
        verdict = ("healthy" if health and health["ok"] else
                   f"FAILED: {health['reason'][:100]}" if health else "not checked")
        lines.append(f"  {'*' if release['current'] else ' '} {release['id']}  "
                     f"{release['dataset']}  model {release['model_sha256'][:12]}  "
                     f"edge-ids {release['edge_ids_version']}  {verdict}")
    return "\n".join(lines)


@click.command(epilog=exit_codes.epilog())
@click.option("--host", required=True, metavar="[USER@]ADDR", help="The device.")
@prefix_option
@click.option("--to", "to", metavar="RELEASE", help="Release id (default: the newest healthy "
                                                    "one before the current).")
@click.option("--timeout", type=click.FloatRange(1), default=60, show_default=True,
              help="Seconds the health check waits for the daemon.")
@ssh_config_option
@ssh_option_option
def rollback(host, prefix, to, timeout, ssh_config, ssh_options):
    """Switch a device back to an earlier release and restart it."""
    from .devices.deploy import DeployError, SSHError
    from .devices.deploy import rollback as remote_rollback
    from .devices.ssh import Remote

    try:
        remote = Remote(host, ssh_config, ssh_options)
        try:
            result = remote_rollback(remote, prefix, to, timeout, lambda s: click.echo(f"  {s}"))
        finally:
            remote.close()
    except (DeployError, SSHError) as e:
        _fail(e)
    click.echo(f"{host}: current -> releases/{result['release']} (was {result['previous']})")
