"""The `edge-ids` command. Host-only libraries are imported inside the commands that need them,
so the device install (numpy, LiteRT, click) runs `classify` and `--help` without TensorFlow."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .train.datasets import DATA_DIR_ENV, DataError
from .train.datasets import nsl_kdd
from .edge_runtime.bundle import BundleError

EXIT_SOME_REJECTED = 3


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edge-ids")
def main():
    """Intrusion-detection models from the research notebook to a Raspberry Pi.

    \b
    On the host (pip install 'edge-ids[host]'):
      edge-ids pipeline --data-dir DIR --out OUT   train, quantize to int8, write OUT/bundle
      edge-ids train --dataset D --model M ...     one model/loss/resampling run
      edge-ids reproduce khanam2022|dina2023       a paper's result table over 3 seeds
      edge-ids compress --model OUT --sparsity 0.5 --max-f1-drop 1 --out B
                                                   prune + int8, gated on the macro-F1 loss
      edge-ids learn --pcap benign.pcap [--classifier B] --out OUT
                                                   learn your network's normal: an anomaly
                                                   model (hybrid with a classifier)
      edge-ids deploy --device pi4 --host pi@sensor-1 --bundle B
                                                   install it on the device as a daemon, over ssh
      edge-ids bench --bundle B [--host pi@sensor-1]
                                                   latency, memory, size and accuracy loss
    On the device (pip install edge-ids):
      edge-ids classify --bundle OUT/bundle FILE   one JSON line per raw record
      edge-ids run --bundle B --input SRC --alerts DEST [--metrics 127.0.0.1:9108]
                                                   the daemon: EVE alerts, metrics, systemd
      edge-ids capture --interface eth0 --bundle B the daemon on live packets (Argus flows)
      edge-ids unit --device pi4                   its systemd unit, from a device profile
      edge-ids devices                             the device profiles
    """


@main.command()
@click.option("--dataset", type=click.Choice([nsl_kdd.NAME]), default=nsl_kdd.NAME,
              show_default=True, help="Which dataset to train on.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar=DATA_DIR_ENV,
              help=f"Folder with the dataset files (or with a nsl-kdd/ folder of them); "
                   f"default ${DATA_DIR_ENV}.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: bundle/, model.keras and summary.md are written there.")
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
@click.option("--alpha", default="1.0", show_default=True,
              help="Focal loss weight: one number, or one per class (Normal,DoS,Probe,R2L,U2R).")
@click.option("--epochs", type=click.IntRange(1), default=100, show_default=True,
              help="At most this many epochs; early stopping on validation loss ends sooner.")
@click.option("--patience", type=click.IntRange(1), default=5, show_default=True,
              help="Epochs without validation improvement before stopping.")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True)
@click.option("--learning-rate", type=click.FloatRange(0, min_open=True), default=0.001,
              show_default=True, help="Adam learning rate. Dina et al. use 0.01; 0.001 gave a "
              "higher validation accuracy on all of 3 seeds and smaller int8 loss.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.1, show_default=True,
              help="Stratified share of the training file held out for validation.")
@click.option("--calibration-rows", type=click.IntRange(1), default=1000, show_default=True,
              help="Training rows that calibrate the int8 activation ranges.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the split, the weights, shuffling and the MI estimate.")
def pipeline(dataset, data_dir, out, train_set, k, zero_ratio, zero_scope, mi_sample, hidden,
             loss, gamma, alpha, epochs, patience, batch_size, learning_rate, val_fraction,
             calibration_rows, seed):
    """Raw dataset files to an int8 bundle, checked on the edge runtime.

    Loads the official files, fits the feature spec on a training split, trains the focal-loss
    FNN with early stopping on a validation split (never the test files), evaluates it on
    KDDTest+ and KDDTest-21, converts it to full-integer int8 TFLite, writes OUT/bundle and
    evaluates the bundle again through the edge runtime from raw records.
    """
    from .pipeline import PipelineOptions, run_pipeline

    options = PipelineOptions(
        data_dir=data_dir, out=out, train_set=train_set, k=k, zero_ratio=zero_ratio,
        zero_scope=zero_scope, mi_sample=mi_sample, hidden=_ints(hidden, "--hidden"),
        loss=loss, gamma=gamma, alpha=_alpha(alpha, len(nsl_kdd.CLASSES)), epochs=epochs,
        patience=patience, batch_size=batch_size, learning_rate=learning_rate,
        val_fraction=val_fraction, calibration_rows=calibration_rows, seed=seed)
    try:
        run_pipeline(options, echo=click.echo)
    except (DataError, BundleError, ValueError) as e:
        raise click.ClickException(str(e)) from None


@main.command()
@click.option("--bundle", required=True, type=click.Path(exists=True, path_type=Path),
              help="Bundle directory or .tar.gz (model.tflite, features.json, manifest.json).")
@click.argument("records", default="-", metavar="[FILE|-]")
@click.option("-o", "--output", type=click.File("w"), default="-",
              help="Where the JSON lines go (default stdout).")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True,
              help="Interpreter threads (one is fastest for these small models).")
@click.option("--batch-size", type=click.IntRange(1), default=1024, show_default=True,
              help="Records read and classified at a time.")
def classify(bundle, records, output, threads, batch_size):
    """Classify raw records with a bundle: one JSON line per record.

    FILE holds records in the dataset's own CSV layout (for NSL-KDD the 41 features, optionally
    followed by label and difficulty), plain or .gz; '-' or nothing reads stdin. Each output line
    is {"record": line number, "verdict": ..., "class": name, "score": probability} for a
    classifier; a bundle with an anomaly model adds "anomaly_score", and its verdict is
    "Unknown" when the classifier names no attack but the score is over the bundle's threshold.
    A bad record is reported on stderr and skipped; the exit status is then 3 (0 when every
    record was classified).
    """
    from .edge_runtime.bundle import load_bundle
    from .edge_runtime.classify import classify_stream
    from .edge_runtime.detector import Detector
    from .edge_runtime.records import open_input

    try:
        detector = Detector(load_bundle(bundle), num_threads=threads)
        stream = open_input(records)
    except (BundleError, OSError) as e:
        raise click.ClickException(str(e)) from None
    with stream:
        summary = classify_stream(detector, stream, output, sys.stderr, chunk_size=batch_size)
    output.flush()
    classes = ", ".join(f"{c} {n:,}" for c, n in sorted(summary.by_class.items()))
    click.echo(f"classified {summary.classified:,} records ({classes or 'none'})", err=True)
    unseen = {c: n for c, n in summary.unknown.items() if n}
    if unseen:
        click.echo("unseen categories (classified with an all-zero one-hot): "
                   + ", ".join(f"{c} {n:,}" for c, n in unseen.items()), err=True)
    if summary.rejected:
        click.echo(f"rejected {sum(summary.rejected.values()):,} records: "
                   + ", ".join(f"{r} {n:,}" for r, n in summary.rejected.items()), err=True)
        sys.exit(EXIT_SOME_REJECTED)


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}",
                                 param_hint=option) from None
    if not values or min(values) < 1:
        raise click.BadParameter("sizes must be positive", param_hint=option)
    return values


def _alpha(text: str, n_classes: int) -> float | list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected a number or {n_classes} comma-separated numbers",
                                 param_hint="--alpha") from None
    if len(values) not in (1, n_classes) or min(values) <= 0:
        raise click.BadParameter(f"give one positive number or {n_classes} (one per class)",
                                 param_hint="--alpha")
    return values[0] if len(values) == 1 else values


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
