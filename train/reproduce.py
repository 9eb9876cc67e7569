"""`edge-ids reproduce`: each paper's method grid, run over several seeds, written as
results.json + results.md (ours as mean ± std beside the paper's published figures) with
confusion-matrix and ROC pictures of the first seed.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .experiment import Method, prepare, run_method
from .results import write_results

_KDD_DR = ("Normal", "DoS", "Probe", "R2L", "U2R")


def _published(acc, pre, rec, f1, mcc=None, fpr=None, dr=None) -> dict:
    out = {"accuracy": acc, "macro_precision": pre, "macro_recall": rec, "macro_f1": f1}
    if mcc is not None:
        out["mcc"] = mcc
    if fpr is not None:
        out["fpr"] = fpr
    if dr is not None:
        out["recall"] = dict(zip(_KDD_DR, dr))
    return out


@dataclass
class Paper:
    key: str
    title: str
    dataset: str
    train_set: str | None
    val_fraction: float
    methods: list[Method]
    published: dict = field(default_factory=dict)  # {method: {test set: metrics in 0..1}}
    published_note: str = ""


_CE_DNN = dict(model="dnn", loss="ce")
KHANAM = Paper(
    key="khanam2022",
    title="Khanam et al. 2022, CFLVAE-DNN on NSL-KDD (KDDTrain+_20Percent)",
    dataset="nsl-kdd", train_set="KDDTrain+_20Percent", val_fraction=0.2,
    methods=[Method("DNN (CE)", **_CE_DNN), Method("ROS-DNN", resample="ros", **_CE_DNN),
             Method("SMOTE-DNN", resample="smote", **_CE_DNN),
             Method("ADASYN-DNN", resample="adasyn", **_CE_DNN),
             Method("CFLVAE-DNN", resample="cflvae", **_CE_DNN)],
    published={"CFLVAE-DNN": {
        "KDDTest+": _published(.8808, .8825, .8802, .8769, fpr=.0377,
                               dr=(.9528, .8387, .8301, .7926, .675)),
        "KDDTest-21": _published(.7622, .8016, .7621, .7666, fpr=.0651,
                                 dr=(None, .7228, .8282, .7925, .66))}},
    published_note="The paper gives figures in its text only for CFLVAE-DNN (section 5.2, "
                   "table 2); ROS/SMOTE/ADASYN-DNN appear only as bar charts (figures 10, 11). "
                   "It does not say how precision, recall and F1 are averaged (its recall equals "
                   "its accuracy, which suggests weighted averages); ours are macro averages.",
)

_EHMS_FNN = dict(model="fnn", model_options={"hidden": (50,)})
_FOCAL = {"gamma": 2.0, "alpha": 2.0}  # Dina et al.'s WUSTL-EHMS settings
DINA = Paper(
    key="dina2023",
    title="Dina et al. 2023, focal-loss FNN and CNN on WUSTL-EHMS-2020",
    dataset="wustl-ehms", train_set=None, val_fraction=0.1,
    methods=[Method("FNN-ORG", **_EHMS_FNN), Method("FNN-RND", resample="ros", **_EHMS_FNN),
             Method("FNN-CTGANSamp", resample="ctgan", **_EHMS_FNN),
             Method("FNN-Dice", loss="dice", **_EHMS_FNN),
             Method("FNN-Focal", loss="focal", loss_options=_FOCAL, **_EHMS_FNN),
             Method("CNN-ORG", model="cnn"),
             Method("CNN-Focal", model="cnn", loss="focal", loss_options=_FOCAL)],
    published={name: {"test": _published(*v)} for name, v in {
        "FNN-ORG": (.9308, .9382, .7359, .7975, .6430),
        "FNN-RND": (.9305, .9339, .7367, .7974, .6410),
        "FNN-CTGANSamp": (.9299, .9294, .7364, .7962, .6372),
        "FNN-Dice": (.9302, .9336, .5000, .4665, .0000),
        "FNN-Focal": (.9326, .9524, .7369, .8011, .6548),
        "CNN-ORG": (.9289, .9284, .7327, .7927, .6316),
        "CNN-Focal": (.9308, .9423, .7338, .7963, .6431)}.items()},
    published_note="Published figures: the paper's WUSTL-EHMS-2020 table (Acc, Pre, Rec, F1, "
                   "MCC). Its code prints both macro and weighted averages and does not say "
                   "which the table holds; ours are macro averages.",
)

PAPERS = {"khanam2022": KHANAM, "dina2023": DINA}

# A quick run (CI): few epochs, one seed, a small generation, a training subset.
QUICK = {"training": {"epochs": 10, "patience": 3},
         "samplers": {"ratio": 0.2},
         "cflvae": {"epochs": 3, "patience": 2},
         "ctgan": {"epochs": 2}}


def reproduce(paper_key: str, out: Path, data_dir=None, dataset: str | None = None,
              seeds=(0, 1, 2), quick: bool = False, echo: Callable[[str], None] = print) -> dict:
    """Run the paper's grid over `seeds`; write OUT/results.{json,md} and PNGs; return results."""
    from .datasets import load_dataset

    paper = PAPERS[paper_key]
    if dataset and dataset != paper.dataset:
        raise ValueError(f"{paper_key} is reproduced on {paper.dataset}, not {dataset}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    data = load_dataset(paper.dataset, data_dir, train_set=paper.train_set)
    overrides = QUICK if quick else {}
    runs: dict[str, list[dict]] = {m.name: [] for m in paper.methods}
    first_seed: dict[str, dict] = {}
    total = len(seeds) * len(paper.methods)
    done = 0
    for seed in seeds:
        prep = prepare(data, seed, paper.val_fraction, echo=echo,
                       max_train_rows=8000 if quick else None)
        for method in paper.methods:
            done += 1
            echo(f"[{done}/{total}] {method.name}, seed {seed}")
            result = run_method(prep, method, echo=echo, overrides=overrides)
            summary = {t: m["macro_f1"] for t, m in result["metrics"].items()}
            echo(f"      macro-F1 {', '.join(f'{t} {v:.4f}' for t, v in summary.items())}  "
                 f"({result['seconds']:.0f} s, best epoch {result['history']['best_epoch']})")
            runs[method.name].append({"seed": seed, "metrics": result["metrics"],
                                      "history": result["history"],
                                      "rows_after_resampling": result["rows_after_resampling"],
                                      "seconds": round(result["seconds"], 1)})
            if seed == seeds[0]:
                first_seed[method.name] = {"scores": result["scores"]}
    results = {
        "paper": paper.key, "title": paper.title, "dataset": data.name,
        "classes": list(data.classes), "normal": data.normal,
        "train_set": paper.train_set or "train split", "tests": list(data.tests),
        "notes": data.notes, "published_note": paper.published_note,
        "seeds": list(seeds), "quick": quick, "overrides": overrides,
        "methods": [asdict(m) for m in paper.methods],
        "published": paper.published,
        "runs": runs,
        "seconds": round(time.monotonic() - started, 1),
    }
    test_labels = {name: s.y for name, s in data.tests.items()}
    write_results(results, first_seed, test_labels, out)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=_plain) + "\n")
    echo(f"results: {out / 'results.md'}   total {results['seconds']:.0f} s")
    return results


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot write {type(value)} to JSON")
