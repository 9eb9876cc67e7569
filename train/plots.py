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
