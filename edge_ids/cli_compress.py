"""`edge-ids compress`: prune, quantize, gate, write a bundle (host only; TensorFlow is imported
inside the command so that `--help` stays fast)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from . import exit_codes
from .cli_options import data_dir_option, require_data
from .exit_codes import BadInput, Failed
from .train.datasets import DataError, test_set_names

EXIT_GATE_REFUSED = exit_codes.GATE_REFUSED


def _layer_targets(ctx, param, values) -> dict[str, float]:
    targets = {}
    for value in values:
        name, _, share = value.partition("=")
        try:
            targets[name] = float(share)
        except ValueError:
            raise click.BadParameter(f"expected NAME=SPARSITY, got {value!r}") from None
        if not name or not 0 <= targets[name] < 1:
            raise click.BadParameter(f"expected NAME=SPARSITY with 0 <= SPARSITY < 1: {value!r}")
    return targets


def _percentiles(ctx, param, text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(50 < v <= 100 for v in values):
        raise click.BadParameter(f"expected comma-separated percentiles in (50, 100], got "
                                 f"{text!r}", param_hint="--calibration-percentiles")
    return values


@click.command(epilog=exit_codes.epilog(exit_codes.GATE_REFUSED),
               short_help="Prune and quantize a model into a bundle, gated on its loss.")
@click.option("--model", "model_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Model folder from `edge-ids train` or `edge-ids pipeline` (model.keras, "
                   "features.json, training.json).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Bundle folder to write (only if the gate passes).")
@click.option("--sparsity", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              show_default=True, help="Share of kernel weights pruned to zero by magnitude "
              "during fine-tuning (0: no pruning, no fine-tuning).")
@click.option("--scope", type=click.Choice(["layer", "global"]), default="layer",
              show_default=True, help="layer: every Dense/Conv kernel reaches --sparsity; "
              "global: one magnitude threshold over all kernels.")
@click.option("--layer-sparsity", multiple=True, callback=_layer_targets, metavar="NAME=S",
              help="Per-layer target (repeatable); layers not named stay dense.")
@click.option("--quantize", type=click.Choice(["int8", "none"]), default="int8",
              show_default=True, help="Full-integer int8 post-training quantization, or float32.")
@click.option("--io", type=click.Choice(["float", "int8"]), default="float", show_default=True,
              help="int8 model's input/output tensors. float: quantize inside the graph "
              "(faster per record in LiteRT, TOOLCHAIN.md §5); int8: the runtime quantizes.")
@click.option("--qat", type=click.Choice(["never", "auto", "always"]), default="never",
              show_default=True, help="Quantization-aware fine-tuning. auto: only when the "
              "post-training int8 model's macro-F1 drop on the validation rows exceeds "
              "--max-f1-drop.")
@click.option("--max-f1-drop", type=click.FloatRange(0), default=None,
              help="Gate, in macro-F1 points (0-100 scale) on the gate test set: refuse (exit "
                   f"{EXIT_GATE_REFUSED}) when the compressed model loses more. Default: "
                   "measure and report only.")
@click.option("--gate-set", default=None,
              help="Test set the gate reads (default: the dataset's first, e.g. KDDTest+).")
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True,
              help="Fine-tuning epochs while pruning (the schedule ends at 70 %).")
@click.option("--qat-epochs", type=click.IntRange(1), default=3, show_default=True,
              help="Quantization-aware fine-tuning epochs (the pruning zeros are held).")
@click.option("--learning-rate", type=click.FloatRange(0, min_open=True), default=None,
              help="Fine-tuning rate (default: a tenth of the model's training rate).")
@click.option("--calibration-rows", type=click.IntRange(1), default=1000, show_default=True,
              help="Training rows that calibrate the int8 activation ranges.")
@click.option("--calibration-percentiles", default="100,99,95,90", show_default=True,
              callback=_percentiles,
              help="Calibrate int8 ranges on rows whose logits lie within these central "
                   "percentiles (100: all rows); the one whose int8 predictions agree best "
                   "with the float model on the validation rows ships.")
@click.option("--experimental-sparsity", is_flag=True,
              help="TFLite's sparse weight encoding: float only; refused with int8, whose "
                   "outputs it makes wrong.")
@data_dir_option
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at --out.")
def compress(model_dir, out, sparsity, scope, layer_sparsity, quantize, io, qat, max_f1_drop,
             gate_set, epochs, qat_epochs, learning_rate, calibration_rows,
             calibration_percentiles, experimental_sparsity, data_dir, overwrite):
    """Prune and quantize a trained model into a bundle, with a gated accuracy loss.

    Fine-tunes on the model's own training rows while pruning (magnitude, polynomial schedule),
    converts to TFLite (int8 calibrated on training rows), evaluates the float model and the
    bundle (through the edge runtime, from raw records) on every test set, prints the sizes
    (.tflite and gzip, parameters, sparsity per layer read back from the .tflite) and writes
    the bundle with both sets of metrics in its manifest, unless the gate refuses it.

    \b
    Example: edge-ids compress --model out/fnn --sparsity 0.5 --quantize int8 \\
               --max-f1-drop 1.5 --out out/fnn-p50-int8
    """
    from .compress.compressor import (CompressOptions, GateRefused, ModelFolderError,
                                      compress_model, read_model_folder)

    if experimental_sparsity and quantize == "int8":
        from .compress.quantize import SPARSITY_WITH_INT8
        raise click.UsageError(f"--experimental-sparsity with --quantize int8 is refused: "
                               f"{SPARSITY_WITH_INT8}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise click.UsageError(f"{out} exists and is not empty; pass --overwrite to replace it")
    if sparsity and layer_sparsity:
        raise click.UsageError("give --sparsity or --layer-sparsity, not both")
    try:  # everything checked before TensorFlow loads
        record, _ = read_model_folder(model_dir)
    except (ModelFolderError, ValueError) as e:
        raise BadInput(str(e)) from None
    if gate_set and gate_set not in test_set_names(record["dataset"]):
        raise click.BadParameter(f"{record['dataset']} has the test sets "
                                 f"{', '.join(test_set_names(record['dataset']))}",
                                 param_hint="--gate-set")
    require_data(record["dataset"], data_dir, record.get("train_set"))
    from .compress.quantize import UnsafeConversion
    options = CompressOptions(
        sparsity=sparsity, scope=scope, layer_sparsity=layer_sparsity, quantize=quantize, io=io,
        qat=qat, max_f1_drop=max_f1_drop, gate_set=gate_set, fine_tune_epochs=epochs,
        qat_epochs=qat_epochs, learning_rate=learning_rate, calibration_rows=calibration_rows,
        calibration_percentiles=calibration_percentiles,
        experimental_sparsity=experimental_sparsity, data_dir=data_dir)
    try:
        compress_model(model_dir, out, options, echo=click.echo)
    except GateRefused as e:
        click.echo(str(e), err=True)
        sys.exit(EXIT_GATE_REFUSED)
    except (DataError, ModelFolderError) as e:
        raise BadInput(str(e)) from None
    except (UnsafeConversion, ValueError) as e:
        raise Failed(str(e)) from None
    click.echo(f"bundle: {out}")
