"""Seconds per training epoch for every model family, before and after steps_per_execution, at
the papers' batch sizes on the papers' own rows.

    python -m edge_ids.benchmarks.papers.training_speed --data-dir ../shared/datasets

Keras dispatches each optimizer step from Python unless `steps_per_execution` runs several per
call; for models this small the dispatch is most of a step. Each (family, setting) trains in
its own process (op determinism and thread pools are process-wide) through the code the
commands use, and the table gives the median of the epochs after the first (which traces the
graph). "tf.data" feeds a cached, prefetched dataset instead of numpy arrays, to see whether
the input pipeline starves the steps. The machine is shared: the load average is recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .. import write_results
from ...train.paths import RESULTS

# family: (dataset, training file, batch size of its paper, the rows it trains on)
FAMILIES = {
    "dnn": ("nsl-kdd", "KDDTrain+_20Percent", 64, "Khanam et al.: 87-40-20-10-5"),
    "cflvae": ("nsl-kdd", "KDDTrain+_20Percent", 64, "Khanam et al.: 87-40-20-10-20-40-87"),
    "fnn": ("wustl-ehms", None, 100, "Dina et al.: 40-50-2"),
    "cnn": ("wustl-ehms", None, 100, "Dina et al. (code unpublished): 1D-CNN"),
    "autoencoder": ("nsl-kdd", "KDDTrain+_20Percent", 256, "hybrid: benign rows, 32-8-32"),
}
SETTINGS = {"before": {"steps_per_execution": 1, "pipeline": "numpy"},
            "after": {"steps_per_execution": 64, "pipeline": "numpy"},
            "after + tf.data": {"steps_per_execution": 64, "pipeline": "tf.data"}}


class _EpochTimes:
    """Wall time of every epoch (a Keras callback, built lazily so --help needs no Keras)."""

    @staticmethod
    def make():
        import keras

        class Times(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times = []

            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.times.append(time.perf_counter() - self.start)

        return Times()


def _as_dataset(x, y, batch_size, seed):
    import tensorflow as tf

    return (tf.data.Dataset.from_tensor_slices((x, y)).cache()
            .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))


def measure(family: str, steps_per_execution: int, pipeline: str, epochs: int,
            data_dir) -> dict:
    """Train `epochs` epochs of one family in this process; the epoch times."""
    import keras

    from ...train.datasets import load_dataset
    from ...train.determinism import seed_everything
    from ...train.experiment import prepare

    dataset, train_set, batch, _ = FAMILIES[family]
    data = load_dataset(dataset, data_dir, train_set=train_set)
    prep = prepare(data, 0, 0.1 if dataset == "wustl-ehms" else 0.2, echo=lambda _: None)
    x, y = prep.x_fit, prep.y_fit
    times = _EpochTimes.make()
    seed_everything(0)
    if family == "cflvae":
        from ...train.cflvae import CFLVAE
        vae = CFLVAE(x.shape[1], len(data.classes), seed=0)
        # the CFLVAE sampler holds out 20 % of the training rows for its validation loss
        cut = int(0.8 * len(x))
        if pipeline == "tf.data":
            return {"skipped": "the CFLVAE fits [x, c] -> [x, c]; only numpy measured"}
        vae.fit(x[:cut], y[:cut], x[cut:], y[cut:], epochs=epochs, batch_size=batch,
                patience=None, schedule="polynomial", steps_per_execution=steps_per_execution,
                callbacks=(times,))
        rows = cut
    else:
        if family == "autoencoder":  # as train/anomaly.py's Autoencoder.fit compiles it
            from ...train.anomaly import Autoencoder
            x = x[y == 0]
            model = Autoencoder(seed=0).build(x.shape[1])
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse",
                          steps_per_execution=steps_per_execution)
            target, val = x, (prep.x_val[prep.y_val == 0],) * 2
        else:
            from ...train.losses import make_loss
            from ...train.models import build_model
            model = build_model(family, x.shape[1], len(data.classes), seed=0)
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=make_loss("ce"),
                          metrics=["sparse_categorical_accuracy"],
                          steps_per_execution=steps_per_execution)
            target, val = y, (prep.x_val, prep.y_val)
        if pipeline == "tf.data":
            model.fit(_as_dataset(x, target, batch, 0), validation_data=val, epochs=epochs,
                      verbose=0, callbacks=[times])
        else:
            model.fit(x, target, validation_data=val, epochs=epochs, batch_size=batch,
                      shuffle=True, verbose=0, callbacks=[times])
        rows = len(x)
    steady = times.times[1:]
    return {"rows": int(rows), "batch_size": batch, "steps_per_epoch": -(-rows // batch),
            "epoch_seconds": [round(t, 4) for t in times.times],
            "median_epoch_seconds": float(np.median(steady)),
            "ms_per_step": 1000 * float(np.median(steady)) / -(-rows // batch)}


def run(data_dir, epochs: int, families, echo=print) -> dict:
    results = {"epochs": epochs, "load_average_start": os.getloadavg(), "runs": {}}
    for family in families:
        for name, setting in SETTINGS.items():
            echo(f"{family}, {name} ...")
            child = subprocess.run(
                [sys.executable, "-m", __spec__.name, "--child", family,
                 str(setting["steps_per_execution"]), setting["pipeline"],
                 "--epochs", str(epochs)] + (["--data-dir", str(data_dir)] if data_dir else []),
                capture_output=True, text=True, check=True)
            result = json.loads(child.stdout.strip().splitlines()[-1])
            results["runs"].setdefault(family, {})[name] = setting | result
            if "median_epoch_seconds" in result:
                echo(f"   {result['median_epoch_seconds']:.3f} s an epoch "
                     f"({result['ms_per_step']:.2f} ms a step)")
    results["load_average_end"] = os.getloadavg()
    return results


def markdown(results: dict) -> str:
    lines = ["# Seconds per training epoch, before and after `steps_per_execution`", "",
             "Written by `python -m edge_ids.benchmarks.papers.training_speed`. Median wall time of "
             f"epochs 2-{results['epochs']} (the first traces the graph), each setting in its own "
             "process, the papers' batch sizes and rows (seed 0's training split, as "
             "`reproduce` carves it). before: "
             "`steps_per_execution=1` (Keras' default); after: 64 optimizer steps per call; "
             "tf.data: the rows as a cached, prefetched tf.data pipeline. This machine: 2 shared "
             "cores, load average "
             f"{results['load_average_start'][0]:.1f} at the start and "
             f"{results['load_average_end'][0]:.1f} at the end.", "",
             "| family | rows | batch | steps/epoch | before s/epoch | after s/epoch | speed-up "
             "| after + tf.data s/epoch |", "|---|---|---|---|---|---|---|---|"]
    for family, runs in results["runs"].items():
        before, after = runs["before"], runs["after"]
        data = runs["after + tf.data"].get("median_epoch_seconds")
        lines.append(
            f"| {family} ({FAMILIES[family][3]}) | {before['rows']:,} | {before['batch_size']} | "
            f"{before['steps_per_epoch']} | {before['median_epoch_seconds']:.3f} | "
            f"{after['median_epoch_seconds']:.3f} | "
            f"{before['median_epoch_seconds'] / after['median_epoch_seconds']:.1f} x | "
            + (f"{data:.3f}" if data is not None else "—") + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--out", type=Path, default=RESULTS / "training_speed")
    parser.add_argument("--child", nargs=3, metavar=("FAMILY", "STEPS", "PIPELINE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        family, steps, pipeline = args.child
        from ...compress.quiet import quiet_native_output
        with quiet_native_output():
            result = measure(family, int(steps), pipeline, args.epochs, args.data_dir)
        print(json.dumps(result))
        return
    results = run(args.data_dir, args.epochs, args.families.split(","))
    write_results(args.out, results, markdown(results))


if __name__ == "__main__":
    main()
