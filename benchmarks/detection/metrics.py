"""What an operator needs to know about a detector on labelled records, in the binary view
(attack or not, at the false-alarm rate it costs) as well as by class, for benchmarks/hybrid.py.

A method's output per record is a verdict: a class name, `Unknown`, or the normal class. Any
verdict other than normal is an alarm. The 5-class accuracy counts `Unknown` as wrong.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...edge_runtime.model.detector import UNKNOWN


def detection_metrics(verdicts: list[str] | np.ndarray, y: np.ndarray, class_names,
                      normal: str, unseen: np.ndarray | None = None,
                      categories: np.ndarray | None = None) -> dict:
    """verdicts: a name per record; y: the true class index per record; unseen: records whose
    attack type never occurs in the training file; categories: a finer attack label per record
    (e.g. WUSTL-EHMS's attack category) to report detection by."""
    verdicts = np.asarray(verdicts)
    truth = np.asarray(class_names)[y]
    is_attack = truth != normal
    alarm = verdicts != normal
    out = {"binary": {"detection_rate": _share(alarm[is_attack]),
                      "false_alarm_rate": _share(alarm[~is_attack]),
                      "attacks": int(is_attack.sum()), "benign": int((~is_attack).sum())},
           "accuracy": _share(verdicts == truth),
           "per_class_detection": {c: _share(alarm[truth == c]) for c in class_names
                                   if c != normal and (truth == c).any()},
           "unknown_share": _share(verdicts == UNKNOWN)}
    if unseen is not None:
        out["unseen_types_detection_rate"] = _share(alarm[unseen & is_attack])
        out["unseen_types_rows"] = int((unseen & is_attack).sum())
        out["seen_types_detection_rate"] = _share(alarm[~unseen & is_attack])
    if categories is not None:
        out["per_category_detection"] = {str(c): _share(alarm[(categories == c) & is_attack])
                                         for c in sorted(set(categories[is_attack].tolist()))}
    return out


def _share(mask: np.ndarray) -> float | None:
    return float(np.mean(mask)) if len(mask) else None


def flags_to_verdicts(flags: np.ndarray, normal: str) -> np.ndarray:
    """An anomaly-only method's alarms as verdicts."""
    return np.where(flags, UNKNOWN, normal)


def roc_points(y_attack: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-alarm rate, detection rate) over every threshold of a score (higher = attack)."""
    from sklearn.metrics import roc_curve

    score = np.asarray(score, dtype=np.float64)
    finite = score[np.isfinite(score)]
    top = (finite.max() if len(finite) else 0.0) + 1.0  # "always flagged" as a finite score
    fpr, tpr, _ = roc_curve(y_attack, np.where(np.isposinf(score), top, score))
    return fpr, tpr


def mean_std(values: list[float | None]) -> tuple[float, float] | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return float(np.mean(present)), float(np.std(present, ddof=1)) if len(present) > 1 else 0.0


def percent(values: list[float | None]) -> str:
    ms = mean_std(values)
    return "–" if ms is None else f"{100 * ms[0]:.1f} ± {100 * ms[1]:.1f}"


def normal_probability(bundle, records) -> np.ndarray:
    """The bundle's classifier's probability of the normal class for each record (int8)."""
    from ...edge_runtime.model.classifier import Classifier

    classifier = Classifier(bundle)
    return classifier.classify(records).probabilities[:, classifier.normal_index]


# -- what the studies share -----------------------------------------------------------------------

def short(epochs: int) -> dict:
    """Training overrides for a smoke run (fewer epochs than the papers' recipes)."""
    return {"epochs": epochs} if epochs < 100 else {}


def indent(echo):
    return lambda line: echo("    " + line.strip())


def cached(folder: Path, settings, data_files, echo) -> bool:
    """A classifier trained before in `folder` is reused only if the same settings, data files
    and code made it (key.json, train/fingerprint.py); otherwise the folder is emptied, with
    the reason, for a new one."""
    from dataclasses import asdict, is_dataclass

    from ...train.fingerprint import Stamp, code_version, files_fingerprint

    record = asdict(settings) if is_dataclass(settings) else dict(settings)
    record = {k: v for k, v in record.items() if k not in ("out", "data_dir")}
    stamp = Stamp(folder, {"settings": record, "code": code_version(),
                           "data": files_fingerprint(data_files)})
    return stamp.ensure(echo) and (folder / "bundle" / "manifest.json").is_file()
