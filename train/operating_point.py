"""The operating point: thresholds from the operator's false-alarm budget, set on validation
benign rows (never test rows), with the scores of the bundle's own int8 models.

The budget (`max_fpr`) is for the whole detector. A hybrid's classifier may use at most
CLASSIFIER_SHARE of it: when it calls more validation benign rows attacks than that, its
`normal_threshold` is lowered until it does not (it then names an attack only when it is surer).
The anomaly threshold takes what is left: the score that exactly that many of the remaining
validation benign rows exceed.
"""
from __future__ import annotations

import math

import numpy as np

CLASSIFIER_SHARE = 0.5
MIN_FALSE_ALARMS = 5  # a threshold set by fewer validation rows than this is noise


class BudgetError(ValueError):
    """The validation rows are too few for this budget to mean anything."""


def check_budget(max_fpr: float, validation_rows: int) -> None:
    if not 0 < max_fpr <= 0.5:
        raise BudgetError(f"--max-fpr {max_fpr} is outside (0, 0.5]: it is the share of benign "
                          f"records you accept as false alarms, e.g. 0.01")
    if validation_rows * max_fpr < MIN_FALSE_ALARMS:
        need = math.ceil(MIN_FALSE_ALARMS / max_fpr)
        raise BudgetError(f"a false-alarm budget of {max_fpr} on {validation_rows:,} validation "
                          f"rows allows {int(validation_rows * max_fpr)} false alarms; a "
                          f"threshold needs at least {MIN_FALSE_ALARMS} (≥ {need:,} validation "
                          f"rows): learn from more benign traffic or raise --max-fpr")


def choose_operating_point(max_fpr: float, anomaly_scores: np.ndarray,
                           normal_probability: np.ndarray | None = None,
                           attack_named: np.ndarray | None = None) -> dict:
    """Thresholds for validation benign rows' anomaly scores and, for a hybrid, the classifier's
    P(normal) and whether its most probable class is an attack (same rows, same order)."""
    anomaly_scores = np.asarray(anomaly_scores, dtype=np.float64)
    n = len(anomaly_scores)
    check_budget(max_fpr, n)
    allowed = int(math.floor(max_fpr * n))
    normal_threshold, by_classifier = 1.0, np.zeros(n, dtype=bool)
    if normal_probability is not None:
        named = np.sort(normal_probability[attack_named])
        share = int(math.floor(CLASSIFIER_SHARE * max_fpr * n))
        if len(named) > share:  # the classifier alone would use more than its share
            normal_threshold = float(named[share])  # only P(normal) below it: <= share rows
        by_classifier = attack_named & (normal_probability < normal_threshold)
    rest = np.sort(anomaly_scores[~by_classifier])[::-1]
    left = allowed - int(by_classifier.sum())
    threshold = float(rest[min(left, len(rest) - 1)])  # exceeded by at most `left` rows
    flagged = by_classifier | (anomaly_scores > threshold)
    return {"max_fpr": float(max_fpr), "threshold": threshold,
            "normal_threshold": normal_threshold,
            "validation_fpr": float(flagged.mean()),
            "classifier_validation_fpr": float(by_classifier.mean()),
            "validation_rows": int(n)}
