"""`edge-ids run` (the daemon) and `edge-ids unit` (its systemd unit). Device side: numpy, LiteRT,
prometheus_client and the standard library only."""
from __future__ import annotations

import gzip
import logging
import sys
import zlib
from pathlib import Path

import click

from . import exit_codes
from .cli_operator import operator_options, operator_settings, unit_operator_options
from .cli_options import bundle_option, checked_by, device_option
from .exit_codes import BadInput, Failed

# What a damaged input raises while it is read (the file given is at fault, not the machine):
# a truncated or corrupt .gz, or a capture cut in the middle of a packet
DAMAGED_INPUT = (EOFError, zlib.error, gzip.BadGzipFile)


def _check_input(ctx, param, spec):
    """The --input spec is one we know, and a file: or pcap: file is there (exit 2 if not)."""
    kind, _, path = spec.partition(":")
    if spec != "-" and (not path or kind not in ("file", "follow", "unix", "argus", "pcap")):
        raise click.BadParameter(f"unknown input {spec!r}: use -, file:PATH, follow:PATH, "
                                 f"unix:PATH, argus:INTERFACE or pcap:FILE")
    if kind in ("file", "pcap") and (not Path(path).exists() or Path(path).is_dir()):
        raise click.BadParameter(f"{kind}:{path}: no such file")
    return spec


def _check_state_dir(ctx, param, path):
    """The state directory can be made and written (exit 2 if not): checked before anything
    starts, so that a wrong path loses nothing."""
    if path is None:
        return None
    from .edge_runtime.site.state import StateError, check_directory
    try:
        return check_directory(path)
    except StateError as e:
        raise click.BadParameter(str(e).removeprefix(f"--state-dir {path}: ")) from None


def _output_options(command):
    """What `run` and `capture` share: where alerts and metrics go, batching, logging."""
    options = [
        click.option("--alerts", default="-", show_default=True, metavar="DEST",
                     help="EVE JSON lines go here: a file (appended; reopened on SIGHUP, for "
                          "logrotate) or '-' for stdout."),
        click.option("--metrics", default=None, metavar="[HOST:]PORT", callback=checked_by("edge_runtime.outputs.metrics", "parse_address"),
                     help="Serve Prometheus metrics at http://HOST:PORT/metrics. A bare port "
                          "listens on 127.0.0.1 only; name another address (0.0.0.0:9108) to "
                          "expose them."),
        click.option("--emit", type=click.Choice(["both", "attacks", "incidents", "all"]),
                     default="both", show_default=True,
                     help="What to write: 'attacks' a line per flagged record (event_type "
                          "alert); 'incidents' one line when a device's trouble opens an "
                          "incident, its updates and its close, and one per new device "
                          "(event_type incident, new_device; needs a bundle of `edge-ids "
                          "learn`); 'both' (the two; with a bundle that knows no devices, the "
                          "same as attacks); 'all' a line for every record, and the incidents."),
        click.option("--home-net", "home_net", multiple=True, metavar="CIDR",
                     callback=checked_by("edge_runtime.site.devices", "parse_home_net"),
                     help="The protected networks whose addresses are devices (repeatable; "
                          "default: the bundle's, which learn stored: the private ranges "
                          "unless it was given others)."),
        click.option("--max-batch", type=click.IntRange(1, 65536), default=256,
                     show_default=True, help="Most records classified together."),
        click.option("--max-delay", type=click.FloatRange(0), default=0.005, show_default=True,
                     help="Longest a record waits for its batch to fill, in seconds."),
        click.option("--threads", type=click.IntRange(1), default=1, show_default=True,
                     help="Interpreter threads (one is fastest for these small models)."),
        click.option("--log-rejects", type=click.IntRange(0), default=60, show_default=True,
                     metavar="N", help="Log at most N rejected lines a minute (all are "
                                       "counted)."),
        click.option("--allowed-signers", type=click.Path(dir_okay=False, path_type=Path),
                     metavar="FILE", help="Trust only bundles signed by these keys (ssh-keygen's "
                     "allowed-signers format; `edge-ids sign`). Checked at start and on every "
                     "reload; a bundle signed by another key, changed after signing or not "
                     "signed at all is refused."),
        click.option("--require-signature/--allow-unsigned", default=None,
                     help="--allowed-signers already refuses unsigned bundles; --allow-unsigned "
                          "is the explicit opt-out that loads them anyway (a signed bundle is "
                          "still checked). --require-signature needs --allowed-signers."),
        click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
                     callback=_check_state_dir, metavar="DIR",
                     help="Keep what the device watch learns here (devices and their normals, "
                          "incident ids, open incidents, the operator's decisions): written "
                          "atomically every minute and at stop, loaded at start, so a restart, "
                          "a deploy or a power cut forgets nothing older than a minute and "
                          "announces no device twice. With it, SIGTERM and the end of the input "
                          "keep open incidents for the next start instead of closing them. "
                          "One daemon a directory (the unit uses /var/lib/edge-ids). `edge-ids "
                          "site` reads it and takes the operator's decisions to the daemon."),
        click.option("--frozen-normal", is_flag=True,
                     help="Learn nothing on the device: every device keeps the bundle's normal "
                          "(new devices stay on the site's threshold), as before edge-ids "
                          "learned on the device."),
        click.option("-v", "--verbose", is_flag=True, help="Debug logging."),
    ]
    command = operator_options(command)  # listed after these in --help
    for option in reversed(options):
        command = option(command)
    return command


def _serve(bundle, input_, alerts, metrics, emit, home_net, max_batch, max_delay, threads,
           log_rejects, allowed_signers, require_signature, verbose, state_dir=None,
           frozen_normal=False, from_start=False, flow_report=5, record=None, **operator):
    """Run the daemon; exit as the table says. When the input ends by itself (file:, stdin,
    pcap:) the status tells what became of its records, as classify's does; stopped by SIGTERM
    or Ctrl-C, it is 0 (systemd counts anything else as a failure)."""
    from .edge_runtime.model.bundle import BundleError
    from .edge_runtime.daemon import Daemon, DaemonOptions
    from .edge_runtime.ingest.pcapfile import BadCapture
    from .edge_runtime.model.signature import TrustPolicy

    if require_signature and allowed_signers is None:
        raise click.UsageError("--require-signature needs --allowed-signers FILE")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="edge-ids: %(levelname)s %(message)s")
    options = DaemonOptions(bundle=bundle, input=input_, alerts=alerts, metrics=metrics,
                            emit_all=emit == "all", flow_alerts=emit != "incidents",
                            incidents=emit != "attacks", home_net=home_net,
                            max_batch=max_batch, max_delay=max_delay,
                            threads=threads, follow_from_start=from_start,
                            rejects_logged_per_minute=log_rejects,
                            flow_report_seconds=flow_report,
                            trust=TrustPolicy(allowed_signers, require_signature is False),
                            state_dir=state_dir, adapt=not frozen_normal,
                            **operator_settings(**operator), **(record or {}))
    if allowed_signers is not None and require_signature is False:
        logging.getLogger("edge_ids").warning(
            "--allow-unsigned: unsigned bundles load although %s lists trusted keys",
            allowed_signers)
    daemon = Daemon(options)
    try:
        daemon.run()
    except (BundleError, BadCapture) as e:  # the files given: the bundle, or a pcap: input
        raise BadInput(f"cannot start: {e}") from None
    except (OSError, ValueError) as e:
        raise Failed(f"cannot start: {e}") from None
    from .edge_runtime.ingest.records import TruncatedInput

    error, records = daemon.reader_error, daemon.counts["records"]
    if isinstance(error, (*DAMAGED_INPUT, TruncatedInput)):
        raise BadInput(f"{input_} is truncated or corrupt ({error}); the {records:,} records "
                       f"before it were classified")
    if error is not None:
        raise Failed(f"reading {input_} failed: {error}")
    if daemon.counts["rejected"] and not daemon.stopped_by_signal:
        sys.exit(exit_codes.REJECTED)


@click.command(epilog=exit_codes.epilog(exit_codes.REJECTED),
               short_help="The daemon: raw records in, EVE alerts and metrics out.")
@bundle_option(help="The model: a bundle folder or .tar.gz (model.tflite, features.json, "
               "manifest.json). SIGHUP loads it again from the same path.")
@click.option("--input", "input_", default="-", show_default=True, metavar="SRC",
              callback=_check_input,
              help="Where raw records come from: '-' (stdin), file:PATH (read once, plain or "
                   ".gz), follow:PATH (a growing, rotated file, like tail -F), unix:PATH (a "
                   "stream socket that several writers may connect to), argus:INTERFACE or "
                   "pcap:FILE (flows from packets, as `edge-ids capture`).")
@_output_options
@click.option("--from-start", is_flag=True,
              help="With follow:PATH, read the file from its start instead of its end.")
def run(bundle, input_, from_start, **outputs):
    """Run the detector as a daemon: raw records in, EVE alerts and metrics out.

    Records are raw rows in the bundle's schema: CSV in its column order, or JSON objects keyed
    by column name, one per line. A bad line (wrong field count, not a number, NaN/inf, empty,
    over 64 KiB, invalid UTF-8, half-written) is rejected with a reason, counted in
    edge_ids_records_rejected_total{reason} and logged at a bounded rate; the daemon never
    stops for it. An unseen category is classified (all-zero one-hot) and counted.

    Signals: SIGHUP reopens the alert file, reads the webhook's token file again and reloads
    the bundle (verified first; a broken one is refused and the old model keeps serving).
    SIGTERM or Ctrl-C stops reading, classifies every line already accepted, and exits 0.
    Under systemd (Type=notify) it reports READY, STATUS and WATCHDOG. When the input ends
    (file:, stdin), it exits as classify does: 0, or 3 if records were rejected, or 5 if the
    file is truncated or corrupt.

    \b
    Example:
      edge-ids run --bundle out/bundle --input follow:/var/log/flows.csv \\
          --alerts /var/log/edge-ids/alerts.json --metrics 127.0.0.1:9108
    """
    _serve(bundle, input_, from_start=from_start, **outputs)


@click.command(epilog=exit_codes.epilog(exit_codes.REJECTED),
               short_help="The daemon on live packets: Argus flows in, alerts out.")
@click.option("--bundle", type=click.Path(exists=True, path_type=Path),
              help="A bundle of Argus flow columns (trained on wustl-ehms-net, or made by "
                   "`edge-ids learn`). Optional with --record: then flows are only recorded.")
@click.option("--interface", metavar="IF", help="Capture live on this network interface.")
@click.option("--pcap", type=click.Path(exists=True, dir_okay=False),
              help="Read packets from this capture file instead (exits at its end).")
@click.option("--flow-report", type=click.IntRange(1), default=5, show_default=True,
              metavar="SECONDS", help="Argus reports a flow that lasts longer this often.")
@click.option("--record", metavar="FILE", type=click.Path(dir_okay=False),
              help="Also write every flow to FILE (CSV, a header line first), for `edge-ids "
                   "learn`: a learning period. Rotated to FILE.1 ... at --record-max-mb.")
@click.option("--record-max-mb", type=click.IntRange(1), default=64, show_default=True,
              metavar="MB", help="Size at which the recording moves on to a new file.")
@click.option("--record-keep", type=click.IntRange(0), default=4, show_default=True,
              metavar="N", help="Rotated recordings kept (FILE.1 ... FILE.N); older ones are "
                                "deleted, so a recording never takes more than (N+1) x MB.")
@click.option("--print-config", is_flag=True,
              help="Print the argus.conf and the ra fields for this bundle, and exit.")
@_output_options
def capture(bundle, interface, pcap, flow_report, record, record_max_mb, record_keep,
            print_config, **outputs):
    """Classify live traffic: packets -> Argus flows -> the detector -> EVE alerts.

    Starts `argus` with a configuration that generates every column the bundle reads
    (jitter, inter-packet times, packet sizes, MACs, loss), pipes it through `ra` with the
    bundle's columns, and serves them like `edge-ids run` (same alerts, metrics, signals).
    A field Argus leaves empty for a flow is filled by the bundle's feature spec
    (raw.missing), the way the training data has it.

    Needs Debian's argus-server and argus-client, and CAP_NET_RAW + CAP_NET_ADMIN for
    --interface (root, or the capture unit: edge-ids deploy --capture IF).

    A learning period for `edge-ids learn` (benign traffic only: whatever happens while it
    records is learned as normal) records flows without a bundle:

    \b
      edge-ids capture --interface eth0 --record /var/lib/edge-ids/flows.csv

    \b
    Example:
      edge-ids capture --interface eth0 --bundle out/ehms-net/bundle \\
          --alerts /var/log/edge-ids/alerts.json --metrics 127.0.0.1:9108
    """
    if bundle is None and (print_config or not record):
        raise click.UsageError("give --bundle B (or only --record FILE, to record flows "
                               "without classifying them)")
    if not print_config and (interface is None) == (pcap is None):
        raise click.UsageError("give --interface IF or --pcap FILE")
    source = f"argus:{interface}" if interface else f"pcap:{pcap}"
    recording = {"record": record, "record_max_bytes": record_max_mb * 2**20,
                 "record_keep": record_keep} if record else None
    if bundle is None:
        _record_only(source, recording, flow_report, outputs["verbose"])
    from .cli_options import require_bundle
    from .edge_runtime.ingest.argus import CaptureError, argus_config, ra_fields
    from .edge_runtime.ingest.records import RawSchema

    schema = RawSchema.from_spec(require_bundle(bundle).raw)
    try:
        fields = ra_fields(schema)[0]  # a model of columns Argus cannot measure: exit 5
    except CaptureError as e:
        raise BadInput(f"{bundle}: {e}") from None
    if print_config:
        click.echo(argus_config(schema, flow_report) + "# ra -r - -c , -n -L -1 -s "
                   + " ".join(fields) + " - not man")
        return
    _serve(bundle, source, flow_report=flow_report, record=recording, **outputs)


def _record_only(source: str, recording: dict, flow_report: int, verbose: bool) -> None:
    from .edge_runtime.ingest.argus import CaptureError
    from .edge_runtime.ingest.pcapfile import BadCapture
    from .edge_runtime.ingest.records import TruncatedInput
    from .edge_runtime.ingest.recorder import record_only
    from .edge_runtime.systemd import Notifier

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="edge-ids: %(levelname)s %(message)s")
    try:
        code = record_only(source, recording["record"], recording["record_max_bytes"],
                           recording["record_keep"], flow_report, Notifier(),
                           log=logging.getLogger("edge_ids.capture").info)
    except BadCapture as e:  # the file given is no capture (as the alerts path says it)
        raise BadInput(f"cannot start: {e}") from None
    except TruncatedInput as e:
        raise BadInput(str(e)) from None
    except (CaptureError, OSError, ValueError) as e:
        raise Failed(f"cannot start: {e}") from None
    sys.exit(code)


@click.command(epilog=exit_codes.epilog(),
               short_help="Print the hardened systemd unit for a device.")
@device_option()
@click.option("--prefix", default="/opt/edge-ids", show_default=True,
              help="Install prefix on the device (PREFIX/current/venv, PREFIX/current/bundle).")
@click.option("--input", "input_", default="unix:/run/edge-ids/records.sock", show_default=True,
              metavar="SRC", help="The daemon's --input.")
@click.option("--metrics", default="127.0.0.1:9108", show_default=True, metavar="HOST:PORT",
              help="The daemon's --metrics. On loopback, the unit also denies all other IP "
                   "traffic (IPAddressDeny=any).")
@click.option("--alerts", default="/var/log/edge-ids/alerts.json", show_default=True,
              metavar="FILE", help="The daemon's --alerts (outside /var/log/edge-ids the unit "
                                   "gets ReadWritePaths= for its folder).")
@click.option("--capture", metavar="IF", help="The capture variant: `edge-ids capture` on this "
              "interface instead of --input, with CAP_NET_RAW/CAP_NET_ADMIN for argus.")
@click.option("--allowed-signers", metavar="PATH", help="The daemon's --allowed-signers: the "
              "trusted keys' file, as a path on the device.")
@click.option("--allow-unsigned", is_flag=True, help="The daemon's --allow-unsigned: the "
              "explicit opt-out that loads unsigned bundles despite --allowed-signers.")
@click.option("-o", "--output", type=click.File("w"), default="-",
              help="Write the unit here (default stdout).")
@unit_operator_options
def unit(device, prefix, input_, metrics, alerts, capture, allowed_signers, allow_unsigned,
         output, **operator):
    """Print the systemd unit for a device (Type=notify, watchdog, hardened).

    \b
    Install it as /etc/systemd/system/edge-ids.service, then:
      systemctl daemon-reload && systemctl enable --now edge-ids
      systemctl reload edge-ids   # reopen alerts.json, load the bundle again

    MemoryMax= needs the memory cgroup, which Raspberry Pi kernels disable by default: add
    cgroup_enable=memory to /boot/firmware/cmdline.txt, or the limit is silently ignored.
    """
    from .devices.profiles import load_profile
    from .devices.unit import render_unit

    try:
        output.write(render_unit(load_profile(device), prefix, input_, metrics, alerts, capture,
                                 allowed_signers, allow_unsigned, **operator))
    except ValueError as e:
        raise click.UsageError(str(e)) from None


@click.command(epilog=exit_codes.epilog())
def devices():
    """List the device profiles (`--device` of unit, deploy and bench)."""
    from .devices.profiles import load_profile, profile_names

    rows = [("PROFILE", "ARCH", "CPU", "CORES", "MEMORY", "PYTHON", "DESCRIPTION")]
    for name in profile_names():
        p = load_profile(name)
        rows.append((name, p.architecture, p.cpu, str(p.cores), f"{p.memory_mb} MB",
                     ", ".join(p.python), p.description))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(cell.rjust(w) if i in (3, 4) else cell.ljust(w)
                             for i, (cell, w) in enumerate(zip(row, widths))) + "  " + row[-1])
