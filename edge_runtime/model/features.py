"""Apply a feature spec (features.json) to raw columns: one-hot, min-max with clipping, selection.

This is the only implementation of the transform. The host fits the spec (train/feature_spec.py)
and then evaluates through this same code, so host and device cannot drift apart.

Spec layout (all plain JSON; see docs/bundle.md):
    raw                  the raw columns and their types (records.RawSchema)
    one_hot              {column: [vocabulary]}; a value outside it gives all zeros and is counted
    zero_ratio_filter    what the zero-ratio filter dropped and why (informational here)
    kept                 [{name, column, value?, scale?, min, max}] features after filtering, in
                         order; scale "log" (version 2) takes sign(x)·log(1 + |x|) before min-max
    selected             indices into `kept`, in model-input order (mutual-information rank)
    input_quantization   {scale, zero_point} of the int8 model input, or null for a float model
"""
from __future__ import annotations

import numpy as np

FEATURE_SPEC_VERSION = 2  # 2 added per-feature log scaling (the anomaly models use it)
READABLE_SPEC_VERSIONS = (1, 2)
NOT_SELECTED, UNSEEN = -1, -2  # one-hot lookup results that set no input


class FeatureTransform:
    """Raw columns -> float32 model inputs in [0, 1], plus counts of unseen categories."""

    def __init__(self, spec: dict, vocabulary: dict | None = None):
        self.spec = spec
        kept = spec["kept"]
        self.selected = [kept[i] for i in spec["selected"]]
        self.n_inputs = len(self.selected)
        numeric = [(p, f) for p, f in enumerate(self.selected) if "value" not in f]
        self._num_positions = np.array([p for p, _ in numeric], dtype=np.int64)
        self._num_columns = [f["column"] for _, f in numeric]
        self._num_min = np.array([f["min"] for _, f in numeric], dtype=np.float64)
        # Flow volumes and rates span orders of magnitude: on a log scale an unusual value
        # stays visible instead of being squashed to 0 next to the largest one seen.
        log = np.array([f.get("scale") == "log" for _, f in numeric], dtype=bool)
        self._num_log = None if not log.any() else slice(None) if log.all() else log
        span = np.array([f["max"] - f["min"] for _, f in numeric], dtype=np.float64)
        self._num_span = np.where(span > 0, span, 1.0)  # a constant column maps to 0
        # Categorical values are looked up once as codes in a vocabulary (this spec's own, or
        # one shared with the other model of a hybrid, so that each value is looked up once for
        # both); per column, an array maps each code to the model-input position of its one-hot
        # feature, NOT_SELECTED, or UNSEEN (a value this spec never saw; the last entry, which
        # code -1, "in no vocabulary", also picks).
        self.vocabulary = vocabulary or shared_vocabulary([spec])
        self._code_positions = {}
        for column, values in spec["one_hot"].items():
            known = set(values)
            codes = self.vocabulary[column]
            positions = np.full(len(codes) + 1, UNSEEN, dtype=np.int64)
            for value, code in codes.items():
                if value in known:
                    positions[code] = NOT_SELECTED
            self._code_positions[column] = positions
        for p, f in enumerate(self.selected):
            if "value" in f:
                self._code_positions[f["column"]][self.vocabulary[f["column"]][f["value"]]] = p
        self._matrix_layout = None  # (column names of a numeric matrix, our columns in it)

    def codes(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each categorical value's code in the vocabulary (-1: in none)."""
        return {c: np.fromiter(map(codes.__getitem__, columns[c].tolist()), np.int64,
                               count=len(columns[c])) for c, codes in self.vocabulary.items()}

    def transform(self, columns: dict[str, np.ndarray],
                  numeric: tuple[np.ndarray, tuple[str, ...]] | None = None,
                  codes: dict[str, np.ndarray] | None = None
                  ) -> tuple[np.ndarray, dict[str, int]]:
        """Return (inputs float32 of shape (n, n_inputs), {column: unseen-category count}).

        `numeric`, if given, is (matrix, column names) holding the numeric columns side by side
        (the parser's own layout): one fancy index instead of stacking columns, which is most
        of the cost for a single record. `codes`: the categorical values already looked up in
        this transform's vocabulary (a hybrid's other model did)."""
        if numeric is not None:
            matrix, names = numeric
            n = len(matrix)
        else:
            n = len(next(iter(columns.values()))) if columns else 0
        x = np.zeros((n, self.n_inputs), dtype=np.float32)
        if self._num_columns:
            if numeric is not None:
                raw = matrix[:, self._matrix_columns(names)]
            else:
                raw = np.stack([np.asarray(columns[c], dtype=np.float64)
                                for c in self._num_columns], 1)
            # raw is a new array either way: changed in place, no temporaries (the same numbers)
            if isinstance(self._num_log, slice):
                raw = signed_log(raw, out=raw)
            elif self._num_log is not None:
                raw[:, self._num_log] = signed_log(raw[:, self._num_log])
            raw -= self._num_min
            raw /= self._num_span
            x[:, self._num_positions] = np.clip(raw, 0.0, 1.0, out=raw)
        if not self._code_positions:
            return x, {}
        codes = self.codes(columns) if codes is None else codes
        where = np.empty((n, len(self._code_positions)), dtype=np.int64)
        for j, (column, positions) in enumerate(self._code_positions.items()):
            where[:, j] = positions[codes[column]]
        unseen = np.count_nonzero(where == UNSEEN, axis=0).tolist()
        rows, cols = np.nonzero(where >= 0)
        x[rows, where[rows, cols]] = 1.0
        return x, dict(zip(self._code_positions, unseen))

    def _matrix_columns(self, names: tuple[str, ...]) -> np.ndarray:
        if self._matrix_layout is None or self._matrix_layout[0] != names:
            index = {name: i for i, name in enumerate(names)}
            self._matrix_layout = names, np.array([index[c] for c in self._num_columns])
        return self._matrix_layout[1]


def shared_vocabulary(specs: list[dict]) -> dict[str, "_Codes"]:
    """Per categorical column, every value any of the specs knows -> a code 0, 1, ..."""
    vocabulary: dict[str, _Codes] = {}
    for spec in specs:
        for column, values in spec["one_hot"].items():
            codes = vocabulary.setdefault(column, _Codes())
            for value in values:
                codes.setdefault(value, len(codes))
    return vocabulary


class _Codes(dict):
    """Category value -> code; a value in no vocabulary -> -1 (looked up in C)."""

    def __missing__(self, value):
        return -1


def signed_log(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """sign(x)·log(1 + |x|): the "log" feature scale (defined for negative values too)."""
    if x.size and x.min() >= 0:  # counts, bytes, rates: the usual case, two passes cheaper
        return np.log1p(x, out=out)
    return np.copysign(np.log1p(np.abs(x)), x, out=out)


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return np.clip(np.round(x / scale + zero_point), -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)
