"""`edge-ids bench`: latency, memory, size and accuracy loss, here or on the target."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from . import exit_codes
from .cli_deploy import prefix_option, ssh_config_option, ssh_option_option
from .cli_options import (BUNDLE_HELP, bundle_option, data_dir_option, device_option,
                          parse_ints, require_bundle, require_data)
from .exit_codes import BadInput, Failed


@click.command(epilog=exit_codes.epilog(),
               short_help="Latency, memory, size and accuracy loss of a bundle.")
@bundle_option(help=f"The int8 model to measure: {BUNDLE_HELP}.")
@click.option("--host", metavar="[USER@]ADDR",
              help="Measure on this device over ssh, with the runtime `edge-ids deploy` "
                   "installed there (default: on this machine).")
@device_option(default=None, help="Device profile (see `edge-ids devices`): names the "
               "report's column and sets the thread counts to the device's cores.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench"),
              show_default=True, help="Where bench.json, report.md and the plots go.")
@click.option("--keras", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The bundle's float Keras model (default: model.keras beside the bundle, "
                   "as `edge-ids train` and `pipeline` write it).")
@click.option("--compare", multiple=True, type=click.Path(exists=True, path_type=Path),
              metavar="BUNDLE", help="Another int8 bundle of the same dataset (e.g. a pruned "
              "one from `edge-ids compress`), measured beside it; repeatable.")
@data_dir_option
@click.option("--test-set", help="Which test set (default: the dataset's first, e.g. "
              "KDDTest+). Only the test files are read, never the training file.")
@click.option("--records", type=click.IntRange(1), help="Use the first N test records "
              "(default: all).")
@click.option("--latency-records", type=click.IntRange(10), default=2000, show_default=True,
              help="Batch-1 calls timed per runtime (after 50 warm-up calls).")
@click.option("--batches", default="1,16,256,1024", show_default=True,
              help="Batch sizes of the throughput table.")
@click.option("--threads", help="Thread counts of the throughput table (default 1,2,4, or "
              "powers of two up to the --device profile's cores; capped at the cores present).")
@click.option("--seconds", type=click.FloatRange(0.01), default=0.3, show_default=True,
              help="Time spent on each throughput point.")
@prefix_option
@ssh_config_option
@ssh_option_option
def bench(bundle, host, device, out, keras, compare, data_dir, test_set, records,
          latency_records, batches, threads, seconds, prefix, ssh_config, ssh_options):
    """Latency, memory, size and accuracy loss of a bundle, side by side.

    Measures, in one run and on the same records: the Keras float model called directly,
    the float32 TFLite model, the int8 bundle (LiteRT) and ONNX Runtime (if the `onnx`
    extra is installed). Each in its own process: start-up, model load, peak RSS;
    per-record latency p50/p95/p99 at batch 1 from feature rows and from raw records;
    throughput over batch sizes and threads; accuracy and macro-F1 on the test set.
    Then the daemon itself (`edge-ids run`): start-up, records/s, peak RSS.
    With --host it all runs on the device (deploy first; Keras is not there). Writes
    OUT/bench.json, OUT/report.md, OUT/latency.png and OUT/accuracy_size.png.
    """
    from .benchmarks.bench.host import (BenchError, BenchInputError, BenchOptions, keras_path,
                                   run_bench)
    from .edge_runtime.model.bundle import BundleError
    from .train.datasets import DataError, test_set_names

    options = BenchOptions(
        bundle=bundle, out=out, keras=keras, data_dir=data_dir, test_set=test_set,
        records=records, latency_records=latency_records,
        batches=parse_ints(batches, "--batches"),
        threads=parse_ints(threads, "--threads") if threads else None, seconds=seconds,
        compare=tuple(compare), host=host, device=device, prefix=prefix,
        ssh_config=ssh_config, ssh_options=tuple(ssh_options))
    manifest = require_bundle(bundle).manifest  # all checked before TensorFlow loads
    dataset = manifest["dataset"]
    for other in compare:
        require_bundle(other)
    if test_set and test_set not in test_set_names(dataset):
        raise click.BadParameter(f"{dataset} has the test sets "
                                 f"{', '.join(test_set_names(dataset))}", param_hint="--test-set")
    require_data(dataset, data_dir, only_test=test_set or test_set_names(dataset)[0])
    try:
        keras_path(options, manifest)
    except BenchInputError as e:
        raise BadInput(str(e)) from None
    command = shlex.join(["edge-ids", *sys.argv[1:]]) if sys.argv[0].endswith("edge-ids") \
        else "edge-ids bench"
    try:
        report = run_bench(options, log=click.echo, command=command)
    except (BenchInputError, BundleError, DataError) as e:
        raise BadInput(str(e)) from None
    except (BenchError, ValueError) as e:
        raise Failed(str(e)) from None
    click.echo((out / "report.md").read_text())
    ratio = report["runtimes"]["keras"].get("ratio_to_int8", {}).get("latency_features_p50")
    if ratio:
        click.echo(f"int8 LiteRT per record: {ratio:,.0f} x faster than calling Keras directly")
