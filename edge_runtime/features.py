"""Apply a feature spec (features.json) to raw columns: one-hot, min-max with clipping, selection.

This is the only implementation of the transform. The host fits the spec (train/feature_spec.py)
and then evaluates through this same code, so host and device cannot drift apart.

Spec layout (all plain JSON; see docs/bundle.md):
    raw                  the raw columns and their types (records.RawSchema)
    one_hot              {column: [vocabulary]}; a value outside it gives all zeros and is counted
    zero_ratio_filter    what the zero-ratio filter dropped and why (informational here)
    kept                 [{name, column, value?, min, max}] features after filtering, in order
    selected             indices into `kept`, in model-input order (mutual-information rank)
    input_quantization   {scale, zero_point} of the int8 model input, or null for a float model
"""
from __future__ import annotations

import numpy as np

FEATURE_SPEC_VERSION = 1
NOT_SELECTED, UNSEEN = -1, -2  # one-hot lookup results that set no input


class FeatureTransform:
    """Raw columns -> float32 model inputs in [0, 1], plus counts of unseen categories."""

    def __init__(self, spec: dict):
        self.spec = spec
        kept = spec["kept"]
        self.selected = [kept[i] for i in spec["selected"]]
        self.n_inputs = len(self.selected)
        numeric = [(p, f) for p, f in enumerate(self.selected) if "value" not in f]
        self._num_positions = np.array([p for p, _ in numeric], dtype=np.int64)
        self._num_columns = [f["column"] for _, f in numeric]
        self._num_min = np.array([f["min"] for _, f in numeric], dtype=np.float64)
        span = np.array([f["max"] - f["min"] for _, f in numeric], dtype=np.float64)
        self._num_span = np.where(span > 0, span, 1.0)  # a constant column maps to 0
        # For each categorical column, every known value -> the model-input position of its
        # one-hot feature, or NOT_SELECTED; a value missing from the table is an unseen category.
        self._one_hot_positions = {c: dict.fromkeys(v, NOT_SELECTED)
                                   for c, v in spec["one_hot"].items()}
        for p, f in enumerate(self.selected):
            if "value" in f:
                self._one_hot_positions[f["column"]][f["value"]] = p

    def transform(self, columns: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, int]]:
        """Return (inputs float32 of shape (n, n_inputs), {column: unseen-category count})."""
        n = len(next(iter(columns.values()))) if columns else 0
        x = np.zeros((n, self.n_inputs), dtype=np.float32)
        if len(self._num_columns):
            raw = np.stack([np.asarray(columns[c], dtype=np.float64) for c in self._num_columns], 1)
            x[:, self._num_positions] = np.clip((raw - self._num_min) / self._num_span, 0.0, 1.0)
        unknown = {}
        for column, positions in self._one_hot_positions.items():
            where = np.fromiter((positions.get(v, UNSEEN) for v in columns[column]), np.int64,
                                count=n)
            unknown[column] = int(np.count_nonzero(where == UNSEEN))
            rows = np.flatnonzero(where >= 0)
            x[rows, where[rows]] = 1.0
        return x, unknown


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return np.clip(np.round(x / scale + zero_point), -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)
