"""Write a reproduction's results: mean ± sample std (n − 1) over seeds beside the paper's figures, as markdown
tables, plus the pictures (first seed)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .plots import confusion_grid, roc_grid

SCALAR = (("accuracy", "Acc"), ("macro_precision", "macro-P"), ("macro_recall", "macro-R"),
          ("macro_f1", "macro-F1"), ("weighted_f1", "weighted-F1"), ("mcc", "MCC"),
          ("fpr", "FPR"), ("macro_roc_auc", "AUC"))


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
    return {k: (float(np.mean(v)), sample_std(v), len(v)) for k, v in values.items()}


def sample_std(values) -> float:
    """The one meaning of ± in edge-ids' tables: the sample standard deviation (n - 1) over
    seeds; 0 for a single seed."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


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


def title(results: dict) -> str:
    """A results table's title; a protocol other than the official one says so in it."""
    if results.get("protocol", "official") == "official":
        return results["title"]
    return f"{results['title']}: {results['protocol_note']}"


def markdown(results: dict) -> str:
    cols = _columns(results)
    seeds = ", ".join(map(str, results["seeds"]))
    lines = [f"# {title(results)}", "",
             f"Ours: mean ± sample std (n − 1) over seeds {seeds} (in %, MCC and AUC as fractions); the row "
             "under each method, in italics, is the paper's published figure (— where the "
             "paper gives none). Macro averages over classes, and the F1 weighted by class "
             "support. FPR: normal traffic flagged as an attack; DR: per-class detection rate "
             "(recall).", "", f"Data: {results['notes']}", "", results["published_note"], ""]
    if "budget" in results:
        lines += [_budget_line(results), ""]
    if results["quick"]:
        lines += ["**Quick run** (CI smoke check: few epochs, small generation, a training "
                  "subset). These figures are not results.", ""]
    for test in results["tests"]:
        lines += [f"## {test}" + ("" if results.get("protocol", "official") == "official"
                                  else f" ({results['protocol']}: not the official protocol)"),
                  "", "| method | " + " | ".join(label for _, label in cols) + " |",
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
    if results.get("previous"):
        lines += budget_effect(results)
    if results.get("deviations"):
        lines += ["## Deviations from the paper", ""]
        lines += [f"- {d}" for d in results["deviations"]] + [""]
    lines += ["## Runs", "", "| method | seed | batch | epochs run | weights of epoch | least "
              "validation loss at epoch | training rows after resampling | seconds |",
              "|---|---|---|---|---|---|---|---|"]
    for method, runs in results["runs"].items():
        for r in runs:
            h = r["history"]
            batch = r.get("budget", {}).get("classifier", {}).get("batch_size", "—")
            lines.append(f"| {method} | {r['seed']} | {batch} | {h['epochs_run']} | "
                         f"{h.get('weights_from_epoch', '—')} | {h['best_epoch']} | "
                         f"{r['rows_after_resampling']:,} | {r['seconds']} |")
    reused = results.get("reused_seconds", 0)
    lines += ["", f"Total time: {results['seconds'] / 60:.1f} min" + (
        f" (of which {reused / 60:.1f} min in runs an earlier invocation finished and "
        "`--resume` reused, counted with their own training time)." if reused else ".")]
    return "\n".join(lines) + "\n"


def _budget_line(results: dict) -> str:
    parts = {}
    for method in results["methods"]:  # one description per model (all its runs share it)
        c = results["runs"][method["name"]][0]["budget"]["classifier"]
        parts.setdefault(method["model"], f"{method['model']}: {_training_text(c)}")
        if method["resample"] == "cflvae":
            v = results["runs"][method["name"]][0]["budget"]["cflvae"]
            parts["cflvae"] = f"CFLVAE: {_training_text(v)}"
    return (f"Budget: **{results['budget']}** ({'; '.join(parts.values())}); recorded per run "
            "in results.json.")


def _training_text(c: dict) -> str:
    stop = ("no early stopping (last weights)" if c.get("patience") is None
            else f"early stopping (patience {c['patience']})")
    decay = ", polynomial decay" if c.get("schedule") == "polynomial" else ""
    return (f"batch {c['batch_size']}, {c['epochs']} epochs, {stop}{decay}, "
            f"steps_per_execution {c.get('steps_per_execution', 1)}")


def budget_effect(results: dict) -> list[str]:
    """The previous (reduced-budget) table beside this one, per method and test set."""
    previous = results["previous"]
    minority = [c for c in results["classes"] if c != results["normal"]][-2:]
    rare = " / ".join(minority)
    lines = ["## Effect of the budget", "",
             f"The previous run at the reduced budget ({previous['path']}; `reduced` in "
             "train/models.py: early stopping on the validation loss, Khanam et al.'s DNN in "
             "batches of 256 for at most 100 epochs and their CFLVAE at most 200) beside this "
             "one; mean ± sample std (n − 1) over seeds, in %.", "",
             "| method | test set | reduced: acc | this: acc | reduced: macro-F1 "
             f"| this: macro-F1 | reduced: DR {rare} | this: DR {rare} |",
             "|---|---|---|---|---|---|---|---|"]
    for method, runs in results["runs"].items():
        if method not in previous["runs"]:
            continue
        for test in results["tests"]:
            old, new = summarise(previous["runs"][method], test), summarise(runs, test)
            cells = []
            for key in ("accuracy", "macro_f1"):
                cells += [_cell(key, *old[key][:2]), _cell(key, *new[key][:2])]
            for s in (old, new):
                cells.append(" / ".join(f"{100 * s[f'recall:{c}'][0]:.1f}" for c in minority))
            lines.append(f"| {method} | {test} | " + " | ".join(cells) + " |")
    return lines + [""]


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


def attach_previous(results: dict, out: Path) -> None:
    """A paper-budget run shows the reduced-budget run kept in OUT/reduced-budget/ beside it."""
    previous = Path(out) / "reduced-budget" / "results.json"
    if results.get("budget") == "paper" and previous.is_file():
        results["previous"] = {"path": "reduced-budget/results.json",
                               **json.loads(previous.read_text())}


def rewrite_markdown(out: Path) -> Path:
    """OUT/results.md again from OUT/results.json (the pictures stay as they are)."""
    out = Path(out)
    results = json.loads((out / "results.json").read_text())
    attach_previous(results, out)
    (out / "results.md").write_text(markdown(results))
    return out / "results.md"


def readme_table(out: Path) -> str:
    """The README's compact table of a reproduction: each test set's accuracy and macro-F1
    (the first also weighted-F1 and the two rarest classes' detection rates), the reduced
    budget's figures beside them and the paper's published ones."""
    results = json.loads((Path(out) / "results.json").read_text())
    attach_previous(results, out)
    first, tests = results["tests"][0], results["tests"]
    rare = [c for c in results["classes"] if c != results["normal"]][-2:]
    head = ["method"]
    for test in tests:
        head += [f"{test} acc", "macro-F1"] + (
            ["weighted-F1"] + [f"DR {c}" for c in rare] if test == first else [])
    head += ["reduced budget: acc / macro-F1", "paper: acc / F1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, runs in results["runs"].items():
        row = [method]
        for test in tests:
            s = summarise(runs, test)
            row += [_cell(k, *s[k][:2]) for k in ("accuracy", "macro_f1")]
            if test == first:
                row += [_cell("weighted_f1", *s["weighted_f1"][:2])]
                row += [f"{100 * s[f'recall:{c}'][0]:.1f}" for c in rare]
        old = results.get("previous", {}).get("runs", {}).get(method)
        if old:
            s = summarise(old, first)
            row.append(f"{100 * s['accuracy'][0]:.2f} / {100 * s['macro_f1'][0]:.2f}")
        else:
            row.append("—")
        paper = results["published"].get(method, {}).get(first)
        row.append(f"{100 * paper['accuracy']:.2f} / {100 * paper['macro_f1']:.2f}"
                   if paper else "—")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m edge_ids.train.results [--readme] FOLDER...
    readme = "--readme" in sys.argv
    for folder in (a for a in sys.argv[1:] if a != "--readme"):
        print(readme_table(Path(folder)) if readme else rewrite_markdown(Path(folder)))
