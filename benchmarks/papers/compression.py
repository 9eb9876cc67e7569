"""The compression table: NSL-KDD DNN and FNN, float / pruned 50 % / pruned 80 % / int8 /
pruned 50 % + int8 / pruned 80 % + int8, with KDDTest+ accuracy, macro-F1, .tflite bytes and
gzip bytes, mean ± sample std (n − 1) over seeds.

    python -m edge_ids.benchmarks.papers.compression --data-dir ../shared/datasets

Each (model, seed) is trained with `edge-ids train`'s code and compressed three times with
`edge-ids compress`'s (sparsity 0, 0.5, 0.8, int8 with float I/O; and with quantization-aware
fine-tuning at 0 and 0.5): a pruned model's float row and its int8 row come from the same
fine-tuning. Finished runs are cached in OUT/runs/, so an interrupted
study resumes, and `--models fnn` / `--models dnn` can run side by side before a last call
writes the table.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ...train.results import sample_std

from .. import write_results
from ...train.paths import RESULTS

MODELS = {"dnn": {"loss": "ce"}, "fnn": {"loss": "focal"}}  # Khanam's DNN, Dina's FNN
# (sparsity, quantization-aware fine-tuning): each is one `compress` run
COMPRESSIONS = ((0.0, False), (0.5, False), (0.8, False), (0.0, True), (0.5, True))
VARIANTS = ("float", "pruned 50 %", "pruned 80 %", "int8", "pruned 50 % + int8",
            "pruned 80 % + int8", "int8 + QAT", "pruned 50 % + int8 + QAT")
TEST = "KDDTest+"


def run_one(model: str, seed: int, work: Path, data_dir, fine_tune_epochs: int,
            quick: bool) -> dict:
    """Train one model, compress it at every sparsity; the table's six variants."""
    from ...compress.compressor import CompressOptions, compress_model
    from ...train.models import FNN_HIDDEN
    from ...training import run_training

    folder = work / f"{model}-seed{seed}"
    if not (folder / "training.json").is_file():
        run_training("nsl-kdd", model, MODELS[model]["loss"], "none", folder, data_dir=data_dir,
                     seed=seed, val_fraction=0.2, bundle=False,
                     model_options={"hidden": FNN_HIDDEN["nsl-kdd"]} if model == "fnn" else {},
                     training={"epochs": 3} if quick else {})
    variants = {}
    for sparsity, qat in COMPRESSIONS:
        bundle = folder / f"bundle-s{int(100 * sparsity)}{'-qat' if qat else ''}"
        if not (bundle / "manifest.json").is_file():
            compress_model(folder, bundle, CompressOptions(
                sparsity=sparsity, qat="always" if qat else "never", data_dir=data_dir,
                fine_tune_epochs=fine_tune_epochs))
        manifest = json.loads((bundle / "manifest.json").read_text())
        sizes, metrics = manifest["compression"]["sizes"], manifest["metrics"]
        pruned = f"pruned {sparsity:.0%}".replace("%", " %")
        if sparsity == 0 and not qat:
            variants["float"] = _row(metrics["float"][TEST], sizes["float_tflite_bytes"],
                                     sizes["float_tflite_gzip_bytes"], 0.0)
        elif not qat:
            variants[pruned] = _row(
                metrics["pruned_float"][TEST], sizes["pruned_float_tflite_bytes"],
                sizes["pruned_float_tflite_gzip_bytes"], sizes["kernel_sparsity"])
        name = ("int8" if sparsity == 0 else f"{pruned} + int8") + (" + QAT" if qat else "")
        variants[name] = _row(metrics["compressed"][TEST], sizes["tflite_bytes"],
                              sizes["tflite_gzip_bytes"],
                              float(np.mean([layer["sparsity"] for layer in sizes["layers"]])))
    return {"model": model, "seed": seed, "variants": variants,
            "parameters": manifest["model"]["parameters"]}


def _row(metrics: dict, tflite: int, gzip: int, sparsity: float) -> dict:
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "tflite_bytes": tflite, "gzip_bytes": gzip, "sparsity": sparsity}


def summarise(runs: list[dict]) -> dict:
    """{model: {variant: {field: (mean, std)}, "checks": {...}}} over seeds."""
    table = {}
    for model in sorted({r["model"] for r in runs}):
        mine = [r for r in runs if r["model"] == model]
        rows = {v: {f: (float(np.mean([r["variants"][v][f] for r in mine])),
                        sample_std([r["variants"][v][f] for r in mine]))
                    for f in ("accuracy", "macro_f1", "tflite_bytes", "gzip_bytes", "sparsity")}
                for v in VARIANTS}
        drop = {v: [100 * (r["variants"]["float"]["macro_f1"] - r["variants"][v]["macro_f1"])
                    for r in mine] for v in VARIANTS}
        gzip_ratio = [r["variants"]["pruned 50 % + int8"]["gzip_bytes"]
                      / r["variants"]["float"]["gzip_bytes"] for r in mine]
        table[model] = {"rows": rows, "seeds": [r["seed"] for r in mine],
                        "f1_drop": {v: (float(np.mean(d)), sample_std(d), float(np.max(d)))
                                    for v, d in drop.items()},
                        "p50_int8_gzip_ratio": float(np.max(gzip_ratio)),
                        "parameters": mine[0]["parameters"]}
    return table


def markdown(table: dict, command: str) -> str:
    lines = ["# Compression on NSL-KDD (train KDDTrain+, test KDDTest+)", "",
             f"Produced by `{command}`. Mean ± sample std (n − 1) over seeds; macro-F1 drop is against the "
             "float model of the same seed. int8 is full-integer with float input/output; "
             "`.tflite` bytes do not fall with pruning (zeros are stored), gzip bytes do. "
             "Kernel sparsity of the int8 rows is read back from the .tflite (rounding alone "
             "zeroes 1-2 % of the weights).", ""]
    for model, t in table.items():
        lines += [f"## {model.upper()} ({t['parameters']:,} parameters; seeds "
                  f"{', '.join(map(str, t['seeds']))})", "",
                  "| variant | acc % | macro-F1 % | F1 drop (points) | kernel sparsity | "
                  ".tflite bytes | gzip bytes |", "|---|---|---|---|---|---|---|"]
        for v in VARIANTS:
            r, d = t["rows"][v], t["f1_drop"][v]
            lines.append(f"| {v} | {100 * r['accuracy'][0]:.2f} ± {100 * r['accuracy'][1]:.2f} | "
                         f"{100 * r['macro_f1'][0]:.2f} ± {100 * r['macro_f1'][1]:.2f} | "
                         f"{d[0]:.2f} ± {d[1]:.2f} (max {d[2]:.2f}) | "
                         f"{100 * r['sparsity'][0]:.0f} % | {r['tflite_bytes'][0]:,.0f} | "
                         f"{r['gzip_bytes'][0]:,.0f} |")
        lines.append("")
        for suffix in ("", " + QAT"):
            int8_drop = t["f1_drop"]["int8" + suffix][2]
            p50 = t["f1_drop"]["pruned 50 % + int8" + suffix][2]
            lines += [f"- int8{suffix} vs float, worst seed: {int8_drop:.2f} points "
                      f"({'meets' if int8_drop <= 1 else 'MISSES'} the 1-point target); "
                      f"pruned 50 % + int8{suffix}: {p50:.2f} points "
                      f"({'meets' if p50 <= 1.5 else 'MISSES'} 1.5)."]
        lines += [f"- pruned 50 % + int8, gzip {t['p50_int8_gzip_ratio']:.2f} × the float "
                  f"model's gzip, worst seed ({'meets' if t['p50_int8_gzip_ratio'] <= 0.4 else 'MISSES'} 0.4).", ""]
    lines += ["![macro-F1 against gzip size](compression.png)", ""]
    return "\n".join(lines)


def plot(table: dict, path: Path) -> None:
    """macro-F1 against gzip bytes, one line per model through its variants."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model, t in table.items():
        xs = [t["rows"][v]["gzip_bytes"][0] for v in VARIANTS]
        ys = [100 * t["rows"][v]["macro_f1"][0] for v in VARIANTS]
        err = [100 * t["rows"][v]["macro_f1"][1] for v in VARIANTS]
        ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=3, label=model.upper())
        for x, y, v in zip(xs, ys, VARIANTS):
            ax.annotate(v, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("gzip size of the .tflite (bytes, log scale)")
    ax.set_ylabel(f"{TEST} macro-F1 (%)")
    ax.set_title("NSL-KDD: accuracy against compressed model size")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="Folder with nsl-kdd/ "
                        "(default $EDGE_IDS_DATA_DIR)")
    parser.add_argument("--out", type=Path, default=RESULTS / "compression")
    parser.add_argument("--work", type=Path, default=None,
                        help="Models and bundles (default OUT/runs; not committed)")
    parser.add_argument("--models", default="dnn,fnn")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10, help="Fine-tuning epochs")
    parser.add_argument("--quick", action="store_true", help="3 training epochs (smoke run)")
    args = parser.parse_args(argv)
    work = args.work or args.out / "runs"
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for model in args.models.split(","):
        for seed in map(int, args.seeds.split(",")):
            cached = work / f"{model}-seed{seed}.json"
            if not cached.is_file():
                started = time.monotonic()
                result = run_one(model, seed, work, args.data_dir, args.epochs, args.quick)
                cached.write_text(json.dumps(result, indent=1) + "\n")
                print(f"== {model} seed {seed} done in {time.monotonic() - started:.0f} s")
            runs.append(json.loads(cached.read_text()))
    table = summarise(runs)
    command = "python -m edge_ids.benchmarks.papers.compression --data-dir ../shared/datasets"
    write_results(args.out, {"table": table, "runs": runs}, markdown(table, command), "results.md")
    plot(table, args.out / "compression.png")


if __name__ == "__main__":
    main()
