"""Write a reproduction's results: mean ± std over seeds beside the paper's figures, as markdown
tables, plus the pictures (first seed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .plots import confusion_grid, roc_grid

SCALAR = (("accuracy", "Acc"), ("macro_precision", "macro-P"), ("macro_recall", "macro-R"),
          ("macro_f1", "macro-F1"), ("mcc", "MCC"), ("fpr", "FPR"), ("macro_roc_auc", "AUC"))


def summarise(runs: list[dict], test: str) -> dict:
    """{metric: (mean, std, n)} over seeds, with per-class recall as recall:<class>."""
    values: dict[str, list[float]] = {}
    for run in runs:
        m = run["metrics"][test]
        for key, _ in SCALAR:
            if m.get(key) is not None:
                values.setdefault(key, []).append(m[key])
        for cls, r in m["recall"].items():
            values.setdefault(f"recall:{cls}", []).append(r)
    return {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in values.items()}


def _columns(results: dict) -> list[tuple[str, str]]:
    cols = list(SCALAR)
    if len(results["classes"]) > 2:  # per-class detection rate, as the NSL-KDD papers give
        cols += [(f"recall:{c}", f"DR {c}") for c in results["classes"]]
    return cols


def _cell(key: str, mean: float, std: float | None) -> str:
    if key in ("mcc", "macro_roc_auc"):
        return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def _published_cell(published: dict, key: str) -> str:
    if key.startswith("recall:"):
        value = published.get("recall", {}).get(key.split(":", 1)[1])
    else:
        value = published.get(key)
    return "—" if value is None else _cell(key, value, None)


def markdown(results: dict) -> str:
    cols = _columns(results)
    seeds = ", ".join(map(str, results["seeds"]))
    lines = [f"# {results['title']}", "",
             f"Ours: mean ± std over seeds {seeds} (in %, MCC and AUC as fractions); the row "
             "under each method, in italics, is the paper's published figure (— where the "
             "paper gives none). Macro averages over classes. FPR: normal traffic flagged as an "
             "attack; DR: per-class detection rate (recall).", "",
             f"Data: {results['notes']}", "", results["published_note"], ""]
    if results["quick"]:
        lines += ["**Quick run** (CI smoke check: few epochs, small generation, a training "
                  "subset). These figures are not results.", ""]
    for test in results["tests"]:
        lines += [f"## {test}", "",
                  "| method | " + " | ".join(label for _, label in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for method in results["runs"]:
            s = summarise(results["runs"][method], test)
            cells = [_cell(k, *s[k][:2]) if k in s else "—" for k, _ in cols]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
            published = results["published"].get(method, {}).get(test)
            if published:
                lines.append("| *paper* | " + " | ".join(
                    f"*{_published_cell(published, k)}*" for k, _ in cols) + " |")
        lines += ["", f"![confusion matrices, {test}](confusion_{_slug(test)}.png)",
                  f"![ROC curves, {test}](roc_{_slug(test)}.png)", ""]
    lines += ["## Runs", "", "| method | seed | best epoch | epochs run | training rows "
              "after resampling | seconds |", "|---|---|---|---|---|---|"]
    for method, runs in results["runs"].items():
        for r in runs:
            lines.append(f"| {method} | {r['seed']} | {r['history']['best_epoch']} | "
                         f"{r['history']['epochs_run']} | {r['rows_after_resampling']:,} | "
                         f"{r['seconds']} |")
    lines += ["", f"Total time: {results['seconds'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def write_results(results: dict, first_seed: dict, test_labels: dict, out: Path) -> None:
    """results.md and, per test set, confusion_<test>.png and roc_<test>.png (first seed)."""
    classes = results["classes"]
    seed = results["seeds"][0]
    for test, y in test_labels.items():
        matrices = {m: runs[0]["metrics"][test]["confusion_matrix"]
                    for m, runs in results["runs"].items()}
        confusion_grid(matrices, classes, f"{results['title']}: {test}, seed {seed}",
                       out / f"confusion_{_slug(test)}.png")
        scores = {m: first_seed[m]["scores"][test] for m in results["runs"]}
        roc_grid(scores, y, classes, f"ROC, one class vs rest: {test}, seed {seed}",
                 out / f"roc_{_slug(test)}.png")
    (out / "results.md").write_text(markdown(results))


def _slug(name: str) -> str:
    return name.replace("+", "plus").replace(" ", "_").lower()
