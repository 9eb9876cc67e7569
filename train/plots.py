"""Pictures for results.md: confusion matrices and ROC curves, one panel per method."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _figure(n_panels: int, size: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a host or in CI
    import matplotlib.pyplot as plt

    cols = min(n_panels, 4)
    rows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.axis("off")
    return plt, fig, list(axes.flat)


def confusion_grid(matrices: dict[str, list[list[int]]], class_names, title: str,
                   path: Path) -> Path:
    """Row-normalised confusion matrices (rows = true class), counts written in each cell."""
    plt, fig, axes = _figure(len(matrices))
    for ax, (method, matrix) in zip(axes, matrices.items()):
        m = np.asarray(matrix, dtype=float)
        share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(m):
            ax.text(j, i, f"{int(count)}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.6 else "black")
        ticks = range(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(ticks, class_names, fontsize=7)
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def roc_grid(scores: dict[str, np.ndarray], y_true: np.ndarray, class_names, title: str,
             path: Path) -> Path:
    """One-vs-rest ROC curve per class (the attack class only, for a binary task)."""
    from sklearn.metrics import auc, roc_curve

    plt, fig, axes = _figure(len(scores))
    shown = range(1, 2) if len(class_names) == 2 else range(len(class_names))
    for ax, (method, s) in zip(axes, scores.items()):
        for c in shown:
            positive = y_true == c
            if not 0 < positive.sum() < len(y_true):
                continue
            fpr, tpr, _ = roc_curve(positive, s[:, c])
            ax.plot(fpr, tpr, lw=1.2, label=f"{class_names[c]} ({auc(fpr, tpr):.3f})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls="--")
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("false-positive rate", fontsize=7)
        ax.set_ylabel("true-positive rate", fontsize=7)
        ax.legend(fontsize=6, loc="lower right", title="AUC", title_fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def score_histogram(groups: dict[str, np.ndarray], threshold: float, title: str, path: Path,
                    ax=None) -> Path:
    """Anomaly scores of each group of rows (e.g. benign, attack) on a log axis, with the
    threshold: what lies right of the line is flagged."""
    own = ax is None
    if own:
        plt, fig, (ax,) = _figure(1, size=4.8)
    positive = np.concatenate([g[g > 0] for g in groups.values() if len(g)] or [np.ones(1)])
    low, high = max(positive.min(), threshold / 1e3), max(positive.max(), threshold * 10)
    bins = np.geomspace(low, high, 60)
    # each group's share of its own rows per bin, so that groups of any size compare
    for name, scores in groups.items():
        ax.hist(np.clip(scores, low, high), bins=bins, histtype="step", lw=1.3,
                weights=np.full(len(scores), 1 / max(len(scores), 1)),
                label=f"{name} ({len(scores):,})")
    ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("anomaly score (reconstruction error)", fontsize=8)
    ax.set_ylabel("share of the group's rows", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    if own:
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return path


def roc_with_points(curves: dict[str, tuple[np.ndarray, np.ndarray]],
                    points: dict[str, list[tuple[float, float, str]]], title: str,
                    path: Path, ax=None) -> Path:
    """Binary ROC curves (false-alarm rate, detection rate) of several detectors, with the
    operating points each actually runs at marked on its curve."""
    own = ax is None
    if own:
        plt, fig, (ax,) = _figure(1, size=4.8)
    for (name, (fpr, tpr)), color in zip(curves.items(), _COLORS):
        ax.plot(fpr, tpr, lw=1.2, color=color, label=name)
        for x, y, label in points.get(name, []):
            ax.plot([x], [y], "o", ms=4, color=color)
            ax.annotate(label, (x, y), fontsize=6, xytext=(4, -8), textcoords="offset points")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-alarm rate (benign flagged; linear to 1 %, then log)", fontsize=8)
    ax.set_ylabel("detection rate (attacks flagged)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    if own:
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return path


_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
