"""`edge-ids learn`: a site's normal traffic -> an anomaly-only or hybrid bundle (host only)."""
from __future__ import annotations

import math
from pathlib import Path

import click

from . import exit_codes
from .cli_options import checked_by
from .exit_codes import BadInput, Failed


def _check_incident_budget(ctx, param, value):
    if not (value > 0 and math.isfinite(value)):  # (inf: the threshold search never ends)
        raise click.BadParameter(f"{value:g} is not a budget: give the number of false "
                                 f"incidents per device per week you accept, > 0 (e.g. 1)")
    return value


@click.command(epilog=exit_codes.epilog(),
               short_help="Learn your network's normal traffic: an anomaly model.")
@click.option("--pcap", "pcaps", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Benign traffic of the network to protect, as a capture file; turned into "
                   "flows by argus | ra exactly as `edge-ids capture` does. Repeatable.")
@click.option("--flows", "flow_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Flow records recorded on the device with `edge-ids capture --record` "
                   "(plain or .gz; give the rotated files too). Repeatable.")
@click.option("--classifier", type=click.Path(exists=True, path_type=Path),
              help="Make a hybrid with this classifier bundle: its attack classes first, then "
                   "Unknown for what the anomaly model flags. Its raw layout is used. Without "
                   "it: an anomaly-only bundle over the Argus flow columns.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: bundle/, learn.json and scores.png (validation scores and the "
                   "threshold) are written there, only if learning succeeds.")
@click.option("--max-fpr", type=click.FloatRange(0, 0.5, min_open=True), default=0.01,
              show_default=True, metavar="RATE",
              help="False-alarm budget: the share of benign flows the detector may flag, in "
                   "(0, 0.5]. The threshold is set so that exactly this share of held-out "
                   "validation flows is flagged (a hybrid's classifier may use half of it).")
@click.option("--val-fraction", type=click.FloatRange(0.05, 0.5), default=0.2,
              show_default=True, help="Share of the benign flows held out to set the "
                                      "thresholds: the last part of the learning period by "
                                      "time (never trained on; the same for every seed).")
@click.option("--max-incidents-per-week", type=float, default=1.0, show_default=True,
              metavar="N", callback=_check_incident_budget,
              help="False-incident budget per device and week, > 0: the incident threshold is "
                   "set so that the held-out tail of the learning period, replayed through the "
                   "daemon's own incident code, opens at most this many incidents per device "
                   "per week (extrapolated, with a warning, when the tail is too short to "
                   "measure it).")
@click.option("--home-net", "home_net", multiple=True, metavar="CIDR",
              callback=checked_by("edge_runtime.site.devices", "parse_home_net"),
              help="The protected networks: a flow belongs to its endpoints inside them, the "
                   "devices (repeatable; default the private ranges 10/8, 172.16/12, "
                   "192.168/16, fc00::/7, fe80::/10). Stored in the bundle.")
@click.option("--epochs", type=click.IntRange(1), default=200, show_default=True,
              help="At most this many autoencoder epochs (early stopping ends sooner).")
@click.option("--flow-report", type=click.IntRange(1), default=5, show_default=True,
              metavar="SECONDS", help="With --pcap: argus reports a long flow this often "
                                      "(use what the device's capture uses).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the split, the weights and the shuffling: the same seed gives the "
                   "same bundle.")
@click.option("--prior-state", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="FILE", help="A daemon's state file (its --state-dir's state.json.gz, "
              "copied from the device): what its devices learned on the device. Their services "
              "join what this period shows, a device too quiet here for its own threshold keeps "
              "the one it learned there (as a multiple of the site's), and a device absent "
              "from this period stays known: a re-learn does not forget them.")
def learn(pcaps, flow_files, classifier, out, max_fpr, val_fraction, max_incidents_per_week,
          home_net, epochs, flow_report, seed, prior_state):
    """Learn your network's normal traffic, to flag what does not fit it.

    A public dataset is not your network: a classifier trained on one testbed flags a third of
    another site's benign flows and misses its attacks. This trains a small autoencoder on your
    own benign flows, sets its threshold from the false-alarm budget on flows it never saw, and
    writes an int8 bundle that `classify`, `run`, `capture` and `deploy` take like any other.

    Each device of the learning period (an address inside --home-net, by its MAC) gets its
    own threshold when it has enough held-out flows, else the site's; the daemon then speaks
    in incidents per device (one line when a device's evidence crosses the incident
    threshold, --max-incidents-per-week), names a device it never saw once, and keeps the
    per-flow alerts beside them.

    The learning period must be clean: whatever is in it (a compromised camera, a scan) is
    learned as normal and never flagged. It needs flow times, and at least
    ceil(5 / max-fpr / val-fraction) flows: 2,500 at the defaults.

    \b
    Workflow:
      # on the Pi, for days:
      edge-ids capture --interface eth0 --record /var/lib/edge-ids/flows.csv
      # to the host, then learn and deploy:
      scp 'pi@sensor-1:/var/lib/edge-ids/flows.csv*' site/
      edge-ids learn --flows site/flows.csv --flows site/flows.csv.1 \\
          --out out/site
      edge-ids deploy --device pi4 --host pi@sensor-1 \\
          --bundle out/site/bundle --capture eth0
      # later, again, keeping what the devices learned on the device:
      scp pi@sensor-1:/var/lib/edge-ids/state.json.gz site/
      edge-ids learn --flows site/flows.csv \\
          --prior-state site/state.json.gz --out out/site2
    """
    from .edge_runtime.ingest.argus import CaptureError
    from .edge_runtime.model.bundle import BundleError
    from .flows import FlowError
    from .learn import LearnError, LearnOptions, run_learn

    if not pcaps and not flow_files:
        raise click.UsageError("give the benign traffic: --pcap FILE and/or --flows FILE")
    if classifier is not None:
        from .cli_options import require_bundle
        require_bundle(classifier)  # checked before TensorFlow loads
    priors = _priors(prior_state) if prior_state else None
    options = LearnOptions(out=out, pcaps=pcaps, flow_files=flow_files, classifier=classifier,
                           max_fpr=max_fpr, seed=seed, val_fraction=val_fraction,
                           epochs=epochs, flow_report_seconds=flow_report,
                           max_incidents_per_week=max_incidents_per_week, home_net=home_net,
                           priors=priors)
    try:
        run_learn(options, echo=click.echo)
    except (LearnError, FlowError, BundleError, ValueError) as e:
        # the files given do not suffice: too few flows, a budget they cannot set, a layout
        raise BadInput(str(e)) from None
    except CaptureError as e:
        raise Failed(str(e)) from None


def _priors(path: Path) -> dict:
    """The devices' normals learned on the device, from a state file (exit 5 if it is not
    one), read before TensorFlow loads."""
    import gzip
    import json

    from .train.incident_budget import prior_normals

    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            state = json.load(f)
        priors = prior_normals(state)
    except (OSError, EOFError, ValueError, KeyError, TypeError) as e:
        raise BadInput(f"--prior-state {path}: not a state file of edge-ids' daemon ({e})") \
            from None
    click.echo(f"--prior-state {path}: {len(priors)} devices with a normal learned on the "
               f"device")
    return priors
