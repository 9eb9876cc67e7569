"""The `edge-ids` command. Host-only libraries are imported inside the commands that need them,
so the device install (numpy, LiteRT, click) runs `classify` and `--help` without TensorFlow, and
every command checks its arguments and files before it imports anything heavy."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__, exit_codes
from .cli_options import (BUNDLE_HELP, alpha_option, bundle_option, data_dir_option,
                          parse_alpha, parse_ints, require_bundle, require_data, seed_option,
                          val_fraction_option)
from .exit_codes import BadInput
from .train.datasets import DataError
from .train.datasets import nsl_kdd

# Help is wrapped at one width for every command, whatever the terminal (hand-made blocks
# below fit in it; tests/test_cli.py checks every line).
HELP_WIDTH = 80
MAIN_HELP = f"""Intrusion-detection models from the research notebook to a Raspberry Pi.

\b
On the host (pip install 'edge-ids[host]'):
  edge-ids pipeline --data-dir DIR --out OUT
      train, quantize to int8, write OUT/bundle
  edge-ids train --dataset D --model M --out OUT
      one model, loss and resampling run
  edge-ids reproduce khanam2022|dina2023
      a paper's result table over 3 seeds
  edge-ids compress --model OUT --sparsity 0.5 --max-f1-drop 1 --out B
      prune + int8, gated on the macro-F1 loss
  edge-ids learn --pcap benign.pcap [--classifier B] --out OUT
      learn your network's normal: an anomaly model (a hybrid with B)
  edge-ids deploy --device pi4 --host pi@sensor-1 --bundle B
      install it on the device as a daemon, over ssh
  edge-ids bench --bundle B [--host pi@sensor-1]
      latency, memory, size and accuracy loss
  edge-ids sign --key KEY B
      sign a bundle (the devices trust your key)
  edge-ids fleet deploy --inventory hosts.ini --bundle B
      many devices through Ansible, in batches

\b
On the device (pip install the wheel that deploy carries there):
  edge-ids classify --bundle B FILE
      one JSON line per raw record
  edge-ids run --bundle B --input SRC --alerts DEST [--metrics 127.0.0.1:9108]
      the daemon: EVE alerts, metrics, systemd
  edge-ids capture --interface eth0 --bundle B
      the daemon on live packets (Argus flows)
  edge-ids unit --device pi4
      its systemd unit, from a device profile
  edge-ids devices
      the device profiles

B is {BUNDLE_HELP}.

\b
Exit status (every command):
{exit_codes.table_text()}
"""


@click.group(help=MAIN_HELP, epilog="Each command: edge-ids COMMAND --help.",
             context_settings={"help_option_names": ["-h", "--help"],
                               "max_content_width": HELP_WIDTH, "terminal_width": HELP_WIDTH})
@click.version_option(__version__, prog_name="edge-ids")
def main():
    pass


@main.command(epilog=exit_codes.epilog())
@click.option("--dataset", type=click.Choice([nsl_kdd.NAME]), default=nsl_kdd.NAME,
              show_default=True, help="Which dataset to train on.")
@data_dir_option
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (the files it gets are listed above).")
@click.option("--train-set", type=click.Choice(nsl_kdd.TRAIN_SETS), default="KDDTrain+",
              show_default=True, help="Training file (the CFLVAE paper uses the 20 % subset).")
@click.option("-k", "--features", "k", type=click.IntRange(1), default=87, show_default=True,
              help="Model inputs kept by mutual-information ranking (the CFLVAE paper: 87).")
@click.option("--zero-ratio", type=click.FloatRange(0, 1), default=0.9, show_default=True,
              help="Drop features with more than this share of zeros.")
@click.option("--zero-scope", type=click.Choice(["numeric", "all", "none"]), default="numeric",
              show_default=True, help="Which features the zero-ratio filter looks at "
              "(the paper: the numeric ones; 'none' keeps the R2L/U2R content features).")
@click.option("--mi-sample", type=click.IntRange(1), default=None,
              help="Estimate mutual information on this many random training rows "
                   "(default: all; about 30 s on KDDTrain+).")
@click.option("--hidden", default="50,30,20", show_default=True,
              help="Hidden layer sizes of the FNN, comma-separated.")
@click.option("--loss", type=click.Choice(["focal", "ce"]), default="focal", show_default=True,
              help="Focal loss or plain cross-entropy.")
@click.option("--gamma", type=click.FloatRange(0), default=2.0, show_default=True,
              help="Focal loss focusing parameter.")
@alpha_option
@click.option("--epochs", type=click.IntRange(1), default=100, show_default=True,
              help="At most this many epochs; early stopping on validation loss ends sooner.")
@click.option("--patience", type=click.IntRange(1), default=5, show_default=True,
              help="Epochs without validation improvement before stopping.")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True,
              help="Training rows per gradient step.")
@click.option("--learning-rate", type=click.FloatRange(0, min_open=True), default=0.001,
              show_default=True, help="Adam learning rate. Dina et al. use 0.01; 0.001 gave a "
              "higher validation accuracy on all of 3 seeds and smaller int8 loss.")
@val_fraction_option
@click.option("--calibration-rows", type=click.IntRange(1), default=1000, show_default=True,
              help="Training rows that calibrate the int8 activation ranges.")
@seed_option
def pipeline(dataset, data_dir, out, train_set, k, zero_ratio, zero_scope, mi_sample, hidden,
             loss, gamma, alpha, epochs, patience, batch_size, learning_rate, val_fraction,
             calibration_rows, seed):
    """Raw dataset files to an int8 bundle, checked on the edge runtime.

    Loads the official files, fits the feature spec on a training split, trains the focal-loss
    FNN with early stopping on a validation split (never the test files), evaluates it on
    KDDTest+ and KDDTest-21, converts it to full-integer int8 TFLite, writes the bundle and
    evaluates it again through the edge runtime from raw records.

    \b
    Writes into OUT:
      bundle/        model.tflite, features.json, manifest.json: what ships
      model.keras    the float model (what `edge-ids compress` and `bench` read)
      features.json  its feature spec
      training.json  settings, training history and test metrics
      summary.md     the metrics table printed at the end
    """
    options = dict(
        data_dir=data_dir, out=out, train_set=train_set, k=k, zero_ratio=zero_ratio,
        zero_scope=zero_scope, mi_sample=mi_sample, hidden=parse_ints(hidden, "--hidden"),
        loss=loss, gamma=gamma, alpha=parse_alpha(alpha, dataset) or 1.0, epochs=epochs,
        patience=patience, batch_size=batch_size, learning_rate=learning_rate,
        val_fraction=val_fraction, calibration_rows=calibration_rows, seed=seed)
    require_data(dataset, data_dir, train_set)
    from .pipeline import PipelineOptions, run_pipeline

    try:
        run_pipeline(PipelineOptions(**options), echo=click.echo)
    except DataError as e:
        raise BadInput(str(e)) from None


@main.command(epilog=exit_codes.epilog(exit_codes.REJECTED))
@bundle_option()
@click.argument("records", default="-", metavar="[FILE|-]",
                type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("-o", "--output", type=click.File("w"), default="-",
              help="Where the JSON lines go (default stdout).")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True,
              help="Interpreter threads (one is fastest for these small models).")
@click.option("--batch-size", type=click.IntRange(1), default=1024, show_default=True,
              help="Records read and classified at a time.")
@click.option("--log-rejects", type=click.IntRange(0), default=10, show_default=True,
              metavar="N", help="Name at most N rejected records on stderr (all are counted; "
                                "the summary says how many were not named).")
def classify(bundle, records, output, threads, batch_size, log_rejects):
    """Classify raw records with a bundle: one JSON line per record.

    FILE holds records in the dataset's own CSV layout (for NSL-KDD the 41 features, optionally
    followed by label and difficulty), plain or .gz; '-' or nothing reads stdin. Each output line
    is {"record": line number, "verdict": ..., "class": name, "score": probability} for a
    classifier; a bundle with an anomaly model adds "anomaly_score", and its verdict is
    "Unknown" when the classifier names no attack but the score is over the bundle's threshold.
    A bad record is named on stderr and skipped (exit 3); every good record is still
    classified. A truncated or corrupt .gz is classified up to the damage, then reported
    (exit 5).
    """
    from .edge_runtime.model.classify import classify_stream
    from .edge_runtime.model.detector import Detector
    from .edge_runtime.ingest.records import open_input

    detector = Detector(require_bundle(bundle), num_threads=threads)
    try:
        stream = open_input(records)
    except OSError as e:
        raise BadInput(f"{records}: {e.strerror or e}") from None
    with stream:
        summary = classify_stream(detector, stream, output, sys.stderr, chunk_size=batch_size,
                                  name_rejects=log_rejects)
    output.flush()
    classes = ", ".join(f"{c} {n:,}" for c, n in sorted(summary.by_class.items()))
    click.echo(f"classified {plural(summary.classified, 'record')} ({classes or 'none'})",
               err=True)
    unseen = {c: n for c, n in summary.unknown.items() if n}
    if unseen:
        click.echo("unseen categories (classified with an all-zero one-hot): "
                   + ", ".join(f"{c} {n:,}" for c, n in unseen.items()), err=True)
    rejected = sum(summary.rejected.values())
    if rejected:
        click.echo(f"rejected {plural(rejected, 'record')}: "
                   + ", ".join(f"{r} {n:,}" for r, n in summary.rejected.items()), err=True)
        if rejected > summary.named:
            click.echo(f"named {summary.named:,} of them above; --log-rejects {rejected} names "
                       f"them all", err=True)
    if summary.input_error:
        raise BadInput(f"{records} is {summary.input_error}; the "
                       f"{plural(summary.classified, 'record')} before it were classified")
    if rejected:
        sys.exit(exit_codes.REJECTED)


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


from .cli_compress import compress  # noqa: E402  (registered on the group here)
from .cli_research import reproduce, train  # noqa: E402

main.add_command(train)
main.add_command(reproduce)
main.add_command(compress)

from .cli_run import capture, devices, run, unit  # noqa: E402

main.add_command(run)
main.add_command(capture)
main.add_command(unit)
main.add_command(devices)

from .cli_deploy import deploy, rollback, status  # noqa: E402

main.add_command(deploy)
main.add_command(status)
main.add_command(rollback)

from .cli_bench import bench  # noqa: E402

main.add_command(bench)

from .cli_learn import learn  # noqa: E402

main.add_command(learn)

from .cli_sign import rotate_keys, sign, verify  # noqa: E402

main.add_command(sign)
main.add_command(verify)
main.add_command(rotate_keys)

from .cli_fleet import fleet  # noqa: E402

main.add_command(fleet)

from .cli_site import site  # noqa: E402

main.add_command(site)
