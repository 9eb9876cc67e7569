"""`edge-ids reproduce`: each paper's method grid, run over several seeds, written as
results.json + results.md (ours as mean ± std beside the paper's published figures) with
confusion-matrix and ROC pictures of the first seed.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from .experiment import Method, prepare, run_method
from .protocols import (apply_protocol, check_protocol, describe, protocol_callbacks,
                        seen_attack_types)
from .results import attach_previous, write_results
from .run_cache import RunCache

from .papers import AUDIT_DIR, DINA, KHANAM, PAPERS, RESULTS_DIR, Paper  # noqa: F401 (re-exported)

# A quick run (CI): few epochs, one seed, a small generation, a training subset.
QUICK = {"training": {"epochs": 10, "patience": 3},
         "samplers": {"ratio": 0.2},
         "cflvae": {"epochs": 3, "patience": 2},
         "ctgan": {"epochs": 2}}


def reproduce(paper_key: str, out: Path, data_dir=None, dataset: str | None = None,
              seeds=(0, 1, 2), quick: bool = False, budget: str = "paper",
              protocol: str = "official", methods: list[str] | None = None,
              resume: bool = False, echo: Callable[[str], None] = print) -> dict:
    """Run the paper's grid (or the named `methods` of it) over `seeds` under a budget
    (models.BUDGETS) and an evaluation protocol (protocols.PROTOCOLS); write
    OUT/results.{json,md} and PNGs; return the results. Each finished run is kept in
    OUT/runs/; `resume` reuses those that ran under the same settings. A protocol other than
    official never writes into a folder that holds official results (and official never into
    an audit one)."""
    from .datasets import load_dataset
    from .models import BUDGETS

    paper = _check(paper_key, dataset, budget, protocol)
    chosen = _choose(paper, methods)
    out = Path(out)
    if protocol != "official" and out.resolve() == default_out(paper.key).resolve():
        raise ValueError(f"{out} is the official results folder; a {protocol} run writes "
                         f"under {AUDIT_DIR}/ (the default)")
    _refuse_mixing(out, protocol)
    started = time.monotonic()
    official = load_dataset(paper.dataset, data_dir, train_set=paper.train_set)
    data = apply_protocol(official, protocol)
    out.mkdir(parents=True, exist_ok=True)
    overrides = QUICK if quick else {}
    runs: dict[str, list[dict]] = {m.name: [] for m in chosen}
    first_seed: dict[str, dict] = {}
    total = len(seeds) * len(chosen)
    done = 0
    reused_seconds = 0.0  # a reused run counts with its own training time
    cache = RunCache(out / "runs", cache_settings(paper.key, protocol, budget, quick, official),
                     echo)
    for seed in seeds:
        prep = None
        for method in chosen:
            done += 1
            echo(f"[{done}/{total}] {method.name}, seed {seed} ({protocol}, {budget} budget)")
            cached = cache.load(method.name, seed, definition(method)) if resume else None
            if cached:
                run, scores = cached
                reused_seconds += run["seconds"]
                echo(f"      finished earlier ({run['seconds']:.0f} s): reused from "
                     f"{cache.folder}")
                runs[method.name].append(run)
                if seed == seeds[0]:
                    first_seed[method.name] = {"scores": scores}
                continue
            if prep is None:
                prep = prepare(data, seed, paper.val_fraction, echo=echo,
                               max_train_rows=8000 if quick else None)
            callbacks = protocol_callbacks(protocol, prep)
            result = run_method(prep, method, echo=echo, overrides=overrides, budget=budget,
                                callbacks=callbacks)
            summary = {t: m["macro_f1"] for t, m in result["metrics"].items()}
            history = result["history"]
            echo(f"      macro-F1 {', '.join(f'{t} {v:.4f}' for t, v in summary.items())}  "
                 f"({result['seconds']:.0f} s, weights of epoch {history['weights_from_epoch']} "
                 f"of {history['epochs_run']})")
            run = {"seed": seed, "protocol": protocol, "metrics": result["metrics"],
                   "history": history, "budget": result["budget"],
                   "rows_after_resampling": result["rows_after_resampling"],
                   "seconds": round(result["seconds"], 1)}
            for callback in callbacks:  # test-selected: the test-accuracy curve it chose from
                run["test_accuracy_by_epoch"] = {callback.test_name: callback.accuracies}
            runs[method.name].append(run)
            cache.save(method.name, seed, run, result["scores"], definition(method))
            if seed == seeds[0]:
                first_seed[method.name] = {"scores": result["scores"]}
    results = {
        "paper": paper.key, "title": paper.title, "dataset": data.name,
        "protocol": protocol, "protocol_note": describe(protocol, official),
        "budget": budget, "budget_settings": BUDGETS[budget],
        "classes": list(data.classes), "normal": data.normal,
        "train_set": paper.train_set or "train split", "tests": list(data.tests),
        "notes": data.notes, "published_note": paper.published_note,
        "deviations": paper.deviations,
        "seeds": list(seeds), "quick": quick, "overrides": overrides,
        "methods": [asdict(m) for m in chosen],
        "published": paper.published if protocol != "merged-resplit" else {},
        "runs": runs,
        "seconds": round(time.monotonic() - started + reused_seconds, 1),
        "reused_seconds": round(reused_seconds, 1),
    }
    attach_previous(results, out)
    test_labels = {name: s.y for name, s in data.tests.items()}
    write_results(results, first_seed, test_labels, out)
    saved = {k: v for k, v in results.items() if k != "previous"}
    (out / "results.json").write_text(json.dumps(saved, indent=1, default=_plain) + "\n")
    echo(f"results: {out / 'results.md'}   total {results['seconds']:.0f} s")
    if protocol != "official" and out.parent.name == AUDIT_DIR.name:  # a results tree's audit
        from .audit import write_audit
        seen = {paper.key: seen_attack_types(official)} if paper.dataset == "nsl-kdd" else None
        echo(f"audit summary: {write_audit(out.parent.parent, seen=seen)}")
    return results


def cache_settings(paper_key: str, protocol: str, budget: str, quick: bool, data) -> dict:
    """What a kept run must share to be reused: the grid's settings, the code that trains and
    evaluates (its version), and the data files it read (their fingerprint)."""
    from .fingerprint import code_version, files_fingerprint

    files = [data.train.path, *(t.path for t in data.tests.values())]
    return {"paper": paper_key, "protocol": protocol, "budget": budget, "quick": quick,
            "code": code_version(), "data": files_fingerprint(files)}


def _check(paper_key: str, dataset: str | None, budget: str, protocol: str) -> Paper:
    """Refuse an unknown paper, budget or protocol with the valid names."""
    from .models import BUDGETS

    if paper_key not in PAPERS:
        raise ValueError(f"unknown paper {paper_key!r}; choose from {', '.join(PAPERS)}")
    paper = PAPERS[paper_key]
    if dataset and dataset != paper.dataset:
        raise ValueError(f"{paper_key} is reproduced on {paper.dataset}, not {dataset}")
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose from {', '.join(BUDGETS)}")
    check_protocol(protocol, dataset_name=paper.dataset)
    return paper


def _choose(paper: Paper, names: list[str] | None) -> list[Method]:
    if not names:
        return list(paper.methods)
    known = {m.name: m for m in paper.methods}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{paper.key} has no method {', '.join(map(repr, unknown))}; "
                         f"choose from {', '.join(known)}")
    return [known[n] for n in names]


def _refuse_mixing(out: Path, protocol: str) -> None:
    """Official results and audit results never share a folder: refuse before any work."""
    existing = out / "results.json"
    if not existing.is_file():
        return
    try:
        theirs = json.loads(existing.read_text()).get("protocol", "official")
    except (ValueError, AttributeError):
        raise ValueError(f"{existing} exists and is not a results file; choose another "
                         "--out") from None
    if (theirs == "official") != (protocol == "official"):
        raise ValueError(f"{out} holds {theirs} results; a {protocol} run must not overwrite "
                         f"them (non-official protocols write under {AUDIT_DIR}/)")


def default_out(paper_key: str, protocol: str = "official") -> Path:
    """benchmarks/results/PAPER for the official protocol, the audit folder for the others."""
    if protocol == "official":
        return RESULTS_DIR / paper_key
    return AUDIT_DIR / f"{paper_key}-{protocol}"


def definition(method: Method) -> dict:
    """A method as JSON would keep it (tuples as lists): what a kept run is compared on."""
    return json.loads(json.dumps(asdict(method), default=_plain, sort_keys=True))


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot write {type(value)} to JSON")
