"""Fit the feature spec on training data: one-hot, zero-ratio filter, min-max, MI top-k.

The result is plain JSON (edge_runtime/model/features.py documents it and is the only code that
applies it). Fit it on the training part only: never on validation or test data.

"ignored" raw columns (identifiers such as addresses) never become features. `k=None` keeps every
feature the zero-ratio filter leaves, still ordered by mutual information, for datasets whose
reference papers did no feature selection.

The zero-ratio filter follows the CFLVAE paper (Khanam et al. 2022): it drops *numeric* features
with more than `zero_ratio` zeros (scope "numeric"). On KDDTrain+ that removes 16 of 38 numeric
features, among them the content features (failed logins, root shells, guest logins) that tell
R2L and U2R apart; scope "none" keeps them, scope "all" also filters the one-hot columns.

Without labels (`y=None`: an anomaly model learns benign rows only) there is no mutual
information to rank by, so every kept feature is selected. `scale="log"` puts numeric features
on a signed log scale before min-max (their min and max are then log values): flow volumes and
rates span orders of magnitude, and an anomaly model must see a 100-fold jump.
"""
from __future__ import annotations

import numpy as np
from sklearn.feature_selection import mutual_info_classif

from ..edge_runtime.model.features import FEATURE_SPEC_VERSION, FeatureTransform, signed_log
from ..edge_runtime.ingest.records import RawSchema, Records

ZERO_RATIO_SCOPES = ("numeric", "all", "none")
SCALES = ("linear", "log")


def fit_feature_spec(records: Records, y: np.ndarray | None, schema: RawSchema, *,
                     k: int | None = 87,
                     zero_ratio: float = 0.9, zero_scope: str = "numeric",
                     mi_sample: int | None = None, seed: int = 0, scale: str = "linear") -> dict:
    """Return a feature spec whose `selected` holds the k features of highest mutual information
    (every kept feature when k is None, in their order when y is None), in rank order."""
    if zero_scope not in ZERO_RATIO_SCOPES:
        raise ValueError(f"zero-ratio scope must be one of {ZERO_RATIO_SCOPES}, not {zero_scope!r}")
    if scale not in SCALES:
        raise ValueError(f"feature scale must be one of {SCALES}, not {scale!r}")
    if y is None and k is not None:
        raise ValueError("selecting k features needs labels (mutual information); give k=None")
    columns = records.columns
    vocabularies = {c: sorted(set(columns[c].tolist())) for c in schema.categorical}
    candidates = []
    for name, kind in zip(schema.names, schema.types):
        if kind == "numeric":
            values = columns[name]
            scaled = signed_log(values) if scale == "log" else values
            candidates.append({"name": name, "column": name, "min": float(scaled.min()),
                               "max": float(scaled.max()),
                               "zero_ratio": float(np.mean(values == 0))}
                              | ({"scale": "log"} if scale == "log" else {}))
        elif kind == "categorical":
            for value in vocabularies[name]:
                present = float(np.mean(columns[name] == value))
                candidates.append({"name": f"{name}={value}", "column": name, "value": value,
                                   "min": 0.0, "max": 1.0, "zero_ratio": 1.0 - present})
        elif kind != "ignored":
            raise ValueError(f"raw column {name!r} has unknown type {kind!r}")
    in_scope = {"numeric": lambda c: "value" not in c, "all": lambda c: True,
                "none": lambda c: False}[zero_scope]
    drop = [in_scope(c) and c["zero_ratio"] > zero_ratio for c in candidates]
    filtered = [c for c, d in zip(candidates, drop) if d]
    kept = [c for c, d in zip(candidates, drop) if not d]
    k = len(kept) if k is None else k
    if not 0 < k <= len(kept):
        raise ValueError(f"k={k} features asked for, but {len(kept)} remain after the "
                         f"zero-ratio filter ({len(filtered)} dropped)")
    spec = {
        "spec_version": FEATURE_SPEC_VERSION,
        "raw": schema.to_spec(),
        "one_hot": vocabularies,
        "zero_ratio_filter": {"threshold": zero_ratio, "scope": zero_scope,
                              "dropped": [c["name"] for c in filtered]},
        "kept": kept,
        "selected": list(range(len(kept))),
        "input_quantization": None,
    }
    if y is None:
        return spec
    x, _ = FeatureTransform(spec).transform(columns)  # the same code the device runs
    mi = _mutual_information(x, y, discrete=np.array(["value" in c for c in kept]),
                             sample=mi_sample, seed=seed)
    for c, score in zip(kept, mi):
        c["mi"] = float(score)
    spec["selected"] = [int(i) for i in np.argsort(-mi, kind="stable")[:k]]
    return spec


def _mutual_information(x, y, discrete, sample, seed) -> np.ndarray:
    rows = np.arange(len(x))
    if sample and sample < len(x):
        rows = np.random.default_rng(seed).choice(len(x), size=sample, replace=False)
    return mutual_info_classif(x[rows], y[rows], discrete_features=discrete, random_state=seed,
                               n_jobs=-1)
