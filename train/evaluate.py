"""Metrics as the papers report them, and a plain-text table of them."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import (accuracy_score, confusion_matrix, matthews_corrcoef,
                             precision_recall_fscore_support, roc_auc_score)


def classification_metrics(y_true, y_pred, class_names, normal_class: str,
                           scores=None) -> dict:
    """accuracy, macro and (support-)weighted precision/recall/F1, MCC, FPR (normal traffic flagged as an attack),
    per-class recall (the papers' detection rate) and the confusion matrix (rows = truth);
    with class scores (n, classes) also the one-vs-rest ROC-AUC per class and its macro mean."""
    labels = list(range(len(class_names)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0)
    per_class = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)[1]
    # weighted by class support, as some papers report them (a weighted recall is the accuracy)
    weighted = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="weighted",
                                               zero_division=0)[:3]
    normal = class_names.index(normal_class)
    is_normal = np.asarray(y_true) == normal
    fpr = float(np.mean(np.asarray(y_pred)[is_normal] != normal)) if is_normal.any() else 0.0
    result = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_precision": float(precision),
        "macro_recall": float(recall),
        "macro_f1": float(f1),
        "weighted_precision": float(weighted[0]),
        "weighted_recall": float(weighted[1]),
        "weighted_f1": float(weighted[2]),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
        "fpr": fpr,
        "recall": {name: float(r) for name, r in zip(class_names, per_class)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "support": int(len(y_true)),
    }
    if scores is not None:
        result["roc_auc"] = roc_auc(y_true, scores, class_names)
        present = [v for v in result["roc_auc"].values() if v is not None]
        result["macro_roc_auc"] = float(np.mean(present)) if present else None
    return result


def roc_auc(y_true, scores, class_names) -> dict:
    """One-vs-rest ROC-AUC per class; None where the test set lacks the class."""
    y_true = np.asarray(y_true)
    out = {}
    for i, name in enumerate(class_names):
        positive = y_true == i
        out[name] = (float(roc_auc_score(positive, scores[:, i]))
                     if 0 < positive.sum() < len(y_true) else None)
    return out


def metrics_table(metrics: dict, class_names) -> str:
    """Markdown table: one row per (model, test set), metrics in percent.
    `metrics` is {variant: {test set: classification_metrics(...)}}."""
    head = ["model", "test set", "acc", "macro-P", "macro-R", "macro-F1", "MCC", "FPR"]
    head += [f"DR {c}" for c in class_names]
    rows = []
    for variant, sets in metrics.items():
        for test_set, m in sets.items():
            cells = [m["accuracy"], m["macro_precision"], m["macro_recall"], m["macro_f1"]]
            row = [variant, test_set] + [f"{100 * v:.2f}" for v in cells]
            row += [f"{m['mcc']:.4f}", f"{100 * m['fpr']:.2f}"]
            row += [f"{100 * m['recall'][c]:.2f}" for c in class_names]
            rows.append(row)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
