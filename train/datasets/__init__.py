"""Dataset loaders and their registry. Every loader returns a `Dataset`: classes, the raw schema
the device reads, a training set, the test sets and the paper's feature-spec defaults.

Importing this package loads neither pandas nor any dataset (the CLI imports it).
"""
from __future__ import annotations

from . import bot_iot, nsl_kdd, wustl_ehms, wustl_iiot
from .base import Dataset, LabelledSet
from .files import DATA_DIR_ENV, DataError, find_data_file

# name -> loader(data_dir) -> Dataset
DATASETS = {
    nsl_kdd.NAME: nsl_kdd.dataset,
    wustl_ehms.NAME: wustl_ehms.load,
    wustl_ehms.NETWORK_NAME: wustl_ehms.load_network_only,
    bot_iot.NAME: bot_iot.load,
    wustl_iiot.NAME: wustl_iiot.load,
}


def load_dataset(name: str, data_dir=None, train_set: str | None = None) -> Dataset:
    """Load a dataset by registry name; `train_set` picks NSL-KDD's training file only."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if name == nsl_kdd.NAME:
        return nsl_kdd.dataset(data_dir, train_set or nsl_kdd.TRAIN_SETS[0])
    if train_set is not None:
        raise ValueError(f"train_set applies to {nsl_kdd.NAME} only; {name} has one training set")
    return DATASETS[name](data_dir)


__all__ = ["DATASETS", "DATA_DIR_ENV", "DataError", "Dataset", "LabelledSet", "find_data_file",
           "load_dataset"]
