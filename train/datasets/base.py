"""What every loader returns: labelled sets and a `Dataset` that says how to train and test on them.

The pipeline reads only these two types, so adding a dataset means writing one loader module and
one registry line, not touching the training code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...edge_runtime.ingest.records import RawSchema, Records


# fit_feature_spec defaults for a dataset whose papers did no feature selection
KEEP_ALL_FEATURES = {"k": None, "zero_ratio": 1.0, "zero_scope": "none"}


@dataclass
class LabelledSet:
    name: str
    path: Path
    records: Records  # feature columns; the raw label columns in records.trailing
    y: np.ndarray  # int64 class index into the dataset's classes
    label_column: str = "label"  # the trailing column the classes were read from
    normal_index: int = 0  # class index of benign traffic (first in every dataset here)

    @property
    def labels(self) -> np.ndarray:
        """The raw label text of each record, before mapping to classes."""
        return self.records.trailing[self.label_column]

    @property
    def y_binary(self) -> np.ndarray:
        """0 for normal traffic, 1 for any attack."""
        return (self.y != self.normal_index).astype(np.int64)

    def take(self, rows: np.ndarray, name: str) -> "LabelledSet":
        """The records at these positions, as a new set (used for fixed splits)."""
        return LabelledSet(name, self.path, self.records.take(rows), self.y[rows],
                           self.label_column, self.normal_index)


@dataclass
class Dataset:
    name: str
    schema: RawSchema  # what the device reads: feature columns, then trailing label columns
    classes: tuple[str, ...]
    normal: str  # the benign class
    train: LabelledSet | None  # None when only the test sets were loaded (scoring)
    tests: dict[str, LabelledSet]  # in the order the papers report them
    # fit_feature_spec keyword defaults that reproduce the papers' setup (k, zero_ratio, ...)
    feature_defaults: dict = field(default_factory=dict)
    notes: str = ""  # one markdown paragraph for results.md: which split, which columns dropped


def stratified_split(y: np.ndarray, test_fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows), each in file order, with every class split in the same ratio.

    For datasets without an official split. The seed is the dataset's own constant, not the
    experiment seed, so every run and every paper comparison tests on the same records.
    """
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        is_test[rng.permutation(rows)[:int(round(len(rows) * test_fraction))]] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def split_set(full: LabelledSet, test_fraction: float, seed: int
              ) -> tuple[LabelledSet, LabelledSet]:
    """The stratified split as two sets named "train" and "test"."""
    train_rows, test_rows = stratified_split(full.y, test_fraction, seed)
    return full.take(train_rows, "train"), full.take(test_rows, "test")
