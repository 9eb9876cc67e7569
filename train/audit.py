"""The protocol audit: which protocol gives which figure. Gathers a paper's official results
(benchmarks/results/PAPER/results.json) and its runs under the other protocols
(benchmarks/results/audit/PAPER-PROTOCOL/results.json, written by
`edge-ids reproduce PAPER --protocol ...`) into benchmarks/results/audit/results.{json,md}:
one row per (paper, protocol, method, test set, seed), macro and weighted averages side by side.

    python -m edge_ids.train.audit [--data-dir DIR]   # rebuild it (reproduce does it too)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .protocols import PROTOCOLS
from .results import sample_std
from .papers import AUDIT_DIR, PAPERS, RESULTS_DIR

FIELDS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_precision",
          "weighted_recall", "weighted_f1", "fpr")
COLUMNS = (("accuracy", "acc"), ("macro_precision", "macro-P"), ("macro_recall", "macro-R"),
           ("macro_f1", "macro-F1"), ("weighted_precision", "weighted-P"),
           ("weighted_recall", "weighted-R"), ("weighted_f1", "weighted-F1"), ("fpr", "FPR"))


def collect(results_dir: Path = RESULTS_DIR) -> dict:
    """Every row of every protocol's results found for every paper."""
    rows, sources, published = [], [], {}
    audit = results_dir / AUDIT_DIR.name
    for paper in PAPERS:
        found = [results_dir / paper / "results.json"]
        found += sorted(audit.glob(f"{paper}-*/results.json"))
        for path in (p for p in found if p.is_file()):
            results = json.loads(path.read_text())
            protocol = results.get("protocol", "official")
            sources.append({"paper": paper, "protocol": protocol, "budget": results.get("budget"),
                            "path": str(path.relative_to(results_dir)),
                            "note": results.get("protocol_note", PROTOCOLS["official"]),
                            "quick": results.get("quick", False)})
            if protocol == "official":
                published[paper] = results["published"]
            for method, runs in results["runs"].items():
                for run in runs:
                    for test, m in run["metrics"].items():
                        rows.append({"paper": paper, "protocol": protocol, "method": method,
                                     "test": test, "seed": run["seed"],
                                     "budget": results.get("budget"),
                                     "weights_from_epoch": run["history"].get(
                                         "weights_from_epoch"),
                                     **{k: m.get(k) for k in FIELDS},
                                     "recall": m["recall"]})
    return {"protocols": PROTOCOLS, "sources": sources, "published": published, "rows": rows}


def _mean(rows: list[dict], key: str) -> str:
    values = [r[key] for r in rows if r.get(key) is not None]
    if not values:
        return "—"
    return f"{100 * np.mean(values):.2f} ± {100 * sample_std(values):.2f}"


def markdown(audit: dict) -> str:
    lines = ["# Protocol audit: which protocol gives which figure", "",
             "Written by `edge-ids reproduce PAPER --protocol PROTOCOL` (and "
             "`python -m edge_ids.train.audit`). Mean ± sample std (n − 1) over seeds, in %. Only the "
             "**official** rows use the official split and protocol; every other table says "
             "what it does instead. Weighted averages weight each class by its support, so the "
             "weighted recall is the accuracy: a paper whose recall equals its accuracy reports "
             "weighted averages.", ""]
    for source in audit["sources"]:
        if source["quick"]:
            lines += [f"**{source['path']} is a quick run**: its figures are not results.", ""]
    for paper in PAPERS:
        mine = [r for r in audit["rows"] if r["paper"] == paper]
        if not mine:
            continue
        lines += [f"## {PAPERS[paper].title}", ""]
        for protocol in PROTOCOLS:
            rows = [r for r in mine if r["protocol"] == protocol]
            if not rows:
                continue
            note = next(s["note"] for s in audit["sources"]
                        if s["paper"] == paper and s["protocol"] == protocol)
            heading = ("official split" if protocol == "official"
                       else f"{protocol}: {note}")
            lines += [f"### {heading}", "",
                      "| method | test set | " + " | ".join(c for _, c in COLUMNS)
                      + " | DR of the two rarest classes |",
                      "|---|---|" + "---|" * (len(COLUMNS) + 1)]
            for method in dict.fromkeys(r["method"] for r in rows):
                for test in dict.fromkeys(r["test"] for r in rows if r["method"] == method):
                    cell = [r for r in rows if r["method"] == method and r["test"] == test]
                    rare = list(cell[0]["recall"])[-2:]
                    dr = " / ".join(f"{c} {100 * np.mean([r['recall'][c] for r in cell]):.1f}"
                                    for c in rare)
                    lines.append(f"| {method} | {test} | "
                                 + " | ".join(_mean(cell, k) for k, _ in COLUMNS)
                                 + f" | {dr} |")
                    paper_row = audit["published"].get(paper, {}).get(method, {}).get(test)
                    if paper_row and protocol == "official":
                        shown = _as_weighted(paper_row)
                        lines.append("| *paper* | | " + " | ".join(
                            f"*{100 * shown[k]:.2f}*" if shown.get(k) is not None
                            else "—" for k, _ in COLUMNS) + " | |")
            lines.append("")
        lines += _reading(audit, paper, mine)
        lines += _seen_types(audit.get("seen_attack_types", {}).get(paper))
    return "\n".join(lines) + "\n"


def _seen_types(seen: dict | None) -> list[str]:
    if not seen:
        return []
    classes = list(next(iter(seen.values())))
    lines = ["Share of each test set's rows whose attack name occurs in the training file (the "
             "rest are attack types the official protocol never shows in training; "
             "merged-resplit shows them):", "",
             "| test set | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for test, shares in seen.items():
        lines.append(f"| {test} | " + " | ".join(f"{100 * shares[c]:.1f} %" for c in classes)
                     + " |")
    return lines + [""]


def _as_weighted(published: dict) -> dict:
    """The paper's P/R/F1 in the weighted columns: it does not say how it averages, and its
    recall (88.02) is nearly its accuracy (88.08), which a weighted recall always is."""
    return {"accuracy": published.get("accuracy"), "fpr": published.get("fpr"),
            "weighted_precision": published.get("macro_precision"),
            "weighted_recall": published.get("macro_recall"),
            "weighted_f1": published.get("macro_f1")}


def _reading(audit: dict, paper: str, rows: list[dict]) -> list[str]:
    """For each method with a published accuracy: how far each protocol gets, on its first
    test set (KDDTest+ for official and test-selected, the held-out 20 % for merged-resplit)."""
    lines = []
    for method, tests in audit["published"].get(paper, {}).items():
        first, target = next(iter(tests)), next(iter(tests.values()))["accuracy"]
        parts = []
        for protocol in PROTOCOLS:
            mine = [r for r in rows if r["protocol"] == protocol and r["method"] == method]
            if not mine:
                continue
            test = first if protocol != "merged-resplit" else mine[0]["test"]
            accuracy = float(np.mean([r["accuracy"] for r in mine if r["test"] == test]))
            gap = 100 * (accuracy - target)
            parts.append(f"{protocol} {100 * accuracy:.2f} % on {test} "
                         f"({'reaches it' if gap >= 0 else f'{-gap:.1f} points short'})")
        if parts:
            lines += [f"**{method}**, published {100 * target:.2f} % accuracy on {first}: "
                      + "; ".join(parts) + ".", ""]
    return lines


def write_audit(results_dir: Path = RESULTS_DIR, seen: dict | None = None) -> Path:
    """Rebuild the summary. `seen`: {paper: protocols.seen_attack_types(official dataset)};
    without it, the shares already in the summary are kept."""
    audit = collect(results_dir)
    out = results_dir / AUDIT_DIR.name
    out.mkdir(parents=True, exist_ok=True)
    old = out / "results.json"
    kept = json.loads(old.read_text()).get("seen_attack_types", {}) if old.is_file() else {}
    audit["seen_attack_types"] = kept | (seen or {})
    (out / "results.json").write_text(json.dumps(audit, indent=1) + "\n")
    (out / "results.md").write_text(markdown(audit))
    return out / "results.md"


def _seen_from_data(data_dir) -> dict:
    from .datasets import load_dataset
    from .protocols import seen_attack_types

    return {key: seen_attack_types(load_dataset(p.dataset, data_dir, train_set=p.train_set))
            for key, p in PAPERS.items() if p.dataset == "nsl-kdd"}


if __name__ == "__main__":  # python -m edge_ids.train.audit [RESULTS_DIR] [--data-dir DIR]
    args = sys.argv[1:]
    data = args[args.index("--data-dir") + 1] if "--data-dir" in args else None
    folders = [a for a in args if a != "--data-dir" and a != data]
    print(write_audit(Path(folders[0]) if folders else RESULTS_DIR,
                      _seen_from_data(data) if data else None))
