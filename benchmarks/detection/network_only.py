"""What a WUSTL-EHMS model loses when it sees only the network: the network-only variant
(`wustl-ehms-net`, the Argus flow columns that `edge-ids capture` can give a device) beside the
full-feature one (flows + the patient's biometrics), same methods, same seeds, same test split.

    python -m edge_ids.benchmarks.detection.network_only [--out benchmarks/results/network_only]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ...train.results import sample_std

from .. import write_results
from ...train.experiment import prepare, run_method
from ...train.papers import DINA
from ...train.paths import RESULTS

DATASETS = ("wustl-ehms", "wustl-ehms-net")
METHODS = tuple(m for m in DINA.methods if m.name in ("FNN-ORG", "FNN-Focal"))
METRICS = (("accuracy", "acc"), ("macro_f1", "macro-F1"), ("mcc", "MCC"), ("fpr", "FPR"))


def run(data_dir=None, seeds=(0, 1, 2), echo=print) -> dict:
    from ...train.datasets import load_dataset

    results = {}
    for name in DATASETS:
        data = load_dataset(name, data_dir)
        for seed in seeds:
            prep = prepare(data, seed, DINA.val_fraction, echo=echo)
            for method in METHODS:
                echo(f"{name} {method.name} seed {seed}")
                metrics = run_method(prep, method, echo=echo)["metrics"]["test"]
                results.setdefault(name, {}).setdefault(method.name, []).append(
                    {"seed": seed, "inputs": int(prep.x_fit.shape[1])}
                    | {k: float(metrics[k]) for k, _ in METRICS}
                    | {"dr_attack": float(metrics["recall"]["Attack"])})
    return results


def markdown(results: dict) -> str:
    keys = [*METRICS, ("dr_attack", "DR Attack")]
    lines = ["# WUSTL-EHMS: network-only against full-feature", "",
             "Written by `python -m edge_ids.benchmarks.detection.network_only`. Test split: the loader's "
             "fixed stratified 20 % (3,263 records); mean ± sample std (n − 1) over seeds "
             f"{', '.join(str(r['seed']) for r in next(iter(results['wustl-ehms'].values())))}"
             "; percentages except MCC. Identifier columns (addresses, MACs, source port, "
             "record number) are ignored by both.", "",
             "| features | inputs | method | " + " | ".join(label for _, label in keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    for name, label in (("wustl-ehms", "full: flows + biometrics"),
                        ("wustl-ehms-net", "network only (Argus flows)")):
        for method, runs in results[name].items():
            cells = []
            for key, _ in keys:
                values = np.array([r[key] for r in runs]) * (1 if key == "mcc" else 100)
                cells.append(f"{values.mean():.{4 if key == 'mcc' else 2}f} ± "
                             f"{sample_std(values):.{4 if key == 'mcc' else 2}f}")
            lines.append(f"| {label} | {runs[0]['inputs']} | {method} | " + " | ".join(cells)
                         + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "network_only")
    parser.add_argument("--data-dir")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    results = run(args.data_dir, tuple(int(s) for s in args.seeds.split(",")))
    write_results(args.out, results, markdown(results))


if __name__ == "__main__":
    main()
